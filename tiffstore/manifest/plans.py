"""Chunk plans: which bytes of which files fill one chunk, and how, as plain data.

A :class:`ChunkPlan` lists the :class:`Piece` s that fill a chunk. Each piece is a
file, a byte range of it, how to decode those bytes (nothing for raw bytes, else a
numcodecs configuration) and where the result lands in the chunk. The reader
(:mod:`tiffstore.read.assemble`) only executes plans; the reference writer serializes
them (a chunk that is one raw range or one decodable piece is one reference);
materialize and the GPU path reuse them.

Example: a chunk of two whole uncompressed pages of one file is one piece::

    ChunkPlan(index=(0, 1, 0, 0, 0), shape=(1, 1, 2, 32, 24), dtype='<u2', complete=True,
              pieces=(Piece(kind='copy', file=4, offset=3328, nbytes=3072,
                            dest=(slice(0, 3072),)),))

while a chunk of zlib strips is one ``decode`` piece per strip, each with the
strip's byte range, its codec, the strip's shape, the part of it that is wanted
(``select``) and where that part goes (``dest``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tiffstore.manifest.model import Manifest, page_run_geometry, strides, unstitch
from tiffstore.tiff.codecs import SegmentCodec
from tiffstore.tiff.layout import FileLayout

__all__ = ["ChunkPlan", "LayoutOf", "Piece", "PieceKind", "page_run_table", "plan_chunk"]


#: ``copy``: the bytes are the pixels, back to back in the chunk too: copy them to
#: bytes ``dest[0]`` of the chunk.
#: ``raw``: the bytes at ``offset`` begin an uncompressed C-ordered block of
#: ``shape`` (a page, or a strip or tile); ``select`` of it lands at ``dest``.
#: ``decode``: the bytes are one compressed strip or tile; decoded with ``codec``
#: to ``shape`` (its ``valid`` part inside the image), ``select`` lands at ``dest``.
#: ``tifffile``: page ``page`` must be decoded by tifffile (from its IFD at
#: ``offset``, or with the whole series when ``offset`` is -1).
#: Pieces of ``raw`` or ``decode`` kind with ``nbytes == 0`` were never written:
#: they read as zeros, as in tifffile.
PieceKind = Literal["copy", "raw", "decode", "tifffile"]


@dataclass(frozen=True, slots=True)
class Piece:
    """One part of a chunk: a file's byte range, how to decode it, and where it lands.

    Attributes
    ----------
    kind
        See :data:`PieceKind`.
    file
        The file's number in the manifest.
    offset, nbytes
        The byte range in the file.
    dest
        Where the piece lands: ``(slice(start, stop),)`` over the chunk's bytes for
        ``copy``; slices over the chunk's shape otherwise.
    shape
        What the bytes hold: a page or segment shape (``raw``), the segment's full
        ``(rows, columns, samples)`` (``decode``), the page shape (``tifffile``).
    select
        The part of ``shape`` that lands at ``dest`` (same number of items).
    codec
        For ``decode``: the segment's codec (numcodecs configurations).
    valid
        For ``decode``: the part of ``shape`` inside the image (short last strip,
        edge tile).
    page
        The page of the file (for messages, and for ``tifffile`` to decode).
    segment
        For ``raw`` and ``decode`` pieces of strips or tiles: the segment's number
        in the page, as TIFF numbers them (for messages).
    """

    kind: PieceKind
    file: int
    offset: int
    nbytes: int
    dest: tuple[slice, ...]
    shape: tuple[int, ...] = ()
    select: tuple[slice, ...] = ()
    codec: SegmentCodec | None = None
    valid: tuple[int, ...] = ()
    page: int = -1
    segment: int = -1


@dataclass(frozen=True)
class ChunkPlan:
    """How to assemble one chunk.

    Attributes
    ----------
    index
        The chunk's position in the chunk grid.
    shape
        The chunk's full shape (with a length-1 dim for each stitched tile axis),
        edge chunks included: zarr chunks are all one shape.
    dtype
        The pixels' dtype string, with byte order.
    pieces
        What fills the chunk.
    complete
        Whether the pieces fill all of it; otherwise it starts as the fill value.
    """

    index: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: str
    pieces: tuple[Piece, ...]
    complete: bool

    @property
    def empty(self) -> bool:
        """No file contributes: the chunk is all fill value."""
        return not self.pieces

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @property
    def files(self) -> list[int]:
        """The files the pieces read, each once, in order of first use."""
        return list(dict.fromkeys(p.file for p in self.pieces))

    def one_range(self) -> Piece | None:
        """The piece when the whole chunk is one raw byte range of one file, else ``None``."""
        if self.complete and len(self.pieces) == 1:
            piece = self.pieces[0]
            if piece.kind == "copy" and (piece.dest[0].start, piece.nbytes) == (0, self.nbytes):
                return piece
        return None


LayoutOf = Callable[[int], FileLayout]


def _check_index(m: Manifest, index: Sequence[int]) -> tuple[int, ...]:
    grid = m.chunk_grid
    index = tuple(map(int, index))
    if len(index) == len(grid):
        for i, g in zip(index, grid):  # noqa: B905 - lengths checked just above
            if not 0 <= i < g:
                break
        else:
            return index
    raise IndexError(f"chunk {index} is outside the chunk grid {grid}")


def plan_chunk(m: Manifest, index: Sequence[int], layout_of: LayoutOf | None = None) -> ChunkPlan:
    """The plan of chunk ``index`` of ``m``.

    Parameters
    ----------
    m
        The manifest.
    index
        The chunk's position in the chunk grid.
    layout_of
        Gives a file's full layout; by default the manifest's
        (:meth:`~tiffstore.manifest.model.Manifest.file_layout_of`). The reader passes one
        that checks each file's header on first use.

    Raises
    ------
    IndexError
        When ``index`` is outside the chunk grid.
    """
    index = _check_index(m, index)
    layout_of = layout_of or m.file_layout_of
    fast = _page_run_plan(m, index, layout_of)
    if fast is not None:
        return fast
    starts, stops = m.chunk_bounds(index)
    complete = stops == [s + c for s, c in zip(starts, m.chunks, strict=True)]
    starts, stops, chunks = unstitch(m, starts, stops)
    nn = len(m.name_axes)
    geometry = m.layout
    nl = len(geometry.leading_shape)
    page_shape = geometry.page_shape
    itemsize = m.dtype.itemsize
    # Chunk dims beyond the name dims and leading dims cover one page region.
    p_starts, p_stops = starts[nn + nl :], stops[nn + nl :]
    whole_pages = all(
        s == 0 and e == n and c == n
        for s, e, n, c in zip(p_starts, p_stops, page_shape, chunks[nn + nl :], strict=True)
    )
    region = tuple(slice(s, e) for s, e in zip(p_starts, p_stops, strict=True))
    region_dest = tuple(slice(0, e - s) for s, e in zip(p_starts, p_stops, strict=True))
    lead_ranges = [
        range(s, e) for s, e in zip(starts[nn : nn + nl], stops[nn : nn + nl], strict=True)
    ]
    name_ranges = [range(s, e) for s, e in zip(starts[:nn], stops[:nn], strict=True)]
    page_bytes = math.prod(page_shape) * itemsize
    lead_strides = strides(geometry.leading_shape)
    dest_strides = strides(chunks[: nn + nl])
    pieces: list[Piece] = []
    for cell in itertools.product(*name_ranges):
        file = int(m.file_index[cell]) if nn else 0
        if file < 0:
            complete = False
            continue
        layout = layout_of(file)
        cell_dest = tuple(c - s for c, s in zip(cell, starts[:nn], strict=True))
        for lead in itertools.product(*lead_ranges):
            page = sum(i * st for i, st in zip(lead, lead_strides, strict=True))
            lead_dest = tuple(i - s for i, s in zip(lead, starts[nn : nn + nl], strict=True))
            offset = layout.page_offset(page)
            if whole_pages and offset is not None:
                flat = sum(
                    i * st for i, st in zip(cell_dest + lead_dest, dest_strides, strict=True)
                )
                _add_copy(pieces, file, offset, page_bytes, flat * page_bytes)
                continue
            dest = tuple(slice(i, i + 1) for i in cell_dest + lead_dest) + region_dest
            pieces.extend(_page_pieces(file, layout, page, region, dest))
    return ChunkPlan(index, chunks, m.dtype.str, tuple(pieces), complete)


def _add_copy(pieces: list[Piece], file: int, offset: int, nbytes: int, dest: int) -> None:
    """Append a copy piece, merged with the last when both are back to back in file and chunk."""
    last = pieces[-1] if pieces else None
    if (
        last is not None
        and last.kind == "copy"
        and last.file == file
        and last.offset + last.nbytes == offset
        and last.dest[0].stop == dest
    ):
        n = last.nbytes + nbytes
        pieces[-1] = Piece(
            "copy", file, last.offset, n, (slice(last.dest[0].start, dest + nbytes),)
        )
    else:
        pieces.append(Piece("copy", file, offset, nbytes, (slice(dest, dest + nbytes),)))


def _page_pieces(
    file: int, layout: FileLayout, page: int, region: tuple[slice, ...], dest: tuple[slice, ...]
) -> list[Piece]:
    """The pieces that fill ``dest`` (the chunk's part) with ``region`` of one page."""
    offset = layout.page_offset(page)
    if offset is not None:
        return [Piece("raw", file, offset, layout.page_nbytes, dest, layout.page_shape, region)]
    if layout.storage == "tifffile":
        ifd = -1 if not layout.page_ifds else layout.page_ifds[page]
        return [Piece("tifffile", file, ifd, 0, dest, layout.page_shape, region, page=page)]
    seg = layout.segments
    assert seg is not None
    region4 = seg.normalize(region)
    samples = region4[3]
    # The chunk's part, over the page's own dims, as (planes, rows, columns, samples).
    k = len(dest) - len(region)
    outer, page_dest = dest[:k], dest[k:]
    dest4 = seg.normalize(page_dest)
    pieces: list[Piece] = []
    offsets, counts = seg.offsets[page], seg.bytecounts[page]
    codec = None if seg.codec.raw else seg.codec
    for p in seg.pieces(region4):
        plane, rows, cols = p.dest
        at = (
            slice(dest4[0].start + plane, dest4[0].start + plane + 1),
            slice(dest4[1].start + rows.start, dest4[1].start + rows.stop),
            slice(dest4[2].start + cols.start, dest4[2].start + cols.stop),
            slice(dest4[3].start, dest4[3].start + samples.stop - samples.start),
        )
        full, valid = seg.segment_shape(p.segment)
        piece_dest = outer + seg.denormalize(at)
        count = int(counts[p.segment])
        pieces.append(
            Piece(
                "raw" if codec is None else "decode",
                file,
                int(offsets[p.segment]),
                count,
                piece_dest,
                full,
                (p.rows, p.cols, samples),
                codec,
                () if codec is None else valid,
                page,
                p.segment,
            )
        )
    return pieces


def _page_run_plan(m: Manifest, index: tuple[int, ...], layout_of: LayoutOf) -> ChunkPlan | None:
    """The plan of the usual chunk (whole pages of one file, back to back, inside the
    array) in a few integer operations; ``None`` for any other chunk."""
    run = m.page_run
    if run is None:
        return None
    nn, nl = run.name_dims, len(run.lead)
    file = int(m.file_index[index[:nn]]) if nn else 0
    if file < 0:
        return None
    page = 0
    for i, c, n, st in zip(index[nn : nn + nl], run.lead, run.sizes, run.strides):  # noqa: B905
        if i * c + c > n:
            return None  # an edge chunk: padded, so not one run
        page += i * c * st
    layout = layout_of(file)
    n_pages = run.n_pages
    first = layout.page_offset(page)
    if first is None:
        return None
    nbytes = layout.page_nbytes * n_pages
    if layout.page_offset(page + n_pages - 1) != first + nbytes - layout.page_nbytes:
        return None  # pages not back to back: the general plan merges what it can
    piece = Piece("copy", file, first, nbytes, (slice(0, nbytes),))
    return ChunkPlan(index, m.chunks, m.dtype.str, (piece,), True)


def page_run_table(m: Manifest) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Every chunk's byte range at once, when every chunk is whole pages of one file.

    For manifests whose files all store their pages back to back uncompressed and
    whose chunks are runs of whole pages dividing the files' pages evenly (no edge
    chunks): ``(file, offset, nbytes)`` with ``file`` and ``offset`` arrays over the
    chunk grid (``file`` -1 where no file) and every chunk ``nbytes`` long. ``None``
    for any other manifest, whose chunks are planned one by one.
    """
    geometry = page_run_geometry(m)
    if geometry is None or any(lay.storage != "contiguous" for lay in m.layouts):
        return None
    nn, nl = geometry
    lead = m.chunks[nn : nn + nl]
    sizes = m.layout.leading_shape
    if any(n % c for n, c in zip(sizes, lead, strict=True)):
        return None
    lead_grid = tuple(n // c for n, c in zip(sizes, lead, strict=True))
    first_page = np.zeros(lead_grid, np.int64)
    for idx, c, st in zip(np.indices(lead_grid), lead, strides(sizes), strict=True):
        first_page += idx * c * st
    page_nbytes = m.layout.page_nbytes
    files = m.file_index.reshape(m.file_index.shape + (1,) * nl)
    starts = m.tables.data_offset[np.maximum(files, 0)]
    offsets = np.where(files >= 0, starts + first_page * page_nbytes, -1)
    files = np.broadcast_to(files, offsets.shape)
    return files, offsets, math.prod(lead) * page_nbytes

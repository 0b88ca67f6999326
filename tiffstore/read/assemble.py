"""Chunk -> pixels: execute a chunk plan (:mod:`tiffstore.manifest.plans`).

``copy`` pieces are read with one ranged read each, straight into the chunk's
buffer. ``raw`` pieces read only the rows of the block that are wanted, ``decode``
pieces read one strip or tile each and decode it (straight into the chunk where
it fits whole), ``tifffile`` pieces are decoded by tifffile. All byte ranges one
file contributes are read in one call, adjacent ranges merged. Nothing here
decides *what* to read: that is the plan's job.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import wait
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from tiffstore.errors import TiffReadError, TiffStoreError
from tiffstore.manifest.headers import check_file, group_signature
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.plans import ChunkPlan, Piece, plan_chunk
from tiffstore.read.pools import process_pool
from tiffstore.tiff.layout import FileLayout
from tiffstore.tiff.pages import read_pages_with_tifffile

__all__ = ["EXPANSION_FLOOR", "MAX_EXPANSION", "ChunkReader", "check_plan_bounds"]


class ChunkReader:
    """Reads the chunks of one manifest.

    Holds only process-local state (which files' headers were checked), so it is
    cheap to create and is never pickled: a store makes a new one after unpickling.

    Parameters
    ----------
    manifest
        The virtual array to read.
    checked
        Another reader of the same files (with other chunks): this one shares the
        files whose headers it checked.

    Examples
    --------
    >>> reader = ChunkReader(manifest)  # doctest: +SKIP
    >>> reader.read_chunk((0, 0, 0, 0, 0)).shape  # doctest: +SKIP
    (1, 1, 10, 1024, 768)
    """

    def __init__(self, manifest: Manifest, *, checked: ChunkReader | None = None) -> None:
        self.manifest = manifest
        # A reader of the same files with other chunks shares the headers ``checked`` checked.
        self._layouts: dict[int, FileLayout] = {} if checked is None else checked._layouts
        self._lock: threading.Lock = threading.Lock() if checked is None else checked._lock
        # Local files: every read checks the file's size and time against the listing.
        manifest.source.expect(manifest.file_stamps())
        # Remote files: reads are conditional on the version listed (ETag, time).
        manifest.source.expect_versions(manifest.file_version_map())

    def layout_of(self, file: int) -> FileLayout:
        """The layout to read ``file`` with, its header checked on first use in this process."""
        known = self._layouts.get(file)
        if known is not None:
            return known
        layout = check_file(self.manifest, file)
        with self._lock:
            self._layouts[file] = layout
        return layout

    def _checked_head(self, file: int, head: memoryview) -> None:
        """Record ``file`` as checked if ``head`` is its group's signature, else raise."""
        m = self.manifest
        if head != group_signature(m, file):
            raise _HeaderDiffers(file)
        with self._lock:
            self._layouts.setdefault(file, m.file_layout_of(file))

    def plan(self, index: Sequence[int]) -> ChunkPlan:
        """The plan of chunk ``index``, with every file's header checked.

        Raises
        ------
        TiffReadError
            When the plan reads past a file's end as listed (a truncated file, or a
            corrupt header), or would decode far more pixels than a file could hold:
            refused before anything is allocated or read.
        """
        plan = plan_chunk(self.manifest, index, self.layout_of)
        check_plan_bounds(self.manifest, plan)
        return plan

    # -- chunks -----------------------------------------------------------

    def read_chunk(self, index: Sequence[int], out: np.ndarray | None = None) -> np.ndarray | None:
        """Assemble chunk ``index``; ``None`` when no file contributes to it.

        Parameters
        ----------
        index
            Position of the chunk in the chunk grid.
        out
            Optional C-contiguous array of the chunk's shape and dtype to fill.
        """
        plan, heads = self._draft(index)
        return self._execute_checking(index, plan, heads, out)

    def read_chunk_bytes(
        self, index: Sequence[int], part: tuple[int, int] | None = None
    ) -> bytes | memoryview | None:
        """Chunk ``index`` as raw bytes (C order); ``None`` when no file contributes.

        A chunk that is one raw byte range (whole pages of one file, back to back: the
        usual case) is one ranged read (of only ``part``, ``(start, stop)`` within the
        chunk, when given) into the returned ``bytes``, with no further copy; any
        other chunk is assembled and ``part`` cut from it.
        """
        m = self.manifest
        plan, heads = self._draft(index)
        piece = plan.one_range()
        if piece is not None and not heads:
            start, stop = (0, piece.nbytes) if part is None else part
            start, stop = min(start, piece.nbytes), min(stop, piece.nbytes)
            if stop <= start:
                return b""
            return m.source.read_bytes(m.files[piece.file], piece.offset + start, stop - start)
        chunk = self._execute_checking(index, plan, heads)
        if chunk is None:
            return None
        data = chunk.reshape(-1).view(np.uint8).data
        return data if part is None else data[part[0] : part[1]]

    def _draft(self, index: Sequence[int]) -> tuple[ChunkPlan, frozenset[int]]:
        """The plan of chunk ``index``, and the files whose header its reads must check.

        Local files: the checked plan (:meth:`plan`), nothing left to check. Remote
        files trusted at open on their group's header are not checked one request
        before the chunk's: the plan takes the group's layout, and the header
        comparison goes out with the chunk's own ranges (:meth:`execute`'s ``heads``).
        """
        m = self.manifest
        if not m.source.remote:
            return self.plan(index), frozenset()
        plan = plan_chunk(m, index, self._known_layout)
        heads = frozenset(p.file for p in plan.pieces if self._unchecked(p.file))
        if any(p.kind == "tifffile" and p.file in heads for p in plan.pieces):
            return self.plan(index), frozenset()  # decoded by tifffile: parsed anyway
        check_plan_bounds(m, plan)
        return plan, heads

    def _known_layout(self, file: int) -> FileLayout:
        """The layout ``file`` is read with: its own if checked, else its group's."""
        return self._layouts.get(file) or self.manifest.file_layout_of(file)

    def _unchecked(self, file: int) -> bool:
        return file not in self._layouts and group_signature(self.manifest, file) is not None

    def _execute_checking(
        self,
        index: Sequence[int],
        plan: ChunkPlan,
        heads: frozenset[int],
        out: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """:meth:`execute`, checking ``heads``; a header that differs from its group's
        is parsed and the chunk planned and read again by it."""
        if heads:
            try:
                return self.execute(plan, out, heads=heads)
            except _HeaderDiffers:
                plan = self.plan(index)
        return self.execute(plan, out)

    def execute(
        self, plan: ChunkPlan, out: np.ndarray | None = None, *, heads: frozenset[int] = frozenset()
    ) -> np.ndarray | None:
        """Fill a chunk as ``plan`` says; ``None`` for an empty plan.

        Remote files are read concurrently, each in one request batch. ``heads``:
        files whose header bytes are compared with their group's signature in the
        same batch as their pixels (raising ``_HeaderDiffers`` when they differ).

        Raises
        ------
        TiffReadError
            When a file cannot be read or decoded; the message names the file.
        """
        m = self.manifest
        if plan.empty:
            return None
        # The plan's shape has a length-1 dim for each stitched tile axis.
        out = np.empty(plan.shape, m.dtype) if out is None else out.reshape(plan.shape)
        if not plan.complete:
            out.fill(m.fill_value)
        flat = out.reshape(-1).view(np.uint8)
        groups = [
            (file, list(group))
            for file, group in itertools.groupby(plan.pieces, key=attrgetter("file"))
        ]

        def fill(file: int, pieces: list[Piece]) -> None:
            try:
                self._fill(file, pieces, out, flat, file in heads)
            except (TiffStoreError, _HeaderDiffers):
                raise
            except Exception as exc:
                # A bug of ours or a dependency's failure: name the file, never hide it.
                raise TiffReadError(
                    f"{m.url(file)}: reading chunk {plan.index} failed "
                    f"({type(exc).__name__}: {exc})."
                ) from exc

        if m.source.remote and len(groups) > 1:
            # Each file is a round trip: wait for them together, not one after another,
            # in a pool of their own, not the store's chunk pool: its tasks never submit
            # more work, so chunk reads waiting on them cannot starve them.
            threads = m.source.concurrency
            pool = process_pool(f"files-{threads}", threads)
            futures = [pool.submit(fill, f, pieces) for f, pieces in groups]
            # Every file done before any error is raised: none may write into ``out``
            # after this returns (it may be read again, by the file's own header).
            wait(futures)
            for future in futures:
                future.result()
        else:
            for file, pieces in groups:
                fill(file, pieces)
        return out.reshape(m.chunks)

    def _fill(
        self, file: int, pieces: list[Piece], out: np.ndarray, flat: np.ndarray, head: bool = False
    ) -> None:
        m = self.manifest
        name = m.files[file]
        requests: list[tuple[int, memoryview]] = []
        ranges: list[tuple[int, int]] = []
        places: list[tuple[int, _Place]] = []
        pages: list[Piece] = []
        layout = self._known_layout(file)
        for p in pieces:
            if p.kind == "copy":
                requests.append((p.offset, flat[p.dest[0]].data))
            elif p.kind == "tifffile":
                pages.append(p)
            elif p.nbytes == 0:
                out[p.dest] = 0  # a strip or tile never written reads as zeros, as in tifffile
            elif p.kind == "raw":
                runs = _box_runs(p.shape, p.select, out.itemsize)
                if max(o + n for o, n in runs.ranges) > p.nbytes:
                    raise TiffReadError(
                        f"{_where(m.url(file), p, layout)} holds {p.nbytes} bytes, too few for its "
                        "pixels. The file is corrupt; rewrite it."
                    )
                ranges += [(p.offset + o, n) for o, n in runs.ranges]
                places.append((len(runs.ranges), _place_raw(out[p.dest], m.layout.dtype, runs)))
            else:
                ranges.append((p.offset, p.nbytes))
                where = _where(m.url(file), p, layout)
                places.append((1, _place_decoded(out[p.dest], p, m.dtype, where)))
        signature = (group_signature(m, file) or b"") if head else b""
        if requests:
            if head:
                # The header comparison rides along with the pixels' ranges.
                requests.append((0, memoryview(bytearray(len(signature)))))
            m.source.read_many_into(name, requests)
            if head:
                self._checked_head(file, requests.pop()[1])
        elif head:
            ranges.insert(0, (0, len(signature)))
        if ranges:
            views = m.source.read_ranges(name, ranges)
            if head and not requests:
                self._checked_head(file, views[0])
                views = views[1:]
            k = 0
            for n, place in places:
                place(views[k : k + n])
                k += n
        if pages:
            layout = self.layout_of(file)
            with m.source.open(name) as fh:
                decoded = read_pages_with_tifffile(fh, layout, [p.page for p in pages], m.url(file))
            for p, pixels in zip(pages, decoded, strict=True):
                out[p.dest] = pixels[p.select].reshape(out[p.dest].shape)


class _HeaderDiffers(Exception):
    """A file's header differs from its group's: it must be parsed, and read by its own."""


#: The pixels a chunk decodes from a file may take at most this many times the
#: file's size in bytes (or this floor, if larger): more is a corrupt header or a
#: decompression bomb, refused before the chunk is allocated. Deflate tops out near
#: 1032:1; this leaves room for zstd and LZMA on near-empty images.
MAX_EXPANSION = 1 << 12
EXPANSION_FLOOR = 1 << 28


def check_plan_bounds(m: Manifest, plan: ChunkPlan) -> None:
    """Refuse a plan that reads outside a file's listed size, or decodes a bomb."""
    sizes = m.file_sizes
    decoded: dict[int, int] = {}
    for p in plan.pieces:
        size = int(sizes[p.file])
        if p.kind == "tifffile" or (p.kind == "decode" and p.nbytes):
            decoded[p.file] = decoded.get(p.file, 0) + math.prod(p.shape) * m.dtype.itemsize
        if p.kind != "tifffile" and p.nbytes and (p.offset < 0 or p.offset + p.nbytes > size):
            where = m.url(p.file) + (f": page {p.page}" if p.page >= 0 else "")
            if p.segment >= 0:
                where += f", segment {p.segment}"
            raise TiffReadError(
                f"{where}: its pixel data "
                f"(bytes {p.offset}-{p.offset + p.nbytes}) lie past the end of the file "
                f"({size} bytes when listed). The file is truncated, still being written, "
                "or its header is corrupt; replace it, or leave it out (exclude=...)."
            )
    for file, nbytes in decoded.items():
        limit = max(EXPANSION_FLOOR, MAX_EXPANSION * int(sizes[file]))
        if nbytes > limit:
            raise TiffReadError(
                f"{m.url(file)}: its header declares {nbytes:,} bytes of pixels for chunk "
                f"{plan.index}, more than {MAX_EXPANSION} times the file's "
                f"{int(sizes[file]):,} bytes. Refusing to decode it: the header is corrupt "
                "or the file is a decompression bomb."
            )


def _where(url: str, piece: Piece, layout: FileLayout) -> str:
    """Which strip or tile of which page of which file a piece is, in words."""
    seg = layout.segments
    kind = "strip" if seg is not None and seg.segment[1] == seg.image[1] else "tile"
    if seg is None:
        return f"{url}: page {piece.page} (bytes {piece.offset}-{piece.offset + piece.nbytes})"
    return f"{url}: page {piece.page}, {kind} {piece.segment}"


_Place = Callable[[Sequence[memoryview]], None]
"""Puts the bytes of some ranges where they belong in a chunk."""

#: A last dim this short (samples of a pixel) is read whole rather than in runs of a few items.
_SHORT_DIM = 16


class _Runs(NamedTuple):
    """The byte ranges of a C-ordered block that hold a region of it.

    ``ranges`` are ``(offset in the block, length)`` in the region's C order; together
    they hold ``shape`` (the region, with a short last dim read whole), from which
    ``cut`` takes the region.
    """

    ranges: list[tuple[int, int]]
    shape: tuple[int, ...]
    cut: tuple[slice, ...]


def _box_runs(block: tuple[int, ...], region: tuple[slice, ...], itemsize: int) -> _Runs:
    """One byte range per contiguous run of ``region`` in a C-ordered block of shape ``block``."""
    wanted = list(region)
    cut = [slice(None)] * len(block)
    last = wanted[-1]
    if len(block) > 1 and (last.start, last.stop) != (0, block[-1]) and block[-1] <= _SHORT_DIM:
        wanted[-1], cut[-1] = slice(0, block[-1]), last
    # Dims the region covers whole, from the last inwards, lie back to back with the
    # first partial one: together they are one run.
    k = len(block) - 1
    while k > 0 and (wanted[k].start, wanted[k].stop) == (0, block[k]):
        k -= 1
    strides = [itemsize * math.prod(block[i + 1 :]) for i in range(len(block))]
    length = (wanted[k].stop - wanted[k].start) * strides[k]
    first = wanted[k].start * strides[k]
    outer = itertools.product(*(range(r.start, r.stop) for r in wanted[:k]))
    ranges = [
        (first + sum(i * st for i, st in zip(idx, strides, strict=False)), length) for idx in outer
    ]
    shape = tuple(r.stop - r.start for r in wanted)
    return _Runs(ranges, shape, tuple(cut))


def _place_raw(target: np.ndarray, dtype: str, runs: _Runs) -> _Place:
    def place(views: Sequence[memoryview]) -> None:
        data = views[0] if len(views) == 1 else b"".join(views)
        pixels = np.frombuffer(data, dtype).reshape(runs.shape)[runs.cut]
        target[...] = pixels.reshape(target.shape)

    return place


def _place_decoded(target: np.ndarray, piece: Piece, dtype: np.dtype, where: str) -> _Place:
    """Decode a strip or tile into ``target``: straight into it when it fits whole."""
    codec = piece.codec
    assert codec is not None
    full, valid = piece.shape, piece.valid
    rows, cols, samples = piece.select
    into = (
        codec.decodes_into
        and (rows.start, rows.stop, cols.start, cols.stop) == (0, valid[0], 0, valid[1])
        and (samples.start, samples.stop) == (0, full[2])
        and valid[1] == full[1]  # a tile padded across does not decode row for row
        and target.flags.c_contiguous
        and target.flags.writeable
        and target.dtype == dtype
    )

    def place(views: Sequence[memoryview]) -> None:
        try:
            if into and codec.decode_into(views[0], target.reshape(valid)):
                return
            pixels = codec.decode(views[0], full, valid, dtype)  # type: ignore[arg-type]
            target[...] = pixels[piece.select].reshape(target.shape)
        except Exception as exc:
            raise TiffReadError(
                f"{where} could not be decoded "
                f"({type(exc).__name__}: {exc}). The file may be corrupt or truncated; check "
                "that tifffile.imread reads it."
            ) from exc

    return place

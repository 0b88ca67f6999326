"""Chunk -> pixels: read the pieces a manifest names and assemble them into one chunk.

Uncompressed runs of pages are read with one ranged read straight into the
chunk's buffer (no intermediate copy). Pages stored in strips or tiles are read
segment by segment: only the segments a chunk overlaps, adjacent ones in one read,
each decoded alone. What segments cannot describe is decoded by tifffile.
A :class:`ChunkReader` also checks, once per process, the header of every file
that was accepted at open on the strength of its size alone.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np

from .errors import LayoutMismatchError, TiffReadError
from .layout import FileLayout, SegmentPiece, Segments, read_layout, read_pages_with_tifffile
from .manifest import ByteRun, ChunkPlan, Manifest, PageRead

__all__ = ["ChunkReader"]

logger = logging.getLogger(__name__)


class ChunkReader:
    """Reads the chunks of one manifest.

    Holds only process-local state (which files' headers were checked), so it is
    cheap to create and is never pickled: a store makes a new one after unpickling.

    Parameters
    ----------
    manifest
        The virtual array to read.

    Examples
    --------
    >>> reader = ChunkReader(manifest)  # doctest: +SKIP
    >>> reader.read_chunk((0, 0, 0, 0, 0)).shape  # doctest: +SKIP
    (1, 1, 10, 1024, 768)
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._layouts: dict[int, FileLayout] = {}
        self._lock = threading.Lock()

    # -- headers ----------------------------------------------------------

    def layout_of(self, file: int) -> FileLayout:
        """The layout to read ``file`` with, checking its header on first use."""
        m = self.manifest
        known = self._layouts.get(file)
        if known is not None:
            return known
        k = int(m.file_layout[file])
        layout = m.layouts[k]
        signature = m.signatures[k]
        if not m.verified[file] and signature is not None:
            name = m.files[file]
            head = m.source.read(name, 0, len(signature))
            if head != signature:
                # Written differently from its group: parse its own header.
                with m.source.open(name) as fh:
                    own = read_layout(fh, m.url(file))
                if not own.same_array(layout):
                    raise LayoutMismatchError(
                        f"{m.url(file)}: holds {own.describe()}, but the acquisition's files "
                        f"hold {layout.describe()}. Remove or replace this file, or open the "
                        "source with validate=True to find every such file up front."
                    )
                logger.debug("%s: header differs from its group; using its own", m.url(file))
                layout = own
        with self._lock:
            self._layouts[file] = layout
        return layout

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
        return self._assemble(self.manifest.chunk_plan(index), out)

    def _assemble(self, plan: ChunkPlan, out: np.ndarray | None = None) -> np.ndarray | None:
        m = self.manifest
        if plan.empty:
            return None
        # The plan's shape has a length-1 dim for each stitched tile axis.
        out = np.empty(plan.shape, m.dtype) if out is None else out.reshape(plan.shape)
        if not plan.complete:
            out.fill(m.fill_value)
        flat = out.reshape(-1).view(np.uint8)
        for run in plan.runs:
            self._read_run(run, flat)
        for file, reads in itertools.groupby(plan.reads, key=attrgetter("file")):
            items = [(r.page, r.region, _region_view(out, r)) for r in reads]
            self._fill(file, self.layout_of(file), items)
        return out.reshape(m.chunks)

    def _run_location(self, run: ByteRun) -> tuple[int, int, int] | None:
        """``(file, offset, nbytes)`` when ``run`` fills the chunk as one uncompressed range."""
        m = self.manifest
        layout = self.layout_of(run.file)
        if not layout.raw_pages or run.dest:
            return None
        nbytes = layout.page_nbytes * run.n_pages
        first = layout.page_offset(run.page)
        last = layout.page_offset(run.page + run.n_pages - 1)
        if first is None or last != first + nbytes - layout.page_nbytes:
            return None
        if nbytes != math.prod(m.chunks) * m.dtype.itemsize:
            return None
        return run.file, first, nbytes

    def read_chunk_bytes(
        self, index: Sequence[int], part: tuple[int, int] | None = None
    ) -> bytes | memoryview | None:
        """Chunk ``index`` as raw bytes (C order); ``None`` when no file contributes.

        A chunk that is one uncompressed byte range (whole pages of one file, back to
        back: the usual case) is one ranged read (of only ``part``, ``(start, stop)``
        within the chunk, when given) into the returned ``bytes``, with no further
        copy; any other chunk is assembled as :meth:`read_chunk` does and ``part`` cut
        from it.
        """
        m = self.manifest
        plan: ChunkPlan | None = None
        run = m.page_run(index)
        if run is None:
            plan = m.chunk_plan(index)
            if plan.complete and not plan.reads and len(plan.runs) == 1:
                run = plan.runs[0]
        where = None if run is None else self._run_location(run)
        if where is not None:
            file, offset, nbytes = where
            start, stop = (
                (0, nbytes) if part is None else (min(part[0], nbytes), min(part[1], nbytes))
            )
            if stop <= start:
                return b""
            return m.source.read_bytes(m.files[file], offset + start, stop - start)
        # The plan, when one was needed above, is not built twice.
        chunk = self._assemble(plan if plan is not None else m.chunk_plan(index))
        if chunk is None:
            return None
        data = chunk.reshape(-1).view(np.uint8).data
        return data if part is None else data[part[0] : part[1]]

    def _read_run(self, run: ByteRun, flat: np.ndarray) -> None:
        m = self.manifest
        layout = self.layout_of(run.file)
        nbytes = layout.page_nbytes
        if not layout.raw_pages:
            # A file whose own header differs from its group's may store pages otherwise.
            whole = tuple(slice(0, n) for n in layout.page_shape)
            items = []
            for k in range(run.n_pages):
                start = run.dest + k * nbytes
                target = flat[start : start + nbytes].view(m.dtype).reshape(layout.page_shape)
                items.append((run.page + k, whole, target))
            self._fill(run.file, layout, items)
            return
        name = m.files[run.file]
        # Merge pages that lie back to back in the file into one read.
        k = 0
        while k < run.n_pages:
            offset = layout.page_offset(run.page + k)
            assert offset is not None
            j = k + 1
            while j < run.n_pages and layout.page_offset(run.page + j) == offset + (j - k) * nbytes:
                j += 1
            start = run.dest + k * nbytes
            m.source.read_into(name, offset, flat[start : run.dest + j * nbytes].data)
            k = j

    def _fill(self, file: int, layout: FileLayout, items: list[_RegionRead]) -> None:
        """Fill each target with its page region, however the file stores its pages.

        Every byte range the regions need from the file is gathered first and read
        in one call (adjacent ranges merged), then placed or decoded.
        """
        m = self.manifest
        if layout.storage == "tifffile":
            with m.source.open(m.files[file]) as fh:
                pages = read_pages_with_tifffile(fh, layout, [p for p, _, _ in items], m.url(file))
            for (_, region, target), pixels in zip(items, pages, strict=True):
                target[...] = pixels[region]
            return
        ranges: list[tuple[int, int]] = []
        places: list[tuple[int, _Place]] = []
        for page, region, target in items:
            if layout.raw_pages:
                offset = layout.page_offset(page)
                assert offset is not None
                runs = _box_runs(layout.page_shape, region, np.dtype(layout.dtype).itemsize)
                ranges += [(offset + o, n) for o, n in runs.ranges]
                places.append((len(runs.ranges), _place_raw(target, layout.dtype, runs)))
            else:
                self._plan_segments(file, layout, page, region, target, ranges, places)
        views = m.source.read_ranges(m.files[file], ranges)
        k = 0
        for n, place in places:
            place(views[k : k + n])
            k += n

    def _plan_segments(
        self,
        file: int,
        layout: FileLayout,
        page: int,
        region: tuple[slice, ...],
        target: np.ndarray,
        ranges: list[tuple[int, int]],
        places: list[tuple[int, _Place]],
    ) -> None:
        """Add the byte ranges of the strips or tiles a page region overlaps, and how to place them."""
        seg = layout.segments
        assert seg is not None
        dtype = np.dtype(layout.dtype)
        itemsize = dtype.itemsize
        codec = seg.codec
        kind = "strip" if seg.segment[1] == seg.image[1] else "tile"
        prefix = f"{self.manifest.url(file)}: page {page}, {kind}"
        region4 = seg.normalize(region)
        target4 = seg.normalized_view(target)
        samples = region4[3]
        # What is per page, not per segment: segments whose valid part is all of their
        # destination, itself a C-contiguous block of the file's dtype, decode straight
        # into it.
        direct = (
            codec.decodes_into
            and target4.dtype == dtype
            and (samples.start, samples.stop) == (0, seg.contig_samples)
        )
        full = (*seg.segment, seg.contig_samples)
        counts = seg.bytecounts[page]
        offsets = seg.offsets[page]
        for piece in seg.pieces(region4):
            dest = target4[piece.dest]
            count = int(counts[piece.segment])
            offset = int(offsets[piece.segment])
            if count == 0:
                dest[...] = 0  # a segment never written reads as zeros, as in tifffile
            elif codec.raw:
                # Uncompressed: read only the rows (or row parts) wanted.
                runs = _box_runs(full, (piece.rows, piece.cols, samples), itemsize)
                if max(o + n for o, n in runs.ranges) > count:
                    raise TiffReadError(
                        f"{prefix} {piece.segment} holds {count} bytes, too few for its "
                        "pixels. The file is corrupt; rewrite it."
                    )
                ranges += [(offset + o, n) for o, n in runs.ranges]
                places.append((len(runs.ranges), _place_raw(dest, layout.dtype, runs)))
            else:
                ranges.append((offset, count))
                places.append((1, _place_decoded(dest, seg, dtype, piece, samples, prefix, direct)))


_RegionRead = tuple[int, tuple[slice, ...], np.ndarray]
"""A page, a region of it, and the array (of the region's shape) to fill."""

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
        target[...] = np.frombuffer(data, dtype).reshape(runs.shape)[runs.cut]

    return place


def _place_decoded(
    dest: np.ndarray,
    seg: Segments,
    dtype: np.dtype[Any],
    piece: SegmentPiece,
    samples: slice,
    prefix: str,
    direct: bool = False,
) -> _Place:
    """Decode a segment into ``dest``: straight into it when ``direct`` and it fits."""
    full, valid = seg.segment_shape(piece.segment)
    into = (
        direct
        and (piece.rows.start, piece.rows.stop, piece.cols.start, piece.cols.stop)
        == (0, valid[0], 0, valid[1])
        and valid[1] == full[1]  # a tile padded across does not decode row for row
        and dest.flags.c_contiguous
        and dest.flags.writeable
    )
    codec = seg.codec

    def place(views: Sequence[memoryview]) -> None:
        try:
            if into and codec.decode_into(views[0], dest):
                return
            pixels = codec.decode(views[0], full, valid, dtype)
            dest[...] = pixels[piece.rows, piece.cols, samples]
        except Exception as exc:
            raise TiffReadError(
                f"{prefix} {piece.segment} could not be decoded ({type(exc).__name__}: {exc}). "
                "The file may be corrupt or truncated; check that tifffile.imread reads it."
            ) from exc

    return place


def _region_view(out: np.ndarray, read: PageRead) -> np.ndarray:
    """The part of a chunk that a page read fills, shaped as the page region."""
    k = len(read.dest) - len(read.region)
    return out[tuple(s.start for s in read.dest[:k]) + read.dest[k:]]

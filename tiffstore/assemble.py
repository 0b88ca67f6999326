"""Chunk -> pixels: read the pieces a manifest names and assemble them into one chunk.

Uncompressed runs of pages are read with one ranged read straight into the
chunk's buffer (no intermediate copy). Anything else is decoded page by page.
A :class:`ChunkReader` also checks, once per process, the header of every file
that was accepted at open on the strength of its size alone.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

import numpy as np

from .errors import LayoutMismatchError
from .layout import FileLayout, read_layout, read_page_with_tifffile
from .manifest import ByteRun, Manifest, PageRead

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
        m = self.manifest
        plan = m.chunk_plan(index)
        if plan.empty:
            return None
        if out is None:
            out = np.empty(plan.shape, dtype=m.dtype)
        if not plan.complete:
            out.fill(m.fill_value)
        flat = out.reshape(-1).view(np.uint8)
        for run in plan.runs:
            self._read_run(run, flat)
        for read in plan.reads:
            self._read_page(read, out)
        return out

    def _read_run(self, run: ByteRun, flat: np.ndarray) -> None:
        m = self.manifest
        layout = self.layout_of(run.file)
        nbytes = layout.page_nbytes
        name = m.files[run.file]
        if layout.storage == "tifffile":
            for k in range(run.n_pages):
                page = decode_page(m, run.file, run.page + k)
                start = run.dest + k * nbytes
                flat[start : start + nbytes] = page.reshape(-1).view(np.uint8)
            return
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

    def _read_page(self, read: PageRead, out: np.ndarray) -> None:
        m = self.manifest
        layout = self.layout_of(read.file)
        offset = layout.page_offset(read.page)
        if offset is None:
            page = decode_page(m, read.file, read.page)
            region = page[read.region]
        else:
            region = _read_region(m, read.file, layout, offset, read.region)
        target = out[read.dest]
        target[...] = region.reshape(target.shape)


def _read_region(
    m: Manifest, file: int, layout: FileLayout, offset: int, region: tuple[slice, ...]
) -> np.ndarray:
    """Read the bytes spanning ``region`` of an uncompressed page and cut the region out."""
    shape = layout.page_shape
    dtype = np.dtype(layout.dtype)
    starts = [s.start for s in region]
    lasts = [s.stop - 1 for s in region]
    first = int(np.ravel_multi_index(starts, shape))
    last = int(np.ravel_multi_index(lasts, shape))
    buf = np.empty(last - first + 1, dtype=dtype)
    m.source.read_into(m.files[file], offset + first * dtype.itemsize, buf.view(np.uint8).data)
    if buf.size == math.prod(s.stop - s.start for s in region):
        return buf
    # Place the span in a page-shaped frame to cut the region out.
    frame = np.empty(math.prod(shape), dtype=dtype)
    frame[first : last + 1] = buf
    return frame.reshape(shape)[region]


def decode_page(m: Manifest, file: int, page: int) -> np.ndarray:
    """Decode one page of a file through tifffile (compressed and unusual layouts)."""
    with m.source.open(m.files[file]) as fh:
        return read_page_with_tifffile(fh, page, m.url(file))

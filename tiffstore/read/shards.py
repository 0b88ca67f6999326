"""Format 3 shards served from the TIFFs: a chunk's pages end to end, then its index.

With ``zarr_format=3`` a store serves each chunk of several whole pages as a shard
whose inner chunks are the pages (see
:class:`~tiffstore.manifest.documents.ShardLayout`), so that a reader of one plane
reads one page while dask keeps the large chunks. Nothing is stored: the index is
made up from the manifest, and a byte range within one page reads that page alone.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from tiffstore.manifest.documents import ShardLayout
from tiffstore.read.assemble import ChunkReader

__all__ = ["SHARD_INDEXES_KEPT", "ShardReader"]

#: Shard indexes a store keeps, made up once each (16 bytes per page: 512 B for 32 pages).
SHARD_INDEXES_KEPT = 4096


class ShardReader:
    """Reads the virtual shards of one manifest.

    Parameters
    ----------
    layout
        How a shard (one chunk of the manifest) splits into pages.
    reader
        The reader of the manifest's chunks; the pages' own reader shares the files
        whose headers it checked.
    """

    def __init__(self, layout: ShardLayout, reader: ChunkReader) -> None:
        self.layout = layout
        self.reader = reader
        self._indexes: dict[tuple[int, ...], np.ndarray] = {}
        self._page_reader: ChunkReader | None = None
        self._lock = threading.Lock()

    @property
    def page_reader(self) -> ChunkReader:
        """Reads one inner chunk (page) of a shard: the reader of the manifest chunked by page."""
        if self._page_reader is None:
            pages = dataclasses.replace(self.reader.manifest, chunks=self.layout.inner)
            self._page_reader = ChunkReader(pages, checked=self.reader)
        return self._page_reader

    @property
    def nbytes(self) -> int:
        """Bytes of one shard: the chunk's pixels and its index."""
        return self.reader.manifest.chunk_nbytes + self.layout.index_nbytes

    def index(self, index: tuple[int, ...]) -> np.ndarray:
        """The index of shard ``index``: ``(offset, nbytes)`` per inner chunk (page), C order.

        Inner chunk ``k`` lies at ``k * inner_nbytes`` of the shard; pages with no file,
        and pages past the array's edge, are ``2**64 - 1`` twice (absent). Costs no I/O.
        """
        index = tuple(index)
        table = self._indexes.get(index)
        if table is None:
            table = self._make_index(index)
            table.setflags(write=False)
            with self._lock:
                if len(self._indexes) >= SHARD_INDEXES_KEPT:
                    self._indexes.clear()
                self._indexes[index] = table
        return table

    def _make_index(self, index: tuple[int, ...]) -> np.ndarray:
        sh = self.layout
        m = self.reader.manifest
        starts, stops = m.chunk_bounds(index)
        outer = len(sh.per_shard) - len(m.layout.page_shape)
        present = np.zeros(sh.per_shard, dtype=bool)
        inside = tuple(slice(0, e - s) for s, e in zip(starts[:outer], stops[:outer], strict=True))
        nn = m.n_name_dims
        cells = tuple(slice(s, e) for s, e in zip(starts[:nn], stops[:nn], strict=True))
        has_file = m.file_index[cells] >= 0 if nn else np.ones((), dtype=bool)
        present[inside] = has_file.reshape(has_file.shape + (1,) * (len(sh.per_shard) - nn))
        table = np.full((*sh.per_shard, 2), np.iinfo(np.uint64).max, dtype="<u8")
        offsets = np.arange(sh.count, dtype="<u8").reshape(sh.per_shard) * sh.inner_nbytes
        table[present, 0] = offsets[present]
        table[present, 1] = sh.inner_nbytes
        return table

    def read(
        self, index: tuple[int, ...], span: tuple[int, int] | None = None
    ) -> bytes | memoryview | None:
        """Bytes ``span`` (``(start, stop)``, default all) of the virtual shard ``index``;
        ``None`` when no file contributes to it.

        A range inside one page reads only that page's bytes; the whole shard is read
        with one plan, straight into the returned buffer.
        """
        m = self.reader.manifest
        if not m.chunk_has_data(index):
            return None
        data_end = m.chunk_nbytes
        start, stop = (0, self.nbytes) if span is None else span
        if start == 0 and stop == self.nbytes:
            shard = np.empty(stop, dtype=np.uint8)
            pixels = shard[:data_end].view(m.dtype).reshape(m.chunks)
            if self.reader.read_chunk(index, out=pixels) is None:
                return None
            shard[data_end:] = self.index(index).reshape(-1).view(np.uint8)
            return shard.data
        parts: list[bytes | memoryview] = []
        if start < data_end:
            parts.append(self._pixels(index, start, min(stop, data_end)))
        if stop > data_end:
            table = self.index(index).reshape(-1).view(np.uint8)
            parts.append(table[max(start - data_end, 0) : stop - data_end].data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _pixels(self, index: tuple[int, ...], start: int, stop: int) -> bytes | memoryview:
        """Bytes ``start:stop`` of the pixels of shard ``index``, reading one page if they lie in one."""
        sh = self.layout
        m = self.reader.manifest
        page = start // sh.inner_nbytes
        if stop - start <= sh.inner_nbytes and (stop - 1) // sh.inner_nbytes == page:
            inner = np.unravel_index(page, sh.per_shard)
            page_index = tuple(
                int(i) * n + int(j) for i, n, j in zip(index, sh.per_shard, inner, strict=True)
            )
            part = (start - page * sh.inner_nbytes, stop - page * sh.inner_nbytes)
            data = self.page_reader.read_chunk_bytes(page_index, part)
            if data is not None:
                return data
            fill = np.full(sh.inner_nbytes // m.dtype.itemsize, m.fill_value, dtype=m.dtype)
            return fill.view(np.uint8)[part[0] : part[1]].data
        data = self.reader.read_chunk_bytes(index, (start, stop))
        if data is None:
            fill = np.full(m.chunks, m.fill_value, dtype=m.dtype).reshape(-1).view(np.uint8)
            return fill[start:stop].data
        return data

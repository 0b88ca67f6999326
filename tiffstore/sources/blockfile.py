"""A seekable file object over a source's ranged reads, for tifffile.

tifffile parses headers through many small reads; over a network each would be a
round trip. :class:`BlockFile` serves them from whole blocks, each read once.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from tiffstore.sources.base import FileSource

__all__ = ["BlockFile"]


class BlockFile(io.RawIOBase):
    """A seekable read-only file over a source's ranged reads, for tifffile.

    Small reads (a header's) are served from whole blocks of ``block`` bytes, each
    read once and kept (the ``kept`` most recent), so tifffile's many small reads of a
    header cost a read or two; large reads (pixel data) go straight to the source.
    ``on_head`` is given the file's first block when it is read.
    """

    mode = "rb"

    def __init__(
        self,
        source: FileSource,
        name: str,
        size: int,
        block: int,
        kept: int = 256,
        on_head: Callable[[bytes], None] | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.name = source.url(name)
        self._file = name
        self._size = size
        self._pos = 0
        self._block = block
        self._kept = kept
        self._on_head = on_head
        self._blocks: OrderedDict[int, memoryview] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def close(self) -> None:
        self._blocks.clear()
        super().close()

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        n = min(out.nbytes, self._size - self._pos)
        if n <= 0:
            return 0
        block = self._block
        if n > 4 * block:
            # Pixel data (read through tifffile), not header bytes: read it straight.
            self.source.read_into(self._file, self._pos, out[:n])
            self._pos += n
            return n
        first, last = self._pos // block, (self._pos + n - 1) // block
        missing = [k for k in range(first, last + 1) if k not in self._blocks]
        if missing:
            lo, hi = missing[0] * block, min((missing[-1] + 1) * block, self._size)
            data = self.source.read_ranges(self._file, [(lo, hi - lo)])[0]
            for k in range(missing[0], missing[-1] + 1):
                self._blocks[k] = data[(k - missing[0]) * block : (k - missing[0] + 1) * block]
            if missing[0] == 0 and self._on_head is not None:
                self._on_head(bytes(self._blocks[0]))
        done = 0
        for k in range(first, last + 1):
            data = self._blocks[k]
            self._blocks.move_to_end(k)
            start = self._pos + done - k * block
            piece = data[start : start + n - done]
            out[done : done + len(piece)] = piece
            done += len(piece)
        # Only now: the blocks this read needed were all still there.
        while len(self._blocks) > self._kept:
            self._blocks.popitem(last=False)
        self._pos += done
        return done

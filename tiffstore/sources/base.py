"""What every source is: a named set of files below a root, and ranged reads of them.

A :class:`FileSource` is a small, picklable description of a root (a local folder
or any fsspec URL) that reads byte ranges of the files below it; a
:class:`SourceFile` is one file as the listing found it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, ClassVar

__all__ = ["FileSource", "SourceFile"]


@dataclass(frozen=True)
class SourceFile:
    """A file of the acquisition: its name relative to the root, its size, and what
    says which version of it was listed: the modification time in nanoseconds (local
    files), or the ETag or last-modified time the server gave (remote files)."""

    name: str
    size: int
    mtime_ns: int | None = None
    version: str | None = None


class FileSource(ABC):
    """Reads the files of one acquisition below a root."""

    #: Whether a read may wait on a network (and so must not run in an event loop).
    remote: ClassVar[bool] = False

    @property
    def concurrency(self) -> int:
        """How many reads of this source are worth running at once, from one process
        (chunks in flight; files of one chunk): a network source's settings say."""
        return 1

    @abstractmethod
    def url(self, name: str) -> str:
        """The full path or URL of a file."""

    @abstractmethod
    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the file's bytes from ``offset``; raise if the file is short."""

    @abstractmethod
    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """Open a file for reading (for header parsing and decoding through tifffile)."""

    def expect(self, stamps: dict[str, tuple[int, int]]) -> None:  # noqa: B027 - optional
        """Record each file's ``(size, mtime_ns)`` as listed, for sources that check them
        on every read (local files); others ignore them."""

    def expect_versions(self, versions: dict[str, str]) -> None:  # noqa: B027 - optional
        """Record each file's version (ETag, last-modified time) as listed, for sources
        whose reads are conditional on it (remote files); others ignore them."""

    def read(self, name: str, offset: int, length: int) -> bytearray:
        buf = bytearray(length)
        self.read_into(name, offset, memoryview(buf))
        return buf

    def read_bytes(self, name: str, offset: int, length: int) -> bytes:
        """The file's bytes ``offset .. offset + length`` as one ``bytes`` object."""
        return bytes(self.read(name, offset, length))

    def read_header(self, name: str, length: int) -> bytes:
        """The file's first ``length`` bytes, to compare a header with its group's."""
        return self.read_bytes(name, 0, length)

    def read_many_into(self, name: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        """Fill each buffer with the file's bytes from its offset."""
        for offset, out in requests:
            self.read_into(name, offset, out)

    def read_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[memoryview]:
        """Read ``(offset, length)`` ranges of one file; return their bytes in order.

        Ranges that touch or overlap are read as one (strips and tiles are usually
        written back to back), and no byte outside the ranges is read.
        """
        views = [memoryview(b"")] * len(ranges)
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        requests: list[tuple[int, memoryview]] = []
        k = 0
        while k < len(order):
            start = ranges[order[k]][0]
            stop = start + ranges[order[k]][1]
            j = k + 1
            while j < len(order) and ranges[order[j]][0] <= stop:
                stop = max(stop, ranges[order[j]][0] + ranges[order[j]][1])
                j += 1
            buf = memoryview(bytearray(stop - start))
            requests.append((start, buf))
            for i in order[k:j]:
                offset, length = ranges[i]
                views[i] = buf[offset - start : offset - start + length]
            k = j
        if requests:
            self.read_many_into(name, requests)
        return views

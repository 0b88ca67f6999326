"""Content checksums of the files, taken at the open, and a source that checks every read.

The stamp check of local reads (size and modification time, see
:class:`~tiffstore.sources.local.LocalSource`) misses a file rewritten at the same size
within the file system's clock tick, and a remote file's ETag may not change with a
same-size rewrite (a web server's that holds the time in whole seconds). With
``tiffstore.open(..., checksum=True)`` every byte is read once at the open and the
CRC-32 of each aligned block of :data:`BLOCK` bytes is kept (4 bytes per block); a
:class:`ChecksummedSource` then widens every read to whole blocks, checks them, and
refuses bytes that differ with :class:`~tiffstore.errors.FileChangedError`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, cast

import numpy as np

from tiffstore.errors import FileChangedError, TiffReadError, TiffStoreError
from tiffstore.sources.base import FileSource
from tiffstore.sources.blockfile import BlockFile

__all__ = ["BLOCK", "ChecksummedSource", "compute_checksums"]

#: Bytes per checksummed block: every read is widened to whole blocks and checks them.
BLOCK = 1 << 18
#: Bytes of one read while taking checksums (a whole number of blocks).
READ = 1 << 24
#: Blocks a file object from :meth:`ChecksummedSource.open` keeps after checking them.
_KEPT_BLOCKS = 32


def _blocks(size: int, block: int) -> int:
    return -(-size // block)


@dataclass(frozen=True, eq=False)
class ChecksummedSource(FileSource):
    """A source whose reads are checked against checksums taken earlier.

    Make one with :func:`compute_checksums` (or ``tiffstore.open(..., checksum=True)``).
    Every read goes through :attr:`inner`, widened to whole blocks of :attr:`block`
    bytes, and each block's CRC-32 is compared with the one recorded; a difference
    raises :class:`~tiffstore.errors.FileChangedError` naming the file and the bytes.
    Reads through :attr:`inner` keep its own checks (local files' size and time,
    remote retries).

    Attributes
    ----------
    inner
        The source the bytes come from.
    names
        The files checksummed, relative to the root.
    sizes
        ``int64`` size of each file when its checksums were taken.
    starts
        ``int64`` per file: its first block's row in ``crcs``.
    crcs
        ``uint32`` CRC-32 of every block of every file: file ``i``'s block ``k`` (bytes
        ``k * block`` up to ``min((k + 1) * block, size)``) is row ``starts[i] + k``.
    block
        Bytes per block.
    """

    inner: FileSource
    names: tuple[str, ...]
    sizes: np.ndarray
    starts: np.ndarray
    crcs: np.ndarray
    block: int = BLOCK

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.block <= 0 or self.sizes.shape != (n,) or self.starts.shape != (n,):
            raise ValueError("checksums: one size and one start row per file are needed")
        counts = -(-self.sizes.astype(np.int64) // self.block)
        if (self.sizes < 0).any() or (self.starts < 0).any():
            raise ValueError("checksums: a size or a start row is negative")
        if (self.starts + counts > len(self.crcs)).any():
            raise ValueError("checksums: the rows of a file lie outside the table")
        for a in (self.sizes, self.starts, self.crcs):
            a.setflags(write=False)

    # -- what the wrapper passes on ----------------------------------------

    @property
    def remote(self) -> bool:  # type: ignore[override]
        """Whether a read may wait on a network: as :attr:`inner`'s reads."""
        return self.inner.remote

    @property
    def concurrency(self) -> int:
        """As :attr:`inner`'s."""
        return self.inner.concurrency

    def url(self, name: str) -> str:
        return self.inner.url(name)

    def expect(self, stamps: dict[str, tuple[int, int]]) -> None:
        """Pass the files' listed ``(size, mtime_ns)`` on to :attr:`inner` where it checks them."""
        self.inner.expect(stamps)

    def expect_versions(self, versions: dict[str, str]) -> None:
        """Pass the files' listed versions (ETags) on to :attr:`inner` where it checks them."""
        self.inner.expect_versions(versions)

    # -- equality, hashing, pickling ------------------------------------------

    def _digest(self) -> str:
        """A digest of the whole table (cached in this process, never pickled)."""
        found: str | None = self.__dict__.get("_table_digest")
        if found is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(str(self.block).encode())
            h.update("\0".join(self.names).encode("utf-8", "surrogateescape"))
            for a in (self.sizes, self.starts, self.crcs):
                h.update(np.ascontiguousarray(a).tobytes())
            found = h.hexdigest()
            self.__dict__["_table_digest"] = found
        return found

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChecksummedSource):
            return NotImplemented
        return (
            self.inner == other.inner
            and self.block == other.block
            and self.names == other.names
            and np.array_equal(self.sizes, other.sizes)
            and np.array_equal(self.starts, other.starts)
            and np.array_equal(self.crcs, other.crcs)
        )

    def __hash__(self) -> int:
        return hash((self.inner, self._digest()))

    def __dask_tokenize__(self) -> tuple[str, str, str]:
        from dask.base import tokenize

        return ("tiffstore.ChecksummedSource", tokenize(self.inner), self._digest())

    def __getstate__(self) -> dict[str, Any]:
        # The fields only: the name lookup and the digest are rebuilt per process.
        return {
            "inner": self.inner,
            "names": self.names,
            "sizes": self.sizes,
            "starts": self.starts,
            "crcs": self.crcs,
            "block": self.block,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- the table ----------------------------------------------------------

    def _file(self, name: str) -> int:
        index: dict[str, int] | None = self.__dict__.get("_index")
        if index is None:
            # A frozen dataclass: process-local state beside the fields.
            index = {n: i for i, n in enumerate(self.names)}
            self.__dict__["_index"] = index
        found = index.get(name)
        if found is None:
            raise TiffReadError(
                f"{self.url(name)}: no checksums were taken of this file, so it cannot be "
                "read through this store. Open the source again (tiffstore.open)."
            )
        return found

    def _span(self, name: str, offset: int, length: int) -> tuple[int, int, int]:
        """``(file, start, stop)``: the range widened to whole blocks, within the file."""
        i = self._file(name)
        size = int(self.sizes[i])
        if offset < 0 or offset + length > size:
            raise TiffReadError(
                f"{self.url(name)}: bytes {offset}-{offset + length} lie past the end of the "
                f"file ({size} bytes when its checksums were taken). The file is truncated or "
                "its header is corrupt."
            )
        b = self.block
        return i, offset // b * b, min(-(-(offset + length) // b) * b, size)

    def _verify(self, name: str, i: int, pieces: Sequence[tuple[int, memoryview]]) -> None:
        """Compare the blocks that ``pieces`` cover with the recorded checksums.

        ``pieces`` are ``(offset, bytes)`` back to back, from a block's start to a
        block's end (or the file's).
        """
        b, size = self.block, int(self.sizes[i])
        lo = pieces[0][0]
        first = lo // b
        row = int(self.starts[i]) + first
        hi = pieces[-1][0] + pieces[-1][1].nbytes
        expected = self.crcs[row : row + _blocks(hi - lo, b)].tolist()
        k, crc = 0, 0
        end = min(lo + b, size)
        for start, view in pieces:
            pos, n = 0, view.nbytes
            while pos < n:
                take = min(n - pos, end - (start + pos))
                crc = zlib.crc32(view[pos : pos + take], crc)
                pos += take
                if start + pos == end:
                    if crc != expected[k]:
                        where = (first + k) * b
                        raise FileChangedError(
                            f"{self.url(name)}: bytes {where}-{end} differ from when the store "
                            "was opened (checksum): the file was rewritten or replaced since. "
                            "Open the source again (tiffstore.open) to read it as it is now."
                        )
                    k, crc = k + 1, 0
                    end = min(end + b, size)

    # -- reading ------------------------------------------------------------

    def _groups(
        self, name: str, ranges: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int, list[int]]]:
        """``(start, stop, members)``: the ranges (not empty) widened to whole blocks, those
        that touch or overlap merged, with the indices of the ranges each one holds."""
        spans = sorted(
            (self._span(name, offset, length)[1:], j)
            for j, (offset, length) in enumerate(ranges)
            if length > 0
        )
        groups: list[tuple[int, int, list[int]]] = []
        for (lo, hi), j in spans:
            if groups and lo <= groups[-1][1]:
                groups[-1] = (groups[-1][0], max(groups[-1][1], hi), [*groups[-1][2], j])
            else:
                groups.append((lo, hi, [j]))
        return groups

    def read_many_into(self, name: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        outs = [
            out if out.format == "B" and out.ndim == 1 else out.cast("B") for _, out in requests
        ]
        groups = self._groups(name, [(offset, out.nbytes) for offset, out in requests])
        if not groups:
            return
        i = self._file(name)
        plans: list[list[tuple[int, memoryview]]] = []
        reads: list[tuple[int, memoryview]] = []
        copies: list[tuple[int, memoryview, list[int]]] = []
        for lo, hi, members in groups:
            if len(members) == 1 and not self.inner.remote:
                # Straight into the caller's buffer, and only the rest of the first and
                # last blocks beside it.
                pieces = self._edges(lo, requests[members[0]][0], outs[members[0]], hi)
            else:
                # Remote (a round trip costs more than a copy), or requests sharing
                # blocks: their blocks once, then copied out.
                buf = memoryview(bytearray(hi - lo))
                pieces = [(lo, buf)]
                copies.append((lo, buf, members))
            plans.append(pieces)
            reads += pieces
        self.inner.read_many_into(name, reads)
        for pieces in plans:
            self._verify(name, i, pieces)
        for lo, buf, members in copies:
            for j in members:
                offset, out = requests[j][0], outs[j]
                out[:] = buf[offset - lo : offset - lo + out.nbytes]

    @staticmethod
    def _edges(lo: int, offset: int, view: memoryview, hi: int) -> list[tuple[int, memoryview]]:
        """``view`` (at ``offset``) with new buffers for the bytes from ``lo`` and up to ``hi``."""
        end = offset + view.nbytes
        pieces = [(offset, view)]
        if lo < offset:
            pieces.insert(0, (lo, memoryview(bytearray(offset - lo))))
        if end < hi:
            pieces.append((end, memoryview(bytearray(hi - end))))
        return pieces

    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        self.read_many_into(name, [(offset, out)])

    def read_bytes(self, name: str, offset: int, length: int) -> bytes:
        if self.inner.remote:
            return bytes(self.read_ranges(name, [(offset, length)])[0])
        # The bytes as the inner source returns them, and the rest of the first and
        # last blocks beside them: a chunk read through zarr is one such read, and a
        # copy of it would cost a fifth of the read.
        if length <= 0:
            return b""
        i, lo, hi = self._span(name, offset, length)
        data = self.inner.read_bytes(name, offset, length)
        view = memoryview(data)
        pieces = self._edges(lo, offset, view, hi)
        if len(pieces) > 1:
            self.inner.read_many_into(name, [p for p in pieces if p[1] is not view])
        self._verify(name, i, pieces)
        return data

    def read_header(self, name: str, length: int) -> bytes:
        return self.read_bytes(name, 0, length)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A seekable file object whose reads are checked as :meth:`read_ranges`'s are."""
        size = int(self.sizes[self._file(name)])
        with BlockFile(self, name, size, self.block, kept=_KEPT_BLOCKS) as fh:
            yield cast(IO[bytes], fh)

    # -- checking whole files -------------------------------------------------

    def changed(
        self, names: Sequence[str] | None = None, threads: int | None = None
    ) -> dict[str, tuple[int, int] | str]:
        """The files whose bytes now differ from their checksums, read whole.

        Returns
        -------
        dict
            ``name -> (start, stop)`` of the first block that differs, or the error
            that reading the file gave (a message), for each file that no longer matches.
        """
        names = list(self.names if names is None else names)
        rows = [self._file(n) for n in names]
        sizes = [int(self.sizes[i]) for i in rows]
        table, errors = _checksums(self.inner, names, sizes, self.block, None, threads)
        found: dict[str, tuple[int, int] | str] = {}
        for k, (name, i) in enumerate(zip(names, rows, strict=True)):
            if k in errors:
                found[name] = str(errors[k]).removeprefix(self.url(name) + ": ")
                continue
            now = table.crcs[table.starts[k] : table.starts[k] + _blocks(sizes[k], self.block)]
            was = self.crcs[self.starts[i] : self.starts[i] + len(now)]
            differ = np.flatnonzero(now != was)
            if len(differ):
                start = int(differ[0]) * self.block
                found[name] = (start, min(start + self.block, sizes[k]))
        return found


class _Table:
    """Block checksums being gathered: start rows per file, and the CRCs."""

    def __init__(self, sizes: Sequence[int], block: int) -> None:
        counts = np.array([_blocks(s, block) for s in sizes], np.int64)
        self.starts = np.zeros(len(sizes), np.int64)
        np.cumsum(counts[:-1], out=self.starts[1:])
        self.crcs = np.zeros(int(counts.sum()), np.uint32)


def _checksums(
    source: FileSource,
    names: Sequence[str],
    sizes: Sequence[int],
    block: int,
    progress: Callable[[int], None] | None,
    threads: int | None,
) -> tuple[_Table, dict[int, TiffStoreError]]:
    """Every block's CRC-32 of every file, read whole through ``source``; and the read errors."""
    if READ % block:
        raise ValueError(f"checksums: a read of {READ} bytes is not whole blocks of {block}")
    table = _Table(sizes, block)
    # Tasks of about READ bytes: a large file's pieces, or many small files together.
    tasks: list[list[tuple[int, int, int]]] = []
    task: list[tuple[int, int, int]] = []
    task_bytes = 0
    pieces_left = [0] * len(names)
    for f, size in enumerate(sizes):
        for start in range(0, size, READ):
            length = min(READ, size - start)
            if task and task_bytes + length > READ:
                tasks.append(task)
                task, task_bytes = [], 0
            task.append((f, start, length))
            task_bytes += length
            pieces_left[f] += 1
    if task:
        tasks.append(task)
    errors: dict[int, TiffStoreError] = {}
    local = threading.local()

    def run(task: list[tuple[int, int, int]]) -> list[tuple[int, int, list[int] | None]]:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = memoryview(bytearray(READ))
        done: list[tuple[int, int, list[int] | None]] = []
        for f, start, length in task:
            if f in errors:
                done.append((f, start, None))
                continue
            view = buf[:length]
            try:
                source.read_into(names[f], start, view)
            except TiffStoreError as exc:
                errors.setdefault(f, exc)
                done.append((f, start, None))
                continue
            crcs = [zlib.crc32(view[j : j + block]) for j in range(0, length, block)]
            done.append((f, start, crcs))
        return done

    if threads is None:
        threads = 16 if source.remote else min(8, os.cpu_count() or 1)
    files_done = pieces_left.count(0)  # empty files: nothing to read
    if files_done and progress is not None:
        progress(files_done)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(tasks) or 1))) as pool:
        for future in as_completed([pool.submit(run, t) for t in tasks]):
            for f, start, crcs in future.result():
                if crcs is not None:
                    row = int(table.starts[f]) + start // block
                    table.crcs[row : row + len(crcs)] = crcs
                pieces_left[f] -= 1
                if pieces_left[f] == 0:
                    files_done += 1
                    if progress is not None:
                        progress(files_done)
    return table, errors


def compute_checksums(
    source: FileSource,
    files: Sequence[str],
    sizes: Sequence[int] | np.ndarray,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
    block: int = BLOCK,
) -> ChecksummedSource:
    """Read every byte of ``files`` once and return a source that checks reads against them.

    Parameters
    ----------
    source
        Where the files are read from (its own checks apply: register local files'
        stamps with ``source.expect`` first, so that a file changed since it was listed
        is refused here rather than checksummed as it is now).
    files, sizes
        The files' names and their sizes as listed.
    progress
        Called with the number of files done so far, as each file is done.
    threads
        Files read at once (default 8 local, 16 remote).
    block
        Bytes per checksummed block.

    Raises
    ------
    TiffReadError
        When a file cannot be read whole (the first such file, by name).

    Examples
    --------
    >>> m = store.manifest  # doctest: +SKIP
    >>> checked = compute_checksums(m.source, m.files, m.file_sizes)  # doctest: +SKIP
    >>> checked.read_bytes(m.files[0], 0, 8)  # doctest: +SKIP
    b'II*\\x00\\x08\\x00\\x00\\x00'
    """
    names = tuple(files)
    size_list = [int(s) for s in sizes]
    if len(size_list) != len(names):
        raise ValueError("compute_checksums: one size per file is needed")
    table, errors = _checksums(source, names, size_list, block, progress, threads)
    if errors:
        raise errors[min(errors)]
    return ChecksummedSource(
        source, names, np.array(size_list, np.int64), table.starts, table.crcs, block
    )

"""Where the bytes come from: listing an acquisition's files and reading byte ranges.

A :class:`FileSource` is a small, picklable description of a root (a local folder
or any fsspec URL). Local files are read with ``os.preadv`` straight into the
caller's buffer, opening and closing the file around each read, so no handle
outlives a read and the number open at once is bounded by the reading threads.
Other protocols go through fsspec.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import glob as globmod
import io
import logging
import math
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, ClassVar, cast
from urllib.parse import quote, unquote

from .errors import FileChangedError, SourceError, TiffReadError, TiffStoreError

__all__ = [
    "TIFF_SUFFIXES",
    "FileSource",
    "FsspecSource",
    "LocalSource",
    "SourceFile",
    "matches_glob",
    "resolve_source",
    "select_files",
]

#: Name endings of TIFF files (compared lower-cased), longest first.
TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".btf", ".tf8", ".tf2")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFile:
    """A file of the acquisition: its name relative to the root, its size, and what
    says which version of it was listed: the modification time in nanoseconds (local
    files), or the ETag or last-modified time the server gave (remote files)."""

    name: str
    size: int
    mtime_ns: int | None = None
    version: str | None = None


def _is_tiff(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


class FileSource(ABC):
    """Reads the files of one acquisition below a root."""

    #: Whether a read may wait on a network (and so must not run in an event loop).
    remote: ClassVar[bool] = False

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


@dataclass(frozen=True)
class LocalSource(FileSource):
    """Files on a local file system below ``root``.

    Files whose size and modification time were recorded (:meth:`expect`) are
    checked on every read with an ``fstat`` of the descriptor the bytes come
    from: a file replaced, grown, cut or touched since it was listed raises
    :class:`FileChangedError` rather than serving bytes its header no longer
    describes.
    """

    root: str

    def url(self, name: str) -> str:
        # os.path.join, not pathlib: this runs once per chunk read.
        return os.path.join(self.root, name)

    def expect(self, stamps: dict[str, tuple[int, int]]) -> None:
        """Record each file's ``(size, mtime_ns)`` as listed; reads check them from now on."""
        # A frozen dataclass: process-local state beside the fields, never pickled
        # (a manifest's reader records them again in each process).
        self.__dict__.setdefault("_stamps", {}).update(stamps)

    def _check_stamp(self, name: str, path: str, st: os.stat_result) -> None:
        expected = self.__dict__.get("_stamps", {}).get(name)
        if expected is None or (st.st_size, st.st_mtime_ns) == expected:
            return
        size = expected[0]
        if st.st_size < size:
            what = f"truncated: {st.st_size} bytes now, {size} at the open"
        elif st.st_size > size:
            what = f"grown: {st.st_size} bytes now, {size} at the open"
        else:
            what = "rewritten or replaced: same size, another modification time"
        raise FileChangedError(
            f"{path}: the file changed after the store was opened ({what}), so its header may "
            "no longer describe its bytes. Open the source again (tiffstore.open) to read it "
            "as it is now."
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _cannot_open(self, name: str, path: str, exc: OSError) -> TiffReadError:
        if isinstance(exc, FileNotFoundError) and name in self.__dict__.get("_stamps", {}):
            return FileChangedError(f"{path}: the file was removed after the store was opened.")
        return TiffReadError(f"{path}: cannot open ({exc.strerror}).")

    @contextmanager
    def _descriptor(self, name: str) -> Iterator[tuple[int, str]]:
        """An OS file descriptor for one call's reads, closed right after them."""
        path = self.url(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise self._cannot_open(name, path, exc) from exc
        try:
            self._check_stamp(name, path, os.fstat(fd))
            yield fd, path
        finally:
            os.close(fd)

    def read_bytes(self, name: str, offset: int, length: int) -> bytes:
        with self._descriptor(name) as (fd, _):
            # os.pread allocates the bytes object and fills it: no second copy.
            data = os.pread(fd, length, offset)
        if len(data) < length:
            rest = bytearray(data) + self.read(name, offset + len(data), length - len(data))
            return bytes(rest)
        return data

    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        self.read_many_into(name, [(offset, out)])

    def read_many_into(self, name: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        # One open per call, not per range: a chunk of tiles reads many ranges.
        with self._descriptor(name) as (fd, path):
            for offset, out in requests:
                want = out.nbytes
                got = os.preadv(fd, [out], offset)
                while got < want:
                    n = os.preadv(fd, [out[got:]], offset + got)
                    if n == 0:
                        raise TiffReadError(
                            f"{path}: file is truncated: wanted bytes {offset}-{offset + want} "
                            f"but it ends at {offset + got}. Was it still being written?"
                        )
                    got += n

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        path = self.url(name)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise self._cannot_open(name, path, exc) from exc
        with fh:
            self._check_stamp(name, path, os.fstat(fh.fileno()))
            yield fh


@dataclass(frozen=True)
class FsspecSource(FileSource):
    """Files below ``root`` on any fsspec file system (``s3://``, ``https://``, ``memory://``...).

    Made for the network: the file system object is built once per process (and
    again after unpickling or a fork); the byte ranges of one read go out in one
    ``cat_ranges`` call, nearby ranges merged; transient failures (connection
    errors, timeouts, 5xx, short bodies) are retried a few times with backoff,
    then raise :class:`TiffReadError` naming the URL. A short body is never
    accepted as data, and no request waits forever: a connection silent for
    :attr:`timeout` seconds fails its request (see :func:`with_read_timeouts`), and
    a batch of ranges has :attr:`timeout` seconds plus one per :attr:`min_rate`
    bytes before it is cancelled; either counts as a failure (and is retried).

    Files whose version was recorded at listing (:meth:`expect_versions`: the ETag,
    else the last-modified time) are read with conditional requests on HTTP and S3
    (``If-Match``, ``If-Unmodified-Since``), so a file replaced after the open, even
    at the same size, raises :class:`FileChangedError` at no extra request (from
    servers that honour the conditions: one that ignores them is trusted); on other
    protocols the version is compared before a file's reads, once every
    :attr:`version_recheck` seconds.
    """

    root: str
    protocol: str
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    remote: ClassVar[bool] = True
    #: Transient failures are retried this many times, waiting ``retry_wait * 2**attempt`` s.
    retries: ClassVar[int] = 4
    retry_wait: ClassVar[float] = 0.05
    #: Seconds a connection may stay silent, and a request batch (or a size) may take
    #: plus one second per ``min_rate`` bytes it reads, before it is abandoned as
    #: failed: a server that accepts a connection and never answers costs about
    #: ``(retries + 1) * timeout`` s, not a hang.
    timeout: ClassVar[float] = 30.0
    min_rate: ClassVar[float] = float(1 << 20)
    #: Where no conditional read exists, a file's version is compared again by an
    #: ``info`` request before a read when the last comparison is this many seconds old.
    version_recheck: ClassVar[float] = 5.0
    #: Ranges of one read closer than this are fetched as one: a round trip costs
    #: more than this many bytes on any link worth reading TIFFs over.
    merge_gap: ClassVar[int] = 1 << 18
    #: Headers are parsed through reads of this many bytes (one covers most headers).
    header_block: ClassVar[int] = 1 << 16
    #: Files whose first block is kept after parsing, so the signature check that
    #: follows costs no request.
    kept_heads: ClassVar[int] = 64

    def __getstate__(self) -> dict[str, Any]:
        # The fields only: the file system, sizes and heads are rebuilt per process.
        return {
            "root": self.root,
            "protocol": self.protocol,
            "storage_options": self.storage_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def fs(self) -> Any:
        """The fsspec file system, built once per process."""
        cached = self.__dict__.get("_fs")
        pid = os.getpid()
        if cached is None or cached[0] != pid:
            import fsspec

            options = with_read_timeouts(self.protocol, self.storage_options, self.timeout)
            cached = (pid, fsspec.filesystem(self.protocol, **options))
            # A frozen dataclass: set the process-local cache beside the fields.
            self.__dict__["_fs"] = cached
        return cached[1]

    @property
    def _local(self) -> _ProcessLocal:
        state = self.__dict__.get("_state")
        if state is None or state.pid != os.getpid():
            state = _ProcessLocal(os.getpid())
            self.__dict__["_state"] = state
        return state

    def remember_sizes(self, files: Sequence[SourceFile]) -> None:
        """Keep the sizes found by listing, so parsing a header does not ask for them again.

        Versions listed are expected from now on (:meth:`expect_versions`).
        """
        self._local.sizes.update((f.name, f.size) for f in files)
        self.expect_versions({f.name: f.version for f in files if f.version})

    def expect_versions(self, versions: dict[str, str]) -> None:
        """Record each file's version (ETag, or ``modified:`` time) as listed.

        Reads check them from now on: a file replaced since raises
        :class:`FileChangedError` naming it, never serves its new bytes.
        """
        # Beside the fields, never pickled (a manifest's reader records them again in
        # each process), and kept across a fork.
        self.__dict__.setdefault("_versions", {}).update(versions)

    def _version_check(self, name: str) -> dict[str, Any] | None:
        """The request conditions that make reads of ``name`` fail if it was replaced.

        ``None`` when none are needed, or none exist for this protocol: then the
        file's version is compared here, by an ``info`` request, when the last
        comparison is older than :attr:`version_recheck`.
        """
        version = self.__dict__.get("_versions", {}).get(name)
        if version is None:
            return None
        etag = None if version.startswith(_MODIFIED) else version
        if self.protocol in _WEB:
            # Beside the user's own headers (a token...), which fsspec would otherwise drop.
            headers = dict(getattr(self.fs, "kwargs", {}).get("headers") or {})
            if etag is not None and not etag.startswith("W/"):
                return {"headers": {**headers, "If-Match": etag}}
            if etag is None:
                return {"headers": {**headers, "If-Unmodified-Since": version[len(_MODIFIED) :]}}
        elif self.protocol in _S3 and etag is not None and hasattr(self.fs, "_call_s3"):
            return {"IfMatch": etag}
        checked: dict[str, float] = self.__dict__.setdefault("_versions_checked", {})
        when = time.monotonic()
        if when - checked.get(name, -math.inf) > self.version_recheck:
            url = self.url(name)
            self.fs.invalidate_cache(self.fs._strip_protocol(url))
            now = version_of(info_within(self.fs, url, self.timeout))
            if now is not None and now != version:
                raise _replaced(url, version, now)
            checked[name] = when
        return None

    def url(self, name: str) -> str:
        if self.protocol in _WEB:
            # Names are kept as the files are called; a URL needs them quoted.
            name = quote(name, safe="/")
        return f"{self.root.rstrip('/')}/{name}"

    # -- reading ----------------------------------------------------------

    def fetch(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of ``(offset, length)`` ranges of one file, in one ``cat_ranges`` call.

        Failed or short ranges are fetched again, up to :attr:`retries` times.
        """
        url = self.url(name)
        out: list[bytes | None] = [None] * len(ranges)
        pending = []
        for i, (_, length) in enumerate(ranges):
            if length <= 0:
                out[i] = b""
            else:
                pending.append(i)
        attempt = 0
        while pending:
            problem: BaseException | str = ""
            try:
                conditions = self._version_check(name)
                results = self._cat_ranges(
                    url,
                    [ranges[i][0] for i in pending],
                    [ranges[i][0] + ranges[i][1] for i in pending],
                    conditions,
                )
            except TiffStoreError:
                raise
            except Exception as exc:
                results = [exc] * len(pending)
            failed = []
            for i, data in zip(pending, results, strict=True):
                offset, length = ranges[i]
                if isinstance(data, BaseException):
                    if _precondition_failed(data):
                        version = self.__dict__.get("_versions", {}).get(name, "")
                        raise _replaced(url, version, None) from data
                    if not _is_transient(data):
                        raise TiffReadError(
                            f"{url}: cannot read bytes {offset}-{offset + length} ({_why(data)})."
                        ) from data
                    problem = data
                    failed.append(i)
                elif len(data) != length:
                    problem = f"wanted {length} bytes at {offset}, got {len(data)}: " + (
                        "the file may be truncated, or the transfer was cut"
                        if len(data) < length
                        else "the server ignores byte ranges"
                    )
                    failed.append(i)
                else:
                    out[i] = data
            pending = failed
            if pending:
                if attempt >= self.retries:
                    reason = problem if isinstance(problem, str) else _why(problem)
                    raise TiffReadError(
                        f"{url}: cannot read bytes {ranges[pending[0]][0]}-"
                        f"{sum(ranges[pending[0]])} after {attempt + 1} tries ({reason})."
                    ) from (problem if isinstance(problem, BaseException) else None)
                wait = self.retry_wait * 2**attempt * (0.5 + random.random())
                logger.debug(
                    "%s: %d ranges failed (%s); retrying in %.2f s",
                    url,
                    len(pending),
                    problem,
                    wait,
                )
                time.sleep(wait)
                attempt += 1
        return out  # type: ignore[return-value]

    def _cat_ranges(
        self,
        url: str,
        starts: list[int],
        stops: list[int],
        conditions: dict[str, Any] | None,
    ) -> list[Any]:
        """One batch of ranged reads of ``url``, under ``conditions``, bounded in time;
        failures are returned in place of their bytes."""
        fs = self.fs
        if not _driven_from_outside(fs):
            found: list[Any] = fs.cat_ranges(
                [url] * len(starts), starts, stops, on_error="return", **(conditions or {})
            )
            return found
        if conditions is not None and self.protocol in _S3:
            batch = _s3_get_ranges(fs, url, starts, stops, conditions)
        else:
            batch = _get_ranges(fs, url, starts, stops, conditions or {})
        # Our own gather, not fs._cat_ranges: cancelled at the deadline, it cancels
        # every request it started, so none is left holding a connection.
        deadline = self.timeout + (sum(stops) - sum(starts)) / self.min_rate
        return cast(list[Any], _run_within(fs, batch, deadline))

    def read_bytes(self, name: str, offset: int, length: int) -> bytes:
        # fsspec returns bytes already: hand them on rather than copy them twice.
        return self.fetch(name, [(offset, length)])[0]

    def read_header(self, name: str, length: int) -> bytes:
        # The first block of a header just parsed is kept for this one comparison,
        # then dropped: pixel reads always go to the file, never to a kept copy.
        head = self._local.take_head(name)
        if head is not None and length <= len(head):
            return head[:length]
        return self.read_bytes(name, 0, length)

    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        out[:] = self.fetch(name, [(offset, out.nbytes)])[0]

    def read_many_into(self, name: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        # Merged like read_ranges: a header check beside a chunk's pages is one request.
        views = self.read_ranges(name, [(offset, out.nbytes) for offset, out in requests])
        for (_, out), data in zip(requests, views, strict=True):
            out[:] = data

    def read_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[memoryview]:
        """Read ``(offset, length)`` ranges of one file in one request batch.

        Ranges less than :attr:`merge_gap` apart are fetched as one range (the bytes
        between them are read and dropped).
        """
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        blocks: list[tuple[int, int]] = []
        members: list[list[int]] = []
        for i in order:
            offset, length = ranges[i]
            if blocks and offset <= blocks[-1][1] + self.merge_gap:
                start, stop = blocks[-1]
                blocks[-1] = (start, max(stop, offset + length))
                members[-1].append(i)
            else:
                blocks.append((offset, offset + length))
                members.append([i])
        datas = self.fetch(name, [(start, stop - start) for start, stop in blocks])
        views = [memoryview(b"")] * len(ranges)
        for (start, _), data, idx in zip(blocks, datas, members, strict=True):
            whole = memoryview(data)
            for i in idx:
                offset, length = ranges[i]
                views[i] = whole[offset - start : offset - start + length]
        return views

    def size(self, name: str) -> int:
        """The size of a file: known from listing, else asked for (with retries)."""
        known = self._local.sizes.get(name)
        if known is not None:
            return known
        url = self.url(name)
        for attempt in range(self.retries + 1):
            try:
                info = info_within(self.fs, url, self.timeout)
                break
            except Exception as exc:
                if not _is_transient(exc) or attempt == self.retries:
                    raise TiffReadError(f"{url}: cannot open ({_why(exc)}).") from exc
                time.sleep(self.retry_wait * 2**attempt)
        size = info.get("size")
        if size is None:
            raise TiffReadError(f"{url}: the server does not say how large the file is.")
        self._local.sizes[name] = int(size)
        return int(size)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        # Ranged reads of header_block bytes, with the retries above: a file
        # object from fs.open would read its default block (5 to 50 MiB, often
        # whole files) and retry nothing.
        local = self._local

        def keep(head: bytes) -> None:
            local.keep_head(name, head, self.kept_heads)

        with BlockFile(self, name, self.size(name), self.header_block, on_head=keep) as fh:
            yield cast(IO[bytes], fh)


class _ProcessLocal:
    """What an :class:`FsspecSource` keeps in one process: sizes, and recent files' heads."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sizes: dict[str, int] = {}
        self.heads: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def take_head(self, name: str) -> bytes | None:
        if not self.heads:
            return None
        with self.lock:
            return self.heads.pop(name, None)

    def keep_head(self, name: str, data: bytes, limit: int) -> None:
        with self.lock:
            self.heads[name] = data
            self.heads.move_to_end(name)
            while len(self.heads) > limit:
                self.heads.popitem(last=False)


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


#: Prefix of a version that is a last-modified time rather than an ETag.
_MODIFIED = "modified:"

#: Protocols served by s3fs.
_S3 = ("s3", "s3a")


def version_of(info: dict[str, Any]) -> str | None:
    """What says which version of a file ``info`` describes: its ETag (quoted, as
    HTTP sends it), else ``"modified:"`` and its last-modified time; ``None`` when the
    file system says neither."""
    for key in ("ETag", "etag", "Etag"):
        etag = info.get(key)
        if etag:
            etag = str(etag)
            return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'
    for key in ("Last-Modified", "LastModified", "last_modified", "updated", "mtime"):
        modified = info.get(key)
        if modified:
            return f"{_MODIFIED}{modified}"
    return None


def _replaced(url: str, version: str, now: str | None) -> FileChangedError:
    said = (
        f"its last-modified time was {version[len(_MODIFIED) :]}"
        if version.startswith(_MODIFIED)
        else f"its ETag was {version}"
    )
    if now is not None:
        said += f", now {now.removeprefix(_MODIFIED)}"
    return FileChangedError(
        f"{url}: the file was replaced after the store was opened ({said}), so its header "
        "may no longer describe its bytes. Open the source again (tiffstore.open) to read "
        "it as it is now."
    )


def _precondition_failed(exc: BaseException) -> bool:
    """Whether a request failed because its ``If-Match``/``If-Unmodified-Since`` did not hold."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if getattr(seen, "status", None) == 412:
            return True
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            meta = response.get("ResponseMetadata", {})
            if error.get("Code") == "PreconditionFailed" or meta.get("HTTPStatusCode") == 412:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def with_read_timeouts(
    protocol: str, storage_options: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """``storage_options`` with a limit on how long one connection may stay silent, where
    the user set none: a server that stops answering mid-listing or mid-read fails
    the request after ``seconds`` (and it is retried) rather than holding it for
    minutes. However long a request takes while bytes flow is not limited."""
    options = dict(storage_options)
    if protocol in _WEB:
        client = dict(options.get("client_kwargs") or {})
        if "timeout" not in client:
            import aiohttp

            client["timeout"] = aiohttp.ClientTimeout(
                total=None, sock_connect=seconds, sock_read=seconds
            )
            options["client_kwargs"] = client
    elif protocol in _S3:
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", seconds)
        config.setdefault("read_timeout", seconds)
        options["config_kwargs"] = config
    return options


async def _within(timeout: float, coro: Any) -> Any:
    return await asyncio.wait_for(coro, timeout)


def _driven_from_outside(fs: Any) -> bool:
    """Whether ``fs`` is an async file system that we call from outside its loop (so
    its coroutines can be run, and cancelled, on that loop)."""
    return bool(getattr(fs, "async_impl", False) and not getattr(fs, "asynchronous", False))


def _run_within(fs: Any, coro: Any, timeout: float) -> Any:
    """Run ``coro`` on ``fs``'s loop, cancelled after ``timeout`` s with ``TimeoutError``."""
    from fsspec.asyn import sync

    return sync(fs.loop, _within, timeout, coro)


def info_within(fs: Any, path: str, timeout: float) -> dict[str, Any]:
    """``fs.info(path)``; on an async file system, cancelled after ``timeout`` seconds
    with ``TimeoutError`` (a server that never answers)."""
    if _driven_from_outside(fs):
        return cast(dict[str, Any], _run_within(fs, fs._info(path), timeout))
    return cast(dict[str, Any], fs.info(path))


def open_filesystem(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """The fsspec file system and path of ``url``, with :func:`with_read_timeouts`, and
    no listing cached by an earlier use: the files as they are now."""
    import fsspec

    protocol = fsspec.core.split_protocol(url)[0] or "file"
    options = with_read_timeouts(protocol, storage_options, FsspecSource.timeout)
    fs, path = fsspec.core.url_to_fs(url, **options)
    fs.invalidate_cache()
    return fs, path


async def _get_ranges(
    fs: Any, url: str, starts: list[int], stops: list[int], kwargs: dict[str, Any]
) -> list[Any]:
    """Ranged reads of one file on an async file system; failures in place of bytes."""
    return list(
        await asyncio.gather(
            *(
                fs._cat_file(url, start=a, end=b, **kwargs)
                for a, b in zip(starts, stops, strict=True)
            ),
            return_exceptions=True,
        )
    )


async def _s3_get_ranges(
    fs: Any, url: str, starts: list[int], stops: list[int], conditions: dict[str, Any]
) -> list[Any]:
    """Ranged GETs of one S3 object under ``conditions`` (``IfMatch``), which s3fs's
    own ``cat_ranges`` cannot send; failures are returned in place of their bytes."""
    bucket, key, version_id = fs.split_path(url)
    extra = {"VersionId": version_id} if version_id else {}

    async def get(start: int, stop: int) -> bytes:
        resp = await fs._call_s3(
            "get_object",
            Bucket=bucket,
            Key=key,
            Range=f"bytes={start}-{stop - 1}",
            **extra,
            **conditions,
        )
        try:
            return cast(bytes, await resp["Body"].read())
        finally:
            resp["Body"].close()

    return list(
        await asyncio.gather(
            *(get(a, b) for a, b in zip(starts, stops, strict=True)), return_exceptions=True
        )
    )


def _why(exc: BaseException) -> str:
    """A failed request's reason, in words."""
    if isinstance(exc, TimeoutError):
        return (
            f"{type(exc).__name__}: no answer within {FsspecSource.timeout:g} s and more for "
            "large reads (FsspecSource.timeout)"
        )
    return f"{type(exc).__name__}: {exc}"


def _is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed if tried again."""
    if isinstance(exc, TiffStoreError | FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - fsspec's HTTP needs it
        return False
    return isinstance(exc, aiohttp.ClientError)


def _walk_local(root: Path, recursive: bool = True) -> list[SourceFile]:
    found: list[SourceFile] = []
    append = found.append
    stack: list[tuple[str | Path, str]] = [(root, "")]
    # Folders are followed through links, each once: a link to a parent ends.
    seen: set[tuple[int, int]] = set()
    while stack:
        folder, prefix = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                logger.debug("%s: already walked (a link to a folder seen before)", folder)
                continue
            seen.add((st.st_dev, st.st_ino))
            it = os.scandir(folder)
        except OSError as exc:
            raise SourceError(f"{folder}: cannot list the folder ({exc.strerror}).") from exc
        with it:
            for entry in it:
                name = entry.name
                if name[0] == ".":
                    continue
                try:
                    # The suffix first: most entries are TIFF files, and a directory
                    # named like one is caught by is_file (from d_type: no syscall).
                    if name.lower().endswith(TIFF_SUFFIXES) and entry.is_file():
                        st = entry.stat()
                        append(SourceFile(prefix + name, st.st_size, st.st_mtime_ns))
                    elif recursive and entry.is_dir():
                        stack.append((entry.path, f"{prefix}{name}/"))
                    elif entry.is_symlink() and not os.path.exists(entry.path):
                        logger.warning("%s: left out: a link to nothing", entry.path)
                except OSError as exc:
                    # A link loop, or a file removed while listing: not a file to read.
                    logger.warning("%s: left out (%s)", entry.path, exc.strerror)
    return found


def _common_root(paths: Sequence[str]) -> str:
    parents = [os.path.dirname(p) for p in paths]
    return os.path.commonpath(parents) if parents else "."


def _resolve_local(
    source: str | os.PathLike[str] | Sequence[Any], recursive: bool = True
) -> tuple[LocalSource, list[SourceFile]]:
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            folder = path.resolve()
            found = _walk_local(folder, recursive)
            if not found:
                where = "" if recursive else " directly (recursive=False)"
                raise SourceError(
                    f"{folder}: the folder holds no TIFF files (*.tif, *.tiff){where}."
                )
            return LocalSource(str(folder)), found
        if globmod.has_magic(text):
            paths = [p for p in globmod.glob(os.path.expanduser(text), recursive=True)]
            paths = [os.path.abspath(p) for p in paths if os.path.isfile(p) and _is_tiff(p)]
            if not paths:
                raise SourceError(f"{text}: the glob matches no TIFF files (*.tif, *.tiff).")
        elif path.is_file():
            paths = [str(path.resolve())]
        else:
            raise SourceError(f"{text}: no such file or folder.")
    else:
        paths = [os.path.abspath(os.fspath(p)) for p in source]
        if not paths:
            raise SourceError("The list of files is empty.")
        absent = [p for p in paths if not os.path.isfile(p)]
        if not absent:
            paths = [p for p in paths if _is_tiff(p)]
            if not paths:
                raise SourceError("None of the files listed is a TIFF file (*.tif, *.tiff).")
        if absent:
            raise SourceError(
                f"{absent[0]}: "
                + ("not a regular file" if os.path.lexists(absent[0]) else "no such file")
                + (f" (and {len(absent) - 1} more)." if len(absent) > 1 else ".")
            )
    root = _common_root(paths)
    files = []
    for p in paths:
        st = os.stat(p)
        name = PurePosixPath(Path(os.path.relpath(p, root))).as_posix()
        files.append(SourceFile(name, st.st_size, st.st_mtime_ns))
    return LocalSource(root), files


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def _common_parent(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (URLs too: no ``os.path`` normalization)."""
    parts = [_parent(p).split("/") for p in paths]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if any(x != level[0] for x in level):
            break
        common.append(level[0])
    return "/".join(common)


def _infos(fs: Any, paths: Sequence[str]) -> list[dict[str, Any] | BaseException]:
    """``fs.info`` of many paths at once: gathered where the file system is async."""
    if not paths:
        return []
    if _driven_from_outside(fs):
        from fsspec.asyn import _run_coros_in_chunks, sync

        timeout = FsspecSource.timeout
        results: list[Any] = sync(
            fs.loop,
            _run_coros_in_chunks,
            [_within(timeout, fs._info(p)) for p in paths],
            nofiles=True,
            return_exceptions=True,
        )
        return results

    def info(path: str) -> dict[str, Any] | BaseException:
        try:
            found: dict[str, Any] = fs.info(path)
            return found
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        return list(pool.map(info, paths))


#: Protocols whose paths are URLs, quoted.
_WEB = ("http", "https")

#: A list of at least this many URLs in one folder has its sizes from one listing of
#: the folder rather than one request per file.
_LIST_PARENT_FROM = 16


def _sizes(
    fs: Any, known: dict[str, dict[str, Any]], listed: bool
) -> dict[str, tuple[int, str | None]]:
    """The size and version of every path of ``known`` (path -> what is known of it):
    from ``known`` itself, a listing of their folder (unless ``listed``: they come
    from one), or ``info`` requests made concurrently. A size nobody reports is an
    error, never 0."""
    found = {
        p: (int(info["size"]), version_of(info))
        for p, info in known.items()
        if info.get("size") is not None
    }
    wanted = [p for p in known if p not in found]
    by_parent: dict[str, list[str]] = {}
    for p in wanted:
        by_parent.setdefault(_parent(p), []).append(p)
    for parent, members in by_parent.items():
        if listed or len(members) < _LIST_PARENT_FROM:
            continue
        try:
            entries = fs.ls(parent, detail=True)
        except Exception as exc:  # only a shortcut: the requests below say what is wrong
            logger.debug("%s: cannot list (%s); asking for each file's size", parent, exc)
            continue
        infos = {fs._strip_protocol(e["name"]).rstrip("/"): e for e in entries}
        for p in members:
            info = infos.get(fs._strip_protocol(p).rstrip("/"))
            if info is not None and info.get("size") is not None:
                found[p] = (int(info["size"]), version_of(info))
    wanted = [p for p in wanted if p not in found]
    for p, info in zip(wanted, _infos(fs, wanted), strict=True):
        url = fs.unstrip_protocol(p)
        if isinstance(info, FileNotFoundError):
            raise SourceError(f"{url}: no such file.") from info
        if isinstance(info, BaseException):
            raise SourceError(f"{url}: cannot get its size ({_why(info)}).") from info
        if info.get("size") is None:
            raise SourceError(
                f"{url}: the server does not say how large the file is (no Content-Length), "
                "so it cannot be read by ranges."
            )
        found[p] = (int(info["size"]), version_of(info))
    return found


def _resolve_fsspec(
    source: str | Sequence[str], storage_options: dict[str, Any], recursive: bool = True
) -> tuple[FsspecSource, list[SourceFile]]:
    urls = [source] if isinstance(source, str) else list(source)
    # A new open sees the files as they are now, not a listing cached by an earlier one.
    fs, _ = open_filesystem(urls[0], storage_options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found: dict[str, dict[str, Any]] = {}
    root: str | None = None
    if len(urls) == 1 and not globmod.has_magic(fs._strip_protocol(urls[0])):
        # A folder (or one file): one recursive listing, not a request per entry.
        path = fs._strip_protocol(urls[0])
        try:
            listed = fs.find(
                path, detail=True, maxdepth=None if recursive else 1, **_walk_raises(fs)
            )
        except FileNotFoundError:
            listed = {}
        except Exception as exc:
            raise SourceError(f"{urls[0]}: cannot list ({_why(exc)}).") from exc
        listed = {p: e for p, e in listed.items() if p.rstrip("/") != path.rstrip("/")}
        if listed:
            root = path.rstrip("/")
            for p, info in listed.items():
                if info.get("type", "file") == "file" and _is_tiff(p):
                    found[p] = info
        elif _is_tiff(path):
            found[path] = {}
        else:
            raise SourceError(f"{urls[0]}: no such folder, or it holds no files.")
    else:
        for url in urls:
            path = fs._strip_protocol(url)
            if globmod.has_magic(path):
                try:
                    matched = fs.glob(path, detail=True)
                except Exception as exc:
                    raise SourceError(f"{url}: cannot list ({_why(exc)}).") from exc
                for p, info in matched.items():
                    if info.get("type", "file") == "file" and _is_tiff(p):
                        found[p] = info
            else:
                found[path] = {}
    if not found:
        raise SourceError(f"{source}: no TIFF files found there.")
    sizes = _sizes(fs, found, listed=root is not None)
    if root is None:
        root = _common_parent(list(sizes))
    files = [
        SourceFile(p[len(root) :].lstrip("/"), size, version=version)
        for p, (size, version) in sizes.items()
    ]
    if protocol in _WEB:
        # Index pages link to quoted names ("run%201.tif"): read the names as they are.
        files = [dataclasses.replace(f, name=unquote(f.name)) for f in files]
    reader = FsspecSource(fs.unstrip_protocol(root), protocol, dict(storage_options))
    reader.remember_sizes(files)
    return reader, files


def _walk_raises(fs: Any) -> dict[str, Any]:
    """``find``'s keywords that make a folder it fails to list an error: fsspec's own
    walk otherwise drops it (a timeout, a 500) and the open would miss its files
    unsaid. File systems with a ``find`` of their own (s3fs: one listing) take none."""
    from fsspec import AbstractFileSystem
    from fsspec.asyn import AsyncFileSystem

    generic = (
        type(fs)._find is AsyncFileSystem._find
        if isinstance(fs, AsyncFileSystem)
        else type(fs).find is AbstractFileSystem.find
    )
    return {"on_error": "raise"} if generic else {}


def _strip_file_scheme(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    if isinstance(path, str) and path.startswith("file://"):
        return path[len("file://") :]
    return path


def _globs(patterns: str | Sequence[str] | None) -> list[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def matches_glob(name: str, patterns: Sequence[str]) -> bool:
    """Whether a file name (relative, ``/``-separated) matches one of the globs.

    A glob is matched against the whole relative name, where ``*`` crosses folders
    (``MIPs/*``, ``*_MIP_z.tif``); a glob without ``/`` is also matched against the
    file name alone (``ex6-2_*``).

    Examples
    --------
    >>> matches_glob("MIPs/a_MIP_z.tif", ["MIPs/*"]), matches_glob("raw/b.tif", ["b*"])
    (True, True)
    """
    base = name.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(name, p) or ("/" not in p and fnmatch.fnmatchcase(base, p))
        for p in patterns
    )


def select_files(
    files: list[SourceFile],
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> list[SourceFile]:
    """The files that match an ``include`` glob (all when none given) and no ``exclude`` glob."""
    inc, exc = _globs(include), _globs(exclude)
    if not inc and not exc:
        return files
    kept = [
        f
        for f in files
        if (not inc or matches_glob(f.name, inc)) and not (exc and matches_glob(f.name, exc))
    ]
    if not kept:
        raise SourceError(
            f"None of the {len(files)} TIFF files is left after include={inc} exclude={exc} "
            f"(first: {files[0].name!r}). Globs are matched against names relative to the "
            "folder, such as 'MIPs/*' or '*_MIP_z.tif'."
        )
    return kept


def resolve_source(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
    *,
    recursive: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> tuple[FileSource, list[SourceFile]]:
    """List an acquisition's TIFF files.

    Parameters
    ----------
    source
        A folder, a glob, a list of files, or fsspec URLs of any of these.
    storage_options
        Passed to fsspec for URLs.
    recursive
        Search a folder's subfolders too (default), or only the folder itself.
    include, exclude
        Globs on the names relative to the root (see :func:`matches_glob`): keep only
        files matching an ``include`` glob, then drop those matching an ``exclude`` glob.

    Returns
    -------
    (FileSource, list of SourceFile)
        The reader for the root and the files below it, sorted by name.
    """
    if isinstance(source, (str, os.PathLike)):
        first: str | os.PathLike[str] = source
    else:
        source = list(source)
        first = source[0] if source else ""
    is_url = isinstance(first, str) and "://" in first and not first.startswith("file://")
    if is_url:
        if not isinstance(source, (str, os.PathLike)):
            source = [os.fspath(s) for s in source]
        reader: FileSource
        reader, files = _resolve_fsspec(source, storage_options or {}, recursive)  # type: ignore[arg-type]
    else:
        if isinstance(source, (str, os.PathLike)):
            source = _strip_file_scheme(source)
        else:
            source = [_strip_file_scheme(s) for s in source]
        reader, files = _resolve_local(source, recursive)
    files = select_files(files, include, exclude)
    # A plain sort, for a deterministic order: where each file belongs in the
    # array comes from its name's parsed fields, never from this order.
    files.sort(key=lambda f: f.name)
    return reader, files

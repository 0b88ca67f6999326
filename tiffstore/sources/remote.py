"""Remote files: reads of any fsspec file system, made for the network.

A :class:`FsspecSource` describes a root on any fsspec file system (``s3://``,
``https://``, ``memory://``...) and its :class:`~tiffstore.sources.settings.RemoteSettings`.
It pickles as those alone; the file system object, the sizes found by the listing
and recently parsed headers are kept per process.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, cast
from urllib.parse import quote

from tiffstore._compat import s3_can_call, strip_protocol
from tiffstore.errors import TiffReadError, TiffStoreError
from tiffstore.sources.base import FileSource
from tiffstore.sources.blockfile import BlockFile
from tiffstore.sources.files import ListedFiles
from tiffstore.sources.network import (
    MODIFIED,
    S3_PROTOCOLS,
    WEB_PROTOCOLS,
    driven_from_outside,
    get_ranges,
    info_within,
    is_transient,
    precondition_failed,
    replaced_error,
    run_within,
    s3_get_ranges,
    version_of,
    why_failed,
    with_read_timeouts,
)
from tiffstore.sources.settings import RemoteSettings

__all__ = ["FsspecSource"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FsspecSource(FileSource):
    """Files below ``root`` on any fsspec file system (``s3://``, ``https://``, ``memory://``...).

    Made for the network: the file system object is built once per process (and
    again after unpickling or a fork); the byte ranges of one read go out in one
    ``cat_ranges`` call, nearby ranges merged; transient failures (connection
    errors, timeouts, 5xx, short bodies) are retried a few times with backoff,
    then raise :class:`TiffReadError` naming the URL. A short body is never
    accepted as data, and no request waits forever: a connection silent for
    ``settings.timeout`` seconds fails its request (see :func:`with_read_timeouts`), and
    a batch of ranges has ``settings.timeout`` seconds plus one per ``settings.min_rate``
    bytes before it is cancelled; either counts as a failure (and is retried).

    Files whose version was recorded at listing (:meth:`expect_versions`: the ETag,
    else the last-modified time) are read with conditional requests on HTTP and S3
    (``If-Match``, ``If-Unmodified-Since``), so a file replaced after the open, even
    at the same size, raises :class:`FileChangedError` at no extra request (from
    servers that honour the conditions: one that ignores them is trusted); on other
    protocols the version is compared before a file's reads, once every
    ``settings.version_recheck`` seconds.
    """

    root: str
    protocol: str
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    settings: RemoteSettings = field(default_factory=RemoteSettings, compare=False)

    remote: ClassVar[bool] = True

    def __getstate__(self) -> dict[str, Any]:
        # The fields only: the file system, sizes and heads are rebuilt per process.
        return {
            "root": self.root,
            "protocol": self.protocol,
            "storage_options": self.storage_options,
            "settings": self.settings,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"settings": RemoteSettings(), **state})

    @property
    def concurrency(self) -> int:
        """Reads in flight at once (``settings.concurrency``)."""
        return self.settings.concurrency

    @property
    def fs(self) -> Any:
        """The fsspec file system, built once per process."""
        cached = self.__dict__.get("_fs")
        pid = os.getpid()
        if cached is None or cached[0] != pid:
            import fsspec

            options = with_read_timeouts(self.protocol, self.storage_options, self.settings.timeout)
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

    def remember_sizes(self, files: ListedFiles) -> None:
        """Keep the sizes found by listing, so parsing a header does not ask for them again.

        Versions listed are expected from now on (:meth:`expect_versions`).
        """
        names = files.names
        self._local.sizes.update(zip(names, files.sizes.tolist(), strict=True))
        if files.versions is not None:
            self.expect_versions({n: v for n, v in zip(names, files.versions, strict=True) if v})

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
        comparison is older than ``settings.version_recheck``.
        """
        version = self.__dict__.get("_versions", {}).get(name)
        if version is None:
            return None
        etag = None if version.startswith(MODIFIED) else version
        if self.protocol in WEB_PROTOCOLS:
            # Beside the user's own headers (a token...), which fsspec would otherwise drop.
            headers = dict(getattr(self.fs, "kwargs", {}).get("headers") or {})
            if etag is not None and not etag.startswith("W/"):
                return {"headers": {**headers, "If-Match": etag}}
            if etag is None:
                return {"headers": {**headers, "If-Unmodified-Since": version[len(MODIFIED) :]}}
        elif self.protocol in S3_PROTOCOLS and etag is not None and s3_can_call(self.fs):
            return {"IfMatch": etag}
        checked: dict[str, float] = self.__dict__.setdefault("_versions_checked", {})
        when = time.monotonic()
        if when - checked.get(name, -math.inf) > self.settings.version_recheck:
            url = self.url(name)
            self.fs.invalidate_cache(strip_protocol(self.fs, url))
            now = version_of(info_within(self.fs, url, self.settings.timeout))
            if now is not None and now != version:
                raise replaced_error(url, version, now)
            checked[name] = when
        return None

    def url(self, name: str) -> str:
        if self.protocol in WEB_PROTOCOLS:
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
                    if precondition_failed(data):
                        version = self.__dict__.get("_versions", {}).get(name, "")
                        raise replaced_error(url, version, None) from data
                    if not is_transient(data):
                        raise TiffReadError(
                            f"{url}: cannot read bytes {offset}-{offset + length} ({why_failed(data, self.settings.timeout)})."
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
                if attempt >= self.settings.retries:
                    reason = (
                        problem
                        if isinstance(problem, str)
                        else why_failed(problem, self.settings.timeout)
                    )
                    raise TiffReadError(
                        f"{url}: cannot read bytes {ranges[pending[0]][0]}-"
                        f"{sum(ranges[pending[0]])} after {attempt + 1} tries ({reason})."
                    ) from (problem if isinstance(problem, BaseException) else None)
                wait = self.settings.retry_wait * 2**attempt * (0.5 + random.random())
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
        if not driven_from_outside(fs):
            found: list[Any] = fs.cat_ranges(
                [url] * len(starts), starts, stops, on_error="return", **(conditions or {})
            )
            return found
        if conditions is not None and self.protocol in S3_PROTOCOLS:
            batch = s3_get_ranges(fs, url, starts, stops, conditions)
        else:
            batch = get_ranges(fs, url, starts, stops, conditions or {})
        # Our own gather, not fs._cat_ranges: cancelled at the deadline, it cancels
        # every request it started, so none is left holding a connection.
        deadline = self.settings.timeout + (sum(stops) - sum(starts)) / self.settings.min_rate
        return cast(list[Any], run_within(fs, batch, deadline))

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
            if blocks and offset <= blocks[-1][1] + self.settings.merge_gap:
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
        for attempt in range(self.settings.retries + 1):
            try:
                info = info_within(self.fs, url, self.settings.timeout)
                break
            except Exception as exc:
                if not is_transient(exc) or attempt == self.settings.retries:
                    raise TiffReadError(
                        f"{url}: cannot open ({why_failed(exc, self.settings.timeout)})."
                    ) from exc
                time.sleep(self.settings.retry_wait * 2**attempt)
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
            local.keep_head(name, head, self.settings.kept_heads)

        with BlockFile(self, name, self.size(name), self.settings.header_block, on_head=keep) as fh:
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

"""Talking to remote file systems: deadlines, retries, versions and conditional reads.

What :class:`~tiffstore.sources.remote.FsspecSource` and the listing share: which
failures are worth a retry, how a silent server is given up on, what a file's
version (ETag or last-modified time) is, and how a read is made conditional on it.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import fsspec

from tiffstore._compat import fs_cat_file, fs_info, s3_call
from tiffstore.errors import FileChangedError, SourceError, TiffStoreError
from tiffstore.sources.settings import RemoteSettings

__all__ = [
    "MODIFIED",
    "S3_PROTOCOLS",
    "WEB_PROTOCOLS",
    "driven_from_outside",
    "filesystem_of",
    "get_ranges",
    "info_within",
    "is_transient",
    "open_filesystem",
    "precondition_failed",
    "replaced_error",
    "run_within",
    "s3_get_ranges",
    "version_of",
    "why_failed",
    "with_read_timeouts",
    "within",
]

#: Prefix of a version that is a last-modified time rather than an ETag.
MODIFIED = "modified:"

#: Protocols served by s3fs.
S3_PROTOCOLS = ("s3", "s3a")
#: Protocols whose paths are URLs, quoted.
WEB_PROTOCOLS = ("http", "https")


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
            return f"{MODIFIED}{modified}"
    return None


def replaced_error(url: str, version: str, now: str | None) -> FileChangedError:
    said = (
        f"its last-modified time was {version[len(MODIFIED) :]}"
        if version.startswith(MODIFIED)
        else f"its ETag was {version}"
    )
    if now is not None:
        said += f", now {now.removeprefix(MODIFIED)}"
    return FileChangedError(
        f"{url}: the file was replaced after the store was opened ({said}), so its header "
        "may no longer describe its bytes. Open the source again (tiffstore.open) to read "
        "it as it is now."
    )


def precondition_failed(exc: BaseException) -> bool:
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
    if protocol in WEB_PROTOCOLS:
        client = dict(options.get("client_kwargs") or {})
        if "timeout" not in client:
            import aiohttp

            client["timeout"] = aiohttp.ClientTimeout(
                total=None, sock_connect=seconds, sock_read=seconds
            )
            options["client_kwargs"] = client
    elif protocol in S3_PROTOCOLS:
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", seconds)
        config.setdefault("read_timeout", seconds)
        options["config_kwargs"] = config
    return options


async def within(timeout: float, coro: Any) -> Any:
    return await asyncio.wait_for(coro, timeout)


def driven_from_outside(fs: Any) -> bool:
    """Whether ``fs`` is an async file system that we call from outside its loop (so
    its coroutines can be run, and cancelled, on that loop)."""
    return bool(getattr(fs, "async_impl", False) and not getattr(fs, "asynchronous", False))


def run_within(fs: Any, coro: Any, timeout: float) -> Any:
    """Run ``coro`` on ``fs``'s loop, cancelled after ``timeout`` s with ``TimeoutError``."""
    from fsspec.asyn import sync

    return sync(fs.loop, within, timeout, coro)


def info_within(fs: Any, path: str, timeout: float) -> dict[str, Any]:
    """``fs.info(path)``; on an async file system, cancelled after ``timeout`` seconds
    with ``TimeoutError`` (a server that never answers)."""
    if driven_from_outside(fs):
        return cast(dict[str, Any], run_within(fs, fs_info(fs, path), timeout))
    return cast(dict[str, Any], fs.info(path))


def filesystem_of(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """fsspec's file system and path of ``url``, or a :class:`SourceError` naming the URL
    when fsspec cannot make one (an unknown protocol, its package not installed, an
    option the file system does not take)."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        raise SourceError(
            f"{url}: reading this protocol needs a package that is not installed ({exc}); "
            'for s3:// and http(s):// install tiffstore\'s remote extra: pip install "tiffstore[remote]".'
        ) from exc
    except (ValueError, TypeError) as exc:
        raise SourceError(
            f"{url}: fsspec cannot open this URL with these storage options "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    return fs, path


def open_filesystem(
    url: str, storage_options: dict[str, Any], settings: RemoteSettings | None = None
) -> tuple[Any, str]:
    """The fsspec file system and path of ``url``, with :func:`with_read_timeouts`, and
    no listing cached by an earlier use: the files as they are now."""
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    timeout = (settings or RemoteSettings()).timeout
    options = with_read_timeouts(protocol, storage_options, timeout)
    fs, path = filesystem_of(url, options)
    fs.invalidate_cache()
    return fs, path


async def get_ranges(
    fs: Any, url: str, starts: list[int], stops: list[int], kwargs: dict[str, Any]
) -> list[Any]:
    """Ranged reads of one file on an async file system; failures in place of bytes."""
    return list(
        await asyncio.gather(
            *(fs_cat_file(fs, url, a, b, **kwargs) for a, b in zip(starts, stops, strict=True)),
            return_exceptions=True,
        )
    )


async def s3_get_ranges(
    fs: Any, url: str, starts: list[int], stops: list[int], conditions: dict[str, Any]
) -> list[Any]:
    """Ranged GETs of one S3 object under ``conditions`` (``IfMatch``), which s3fs's
    own ``cat_ranges`` cannot send; failures are returned in place of their bytes."""
    bucket, key, version_id = fs.split_path(url)
    extra = {"VersionId": version_id} if version_id else {}

    async def get(start: int, stop: int) -> bytes:
        resp = await s3_call(
            fs,
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


def why_failed(exc: BaseException, timeout: float) -> str:
    """A failed request's reason, in words (``timeout``: the limit it ran under)."""
    if isinstance(exc, TimeoutError):
        return (
            f"{type(exc).__name__}: no answer within {timeout:g} s and more for large reads "
            "(a longer limit: remote={'timeout': seconds})"
        )
    return f"{type(exc).__name__}: {exc}"


def is_transient(exc: BaseException) -> bool:
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

"""Serve a :class:`~tiffstore.read.store.TiffStore` read-only over HTTP, with a viewer page.

The store's keys are served at the root of the URL (``GET /.zarray``,
``GET /0.1.2.0.0``...), so any HTTP client that zarr or fsspec knows reads the
virtual array live::

    zarr.open_array(fsspec.get_mapper("http://127.0.0.1:8000/"), mode="r")

Built on Starlette (the ASGI application) and uvicorn (the server); install them
with ``pip install "tiffstore[serve]"``. The server answers ``GET`` and ``HEAD``,
single byte ranges (``206``; ``416`` when the range starts past the end), strong
ETags with ``If-None-Match`` (``304``) and ``If-Range``, and CORS so that web viewers
on other origins can read it. Writes are refused (``405``); a key that does not
exist is ``404`` (a missing file's chunk, which zarr then reads as the fill value).
Keys are checked before anything is read: ``..``, absolute paths, backslashes,
control characters and overlong keys are refused with ``400``.

The viewer page lives at ``/_viewer/``; store keys never start with an underscore
(metadata keys start with a dot, chunk keys with a digit, and group members are the
image and the coordinates), and :func:`make_app` refuses a store where one would.

With ``watch=`` seconds the served store is swapped for its refresh
(:meth:`~tiffstore.read.store.TiffStore.refresh`) at that interval while files
arrive: the metadata grows, each key's ETag changes only when its bytes may have
(:class:`StoreIdentity`), and the viewer page polls the metadata and extends its
sliders.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest

from tiffstore.errors import ServeError, TiffStoreError
from tiffstore.manifest.model import unstitch
from tiffstore.read.store import TiffStore

__all__ = [
    "VIEWER_PATH",
    "LiveStore",
    "StoreIdentity",
    "make_app",
    "open_socket",
    "parse_range",
    "serve",
]

logger = logging.getLogger(__name__)

#: Where the viewer page is served. Store keys never start with ``_``.
VIEWER_PATH = "/_viewer/"
#: Keys longer than this are refused before the store is asked.
MAX_KEY_LENGTH = 1024

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_SLASHES = re.compile(r"/{2,}")
_JSON_KEYS = {".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"}


def check_key(key: str) -> str | None:
    """Why ``key`` is refused before the store is asked, or ``None`` if it may be looked up.

    Examples
    --------
    >>> check_key("0.1.2.0.0") is None
    True
    >>> check_key("../etc/passwd")
    "a '.' or '..' part"
    """
    if not key:
        return "an empty key"
    if len(key) > MAX_KEY_LENGTH:
        return f"a key longer than {MAX_KEY_LENGTH} characters"
    if "\\" in key:
        return "a backslash"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        return "a control character"
    if key.startswith("/"):
        return "an absolute path"
    parts = key.split("/")
    if any(p in (".", "..") for p in parts):
        return "a '.' or '..' part"
    if any(not p for p in parts):
        return "an empty path part"
    return None


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a single-range ``Range`` header on ``size`` bytes.

    Returns ``None`` where the header is to be ignored (not a single byte range:
    the whole value is sent, as RFC 9110 allows) and raises :class:`ValueError`
    where it is unsatisfiable (``416``).

    Examples
    --------
    >>> parse_range("bytes=0-99", 1000), parse_range("bytes=-10", 1000)
    ((0, 100), (990, 1000))
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise ValueError(header)
        return max(size - suffix, 0), size
    start = int(first)
    if last and int(last) < start:
        return None  # invalid syntax: ignore the header
    if start >= size:
        raise ValueError(header)
    stop = size if not last else min(int(last) + 1, size)
    return start, stop


def byte_request(start: int, stop: int, size: int) -> ByteRequest | None:
    """The zarr byte request reading ``[start, stop)`` of a value of ``size`` bytes."""
    if start == 0 and stop == size:
        return None
    if stop == size:
        return OffsetByteRequest(start)
    return RangeByteRequest(start, stop)


@dataclass(frozen=True)
class StoreIdentity:
    """What each key of a store serves, as ETags: the same bytes, the same ETag.

    ``digest`` covers how every chunk is encoded (the source, the Zarr format, shards,
    dtype, chunks, fill value, the files' geometry) but not which files there are, so
    that an array that grows keeps the ETags of what did not change. A document's
    ETag is its bytes' digest; a chunk's digests the files of its grid cells (name,
    size, modification time or version; a missing cell as such) and how many cells it
    covers, so a chunk changes its ETag when a file arrives in it or the array grows
    into it. A server started again on the same files gives the same ETags. The pixels
    are not read: a file rewritten in place with the same size and time keeps its ETags.
    """

    digest: str
    store: TiffStore = field(compare=False, repr=False)
    _documents: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, store: TiffStore) -> StoreIdentity:
        m = store.manifest
        h = hashlib.sha256()
        for part in (
            m.source.url(""),
            store.zarr_format,
            store.shards,
            m.dtype.str,
            m.chunks,
            m.fill_value,
            m.file_dims,
            m.stitched,
            m.layouts,
        ):
            h.update(repr(part).encode() + b"\0")
        return cls(h.hexdigest()[:20], store)

    def etag(self, key: str) -> str:
        """The strong ETag (quoted) of ``key``."""
        h = hashlib.sha256(f"{self.digest}/{key}".encode())
        store = self.store
        chunk = store.keys.chunk_key(key)
        if chunk is not None:
            self._chunk_files(chunk.index, h)
        else:
            known = self._documents.get(key)
            if known is not None:
                return known
            h.update(store.get_bytes_sync(key) or b"")
        etag = '"' + h.hexdigest()[:32] + '"'
        if chunk is None:
            self._documents[key] = etag  # a store's documents never change
        return etag

    def _chunk_files(self, index: tuple[int, ...], h: Any) -> None:
        m = self.store.manifest
        starts, stops, _ = unstitch(m, *m.chunk_bounds(index))
        nn = len(m.name_axes)
        cells = m.file_index[
            tuple(slice(a, b) for a, b in zip(starts[:nn], stops[:nn], strict=True))
        ]
        h.update(repr(cells.shape).encode())
        mtimes = m.file_mtimes
        for i in cells.ravel().tolist():
            if i < 0:
                h.update(b"\0-")
                continue
            mtime = -1 if mtimes is None else int(mtimes[i])
            version = m.file_versions[i] if m.file_versions else ""
            h.update(f"\0{m.files[i]}\0{int(m.file_sizes[i])}\0{mtime}\0{version}".encode())


class LiveStore:
    """The store being served, and its ETags; swapped for a refresh while watching.

    Requests take :attr:`current` once, so each is answered by one store, whole.
    """

    def __init__(self, store: TiffStore) -> None:
        self.current: tuple[TiffStore, StoreIdentity] = (store, StoreIdentity.of(store))

    @property
    def store(self) -> TiffStore:
        return self.current[0]

    def swap(self, store: TiffStore) -> None:
        self.current = (store, StoreIdentity.of(store))

    async def watch(
        self, interval: float, on_change: Callable[[TiffStore], None] | None = None
    ) -> None:
        """Refresh every ``interval`` seconds, forever; swap in each store that changed.

        A refresh that fails (the source no longer grows: a file rewritten or removed)
        is logged once and the store served so far stays.
        """
        said = ""
        while True:
            await asyncio.sleep(interval)
            try:
                new = await asyncio.to_thread(self.store.refresh)
            except TiffStoreError as exc:
                if str(exc) != said:
                    said = str(exc)
                    logger.error("refresh failed, still serving the array as it was: %s", exc)
                continue
            said = ""
            growth = new.growth
            if growth is None or (not growth.changed and new.incomplete == self.store.incomplete):
                continue
            self.swap(new)
            logger.info("the array grew: %s", growth.summary())
            if on_change is not None:
                on_change(new)


def _etag_matches(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header matches (weak comparison, as RFC 9110 says)."""
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


async def _folder_listing(store: TiffStore, prefix: str) -> str | None:
    """An HTML index of the keys and folders directly under ``prefix``, as web servers
    list a folder, or ``None`` when no key lies under it.

    fsspec's HTTP file system lists a folder by the links of its page, so zarr can list
    a group's members over HTTP (``zarr.open_group(url, path="group")``, xarray with
    ``consolidated=False``).
    """
    names = [name async for name in store.list_dir(prefix)]
    if not names:
        return None
    folder_keys = {k.split("/", 1)[0] for k in names}
    links = []
    for name in sorted(folder_keys):
        is_folder = not await store.exists(f"{prefix}/{name}".lstrip("/"))
        href = html.escape(name + ("/" if is_folder else ""), quote=True)
        links.append(f'<li><a href="{href}">{href}</a></li>')
    title = html.escape("/" + prefix)
    return f"<!doctype html><title>{title}</title><ul>\n" + "\n".join(links) + "\n</ul>\n"


def viewer_html() -> str:
    """The viewer page shipped with the package."""
    return files("tiffstore.apps").joinpath("viewer/index.html").read_text(encoding="utf-8")


def make_app(
    store: TiffStore,
    *,
    watch: float | None = None,
    on_change: Callable[[TiffStore], None] | None = None,
) -> Starlette:
    """An ASGI application serving ``store`` read-only, and the viewer page.

    Parameters
    ----------
    store
        The store to serve (see :func:`tiffstore.open`).
    watch
        Seconds between refreshes of the store while files arrive (``None``: never).
        The viewer page then polls the metadata as often and extends its sliders.
    on_change
        Called with each refreshed store that is served from then on.

    Returns
    -------
    starlette.applications.Starlette
        Run it with any ASGI server, or use :func:`serve`.

    Examples
    --------
    >>> app = make_app(tiffstore.open("raw/"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    taken = set(store.coords) | set(store.dims)
    clash = sorted(n for n in taken if n.startswith("_"))
    if clash:
        raise ServeError(
            f"Cannot serve {store!r}: its group members {clash} start with '_', which is "
            "kept for the viewer page. Rename the field with pattern= (a template)."
        )
    live = LiveStore(store)
    # The page polls the metadata as often as the store is refreshed (0: never).
    poll = 0 if watch is None else max(int(watch * 1000), 100)
    page = viewer_html().replace('<body data-poll="0">', f'<body data-poll="{poll}">')

    async def root(request: Request) -> Response:
        return RedirectResponse(VIEWER_PATH, status_code=307)

    async def viewer(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def key_value(request: Request) -> Response:
        # A client joining a URL that ends in "/" with "/group" asks for "//group/...":
        # repeated slashes separate nothing, and name the same key.
        key = _SLASHES.sub("/", request.path_params["key"]).lstrip("/")
        folder = key.endswith("/")
        key = key.rstrip("/")
        store, identity = live.current
        why = check_key(key)
        if why is not None:
            logger.info("refused key %r: %s", key[:80], why)
            return Response(f"Refused key: {why}.\n", status_code=400, media_type="text/plain")
        try:
            if folder:
                raise FileNotFoundError(key)
            size = await store.getsize(key)
        except FileNotFoundError:
            listing = await _folder_listing(store, key)
            if listing is not None:
                return HTMLResponse(listing, headers={"Cache-Control": "no-cache"})
            return Response(f"No key {key!r} in the store.\n", 404, media_type="text/plain")
        etag = identity.etag(key)
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": "no-cache",
            "Content-Type": "application/json"
            if key.rsplit("/", 1)[-1] in _JSON_KEYS
            else "application/octet-stream",
        }
        inm = request.headers.get("if-none-match")
        if inm is not None and _etag_matches(inm, etag):
            return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
        start, stop, status = 0, size, 200
        range_header = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if range_header is not None and (if_range is None or if_range.strip() == etag):
            try:
                span = parse_range(range_header, size)
            except ValueError:
                return Response(
                    status_code=416,
                    headers={"Content-Range": f"bytes */{size}", "ETag": etag},
                )
            if span is not None:
                start, stop = span
                status = 206
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        headers["Content-Length"] = str(stop - start)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        # bytes straight from the store: zarr's Buffer would cost one more copy here.
        try:
            body = await run_in_threadpool(
                store.get_bytes_sync, key, byte_request(start, stop, size)
            )
        except (TiffStoreError, OSError) as exc:
            # A file changed or vanished since the open: say which, keep serving the rest.
            logger.error("reading %r failed: %s", key, exc)
            return Response(f"Cannot read {key!r}: {exc}\n", 500, media_type="text/plain")
        if body is None:  # listed a moment ago: the store changed under us
            return Response(f"No key {key!r} in the store.\n", 404, media_type="text/plain")
        if len(body) != stop - start:
            raise TiffStoreError(
                f"Store key {key!r}: read {len(body)} bytes where {stop - start} were expected."
            )
        return Response(body, status_code=status, headers=headers)

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route(VIEWER_PATH.rstrip("/"), root, methods=["GET", "HEAD"]),
        Route(VIEWER_PATH, viewer, methods=["GET", "HEAD"]),
        Route("/{key:path}", key_value, methods=["GET", "HEAD"]),
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD"],
        allow_headers=["Range", "If-None-Match", "If-Range"],
        expose_headers=["Content-Range", "Content-Length", "ETag", "Accept-Ranges"],
        max_age=600,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if watch is None:
            yield
            return
        task = asyncio.create_task(live.watch(watch, on_change))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(routes=routes, middleware=[cors], lifespan=lifespan)
    app.state.live = live
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_socket(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free port, read it back).

    Examples
    --------
    >>> sock = open_socket(port=0)
    >>> sock.getsockname()[1] > 0
    True
    >>> sock.close()
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it small responses wait ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"Cannot listen on {host}:{port}: {exc.strerror}. Pick another --port (0: any free one)."
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    store: TiffStore,
    sock: socket.socket,
    *,
    log_level: str = "warning",
    watch: float | None = None,
    on_change: Callable[[TiffStore], None] | None = None,
    **uvicorn_options: Any,
) -> None:
    """Serve ``store`` on a listening socket with uvicorn until interrupted.

    Parameters
    ----------
    store
        The store to serve.
    sock
        A listening socket, from :func:`open_socket`.
    log_level
        uvicorn's log level (``"info"`` logs every request).
    watch, on_change
        Refresh the store at this interval in seconds while files arrive, and call
        ``on_change`` with each grown store (see :func:`make_app`).
    **uvicorn_options
        Passed to ``uvicorn.Config``.

    Examples
    --------
    >>> sock = open_socket("127.0.0.1", 8000)  # doctest: +SKIP
    >>> serve(tiffstore.open("raw/"), sock)  # doctest: +SKIP
    """
    app = make_app(store, watch=watch, on_change=on_change)
    config = uvicorn.Config(app, log_level=log_level, **uvicorn_options)
    uvicorn.Server(config).run(sockets=[sock])

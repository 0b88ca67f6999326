"""Remote faults: a fault-injecting proxy on loopback in front of nginx breaks, holds
back or never answers requests; reads retry a bounded number of times, then fail naming
the URL, and a cut or short body is never taken as data."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import tiffstore
from tests.conftest import HttpServer, free_port
from tests.test_remote import SHAPE, http_folder, read_all, write_case
from tiffstore.errors import SourceError, TiffReadError, TiffStoreError
from tiffstore.sample import sample_name, write_sample

pytestmark = pytest.mark.network

# -- failures: a proxy in front of nginx ---------------------------------------


@dataclass
class FaultProxy:
    """An HTTP proxy on loopback that breaks ranged GETs of TIFF files on request.

    ``plan`` holds the faults for the next such requests, in order; ``always`` the
    fault for every one after. Faults: ``"503"``, ``"reset"`` (close without an
    answer), ``"cut"`` (send half the body, keeping the full Content-Length),
    ``"short"`` (send half the body with a matching Content-Length), ``"500"``, ``"404"``,
    ``"hang"`` (read the request, never answer). ``hide_sizes`` drops Content-Length
    from every answer about a TIFF file; ``delay`` holds every such answer back that
    many seconds, ``delay_pages`` every other answer (index pages); ``hang_everything``
    leaves every request unanswered (listings too). ``token``: requests without the
    header ``Authorization: Bearer <token>`` are answered 401.
    """

    upstream: int
    port: int = 0
    plan: list[str] = field(default_factory=list)
    always: str | None = None
    hide_sizes: bool = False
    delay: float = 0.0
    hang_everything: bool = False
    delay_pages: float = 0.0
    token: str | None = None
    faults_done: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def next_fault(self, head: bytes) -> str | None:
        line = head.split(b"\r\n", 1)[0].decode()
        if not (line.startswith("GET ") and ".tif " in line and b"\r\nrange:" in head.lower()):
            return None
        fault = self.plan.pop(0) if self.plan else self.always
        if fault:
            self.faults_done.append(fault)
        return fault

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                fault = "hang" if self.hang_everything else self.next_fault(head)
                if fault == "hang":
                    await asyncio.Event().wait()  # until the client gives up, or the test ends
                if self.delay and b".tif " in head.split(b"\r\n", 1)[0]:
                    await asyncio.sleep(self.delay)
                if self.delay_pages and b".tif " not in head.split(b"\r\n", 1)[0]:
                    await asyncio.sleep(self.delay_pages)
                if (
                    self.token
                    and f"authorization: bearer {self.token}".encode() not in head.lower()
                ):
                    writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                if fault == "reset":
                    writer.transport.abort()
                    return
                if fault in _STATUS:
                    reason = _STATUS[fault]
                    writer.write(f"HTTP/1.1 {fault} {reason}\r\nContent-Length: 0\r\n\r\n".encode())
                    await writer.drain()
                    continue
                status, headers, body = await self.forward(head)
                if fault == "cut":
                    writer.write(status + headers + body[: len(body) // 2])
                    await writer.drain()
                    writer.transport.abort()
                    return
                if self.hide_sizes and b".tif " in head.split(b"\r\n", 1)[0]:
                    writer.write(status + _without_length(headers) + body)
                    await writer.drain()
                    return  # no length: the body ends when the connection does
                if fault == "short":
                    body = body[: len(body) // 2]
                    headers = _without_length(headers, len(body))
                writer.write(status + headers + body)
                await writer.drain()
        except asyncio.CancelledError:
            return  # stopped by the fixture, clients still connected
        finally:
            writer.close()

    async def forward(self, head: bytes) -> tuple[bytes, bytes, bytes]:
        """Send the request to nginx; return its status line, headers and body."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        lines = [h for h in head.split(b"\r\n") if h and not h.lower().startswith(b"connection:")]
        writer.write(b"\r\n".join([*lines, b"Connection: close", b"", b""]))
        await writer.drain()
        response = await reader.read()
        writer.close()
        top, _, body = response.partition(b"\r\n\r\n")
        status, _, headers = top.partition(b"\r\n")
        headers = b"\r\n".join(
            h for h in headers.split(b"\r\n") if not h.lower().startswith(b"connection:")
        )
        if head.startswith(b"HEAD "):
            body = b""
        return status + b"\r\n", headers + b"\r\n\r\n", body


_STATUS = {"500": "Internal Server Error", "503": "Service Unavailable", "404": "Not Found"}


def _without_length(headers: bytes, length: int | None = None) -> bytes:
    """Response headers without Content-Length, or with ``length`` as it."""
    lines = [
        h for h in headers.split(b"\r\n") if h and not h.lower().startswith(b"content-length:")
    ]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join([*lines, b"", b""])


@pytest.fixture
def fault_proxy(http_server: HttpServer) -> Iterator[FaultProxy]:
    port = int(http_server.url.rsplit(":", 1)[1].strip("/"))
    proxy = FaultProxy(upstream=port, port=free_port())
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: list[asyncio.AbstractServer] = []

    async def serve() -> None:
        server.append(await asyncio.start_server(proxy.handle, "127.0.0.1", proxy.port))
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(10)
    yield proxy

    async def stop() -> None:
        server[0].close()
        # Clients keep connections alive: end their handlers too.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def proxied_store(http_server: HttpServer, proxy: FaultProxy, **kwargs: Any) -> tuple[Any, Any]:
    folder, _ = http_folder(http_server)
    # Files larger than a header block, so chunk reads go to the server.
    ref = write_case(folder / "raw", "raw", shape=(4, 96, 128))
    # One chunk per file (small files are grouped by default): a fault hits one file.
    kwargs.setdefault("chunks", "file")
    store = tiffstore.open(f"{proxy.url}{folder.name}/raw/", **kwargs)
    return store, ref


@pytest.mark.parametrize(
    "faults",
    [["500", "503"], ["reset"], ["cut"], ["short"], ["503", "reset", "cut", "short", "500"]],
)
def test_transient_faults_are_retried(faults, http_server, fault_proxy):
    store, ref = proxied_store(http_server, fault_proxy)
    fault_proxy.plan = list(faults)
    np.testing.assert_array_equal(read_all(store), ref)
    assert fault_proxy.faults_done == faults


@pytest.mark.parametrize("fault", ["500", "503", "cut", "short", "reset"])
def test_lasting_faults_raise_naming_the_url(fault, http_server, fault_proxy):
    store, _ = proxied_store(http_server, fault_proxy)
    fault_proxy.always = fault
    with pytest.raises(TiffReadError, match=r"http://127\.0\.0\.1:\d+/acq-\w+/raw/ex6-2_.*\.tif"):
        store.get_sync("0.1.0.0.0")
    # Bounded: the first try and the retries, then the error (aiohttp itself tries a
    # request again once when a kept-alive connection drops).
    tries = store.manifest.source.settings.retries + 1
    assert tries <= len(fault_proxy.faults_done) <= (2 * tries if fault == "reset" else tries)


def test_a_server_that_never_answers_is_given_up_on_naming_the_url(http_server, fault_proxy):
    store, _ = proxied_store(http_server, fault_proxy, remote={"timeout": 0.5, "retries": 2})
    fault_proxy.always = "hang"
    started = time.monotonic()
    with pytest.raises(
        TiffReadError,
        match=r"http://127\.0\.0\.1:\d+/acq-\w+/raw/ex6-2_.*\.tif: cannot read bytes "
        r"\d+-\d+ after 3 tries \(\w*TimeoutError",
    ):
        store.get_sync("0.1.0.0.0")
    # Three tries of half a second each, and the waits between them: not forever.
    assert time.monotonic() - started < 10
    assert fault_proxy.faults_done == ["hang"] * 3


def test_opening_a_server_that_never_answers_is_given_up_on(http_server, fault_proxy):
    folder, _ = http_folder(http_server)
    write_case(folder / "raw", "raw")
    fault_proxy.hang_everything = True
    started = time.monotonic()
    with pytest.raises(SourceError, match=rf"{fault_proxy.url}{folder.name}/raw/: cannot list"):
        tiffstore.open(f"{fault_proxy.url}{folder.name}/raw/", remote={"timeout": 0.5})
    assert time.monotonic() - started < 10
    urls = [f"{fault_proxy.url}{folder.name}/raw/{sample_name(0, s)}" for s in (1, 2)]
    with pytest.raises(SourceError, match=r"raw/ex6-2_.*\.tif: cannot get its size \(\w*Timeout"):
        tiffstore.open(urls, remote={"timeout": 0.5})
    assert time.monotonic() - started < 20


def test_truncated_body_never_becomes_data(http_server, fault_proxy):
    """Through zarr and dask too, a short body is an error, not zeros or garbage."""
    store, _ = proxied_store(http_server, fault_proxy)
    fault_proxy.always = "short"
    with pytest.raises(
        TiffStoreError, match=r"\.tif: cannot read .* \(wanted (\d+) bytes at \d+, got \d+"
    ):
        read_all(store)
    with pytest.raises(TiffStoreError, match="truncated"):
        store.to_dask().compute()


def test_not_found_is_not_retried(http_server, fault_proxy):
    store, _ = proxied_store(http_server, fault_proxy)
    fault_proxy.always = "404"
    with pytest.raises(TiffReadError, match=r"FileNotFoundError"):
        store.get_sync("0.1.0.0.0")
    assert fault_proxy.faults_done == ["404"]


def test_unknown_size_is_an_error_not_zero(http_server, fault_proxy):
    folder, _ = http_folder(http_server)
    write_case(folder / "raw", "raw")
    fault_proxy.hide_sizes = True
    url = f"{fault_proxy.url}{folder.name}/raw/{sample_name(0, 1)}"
    with pytest.raises(SourceError, match=f"{url}: the server does not say how large"):
        tiffstore.open([url])


def test_chunks_in_flight_at_once(http_server, fault_proxy):
    """Remote chunks are read off zarr's event loop, many at a time: with every answer
    held back, reading 6 files takes about one round of requests, not six."""
    store, ref = proxied_store(http_server, fault_proxy)
    fault_proxy.delay = delay = 0.25
    t0 = time.perf_counter()
    np.testing.assert_array_equal(read_all(store), ref)
    # Each file costs a header check then its chunk: 12 answers, 2 rounds at once.
    assert time.perf_counter() - t0 < 6 * delay


def test_a_timed_out_read_leaves_no_request_behind(http_server, fault_proxy):
    """The deadline cancels every request of the batch: none is left holding a
    connection (the file system's own socket timeout is set long here, so only the
    deadline can end them)."""
    import aiohttp

    folder, _ = http_folder(http_server)
    write_case(folder / "raw", "raw", shape=(4, 96, 128))
    options = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_read=60)}}
    store = tiffstore.open(
        f"{fault_proxy.url}{folder.name}/raw/",
        chunks="file",
        storage_options=options,
        remote={"timeout": 0.3, "retries": 1},
    )
    fault_proxy.always = "hang"
    with pytest.raises(TiffReadError, match="TimeoutError"):
        store.get_sync("0.1.0.0.0")
    loop = store.manifest.source.fs.loop

    async def requests_left() -> list[str]:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        requests = ("_cat_file", "get_ranges", "_run_coros_in_chunks")
        return [repr(t) for t in tasks if any(r in repr(t) for r in requests)]

    assert asyncio.run_coroutine_threadsafe(requests_left(), loop).result(10) == []
    assert fault_proxy.faults_done == ["hang"] * 2


def test_a_listing_slower_than_the_timeout_in_all_is_fine(http_server, fault_proxy):
    """The time limit is per request: a listing of many index pages, each answered in
    time, may take longer than it in all."""
    folder, _ = http_folder(http_server)
    for sub in ("a", "b", "c"):
        write_sample(folder / "raw" / sub, channels=1, stacks=2, shape=SHAPE)
    fault_proxy.delay_pages = 0.3
    started = time.monotonic()
    store = tiffstore.open(f"{fault_proxy.url}{folder.name}/raw/", remote={"timeout": 0.5})
    assert time.monotonic() - started > 1.0  # 4 index pages, one after another
    assert len(store.manifest.files) == 6


def test_the_users_headers_go_with_every_request(http_server, fault_proxy):
    """A server that wants a token: the conditional reads add If-Match beside it."""
    folder, _ = http_folder(http_server)
    ref = write_case(folder / "raw", "raw")
    fault_proxy.token = "secret"
    options = {"headers": {"Authorization": "Bearer secret"}}
    store = tiffstore.open(f"{fault_proxy.url}{folder.name}/raw/", storage_options=options)
    assert all(v.startswith('"') for v in store.manifest.file_versions)
    np.testing.assert_array_equal(read_all(store), ref)
    with pytest.raises(SourceError, match="401"):
        tiffstore.open(f"{fault_proxy.url}{folder.name}/raw/")


def test_files_of_one_chunk_are_read_at_once(http_server, fault_proxy):
    """Small files grouped into one chunk are fetched together: with every answer held
    back, a chunk of 6 files (its first read, header checks included) takes about one
    round, not six."""
    folder, _ = http_folder(http_server)
    ref = write_case(folder / "raw", "raw")
    store = tiffstore.open(f"{fault_proxy.url}{folder.name}/raw/")
    index = (0,) * len(store.shape)
    files = {p.file for p in tiffstore.plan_chunk(store.manifest, index).pieces}
    assert len(files) == 6
    fault_proxy.delay = delay = 0.4
    t0 = time.perf_counter()
    got = store.reader.read_chunk(index)
    assert time.perf_counter() - t0 < 3 * delay
    assert got is not None
    np.testing.assert_array_equal(got[: ref.shape[0], : ref.shape[1]], ref)


def test_sizes_of_a_list_of_urls_are_asked_at_once(http_server, fault_proxy):
    folder, _ = http_folder(http_server)
    write_sample(folder / "raw", channels=4, stacks=3, shape=SHAPE)
    urls = [f"{fault_proxy.url}{folder.name}/raw/{p.name}" for p in (folder / "raw").iterdir()]
    fault_proxy.delay = delay = 0.25
    t0 = time.perf_counter()
    store = tiffstore.open(urls)
    # 12 HEADs at once, then a header parse and two signature reads.
    assert time.perf_counter() - t0 < 8 * delay
    assert store.shape == (4, 3, *SHAPE)

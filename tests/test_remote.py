"""Remote TIFFs: ``tiffstore.open`` on s3:// and http:// sources, against real servers on
loopback (moto, nginx), with a fault-injecting proxy for retries."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tests.conftest import HttpServer, free_port, stack_files
from tiffstore.errors import SourceError, TiffReadError, TiffStoreError
from tiffstore.sample import sample_name, write_sample
from tiffstore.sources import FsspecSource

pytestmark = pytest.mark.network

CHANNELS, STACKS, SHAPE = 2, 3, (4, 40, 50)

#: Name -> options for tifffile: the compressions the issue names, plus tiles.
CASES: dict[str, dict[str, Any]] = {
    "raw": {},
    "zlib-predictor": {"compression": "zlib", "predictor": True, "rowsperstrip": 16},
    "lzw": {"compression": "lzw", "rowsperstrip": 16},
    "zstd": {"compression": "zstd"},
    "tiled": {"compression": "zlib", "tile": (16, 32)},
    # 12-bit samples: no strip codec, decoded through tifffile on the ranged file.
    "12-bit": {"bitspersample": 12},
}


def write_case(directory: Path, case: str, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Write the acquisition for ``case`` and return tifffile's reading of it."""
    write_sample(directory, channels=CHANNELS, stacks=STACKS, shape=shape, **CASES[case])
    return stack_files(directory, CHANNELS, STACKS, shape)


def read_all(store: tiffstore.TiffStore) -> np.ndarray:
    """The whole array through zarr's async path (the store's ``get``)."""
    return np.asarray(zarr.open_array(store, mode="r")[...])


def http_folder(http_server: HttpServer) -> tuple[Path, str]:
    """A fresh folder below nginx's root, and its URL."""
    name = f"acq-{uuid.uuid4().hex[:8]}"
    return http_server.root / name, f"{http_server.url}{name}/"


def file_requests(requests: list[Any], method: str = "GET") -> list[Any]:
    return [r for r in requests if r.method == method and r.path.endswith(".tif")]


# -- round trips -------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_s3_folder(case, tmp_path, s3_bucket, upload):
    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", case)
    upload(tmp_path / "raw", f"{url}/raw/", options)
    store = tiffstore.open(f"{url}/raw/", storage_options=options)
    assert store.manifest.source.url("") == f"{url}/raw/"
    assert store.shape == ref.shape
    np.testing.assert_array_equal(read_all(store), ref)
    np.testing.assert_array_equal(store.to_dask().compute(), ref)


@pytest.mark.parametrize("case", list(CASES))
def test_http_folder(case, http_server):
    folder, url = http_folder(http_server)
    ref = write_case(folder / "raw", case)
    store = tiffstore.open(f"{url}raw/")
    assert store.shape == ref.shape
    np.testing.assert_array_equal(read_all(store), ref)
    np.testing.assert_array_equal(store.to_dask().compute(), ref)


@pytest.mark.parametrize("chunks", ["page", (1, 1, 3, 24, 20)])
def test_http_chunks_across_strips(chunks, http_server):
    """Chunks that cut strips and tiles read only what they need, and right."""
    folder, url = http_folder(http_server)
    ref = write_case(folder / "raw", "tiled", shape=(5, 70, 90))
    store = tiffstore.open(f"{url}raw/", chunks=chunks)
    np.testing.assert_array_equal(read_all(store), ref)


def test_http_large_pages_through_tifffile(http_server):
    """Pages tifffile decodes, larger than a few header blocks, read right."""
    folder, url = http_folder(http_server)
    ref = write_case(folder / "raw", "12-bit", shape=(2, 512, 384))
    store = tiffstore.open(f"{url}raw/")
    assert store.manifest.layouts[0].storage == "tifffile"
    np.testing.assert_array_equal(read_all(store), ref)


def test_list_of_urls(tmp_path, s3_bucket, upload, http_server):
    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", "raw")
    upload(tmp_path / "raw", f"{url}/raw/", options)
    folder, http_url = http_folder(http_server)
    shutil.copytree(tmp_path / "raw", folder / "raw")
    names = [sample_name(c, s) for c in range(CHANNELS) for s in range(STACKS)]
    for root, opts in ((f"{url}/raw/", options), (f"{http_url}raw/", None)):
        store = tiffstore.open([root + n for n in reversed(names)], storage_options=opts)
        assert store.manifest.source.url("") == root
        np.testing.assert_array_equal(read_all(store), ref)


def test_names_that_need_quoting(tmp_path, http_server, s3_bucket, upload):
    """Spaces and '#' in names: the names stay as the files are called, URLs are quoted."""
    folder, url = http_folder(http_server)
    for d in (folder, tmp_path / "q"):
        d.mkdir()
        for i in range(3):
            tifffile.imwrite(d / f"run 1#a_t{i}.tif", np.full((4, 5), i, "uint16"))
    bucket, options = s3_bucket
    upload(tmp_path / "q", f"{bucket}/q/", options)
    for source, opts in ((url, None), (f"{bucket}/q/", options)):
        store = tiffstore.open(source, storage_options=opts)
        assert store.manifest.files == tuple(f"run 1#a_t{i}.tif" for i in range(3))
        assert store.dims == ("t", "y", "x")
        np.testing.assert_array_equal(read_all(store)[:, 0, 0], [0, 1, 2])


def test_s3_glob_and_folder_without_slash(tmp_path, s3_server, s3_bucket, upload):
    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", "raw")
    (tmp_path / "raw" / "notes.txt").write_text("not a TIFF")
    upload(tmp_path / "raw", f"{url}/raw/", options)
    for source in (f"{url}/raw", f"{url}/raw/*_CAM1_*.tif"):
        s3_server.clear()
        store = tiffstore.open(source, storage_options=options)
        assert store.manifest.source.url("") == f"{url}/raw/"
        assert not [r for r in s3_server.requests if r.method == "HEAD"]
        np.testing.assert_array_equal(read_all(store), ref)
    with pytest.raises(SourceError, match=f"{url}/nothing/: no such folder"):
        tiffstore.open(f"{url}/nothing/", storage_options=options)


def test_missing_url_is_named(http_server):
    folder, url = http_folder(http_server)
    write_case(folder / "raw", "raw")
    absent = f"{url}raw/{sample_name(5, 5)}"
    with pytest.raises(SourceError, match=absent):
        tiffstore.open([f"{url}raw/{sample_name(0, 0)}", absent])


def test_source_pickles_without_its_file_system(tmp_path, s3_bucket, upload):
    import pickle

    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", "raw")
    upload(tmp_path / "raw", f"{url}/raw/", options)
    store = tiffstore.open(f"{url}/raw/", storage_options=options)
    source = store.manifest.source
    assert isinstance(source, FsspecSource)
    assert source.fs is source.fs  # built once
    data = pickle.dumps(store)
    assert b"S3FileSystem" not in data
    again = pickle.loads(data)
    assert again == store
    np.testing.assert_array_equal(read_all(again), ref)


# -- what open costs -----------------------------------------------------------


def test_s3_open_costs_listing_and_three_header_reads(tmp_path, s3_server, s3_bucket, upload):
    url, options = s3_bucket
    write_sample(tmp_path / "raw", channels=4, stacks=5, shape=SHAPE)
    upload(tmp_path / "raw", f"{url}/raw/", options)
    s3_server.clear()
    store = tiffstore.open(f"{url}/raw/", storage_options=options)
    requests = list(s3_server.requests)
    assert store.shape == (4, 5, *SHAPE)
    objects = [r for r in requests if ".tif" in r.path]
    listings = [r for r in requests if ".tif" not in r.path]
    assert all(r.method == "GET" and "list-type=2" in r.path for r in listings), requests
    assert len(listings) == 1, requests
    # Ranged reads of headers only (206), at most three, for 20 uniform files.
    assert 1 <= len(objects) <= 3, requests
    assert all(r.method == "GET" and r.status == 206 for r in objects), requests


def test_http_open_costs_listing_sizes_and_three_header_reads(http_server):
    folder, url = http_folder(http_server)
    write_sample(folder / "raw", channels=4, stacks=5, shape=SHAPE)
    http_server.clear()
    store = tiffstore.open(f"{url}raw/")
    requests = http_server.requests
    assert store.shape == (4, 5, *SHAPE)
    pages = [r for r in requests if r.path.endswith("/")]
    assert len(pages) == 1, requests
    # An index page holds no sizes: one HEAD per file, sent concurrently.
    assert len(file_requests(requests, "HEAD")) == 20
    reads = file_requests(requests)
    assert 1 <= len(reads) <= 3, requests
    assert all(r.status == 206 and r.range for r in reads), requests
    page_end = max(int(r.range.rsplit("-", 1)[1]) for r in reads)
    assert page_end < FsspecSource.header_block


def test_chunk_of_tiles_is_one_request_batch(http_server):
    """A chunk's tiles go out together; tiles written back to back are one GET."""
    folder, url = http_folder(http_server)
    # Pages larger than a header block, so page 1 is read from the server.
    ref = write_case(folder / "raw", "tiled", shape=(2, 256, 256))
    store = tiffstore.open(f"{url}raw/", chunks="page")
    http_server.clear()
    got = store.get_sync("0.0.1.0.0")
    assert got is not None
    np.testing.assert_array_equal(
        np.frombuffer(got.to_bytes(), ref.dtype).reshape(256, 256), ref[0, 0, 1]
    )
    reads = file_requests(http_server.requests)
    # 16 x 8 tiles of page 1: one merged range (and none for headers: parsed at open).
    assert len(reads) == 1, reads


# -- failures: a proxy in front of nginx ---------------------------------------


@dataclass
class FaultProxy:
    """An HTTP proxy on loopback that breaks ranged GETs of TIFF files on request.

    ``plan`` holds the faults for the next such requests, in order; ``always`` the
    fault for every one after. Faults: ``"503"``, ``"reset"`` (close without an
    answer), ``"cut"`` (send half the body, keeping the full Content-Length),
    ``"short"`` (send half the body with a matching Content-Length), ``"404"``,
    ``"hang"`` (read the request, never answer). ``hide_sizes`` drops Content-Length
    from every answer about a TIFF file; ``delay`` holds every such answer back that
    many seconds; ``hang_everything`` leaves every request unanswered (listings too).
    """

    upstream: int
    port: int = 0
    plan: list[str] = field(default_factory=list)
    always: str | None = None
    hide_sizes: bool = False
    delay: float = 0.0
    hang_everything: bool = False
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
                if fault == "reset":
                    writer.transport.abort()
                    return
                if fault in ("503", "404"):
                    reason = "Service Unavailable" if fault == "503" else "Not Found"
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
    "faults", [["503", "503"], ["reset"], ["cut"], ["short"], ["503", "reset", "cut", "short"]]
)
def test_transient_faults_are_retried(faults, http_server, fault_proxy):
    store, ref = proxied_store(http_server, fault_proxy)
    fault_proxy.plan = list(faults)
    np.testing.assert_array_equal(read_all(store), ref)
    assert fault_proxy.faults_done == faults


@pytest.mark.parametrize("fault", ["503", "cut", "short", "reset"])
def test_lasting_faults_raise_naming_the_url(fault, http_server, fault_proxy):
    store, _ = proxied_store(http_server, fault_proxy)
    fault_proxy.always = fault
    with pytest.raises(TiffReadError, match=r"http://127\.0\.0\.1:\d+/acq-\w+/raw/ex6-2_.*\.tif"):
        store.get_sync("0.1.0.0.0")
    # Bounded: the first try and the retries, then the error (aiohttp itself tries a
    # request again once when a kept-alive connection drops).
    tries = FsspecSource.retries + 1
    assert tries <= len(fault_proxy.faults_done) <= (2 * tries if fault == "reset" else tries)


def test_a_server_that_never_answers_is_given_up_on_naming_the_url(
    http_server, fault_proxy, monkeypatch
):
    store, _ = proxied_store(http_server, fault_proxy)
    monkeypatch.setattr(FsspecSource, "timeout", 0.5)
    monkeypatch.setattr(FsspecSource, "retries", 2)
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


def test_opening_a_server_that_never_answers_is_given_up_on(http_server, fault_proxy, monkeypatch):
    folder, _ = http_folder(http_server)
    write_case(folder / "raw", "raw")
    monkeypatch.setattr(FsspecSource, "timeout", 0.5)
    fault_proxy.hang_everything = True
    started = time.monotonic()
    with pytest.raises(SourceError, match=rf"{fault_proxy.url}{folder.name}/raw/: cannot list"):
        tiffstore.open(f"{fault_proxy.url}{folder.name}/raw/")
    assert time.monotonic() - started < 10
    urls = [f"{fault_proxy.url}{folder.name}/raw/{sample_name(0, s)}" for s in (1, 2)]
    with pytest.raises(SourceError, match=r"raw/ex6-2_.*\.tif: cannot get its size \(\w*Timeout"):
        tiffstore.open(urls)
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


def test_s3_list_of_urls_sizes_from_one_listing(tmp_path, s3_server, s3_bucket, upload):
    url, options = s3_bucket
    write_sample(tmp_path / "raw", channels=4, stacks=5, shape=SHAPE)
    upload(tmp_path / "raw", f"{url}/raw/", options)
    urls = [f"{url}/raw/{p.name}" for p in sorted((tmp_path / "raw").iterdir())]
    s3_server.clear()
    store = tiffstore.open(urls, storage_options=options)
    requests = list(s3_server.requests)
    assert store.shape == (4, 5, *SHAPE)
    assert not [r for r in requests if r.method == "HEAD"], requests
    assert len([r for r in requests if ".tif" not in r.path]) == 1, requests


def test_chunks_in_flight_at_once(http_server, fault_proxy):
    """Remote chunks are read off zarr's event loop, many at a time: with every answer
    held back, reading 6 files takes about one round of requests, not six."""
    store, ref = proxied_store(http_server, fault_proxy)
    fault_proxy.delay = delay = 0.25
    t0 = time.perf_counter()
    np.testing.assert_array_equal(read_all(store), ref)
    # Each file costs a header check then its chunk: 12 answers, 2 rounds at once.
    assert time.perf_counter() - t0 < 6 * delay


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


@pytest.mark.slow
def test_worker_processes_read_from_s3(tmp_path, s3_bucket, upload):
    """Pickled to other processes, the store rebuilds its file system and reads."""
    distributed = pytest.importorskip("distributed")
    import dask.array as da

    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", "zlib-predictor")
    upload(tmp_path / "raw", f"{url}/raw/", options)
    store = tiffstore.open(f"{url}/raw/", storage_options=options, chunks="page")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        np.testing.assert_array_equal(client.compute(da.from_zarr(store)).result(), ref)

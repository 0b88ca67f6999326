"""``tiffstore serve``: the store over real HTTP (uvicorn on loopback), read by zarr + fsspec,
by plain HTTP requests, and the viewer page in a real headless browser."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dask.array as da
import fsspec
import numpy as np
import pytest
import tifffile
import uvicorn
import xarray as xr
import zarr
from hypothesis import given
from hypothesis import strategies as st

import tiffstore
from tests.conftest import ctrl_c_reaches
from tiffstore.apps.serve import StoreIdentity, check_key, make_app, open_socket, parse_range
from tiffstore.cli.main import main
from tiffstore.errors import ServeError
from tiffstore.read.store import TiffStore

pytestmark = pytest.mark.network

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


@contextmanager
def running(store: TiffStore, watch: float | None = None) -> Iterator[str]:
    """Serve ``store`` (refreshed every ``watch`` seconds, if given) with uvicorn in a
    thread on a free loopback port; yield its URL."""
    sock = open_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(store, watch=watch), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def served(
    make_sample: Callable[..., tuple[Path, np.ndarray]],
) -> Iterator[tuple[str, TiffStore, np.ndarray]]:
    """3 channels x 4 stacks of (6, 32, 24) uint16, channel 1's stack 2 missing, served."""
    directory, ref = make_sample(missing=[(1, 2)])
    store = tiffstore.open(directory, chunks="file")  # one file per chunk, as the keys assume
    with running(store) as url:
        yield url, store, ref


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with the path sent exactly as given (no normalization)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- zarr and fsspec read the served store -----------------------------------


def test_zarr_over_fsspec_http_reads_the_source(served: tuple[str, TiffStore, np.ndarray]) -> None:
    url, store, ref = served
    arr = zarr.open_array(fsspec.get_mapper(url), mode="r")
    assert arr.shape == store.shape and arr.dtype == store.dtype
    np.testing.assert_array_equal(arr[:], ref)  # the missing file reads as 0 (a 404)
    np.testing.assert_array_equal(arr[2, 1, 3], ref[2, 1, 3])
    np.testing.assert_array_equal(da.from_zarr(url).compute(), ref)


def test_xarray_reads_the_served_group_view(served: tuple[str, TiffStore, np.ndarray]) -> None:
    url, store, ref = served
    ds = xr.open_zarr(fsspec.get_mapper(url))
    assert ds.image.dims == store.dims
    assert ds.wavelength.values.tolist() == store.coords["wavelength"]["values"]
    np.testing.assert_array_equal(ds.image.sel(ch=2).values, ref[2])


def test_page_chunks_read_one_plane(make_sample: Callable[..., tuple[Path, np.ndarray]]) -> None:
    directory, ref = make_sample(channels=2, stacks=2, shape=(5, 20, 16))
    with running(tiffstore.open(directory, chunks="page")) as url:
        arr = zarr.open_array(fsspec.get_mapper(url), mode="r")
        assert arr.chunks == (1, 1, 1, 20, 16)
        np.testing.assert_array_equal(arr[1, 0, 4], ref[1, 0, 4])


# -- HTTP semantics ------------------------------------------------------------


def test_range_requests(served: tuple[str, TiffStore, np.ndarray]) -> None:
    url, store, _ = served
    whole = store.get_bytes_sync("0.1.0.0.0")
    assert whole is not None
    n = len(whole)
    for header, start, stop in [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, n),
        ("bytes=-64", n - 64, n),
        (f"bytes=10-{n + 500}", 10, n),
    ]:
        status, headers, body = request(url, "/0.1.0.0.0", headers={"Range": header})
        assert status == 206, header
        assert body == whole[start:stop]
        assert headers["content-range"] == f"bytes {start}-{stop - 1}/{n}"
        assert headers["content-length"] == str(stop - start)
    status, headers, _ = request(url, "/0.1.0.0.0", headers={"Range": f"bytes={n}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{n}"
    # Several ranges, or nonsense: ignored, the whole value comes back.
    status, _, body = request(url, "/0.1.0.0.0", headers={"Range": "bytes=0-1,5-9"})
    assert status == 200 and body == whole


def test_head_etag_and_conditional_requests(served: tuple[str, TiffStore, np.ndarray]) -> None:
    url, store, _ = served
    status, headers, body = request(url, "/0.0.0.0.0", method="HEAD")
    assert status == 200 and body == b""
    assert headers["content-length"] == str(6 * 32 * 24 * 2)
    assert headers["accept-ranges"] == "bytes"
    etag = headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    status, headers, body = request(url, "/0.0.0.0.0")
    assert headers["etag"] == etag and len(body) == 6 * 32 * 24 * 2
    assert request(url, "/.zarray")[1]["etag"] not in (etag, None)
    assert request(url, "/.zarray")[1]["content-type"] == "application/json"
    status, headers, body = request(url, "/0.0.0.0.0", headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and headers["etag"] == etag
    status, _, _ = request(url, "/0.0.0.0.0", headers={"If-None-Match": f'"other", W/{etag}'})
    assert status == 304
    status, _, body = request(url, "/0.0.0.0.0", headers={"If-None-Match": '"other"'})
    assert status == 200 and len(body) == 6 * 32 * 24 * 2
    # If-Range with a stale ETag: the whole value, not the range.
    status, _, body = request(url, "/0.0.0.0.0", headers={"Range": "bytes=0-9", "If-Range": '"x"'})
    assert status == 200 and body == store.get_bytes_sync("0.0.0.0.0")
    status, _, body = request(url, "/0.0.0.0.0", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert status == 206 and len(body) == 10


def test_etags_identify_the_manifest(make_sample: Callable[..., tuple[Path, np.ndarray]]) -> None:
    directory, _ = make_sample(channels=2, stacks=2, shape=(3, 8, 8))
    first = StoreIdentity.of(tiffstore.open(directory))
    assert StoreIdentity.of(tiffstore.open(directory)) == first  # stable across restarts
    assert StoreIdentity.of(tiffstore.open(directory, chunks="page")) != first
    copy = directory.with_name(directory.name + "-copy")
    shutil.copytree(directory, copy)
    assert StoreIdentity.of(tiffstore.open(copy)) != first  # other files
    assert first.etag("0.0.0.0.0") != first.etag("0.1.0.0.0")


def test_cors(served: tuple[str, TiffStore, np.ndarray]) -> None:
    url, _, _ = served
    origin = {"Origin": "http://viewer.example"}
    _, headers, _ = request(url, "/.zarray", headers=origin)
    assert headers["access-control-allow-origin"] == "*"
    exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
    assert {"content-range", "etag", "content-length"} <= exposed
    status, headers, _ = request(
        url,
        "/0.0.0.0.0",
        method="OPTIONS",
        headers={
            **origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert status == 200
    assert "GET" in headers["access-control-allow-methods"]
    assert "range" in headers["access-control-allow-headers"].lower()


def test_root_redirects_to_the_viewer(served: tuple[str, TiffStore, np.ndarray]) -> None:
    url, _, _ = served
    status, headers, _ = request(url, "/")
    assert status == 307 and headers["location"] == "/_viewer/"
    status, headers, body = request(url, "/_viewer/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<canvas" in body and b"src=" not in body  # no external script


def test_reserved_name_is_refused(make_sample: Callable[..., tuple[Path, np.ndarray]]) -> None:
    directory, _ = make_sample(channels=2, stacks=2, shape=(2, 8, 8))
    store = tiffstore.open(directory, pattern=r".*_ch(?P<_viewer>\d+)_.*_stack(?P<stack>\d+)_.*")
    with pytest.raises(ServeError, match="_viewer"):
        make_app(store)


@given(size=st.integers(0, 3000), a=st.integers(0, 4000), b=st.integers(0, 4000))
def test_parse_range_agrees_with_slicing(size: int, a: int, b: int) -> None:
    data = (bytes(range(256)) * 12)[:size]
    cases: list[tuple[str, bool, bytes]] = [
        # header, unsatisfiable, the bytes it names
        (f"bytes={a}-{b}", a >= size, data[a : b + 1]),
        (f"bytes={a}-", a >= size, data[a:]),
        (f"bytes=-{b}", b == 0 or size == 0, data[-b:] if b else b""),
    ]
    for header, unsatisfiable, expected in cases:
        if header == f"bytes={a}-{b}" and b < a:
            assert parse_range(header, size) is None  # invalid: ignored, not an error
            continue
        if unsatisfiable:
            with pytest.raises(ValueError):
                parse_range(header, size)
            continue
        span = parse_range(header, size)
        assert span is not None
        start, stop = span
        assert 0 <= start < stop <= size
        assert data[start:stop] == expected, header


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        (".zarray", True),
        ("0.1.2.0.0", True),
        ("image/.zarray", True),
        ("", False),
        ("..", False),
        ("a/./b", False),
        ("/abs", False),
        ("a\\b", False),
        ("a\x00", False),
        ("a\nb", False),
        ("x" * 2000, False),
    ],
)
def test_check_key(key: str, ok: bool) -> None:
    assert (check_key(key) is None) == ok


# -- the command -------------------------------------------------------------------


def test_serve_command(make_sample: Callable[..., tuple[Path, np.ndarray]]) -> None:
    directory, ref = make_sample(channels=2, stacks=2, shape=(3, 16, 12))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiffstore", "serve", str(directory), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ctrl_c_reaches,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Serving "), first + proc.stderr.read()  # type: ignore[union-attr]
        url = first.split(" at ")[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert "/_viewer/" in proc.stdout.readline()
        # uvicorn may still be starting: the socket already listens, so this waits.
        arr = zarr.open_array(fsspec.get_mapper(url), mode="r")
        np.testing.assert_array_equal(arr[:], ref)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, exit code 0
        assert proc.wait(20) == 0, proc.stderr.read()  # type: ignore[union-attr]
        assert "Stopped." in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_socket_lets_asyncio_disable_nagle() -> None:
    # asyncio sets TCP_NODELAY only on sockets created with IPPROTO_TCP; without it every
    # small response (metadata, a 404) waited ~40 ms for the client's delayed ACK.
    sock = open_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_serve_without_the_extra_says_what_to_install(
    sample_dir: tuple[Path, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "tiffstore.apps.serve", None)  # as if starlette were absent
    assert main(["serve", str(sample_dir[0])]) == 1  # a runtime error, not a usage error
    assert 'pip install "tiffstore[serve]"' in capsys.readouterr().err


def test_serve_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "tiffstore serve raw/ --port 8000" in out and "/_viewer/" in out


def test_serve_command_port_taken(
    make_sample: Callable[..., tuple[Path, np.ndarray]], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = make_sample(channels=2, stacks=2, shape=(2, 8, 8))
    sock = open_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert main(["serve", str(directory), "--port", str(port)]) == 1
    finally:
        sock.close()
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


# -- the viewer page in a real browser ---------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"The viewer test needs Debian's chromium at {CHROMIUM}: "
            "apt-get install -y chromium (.ci/run installs it)."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield b
        finally:
            b.close()


def expected_grey(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The viewer's contrast mapping, in the same float64 arithmetic as the page's."""
    span = max(hi - lo, 1e-9)
    grey = np.floor((plane.astype(np.float64) - lo) / span * 255 + 0.5)
    return np.clip(grey, 0, 255).astype(np.uint8)


def canvas_grey(page: Any) -> np.ndarray:
    """The red channel of the canvas, read back with getImageData."""
    w, h, red = page.evaluate(
        """() => {
        const c = document.getElementById('plane');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const r = [];
        for (let k = 0; k < d.length; k += 4) r.push(d[k]);
        return [c.width, c.height, r];
    }"""
    )
    return np.asarray(red, dtype=np.uint8).reshape(h, w)


def wait_drawn(page: Any, index: tuple[int, ...]) -> None:
    text = ",".join(map(str, index))
    page.wait_for_function(
        f"document.body.dataset.drawn === '{text}' || document.body.dataset.error",
        timeout=10_000,
    )
    error = page.evaluate("document.body.dataset.error")
    assert not error, error


def check_drawn(page: Any, plane: np.ndarray) -> np.ndarray:
    lo, hi = page.evaluate("[tiffstoreViewer.lo, tiffstoreViewer.hi]")
    grey = canvas_grey(page)
    assert grey.shape == plane.shape
    np.testing.assert_array_equal(grey, expected_grey(plane, lo, hi))
    return grey


@pytest.mark.parametrize(
    "options",
    [
        # Chunks splitting the plane (edge chunks padded) and holding two planes each.
        {"chunks": (1, 1, 2, 16, 16)},
        {"chunks": (1, 1, 2, 16, 16), "zarr_format": 3},
        # Format 3's default: shards whose chunks are the files' pages; the missing
        # file's pages are absent from the shard's index.
        {"zarr_format": 3},
    ],
    ids=["format2", "format3", "format3-shards"],
)
def test_viewer_page_draws_the_source(
    browser: Any, make_sample: Callable[..., tuple[Path, np.ndarray]], options: dict[str, Any]
) -> None:
    directory, ref = make_sample(channels=2, stacks=3, shape=(4, 40, 30), missing=[(1, 2)])
    store = tiffstore.open(directory, **options)
    assert (store.shards is not None) == (options == {"zarr_format": 3})
    with running(store) as url:
        page = browser.new_page()
        statuses: list[int] = []
        page.on("response", lambda r: statuses.append(r.status))
        try:
            page.goto(url)  # redirected to the viewer
            wait_drawn(page, (0, 0, 0, 0, 0))
            assert page.evaluate("[tiffstoreViewer.lo, tiffstoreViewer.hi]") == [
                float(ref[0, 0, 0].min()),
                float(ref[0, 0, 0].max()),
            ]
            first = check_drawn(page, ref[0, 0, 0])
            assert 206 in statuses  # the plane's bytes only, not whole chunks

            page.locator("#dim-z").press("ArrowRight")  # z 0 -> 1
            wait_drawn(page, (0, 0, 1, 0, 0))
            moved = check_drawn(page, ref[0, 0, 1])
            assert not np.array_equal(first, moved)

            page.locator("#dim-ch").press("ArrowRight")
            for _ in range(2):
                page.locator("#dim-stack").press("ArrowRight")
            page.locator("#dim-z").press("ArrowRight")  # z 1 -> 2: second plane of a chunk
            wait_drawn(page, (1, 2, 2, 0, 0))  # the missing file: fill value
            check_drawn(page, ref[1, 2, 2])
            assert "no file here" in page.locator("#status").inner_text()
            assert "wavelength 560" in page.locator("#label-ch").inner_text()

            page.locator("#dim-stack").press("ArrowLeft")
            wait_drawn(page, (1, 1, 2, 0, 0))
            plane = ref[1, 1, 2]
            lo, hi = int(np.percentile(plane, 20)), int(np.percentile(plane, 80))
            page.locator("#min").fill(str(lo))
            page.locator("#min").dispatch_event("change")
            page.locator("#max").fill(str(hi))
            page.locator("#max").dispatch_event("change")
            assert page.evaluate("[tiffstoreViewer.lo, tiffstoreViewer.hi]") == [lo, hi]
            grey = canvas_grey(page)
            np.testing.assert_array_equal(grey, expected_grey(plane, lo, hi))
            assert (grey == 0).any() and (grey == 255).any()  # contrast clipped both ends
        finally:
            page.close()


@pytest.mark.parametrize(
    ("dtype", "byteorder"), [("uint8", "<"), ("float32", ">"), ("int64", ">"), ("int16", "<")]
)
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_viewer_page_dtypes(
    browser: Any, tmp_path: Path, dtype: str, byteorder: str, zarr_format: int
) -> None:
    rng = np.random.default_rng(1)
    values = rng.random((2, 3, 10, 12)) * 200
    ref = (values - 100 if np.dtype(dtype).kind in "if" else values).astype(dtype)
    for c in range(2):
        tifffile.imwrite(
            tmp_path / f"cell_ch{c}.tif",
            ref[c],
            byteorder=byteorder,  # type: ignore[arg-type]
            photometric="minisblack",
        )
    store = tiffstore.open(tmp_path, zarr_format=zarr_format)
    assert store.manifest.dtype.str[0] in (byteorder, "|")
    with running(store) as url:
        page = browser.new_page()
        try:
            page.goto(url + "_viewer/")
            wait_drawn(page, (0, 0, 0, 0))
            check_drawn(page, ref[0, 0])
            page.locator("#dim-ch").press("ArrowRight")
            wait_drawn(page, (1, 0, 0, 0))
            check_drawn(page, ref[1, 0])
        finally:
            page.close()


# -- Zarr format 3 over HTTP ------------------------------------------------------


@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "plain"])
def test_xarray_reads_format3_over_http(
    make_sample: Callable[..., tuple[Path, np.ndarray]], sharded: bool
) -> None:
    """``tiffstore serve --zarr-format 3``: xarray opens the group view over HTTP, with its
    coordinates, and reads the pixels: by the group's URL (its consolidated metadata),
    or with ``group="group"`` (the members listed from the server's folder pages).

    (xarray's default ``consolidated=None`` with ``group=`` looks for consolidated
    metadata at the store's root, which in format 3 is the array: docs/serve.md.)"""
    directory, ref = make_sample(missing=[(1, 2)])
    store = tiffstore.open(directory, zarr_format=3, sharded=sharded)
    assert (store.shards is not None) is sharded
    with running(store) as url:
        forms: list[dict[str, Any]] = [
            {"store": f"{url}group"},
            {"store": f"{url}group/"},
            {"store": url, "group": "group", "consolidated": False},
            {"store": url.rstrip("/"), "group": "group", "consolidated": False},
        ]
        for form in forms:
            ds = xr.open_zarr(**form, zarr_format=3)
            assert ds["image"].dims == ("ch", "stack", "z", "y", "x")
            assert ds["wavelength"].values.tolist() == [488, 560, 642]
            values = ds["image"].values
            present = [(c, s) for c in range(3) for s in range(4) if (c, s) != (1, 2)]
            for c, s in present:
                np.testing.assert_array_equal(values[c, s], ref[c, s])
        ds = xr.open_dataset(f"{url}group", engine="zarr", zarr_format=3, chunks={})
        np.testing.assert_array_equal(ds["image"][0, 0].values, ref[0, 0])
        arr = zarr.open_array(fsspec.get_mapper(url), mode="r", zarr_format=3)
        np.testing.assert_array_equal(arr[2, 3], ref[2, 3])


def test_serve_command_takes_the_zarr_format(
    make_sample: Callable[..., tuple[Path, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory, _ = make_sample(channels=2, stacks=2, shape=(2, 8, 8))
    served_stores: list[TiffStore] = []

    def serve_once(store: TiffStore, sock: Any, **kwargs: Any) -> None:
        served_stores.append(store)
        sock.close()

    monkeypatch.setattr("tiffstore.apps.serve.serve", serve_once)
    assert main(["serve", str(directory), "--port", "0", "--zarr-format", "3"]) == 0
    assert served_stores[0].zarr_format == 3
    assert "zarr format 3" in capsys.readouterr().out

"""Fixtures: real TIFF files written by tifffile into temporary folders, and real
servers (an S3-compatible moto server, nginx) on free loopback ports."""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tiffstore.sample import sample_name, write_sample


def stack_files(
    directory: Path,
    channels: int,
    stacks: int,
    shape: tuple[int, ...],
    missing: Iterable[tuple[int, int]] = (),
    fill: int | float = 0,
) -> np.ndarray:
    """The reference array built file by file with tifffile (fill where a file is missing)."""
    missing = set(missing)
    first = next(
        tifffile.imread(directory / sample_name(c, s))
        for c in range(channels)
        for s in range(stacks)
        if (c, s) not in missing
    )
    ref = np.full((channels, stacks, *shape), fill, dtype=first.dtype)
    for c in range(channels):
        for s in range(stacks):
            if (c, s) not in missing:
                ref[c, s] = tifffile.imread(directory / sample_name(c, s))
    return ref


def write_positions(
    directory: Path, n: int = 3, shape: tuple[int, ...] = (3, 40, 30), **options: Any
) -> np.ndarray:
    """``pos0.tif`` ... of random uint16 pixels, written with tifffile ``options``
    (``compression=``, ``tile=``...); returns them as tifffile reads them back."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    options.setdefault("photometric", "minisblack")
    for i in range(n):
        data = rng.integers(0, 4000, shape, dtype=np.uint16)
        tifffile.imwrite(directory / f"pos{i}.tif", data, **options)
    return np.stack([tifffile.imread(directory / f"pos{i}.tif") for i in range(n)])


#: The three ways a store serves its array (pytest parameters of ``tiffstore.open``'s options).
STORE_FORMATS = [
    pytest.param({}, id="format2"),
    pytest.param({"zarr_format": 3}, id="format3-sharded"),
    pytest.param({"zarr_format": 3, "sharded": False}, id="format3"),
]


def ctrl_c_reaches() -> None:
    """``preexec_fn`` for a command a test stops with SIGINT: Ctrl-C reaches it as in a
    terminal, even where the test runner's own SIGINT is ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fresh_interpreter(
    code: str, *args: str, env: dict[str, str], clear: tuple[str, ...] = ()
) -> Any:
    """Run ``code`` in a fresh interpreter (``sys.argv[1:]`` = ``args``) and return the
    JSON of its last printed line (a failure shows the end of its stderr); environment
    variables starting with ``clear`` are left out, ``env`` added."""
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith(clear)}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**kept, **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


ICECHUNK_READER = """
import json, sys
import icechunk, numpy as np, zarr
how = json.loads(sys.argv[1])
if "s3" in how:
    s3 = how["s3"]
    keys = {"access_key_id": s3.get("key", "testing"), "secret_access_key": s3.get("secret", "testing")}
    storage = icechunk.s3_storage(
        bucket=s3["bucket"], prefix=s3["prefix"], region="us-east-1", endpoint_url=s3["endpoint"],
        allow_http=True, force_path_style=True, **keys,
    )
    credentials = icechunk.s3_credentials(**keys)
else:
    storage = icechunk.local_filesystem_storage(how["path"])
    credentials = None
prefixes = icechunk.Repository.open(storage).config.virtual_chunk_containers or {}
repo = icechunk.Repository.open(
    storage,
    authorize_virtual_chunk_access=icechunk.containers_credentials(
        {prefix: credentials for prefix in prefixes}
    ),
)
if how.get("snapshot"):
    session = repo.readonly_session(snapshot_id=how["snapshot"])
else:
    session = repo.readonly_session(branch="main")
group = zarr.open_group(session.store, mode="r")
arrays, info = {}, {}
for name, node in group.arrays():
    values = np.asarray(node[...])
    arrays[name] = values.astype(str) if node.dtype.kind in "OT" else values
    info[name] = {"dims": list(node.metadata.dimension_names), "shape": list(node.shape)}
np.savez(how["out"], **arrays)
print(json.dumps(info))
assert "tiffstore" not in sys.modules, "the reader imported tiffstore"
"""


def read_icechunk_elsewhere(
    tmp_path: Path, how: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, list[Any]]]]:
    """Every array of an Icechunk repository, read in a fresh process that imports only
    icechunk and zarr (never tiffstore), with each array's dims and shape.

    ``how``: ``{"path": folder}`` or ``{"s3": {"bucket", "prefix", "endpoint"}}`` (moto's
    keys unless ``"key"``/``"secret"`` are given), and a ``"snapshot"`` to read instead
    of the main branch. Every virtual chunk container of the repository's config is
    authorized (with the S3 keys on S3).
    """
    out = tmp_path / "icechunk-read.npz"
    result = subprocess.run(
        [sys.executable, "-c", ICECHUNK_READER, json.dumps(dict(how, out=str(out)))],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the checkout: tiffstore must not be importable by accident
    )
    assert result.returncode == 0, result.stderr
    with np.load(out) as npz:
        return dict(npz), json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def make_sample(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Write a seed-named acquisition and return its folder and the reference array."""
    counter = iter(range(1000))

    def make(
        channels: int = 3,
        stacks: int = 4,
        shape: tuple[int, ...] = (6, 32, 24),
        dtype: str = "uint16",
        missing: Iterable[tuple[int, int]] = (),
        **options: object,
    ) -> tuple[Path, np.ndarray]:
        directory = tmp_path / f"raw{next(counter)}"
        missing = list(missing)
        write_sample(
            directory,
            channels=channels,
            stacks=stacks,
            shape=shape,
            dtype=dtype,
            missing=missing,
            **options,  # type: ignore[arg-type]
        )
        return directory, stack_files(directory, channels, stacks, shape, missing)

    return make


@pytest.fixture
def local_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """``(file, offset, length)`` of every read of a local file's bytes, as they happen."""
    from tiffstore.sources.local import LocalSource

    calls: list[tuple[str, int, int]] = []
    real_many, real_bytes = LocalSource.read_many_into, LocalSource.read_bytes

    def read_many_into(self: LocalSource, name: str, requests: Any) -> None:
        calls.extend((name, offset, out.nbytes) for offset, out in requests)
        real_many(self, name, requests)

    def read_bytes(self: LocalSource, name: str, offset: int, length: int) -> bytes:
        calls.append((name, offset, length))
        return real_bytes(self, name, offset, length)

    monkeypatch.setattr(LocalSource, "read_many_into", read_many_into)
    monkeypatch.setattr(LocalSource, "read_bytes", read_bytes)
    return calls


@pytest.fixture
def sample_dir(make_sample: Callable[..., tuple[Path, np.ndarray]]) -> tuple[Path, np.ndarray]:
    """3 channels x 4 stacks of (6, 32, 24) uint16, with channel 1's stack 2 missing."""
    return make_sample(missing=[(1, 2)])


@pytest.fixture
def hyperstacks(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """3 ImageJ hyperstacks ``cells_t{t}.tif`` of (Z=4, C=2, 16, 12) uint16: channels inside."""
    ref = np.random.default_rng(1).integers(100, 4000, size=(3, 4, 2, 16, 12), dtype=np.uint16)
    directory = tmp_path / "hyperstacks"
    directory.mkdir()
    for t in range(3):
        tifffile.imwrite(
            directory / f"cells_t{t}.tif", ref[t], imagej=True, metadata={"axes": "ZCYX"}
        )
    return directory, ref


# -- servers on loopback --------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on at the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Request:
    """One request a server answered, as its log shows it."""

    method: str
    path: str
    status: int
    range: str | None = None


@dataclass
class S3Server:
    """A moto S3 server: its endpoint and the requests it answered since :meth:`clear`."""

    endpoint: str
    requests: list[Request] = field(default_factory=list)

    def clear(self) -> None:
        self.requests.clear()

    def options(self) -> dict[str, Any]:
        """``storage_options`` for s3fs."""
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }


_REQUEST_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')
_COLOUR = re.compile(r"\x1b\[[\d;]*m")


class _RequestLogHandler(logging.Handler):
    """Collects the request lines werkzeug logs for the moto server."""

    def __init__(self, server: S3Server) -> None:
        super().__init__(logging.INFO)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        # '127.0.0.1 - - [date] "GET /bucket/key HTTP/1.1" 206 -', maybe with colour codes.
        found = _REQUEST_LINE.search(_COLOUR.sub("", record.getMessage()))
        if found is None:
            return
        method, path, status = found.group(1), found.group(2), int(found.group(3))
        self.server.requests.append(Request(method, path, status))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server in this process, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(f"http://{host}:{port}")
    wlog = logging.getLogger("werkzeug")
    handler = _RequestLogHandler(s3)
    old = (wlog.level, wlog.propagate)
    wlog.setLevel(logging.INFO)
    wlog.propagate = False
    wlog.addHandler(handler)
    try:
        yield s3
    finally:
        wlog.removeHandler(handler)
        wlog.setLevel(old[0])
        wlog.propagate = old[1]
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh, empty bucket: ``("s3://tiffstore-<uuid>", storage_options)``."""
    import boto3
    import s3fs

    options = s3_server.options()
    bucket = f"tiffstore-{uuid.uuid4().hex[:12]}"
    # boto3, not s3fs.mkdir: s3fs sends a location constraint that us-east-1 refuses.
    client = boto3.client(
        "s3",
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
        **options["client_kwargs"],
    )
    client.create_bucket(Bucket=bucket)
    fs = s3fs.S3FileSystem(**options)
    yield f"s3://{bucket}", options
    fs.rm(bucket, recursive=True)
    fs.invalidate_cache()


def upload_folder(local_dir: str | Path, url: str, storage_options: dict[str, Any]) -> None:
    """Copy the files of ``local_dir`` (recursively) below the fsspec ``url``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    local_dir = Path(local_dir)
    sources = [p for p in sorted(local_dir.rglob("*")) if p.is_file()]
    targets = [f"{root.rstrip('/')}/{p.relative_to(local_dir).as_posix()}" for p in sources]
    fs.put([str(p) for p in sources], targets)
    fs.invalidate_cache()


@pytest.fixture
def upload() -> Callable[[str | Path, str, dict[str, Any]], None]:
    """``upload(local_dir, url, storage_options)``: copy a folder below an fsspec URL."""
    return upload_folder


@dataclass
class HttpServer:
    """An nginx serving :attr:`root` at :attr:`url`, with ranges and index pages."""

    root: Path
    url: str
    access_log: Path
    _mark: int = 0

    def clear(self) -> None:
        """Forget the requests answered so far."""
        self._mark = self.access_log.stat().st_size if self.access_log.exists() else 0

    @property
    def requests(self) -> list[Request]:
        """The requests answered since :meth:`clear`."""
        if not self.access_log.exists():
            return []
        with self.access_log.open("rb") as fh:
            fh.seek(self._mark)
            lines = fh.read().decode().splitlines()
        out = []
        for line in lines:
            method, path, status, range_ = line.split("\t")
            out.append(Request(method, path, int(status), None if range_ == "-" else range_))
        return out


NGINX_CONF = """
daemon off;
worker_processes 1;
{user}
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 512; }}
http {{
    types {{ image/tiff tif tiff; text/html html; }}
    default_type application/octet-stream;
    log_format requests "$request_method\t$request_uri\t$status\t$http_range";
    access_log {state}/access.log requests;
    client_body_temp_path {state}/client_body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            autoindex on;
            autoindex_exact_size on;
        }}
    }}
}}
"""


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """nginx on a free loopback port serving a temporary folder (autoindex, ranges)."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )
    if nginx is None:
        pytest.fail(
            "nginx is not installed, and the HTTP tests need it as their server. Install it "
            "(Debian/Ubuntu: `apt-get install -y nginx`; macOS: `brew install nginx`) and run "
            "the tests again; CI installs it in .ci/run."
        )
    state = tmp_path_factory.mktemp("nginx")
    root = tmp_path_factory.mktemp("www")
    port = free_port()
    user = ""
    if os.geteuid() == 0:
        # As root, nginx would hand its worker to "nobody", who may not read the temp dirs.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    conf = state / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, state=state, port=port, root=root))
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(state), "-e", str(state / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
    except RuntimeError as exc:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"nginx did not start ({exc}): {err.decode(errors='replace')}")
    try:
        yield HttpServer(root, f"http://127.0.0.1:{port}/", state / "access.log")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

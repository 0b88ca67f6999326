"""Remote TIFFs on a loopback S3 server (moto, in its own process): what open costs in
requests, and how fast chunks come compared with fetching their bytes directly.

Rows:

- ``open N files``: requests and seconds for ``tiffstore.open("s3://bucket/raw/")`` of
  ``N`` small uniform files (target: the listing plus at most 3 header reads), beside
  tifffile over fsspec (each file opened with ``fs.open`` and its series parsed).
- ``read``: MB/s of reading a whole array through zarr on a store just opened (its
  first read), through the store's dask array, and through zarr again (the headers
  checked), against one ``fs.cat_ranges`` call for the same byte ranges (target: the
  first read at least 0.8 of it). Best of 5, cases interleaved.

Run from the repository root (``pip install -e ".[test]"`` gives moto, s3fs)::

    python -m benchmarks.remote [--files 1000] [--read-files 64] [--read-shape 16 256 256]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

import tiffstore
from tiffstore.sample import write_sample

_REQUEST_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')
_COLOUR = re.compile(r"\x1b\[[\d;]*m")


class MotoProcess:
    """``python -m moto.server`` on a free loopback port, counting the requests it logs."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.05)

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            found = _REQUEST_LINE.search(_COLOUR.sub("", raw.decode(errors="replace")))
            if found:
                with self._lock:
                    self.requests.append((found[1], found[2], int(found[3])))

    def take(self) -> list[tuple[str, str, int]]:
        """The requests logged since the last call (after the log catches up)."""
        time.sleep(0.3)
        with self._lock:
            out, self.requests = self.requests, []
        return out

    def options(self) -> dict[str, Any]:
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def moto_server() -> Iterator[MotoProcess]:
    server = MotoProcess()
    try:
        yield server
    finally:
        server.stop()


def make_bucket(server: MotoProcess) -> str:
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client(
        "s3",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    return bucket


def upload(fs: Any, folder: Path, url: str) -> list[str]:
    paths = sorted(folder.glob("*.tif"))
    urls = [f"{url}{p.name}" for p in paths]
    fs.put([str(p) for p in paths], urls)
    fs.invalidate_cache()
    return urls


def kinds(requests: list[tuple[str, str, int]]) -> Counter[str]:
    """Requests by kind: listing, header/data GET (ranged: 206), whole GET, HEAD."""
    out: Counter[str] = Counter()
    for method, path, status in requests:
        if ".tif" not in path:
            out["listing" if method == "GET" else f"{method} bucket"] += 1
        elif method == "GET":
            out["ranged GET" if status == 206 else "whole-file GET"] += 1
        else:
            out[method] += 1
    return out


def bench_open(server: MotoProcess, tmp: Path, n_files: int) -> list[str]:
    import s3fs

    options = server.options()
    folder = tmp / "many"
    stacks = max(n_files // 2, 1)
    write_sample(folder, channels=2, stacks=stacks, shape=(2, 32, 32))
    bucket = make_bucket(server)
    url = f"s3://{bucket}/raw/"
    urls = upload(s3fs.S3FileSystem(**options), folder, url)
    server.take()
    lines = []

    t0 = time.perf_counter()
    store = tiffstore.open(url, storage_options=options)
    dt = time.perf_counter() - t0
    got = kinds(server.take())
    assert store.shape[:2] == (2, stacks)
    header_reads = got["ranged GET"] + got["whole-file GET"] + got["HEAD"]
    lines.append(
        f"open {len(urls):,} files  tiffstore.open(s3://)        {dt:7.3f} s  "
        f"requests {dict(got)}  -> target listing + <= 3 header reads: "
        f"{'met' if got['whole-file GET'] == 0 and header_reads <= 3 else 'NOT met'}"
    )

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    t0 = time.perf_counter()
    for u in urls:
        with fs.open(u, "rb") as fh, tifffile.TiffFile(fh) as tif:
            tif.series[0].shape  # noqa: B018 - what a reader needs to place the file
    dt = time.perf_counter() - t0
    lines.append(
        f"open {len(urls):,} files  tifffile over fsspec (each) {dt:7.3f} s  "
        f"requests {dict(kinds(server.take()))}"
    )
    return lines


def bench_read(
    server: MotoProcess, tmp: Path, n_files: int, shape: tuple[int, ...], repeats: int = 5
) -> list[str]:
    import dask
    import s3fs
    import zarr

    options = server.options()
    folder = tmp / "read"
    write_sample(folder, channels=2, stacks=max(n_files // 2, 1), shape=shape)
    bucket = make_bucket(server)
    url = f"s3://{bucket}/raw/"
    urls = upload(s3fs.S3FileSystem(**options), folder, url)
    with tifffile.TiffFile(sorted(folder.glob("*.tif"))[0]) as tif:
        offset = tif.pages.first.dataoffsets[0]
    nbytes = int(np.prod(shape)) * 2
    total = nbytes * len(urls)
    lines = []

    fs = s3fs.S3FileSystem(**options)
    opened: dict[str, Any] = {}

    def direct() -> None:
        datas = fs.cat_ranges(urls, [offset] * len(urls), [offset + nbytes] * len(urls))
        assert sum(len(d) for d in datas) == total

    def fresh_store() -> None:
        # A store opened in this process but never read: its first read checks the
        # header bytes of files trusted at open, as every new reader does.
        opened["store"] = tiffstore.open(url, storage_options=options)

    def through_zarr() -> None:
        assert zarr.open_array(opened["store"], mode="r")[...].nbytes == total

    def through_dask() -> None:
        with dask.config.set(scheduler="threads", num_workers=16):
            assert opened["store"].to_dask().compute().nbytes == total

    cases: list[tuple[str, Any, Any]] = [
        ("fs.cat_ranges (limit)", direct, None),
        ("zarr on the store", through_zarr, fresh_store),
        ("store.to_dask()", through_dask, fresh_store),
        ("zarr, read again", through_zarr, None),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    requests: dict[str, Counter[str]] = {name: Counter() for name, _, _ in cases}
    fresh_store()
    through_zarr()  # warm up: imports, connections
    for _ in range(repeats):
        # Interleaved, so a slow spell of the machine hits every case alike.
        for name, fn, setup in cases:
            if setup is not None:
                setup()
            server.take()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            requests[name] = kinds(server.take())
    limit = min(times["fs.cat_ranges (limit)"])
    for name, _, _ in cases:
        dt = min(times[name])
        line = (
            f"read {total / 2**20:.0f} MiB in {len(urls)} files  {name:<22} "
            f"{total / dt / 1e6:8.1f} MB/s"
        )
        if name != "fs.cat_ranges (limit)":
            ratio = limit / dt
            line += f"  x{ratio:.2f} of cat_ranges" + (
                f" (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})"
                if name == "zarr on the store"
                else ""
            )
        lines.append(f"{line}; requests {dict(requests[name])}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="files to open (small, uniform)")
    parser.add_argument("--read-files", type=int, default=64, help="files to read")
    parser.add_argument(
        "--read-shape", type=int, nargs=3, default=(16, 256, 256), help="(Z, Y, X) of each"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, moto_server() as server:
        lines = bench_open(server, Path(tmp), args.files)
        lines += bench_read(server, Path(tmp), args.read_files, tuple(args.read_shape))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

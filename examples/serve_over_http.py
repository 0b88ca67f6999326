"""Serve the acquisition over HTTP and read it back with fsspec + zarr alone.

What ``tiffstore serve raw/`` does from the shell; here the server runs in a
thread on a free loopback port. Needs ``pip install "tiffstore[serve]"`` (and
aiohttp for fsspec's HTTP client).

Run: python examples/serve_over_http.py [--stacks 3] [--z 8] [--keep-serving]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time

import fsspec
import numpy as np
import uvicorn
import zarr

import tiffstore
from tiffstore.apps.serve import VIEWER_PATH, make_app, open_socket
from tiffstore.sample import write_sample

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--stacks", type=int, default=3, help="time points (default 3)")
parser.add_argument("--z", type=int, default=8, help="planes per stack (default 8)")
parser.add_argument("--keep-serving", action="store_true", help="serve until Ctrl-C")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as raw:
    write_sample(raw, channels=2, stacks=args.stacks, shape=(args.z, 64, 48))
    store = tiffstore.open(raw)

    sock = open_socket("127.0.0.1", 0)  # port 0: any free port
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(make_app(store), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    print("serving at", url, "- viewer at", url + VIEWER_PATH.lstrip("/"))

    # The reading side needs no tiffstore: fsspec's HTTP filesystem and zarr.
    remote = zarr.open_array(fsspec.get_mapper(url), mode="r")
    print("read over HTTP:", remote.shape, remote.dtype)
    assert np.array_equal(remote[1, 2], zarr.open_array(store, mode="r")[1, 2])
    print("ch 1, stack 2 over HTTP equals the local read")

    if args.keep_serving:
        with contextlib.suppress(KeyboardInterrupt):
            thread.join()
    server.should_exit = True
    thread.join(10)

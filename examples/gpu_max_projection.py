"""Maximum-intensity projection of a whole acquisition on the GPU, with dask + CuPy.

Each chunk is read from its TIFF into pinned host memory and copied to the GPU
once (no ``map_blocks(cp.asarray)``); dask reduces the chunks there, and only the
projections come back to the host. Needs an NVIDIA GPU and
``pip install "tiffstore[gpu]"``; without them it says so and exits with status 1.

Run: python examples/gpu_max_projection.py [SOURCE] [--stacks 8] [--z 32]
(no SOURCE: a generated acquisition in a temporary folder)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tiffstore
from tiffstore.errors import GpuError
from tiffstore.read.gpu import require_cupy
from tiffstore.sample import write_sample

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("source", nargs="?", help="folder of TIFFs (default: generated data)")
parser.add_argument("--stacks", type=int, default=8, help="generated time points (default 8)")
parser.add_argument("--z", type=int, default=32, help="generated planes per stack (default 32)")
args = parser.parse_args()

try:
    cp = require_cupy()
except GpuError as exc:
    sys.exit(f"This example needs a GPU: {exc}")

with tempfile.TemporaryDirectory() as tmp:
    source = Path(args.source) if args.source else Path(tmp) / "raw"
    if not args.source:
        write_sample(source, channels=2, stacks=args.stacks, shape=(args.z, 512, 512))

    store = tiffstore.open(source)
    stack = store.to_dask(gpu=True)  # CuPy chunks: dims e.g. ch, stack, z, y, x
    print(stack)
    z = store.dims.index("z")
    t0 = time.perf_counter()
    mip = stack.max(axis=z).compute()  # reduced on the GPU
    cp.cuda.Device().synchronize()
    seconds = time.perf_counter() - t0
    print(
        f"{type(mip).__module__}.{type(mip).__name__} {mip.shape} from "
        f"{store.manifest.nbytes / 1e9:.2f} GB in {seconds:.2f} s"
    )

    # The same projection of one stack on the host, for a check.
    first = (0,) * z  # the first index of every dim before z
    on_host = store.to_dask()[first].max(axis=0).compute()
    assert np.array_equal(cp.asnumpy(mip[first]), on_host), "GPU and host projections differ"
    print("first stack: equal to the host's projection")

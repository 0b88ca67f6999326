"""Write a small sample acquisition, open it with tiffstore, and compute on it.

Run: python examples/quickstart.py [--stacks 5] [--z 32]
"""

from __future__ import annotations

import argparse
import tempfile

import dask.array as da
import zarr

import tiffstore
from tiffstore.sample import write_sample

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--stacks", type=int, default=5, help="time points (default 5)")
parser.add_argument("--z", type=int, default=32, help="planes per stack (default 32)")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as raw:
    write_sample(raw, channels=3, stacks=args.stacks, shape=(args.z, 128, 96))
    store = tiffstore.open(raw)
    print(store)
    print("dims:", store.dims, "shape:", store.shape)
    print("wavelengths:", store.coords["wavelength"]["values"])

    stack = da.from_zarr(store)
    print("mean per channel:", stack.mean(axis=(1, 2, 3, 4)).compute())

    pages = tiffstore.open(raw, chunks="page")
    plane = zarr.open_array(pages, mode="r")[1, 2, args.z // 2]  # reads one plane of bytes
    print("one plane:", plane.shape, plane.dtype)

"""Write a small sample acquisition, open it with tiffstore, and compute on it.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import tempfile

import dask.array as da
import zarr

import tiffstore
from tiffstore.sample import write_sample

with tempfile.TemporaryDirectory() as raw:
    write_sample(raw, channels=3, stacks=5, shape=(32, 128, 96))
    store = tiffstore.open(raw)
    print(store)
    print("dims:", store.dims, "shape:", store.shape)
    print("wavelengths:", store.coords["wavelength"]["values"])

    stack = da.from_zarr(store)
    print("mean per channel:", stack.mean(axis=(1, 2, 3, 4)).compute())

    pages = tiffstore.open(raw, chunks="page")
    plane = zarr.open_array(pages, mode="r")[1, 2, 16]  # reads one plane of bytes
    print("one plane:", plane.shape, plane.dtype)

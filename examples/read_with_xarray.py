"""Read the acquisition with xarray, zarr and dask: labelled dims and coordinates.

Run: python examples/read_with_xarray.py [--stacks 4] [--z 8]
"""

from __future__ import annotations

import argparse
import tempfile

import dask.array as da
import numpy as np
import xarray as xr
import zarr

import tiffstore
from tiffstore.sample import write_sample

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--stacks", type=int, default=4, help="time points (default 4)")
parser.add_argument("--z", type=int, default=8, help="planes per stack (default 8)")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as raw:
    write_sample(raw, channels=3, stacks=args.stacks, shape=(args.z, 64, 48))
    store = tiffstore.open(raw)

    # xarray: the store's root is also a Zarr group with the coordinates.
    ds = xr.open_zarr(store)
    print(ds)
    red = ds.image.swap_dims(ch="wavelength").sel(wavelength=642)  # select by wavelength
    mean_over_time = red.mean(dim=("z", "y", "x")).compute()
    print("642 nm, mean per stack:", np.round(mean_over_time.values, 1))
    print("timestamps of ch 0 (ms):", ds.msec.isel(ch=0).values)

    # zarr and dask read the same pixels.
    z = zarr.open_array(store, mode="r")
    d = da.from_zarr(store)
    assert np.array_equal(z[2, 1], ds.image.isel(ch=2, stack=1).values)
    assert np.array_equal(d[2, 1].compute(), z[2, 1])
    print("zarr, dask and xarray agree")

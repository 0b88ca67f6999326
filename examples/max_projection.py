"""Maximum-intensity projection along z of every channel and stack, read lazily.

Reads each TIFF's chunks on demand through dask, checks one projection against
tifffile reading the file directly, and writes the projections as an ImageJ TIFF
hyperstack (stack, channel, y, x).

Run: python examples/max_projection.py [--stacks 4] [--z 16] [--out mip.tif]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

import tiffstore
from tiffstore.sample import sample_name, write_sample

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--stacks", type=int, default=4, help="time points (default 4)")
parser.add_argument("--z", type=int, default=16, help="planes per stack (default 16)")
parser.add_argument("--out", help="write the projections here (default: temporary)")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    raw = Path(tmp) / "raw"
    write_sample(raw, channels=2, stacks=args.stacks, shape=(args.z, 128, 96))

    store = tiffstore.open(raw)
    stack = store.to_dask()  # dims ch, stack, z, y, x; chunks of whole z-planes
    print(stack)
    t0 = time.perf_counter()
    mip = stack.max(axis=store.dims.index("z")).compute()
    print(f"projections {mip.shape} in {time.perf_counter() - t0:.2f} s")

    direct = tifffile.imread(raw / sample_name(1, args.stacks - 1)).max(axis=0)
    assert np.array_equal(mip[1, args.stacks - 1], direct), "differs from tifffile"
    print("ch 1, last stack: equal to tifffile.imread(...).max(axis=0)")

    out = Path(args.out or Path(tmp) / "mip.tif")
    # ImageJ orders hyperstacks TZCYX: stacks first, then channels.
    tifffile.imwrite(
        out, np.ascontiguousarray(mip.transpose(1, 0, 2, 3)), imagej=True, metadata={"axes": "TCYX"}
    )
    print("wrote", out.name, tifffile.TiffFile(out).series[0].axes)

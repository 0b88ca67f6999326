"""Open a light-sheet acquisition and see what tiffstore understood, before computing.

The sample has 3 channels x N stacks, one TIFF per (channel, stack), with the last
stack of the last channel missing, as happens when an acquisition is stopped early.

Run: python examples/lightsheet_inspect.py [--dir raw/] [--stacks 4] [--z 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import tiffstore
from tiffstore.sample import write_sample

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dir", help="write the sample here and keep it (default: temporary)")
parser.add_argument("--stacks", type=int, default=4, help="time points (default 4)")
parser.add_argument("--z", type=int, default=16, help="planes per stack (default 16)")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    raw = Path(args.dir or tmp)
    write_sample(
        raw, channels=3, stacks=args.stacks, shape=(args.z, 128, 96), missing=[(2, args.stacks - 1)]
    )
    print("first file:", sorted(p.name for p in raw.glob("*.tif"))[0])

    store = tiffstore.open(raw)  # no template: the axes come from the names
    m = store.manifest
    print("array:", dict(zip(store.dims, store.shape, strict=True)), store.dtype)
    print("chunks:", store.chunks, f"({len(m.files)} files)")
    for name, coord in store.coords.items():
        values = coord["values"]
        shown = values if len(json.dumps(values)) < 80 else f"{json.dumps(values)[:77]}..."
        print(f"  {name} over {coord['dims']} {coord.get('units', '')}: {shown}")
    print("missing:", m.missing())  # served as the fill value (0)
    print("template (pass as pattern= to adjust):")
    print("  " + m.template)

    # The same template read back gives the same array.
    again = tiffstore.open(raw, pattern=m.template)
    assert again.shape == store.shape and again.dims == store.dims

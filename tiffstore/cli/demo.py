"""``tiffstore demo``: sample data written, opened, read and checked against tifffile."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr
from rich.console import Console
from rich.table import Table

from tiffstore.cli.console import rule, size
from tiffstore.cli.inspect import print_inspect
from tiffstore.opening import open as open_store
from tiffstore.sample import sample_name, write_sample

__all__ = ["demo_command"]

_DEMO_CODE = """\
import dask.array as da
import tiffstore

store = tiffstore.open("{path}")    # a folder, a glob or a list of files
print(store.dims, store.shape)
stack = da.from_zarr(store)             # no copy: chunks are read from the TIFFs
mip = stack.max(axis=2).compute()       # max projection along z, per channel and stack
"""


def demo_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore demo``: the tour on built-in sample data."""
    # dask.array (and what it pulls in) costs a third of a second: only the demo needs it,
    # not every command the CLI parses.
    import dask.array as da

    keep = args.dir is not None
    root = Path(args.dir) if keep else Path(tempfile.mkdtemp(prefix="tiffstore-demo-"))
    try:
        shape = (args.z, 256, 192)
        rule(
            console, "[bold]1. A light-sheet acquisition: one TIFF stack per channel and time point"
        )
        t0 = time.perf_counter()
        paths = write_sample(
            root, channels=3, stacks=args.stacks, shape=shape, missing=[(2, args.stacks - 1)]
        )
        console.print(
            f"Wrote {len(paths)} files of {shape} uint16 to {root} in "
            f"{time.perf_counter() - t0:.1f} s. The names say where each file belongs:"
        )
        for p in sorted(paths)[:3]:
            console.print(f"  {p.name}")
        console.print("  ... (channel 2's last stack is missing on purpose)")

        rule(console, "[bold]2. tiffstore.open: the names are understood, no template needed")
        t0 = time.perf_counter()
        store = open_store(root)
        console.print(
            f"Opened in {1000 * (time.perf_counter() - t0):.0f} ms (headers parsed, nothing copied)."
        )
        print_inspect(console, store)

        rule(console, "[bold]3. One dask array over every file, read lazily chunk by chunk")
        stack = da.from_zarr(store)
        console.print(stack)
        t0 = time.perf_counter()
        mean = stack.mean(axis=(2, 3, 4)).compute()
        dt = time.perf_counter() - t0
        console.print(
            f"Mean intensity per channel and stack ({size(stack.nbytes)} read and reduced in "
            f"{dt:.2f} s, dask's start-up included); the missing file reads as 0:"
        )
        table = Table("ch", "wavelength", *[f"stack {s}" for s in range(args.stacks)])
        waves = store.coords["wavelength"]["values"]
        for c in range(mean.shape[0]):
            table.add_row(str(c), f"{waves[c]} nm", *[f"{v:.1f}" for v in mean[c]])
        console.print(table)

        rule(console, "[bold]4. Exactly what tifffile reads, file by file")
        ref = tifffile.imread(root / sample_name(1, 2))
        same = np.array_equal(stack[1, 2].compute(), ref)
        z = zarr.open_array(store, mode="r")
        same_zarr = np.array_equal(z[1, 2], ref)
        console.print(
            f"stack[1, 2] equals tifffile.imread of ch1 stack0002: [bold]{same}[/bold]; "
            f"through zarr.open_array too: [bold]{same_zarr}[/bold]"
        )

        rule(console, '[bold]5. chunks="page": one z-plane reads one plane of bytes')
        pages = open_store(root, chunks="page")
        t0 = time.perf_counter()
        plane = da.from_zarr(pages)[0, 1, args.z // 2].compute()
        console.print(
            f"One plane {plane.shape} read in {1000 * (time.perf_counter() - t0):.1f} ms, "
            f"chunks {pages.chunks} ({size(pages.manifest.chunk_nbytes)} each)"
        )

        rule(console, "[bold]Your turn")
        path = root if keep else "raw/"
        console.print(_DEMO_CODE.format(path=path), markup=False, highlight=False)
        if not keep:
            console.print("(run `tiffstore demo --dir raw/` to keep the sample data and try this)")
        if not (same and same_zarr):
            console.print("[bold red]The data did not match: please report this.[/bold red]")
            return 1
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            console.print(f"The sample data stays in {root}.")
    return 0

"""The full read at several sizes, in seconds per GB, so growth with size shows.

Sizes are fractions of ``--size`` (``--scales``); each is measured for the copy
limit and for tiffstore in the same run. Open scaling per file is in :mod:`open_many`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import dask.array as da
import numpy as np

import tiffstore

from . import cases
from .data import Context, Dataset, warm
from .harness import Row
from .limits import copy_limit

CASE = "full read scaling (seconds per GB)"


def from_zarr(path: Path) -> da.Array:
    """The default read path: ``da.from_zarr(tiffstore.open(path))``."""
    return da.from_zarr(tiffstore.open(path))


def per_gb(row: Row, ds: Dataset, limit: str | None = None) -> Row:
    """Turn a ``GB/s`` row into seconds per GB of the array."""
    if row.figure is not None:
        row.figure = 1 / row.figure
        row.median = 1 / row.median if row.median else None
    row.unit, row.case, row.limit = "s/GB", CASE, limit
    row.note = f"{ds.nbytes / 1e9:.3g} GB, {len(ds.files)} files"
    return row


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for frac in ctx.scales:
        ds = ctx.dataset("raw", size_gb=frac * ctx.size_gb)
        gb = f"{ds.nbytes / 1e9:.3g} GB"
        warm(ds.files)
        limit_key = f"scaling/{gb}/copy_limit"
        limit = copy_limit(ctx, ds, key=limit_key, case=CASE)
        limit.tool = f"copy limit @ {gb}"
        rows.append(per_gb(limit, ds))
        out = np.zeros(ds.array_shape, dtype=ds.dtype)
        row = cases.full_read(
            ctx,
            ds,
            f"scaling/{gb}/tiffstore",
            f"tiffstore @ {gb}",
            "tiffstore",
            functools.partial(from_zarr, ds.path),
            out,
        )
        rows.append(per_gb(row, ds, limit_key))
    return rows

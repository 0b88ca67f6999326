"""Many small files: full read and sum of every pixel, beside the read+sum limit.

10,000 files of ``(2, 32, 32)`` uint16 (4 KiB each, ``--small-files`` sets how many):
tiffstore's default chunks group whole files along the name axes; one chunk per file
(``chunks="file"``) is measured beside it, so the gain of grouping shows in one run.
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np

import tiffstore

from . import cases
from .data import Context, Dataset, warm
from .harness import Row, Target, attempt, time_best, timed_row
from .limits import read_sum_limit

CASE = "many small files: sum of every pixel"


def _sum(ds: Dataset, chunks: object) -> int:
    store = tiffstore.open(ds.path, chunks=chunks)
    return int(store.to_dask().sum(dtype="u8").compute())


def targets(ctx: Context) -> list[Target]:
    n = ctx.small_files
    return [
        Target(
            f"sum of {n:,} small files, default chunks >= 0.3 of the read+sum limit",
            f"small/{n}/default",
            f"small/{n}/limit",
            "ratio",
            at_least=0.3,
        ),
        Target(
            f"sum of {n:,} small files: default chunks >= 5x one chunk per file",
            f"small/{n}/default",
            f"small/{n}/per_file",
            "speedup",
            at_least=5,
        ),
    ]


def run(ctx: Context) -> list[Row]:
    n = ctx.small_files
    ds = ctx.small(n)
    warm(ds.files)
    expected = cases.expected_sum(ds)
    rows = [read_sum_limit(ctx, ds, f"small/{n}/limit", CASE)]
    for key, tool, chunks in (
        ("default", "tiffstore: default chunks (files grouped)", None),
        ("per_file", "tiffstore: chunks='file'", "file"),
    ):
        chosen = tiffstore.open(ds.path, chunks=chunks).chunks

        def measure(
            chunks: object = chunks, key: str = key, tool: str = tool, chosen: object = chosen
        ) -> Row:
            got: list[int] = []
            t = time_best(lambda: got.append(_sum(ds, chunks)), ctx.repeats)
            if got[-1] != expected:
                raise AssertionError(f"sum is {got[-1]}, expected {expected}")
            return timed_row(
                f"small/{n}/{key}",
                CASE,
                tool,
                "tiffstore",
                t,
                nbytes=ds.nbytes,
                limit=f"small/{n}/limit",
                note=f"chunks {chosen}",
            )

        rows.append(attempt(f"small/{n}/{key}", CASE, tool, "tiffstore", measure, unit="GB/s"))
    # The array through zarr too: what users write.
    rows.append(
        cases.full_read(
            ctx,
            ds,
            f"small/{n}/from_zarr",
            "da.from_zarr(store), default chunks",
            "tiffstore",
            functools.partial(lambda p: da.from_zarr(tiffstore.open(p)), ds.path),
            np.zeros(ds.array_shape, ds.dtype),
            case="many small files: full read",
            limit=None,
        )
    )
    return rows

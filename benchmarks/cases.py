"""The measurements every tool gets, called the same way for each, with a check of the pixels.

A tool that returns wrong pixels gets an error instead of a figure: speed of
the wrong answer is not a result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import tifffile

from .data import Context, Dataset
from .harness import Role, Row, attempt, time_best, time_each, timed_row
from .limits import COPY_LIMIT, FULL, PLANE, PLANE_LIMIT, SUM, SUM_LIMIT

_expected_sums: dict[Any, int] = {}


def expected_sum(ds: Dataset) -> int:
    """The sum of every pixel, read file by file with tifffile (cached per dataset)."""
    if ds.path not in _expected_sums:
        _expected_sums[ds.path] = sum(int(tifffile.imread(f).sum(dtype="u8")) for f in ds.files)
    return _expected_sums[ds.path]


def check_files(ds: Dataset, out: np.ndarray, tool: str) -> None:
    """Raise unless ``out`` holds the first and the last file's pixels."""
    for c, s in {(0, 0), (ds.channels - 1, ds.stacks - 1)}:
        if not np.array_equal(out[c, s], tifffile.imread(ds.file(c, s))):
            raise AssertionError(f"{tool} read wrong pixels for file (ch {c}, stack {s})")


def full_read(
    ctx: Context,
    ds: Dataset,
    key: str,
    tool: str,
    role: Role,
    make: Callable[[], da.Array],
    out: np.ndarray,
    *,
    case: str = FULL,
    limit: str | None = COPY_LIMIT,
    note: str = "",
) -> Row:
    """``da.store(array, out)`` into a preallocated, already touched array."""

    def measure() -> Row:
        arr = make()
        if arr.shape != out.shape or arr.dtype != out.dtype:
            raise ValueError(f"array is {arr.shape} {arr.dtype}, expected {out.shape} {out.dtype}")
        out[...] = 0
        t = time_best(lambda: da.store(arr, out), ctx.repeats)
        check_files(ds, out, tool)
        return timed_row(
            key,
            case,
            tool,
            role,
            t,
            nbytes=ds.nbytes,
            limit=limit,
            note=note or _per_gb(t.best, ds),
        )

    return attempt(key, case, tool, role, measure, unit="GB/s", limit=limit)


def into_array(
    ctx: Context,
    ds: Dataset,
    key: str,
    tool: str,
    role: Role,
    read: Callable[[], np.ndarray],
    *,
    case: str,
    limit: str | None = COPY_LIMIT,
) -> Row:
    """A whole-array read that returns a new array (``zarr_array[...]``)."""

    def measure() -> Row:
        t = time_best(read, ctx.repeats)
        check_files(ds, read(), tool)
        return timed_row(key, case, tool, role, t, nbytes=ds.nbytes, limit=limit)

    return attempt(key, case, tool, role, measure, unit="GB/s", limit=limit)


def total(
    ctx: Context,
    ds: Dataset,
    key: str,
    tool: str,
    role: Role,
    make: Callable[[], da.Array],
    *,
    limit: str | None = SUM_LIMIT,
) -> Row:
    """``array.sum().compute()``."""

    def measure() -> Row:
        arr = make()
        got: list[int] = []
        t = time_best(lambda: got.append(int(arr.sum().compute())), ctx.repeats)
        if got[-1] != expected_sum(ds):
            raise AssertionError(f"{tool}: sum is {got[-1]}, expected {expected_sum(ds)}")
        return timed_row(key, SUM, tool, role, t, nbytes=ds.nbytes, limit=limit)

    return attempt(key, SUM, tool, role, measure, unit="GB/s", limit=limit)


def one_plane(
    ctx: Context,
    ds: Dataset,
    key: str,
    tool: str,
    role: Role,
    make: Callable[[], Callable[[int, int, int], Any]],
    *,
    limit: str | None = PLANE_LIMIT,
    case: str = PLANE,
    note: str = "",
) -> Row:
    """Time ``read(c, s, z)`` over the same planes for every tool; ms per plane."""

    def measure() -> Row:
        read = make()
        planes = ds.planes(ctx.planes)
        c, s, z = planes[0]
        got = np.asarray(read(c, s, z))
        if not np.array_equal(got.reshape(ds.shape[1:]), tifffile.imread(ds.file(c, s), key=z)):
            raise AssertionError(f"{tool} read wrong pixels for plane {(c, s, z)}")
        t = time_each(lambda p: read(*p), planes, ctx.repeats)
        return timed_row(key, case, tool, role, t, unit="ms", limit=limit, note=note)

    return attempt(key, case, tool, role, measure, unit="ms", limit=limit)


def _per_gb(seconds: float, ds: Dataset) -> str:
    return f"{seconds / (ds.nbytes / 1e9):.3g} s/GB"

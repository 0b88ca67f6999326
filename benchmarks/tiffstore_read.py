"""tiffstore's read path, with default settings, beside the limits and zarr's own floor.

- full read: ``da.store(da.from_zarr(tiffstore.open(dir)), out)`` into a preallocated array
  as users write it (``import tiffstore`` made tiffstore's codec pipeline zarr's and
  tiffstore's optimization dask's), the same all through zarr's own read path (both
  off, what ``TIFFSTORE_CODEC_PIPELINE=0`` and ``TIFFSTORE_DASK_OPTIMIZE=0`` give),
  in Zarr format 3 sharded
  (``chunks=store.chunks``: dask's ``from_zarr`` would otherwise make one task per
  page), and through ``store.to_dask()`` (chunks read into dask's blocks, no zarr
  pipeline);
- sum: the same four ways;
- full read and sum of the dask array ``xr.open_zarr(tiffstore.open(dir))["image"]``
  holds, as xarray users get it;
- the sum without dask: every chunk's bytes from ``store.mapping`` summed with NumPy
  in a thread pool, one thread per core (what dask's scheduling costs the rows above);
- ``zarr.open_array(store)[...]``;
- one plane with default chunks (format 2, and format 3 sharded) and with
  ``chunks="page"``: the store's own read of the chunk (``store.mapping[key]``),
  zarr's read of it (also with zarr's own pipeline), and the same zarr read from an
  in-memory store holding the same array with the same chunks (zarr's floor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import dask.array as da
import numpy as np
import zarr

import tiffstore

from . import cases
from .data import Context, Dataset, cores, warm
from .harness import Row, Target, attempt, time_best, timed_row
from .limits import COPY_LIMIT, PLANE_LIMIT, SUM, SUM_LIMIT
from .peers import ZARR_READ

TOOL = "tiffstore"
THREADS = f"tiffstore, no dask: store.mapping[key] + np.sum, {cores()} threads"
MEMORY_FLOOR = "plane/zarr_memory"

TARGETS = [
    Target("full read >= 0.6 of the copy limit", "full/tiffstore", COPY_LIMIT, "ratio", 0.6),
    Target("sum >= 0.9 of the read+sum limit", "sum/tiffstore", SUM_LIMIT, "ratio", 0.9),
    Target(
        "to_dask: full read >= 0.6 of the copy limit",
        "full/tiffstore_to_dask",
        COPY_LIMIT,
        "ratio",
        0.6,
    ),
    Target(
        "to_dask: sum >= 0.95 of the read+sum limit",
        "sum/tiffstore_to_dask",
        SUM_LIMIT,
        "ratio",
        0.95,
    ),
    Target(
        "from_zarr: full read >= 1.2x the seed recipe",
        "full/tiffstore",
        "full/recipe",
        "ratio",
        1.2,
    ),
    Target("from_zarr: sum >= 1.2x the seed recipe", "sum/tiffstore", "sum/recipe", "ratio", 1.2),
    Target(
        "from_zarr: full read >= 0.9 of to_dask",
        "full/tiffstore",
        "full/tiffstore_to_dask",
        "ratio",
        0.9,
    ),
    Target(
        "from_zarr: sum >= 0.9 of to_dask", "sum/tiffstore", "sum/tiffstore_to_dask", "ratio", 0.9
    ),
    Target(
        "xr.open_zarr: full read >= 0.9 of from_zarr",
        "full/tiffstore_xarray",
        "full/tiffstore",
        "ratio",
        0.9,
    ),
    Target(
        "xr.open_zarr: sum >= 0.9 of from_zarr",
        "sum/tiffstore_xarray",
        "sum/tiffstore",
        "ratio",
        0.9,
    ),
    Target(
        "format 3 sharded, default chunks: [c,s,z] >= 20x faster than tifffile",
        "plane/tiffstore_v3_sharded",
        "plane/tifffile",
        "speedup",
        at_least=20,
    ),
    Target(
        "page: store.mapping[key] <= 3x pread",
        "plane/tiffstore_page_mapping",
        PLANE_LIMIT,
        "ratio",
        at_most=3,
    ),
    Target(
        "page: zarr [c,s,z] <= 1.2x zarr MemoryStore",
        "plane/tiffstore_page",
        MEMORY_FLOOR,
        "ratio",
        at_most=1.2,
    ),
    Target(
        "page: zarr [c,s,z] >= 100x faster than tifffile",
        "plane/tiffstore_page",
        "plane/tifffile",
        "speedup",
        at_least=100,
    ),
    Target(
        "default chunks: [c,s,z] >= 20x faster than tifffile",
        "plane/tiffstore_default",
        "plane/tifffile",
        "speedup",
        at_least=20,
    ),
]


def run(ctx: Context) -> list[Row]:
    """tiffstore on the uncompressed dataset."""
    ds = ctx.dataset()
    path = ds.path
    out = np.zeros(ds.array_shape, dtype=ds.dtype)
    warm(ds.files)
    rows = [
        cases.full_read(
            ctx,
            ds,
            "full/tiffstore",
            "tiffstore: da.store(da.from_zarr(store), out)",
            "tiffstore",
            lambda: da.from_zarr(tiffstore.open(path)),
            out,
        ),
        cases.total(
            ctx,
            ds,
            "sum/tiffstore",
            "tiffstore: da.from_zarr(store).sum()",
            "tiffstore",
            lambda: da.from_zarr(tiffstore.open(path)),
        ),
        cases.full_read(
            ctx,
            ds,
            "full/tiffstore_to_dask",
            "tiffstore: da.store(store.to_dask(), out)",
            "tiffstore",
            lambda: to_dask(tiffstore.open(path)),
            out,
        ),
        cases.total(
            ctx,
            ds,
            "sum/tiffstore_to_dask",
            "tiffstore: store.to_dask().sum()",
            "tiffstore",
            lambda: to_dask(tiffstore.open(path)),
        ),
        cases.full_read(
            ctx,
            ds,
            "full/tiffstore_v3",
            "tiffstore, format 3 sharded: da.store(da.from_zarr(store, chunks=store.chunks), out)",
            "tiffstore",
            lambda: from_zarr_v3(path),
            out,
        ),
        cases.total(
            ctx,
            ds,
            "sum/tiffstore_v3",
            "tiffstore, format 3 sharded: da.from_zarr(store, chunks=store.chunks).sum()",
            "tiffstore",
            lambda: from_zarr_v3(path),
        ),
        cases.full_read(
            ctx,
            ds,
            "full/tiffstore_xarray",
            'tiffstore: da.store(xr.open_zarr(store)["image"].data, out)',
            "tiffstore",
            lambda: open_xarray(path),
            out,
        ),
        cases.total(
            ctx,
            ds,
            "sum/tiffstore_xarray",
            'tiffstore: xr.open_zarr(store)["image"].data.sum()',
            "tiffstore",
            lambda: open_xarray(path),
        ),
        sum_without_dask(ctx, ds),
        cases.into_array(
            ctx,
            ds,
            "zarr/tiffstore",
            "tiffstore: zarr.open_array(store)[...]",
            "tiffstore",
            lambda: np.asarray(zarr.open_array(tiffstore.open(path), mode="r")[...]),
            case=ZARR_READ,
        ),
    ]
    with zarrs_own_read_path():
        rows += [
            cases.full_read(
                ctx,
                ds,
                "full/tiffstore_zarr_pipeline",
                "tiffstore: da.store(da.from_zarr(store), out), zarr's own read path",
                "tiffstore",
                lambda: da.from_zarr(tiffstore.open(path)),
                out,
            ),
            cases.total(
                ctx,
                ds,
                "sum/tiffstore_zarr_pipeline",
                "tiffstore: da.from_zarr(store).sum(), zarr's own read path",
                "tiffstore",
                lambda: da.from_zarr(tiffstore.open(path)),
            ),
        ]

    default = tiffstore.open(path)
    default_z = zarr.open_array(default, mode="r")
    rows.append(
        cases.one_plane(
            ctx,
            ds,
            "plane/tiffstore_default",
            "tiffstore, default chunks: zarr [c,s,z]",
            "tiffstore",
            lambda: lambda c, s, z: default_z[c, s, z],
            note=f"chunk {_mib(default.chunks, ds.dtype)}",
        )
    )

    sharded = tiffstore.open(path, zarr_format=3)
    sharded_z = zarr.open_array(sharded, mode="r")
    rows.append(
        cases.one_plane(
            ctx,
            ds,
            "plane/tiffstore_v3_sharded",
            "tiffstore, format 3 sharded, default chunks: zarr [c,s,z]",
            "tiffstore",
            lambda: lambda c, s, z: sharded_z[c, s, z],
            note=f"shard {_mib(sharded.chunks, ds.dtype)}, inner chunk one page",
        )
    )

    page = tiffstore.open(path, chunks="page")
    page_z = zarr.open_array(page, mode="r")
    mapping = page.mapping
    rows.append(
        cases.one_plane(
            ctx,
            ds,
            "plane/tiffstore_page_mapping",
            "tiffstore, chunks='page': store.mapping[key]",
            "tiffstore",
            lambda: lambda c, s, z: np.frombuffer(mapping[f"{c}.{s}.{z}.0.0"], dtype=ds.dtype),
        )
    )
    rows.append(
        cases.one_plane(
            ctx,
            ds,
            "plane/tiffstore_page",
            "tiffstore, chunks='page': zarr [c,s,z]",
            "tiffstore",
            lambda: lambda c, s, z: page_z[c, s, z],
            limit=MEMORY_FLOOR,
        )
    )

    page_zarr_z = with_zarrs_pipeline(lambda: zarr.open_array(page, mode="r"))()
    rows.append(
        cases.one_plane(
            ctx,
            ds,
            "plane/tiffstore_page_zarr_pipeline",
            "tiffstore, chunks='page': zarr [c,s,z], zarr's own codec pipeline",
            "tiffstore",
            lambda: lambda c, s, z: page_zarr_z[c, s, z],
            limit=MEMORY_FLOOR,
        )
    )

    # zarr's floor: the same array, same chunks, no compressor, from memory.
    if rows[0].figure is None:
        out[...] = zarr.open_array(page, mode="r")[...]
    memory = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=ds.array_shape,
        chunks=page.chunks,
        dtype=ds.dtype,
        zarr_format=2,
        compressors=None,
        filters=None,
        fill_value=0,
    )
    memory[...] = out
    del out
    rows.append(
        cases.one_plane(
            ctx,
            ds,
            MEMORY_FLOOR,
            "zarr floor: zarr [c,s,z] from a MemoryStore, same chunks",
            "limit",
            lambda: lambda c, s, z: memory[c, s, z],
        )
    )
    return rows


def with_zarrs_pipeline(make: Callable[[], Any]) -> Callable[[], Any]:
    """``make`` with zarr's own codec pipeline while arrays are opened (the off switch).

    The pipeline is chosen when zarr opens the array, so the setting need not
    outlive ``make``.
    """

    def made() -> Any:
        was_on = tiffstore.use_codec_pipeline(False)
        try:
            return make()
        finally:
            tiffstore.use_codec_pipeline(was_on)

    return made


@contextmanager
def zarrs_own_read_path() -> Iterator[None]:
    """``da.from_zarr(store)`` read all the way through zarr, as with both off switches
    (``TIFFSTORE_CODEC_PIPELINE=0``, ``TIFFSTORE_DASK_OPTIMIZE=0``)."""
    pipeline = tiffstore.use_codec_pipeline(False)
    optimization = tiffstore.use_dask_optimization(False)
    try:
        yield
    finally:
        tiffstore.use_dask_optimization(optimization)
        tiffstore.use_codec_pipeline(pipeline)


def from_zarr_v3(path: Any) -> da.Array:
    """``da.from_zarr`` of the format 3 sharded store, one task per shard."""
    store = tiffstore.open(path, zarr_format=3)
    return da.from_zarr(store, chunks=store.chunks)


def sum_without_dask(ctx: Context, ds: Dataset) -> Row:
    """Every chunk's bytes from ``store.mapping``, summed with NumPy in one thread per core."""
    store = tiffstore.open(ds.path)
    keys = list(store.keys.root_chunk_keys())
    mapping = store.mapping

    def chunk_sum(key: str) -> int:
        return int(np.frombuffer(mapping[key], dtype=store.dtype).sum(dtype="u8"))

    def measure() -> Row:
        with ThreadPoolExecutor(cores()) as pool:
            got: list[int] = []
            t = time_best(lambda: got.append(sum(pool.map(chunk_sum, keys))), ctx.repeats)
        if got[-1] != cases.expected_sum(ds):
            raise AssertionError(f"sum is {got[-1]}, expected {cases.expected_sum(ds)}")
        return timed_row(
            "sum/tiffstore_threads", SUM, THREADS, "tiffstore", t, nbytes=ds.nbytes, limit=SUM_LIMIT
        )

    return attempt("sum/tiffstore_threads", SUM, THREADS, "tiffstore", measure, unit="GB/s")


def open_xarray(path: Any) -> da.Array:
    """The dask array of ``xr.open_zarr(tiffstore.open(path))["image"]``."""
    import xarray as xr

    data: da.Array = xr.open_zarr(tiffstore.open(path))["image"].data
    return data


def to_dask(store: tiffstore.TiffStore) -> da.Array:
    """``store.to_dask()``: chunks read straight into dask's blocks, no zarr pipeline."""
    if not hasattr(store, "to_dask"):
        raise NotImplementedError("this tiffstore has no TiffStore.to_dask")
    return store.to_dask()


def _mib(chunks: tuple[int, ...], dtype: str) -> str:
    return f"{int(np.prod(chunks)) * np.dtype(dtype).itemsize / 2**20:.3g} MiB"

"""tiffstore's read path, with default settings, beside the limits and zarr's own floor.

- full read: ``da.store(da.from_zarr(tiffstore.open(dir)), out)`` into a preallocated array,
  and the same through ``store.to_dask()`` (chunks read into dask's blocks, no zarr pipeline);
- sum: ``da.from_zarr(...).sum().compute()``, and through ``store.to_dask()``;
- ``zarr.open_array(store)[...]``;
- one plane with default chunks and with ``chunks="page"``: the store's own read of
  the chunk (``store.mapping[key]``), zarr's read of it, and the same zarr read from
  an in-memory store holding the same array with the same chunks (zarr's floor).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import zarr

import tiffstore

from . import cases
from .data import Context, warm
from .harness import Row, Target
from .limits import COPY_LIMIT, PLANE_LIMIT, SUM_LIMIT
from .peers import ZARR_READ

TOOL = "tiffstore"
MEMORY_FLOOR = "plane/zarr_memory"

TARGETS = [
    Target("full read >= 0.6 of the copy limit", "full/tiffstore", COPY_LIMIT, "ratio", 0.6),
    Target("sum >= 0.9 of the read+sum limit", "sum/tiffstore", SUM_LIMIT, "ratio", 0.9),
    Target(
        "page: store.mapping[key] <= 3x pread",
        "plane/tiffstore_page_mapping",
        PLANE_LIMIT,
        "ratio",
        at_most=3,
    ),
    Target(
        "page: zarr [c,s,z] <= 1.5x zarr MemoryStore",
        "plane/tiffstore_page",
        MEMORY_FLOOR,
        "ratio",
        at_most=1.5,
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


def to_dask(store: tiffstore.TiffStore) -> da.Array:
    """``store.to_dask()``: chunks read straight into dask's blocks, no zarr pipeline."""
    if not hasattr(store, "to_dask"):
        raise NotImplementedError("this tiffstore has no TiffStore.to_dask")
    return store.to_dask()


def _mib(chunks: tuple[int, ...], dtype: str) -> str:
    return f"{int(np.prod(chunks)) * np.dtype(dtype).itemsize / 2**20:.3g} MiB"

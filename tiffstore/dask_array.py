"""The virtual array as a dask array whose tasks read chunks straight from the TIFFs.

``dask.array.from_zarr(store)`` goes through zarr's codec pipeline, which copies
every chunk once more (in its single event-loop thread) into a freshly zeroed
array. :func:`to_dask` skips that: each task reads its chunk's bytes with one
ranged read into the block dask hands on, so ``da.store`` and reductions see one
copy less. The chunks, dtype and values are the same as through zarr.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dask.array as da

    from .store import TiffStore

__all__ = ["read_block", "to_dask"]


def read_block(store: TiffStore, index: tuple[int, ...]) -> np.ndarray:
    """Read chunk ``index`` of ``store``, trimmed to the array's edge."""
    m = store.manifest
    starts, stops = m.chunk_bounds(index)
    shape = tuple(e - s for s, e in zip(starts, stops, strict=True))
    chunk = store.reader.read_chunk(index)
    if chunk is None:
        return np.full(shape, m.fill_value, dtype=m.dtype)
    if shape != chunk.shape:
        chunk = chunk[tuple(slice(0, n) for n in shape)]
    return chunk


def to_dask(store: TiffStore, name: str | None = None) -> da.Array:
    """A dask array over the store's chunks, read directly (no zarr pipeline).

    Parameters
    ----------
    store
        The virtual store (from :func:`tiffstore.open`).
    name
        Dask key prefix; by default derived from the store's manifest, so opening
        the same files twice gives the same graph keys.

    Returns
    -------
    dask.array.Array
        Same shape, dtype, chunks and values as ``dask.array.from_zarr(store)``.

    Examples
    --------
    >>> stack = tiffstore.open("raw/").to_dask()  # doctest: +SKIP
    >>> stack.max(axis=2).compute()  # doctest: +SKIP
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    m = store.manifest
    token = name or f"tiffstore-{tokenize(m.files, m.file_sizes, m.chunks, m.source, m.layouts)}"
    store_key = f"{token}-store"
    chunks = tuple(
        tuple(min(c, n - i) for i in range(0, n, c)) if n else (0,)
        for c, n in zip(m.chunks, m.shape, strict=True)
    )
    layer: dict[Any, Any] = {store_key: store}
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        layer[(token, *index)] = (read_block, store_key, index)
    graph = HighLevelGraph.from_collections(token, layer, dependencies=())
    return da.Array(graph, token, chunks, dtype=m.dtype, meta=np.empty((0,) * len(chunks), m.dtype))

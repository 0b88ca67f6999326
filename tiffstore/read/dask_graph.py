"""A dask optimization: ``da.from_zarr(store)`` reads a :class:`TiffStore`'s chunks on the task's thread.

Through zarr, every read runs on zarr's event loop or its worker threads, never on the
dask thread that asked: the chunk is written by one core and summed (or copied on) by
another. On two cores that costs about a fifth of a sum's speed, however fast the
read itself (``docs/benchmarks.md``, "Why the sum through zarr trailed ``to_dask``"),
and zarr offers a store or a codec pipeline no way to run on the caller's thread.

dask puts the zarr array that ``da.from_zarr`` (``da.from_array``) was given into the
graph once, as the one value of a layer of its own, and every task indexes it;
``xr.open_zarr(store)`` does the same with the zarr array inside xarray's lazy
indexing wrappers. Before dask's own array optimization, :func:`optimize` swaps each
such value that reads a :class:`TiffStore`'s pixels for a :class:`DirectArray`:
indexed with exactly one chunk of the store (or, sharded, one inner chunk), it reads
it as ``store.to_dask()``'s tasks do, on the task's thread; indexed any other way, it
hands the selection to the value it stands for. Graph keys, chunks and values stay as
they were; arrays of other stores, xarray variables that decode or were already
indexed, and other values in the graph, are left as they are.

``import tiffstore`` makes :func:`optimize` dask's array optimization
(``dask.config``'s ``array_optimize``) unless something else already set that key.
``TIFFSTORE_DASK_OPTIMIZE=0`` in the environment, or
``tiffstore.use_dask_optimization(False)``, leaves dask's own.
"""

from __future__ import annotations

from typing import Any

import dask.config
import numpy as np
import zarr
from zarr.buffer import cpu, default_buffer_prototype

from tiffstore._compat import xarray_zarr_array
from tiffstore.read.assemble import ChunkReader
from tiffstore.read.dask_array import read_cell
from tiffstore.read.pipeline import passes_bytes_through, switched_off
from tiffstore.read.store import TiffStore

__all__ = ["SWITCH_VARIABLE", "DirectArray", "optimize", "read_directly", "use_dask_optimization"]

#: The environment variable that, set to ``0`` (or ``false``, ``no``, ``off``), keeps
#: ``import tiffstore`` from making :func:`optimize` dask's array optimization.
SWITCH_VARIABLE = "TIFFSTORE_DASK_OPTIMIZE"

#: The ``dask.config`` key dask reads its array optimization from.
CONFIG_KEY = "array_optimize"

# What use_dask_optimization(True) replaced (a value, or absent), to put back.
_replaced: list[tuple[bool, Any]] = []


class DirectArray:
    """A :class:`TiffStore`'s zarr array whose chunks are read on the caller's thread.

    Parameters
    ----------
    array
        The zarr array of the store's pixels that it stands for.
    store
        The store that ``array`` reads.
    value
        What the graph held, indexed for every other selection: ``array`` itself
        (the default), or xarray's wrapper of it.

    Notes
    -----
    ``a[sel]`` where ``sel`` is exactly one chunk of the store, a step-1 slice per dim
    cut at the array's edge (what dask's tasks ask), reads it with one plan of the
    store's reader; of a format 3 sharded store, an inner chunk (a page) too. An
    integer in place of the slice, along a dim whose chunks are one long, picks that
    chunk and drops the dim (``x[1]`` of channels read one chunk each). Any other
    selection is ``value[sel]``. It pickles as its array, store and value, so
    dask.distributed workers read with readers of their own.
    """

    __slots__ = ("array", "store", "value")

    def __init__(self, array: zarr.Array, store: TiffStore, value: Any = None) -> None:
        self.array = array
        self.store = store
        self.value = array if value is None else value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.array.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.array.chunks)

    def __getitem__(self, selection: Any) -> Any:
        cell = self._cell(selection)
        if cell is None:
            return self.value[selection]
        reader, index, picked = cell
        chunk = read_cell(reader, index)
        if not picked:
            return chunk
        return chunk[tuple(0 if d in picked else slice(None) for d in range(chunk.ndim))]

    def __getstate__(self) -> tuple[zarr.Array, TiffStore, Any]:
        return self.array, self.store, self.value

    def __setstate__(self, state: tuple[zarr.Array, TiffStore, Any]) -> None:
        self.array, self.store, self.value = state

    def __repr__(self) -> str:
        return f"<DirectArray of {self.store!r}>"

    def _cell(self, selection: Any) -> tuple[ChunkReader, tuple[int, ...], tuple[int, ...]] | None:
        """The reader and index of the one chunk ``selection`` is, and the dims an
        integer picked (dropped from the result); ``None`` for any other selection."""
        if not isinstance(selection, tuple) or len(selection) != self.ndim:
            return None
        store = self.store
        cell = _one_cell(selection, store.manifest.chunks, store.manifest.shape)
        if cell is not None:
            return store.reader, *cell
        shards = store.shard_reader
        if shards is None:
            return None
        page = _one_cell(selection, shards.layout.inner, store.manifest.shape)
        return None if page is None else (shards.page_reader, *page)


def _one_cell(
    selection: tuple[Any, ...], chunks: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The index of the one cell of the ``chunks`` grid ``selection`` selects, and the dims
    where it is an integer; ``None`` if it selects anything else.

    Each dim is a step-1 slice of exactly one cell (cut at the array's edge), or an
    integer along a dim whose cells are one long (``x[1]`` of an array chunked one
    channel at a time: that cell without the dim, read with no byte more than asked).
    """
    index: list[int] = []
    picked: list[int] = []
    for d, (sel, c, n) in enumerate(zip(selection, chunks, shape, strict=True)):
        if isinstance(sel, (int, np.integer)) and not isinstance(sel, bool):
            at = int(sel) + n if sel < 0 else int(sel)
            if c != 1 or not 0 <= at < n:
                return None
            index.append(at)
            picked.append(d)
            continue
        if type(sel) is not slice or sel.step not in (None, 1):
            return None
        start = 0 if sel.start is None else sel.start
        stop = n if sel.stop is None else sel.stop
        if start < 0 or start >= n or start % c or stop != min(start + c, n):
            return None
        index.append(start // c)
    return tuple(index), tuple(picked)


def direct_array(value: Any) -> DirectArray | None:
    """A :class:`DirectArray` for ``value`` if it reads a zarr array of a :class:`TiffStore`'s
    pixels whose chunks are the files' bytes as they are, read into NumPy arrays; else
    ``None``.

    ``value`` is that zarr array, or xarray's lazy wrapper of it as ``xr.open_zarr``
    puts it into the graph, taken only where indexing it reads the zarr array and
    nothing more (:func:`tiffstore._compat.xarray_zarr_array`).
    """
    array = value if isinstance(value, zarr.Array) else xarray_zarr_array(value)
    if not isinstance(array, zarr.Array):
        return None
    store = array.store
    if not isinstance(store, TiffStore):
        return None
    m = store.manifest
    if array.path not in ("", store.documents.image_prefix.rstrip("/")):
        return None
    if tuple(array.shape) != m.shape or np.dtype(array.dtype) != m.dtype:
        return None
    if not passes_bytes_through(array.metadata, m.dtype):
        return None
    if default_buffer_prototype().nd_buffer is not cpu.NDBuffer:
        # zarr gives arrays of another kind (CuPy, with zarr.config.enable_gpu()).
        return None
    return DirectArray(array, store, value)


def read_directly(graph: Any) -> Any:
    """``graph`` with every zarr array of a :class:`TiffStore`'s pixels (bare, or as
    ``xr.open_zarr`` wraps it) a :class:`DirectArray`.

    Parameters
    ----------
    graph
        A dask ``HighLevelGraph``; anything else is returned as it is.

    Returns
    -------
    Any
        A new graph where a layer held such an array as its one value (what
        ``da.from_array`` and ``da.from_zarr`` make), else ``graph`` itself.
    """
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    if not isinstance(graph, HighLevelGraph):
        return graph
    layers: dict[str, Any] = {}
    for name, layer in graph.layers.items():
        if type(layer) is MaterializedLayer and len(layer) == 1:
            ((key, value),) = layer.items()
            direct = direct_array(value)
            if direct is not None:
                layers[name] = MaterializedLayer(
                    {key: direct},
                    annotations=layer.annotations,
                    collection_annotations=layer.collection_annotations,
                )
    if not layers:
        return graph
    return HighLevelGraph({**graph.layers, **layers}, graph.dependencies)


def optimize(graph: Any, keys: Any, **kwargs: Any) -> Any:
    """dask's array optimization (``dask.array.optimization.optimize``) of :func:`read_directly`'s graph.

    The function ``import tiffstore`` sets as ``dask.config``'s ``array_optimize``;
    it takes and returns what dask's does.
    """
    from dask.array.optimization import optimize as dask_optimize

    return dask_optimize(read_directly(graph), keys, **kwargs)


def use_dask_optimization(on: bool = True) -> bool:
    """Make :func:`optimize` dask's array optimization, or put back what it replaced.

    ``import tiffstore`` calls ``use_dask_optimization(True)`` unless ``dask.config``
    already has an ``array_optimize`` (or ``TIFFSTORE_DASK_OPTIMIZE=0`` is set). The
    optimization is applied when a dask array is computed, so the switch holds for
    arrays already made too.

    Parameters
    ----------
    on
        ``True``: set ``array_optimize`` to :func:`optimize`. ``False``: if it is set
        to that, put back what it replaced (no ``array_optimize``: dask's own).

    Returns
    -------
    bool
        Whether tiffstore's optimization was dask's before the call.

    Examples
    --------
    >>> was_on = tiffstore.use_dask_optimization(False)  # dask's own from now on
    >>> _ = tiffstore.use_dask_optimization(was_on)  # as it was
    """
    config = dask.config.config
    was_on = config.get(CONFIG_KEY) is optimize
    if on and not was_on:
        _replaced[:] = [(CONFIG_KEY in config, config.get(CONFIG_KEY))]
        dask.config.set({CONFIG_KEY: optimize})
    elif not on and was_on:
        had, previous = _replaced.pop() if _replaced else (False, None)
        if had:
            dask.config.set({CONFIG_KEY: previous})
        else:
            config.pop(CONFIG_KEY, None)
    return was_on


def _use_by_default() -> None:
    """``use_dask_optimization(True)`` unless switched off or ``array_optimize`` is set."""
    if switched_off(SWITCH_VARIABLE):
        return
    if CONFIG_KEY not in dask.config.config:
        use_dask_optimization(True)


_use_by_default()

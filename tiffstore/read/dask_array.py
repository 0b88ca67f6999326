"""The virtual array as a dask array whose tasks read chunks straight from the TIFFs.

``dask.array.from_zarr(store)`` goes through zarr's event loop: each chunk is read
on another thread than the dask task that uses it (and, with zarr's own codec
pipeline, copied once more). :func:`to_dask` skips that: each task reads its
chunk's bytes with one ranged read into the block dask hands on, on the task's own
thread. The chunks, dtype and values are the same as through zarr.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from zarr.abc.buffer import Buffer, BufferPrototype

from tiffstore._compat import dask_array_of_layer
from tiffstore.errors import OptionError
from tiffstore.manifest.model import Manifest
from tiffstore.read.assemble import ChunkReader
from tiffstore.read.gpu import device_prototype

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["ChunkStore", "read_block", "read_block_into", "read_cell", "to_dask"]


class ChunkStore(Protocol):
    """What the graph's tasks read chunks from: a :class:`~tiffstore.read.store.TiffStore`.

    It is put into the graph once and pickled to the workers, which make its reader
    afresh in their own process.
    """

    @property
    def manifest(self) -> Manifest: ...

    @property
    def reader(self) -> ChunkReader: ...

    def get_sync(
        self, key: str, *, prototype: BufferPrototype | None = None, byte_range: Any = None
    ) -> Buffer | None: ...


def read_block(store: ChunkStore, index: tuple[int, ...]) -> np.ndarray:
    """Read chunk ``index`` of ``store``, trimmed to the array's edge."""
    return read_cell(store.reader, index)


def read_cell(reader: ChunkReader, index: tuple[int, ...]) -> np.ndarray:
    """Read chunk ``index`` of ``reader``'s manifest, trimmed to the array's edge (the
    fill value where no file contributes)."""
    m = reader.manifest
    starts, stops = m.chunk_bounds(index)
    shape = tuple(e - s for s, e in zip(starts, stops, strict=True))
    chunk = reader.read_chunk(index)
    if chunk is None:
        return np.full(shape, m.fill_value, dtype=m.dtype)
    if shape != chunk.shape:
        chunk = chunk[tuple(slice(0, n) for n in shape)]
    return chunk


def read_block_into(store: ChunkStore, index: tuple[int, ...], prototype: BufferPrototype) -> Any:
    """Read chunk ``index`` of ``store`` as an array of ``prototype``'s kind (CuPy for the GPU one).

    The chunk's bytes come from the store's ``get_sync`` (for a GPU prototype:
    through pinned host memory, one copy to the device), trimmed to the array's
    edge, in native byte order.
    """
    m = store.manifest
    starts, stops = m.chunk_bounds(index)
    shape = tuple(e - s for s, e in zip(starts, stops, strict=True))
    native = m.dtype.newbyteorder("=")
    buf = store.get_sync(".".join(map(str, index)), prototype=prototype)
    if buf is None:
        filled = prototype.nd_buffer.create(shape=shape, dtype=native, fill_value=m.fill_value)
        return filled.as_ndarray_like()
    data: Any = buf.as_array_like()
    if not m.dtype.isnative and m.dtype.itemsize > 1:
        # Device arrays (CuPy) have no non-native byte order: swap the bytes there.
        data = data.reshape(-1, m.dtype.itemsize)[:, ::-1].copy()
    chunk = data.reshape(-1).view(native).reshape(m.chunks)
    if shape != chunk.shape:
        chunk = chunk[tuple(slice(0, n) for n in shape)]
    return chunk


def to_dask(
    store: ChunkStore,
    name: str | None = None,
    *,
    gpu: bool = False,
    meta: Any = None,
    prototype: BufferPrototype | None = None,
) -> da.Array:
    """A dask array over the store's chunks, read directly (no zarr pipeline).

    Parameters
    ----------
    store
        The virtual store (from :func:`tiffstore.open`).
    name
        Dask key prefix; by default derived from the store's manifest, so opening
        the same files twice gives the same graph keys (in dask's array-expression
        mode, ``array.query-planning``, dask adds a token of its own to it, computed
        from the graph: the keys still stay the same).
    gpu
        Give CuPy chunks in GPU memory, each read through pinned host memory and
        copied to the device once (needs ``pip install "tiffstore[gpu]"``).
    meta
        An array of the kind the chunks should be: a CuPy array is the same as
        ``gpu=True``, a NumPy array (or ``None``) gives NumPy chunks.
    prototype
        A zarr ``BufferPrototype`` to read every chunk through (its ``NDBuffer``
        makes the meta and the missing files' fill); ``gpu=True`` is zarr's GPU one.

    Returns
    -------
    dask.array.Array
        Same shape, chunks and values as ``dask.array.from_zarr(store)``. Through a
        prototype (``gpu=True``), the dtype is in native byte order.

    Examples
    --------
    >>> stack = tiffstore.open("raw/").to_dask()  # doctest: +SKIP
    >>> stack.max(axis=2).compute()  # doctest: +SKIP
    >>> on_gpu = tiffstore.open("raw/").to_dask(gpu=True)  # CuPy chunks  # doctest: +SKIP
    >>> on_gpu.max(axis=2).compute()  # a cupy.ndarray  # doctest: +SKIP
    """
    from dask.base import tokenize

    prototype = _prototype_for(gpu, meta, prototype)
    m = store.manifest
    token = name or f"tiffstore-{tokenize(m.files, m.file_sizes, m.chunks, m.source, m.layouts)}"
    if prototype is not None and name is None:
        token += f"-{prototype.buffer.__module__}.{prototype.buffer.__qualname__}"
    store_key = f"{token}-store"
    chunks = tuple(
        tuple(min(c, n - i) for i in range(0, n, c)) if n else (0,)
        for c, n in zip(m.chunks, m.shape, strict=True)
    )
    layer: dict[Any, Any] = {store_key: store}
    if prototype is None:
        for index in itertools.product(*(range(len(c)) for c in chunks)):
            layer[(token, *index)] = (read_block, store_key, index)
        return dask_array_of_layer(layer, token, chunks, np.empty((0,) * len(chunks), m.dtype))
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        layer[(token, *index)] = (read_block_into, store_key, index, prototype)
    native = m.dtype.newbyteorder("=")
    like = prototype.nd_buffer.create(shape=(0,) * len(chunks), dtype=native).as_ndarray_like()
    return dask_array_of_layer(layer, token, chunks, like)


def _prototype_for(
    gpu: bool, meta: Any, prototype: BufferPrototype | None
) -> BufferPrototype | None:
    """The prototype ``to_dask``'s options ask for; ``None`` for NumPy chunks read directly."""
    if meta is not None:
        module = type(meta).__module__.split(".")[0]
        if module == "cupy":
            gpu = True
        elif not isinstance(meta, np.ndarray):
            raise OptionError(
                f"to_dask(meta=...) takes a NumPy or CuPy array, not {type(meta).__name__}; "
                "for another array kind pass a zarr BufferPrototype as prototype=."
            )
    if gpu:
        if prototype is not None:
            raise OptionError("to_dask: give gpu=True (or a CuPy meta) or prototype=, not both.")
        return device_prototype()
    return prototype

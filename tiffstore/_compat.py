"""The one place tiffstore touches other libraries' private internals.

Everything else in tiffstore uses public API only (``zarr.abc.*``, ``zarr.buffer``,
``zarr.api``, ``zarr.storage``, ``zarr.codecs``, fsspec's documented methods). What
those do not offer is wrapped here, each use with why it is needed and the versions
it was checked against, so that a new zarr, fsspec, s3fs or tifffile release that
moves something breaks one module, and a test (``tests/test_architecture.py``)
keeps the rest of the package from reaching past it.

Checked against: zarr 3.1.6 (Python 3.11) and 3.4.2 (Python 3.12); fsspec and s3fs
2026.9.0; tifffile 2026.3.3 and 2026.11.8; xarray 2025.1.1 and 2026.9.0. CI also runs the tests against the newest
releases the Python it runs on can install (``.ci/newest``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

import tifffile

# zarr's format 2 codec adapter and metadata classes: the pipeline inspects an array's
# codecs to tell whether a chunk's bytes pass through unchanged.
from zarr.codecs._v2 import V2Codec

# zarr's batched codec pipeline: TiffCodecPipeline subclasses it (zarr chooses a
# pipeline class by configuration, and offers no public base class that reads).
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata
from zarr.core.sync import sync as _zarr_sync

try:  # zarr >= 3.2: a pipeline's read says, per chunk, whether it was there
    from zarr.abc.codec import GetResult  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # zarr 3.1: read returns nothing
    GetResult = None

if TYPE_CHECKING:
    # Types of the codec pipeline's signatures (not re-exported publicly by zarr).
    from zarr.core.array_spec import ArraySpec
    from zarr.core.indexing import SelectorTuple
    from zarr.core.metadata import ArrayMetadata

__all__ = [
    "ArrayMetadata",
    "ArraySpec",
    "ArrayV2Metadata",
    "ArrayV3Metadata",
    "BatchedCodecPipeline",
    "GetResult",
    "SelectorTuple",
    "V2Codec",
    "dask_array_of_layer",
    "fs_cat_file",
    "fs_info",
    "gather_in_chunks",
    "has_own_find",
    "open_tiff_file",
    "s3_call",
    "s3_can_call",
    "strip_protocol",
    "xarray_zarr_array",
    "zarr_sync",
]

T = TypeVar("T")


# -- zarr ---------------------------------------------------------------------------


def zarr_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on zarr's own event loop and return its result.

    materialize writes through zarr's stores (``LocalStore``, ``FsspecStore``), whose
    methods are coroutines bound to zarr's loop; zarr's public API has no synchronous
    ``set``/``delete``/``list`` for a store. ``zarr.core.sync.sync`` (zarr 3.0 to 3.4).
    """
    return _zarr_sync(coroutine)


# -- fsspec ---------------------------------------------------------------------------


def strip_protocol(fs: Any, url: str) -> str:
    """``url`` as ``fs`` names paths (no protocol): ``AbstractFileSystem._strip_protocol``,
    the classmethod every fsspec file system defines and has no public name for."""
    return str(fs._strip_protocol(url))


def fs_info(fs: Any, path: str) -> Awaitable[dict[str, Any]]:
    """The coroutine of ``fs.info(path)`` on an async file system (``_info``: fsspec's
    async methods carry a leading underscore), to run with a deadline on its loop."""
    return fs._info(path)


def fs_cat_file(fs: Any, url: str, start: int, end: int, **kwargs: Any) -> Awaitable[bytes]:
    """The coroutine of one ranged read on an async file system (``_cat_file``), so a
    batch of them is gathered, and cancelled together, by tiffstore itself."""
    return fs._cat_file(url, start=start, end=end, **kwargs)


def gather_in_chunks(fs: Any, coroutines: Sequence[Awaitable[Any]]) -> list[Any]:
    """Run many coroutines on ``fs``'s loop, at most fsspec's batch size at once, with
    exceptions returned in place of results: ``fsspec.asyn._run_coros_in_chunks``
    (fsspec 2023.1 to 2026.9), the throttle fsspec's own bulk calls use."""
    from fsspec.asyn import _run_coros_in_chunks, sync

    found: list[Any] = sync(
        fs.loop, _run_coros_in_chunks, list(coroutines), nofiles=True, return_exceptions=True
    )
    return found


def has_own_find(fs: Any) -> bool:
    """Whether ``fs`` lists a tree with a ``find`` of its own (s3fs: one listing) rather
    than fsspec's generic walk, which takes ``on_error``. Compares the class's method
    with fsspec's (``AsyncFileSystem._find``, ``AbstractFileSystem.find``)."""
    from fsspec import AbstractFileSystem
    from fsspec.asyn import AsyncFileSystem

    if isinstance(fs, AsyncFileSystem):
        return type(fs)._find is not AsyncFileSystem._find
    return type(fs).find is not AbstractFileSystem.find


# -- s3fs -------------------------------------------------------------------------------


def s3_can_call(fs: Any) -> bool:
    """Whether ``fs`` is an s3fs file system whose raw S3 calls :func:`s3_call` can make."""
    return hasattr(fs, "_call_s3")


def s3_call(fs: Any, method: str, **kwargs: Any) -> Awaitable[Any]:
    """One S3 API call through s3fs's client, with its retries and credentials:
    ``S3FileSystem._call_s3`` (s3fs 2023.1 to 2026.9). Needed for ``GetObject`` with
    ``IfMatch``, which s3fs's ``cat_ranges`` cannot send."""
    return fs._call_s3(method, **kwargs)


# -- tifffile ------------------------------------------------------------------------


def open_tiff_file(fh: IO[bytes] | str) -> tifffile.TiffFile:
    """``tifffile.TiffFile`` that never follows a multi-file OME set into its siblings.

    Each file of such a set is read for its own planes; opening the others would
    multiply handles and work. ``_multifile=False`` is the keyword tifffile's own
    ``TiffSequence`` uses for this (tifffile 2023 to 2026.11).
    """
    return tifffile.TiffFile(fh, _multifile=False)


# -- dask ---------------------------------------------------------------------------


def dask_array_of_layer(
    layer: dict[Any, Any], name: str, chunks: tuple[tuple[int, ...], ...], meta: Any
) -> Any:
    """A dask array whose block ``index`` is the task ``layer[(name, *index)]``.

    ``layer`` may also hold tasks the blocks depend on (the store they share). dask's
    own array (``dask.array.Array`` over a ``HighLevelGraph``), or, in dask's
    array-expression mode (``array.query-planning``, off by default in dask 2026.8,
    which says it will one day be on), an array of its graph expression: that mode's
    ``Array`` takes an expression, not a graph, and dask has no public way to make one
    from a graph. There, dask names the array itself: ``name``, then a token of its
    own, computed from the layer, so the same layer still gives the same keys. Checked
    against dask 2026.8.0 in both modes; a dask without
    ``dask.array.array_expr_enabled`` has only the first.
    """
    import dask.array as da

    enabled = getattr(da, "array_expr_enabled", None)  # dask >= 2025.1
    if enabled is not None and enabled():
        from dask.array._array_expr._collection import from_graph

        keys = [k for k in layer if isinstance(k, tuple) and k[:1] == (name,)]
        return from_graph(layer, meta, chunks, keys, name)
    from dask.highlevelgraph import HighLevelGraph

    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks, dtype=meta.dtype, meta=meta)


# -- xarray -------------------------------------------------------------------------


def xarray_zarr_array(value: Any) -> Any:
    """The zarr array under the value xarray's zarr backend puts into a dask graph, or ``None``.

    ``xr.open_zarr(store)`` (``open_dataset(..., chunks=...)``) gives each variable's
    ``da.from_array`` the wrappers of ``xarray.core.indexing``, whose classes xarray
    does not export::

        ImplicitToExplicitIndexingAdapter(
            CopyOnWriteArray(LazilyIndexedArray(ZarrArrayWrapper(zarr_array), key)))

    Only that exact chain is recognised, with no selection taken yet (``key`` every
    dim's whole slice) and the wrapper's dtype the zarr array's: then ``value[sel]``
    for a tuple of slices holds what ``zarr_array[sel]`` reads. Any wrapper more (CF
    decoding: mask, scale, byte order, ...), a cache (``open_zarr(chunks=None)`` then
    ``.chunk()``), or another backend gives ``None``. Classes and attributes as in
    xarray 2025.1.1 to 2026.9.0 (the chain is the same back to 2024.6).
    """
    if not type(value).__module__.startswith("xarray."):
        return None
    from xarray.backends.zarr import ZarrArrayWrapper
    from xarray.core import indexing

    if type(value) is not indexing.ImplicitToExplicitIndexingAdapter:
        return None
    if value.indexer_cls not in (indexing.BasicIndexer, indexing.OuterIndexer):
        return None
    inner = value.array
    if type(inner) is indexing.CopyOnWriteArray:
        inner = inner.array
    if type(inner) is not indexing.LazilyIndexedArray:
        return None
    key = inner.key
    if type(key) is not indexing.BasicIndexer or any(k != slice(None) for k in key.tuple):
        return None
    wrapper = inner.array
    if type(wrapper) is not ZarrArrayWrapper:
        return None
    array = wrapper.get_array()
    if wrapper.dtype != array.dtype or tuple(wrapper.shape) != tuple(array.shape):
        return None
    return array

"""A zarr codec pipeline that reads whole chunks of a :class:`TiffStore` straight into zarr's output.

zarr-python 3.1's default pipeline (``BatchedCodecPipeline``) fetches a chunk's
bytes, then copies them into the output array in its one event-loop thread: every
byte moves twice, and the second move is serial however many threads dask runs.
:class:`TiffCodecPipeline` is the same pipeline, except that a chunk of a
:class:`TiffStore` that the read wants whole (what ``dask.array.from_zarr`` asks
for) is read with one ranged read per file straight into its place in the output,
in a worker thread. Everything else (compressed or transposing codecs, part of a
chunk, a byte order other than the files') goes through the default pipeline
unchanged, and an array of any other store gets zarr's own ``BatchedCodecPipeline``
itself, not this class.

``import tiffstore`` makes it zarr's pipeline (:func:`use_codec_pipeline`) when
nothing else chose one: zarr's ``codec_pipeline.path`` still holds zarr's default,
``BatchedCodecPipeline``, and no ``ZARR_CODEC_PIPELINE__PATH`` environment variable
or zarr configuration file sets it. A pipeline the user chose (zarrs', zarr's
``FusedCodecPipeline``) is left alone, and so is a zarr whose default is another
pipeline. ``TIFFSTORE_CODEC_PIPELINE=0`` in the environment, or
``tiffstore.use_codec_pipeline(False)``, leaves zarr's own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec, ShardingCodec
from zarr.registry import register_pipeline
from zarr.storage import StorePath

from tiffstore._compat import (
    ArrayV2Metadata,
    ArrayV3Metadata,
    BatchedCodecPipeline,
    GetResult,
    V2Codec,
)
from tiffstore.read.assemble import ChunkReader
from tiffstore.read.store import TiffStore

if TYPE_CHECKING:
    from typing import Self

    from zarr.abc.buffer import NDBuffer
    from zarr.abc.store import Store

    from tiffstore._compat import ArrayMetadata, ArraySpec, SelectorTuple

__all__ = [
    "PIPELINE_PATH",
    "SWITCH_VARIABLE",
    "TiffCodecPipeline",
    "passes_bytes_through",
    "switched_off",
    "use_codec_pipeline",
]

#: The value of zarr's ``codec_pipeline.path`` setting that selects this pipeline.
PIPELINE_PATH = "tiffstore.read.pipeline.TiffCodecPipeline"

#: zarr's own pipeline, the only default that ``import tiffstore`` replaces.
ZARR_PIPELINE_PATH = "zarr.core.codec_pipeline.BatchedCodecPipeline"

#: The environment variable that, set to ``0`` (or ``false``, ``no``, ``off``), keeps
#: ``import tiffstore`` from choosing this pipeline.
SWITCH_VARIABLE = "TIFFSTORE_CODEC_PIPELINE"

_OFF = frozenset({"0", "false", "no", "off"})


def switched_off(variable: str) -> bool:
    """Whether the environment variable ``variable`` says off (``0``, ``false``, ``no``, ``off``)."""
    return os.environ.get(variable, "").strip().lower() in _OFF


# What use_codec_pipeline(True) replaced, for use_codec_pipeline(False) to put back.
_replaced: list[str] = []

ReadItem = tuple[Any, "ArraySpec", "SelectorTuple", "SelectorTuple", bool]


def _passes_bytes_through(codecs: Sequence[Any], dtype: np.dtype[Any]) -> bool:
    """Whether decoding with ``codecs`` leaves the chunk's bytes as they are."""
    if len(codecs) != 1:
        return False
    (codec,) = codecs
    if isinstance(codec, V2Codec):
        return not codec.filters and codec.compressor is None
    if isinstance(codec, ShardingCodec):
        # A shard of the store is the manifest's chunk with an index after it.
        return _passes_bytes_through(codec.codecs, dtype)
    if isinstance(codec, BytesCodec):
        order = {"little": "<", "big": ">"}.get(str(getattr(codec.endian, "value", "")), "|")
        return dtype.itemsize == 1 or dtype.byteorder in (order, "=")
    return False


def _metadata_codecs(array_metadata: ArrayMetadata) -> list[Any]:
    """The codecs an array's metadata lists (format 2's filters and compressor as one)."""
    if isinstance(array_metadata, ArrayV3Metadata):
        return list(array_metadata.codecs)
    if isinstance(array_metadata, ArrayV2Metadata):
        return [V2Codec(filters=array_metadata.filters, compressor=array_metadata.compressor)]
    raise NotImplementedError(f"unknown metadata {type(array_metadata).__name__}")


def passes_bytes_through(array_metadata: ArrayMetadata, dtype: np.dtype[Any]) -> bool:
    """Whether an array's chunks, as its metadata says, are their stored bytes as they are."""
    try:
        codecs = _metadata_codecs(array_metadata)
    except NotImplementedError:
        return False
    return _passes_bytes_through(codecs, dtype)


@dataclass(frozen=True)
class TiffCodecPipeline(BatchedCodecPipeline):
    """zarr's batched pipeline, reading whole chunks of a :class:`TiffStore` in place.

    Attributes
    ----------
    store
        The store whose chunks are read in place (``None``: behaves exactly as
        ``BatchedCodecPipeline``).

    Examples
    --------
    >>> import tiffstore  # makes it zarr's pipeline, unless another was chosen
    >>> total = dask.array.from_zarr(tiffstore.open("raw/")).sum().compute()  # doctest: +SKIP
    """

    store: TiffStore | None = None

    @classmethod
    def from_array_metadata_and_store(cls, array_metadata: ArrayMetadata, store: Store) -> Self:
        # docstring inherited
        if not isinstance(store, TiffStore):
            # zarr then builds the pipeline with from_codecs: its own class.
            raise NotImplementedError("not a TiffStore: zarr builds its own pipeline")
        return cls._reading(_metadata_codecs(array_metadata), store)

    @classmethod
    def from_codecs(  # type: ignore[override]
        cls, codecs: Iterable[Any], *, batch_size: int | None = None
    ) -> BatchedCodecPipeline:
        """zarr's own ``BatchedCodecPipeline``: what zarr builds for anything not a TiffStore's array.

        zarr asks the configured class for the pipelines of other stores' arrays and
        of shards' inner chunks; they get zarr's class itself, not this subclass.
        """
        return BatchedCodecPipeline.from_codecs(codecs, batch_size=batch_size)

    @classmethod
    def _reading(cls, codecs: Iterable[Any], store: TiffStore | None) -> Self:
        """This pipeline over ``codecs``, reading whole chunks of ``store`` in place where it can."""
        pipeline = super().from_codecs(codecs)
        if store is None or not _passes_bytes_through(list(pipeline), store.dtype):
            return pipeline
        return dataclasses.replace(pipeline, store=store)

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        # docstring inherited
        codecs = [c.evolve_from_array_spec(array_spec=array_spec) for c in self]
        return self._reading(codecs, self.store)

    async def read(  # type: ignore[override,unused-ignore]
        self,
        batch_info: Iterable[ReadItem],
        out: NDBuffer,
        drop_axes: tuple[int, ...] = (),
    ) -> Any:
        # docstring inherited
        store = self.store
        target = out.as_ndarray_like()
        if store is None or not isinstance(target, np.ndarray) or target.dtype != store.dtype:
            return await super().read(batch_info, out, drop_axes)  # type: ignore[func-returns-value,unused-ignore]
        places: list[list[_Place] | None] = []
        rest: list[ReadItem] = []
        for item in batch_info:
            place = self._in_place(store, item, target)
            places.append(place)
            if place is None:
                rest.append(item)
        reads = [_read(store, p) for p in places if p is not None]
        if rest:
            reads.append(super().read(rest, out, drop_axes))
        results = await asyncio.gather(*reads)
        if GetResult is None:
            return None
        # zarr >= 3.2: one result per chunk, in the batch's order.
        found = iter(results[: len(results) - bool(rest)])
        others = iter(results[-1] if rest else ())
        return tuple(
            next(others) if p is None else GetResult(status="present" if next(found) else "missing")
            for p in places
        )

    @staticmethod
    def _in_place(store: TiffStore, item: ReadItem, target: np.ndarray) -> list[_Place] | None:
        """Where the item's chunks go in ``target``, when it wants whole chunks of the files.

        A whole chunk; or, of a format 3 shard, whole inner chunks (pages): one plane
        ``a[c, s, z]`` is then one page read straight into the output, with no shard
        index fetched (the store makes the index up from the manifest anyway).
        """
        byte_getter, _spec, chunk_selection, out_selection, _complete = item
        if not isinstance(byte_getter, StorePath) or byte_getter.store is not store:
            return None
        key = store.keys.chunk_key(byte_getter.path)
        chunks = store.manifest.chunks
        if key is None or not isinstance(chunk_selection, tuple):
            return None
        if len(chunk_selection) != len(chunks):
            return None
        shards = store.shard_reader
        inner = chunks if shards is None else shards.layout.inner
        found = [
            _inner_range(sel, n, i)
            for sel, n, i in zip(chunk_selection, chunks, inner, strict=True)
        ]
        ranges = [r for r in found if r is not None]
        if len(ranges) != len(found):
            return None
        view = target[out_selection]
        wanted = math.prod((b - a) * i for (a, b), i in zip(ranges, inner, strict=True))
        if not view.flags.c_contiguous or view.size != wanted:
            return None
        whole = all(r == (0, -(-n // i)) for r, n, i in zip(ranges, chunks, inner, strict=True))
        if shards is None or whole:
            # (A whole shard is its chunk: one plan reads every page of a file at once.)
            return [(store.reader, key.index, view.reshape(chunks))]
        # The view in inner-chunk blocks: (n0, i0, n1, i1, ...), n the inner chunks taken.
        taken = [b - a for a, b in ranges]
        blocks = view.reshape([x for n, i in zip(taken, inner, strict=True) for x in (n, i)])
        per = shards.layout.per_shard
        places: list[_Place] = []
        for k in itertools.product(*(range(a, b) for a, b in ranges)):
            page = tuple(o * p + j for o, p, j in zip(key.index, per, k, strict=True))
            block = blocks[
                tuple(x for j, (a, _) in zip(k, ranges, strict=True) for x in (j - a, slice(None)))
            ]
            places.append((shards.page_reader, page, block))
        return places


#: A chunk read in place: its reader, its index, and its place in the output.
_Place = tuple[ChunkReader, tuple[int, ...], np.ndarray]


def _inner_range(sel: Any, n: int, inner: int) -> tuple[int, int] | None:
    """The inner chunks (``[a, b)``) a dim's selection covers whole, or ``None``.

    ``sel`` selects along a dim of extent ``n`` of a chunk cut into pieces of ``inner``:
    a step-1 slice on their boundaries, or one index where they are one element
    (zarr drops such a dim from the output).
    """
    if isinstance(sel, slice):
        start, stop, step = sel.start or 0, n if sel.stop is None else sel.stop, sel.step or 1
        if step != 1 or start % inner or (stop % inner and stop != n) or stop <= start:
            return None
        return start // inner, -(-stop // inner)
    if isinstance(sel, int | np.integer) and inner == 1 and 0 <= sel < n:
        return int(sel), int(sel) + 1
    return None


async def _read(store: TiffStore, places: list[_Place]) -> bool:
    """:func:`_read_into` in a worker thread, or here when that costs less than the hop."""
    nbytes = sum(view.nbytes for _, _, view in places)
    if nbytes <= store.inline_read_bytes and not store.manifest.source.remote:
        return _read_into(store, places)
    return await asyncio.to_thread(_read_into, store, places)


def _read_into(store: TiffStore, places: list[_Place]) -> bool:
    """Read each chunk into its view; ``False`` (and the fill value) where no file contributes."""
    found = False
    for reader, index, view in places:
        if reader.read_chunk(index, out=view) is None:
            view[...] = store.manifest.fill_value
        else:
            found = True
    return found


def use_codec_pipeline(on: bool = True) -> bool:
    """Make :class:`TiffCodecPipeline` zarr's codec pipeline, or put back the one it replaced.

    ``import tiffstore`` calls ``use_codec_pipeline(True)`` when nothing else chose a
    pipeline (see this module's docstring). A pipeline is chosen when zarr opens an
    array: arrays already open keep theirs. Arrays of stores other than a
    :class:`TiffStore` get zarr's own ``BatchedCodecPipeline`` either way.

    Parameters
    ----------
    on
        ``True``: set zarr's ``codec_pipeline.path`` to :data:`PIPELINE_PATH`.
        ``False``: if it is set to that, set it back to what it replaced (zarr's
        default if nothing is known to have been replaced).

    Returns
    -------
    bool
        Whether tiffstore's pipeline was zarr's before the call.

    Examples
    --------
    >>> was_on = tiffstore.use_codec_pipeline(False)  # zarr's own pipeline from now on
    >>> _ = tiffstore.use_codec_pipeline(was_on)  # as it was
    """
    current = zarr.config.get("codec_pipeline.path")
    was_on = bool(current == PIPELINE_PATH)
    if on and not was_on:
        _replaced[:] = [current]
        zarr.config.set({"codec_pipeline.path": PIPELINE_PATH})
    elif not on and was_on:
        previous = _replaced.pop() if _replaced else _zarrs_default()
        zarr.config.set({"codec_pipeline.path": previous or ZARR_PIPELINE_PATH})
    return was_on


def _zarrs_default() -> str | None:
    """zarr's own default ``codec_pipeline.path`` (``None`` if zarr declares none)."""
    for defaults in reversed(zarr.config.defaults):
        path = defaults.get("codec_pipeline", {}).get("path")
        if path is not None:
            return str(path)
    return None


def _chosen_outside() -> bool:
    """Whether an environment variable or a zarr configuration file sets the pipeline."""
    collected = zarr.config.collect()
    return any("path" in (collected.get(key) or {}) for key in ("codec_pipeline", "codec-pipeline"))


def _use_by_default() -> None:
    """``use_codec_pipeline(True)`` unless switched off or a pipeline was chosen elsewhere."""
    if switched_off(SWITCH_VARIABLE):
        return
    default = _zarrs_default()
    # A zarr whose default is another pipeline keeps it: this one extends the batched one.
    if default != ZARR_PIPELINE_PATH or zarr.config.get("codec_pipeline.path") != default:
        return
    if not _chosen_outside():
        use_codec_pipeline(True)


register_pipeline(TiffCodecPipeline)
_use_by_default()

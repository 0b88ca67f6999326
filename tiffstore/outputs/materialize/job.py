"""What one materialize task does: read its region of the source, encode, write.

A :class:`Job` is everything a worker needs (the source store, which pickles as its
manifest; the output; the plan), so the same tasks run on local threads or on a
dask.distributed cluster. A task reads the source chunks covering its region
through the store's own reader (never parsing names or headers), encodes its output
chunks in its own thread, puts them with the store's ``set`` and forgets them: peak
memory is about ``workers x (task region + a source chunk)``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.buffer import default_buffer_prototype

from tiffstore._compat import zarr_sync
from tiffstore.outputs.materialize.plan import ArrayPlan, Codec, Output, Task, cut_tasks
from tiffstore.read.store import TiffStore

__all__ = ["Job", "read_source", "write_task"]


def read_source(
    store: TiffStore, start: Sequence[int], stop: Sequence[int], order: Sequence[int]
) -> tuple[np.ndarray, bool]:
    """The source region ``start:stop`` (output dim order), read chunk by chunk.

    Also says whether every source chunk had a file: where one did not, the region
    holds fill value and some output chunks may be all fill value.
    """
    m = store.manifest
    reader = store.reader
    lo = [0] * len(order)
    hi = [0] * len(order)
    for out_dim, src_dim in enumerate(order):
        lo[src_dim], hi[src_dim] = start[out_dim], stop[out_dim]
    first = [a // c for a, c in zip(lo, m.chunks, strict=True)]
    last = [(b - 1) // c for b, c in zip(hi, m.chunks, strict=True)]
    indices = list(itertools.product(*(range(a, b + 1) for a, b in zip(first, last, strict=True))))
    region = np.empty([b - a for a, b in zip(lo, hi, strict=True)], dtype=m.dtype)
    whole_files = True
    for index in indices:
        b_lo, b_hi = m.chunk_bounds(index)
        dst = region[
            tuple(
                slice(max(a, c) - a, min(b, d) - a)
                for a, b, c, d in zip(lo, hi, b_lo, b_hi, strict=True)
            )
        ]
        if dst.shape == tuple(m.chunks) and dst.flags.c_contiguous:
            # A whole source chunk landing on a contiguous slab: read straight into it.
            block = reader.read_chunk(index, out=dst)
        else:
            block = reader.read_chunk(index)
            if block is not None:
                dst[...] = block[
                    tuple(
                        slice(max(a, c) - c, min(b, d) - c)
                        for a, b, c, d in zip(lo, hi, b_lo, b_hi, strict=True)
                    )
                ]
        if block is None:  # no file contributes to this source chunk
            dst[...] = m.fill_value
            whole_files = False
    return (region if list(order) == sorted(order) else region.transpose(order)), whole_files


def _all_fill(chunk: np.ndarray, fill: float) -> bool:
    return not chunk.any() if fill == 0 else bool((chunk == fill).all())


def _downsample(data: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Mean of 2 x 2 blocks along ``axes`` (an odd edge is padded with its last value)."""
    pad = [(0, n % 2 if d in axes else 0) for d, n in enumerate(data.shape)]
    if any(p for _, p in pad):
        data = np.pad(data, pad, mode="edge")
    shape: list[int] = []
    pairs: list[int] = []
    for d, n in enumerate(data.shape):
        if d in axes:
            shape += [n // 2, 2]
            pairs.append(len(shape) - 1)
        else:
            shape.append(n)
    mean = data.reshape(shape).mean(axis=tuple(pairs), dtype=np.float64)
    if data.dtype.kind in "iub":
        return np.rint(mean).astype(data.dtype)
    return mean.astype(data.dtype)


class Job:
    """The plan of one materialize run; pickles small (the source store is its manifest)."""

    def __init__(
        self,
        source: TiffStore,
        output: Output,
        arrays: tuple[ArrayPlan, ...],
        order: tuple[int, ...],
        downsample_axes: tuple[int, ...],
        codec: Codec,
    ) -> None:
        self.source = source
        self.output = output
        self.arrays = arrays
        self.order = order
        self.downsample_axes = downsample_axes
        self.codec = codec
        #: Pixels are written little-endian whatever the TIFFs' byte order.
        self.dtype = source.dtype.newbyteorder("<") if source.dtype.itemsize > 1 else source.dtype
        self.fill = source.manifest.fill_value
        self._blosc = codec.blosc()
        self._open: dict[str, Any] = {}
        self._store: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("source", "output", "arrays", "order", "downsample_axes", "codec")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @property
    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                self._store = self.output.store()
            return self._store

    def array(self, path: str) -> zarr.Array:
        """The output array at ``path``, opened once per process."""
        store = self.store
        with self._lock:
            if path not in self._open:
                self._open[path] = zarr.open_array(store, path=path, mode="r+")
            return self._open[path]

    def plan(self, path: str) -> ArrayPlan:
        return next(a for a in self.arrays if a.path == path)

    def tasks(self, plan: ArrayPlan) -> list[Task]:
        """The tasks of one array; the image's grow to cover whole source chunks."""
        source_chunks = None
        if plan.level == 0:
            source_chunks = tuple(self.source.chunks[d] for d in self.order)
        return cut_tasks(plan, source_chunks, self.source.dtype.itemsize)

    def chunk_regions(self, task: Task) -> Iterator[tuple[str, tuple[slice, ...]]]:
        """Each chunk of a task: its store key (its shard's, when sharded) and its region."""
        plan = self.plan(task.path)
        encode = self.array(task.path).metadata.encode_chunk_key
        first = [a // c for a, c in zip(task.start, plan.chunks, strict=True)]
        last = [-(-b // c) for b, c in zip(task.stop, plan.chunks, strict=True)]
        for index in itertools.product(*(range(a, b) for a, b in zip(first, last, strict=True))):
            region = tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(index, plan.chunks, plan.shape, strict=True)
            )
            key_index = index
            if plan.shards is not None:
                key_index = tuple(
                    i * c // s for i, c, s in zip(index, plan.chunks, plan.shards, strict=True)
                )
            yield f"{plan.path}/{encode(key_index)}", region

    def chunk_keys(self, task: Task) -> set[str]:
        return {key for key, _ in self.chunk_regions(task)}

    def expected(self, task: Task) -> tuple[np.ndarray, bool]:
        """What the task's region must hold: source pixels, or the level below downsampled.

        Also whether parts of it may be fill value (a file missing; any pyramid level).
        """
        plan = self.plan(task.path)
        if plan.level == 0:
            data, whole_files = read_source(self.source, task.start, task.stop, self.order)
            return data, not whole_files
        below = self.arrays[plan.level - 1]
        slices = tuple(
            slice(a * 2, min(b * 2, n)) if d in self.downsample_axes else slice(a, b)
            for d, (a, b, n) in enumerate(zip(task.start, task.stop, below.shape, strict=True))
        )
        return _downsample(np.asarray(self.array(below.path)[slices]), self.downsample_axes), True

    def write(self, task: Task) -> int:
        """Write one task's chunks, then its record; the uncompressed bytes written."""
        data, may_hold_fill = self.expected(task)
        record = json.dumps({"chunks": task.chunks, "bytes": data.nbytes}).encode()
        prototype = default_buffer_prototype()
        if self.plan(task.path).shards is not None:
            # zarr builds the shard (its chunks and index) from the whole shard's pixels.
            self.array(task.path)[task.slices] = data
            puts = []
        else:
            puts = list(self.encode_chunks(task, data, may_hold_fill))
        puts.append((task.record_key, record))
        store = self.store

        async def put_all() -> None:
            # The record goes last: only a task whose every chunk is stored counts as done.
            chunks, (key, value) = puts[:-1], puts[-1]
            await asyncio.gather(*(store.set(k, prototype.buffer.from_bytes(v)) for k, v in chunks))
            await store.set(key, prototype.buffer.from_bytes(value))

        zarr_sync(put_all())
        return int(data.nbytes)

    def encode_chunks(
        self, task: Task, data: np.ndarray, may_hold_fill: bool
    ) -> Iterator[tuple[str, bytes]]:
        """``(key, Blosc bytes)`` of each chunk of a task that is not all fill value.

        Encoding here, in the task's thread, rather than through ``Array.__setitem__``
        saves zarr's extra copy of every chunk and its single event-loop thread: 1.5-2x
        the throughput on two cores. Where a file is missing (``may_hold_fill``), chunks
        all equal to the fill value are not stored, as zarr does with
        ``write_empty_chunks=False``; elsewhere that check would cost a pass over
        every chunk for nothing.
        """
        plan = self.plan(task.path)
        for key, region in self.chunk_regions(task):
            local = tuple(
                slice(r.start - a, r.stop - a) for r, a in zip(region, task.start, strict=True)
            )
            chunk = data[local]
            if may_hold_fill and _all_fill(chunk, self.fill):
                continue
            if chunk.shape != plan.chunks:
                # Edge chunks are stored whole, the part outside the array as fill value.
                full = np.full(plan.chunks, self.fill, dtype=self.dtype)
                full[tuple(slice(0, n) for n in chunk.shape)] = chunk
                chunk = full
            yield key, self._blosc.encode(np.ascontiguousarray(chunk, dtype=self.dtype))


def write_task(job: Job, task: Task) -> int:
    """Write ``task`` (a module-level function: dask.distributed pickles it by name)."""
    return job.write(task)

"""What one materialize task does: read its region of the source, encode, write.

A :class:`Job` is everything a worker needs (the source store, which pickles as its
manifest; the output; the plan), so the same tasks run on local threads or on a
dask.distributed cluster. A task reads the source chunks covering its region
through the store's own reader (never parsing names or headers) straight into
output-chunk order, encodes its output chunks in its own thread, puts them with the
store's ``set`` and forgets them; a shard is written part by part, streamed to its
file. Peak memory is bounded by :func:`~tiffstore.outputs.materialize.plan.worker_bytes`
per worker, whatever the shard size.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import google_crc32c
import numpy as np
import zarr
from zarr.buffer import default_buffer_prototype
from zarr.codecs import BytesCodec, Crc32cCodec, Endian, ShardingCodec, ShardingCodecIndexLocation

from tiffstore._compat import zarr_sync
from tiffstore.errors import MaterializeError
from tiffstore.outputs.materialize.plan import (
    ArrayPlan,
    Codec,
    Output,
    Task,
    cut_parts,
    cut_tasks,
    task_bytes,
)
from tiffstore.read.store import TiffStore

__all__ = ["Job", "read_chunks", "read_source", "write_task"]


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


def read_chunks(
    store: TiffStore,
    start: Sequence[int],
    stop: Sequence[int],
    order: Sequence[int],
    chunks: Sequence[int],
    dtype: np.dtype[Any],
) -> tuple[np.ndarray, bool]:
    """The source region ``start:stop`` (output dims, whole ``chunks`` from ``start``)
    read straight into output-chunk order: ``out[i, j, ...]`` is one whole output
    chunk, contiguous, ready to encode (parts past the array's edge hold fill value).

    Each source chunk is read into one small buffer, which stays in the CPU's cache
    while its pieces are placed into the output chunks it covers: one pass over the
    pixels instead of a read into a region and a copy out of it per chunk. A source
    chunk that is one whole, contiguous piece of an output chunk is read straight
    into it. Also says whether every source chunk had a file.
    """
    m = store.manifest
    ndim = len(order)
    to_source = [order.index(d) for d in range(ndim)]  # output dims in source order
    counts = [-(-(b - a) // c) for a, b, c in zip(start, stop, chunks, strict=True)]
    out = np.empty([*counts, *chunks], dtype=dtype)
    # Output chunks overhanging the array's edge are stored whole, the overhang fill value.
    edge = [
        a + n * c > s
        for a, n, c, s in zip(start, counts, chunks, (m.shape[d] for d in order), strict=True)
    ]
    for index in itertools.product(*(range(n) for n in counts)):
        if any(e and i == n - 1 for e, i, n in zip(edge, index, counts, strict=True)):
            out[index] = m.fill_value
    # From here on, source dim order and coordinates relative to the region's start.
    size = [chunks[to_source[d]] for d in range(ndim)]
    origin = [start[to_source[d]] for d in range(ndim)]
    extent = [stop[to_source[d]] - origin[d] for d in range(ndim)]

    def cell(target: Sequence[int]) -> np.ndarray:
        """Output chunk ``target`` (source dim order), viewed in source dim order."""
        return out[tuple(target[to_source[d]] for d in range(ndim))].transpose(to_source)

    scratch: np.ndarray | None = None
    whole_files = True
    for index in _source_chunks_of(m.chunks, origin, extent):
        b_lo, b_hi = m.chunk_bounds(index)
        b_lo = [b - o for b, o in zip(b_lo, origin, strict=True)]
        b_hi = [b - o for b, o in zip(b_hi, origin, strict=True)]
        lo = [max(b, 0) for b in b_lo]
        hi = [min(b, e) for b, e in zip(b_hi, extent, strict=True)]
        targets = list(
            itertools.product(
                *(range(a // c, (b - 1) // c + 1) for a, b, c in zip(lo, hi, size, strict=True))
            )
        )
        direct = None
        if len(targets) == 1 and dtype == m.dtype and (lo, hi) == (b_lo, b_hi):
            dst = cell(targets[0])[_within(lo, hi, _origin(targets[0], size))]
            if dst.shape == tuple(m.chunks) and dst.flags.c_contiguous:
                direct = dst
        if direct is not None:
            block = store.reader.read_chunk(index, out=direct)
            if block is not None:
                continue
        else:
            if scratch is None:
                scratch = np.empty(m.chunks, dtype=m.dtype)
            block = store.reader.read_chunk(index, out=scratch)
        if block is None:  # no file contributes to this source chunk
            whole_files = False
        for target in targets:
            t_lo = [max(a, t * c) for a, t, c in zip(lo, target, size, strict=True)]
            t_hi = [min(b, (t + 1) * c) for b, t, c in zip(hi, target, size, strict=True)]
            dst = cell(target)[_within(t_lo, t_hi, _origin(target, size))]
            if block is None:
                dst[...] = m.fill_value
            else:
                dst[...] = block[_within(t_lo, t_hi, b_lo)]
    return out, whole_files


def _source_chunks_of(
    chunks: Sequence[int], origin: Sequence[int], extent: Sequence[int]
) -> Iterator[tuple[int, ...]]:
    """The source chunks meeting the region ``origin + [0, extent)``."""
    return itertools.product(
        *(
            range(o // c, (o + e - 1) // c + 1)
            for o, e, c in zip(origin, extent, chunks, strict=True)
        )
    )


def _within(lo: Sequence[int], hi: Sequence[int], base: Sequence[int]) -> tuple[slice, ...]:
    """``lo:hi`` as slices of a block that starts at ``base``."""
    return tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, base, strict=True))


def _origin(target: Sequence[int], size: Sequence[int]) -> list[int]:
    return [t * c for t, c in zip(target, size, strict=True)]


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
    # numpy sums in buffered float64 pieces: the mean is the one float64 array held.
    mean = data.reshape(shape).mean(axis=tuple(pairs), dtype=np.float64)
    if data.dtype.kind in "iub":
        np.rint(mean, out=mean)
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
        return cut_tasks(plan, self._source_chunks(plan), self.source.dtype.itemsize)

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

    def parts(self, task: Task) -> list[Task]:
        """The pieces ``task`` is read and encoded in (a shard's: never all of it at once)."""
        plan = self.plan(task.path)
        return cut_parts(plan, task, self._source_chunks(plan), self.source.dtype.itemsize)

    def _source_chunks(self, plan: ArrayPlan) -> tuple[int, ...] | None:
        if plan.level:
            return None
        return tuple(self.source.chunks[d] for d in self.order)

    def write(self, task: Task) -> int:
        """Write one task's chunks, then its record; the uncompressed bytes written."""
        plan = self.plan(task.path)
        if plan.shards is None:
            puts = [(key, blob) for _, key, blob in self.encode_chunks(task) if blob is not None]
        else:
            puts = self.write_shard(task)
        nbytes = task_bytes(task, self.source.dtype.itemsize)
        record = json.dumps({"chunks": task.chunks, "bytes": nbytes}).encode()
        puts.append((task.record_key, record))
        prototype = default_buffer_prototype()
        store = self.store

        async def put_all() -> None:
            # The record goes last: only a task whose every chunk is stored counts as done.
            chunks, (key, value) = puts[:-1], puts[-1]
            await asyncio.gather(*(store.set(k, prototype.buffer.from_bytes(v)) for k, v in chunks))
            await store.set(key, prototype.buffer.from_bytes(value))

        zarr_sync(put_all())
        return nbytes

    def encode_chunks(self, task: Task) -> Iterator[tuple[tuple[int, ...], str, bytes | None]]:
        """``(chunk index, key, Blosc bytes)`` of each chunk of ``task``; ``None`` bytes
        for a chunk all fill value where a file is missing (not stored, as zarr does
        with ``write_empty_chunks=False``; elsewhere that check would cost a pass over
        every chunk for nothing).

        Encoding here, in the task's thread, rather than through ``Array.__setitem__``
        saves zarr's extra copy of every chunk and its single event-loop thread: 1.5-2x
        the throughput on two cores. The image's pixels are read straight into
        output-chunk order (:func:`read_chunks`), so each chunk is encoded where it lies.
        """
        plan = self.plan(task.path)
        first = [a // c for a, c in zip(task.start, plan.chunks, strict=True)]
        if plan.level == 0:
            cells, whole_files = read_chunks(
                self.source, task.start, task.stop, self.order, plan.chunks, self.dtype
            )
            may_hold_fill = not whole_files
        else:
            data, may_hold_fill = self.expected(task)
        for (key, region), index in zip(self.chunk_regions(task), self._indices(task), strict=True):
            if plan.level == 0:
                chunk = cells[tuple(i - f for i, f in zip(index, first, strict=True))]
            else:
                local = tuple(
                    slice(r.start - a, r.stop - a) for r, a in zip(region, task.start, strict=True)
                )
                chunk = data[local]
                if chunk.shape != plan.chunks:
                    # Edge chunks are stored whole, the part outside the array as fill value.
                    full = np.full(plan.chunks, self.fill, dtype=self.dtype)
                    full[tuple(slice(0, n) for n in chunk.shape)] = chunk
                    chunk = full
            if may_hold_fill and _all_fill(chunk, self.fill):
                yield index, key, None
                continue
            yield index, key, self._blosc.encode(np.ascontiguousarray(chunk, dtype=self.dtype))

    def _indices(self, task: Task) -> Iterator[tuple[int, ...]]:
        plan = self.plan(task.path)
        first = [a // c for a, c in zip(task.start, plan.chunks, strict=True)]
        last = [-(-b // c) for b, c in zip(task.stop, plan.chunks, strict=True)]
        return itertools.product(*(range(a, b) for a, b in zip(first, last, strict=True)))

    def write_shard(self, task: Task) -> list[tuple[str, bytes]]:
        """Encode a shard part by part, its chunks streamed to a local file (renamed into
        place once whole, as zarr's ``LocalStore`` writes) or, for an object store,
        gathered into the one object to put; what is left to put.

        The layout is zarr's sharding codec's, as the array's metadata declares it
        (:func:`_check_shard_codec`): the chunks back to back, then their index of
        ``(offset, nbytes)`` (``2**64 - 1`` twice for a chunk not stored) as
        little-endian uint64 with its CRC32C. A shard with no chunk stored is not written.
        """
        plan = self.plan(task.path)
        assert plan.shards is not None
        _check_shard_codec(self.array(task.path))
        per_shard = tuple(s // c for s, c in zip(plan.shards, plan.chunks, strict=True))
        index = np.full((*per_shard, 2), _NO_CHUNK, dtype="<u8")
        key = next(self.chunk_regions(task))[0]
        local = self.output.local
        path = None if local is None else local / key
        temporary = (
            None if path is None else path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        )
        gathered: list[bytes] = []
        offset = 0
        try:
            sink = None
            for part in self.parts(task):
                for chunk_index, _, blob in self.encode_chunks(part):
                    if blob is None:
                        continue
                    if temporary is not None and sink is None:
                        temporary.parent.mkdir(parents=True, exist_ok=True)
                        sink = temporary.open("wb")
                    if sink is not None:
                        sink.write(blob)
                    else:
                        gathered.append(blob)
                    index[tuple(i % n for i, n in zip(chunk_index, per_shard, strict=True))] = (
                        offset,
                        len(blob),
                    )
                    offset += len(blob)
            index_bytes = index.tobytes()
            tail = index_bytes + np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
            if sink is not None:
                sink.write(tail)
                sink.close()
                sink = None
                os.replace(temporary, path)  # type: ignore[arg-type]
                return []
        finally:
            if sink is not None:
                sink.close()
            if temporary is not None and temporary.exists():
                temporary.unlink()
        if not offset:  # every chunk all fill value: no shard (a resumed one removed)
            zarr_sync(self.store.delete(key))
            return []
        gathered.append(tail)
        return [(key, b"".join(gathered))]


_NO_CHUNK = np.uint64(2**64 - 1)


def _check_shard_codec(array: zarr.Array) -> None:
    """Refuse to write shards whose declared layout is not the one written here."""
    codec = array.metadata.codecs[0] if array.metadata.zarr_format == 3 else None
    ok = (
        isinstance(codec, ShardingCodec)
        and codec.index_location == ShardingCodecIndexLocation.end
        and [type(c) for c in codec.index_codecs] == [BytesCodec, Crc32cCodec]
        and getattr(codec.index_codecs[0], "endian", None) in (None, Endian.little)
    )
    if not ok:
        raise MaterializeError(
            f"{array.path}: its shards are declared as {codec!r}; materialize writes shards "
            "with the index at the end, as little-endian uint64 with a CRC32C (zarr's default)"
        )


def write_task(job: Job, task: Task) -> int:
    """Write ``task`` (a module-level function: dask.distributed pickles it by name)."""
    return job.write(task)

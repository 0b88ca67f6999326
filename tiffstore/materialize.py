"""Materialize: the virtual array re-encoded into a real Zarr store, resumable and verified.

:func:`materialize` reads the source through the store's own reader (one source
chunk at a time, ``store.reader.read_chunk``, never parsing names or headers) and
writes a Zarr group with zarr-python 3:

* ``image`` (``0``, ``1``... with ``ome=True``): the pixels, Blosc-compressed
  (zstd, level 3, bit-shuffle by default), with the dims as ``_ARRAY_DIMENSIONS``
  (format 2) or ``dimension_names`` (format 3);
* one small array per coordinate (wavelength per channel, timestamps per file), as
  in the live store's group view, so ``xarray.open_zarr(out)`` shows them.

**Bounded memory.** The work is cut into tasks, each one whole output chunk (or one
whole shard) or a few of them, grown dim by dim to cover whole source chunks while
it stays under ``TASK_BYTES``. A task reads the source chunks covering its region,
encodes its output chunks in its own thread, puts them with the store's ``set`` and
forgets them, so peak memory is about ``workers x (task region + a source chunk)``
whatever the size of the array.

**Nothing half-made.** Metadata is written first, with
``attrs["tiffstore"]["materialize"]["complete"] = False`` on the group and the image.
Each finished task then writes a small record under ``.tiffstore-journal/``; the
record is written after the task's chunks, so a task without one is redone whole on
``resume=True``, overwriting whatever part of it was written. This journal, rather
than ``write_empty_chunks=True``, tells "not done" from "all fill value": zarr
still skips chunks that are all fill value (missing files cost nothing on disk), and
a resume needs no chunk to be read back. Local chunks and records are written to a
temporary name and renamed (zarr's ``LocalStore``); object stores (S3) put whole
objects, so no half-written chunk is ever taken as done. When every task is done the
marker becomes ``complete: True``, metadata is consolidated, and the journal removed.

**Default format.** Zarr format 2: the seed recipe's ``to_zarr`` wrote it, and every
Zarr reader (zarr-python 2 and 3, tensorstore, Fiji/BigDataViewer N5-Zarr, napari
with OME-NGFF 0.4) reads it. Format 3 (``zarr_format=3``) is for sharding: with
``shards=`` many chunks share one file, which keeps the file count of a 189 GB copy
small.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import MaterializeError

if TYPE_CHECKING:
    import zarr

    from .store import TiffStore

__all__ = [
    "MaterializeError",
    "MaterializeSummary",
    "default_chunks",
    "materialize",
    "materialize_status",
]

logger = logging.getLogger(__name__)

#: Where task records live inside the output while it is being written.
JOURNAL = ".tiffstore-journal"
#: A task grows to cover whole source chunks (dim by dim) only while it stays under
#: this size: one task of the seed's data, 64 whole 1024 x 768 planes, is 96 MiB.
TASK_BYTES = 128 * 2**20
SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")
_SPATIAL_CHUNKS = {"x": 256, "y": 256, "z": 64}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})
_OME_TYPES = {
    "t": "time",
    "time": "time",
    "stack": "time",
    "tp": "time",
    "timepoint": "time",
    "frame": "time",
    "c": "channel",
    "ch": "channel",
    "channel": "channel",
    "wavelength": "channel",
    "z": "space",
    "y": "space",
    "x": "space",
}
_OME_ORDER = {"time": 0, "channel": 1, "space": 2}

ProgressCallback = Callable[[str, int, int], None]


# -- the plan ------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """Blosc settings, made into the codec each Zarr format takes."""

    cname: str = "zstd"
    clevel: int = 3
    shuffle: str = "bitshuffle"

    def __post_init__(self) -> None:
        if self.shuffle not in SHUFFLES:
            raise MaterializeError(f"shuffle={self.shuffle!r}: choose one of {SHUFFLES}")
        if not 0 <= self.clevel <= 9:
            raise MaterializeError(f"clevel={self.clevel}: choose 0 (none) to 9")

    def blosc(self) -> Any:
        """The numcodecs ``Blosc`` that encodes chunks (zarr's codecs wrap the same)."""
        import numcodecs

        return numcodecs.Blosc(self.cname, self.clevel, SHUFFLES.index(self.shuffle))

    def for_format(self, zarr_format: int, itemsize: int) -> Any:
        """The codec object ``zarr.create_array`` takes for ``zarr_format``."""
        if zarr_format == 2:
            return self.blosc()
        from zarr.codecs import BloscCodec

        return BloscCodec(
            cname=self.cname,  # type: ignore[arg-type]
            clevel=self.clevel,
            shuffle=self.shuffle,  # type: ignore[arg-type]
            typesize=itemsize,
        )


@dataclass(frozen=True)
class ArrayPlan:
    """One pixel array of the output: ``image``, or one level of an OME pyramid."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    level: int

    @property
    def unit(self) -> tuple[int, ...]:
        """What one task writes at least: a whole shard, else a whole chunk."""
        return self.shards or self.chunks


@dataclass(frozen=True)
class Task:
    """One region of one array, a whole number of chunks (or shards), written at once."""

    path: str
    number: int
    start: tuple[int, ...]
    stop: tuple[int, ...]
    chunks: int

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    @property
    def record_key(self) -> str:
        return f"{JOURNAL}/{self.path}/{self.number}"


@dataclass(frozen=True)
class Output:
    """Where the output goes: a local folder or an fsspec URL (picklable)."""

    url: str
    storage_options: Mapping[str, Any] | None = None

    @property
    def local(self) -> Path | None:
        if "://" not in self.url:
            return Path(self.url)
        if self.url.startswith("file://"):
            return Path(self.url[len("file://") :])
        return None

    def store(self) -> Any:
        from zarr.storage import FsspecStore, LocalStore

        local = self.local
        if local is not None:
            return LocalStore(local)
        return FsspecStore.from_url(self.url, storage_options=dict(self.storage_options or {}))


def default_chunks(dims: Sequence[str], shape: Sequence[int]) -> tuple[int, ...]:
    """Output chunks good for viewing and analysis: 64 z x 256 y x 256 x, 1 elsewhere.

    Dims named neither ``z``, ``y`` nor ``x`` take the roles of the last three.

    Examples
    --------
    >>> default_chunks(("ch", "stack", "z", "y", "x"), (3, 199, 201, 1024, 768))
    (1, 1, 64, 256, 256)
    """
    roles = list(dims)
    if not {"y", "x"} <= set(roles):
        roles = [*["-"] * max(len(dims) - 3, 0), "z", "y", "x"][-len(dims) :]
    return tuple(
        max(1, min(n, _SPATIAL_CHUNKS.get(r, 1))) for r, n in zip(roles, shape, strict=True)
    )


def _parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise MaterializeError(f"{text!r} is not a size: write like 1GB, 512MiB or 1000000")
    return int(float(match[1]) * _UNITS[(match[2] or "").upper()])


def _resolve_shape(spec: Sequence[int | None], shape: Sequence[int], what: str) -> tuple[int, ...]:
    if len(spec) != len(shape):
        raise MaterializeError(
            f"{what} {tuple(spec)} has {len(spec)} dims; the array has {len(shape)} {tuple(shape)}"
        )
    out = tuple(n if c is None or c < 0 else min(c, n) for c, n in zip(spec, shape, strict=True))
    if any(c == 0 for c, n in zip(out, shape, strict=True) if n):
        raise MaterializeError(f"{what} {tuple(spec)}: every size must be at least 1")
    return tuple(max(c, 1) for c in out)


def _resolve_shards(
    shards: Sequence[int | None] | str | int | None,
    chunks: tuple[int, ...],
    shape: tuple[int, ...],
    itemsize: int,
) -> tuple[int, ...] | None:
    """A shard shape: as given, or grown from the chunks (x first) to about a target size."""
    if shards is None:
        return None
    if isinstance(shards, (str, int)):
        target = _parse_size(shards)
        out = list(chunks)
        for d in reversed(range(len(out))):
            while out[d] < shape[d] and math.prod(out) * itemsize * 2 <= target:
                out[d] = min(out[d] * 2, -(-shape[d] // chunks[d]) * chunks[d])
        return tuple(out)
    if len(shards) != len(shape):
        raise MaterializeError(
            f"shards {tuple(shards)} has {len(shards)} dims; the array has {len(shape)}"
        )
    # A shard may overhang the array's edge by less than a chunk, as chunks do.
    whole = [-(-n // c) * c for n, c in zip(shape, chunks, strict=True)]
    resolved = tuple(
        w if s is None or s < 0 else max(min(s, w), 1) for s, w in zip(shards, whole, strict=True)
    )
    bad = [d for d, (s, c) in enumerate(zip(resolved, chunks, strict=True)) if s % c]
    if bad:
        raise MaterializeError(
            f"shards {resolved} must be whole multiples of the chunks {chunks} (dims {bad} are not)"
        )
    return resolved


def _grid(shape: Sequence[int], block: Sequence[int]) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(-(-n // b)) for n, b in zip(shape, block, strict=True)))


def _tasks(plan: ArrayPlan, source_chunks: Sequence[int] | None, itemsize: int) -> list[Task]:
    """Cut an array into tasks of whole units, grown to cover a source chunk when small."""
    unit = plan.unit
    block = list(unit)
    if source_chunks is not None and plan.shards is None:
        # Innermost dims first (whole rows, then whole planes): a source chunk covered
        # along a dim is read once there, not once per output chunk across it.
        for d in reversed(range(len(block))):
            u, n = unit[d], plan.shape[d]
            grown = min(-(-max(source_chunks[d], u) // u) * u, -(-n // u) * u)
            if math.prod(block) // block[d] * grown * itemsize <= TASK_BYTES:
                block[d] = grown
    tasks = []
    for number, index in enumerate(_grid(plan.shape, block)):
        start = tuple(i * b for i, b in zip(index, block, strict=True))
        stop = tuple(min(s + b, n) for s, b, n in zip(start, block, plan.shape, strict=True))
        chunks = math.prod(
            -(-(e - s) // c) for s, e, c in zip(start, stop, plan.chunks, strict=True)
        )
        tasks.append(Task(plan.path, number, start, stop, chunks))
    return tasks


# -- reading and downsampling --------------------------------------------------


def _read_source(
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


# -- the job: everything a worker needs, picklable ----------------------------


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
        import zarr

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
        return _tasks(plan, source_chunks, self.source.dtype.itemsize)

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
            data, whole_files = _read_source(self.source, task.start, task.stop, self.order)
            return data, not whole_files
        below = self.arrays[plan.level - 1]
        slices = tuple(
            slice(a * 2, min(b * 2, n)) if d in self.downsample_axes else slice(a, b)
            for d, (a, b, n) in enumerate(zip(task.start, task.stop, below.shape, strict=True))
        )
        return _downsample(np.asarray(self.array(below.path)[slices]), self.downsample_axes), True

    def write(self, task: Task) -> int:
        """Write one task's chunks, then its record; the uncompressed bytes written."""
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

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

        sync(put_all())
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

    def verify(self, task: Task) -> list[str]:
        """Keys of the task's chunks whose values differ from the source (or cannot be read)."""
        expected, _ = self.expected(task)
        arr = self.array(task.path)
        try:
            found: np.ndarray | None = np.asarray(arr[task.slices])  # one read, decoded in parallel
        except Exception as exc:  # some chunk cannot be decoded: read them one by one
            logger.debug("%s: reading chunk by chunk (%s)", task.record_key, exc)
            found = None
        bad: list[str] = []
        for key, region in self.chunk_regions(task):
            local = tuple(
                slice(r.start - a, r.stop - a) for r, a in zip(region, task.start, strict=True)
            )
            try:
                got = found[local] if found is not None else arr[region]
                same = np.array_equal(got, expected[local])
            except Exception as exc:  # a chunk that cannot be decoded differs, whatever the cause
                logger.debug("%s cannot be read: %s", key, exc)
                same = False
            if not same and key not in bad:
                bad.append(key)
        return bad


def _write_task(job: Job, task: Task) -> int:
    return job.write(task)


def _verify_task(job: Job, task: Task) -> list[str]:
    return job.verify(task)


# -- running tasks: threads here, or a dask.distributed cluster ----------------


class _Runner:
    """Runs tasks on local threads or on a dask.distributed cluster, results as they finish."""

    def __init__(self, job: Job, workers: int | None, scheduler: Any) -> None:
        self.job = job
        self.workers = workers or os.cpu_count() or 1
        self.client: Any = None
        self._own_client = False
        self._job_ref: Any = job
        if scheduler is not None:
            from distributed import Client

            if isinstance(scheduler, Client):
                self.client = scheduler
            else:
                self.client = Client(scheduler)
                self._own_client = True
            self._job_ref = self.client.scatter(job, broadcast=True, hash=False)

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def map(
        self, fn: Callable[[Job, Task], Any], tasks: Sequence[Task]
    ) -> Iterator[tuple[Task, Any]]:
        if not tasks:
            return
        if self.client is not None:
            from distributed import as_completed

            futures = {
                self.client.submit(
                    fn,
                    self._job_ref,
                    t,
                    pure=False,
                    key=f"{fn.__name__}-{t.path}-{t.number}-{time.time_ns()}",
                ): t
                for t in tasks
            }
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                self.client.cancel(list(futures))
            return
        # Submit a bounded window so a huge task list never sits in memory as futures.
        todo = iter(tasks)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="materialize") as pool:
            running: dict[Future[Any], Task] = {}
            try:
                for t in itertools.islice(todo, self.workers * 2):
                    running[pool.submit(fn, self.job, t)] = t
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        task = running.pop(future)
                        yield task, future.result()
                        nxt = next(todo, None)
                        if nxt is not None:
                            running[pool.submit(fn, self.job, nxt)] = nxt
            finally:
                for future in running:
                    future.cancel()


# -- the summary ------------------------------------------------------------------


@dataclass(frozen=True)
class MaterializeSummary:
    """What a :func:`materialize` run did.

    Attributes
    ----------
    path
        The output (folder or URL).
    zarr_format
        2 or 3.
    shape, chunks, shards
        Of the image (level 0).
    bytes
        Uncompressed bytes written in this run (every level).
    write_seconds
        Of ``seconds``, the time spent writing (not opening, verifying or finishing).
    stored_bytes
        Compressed bytes of the image's chunks, where the store can list sizes (else ``None``).
    seconds
        Wall time of the run.
    chunks_written, chunks_skipped
        Output chunks written in this run, and found done by an earlier run (``resume``).
    complete
        Whether the output is finished (marked complete).
    verified
        ``True``/``False`` after ``verify=True``; ``None`` when not verified.
    mismatched
        Keys of chunks that differ from the source.
    """

    path: str
    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    bytes: int
    stored_bytes: int | None
    seconds: float
    write_seconds: float
    chunks_written: int
    chunks_skipped: int
    complete: bool
    verified: bool | None = None
    mismatched: tuple[str, ...] = field(default=())

    @property
    def throughput(self) -> float:
        """Uncompressed bytes per second written."""
        return self.bytes / self.write_seconds if self.write_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-able data (for ``--json``)."""
        out = asdict(self)
        out["throughput"] = self.throughput
        return out


# -- the output's state ------------------------------------------------------------


def _marker(root_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    ours = root_attrs.get("tiffstore", {})
    marker = ours.get("materialize") if isinstance(ours, dict) else None
    return marker if isinstance(marker, dict) else None


def _root_attrs(store: Any) -> dict[str, Any] | None:
    """The root group's attributes, or ``None`` when the root is not a Zarr group."""
    import zarr

    try:
        return dict(zarr.open_group(store, mode="r", use_consolidated=False).attrs)
    except Exception:  # not a group (absent, an array, foreign files): the caller decides
        return None


def _is_empty(store: Any, output: Output) -> bool:
    local = output.local
    if local is not None:
        return not local.exists() or (local.is_dir() and not any(local.iterdir()))
    from zarr.core.sync import sync

    async def first() -> bool:
        async for _ in store.list():
            return False
        return True

    return bool(sync(first()))


def _check_no_symlinks(local: Path) -> None:
    """Refuse an output that is, or holds, a symbolic link: writes must stay inside it."""
    if local.is_symlink():
        raise MaterializeError(
            f"{local} is a symbolic link; materialize writes only inside a real folder. "
            "Give the link's target instead."
        )
    if local.is_dir():
        for root, dirs, files in os.walk(local):
            for name in dirs + files:
                if (Path(root) / name).is_symlink():
                    raise MaterializeError(
                        f"{Path(root) / name} is a symbolic link inside the output; "
                        "materialize never writes through links. Remove it first."
                    )


def materialize_status(
    out: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The materialize marker of an output (``{"complete": ..., ...}``), or ``None``.

    Examples
    --------
    >>> tiffstore.materialize_status("mydata.zarr")["complete"]  # doctest: +SKIP
    True
    """
    output = Output(os.fspath(out), storage_options)
    attrs = _root_attrs(output.store())
    return None if attrs is None else _marker(attrs)


# -- metadata ----------------------------------------------------------------------


def _coordinates(source: TiffStore) -> list[tuple[str, np.ndarray, dict[str, Any], Any]]:
    """The coordinate arrays of the source's group view: name, values, attributes, fill."""
    import zarr

    # The format 2 group view of the same files: its coordinates are what the copy holds,
    # whatever the source store's own format.
    from .store import TiffStore

    view = source if source.zarr_format == 2 else TiffStore(source.manifest)
    group = zarr.open_group(view, mode="r")
    out = []
    for name in source.coords:
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        out.append((name, np.asarray(arr[...]), dict(arr.attrs), arr.metadata.fill_value))
    return out


def _image_name(source: TiffStore) -> str:
    taken = set(source.dims) | set(source.coords)
    return "image" if "image" not in taken else "image_data"


def _ome_axes(dims: Sequence[str]) -> tuple[tuple[int, ...], list[dict[str, str]]]:
    """The OME-NGFF order of the dims (time, channel, space) and their axes entries."""
    types = [_OME_TYPES.get(d.lower()) for d in dims]
    unknown = [d for d, t in zip(dims, types, strict=True) if t is None]
    if unknown or len(dims) > 5 or types.count("time") > 1 or types.count("channel") > 1:
        raise MaterializeError(
            f"ome=True needs at most 5 dims, one time (t, stack), one channel (c, ch) and "
            f"z/y/x; the array's dims are {tuple(dims)}"
            + (f" ({', '.join(unknown)} fit none)" if unknown else "")
            + ". Write it without --ome, or open the source with a pattern that names them so."
        )
    order = tuple(sorted(range(len(dims)), key=lambda d: (_OME_ORDER[types[d] or ""], d)))
    return order, [{"name": dims[d], "type": types[d] or ""} for d in order]


def _multiscales(
    name: str,
    axes: list[dict[str, str]],
    arrays: Sequence[ArrayPlan],
    factors: Sequence[int],
    version: str | None,
    sizes: Sequence[float] | None = None,
) -> dict[str, Any]:
    sizes = sizes or [1.0] * len(factors)
    datasets = [
        {
            "path": a.path,
            "coordinateTransformations": [
                {
                    "type": "scale",
                    "scale": [float(s * f**a.level) for s, f in zip(sizes, factors, strict=True)],
                }
            ],
        }
        for a in arrays
    ]
    doc: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if version:
        doc["version"] = version
    return doc


# -- the entry point ------------------------------------------------------------------


def materialize(
    source_or_store: Any,
    out: str | os.PathLike[str],
    *,
    chunks: Sequence[int | None] | None = None,
    zarr_format: int = 2,
    shards: Sequence[int | None] | str | int | None = None,
    cname: str = "zstd",
    clevel: int = 3,
    shuffle: str = "bitshuffle",
    ome: bool = False,
    levels: int = 1,
    scheduler: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    verify: bool = False,
    progress: ProgressCallback | None = None,
    storage_options: Mapping[str, Any] | None = None,
    open_options: Mapping[str, Any] | None = None,
) -> MaterializeSummary:
    """Write the virtual array as a real, compressed Zarr store, resumably.

    Parameters
    ----------
    source_or_store
        A :class:`~tiffstore.TiffStore`, or anything :func:`tiffstore.open` takes
        (folder, glob, list of files, URL).
    out
        A local folder or an fsspec URL (``s3://bucket/data.zarr``).
    chunks
        Output chunk shape, one entry per dim of the source, in its order (``None``/-1:
        a whole dim). Default :func:`default_chunks`: ``(1, 1, 64, 256, 256)`` for
        ``(ch, stack, z, y, x)``.
    zarr_format
        2 (default: the recipe's format, read everywhere) or 3.
    shards
        Format 3 only: a shard shape (whole multiples of ``chunks``, in the source's dim
        order) or a target shard size (``"1GB"``, ``"256MiB"``, bytes).
    cname, clevel, shuffle
        Blosc compressor, level, and ``"noshuffle"``, ``"shuffle"`` or ``"bitshuffle"``.
    ome
        Write OME-NGFF metadata (0.4 for format 2, 0.5 for format 3): dims in
        time, channel, z, y, x order, pixels under ``0``, ``1``...
    levels
        With ``ome=True``: pyramid levels, each half the last along y and x (mean of 2 x 2).
    scheduler
        A ``dask.distributed`` scheduler address or ``Client``: run the tasks there.
        By default, ``workers`` threads on this machine.
    workers
        Threads when running locally (default: one per CPU).
    overwrite
        Replace an earlier materialize output at ``out``; only what it wrote is removed.
    resume
        Finish an interrupted run with the same settings: finished tasks are kept,
        unfinished ones redone whole.
    verify
        Read the output back and compare it with the source chunk by chunk.
    progress
        Called as ``progress(phase, done_bytes, total_bytes)`` as tasks finish.
    storage_options
        fsspec options for ``out``.
    open_options
        More arguments for :func:`tiffstore.open` when ``source_or_store`` is not a store.

    Returns
    -------
    MaterializeSummary
        Bytes, seconds, chunks written and skipped, whether complete and verified.

    Raises
    ------
    MaterializeError
        ``out`` is not empty (and neither ``overwrite`` nor ``resume``), is not a
        materialize output, or was started with other settings.

    Examples
    --------
    >>> summary = tiffstore.materialize("raw/", "mydata.zarr")  # doctest: +SKIP
    >>> summary.complete, f"{summary.throughput / 1e6:.0f} MB/s"  # doctest: +SKIP
    (True, '640 MB/s')
    """
    from .store import TiffStore

    started = time.perf_counter()
    if isinstance(source_or_store, TiffStore):
        source = source_or_store
    else:
        from .api import open as open_store

        # Pages: a task reads just the planes its output chunks cover, whatever the
        # store's default chunks (which group small files) would be.
        source = open_store(source_or_store, **{"chunks": "page", **dict(open_options or {})})
    if zarr_format not in (2, 3):
        raise MaterializeError(f"zarr_format={zarr_format}: choose 2 or 3")
    if shards is not None and zarr_format != 3:
        raise MaterializeError("shards need zarr_format=3 (Zarr format 2 has no sharding)")
    if levels < 1 or (levels > 1 and not ome):
        raise MaterializeError(f"levels={levels}: a pyramid (levels > 1) needs ome=True")
    if overwrite and resume:
        raise MaterializeError("choose overwrite or resume, not both")
    codec = Codec(cname, clevel, shuffle)

    order, axes = _ome_axes(source.dims) if ome else (tuple(range(len(source.dims))), [])
    dims = tuple(source.dims[d] for d in order)
    image = "0" if ome else _image_name(source)
    arrays, spatial = _plan_arrays(image, dims, source, order, chunks, shards, levels)
    shape, out_chunks, out_shards = arrays[0].shape, arrays[0].chunks, arrays[0].shards

    output = Output(os.fspath(out), storage_options)
    job = Job(source, output, tuple(arrays), order, spatial, codec)
    settings = {
        "source": source.attrs["tiffstore"]["source"],
        "zarr_format": zarr_format,
        "dtype": job.dtype.str,
        "dims": list(dims),
        "order": list(order),
        "arrays": [
            {
                "path": a.path,
                "shape": list(a.shape),
                "chunks": list(a.chunks),
                "shards": None if a.shards is None else list(a.shards),
            }
            for a in arrays
        ],
        "codec": asdict(codec),
        "ome": ome,
    }
    coords = [] if ome else _coordinates(source)
    members = [a.path for a in arrays] + [c[0] for c in coords]
    marker = {"complete": False, "settings": settings, "members": members}

    store = output.store()
    found = _prepare_output(store, output, settings, overwrite=overwrite, resume=resume)
    root = _write_metadata(store, source, job, marker, codec, zarr_format, coords, axes, found)
    if found is not None and found.get("complete"):
        done = {t.record_key for a in arrays for t in job.tasks(a)}
    else:
        done = _journal(store)
    runner = _Runner(job, workers, scheduler)
    try:
        write_started = time.perf_counter()
        written, skipped, nbytes = _write_all(job, runner, done, progress)
        write_seconds = time.perf_counter() - write_started
        verified: bool | None = None
        mismatched: list[str] = []
        if verify:
            mismatched = _verify_all(job, runner, progress)
            verified = not mismatched
    finally:
        runner.close()
    if mismatched:
        _reopen_mismatched(job, store, root, marker, mismatched)
    else:
        _finish(store, root, marker, arrays)
    local = output.local
    return MaterializeSummary(
        path=output.url,
        zarr_format=zarr_format,
        shape=shape,
        chunks=out_chunks,
        shards=out_shards,
        bytes=nbytes,
        stored_bytes=None if local is None else _stored_bytes(local / image),
        seconds=time.perf_counter() - started,
        write_seconds=write_seconds,
        chunks_written=written,
        chunks_skipped=skipped,
        complete=not mismatched,
        verified=verified,
        mismatched=tuple(sorted(mismatched)),
    )


def _prepare_output(
    store: Any, output: Output, settings: dict[str, Any], *, overwrite: bool, resume: bool
) -> dict[str, Any] | None:
    """Check that ``output`` may be written; the marker of the run to resume, if any.

    An empty or absent output is fine. A non-empty one must be an earlier
    materialize output, and then is removed (``overwrite``) or resumed with the
    same settings (``resume``).
    """
    local = output.local
    if local is not None:
        _check_no_symlinks(local)
    if _is_empty(store, output):
        return None
    attrs = _root_attrs(store)
    found = None if attrs is None else _marker(attrs)
    if not (overwrite or resume):
        raise MaterializeError(
            f"{output.url} exists and is not empty. Pass overwrite=True (--overwrite) to "
            "replace an earlier materialize output, or resume=True (--resume) to finish one."
        )
    if found is None:
        raise MaterializeError(
            f"{output.url} is not empty and was not written by tiffstore materialize; "
            "refusing to touch it. Choose another output or empty it yourself."
        )
    if overwrite:
        _remove_ours(store, found)
        return None
    before = _flat_settings(found.get("settings", {}))
    now = _flat_settings(settings)
    diff = [f"{k}: {before.get(k)} then, {now.get(k)} now" for k in now if before.get(k) != now[k]]
    if diff:
        raise MaterializeError(
            f"{output.url} was started with other settings ({'; '.join(diff)}). Resume with "
            "the same options, or pass overwrite=True (--overwrite) to start again."
        )
    return found


def _flat_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as ``name -> value``, one entry per array field (``image chunks``)."""
    flat = {k: v for k, v in settings.items() if k != "arrays"}
    for array in settings.get("arrays", []):
        flat.update({f"{array['path']} {k}": v for k, v in array.items() if k != "path"})
    flat["levels"] = len(settings.get("arrays", []))
    return flat


def _write_metadata(
    store: Any,
    source: TiffStore,
    job: Job,
    marker: dict[str, Any],
    codec: Codec,
    zarr_format: int,
    coords: list[tuple[str, np.ndarray, dict[str, Any], Any]],
    axes: list[dict[str, str]],
    found: dict[str, Any] | None,
) -> Any:
    """The group (marked incomplete), the pixel arrays and the coordinates; kept on resume."""
    import zarr

    if found is None:
        attrs: dict[str, Any] = {"tiffstore": {"materialize": marker}}
        zarr.create_group(
            store,
            zarr_format=zarr_format,  # type: ignore[arg-type]
            attributes=attrs,
            overwrite=False,
        )
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    dims = marker["settings"]["dims"]
    dtype = job.dtype
    coord_names = [c[0] for c in coords if c[0] not in dims]
    fill = source.manifest.fill_value
    for plan in job.arrays:
        if plan.path in root:
            continue
        attributes: dict[str, Any] = {
            "tiffstore": {**source.attrs["tiffstore"], "materialize": {"complete": False}}
        }
        if coord_names:
            attributes["coordinates"] = " ".join(coord_names)
        if zarr_format == 2:
            attributes["_ARRAY_DIMENSIONS"] = list(dims)
        root.create_array(
            plan.path,
            shape=plan.shape,
            chunks=plan.chunks,
            shards=plan.shards,
            dtype=dtype,
            compressors=[codec.for_format(zarr_format, dtype.itemsize)],
            # Format 2: no fill value, so xarray does not mask real pixels equal to it
            # (chunks never written still read as 0).
            fill_value=None if zarr_format == 2 and fill == 0 else fill,
            dimension_names=dims if zarr_format == 3 else None,
            attributes=attributes,
        )
    for name, values, cattrs, cfill in coords:
        if name in root:
            continue
        if zarr_format == 3 and values.dtype.kind == "U":
            values = values.astype(object)  # format 3 stores text as variable-length strings
        carr = root.create_array(
            name,
            shape=values.shape,
            dtype=str if values.dtype == object else values.dtype,
            chunks=tuple(max(1, n) for n in values.shape),
            compressors=None,
            fill_value=cfill,
            dimension_names=tuple(cattrs.get("_ARRAY_DIMENSIONS", ()))
            if zarr_format == 3
            else None,
            attributes=(
                cattrs
                if zarr_format == 2
                else {k: v for k, v in cattrs.items() if k != "_ARRAY_DIMENSIONS"}
            ),
        )
        carr[...] = values
    if axes:
        factors = [2 if d in job.downsample_axes else 1 for d in range(len(dims))]
        # The voxel size from the files (or open(scale=...)) as the base scale, in units.
        scale = source.scale
        sizes = [scale[a["name"]][0] if a["name"] in scale else 1.0 for a in axes]
        axes = [dict(a, unit=scale[a["name"]][1]) if a["name"] in scale else a for a in axes]
        if zarr_format == 2:
            ms = _multiscales("image", axes, job.arrays, factors, "0.4", sizes)
            root.attrs.update({"multiscales": [ms]})
        else:
            ms = _multiscales("image", axes, job.arrays, factors, None, sizes)
            root.attrs.update({"ome": {"version": "0.5", "multiscales": [ms]}})
    return root


def _write_all(
    job: Job, runner: _Runner, done: set[str], progress: ProgressCallback | None
) -> tuple[int, int, int]:
    """Write every task not ``done``, level by level; chunks written, skipped, bytes."""
    itemsize = job.source.dtype.itemsize
    written = skipped = nbytes = 0
    for plan in job.arrays:
        tasks = job.tasks(plan)
        todo = [t for t in tasks if t.record_key not in done]
        skipped += sum(t.chunks for t in tasks if t.record_key in done)
        total = sum(_task_bytes(t, itemsize) for t in todo)
        phase = f"writing {plan.path}"
        level_bytes = 0
        if progress:
            progress(phase, 0, total)
        for task, n in runner.map(_write_task, todo):
            written += task.chunks
            level_bytes += n
            if progress:
                progress(phase, level_bytes, total)
        nbytes += level_bytes
        logger.info(
            "%s: %d task(s) written, %d found done", plan.path, len(todo), len(tasks) - len(todo)
        )
    return written, skipped, nbytes


def _verify_all(job: Job, runner: _Runner, progress: ProgressCallback | None) -> list[str]:
    """Keys of the image's chunks that differ from the source."""
    itemsize = job.source.dtype.itemsize
    tasks = job.tasks(job.arrays[0])
    total = sum(_task_bytes(t, itemsize) for t in tasks)
    checked = 0
    mismatched: list[str] = []
    if progress:
        progress("verifying", 0, total)
    for task, bad in runner.map(_verify_task, tasks):
        mismatched += bad
        checked += _task_bytes(task, itemsize)
        if progress:
            progress("verifying", checked, total)
    if mismatched:
        logger.error(
            "%d chunk(s) differ from the source: %s",
            len(mismatched),
            ", ".join(sorted(mismatched)[:20]),
        )
    return mismatched


def _reopen_mismatched(
    job: Job, store: Any, root: Any, marker: dict[str, Any], mismatched: Sequence[str]
) -> None:
    """Mark the output incomplete, with every task done but those holding a bad chunk.

    A later ``resume`` then rewrites just those tasks (and the pyramid above them).
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    image = job.arrays[0]
    bad = set(mismatched)
    record = default_buffer_prototype().buffer.from_bytes(b"{}")

    async def rewrite() -> None:
        for plan in job.arrays[1:]:
            await store.delete_dir(f"{JOURNAL}/{plan.path}")
        for task in job.tasks(image):
            if bad.intersection(job.chunk_keys(task)):
                with contextlib.suppress(FileNotFoundError):
                    await store.delete(task.record_key)
            else:
                await store.set(task.record_key, record)

    sync(rewrite())
    _mark(store, root, marker, job.arrays, complete=False)


def _plan_arrays(
    image: str,
    dims: tuple[str, ...],
    source: TiffStore,
    order: tuple[int, ...],
    chunks: Sequence[int | None] | None,
    shards: Sequence[int | None] | str | int | None,
    levels: int,
) -> tuple[list[ArrayPlan], tuple[int, ...]]:
    """The pixel arrays (the image and its pyramid levels) and the dims downsampled."""
    shape = tuple(source.shape[d] for d in order)
    itemsize = source.dtype.itemsize
    out_chunks = (
        default_chunks(dims, shape)
        if chunks is None
        else _resolve_shape([list(chunks)[d] for d in order], shape, "chunks")
    )
    if shards is None or isinstance(shards, (str, int)):
        out_shards = _resolve_shards(shards, out_chunks, shape, itemsize)
    else:
        out_shards = _resolve_shards([list(shards)[d] for d in order], out_chunks, shape, itemsize)
    spatial = tuple(d for d, name in enumerate(dims) if name in ("y", "x")) or (
        len(dims) - 2,
        len(dims) - 1,
    )
    arrays = [ArrayPlan(image, shape, out_chunks, out_shards, 0)]
    for level in range(1, levels):
        lshape = tuple(-(-n // 2) if d in spatial else n for d, n in enumerate(arrays[-1].shape))
        lchunks = tuple(min(c, n) for c, n in zip(out_chunks, lshape, strict=True))
        lshards = None
        if out_shards is not None:
            lshards = tuple(
                min(s, -(-n // c) * c) for s, c, n in zip(out_shards, lchunks, lshape, strict=True)
            )
        arrays.append(ArrayPlan(str(level), lshape, lchunks, lshards, level))
    return arrays, spatial


def _task_bytes(task: Task, itemsize: int) -> int:
    return math.prod(b - a for a, b in zip(task.start, task.stop, strict=True)) * itemsize


def _journal(store: Any) -> set[str]:
    """The keys of task records already written."""
    from zarr.core.sync import sync

    async def keys() -> set[str]:
        return {k async for k in store.list_prefix(JOURNAL + "/")}

    return sync(keys())


def _stored_bytes(path: Path) -> int | None:
    if not path.is_dir():
        return None
    return sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")
    )


def _mark(
    store: Any,
    root: Any,
    marker: dict[str, Any],
    arrays: Sequence[ArrayPlan],
    *,
    complete: bool,
) -> None:
    """Set the completion marker on the images, then the group, then consolidate."""
    import zarr

    for plan in arrays:
        arr = root[plan.path]
        ours = dict(arr.attrs["tiffstore"])
        ours["materialize"] = {"complete": complete}
        arr.attrs.update({"tiffstore": ours})
    root.attrs.update({"tiffstore": {"materialize": {**marker, "complete": complete}}})
    with warnings.catch_warnings():
        # Consolidated metadata is not yet in the format 3 spec; xarray still reads it.
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store, zarr_format=root.metadata.zarr_format)


def _finish(store: Any, root: Any, marker: dict[str, Any], arrays: Sequence[ArrayPlan]) -> None:
    """Mark the output complete (metadata consolidated), then drop the journal."""
    from zarr.core.sync import sync

    _mark(store, root, marker, arrays, complete=True)
    sync(store.delete_dir(JOURNAL))


def _remove_ours(store: Any, marker: Mapping[str, Any]) -> None:
    """Remove what an earlier materialize wrote: its arrays, root metadata and journal."""
    from zarr.core.sync import sync

    async def remove() -> None:
        for member in [*marker.get("members", []), JOURNAL]:
            if member and "/" not in member and not member.startswith(".."):
                await store.delete_dir(member)
        for key in ("zarr.json", ".zgroup", ".zattrs", ".zmetadata"):
            with contextlib.suppress(FileNotFoundError):
                await store.delete(key)

    sync(remove())

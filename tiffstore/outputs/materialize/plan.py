"""materialize's plan: the output arrays, their chunks and shards, and the tasks that write them.

Everything here is plain, picklable data computed from the source's shape and the
options, before anything is written: the codec (:class:`Codec`), each pixel array
(:class:`ArrayPlan`: the image, and the levels of an OME pyramid), and the work cut
into :class:`Task` s of whole output chunks (or shards).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numcodecs.blosc
from dask.utils import parse_bytes
from zarr.codecs import BloscCodec
from zarr.storage import FsspecStore, LocalStore

from tiffstore.errors import MaterializeError

__all__ = [
    "JOURNAL",
    "SHUFFLES",
    "TASK_BYTES",
    "ArrayPlan",
    "Codec",
    "Output",
    "Task",
    "check_memory",
    "cut_parts",
    "cut_tasks",
    "default_chunks",
    "downsample_bytes",
    "plan_arrays",
    "resolve_shape",
    "resolve_shards",
    "task_bytes",
    "worker_bytes",
]

#: Where task records live inside the output while it is being written.
JOURNAL = ".tiffstore-journal"
#: A task grows to cover whole source chunks (dim by dim) only while it stays under
#: this size: one task of the seed's data, 64 whole 1024 x 768 planes, is 96 MiB.
TASK_BYTES = 128 * 2**20
SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")
_SPATIAL_CHUNKS = {"x": 256, "y": 256, "z": 64}


@dataclass(frozen=True)
class Codec:
    """Blosc settings, made into the codec each Zarr format takes."""

    cname: str = "zstd"
    clevel: int = 3
    shuffle: str = "bitshuffle"

    def __post_init__(self) -> None:
        cnames = tuple(numcodecs.blosc.list_compressors())
        if self.cname not in cnames:
            raise MaterializeError(f"cname={self.cname!r}: choose one of {cnames}")
        if self.shuffle not in SHUFFLES:
            raise MaterializeError(f"shuffle={self.shuffle!r}: choose one of {SHUFFLES}")
        if not 0 <= self.clevel <= 9:
            raise MaterializeError(f"clevel={self.clevel}: choose 0 (none) to 9")

    def blosc(self) -> Any:
        """The numcodecs ``Blosc`` that encodes chunks (zarr's codecs wrap the same)."""
        return numcodecs.Blosc(self.cname, self.clevel, SHUFFLES.index(self.shuffle))

    def for_format(self, zarr_format: int, itemsize: int) -> Any:
        """The codec object ``zarr.create_array`` takes for ``zarr_format``."""
        if zarr_format == 2:
            return self.blosc()
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
        """The zarr store that writes the output."""
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
    """A size as bytes: an int, or text like ``1GB``, ``512MiB`` (dask's parse_bytes)."""
    if isinstance(text, int):
        return text
    try:
        return int(parse_bytes(text))
    except (ValueError, TypeError):
        raise MaterializeError(
            f"{text!r} is not a size: write like 1GB, 512MiB or 1000000"
        ) from None


def resolve_shape(spec: Sequence[int | None], shape: Sequence[int], what: str) -> tuple[int, ...]:
    if len(spec) != len(shape):
        raise MaterializeError(
            f"{what} {tuple(spec)} has {len(spec)} dims; the array has {len(shape)} {tuple(shape)}"
        )
    out = tuple(n if c is None or c < 0 else min(c, n) for c, n in zip(spec, shape, strict=True))
    if any(c == 0 for c, n in zip(out, shape, strict=True) if n):
        raise MaterializeError(f"{what} {tuple(spec)}: every size must be at least 1")
    return tuple(max(c, 1) for c in out)


def resolve_shards(
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


def _grown(
    unit: Sequence[int], shape: Sequence[int], source_chunks: Sequence[int] | None, itemsize: int
) -> list[int]:
    """``unit`` grown dim by dim to cover whole source chunks, while under ``TASK_BYTES``."""
    block = list(unit)
    if source_chunks is not None:
        # Innermost dims first (whole rows, then whole planes): a source chunk covered
        # along a dim is read once there, not once per output chunk across it.
        for d in reversed(range(len(block))):
            u, n = unit[d], shape[d]
            grown = min(-(-max(source_chunks[d], u) // u) * u, -(-n // u) * u)
            if math.prod(block) // block[d] * grown * itemsize <= TASK_BYTES:
                block[d] = grown
    return block


def _cut(
    path: str,
    start: Sequence[int],
    stop: Sequence[int],
    block: Sequence[int],
    chunks: Sequence[int],
) -> list[Task]:
    """The region ``start:stop`` cut into blocks of ``block`` (the last ones cut short)."""
    tasks = []
    extent = [b - a for a, b in zip(start, stop, strict=True)]
    for number, index in enumerate(_grid(extent, block)):
        lo = tuple(a + i * b for a, i, b in zip(start, index, block, strict=True))
        hi = tuple(min(s + b, e) for s, b, e in zip(lo, block, stop, strict=True))
        count = math.prod(-(-(e - s) // c) for s, e, c in zip(lo, hi, chunks, strict=True))
        tasks.append(Task(path, number, lo, hi, count))
    return tasks


def cut_tasks(plan: ArrayPlan, source_chunks: Sequence[int] | None, itemsize: int) -> list[Task]:
    """Cut an array into tasks of whole units, grown to cover a source chunk when small.

    A sharded array's task is one whole shard, whatever its size: it is written in
    :func:`cut_parts` pieces.
    """
    block = (
        list(plan.unit) if plan.shards else _grown(plan.unit, plan.shape, source_chunks, itemsize)
    )
    return _cut(plan.path, (0,) * len(plan.shape), plan.shape, block, plan.chunks)


def cut_parts(
    plan: ArrayPlan, task: Task, source_chunks: Sequence[int] | None, itemsize: int
) -> list[Task]:
    """The pieces a task is read and encoded in, one after the other: the task itself,
    or, for a shard, blocks of its chunks grown like tasks (at most ``TASK_BYTES``, or
    one chunk), so that a worker never holds a whole shard.
    """
    if plan.shards is None:
        return [task]
    block = _grown(plan.chunks, plan.shape, source_chunks, itemsize)
    return _cut(task.path, task.start, task.stop, block, plan.chunks)


def worker_bytes(plan: ArrayPlan, source_chunk_bytes: int, itemsize: int, local: bool) -> int:
    """The most one worker holds at once while writing ``plan``: the memory bound.

    Its part's pixels, in output-chunk order (at most ``TASK_BYTES``, or one output
    chunk where that is bigger); one source chunk as read; the part's encoded chunks
    until they are put (Blosc adds at most 16 bytes to a chunk), and one more being
    encoded. A shard is streamed to a local file chunk by chunk, so only its index
    (16 bytes a chunk, and a checksum) stays; an object store takes whole objects, so
    there the encoded shard is held until it is put. A pyramid level's worker also holds
    what :func:`downsample_bytes` says.
    """
    chunk = math.prod(plan.chunks) * itemsize
    part = max(TASK_BYTES, chunk)
    held = part + source_chunk_bytes + chunk + 16
    if plan.level:
        held += downsample_bytes(chunk, itemsize)
    if plan.shards is None:
        return held + part + 16 * -(-part // chunk)
    chunks_per_shard = math.prod(s // c for s, c in zip(plan.shards, plan.chunks, strict=True))
    held += 16 * chunks_per_shard + 4
    if not local:
        held += math.prod(plan.shards) * itemsize + 16 * chunks_per_shard
    return held


def downsample_bytes(chunk: int, itemsize: int) -> int:
    """What a pyramid level's worker holds to make one output chunk of ``chunk`` bytes.

    The level below's region (2 x 2 chunks: ``4 chunk``), its copy padded at an odd edge
    (``4 chunk`` more), and the mean of each 2 x 2 block in float64 (``8 chunk / itemsize``).
    A level's parts are one output chunk each.
    """
    return 8 * chunk + 8 * (chunk // itemsize)


def machine_memory() -> int | None:
    """The machine's physical memory in bytes, where the system says (POSIX)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(
    plans: Sequence[ArrayPlan],
    source_chunk_bytes: int,
    itemsize: int,
    local: bool,
    workers: int,
    memory: int | None,
) -> None:
    """Refuse a write whose workers would hold more than half of ``memory`` at once.

    Only shards put whole on an object store can: every other write is bounded by
    :func:`worker_bytes`, a few output chunks per worker.
    """
    if memory is None:
        return
    need = workers * max(worker_bytes(p, source_chunk_bytes, itemsize, local) for p in plans)
    if need > memory // 2:
        biggest = max(plans, key=lambda p: math.prod(p.shards or p.chunks))
        raise MaterializeError(
            f"{workers} workers would hold about {need / 2**30:.1f} GiB at once, more than "
            f"half of this machine's {memory / 2**30:.1f} GiB: "
            + (
                f"a shard of {biggest.shards} is held whole until it is put to the object store"
                if not local and biggest.shards is not None
                else f"chunks of {biggest.chunks} are that big"
            )
            + ". Use smaller shards= (or chunks=), or fewer workers=."
        )


def plan_arrays(
    image: str,
    dims: tuple[str, ...],
    source_shape: Sequence[int],
    itemsize: int,
    order: tuple[int, ...],
    chunks: Sequence[int | None] | None,
    shards: Sequence[int | None] | str | int | None,
    levels: int,
) -> tuple[list[ArrayPlan], tuple[int, ...]]:
    """The pixel arrays (the image and its pyramid levels) and the dims downsampled.

    ``source_shape`` is in the source's dim order; ``order`` the output's (dims
    ``dims``), as source dims.
    """
    shape = tuple(source_shape[d] for d in order)
    for name, given in (("chunks", chunks), ("shards", shards)):
        if given is not None and not isinstance(given, (str, int)) and len(given) != len(dims):
            raise MaterializeError(
                f"{name}={tuple(given)} has {len(given)} entries, but the array has "
                f"{len(dims)} dims {dims}: give one per dim (None or -1 for all of it)."
            )
    out_chunks = (
        default_chunks(dims, shape)
        if chunks is None
        else resolve_shape([list(chunks)[d] for d in order], shape, "chunks")
    )
    if shards is None or isinstance(shards, (str, int)):
        out_shards = resolve_shards(shards, out_chunks, shape, itemsize)
    else:
        out_shards = resolve_shards([list(shards)[d] for d in order], out_chunks, shape, itemsize)
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


def task_bytes(task: Task, itemsize: int) -> int:
    return math.prod(b - a for a, b in zip(task.start, task.stop, strict=True)) * itemsize

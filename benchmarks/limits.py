"""What the machine can do: the limits every tool's figure is divided by.

- copy limit: every byte of the files ``preadv``-ed into one preallocated array,
  one thread per core (the full-read case writes into such an array too);
- read+sum limit: each file ``preadv``-ed into a buffer each thread reuses, and its
  pixels summed with NumPy there, one thread per core. A sum needs no array the size
  of the data, so its limit keeps none: written into one, every byte would make a
  round trip to memory that no reader has to pay (that made this limit 1.5x too low
  before 2026-12-06);
- one plane: ``pread`` of exactly that plane's bytes from an open file.

The open limit (``os.scandir`` + ``stat``) is in :mod:`open_many`; the decode limit
in :mod:`compressed`.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .data import Context, Dataset, cores, warm
from .harness import Row, Target, time_best, time_each, timed_row

FULL = "full read into a preallocated array"
SUM = "sum of every pixel"
PLANE = "one plane (c, s, z)"

COPY_LIMIT = "full/copy_limit"
SUM_LIMIT = "sum/read_sum_limit"
PLANE_LIMIT = "plane/pread"

TARGETS: list[Target] = []


def pread_into(path: Path, view: memoryview, offset: int = 0) -> None:
    """Fill ``view`` with the file's bytes from ``offset``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        got = 0
        while got < view.nbytes:
            n = os.preadv(fd, [view[got:]], offset + got)
            if n == 0:
                raise EOFError(f"{path}: short read")
            got += n
    finally:
        os.close(fd)


class FileReader:
    """Reads whole files, one thread per core: into slots of one preallocated array of
    all of them (``whole=True``, the copy limit), or each into a buffer its thread
    reuses (the read+sum limit)."""

    def __init__(self, ds: Dataset, *, whole: bool = False) -> None:
        self.ds = ds
        self.sizes = [f.stat().st_size for f in ds.files]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int).tolist()
        # Touched when made: no page faults are timed.
        self.buffer = np.zeros(self.starts[-1], dtype=np.uint8) if whole else None
        self.pool = ThreadPoolExecutor(cores())
        self.local = threading.local()

    def read(self, i: int) -> memoryview:
        if self.buffer is None:
            raise RuntimeError("FileReader(whole=False) keeps no array of every file")
        view = self.buffer[self.starts[i] : self.starts[i + 1]].data
        pread_into(self.ds.files[i], view)
        return view

    def read_sum(self, i: int) -> int:
        """File ``i`` into this thread's buffer, and the sum of its pixels."""
        size = self.sizes[i]
        own = getattr(self.local, "buffer", None)
        if own is None:
            own = self.local.buffer = np.ones(max(self.sizes), dtype=np.uint8)  # touched
        pread_into(self.ds.files[i], own[:size].data)
        count = int(np.prod(self.ds.shape))
        offset = self.ds.data_offset or 0
        pixels = np.frombuffer(own, dtype=self.ds.dtype, count=count, offset=offset)
        return int(pixels.sum())

    def copy_all(self) -> None:
        list(self.pool.map(self.read, range(len(self.ds.files))))

    def sum_all(self) -> int:
        return sum(self.pool.map(self.read_sum, range(len(self.ds.files))))

    def close(self) -> None:
        self.pool.shutdown()


def copy_limit(ctx: Context, ds: Dataset, key: str = COPY_LIMIT, case: str = FULL) -> Row:
    """Every byte of the files into one preallocated array."""
    reader = FileReader(ds, whole=True)
    try:
        t = time_best(reader.copy_all, ctx.repeats)
    finally:
        reader.close()
    return timed_row(
        key,
        case,
        f"copy limit: preadv, {cores()} threads",
        "limit",
        t,
        nbytes=ds.file_bytes,
        note=f"{ds.file_bytes / 1e9:.2f} GB of files",
    )


def read_sum_limit(ctx: Context, ds: Dataset, key: str = SUM_LIMIT, case: str = SUM) -> Row:
    """Each file into a buffer its thread reuses, and a NumPy sum of its pixels there."""
    reader = FileReader(ds)
    try:
        t = time_best(reader.sum_all, ctx.repeats)
    finally:
        reader.close()
    return timed_row(
        key,
        case,
        f"read+sum limit: preadv into a buffer per thread + np.sum, {cores()} threads",
        "limit",
        t,
        nbytes=ds.nbytes,
    )


def plane_limit(ctx: Context, ds: Dataset) -> Row:
    """``pread`` of exactly one plane's bytes, file already open, into a preallocated buffer."""
    planes = ds.planes(ctx.planes)
    fds = {(c, s): os.open(ds.file(c, s), os.O_RDONLY) for c, s, _ in planes}
    buf = np.zeros(ds.plane_nbytes, dtype=np.uint8)
    view = buf.data
    assert ds.data_offset is not None
    offset = ds.data_offset

    def read(plane: tuple[int, int, int]) -> None:
        c, s, z = plane
        os.preadv(fds[c, s], [view], offset + z * ds.plane_nbytes)

    try:
        t = time_each(read, planes, ctx.repeats * 4)
    finally:
        for fd in fds.values():
            os.close(fd)
    return timed_row(
        PLANE_LIMIT,
        PLANE,
        "pread of the plane's bytes",
        "limit",
        t,
        unit="ms",
        note=f"{ds.plane_nbytes / 2**10:.0f} KiB, mean of {len(planes)} planes",
    )


def run(ctx: Context) -> list[Row]:
    """The limits for the uncompressed dataset."""
    ds = ctx.dataset()
    warm(ds.files)
    return [copy_limit(ctx, ds), read_sum_limit(ctx, ds), plane_limit(ctx, ds)]

"""What the machine can do: the limits every tool's figure is divided by.

- copy limit: every byte of the files ``preadv``-ed into one preallocated array,
  one thread per core;
- read+sum limit: the same, plus a numpy sum of each file's pixels in the same threads;
- one plane: ``pread`` of exactly that plane's bytes from an open file.

The open limit (``os.scandir`` + ``stat``) is in :mod:`open_many`; the decode limit
in :mod:`compressed`.
"""

from __future__ import annotations

import os
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
    """Reads whole files into slots of one preallocated buffer, one thread per core."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.sizes = [f.stat().st_size for f in ds.files]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int).tolist()
        self.buffer = np.zeros(self.starts[-1], dtype=np.uint8)  # touched: no page faults timed
        self.pool = ThreadPoolExecutor(cores())

    def read(self, i: int) -> memoryview:
        view = self.buffer[self.starts[i] : self.starts[i + 1]].data
        pread_into(self.ds.files[i], view)
        return view

    def read_sum(self, i: int) -> int:
        self.read(i)
        offset = self.starts[i] + (self.ds.data_offset or 0)
        count = int(np.prod(self.ds.shape))
        pixels = np.frombuffer(self.buffer, dtype=self.ds.dtype, count=count, offset=offset)
        return int(pixels.sum())

    def copy_all(self) -> None:
        list(self.pool.map(self.read, range(len(self.ds.files))))

    def sum_all(self) -> int:
        return sum(self.pool.map(self.read_sum, range(len(self.ds.files))))

    def close(self) -> None:
        self.pool.shutdown()


def copy_limit(ctx: Context, ds: Dataset, key: str = COPY_LIMIT, case: str = FULL) -> Row:
    """Every byte of the files into one preallocated array."""
    reader = FileReader(ds)
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
    """The copy limit plus a numpy sum of each file's pixels, in the same threads."""
    reader = FileReader(ds)
    try:
        t = time_best(reader.sum_all, ctx.repeats)
    finally:
        reader.close()
    return timed_row(
        key,
        case,
        f"read+sum limit: preadv + np.sum, {cores()} threads",
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

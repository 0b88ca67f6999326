"""The data every benchmark reads: seed-named stacks written by tiffstore's sample generator.

Datasets are made on first use in a temporary folder, kept for the run, and
removed with it. Before each measurement group the page cache is warmed the
same way for every tool (:func:`warm`): every byte of every file read once.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from tiffstore.sample import sample_name, write_sample

#: Named groups a regex-based peer uses to place each file (tifffile's TiffSequence).
NAME_REGEX = r"_ch(?P<C>\d+)_CAM1_stack(?P<T>\d+)_"


def cores() -> int:
    """The CPUs this process may run on: the thread count of every limit."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Dataset:
    """A folder of ``channels x stacks`` TIFF files of one ``(Z, Y, X)`` shape."""

    path: Path
    files: tuple[Path, ...]  # in (channel, stack) order
    channels: int
    stacks: int
    shape: tuple[int, ...]
    dtype: str
    compression: str | None
    data_offset: int | None  # first pixel byte of an uncompressed file

    @property
    def array_shape(self) -> tuple[int, ...]:
        return (self.channels, self.stacks, *self.shape)

    @property
    def nbytes(self) -> int:
        """Pixel bytes of the whole array."""
        return math.prod(self.array_shape) * np.dtype(self.dtype).itemsize

    @property
    def plane_nbytes(self) -> int:
        return math.prod(self.shape[1:]) * np.dtype(self.dtype).itemsize

    @property
    def file_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def file(self, c: int, s: int) -> Path:
        return self.files[c * self.stacks + s]

    def describe(self) -> str:
        comp = f", {self.compression}" if self.compression else ""
        return (
            f"{self.channels} ch x {self.stacks} stacks x {self.shape} {self.dtype}{comp}, "
            f"{self.nbytes / 1e9:.2f} GB in {len(self.files)} files"
        )

    def planes(self, n: int, seed: int = 0) -> list[tuple[int, int, int]]:
        """``n`` distinct ``(c, s, z)`` planes, the same for every tool."""
        rng = np.random.default_rng(seed)
        total = self.channels * self.stacks * self.shape[0]
        flat = rng.choice(total, size=min(n, total), replace=False)
        dims = (self.channels, self.stacks, self.shape[0])
        return [tuple(int(i) for i in np.unravel_index(k, dims)) for k in flat]  # type: ignore[misc]


def stacks_for(size_gb: float, channels: int, shape: tuple[int, ...], dtype: str) -> int:
    """How many stacks per channel make about ``size_gb`` gigabytes."""
    per_file = math.prod(shape) * np.dtype(dtype).itemsize
    return max(1, round(size_gb * 1e9 / (channels * per_file)))


def write_stacks(
    path: Path,
    channels: int,
    stacks: int,
    shape: tuple[int, ...],
    dtype: str = "uint16",
    compression: str | None = None,
) -> Dataset:
    """Write a sample acquisition with :func:`tiffstore.sample.write_sample`."""
    paths = write_sample(
        path,
        channels=channels,
        stacks=stacks,
        shape=shape,
        dtype=dtype,
        compression=compression,
        workers=cores(),
    )
    offset = None
    if compression is None:
        with tifffile.TiffFile(paths[0]) as tif:
            offset = tif.series[0].dataoffset
    return Dataset(path, tuple(paths), channels, stacks, shape, dtype, compression, offset)


def write_many(
    path: Path, n: int, channels: int = 4, shape: tuple[int, ...] = (4, 32, 32)
) -> Dataset:
    """``n`` small uniform files: one TIFF written with tifffile, its bytes copied to the rest.

    Writing through tifffile costs a millisecond a file; copying bytes is what
    makes 100,000 files affordable.
    """
    path.mkdir(parents=True, exist_ok=True)
    stacks = -(-n // channels)
    first = path / sample_name(0, 0)
    tifffile.imwrite(first, np.full(shape, 100, dtype="uint16"), photometric="minisblack")
    data = first.read_bytes()
    names = [sample_name(c, s) for c in range(channels) for s in range(stacks)][:n]

    def copy(part: list[str]) -> None:
        for name in part:
            with open(path / name, "wb") as fh:
                fh.write(data)

    parts = [names[i :: cores() * 2] for i in range(cores() * 2)]
    with ThreadPoolExecutor(cores() * 2) as pool:
        list(pool.map(copy, parts))
    files = tuple(path / name for name in names)
    # When n is not a multiple of channels, the last channel is short: missing cells.
    return Dataset(path, files, channels, stacks, shape, "uint16", None, None)


def write_sparse(
    path: Path, channels: int, stacks: int, shape: tuple[int, ...], dtype: str = "uint16"
) -> Dataset:
    """``channels x stacks`` uncompressed TIFFs whose pixels are never written: sparse files.

    The first file is made by ``tifffile.memmap`` (the header and first IFD, then a hole
    where the pixels go, then the other pages' IFDs); the others copy its written bytes
    around the same hole. Each file takes the few kB of its IFDs on disk whatever its
    apparent size, and the pixels read as zeros. Raises ``OSError`` where the file system
    does not keep the hole (it would write the whole apparent size).
    """
    path.mkdir(parents=True, exist_ok=True)
    first = path / sample_name(0, 0)
    tifffile.memmap(first, shape=shape, dtype=dtype, photometric="minisblack")
    size = first.stat().st_size
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if first.stat().st_blocks * 512 > nbytes // 2:
        first.unlink()
        raise OSError(f"{path}: this file system wrote the pixels of a sparse file")
    with tifffile.TiffFile(first) as tif:
        offset = tif.series[0].dataoffset
    assert offset is not None
    with open(first, "rb") as fh:
        head = fh.read(offset)
        fh.seek(offset + nbytes)
        tail = fh.read()
    names = [sample_name(c, s) for c in range(channels) for s in range(stacks)]
    for name in names[1:]:
        with open(path / name, "wb") as fh:
            fh.write(head)
            fh.seek(offset + nbytes)
            fh.write(tail)
            fh.truncate(size)
    files = tuple(path / name for name in names)
    return Dataset(path, files, channels, stacks, shape, dtype, None, offset)


def disk_bytes(files: tuple[Path, ...] | list[Path]) -> int:
    """Bytes the files take on disk (their blocks), not their apparent size."""
    return sum(f.stat().st_blocks * 512 for f in files)


def warm(files: tuple[Path, ...] | list[Path]) -> None:
    """Read every byte of every file once, so every tool starts from the same page cache."""

    def read(part: list[Path]) -> None:
        buf = bytearray(8 * 2**20)
        view = memoryview(buf)
        for f in part:
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(view):
                    pass

    parts = [list(files)[i :: cores()] for i in range(cores())]
    with ThreadPoolExecutor(cores()) as pool:
        list(pool.map(read, parts))


@dataclass
class Context:
    """Settings of one run and the datasets it has made so far."""

    workdir: Path
    size_gb: float = 1.0
    channels: int = 3
    shape: tuple[int, ...] = (64, 512, 512)
    dtype: str = "uint16"
    compression: str = "zlib"
    compressed_gb: float = 0.4
    scales: tuple[float, ...] = (0.25, 0.5, 1.0)
    many: tuple[int, ...] = (1_000, 10_000, 100_000)
    small_files: int = 10_000
    planes: int = 32
    repeats: int = 5
    quick: bool = False
    log: Any = print
    _datasets: dict[str, Dataset] = field(default_factory=dict)

    def dataset(self, name: str = "raw", size_gb: float | None = None) -> Dataset:
        """The uncompressed stacks (``"raw"``, at ``size_gb``) or ``"compressed"``."""
        compression = self.compression if name == "compressed" else None
        if size_gb is None:
            size_gb = self.compressed_gb if compression else self.size_gb
        stacks = stacks_for(size_gb, self.channels, self.shape, self.dtype)
        key = f"{name}-{stacks}"
        if key not in self._datasets:
            folder = self.workdir / re.sub(r"\W", "_", key)
            self.log(f"writing {name} data: {self.channels} x {stacks} x {self.shape} ...")
            self._datasets[key] = write_stacks(
                folder, self.channels, stacks, self.shape, self.dtype, compression
            )
        return self._datasets[key]

    def small(self, n: int) -> Dataset:
        """``n`` files of ``(2, 32, 32)`` uint16 (4 KiB), for the many-small-files read."""
        key = f"small-{n}"
        if key not in self._datasets:
            self.log(f"writing {n:,} files of (2, 32, 32) ...")
            self._datasets[key] = write_many(self.workdir / key, n, shape=(2, 32, 32))
        return self._datasets[key]

    def _once(self, key: str, message: str, make: Callable[[Path], Dataset]) -> Dataset:
        """The dataset ``key``, written into the work folder by ``make`` on first use."""
        if key not in self._datasets:
            self.log(message)
            self._datasets[key] = make(self.workdir / key)
        return self._datasets[key]

    def many_files(self, n: int) -> Dataset:
        """``n`` small uniform files, for the open benchmarks."""
        return self._once(
            f"many-{n}", f"writing {n:,} small files ...", lambda path: write_many(path, n)
        )

    def acquisition(self, name: str, channels: int, stacks: int, shape: tuple[int, ...]) -> Dataset:
        """``channels x stacks`` uncompressed sample stacks of ``shape``, written once."""
        return self._once(
            f"{name}-{channels}x{stacks}x{'x'.join(map(str, shape))}",
            f"writing {name} data: {channels} x {stacks} x {shape} ...",
            lambda path: write_stacks(path, channels, stacks, shape, self.dtype),
        )

    def sparse(self, name: str, channels: int, stacks: int, shape: tuple[int, ...]) -> Dataset:
        """``channels x stacks`` sparse files of ``shape`` (see :func:`write_sparse`)."""
        return self._once(
            f"{name}-{channels}x{stacks}x{'x'.join(map(str, shape))}",
            f"writing {name} sparse files: {channels} x {stacks} x {shape} ...",
            lambda path: write_sparse(path, channels, stacks, shape, self.dtype),
        )

    def drop(self, ds: Dataset) -> None:
        """Delete a dataset that no later group needs (100,000 files are slow to keep)."""
        for key, value in list(self._datasets.items()):
            if value is ds:
                del self._datasets[key]
        shutil.rmtree(ds.path, ignore_errors=True)

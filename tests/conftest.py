"""Fixtures: real TIFF files written by tifffile into temporary folders."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tiffstore.sample import sample_name, write_sample


def stack_files(
    directory: Path,
    channels: int,
    stacks: int,
    shape: tuple[int, ...],
    missing: Iterable[tuple[int, int]] = (),
    fill: int | float = 0,
) -> np.ndarray:
    """The reference array built file by file with tifffile (fill where a file is missing)."""
    missing = set(missing)
    first = next(
        tifffile.imread(directory / sample_name(c, s))
        for c in range(channels)
        for s in range(stacks)
        if (c, s) not in missing
    )
    ref = np.full((channels, stacks, *shape), fill, dtype=first.dtype)
    for c in range(channels):
        for s in range(stacks):
            if (c, s) not in missing:
                ref[c, s] = tifffile.imread(directory / sample_name(c, s))
    return ref


@pytest.fixture
def make_sample(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Write a seed-named acquisition and return its folder and the reference array."""
    counter = iter(range(1000))

    def make(
        channels: int = 3,
        stacks: int = 4,
        shape: tuple[int, ...] = (6, 32, 24),
        dtype: str = "uint16",
        missing: Iterable[tuple[int, int]] = (),
        **options: object,
    ) -> tuple[Path, np.ndarray]:
        directory = tmp_path / f"raw{next(counter)}"
        missing = list(missing)
        write_sample(
            directory,
            channels=channels,
            stacks=stacks,
            shape=shape,
            dtype=dtype,
            missing=missing,
            **options,  # type: ignore[arg-type]
        )
        return directory, stack_files(directory, channels, stacks, shape, missing)

    return make


@pytest.fixture
def sample_dir(make_sample: Callable[..., tuple[Path, np.ndarray]]) -> tuple[Path, np.ndarray]:
    """3 channels x 4 stacks of (6, 32, 24) uint16, with channel 1's stack 2 missing."""
    return make_sample(missing=[(1, 2)])


@pytest.fixture
def hyperstacks(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """3 ImageJ hyperstacks ``cells_t{t}.tif`` of (Z=4, C=2, 16, 12) uint16: channels inside."""
    ref = np.random.default_rng(1).integers(100, 4000, size=(3, 4, 2, 16, 12), dtype=np.uint16)
    directory = tmp_path / "hyperstacks"
    directory.mkdir()
    for t in range(3):
        tifffile.imwrite(
            directory / f"cells_t{t}.tif", ref[t], imagej=True, metadata={"axes": "ZCYX"}
        )
    return directory, ref

"""Realistic light-sheet sample data, for the demo, the tests and the benchmarks.

Files are named as a light-sheet microscope names them::

    ex6-2_CamA_ch{c}_CAM1_stack{s:04d}_{wave}nm_{rel:07d}msec_{abs:010d}msecAbs_000x_000y_000z_0000t.tif

and hold (Z, Y, X) stacks of a camera offset, bright blobs (nuclei) that drift
and bleach a little from stack to stack, and camera noise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

__all__ = ["SAMPLE_NAME", "WAVELENGTHS", "sample_name", "sample_volume", "write_sample"]

logger = logging.getLogger(__name__)

SAMPLE_NAME = (
    "ex6-2_CamA_ch{c}_CAM1_stack{s:04d}_{wave}nm_{rel:07d}msec_{abs:010d}msecAbs"
    "_000x_000y_000z_0000t.tif"
)
WAVELENGTHS = (488, 560, 642, 405, 730)
CAMERA_OFFSET = 100
STACK_INTERVAL_MS = 10_123
CHANNEL_DELAY_MS = 1_011
START_ABS_MS = 1_291_795


def sample_name(channel: int, stack: int) -> str:
    """The file name of one (channel, stack) of the sample acquisition."""
    rel = stack * STACK_INTERVAL_MS + channel * CHANNEL_DELAY_MS
    return SAMPLE_NAME.format(
        c=channel,
        s=stack,
        wave=WAVELENGTHS[channel % len(WAVELENGTHS)],
        rel=rel,
        abs=START_ABS_MS + rel,
    )


def _blobs(shape: tuple[int, ...], rng: np.random.Generator, n: int) -> np.ndarray:
    """A float32 volume of ``n`` Gaussian blobs, rendered separably per blob."""
    vol = np.zeros(shape, dtype=np.float32)
    axes = [np.arange(s, dtype=np.float32) for s in shape]
    for _ in range(n):
        center = [rng.uniform(0, s) for s in shape]
        sigma = [max(1.0, rng.uniform(0.02, 0.06) * s) for s in shape]
        profiles = [
            np.exp(-0.5 * ((a - c) / sg) ** 2) for a, c, sg in zip(axes, center, sigma, strict=True)
        ]
        blob = profiles[0]
        for p in profiles[1:]:
            blob = np.multiply.outer(blob, p)
        vol += blob * rng.uniform(0.3, 1.0)
    return vol


def sample_volume(
    channel: int,
    stack: int,
    shape: Sequence[int] = (16, 128, 96),
    dtype: Any = "uint16",
    seed: int = 0,
    _base: np.ndarray | None = None,
) -> np.ndarray:
    """The pixels of one (channel, stack) file: offset + drifting, bleaching blobs + noise."""
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    base = _base if _base is not None else _blobs(shape, np.random.default_rng((seed, channel)), 12)
    rng = np.random.default_rng((seed, channel, stack))
    drift = stack % max(shape[-1] // 8, 1)
    signal = np.roll(base, drift, axis=-1) * (0.98**stack)
    if dtype.kind == "f":
        jitter = rng.standard_normal(shape, dtype=np.float32) * 0.01
        return (signal + jitter).astype(dtype)
    top = 2000.0 if dtype.itemsize > 1 else 120.0
    offset = CAMERA_OFFSET if dtype.itemsize > 1 else 10
    noise = rng.integers(0, 16 if dtype.itemsize > 1 else 4, size=shape, dtype=np.uint16)
    out = signal * np.float32(top)
    out += offset
    out += noise
    info = np.iinfo(dtype)
    return np.clip(out, info.min, info.max).astype(dtype)


def write_sample(
    directory: str | Path,
    *,
    channels: int = 3,
    stacks: int = 4,
    shape: Sequence[int] = (16, 128, 96),
    dtype: Any = "uint16",
    compression: str | None = None,
    missing: Iterable[tuple[int, int]] = (),
    seed: int = 0,
    workers: int = 4,
    **tiff_options: Any,
) -> list[Path]:
    """Write a light-sheet-like acquisition of ``channels x stacks`` TIFF stacks.

    Parameters
    ----------
    directory
        Folder to write into (created if needed).
    channels, stacks
        Grid size; channel ``c`` has wavelength ``WAVELENGTHS[c]``.
    shape
        Shape of each file's stack, ``(Z, Y, X)`` (or any shape tifffile writes).
    dtype
        Pixel type.
    compression
        tifffile compression (``"zlib"``, ``"lzw"``, ``"zstd"``...), or ``None``.
    missing
        ``(channel, stack)`` pairs to leave out, as when an acquisition was cut short.
    seed
        Random seed: the same arguments always write the same pixels.
    workers
        Threads writing files.
    **tiff_options
        More arguments for :func:`tifffile.imwrite` (``tile=``, ``rowsperstrip=``...).

    Returns
    -------
    list of Path
        The files written, in (channel, stack) order.

    Examples
    --------
    >>> paths = write_sample(tmp_path, channels=2, stacks=3)  # doctest: +SKIP
    """
    tiff_options.setdefault("photometric", "minisblack")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    skip = set(missing)
    shape = tuple(shape)
    bases = {c: _blobs(shape, np.random.default_rng((seed, c)), 12) for c in range(channels)}
    jobs = [(c, s) for c in range(channels) for s in range(stacks) if (c, s) not in skip]

    def write(job: tuple[int, int]) -> Path:
        c, s = job
        path = directory / sample_name(c, s)
        data = sample_volume(c, s, shape, dtype, seed, _base=bases[c])
        tifffile.imwrite(path, data, compression=compression, **tiff_options)
        return path

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        paths = list(pool.map(write, jobs))
    logger.info("wrote %d sample files to %s", len(paths), directory)
    return paths

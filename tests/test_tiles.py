"""Tile fields in names: kept as axes by default, stitched side by side on request."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tiffstore.errors import NamingError

TILE = (5, 16, 12)  # z, y, x of each tile file


def _write_tiles(directory: Path, positions_x, positions_y, channels: int = 2) -> np.ndarray:
    """A grid of non-overlapping tiles cut from one random volume per channel."""
    ny, nx = len(positions_y), len(positions_x)
    rng = np.random.default_rng(1)
    full = rng.integers(0, 4000, (channels, TILE[0], ny * TILE[1], nx * TILE[2]), dtype=np.uint16)
    for c in range(channels):
        for iy, py in enumerate(positions_y):
            for ix, px in enumerate(positions_x):
                tile = full[
                    c, :, iy * TILE[1] : (iy + 1) * TILE[1], ix * TILE[2] : (ix + 1) * TILE[2]
                ]
                name = f"scan_ch{c}_{px:04d}x_{py:04d}y_000z.tif"
                tifffile.imwrite(directory / name, tile, photometric="minisblack")
    return full


def test_tiles_are_kept_as_axes_by_default(tmp_path):
    _write_tiles(tmp_path, [0, 1, 2], [0, 1])
    store = tiffstore.open(tmp_path)
    assert store.dims == ("ch", "tile_x", "tile_y", "z", "y", "x")
    assert store.shape == (2, 3, 2, *TILE)


@pytest.mark.parametrize("chunks", [None, "page", (1, 2, 8, 6), (1, 5, 16, 4)])
def test_stitch_places_tiles_side_by_side(tmp_path, chunks):
    full = _write_tiles(tmp_path, [0, 1, 2], [0, 1])
    store = tiffstore.open(tmp_path, tiles="stitch", chunks=chunks)
    assert store.dims == ("ch", "z", "y", "x")
    assert store.shape == full.shape
    np.testing.assert_array_equal(da.from_zarr(store).compute(), full)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], full)
    np.testing.assert_array_equal(store.to_dask().compute(), full)
    tiles = store.attrs["tiffstore"]["tiles"]
    assert [t["into"] for t in tiles] == ["x", "y"]


def test_stitch_takes_pixel_offsets_that_step_by_the_tile_size(tmp_path):
    full = _write_tiles(tmp_path, [0, 12, 24], [0, 16], channels=1)
    store = tiffstore.open(tmp_path, tiles="stitch")
    np.testing.assert_array_equal(da.from_zarr(store).compute(), full[0])


def test_stitch_fills_a_missing_tile(tmp_path):
    full = _write_tiles(tmp_path, [0, 1, 2], [0, 1])
    (tmp_path / "scan_ch1_0002x_0001y_000z.tif").unlink()
    store = tiffstore.open(tmp_path, tiles="stitch", fill_value=9)
    expected = full.copy()
    expected[1, :, 16:, 24:] = 9
    np.testing.assert_array_equal(da.from_zarr(store).compute(), expected)
    assert store.attrs["tiffstore"]["missing"] == [{"ch": 1, "tile_x": 2, "tile_y": 1}]


def test_stitch_refuses_overlapping_tiles(tmp_path):
    _write_tiles(tmp_path, [0, 10, 20], [0, 16], channels=1)  # tiles are 12 wide
    with pytest.raises(NamingError, match=r"step by \[10\].*12 pixels.*overlap"):
        tiffstore.open(tmp_path, tiles="stitch")
    assert tiffstore.open(tmp_path).dims[:2] == ("tile_x", "tile_y")  # keep still works


def test_stitch_refuses_chunks_straddling_tiles(tmp_path):
    _write_tiles(tmp_path, [0, 1], [0, 1], channels=1)
    with pytest.raises(ValueError, match="divide the tile size"):
        tiffstore.open(tmp_path, tiles="stitch", chunks=(5, 16, 5))


def test_unknown_tiles_mode(tmp_path):
    _write_tiles(tmp_path, [0, 1], [0, 1], channels=1)
    with pytest.raises(ValueError, match="tiles='mosaic'"):
        tiffstore.open(tmp_path, tiles="mosaic")

"""Physical pixel size from TIFF metadata, the scale= override, and its place in the views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import xarray as xr

import tiffstore
from tiffstore.tiff.scale import VoxelSize, read_voxel_size


def _voxel(path: Path) -> VoxelSize:
    with tifffile.TiffFile(path) as tif:
        return read_voxel_size(tif)


def test_imagej_spacing_unit_and_resolution(tmp_path):
    path = tmp_path / "ij.tif"
    data = np.zeros((4, 16, 16), np.uint16)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.1, 1 / 0.2),
        metadata={"spacing": 2.0, "unit": "um"},
    )
    v = _voxel(path)
    assert v.z == (2.0, "micrometer")
    assert v.y == pytest.approx((0.2, "micrometer")) and v.x == pytest.approx((0.1, "micrometer"))


def test_ome_physical_size(tmp_path):
    path = tmp_path / "a.ome.tif"
    metadata = {
        "axes": "ZYX",
        "PhysicalSizeX": 0.3,
        "PhysicalSizeY": 0.25,
        "PhysicalSizeZ": 1.5,
        "PhysicalSizeZUnit": "nm",
    }
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint8), ome=True, metadata=metadata)
    assert _voxel(path) == VoxelSize(
        z=(1.5, "nanometer"), y=(0.25, "micrometer"), x=(0.3, "micrometer")
    )


def test_resolution_tags_in_centimeters_and_no_unit(tmp_path):
    path = tmp_path / "res.tif"
    tifffile.imwrite(
        path, np.zeros((8, 8), np.uint8), resolution=(5000, 2500), resolutionunit="CENTIMETER"
    )
    assert _voxel(path) == VoxelSize(y=(4.0, "micrometer"), x=(2.0, "micrometer"))
    # Resolution without a unit says nothing physical.
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), resolution=(3, 3), resolutionunit="NONE")
    assert not _voxel(path)


def _imagej_stacks(directory: Path, n: int = 3) -> np.ndarray:
    directory.mkdir()
    data = np.arange(n * 4 * 6 * 5, dtype=np.uint16).reshape(n, 4, 6, 5)
    for t in range(n):
        tifffile.imwrite(
            directory / f"cell_t{t}.tif",
            data[t],
            imagej=True,
            resolution=(1 / 0.5, 1 / 0.5),
            metadata={"spacing": 2.0, "unit": "micron", "axes": "ZYX"},
        )
    return data


def test_store_scale_attrs_and_xarray_coordinates(tmp_path):
    data = _imagej_stacks(tmp_path / "raw")
    store = tiffstore.open(tmp_path / "raw")
    assert store.dims == ("t", "z", "y", "x")
    assert store.scale == {
        "z": (2.0, "micrometer"),
        "y": (0.5, "micrometer"),
        "x": (0.5, "micrometer"),
    }
    assert store.attrs["tiffstore"]["scale"]["z"] == {"size": 2.0, "units": "micrometer"}
    ds = xr.open_zarr(store)
    np.testing.assert_allclose(ds.z.values, [0, 2, 4, 6])
    np.testing.assert_allclose(ds.x.values, np.arange(5) * 0.5)
    assert ds.y.attrs["units"] == "micrometer"
    np.testing.assert_array_equal(ds.image.values, data)
    np.testing.assert_array_equal(ds.image.sel(z=4.0).values, data[:, 2])


def test_scale_override(tmp_path):
    _imagej_stacks(tmp_path / "raw")
    store = tiffstore.open(tmp_path / "raw", scale={"z": 3.0, "x": (250, "nm")})
    assert store.scale == {
        "z": (3.0, "micrometer"),
        "y": (0.5, "micrometer"),
        "x": (250.0, "nanometer"),
    }
    assert xr.open_zarr(store).z.values.tolist() == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="'t' is not one of the files' own dims"):
        tiffstore.open(tmp_path / "raw", scale={"t": 1.0})


def test_no_scale_no_coordinates(sample_dir):
    store = tiffstore.open(sample_dir[0])
    assert store.scale == {}
    assert "scale" not in store.attrs["tiffstore"]
    assert "z" not in xr.open_zarr(store).coords

"""The xarray backend: ``xr.open_dataset(..., engine="tiffstore")`` on real TIFF files."""

from __future__ import annotations

import base64
import importlib
import json
import tomllib
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

import tiffstore
from tiffstore.detect import is_reference_file, is_tiff_source

xr = pytest.importorskip("xarray")

from tiffstore.apps.xarray_backend import TiffStoreBackendEntrypoint  # noqa: E402

ENGINE = TiffStoreBackendEntrypoint


def test_open_dataset_lazy_with_dims_and_coords(sample_dir):
    directory, ref = sample_dir
    ds = xr.open_dataset(directory, engine=ENGINE, chunks={})
    image = ds["image"]
    assert image.dims == ("ch", "stack", "z", "y", "x")
    assert isinstance(image.data, da.Array)  # lazy
    assert image.data.chunksize == tiffstore.open(directory).chunks  # the store's chunks
    assert ds["wavelength"].dims == ("ch",)
    assert ds["wavelength"].values.tolist() == [488, 560, 642]
    assert ds["wavelength"].attrs["units"] == "nm"
    assert ds["msec"].dims == ("ch", "stack")
    assert np.isnan(ds["msec"].values[1, 2])  # channel 1's stack 2 is missing
    np.testing.assert_array_equal(image.values, ref)
    np.testing.assert_array_equal(image.sel(ch=2).max("z").values, ref[2].max(axis=1))


def test_store_options_pass_through(sample_dir):
    directory, ref = sample_dir
    ds = xr.open_dataset(directory, engine=ENGINE, chunks={}, store_chunks="page", fill_value=7)
    assert ds["image"].data.chunksize == (1, 1, 1, 32, 24)
    assert (ds["image"].sel(ch=1, stack=2).values == 7).all()
    np.testing.assert_array_equal(ds["image"].sel(ch=0).values, ref[0])


def test_open_dataset_without_dask_is_lazily_indexed(sample_dir):
    directory, ref = sample_dir
    ds = xr.open_dataset(directory, engine=ENGINE)
    assert not isinstance(ds["image"].variable._data, np.ndarray)  # not loaded yet
    np.testing.assert_array_equal(ds["image"][0, 1, 2].values, ref[0, 1, 2])


def test_open_dataset_takes_a_store_and_drop_variables(sample_dir):
    directory, _ = sample_dir
    ds = xr.open_dataset(tiffstore.open(directory), engine=ENGINE, drop_variables=["msecabs"])
    assert "msecabs" not in ds.variables
    assert "msec" in ds.coords


def test_group_attrs_leave_out_array_dimensions(sample_dir, tmp_path):
    directory, _ = sample_dir
    ds = xr.open_dataset(directory, engine=ENGINE, chunks={})
    assert "_ARRAY_DIMENSIONS" not in ds.attrs
    assert ds.attrs["tiffstore"]["missing"] == [{"ch": 1, "stack": 2}]
    assert "_ARRAY_DIMENSIONS" not in xr.open_zarr(tiffstore.open(directory)).attrs
    # ...and so a copy written by xarray carries none at its top level.
    out = tmp_path / "copy.zarr"
    ds.isel(stack=slice(0, 1)).to_zarr(out, zarr_format=2, consolidated=True)
    root = json.loads((out / ".zattrs").read_text())
    assert "_ARRAY_DIMENSIONS" not in root
    assert "tiffstore" in root


def test_entry_point_declared():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["xarray.backends"]["tiffstore"]
    module, name = target.split(":")
    assert getattr(importlib.import_module(module), name) is TiffStoreBackendEntrypoint


def test_engine_by_name(sample_dir):
    """Through the installed entry point (needs ``pip install -e .`` after a change)."""
    if "tiffstore" not in xr.backends.list_engines():
        pytest.skip("tiffstore is not installed: its entry point is not registered")
    directory, ref = sample_dir
    ds = xr.open_dataset(directory, engine="tiffstore", chunks={})
    np.testing.assert_array_equal(ds["image"].values, ref)
    guessed = xr.open_dataset(directory, chunks={})  # no engine: xarray asks guess_can_open
    np.testing.assert_array_equal(guessed["image"].values, ref)


def test_guess_can_open(sample_dir, tmp_path):
    directory, _ = sample_dir
    backend = TiffStoreBackendEntrypoint()
    first = sorted(directory.iterdir())[0]
    assert backend.guess_can_open(directory)
    assert backend.guess_can_open(str(directory) + "/")
    assert backend.guess_can_open(first)
    assert backend.guess_can_open(str(directory / "*_ch0_*.tif"))
    assert backend.guess_can_open(tiffstore.open(directory))
    assert backend.guess_can_open("s3://bucket/raw/cell_z001.tiff")
    nested = tmp_path / "nested" / "deeper"
    nested.mkdir(parents=True)
    (nested / "a.TIF").write_bytes(b"")
    assert backend.guess_can_open(tmp_path / "nested")
    empty = tmp_path / "notiffs.zarr"
    empty.mkdir()
    (empty / ".zgroup").write_text("{}")
    assert not backend.guess_can_open(empty)
    (empty / "stray.tif").write_bytes(b"")
    assert not backend.guess_can_open(empty)  # a Zarr store is the Zarr backend's
    assert not backend.guess_can_open(tmp_path / "data.nc")
    assert not backend.guess_can_open(str(directory / "*.nc"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"refs": {".zgroup": '{"zarr_format": 2}'}}))
    assert not backend.guess_can_open(other)  # a reference file, but not tiffstore's
    assert not is_reference_file(first)
    assert not is_tiff_source(12)


def _inline_references(store: tiffstore.TiffStore) -> dict[str, object]:
    """Version 1 fsspec references holding the group view's keys inline (small data only)."""
    refs: dict[str, object] = {}
    for key in store.mapping:
        if "/" not in key and key not in (".zgroup", ".zattrs", ".zmetadata"):
            continue  # the root array's keys: reference files hold the group view only
        value = store.mapping[key]
        try:
            refs[key] = value.decode()
            json.loads(refs[key])  # type: ignore[arg-type]
        except (UnicodeDecodeError, ValueError):
            refs[key] = "base64:" + base64.b64encode(value).decode()
    return {"version": 1, "refs": refs}


def test_reference_file(sample_dir, tmp_path):
    directory, ref = sample_dir
    refs = tmp_path / "raw.json"
    tiffstore.write_references(tiffstore.open(directory), str(refs))
    backend = TiffStoreBackendEntrypoint()
    assert backend.guess_can_open(refs)
    ds = xr.open_dataset(refs, engine=ENGINE, chunks={})
    assert ds["image"].dims == ("ch", "stack", "z", "y", "x")
    assert ds["wavelength"].values.tolist() == [488, 560, 642]
    np.testing.assert_array_equal(ds["image"].values, ref)
    # Opened from its manifest, as tiffstore.open opens it: its reads are checked.
    assert ds.sizes == dict(zip(tiffstore.open(refs).dims, ref.shape, strict=True))


def test_reference_file_without_a_manifest_is_refused_by_name(sample_dir, tmp_path):
    """References that look like tiffstore's but carry no manifest (hand-made, or from an
    older version): a clear error naming the file, not reads without the checks."""
    refs = tmp_path / "raw.json"
    refs.write_text(json.dumps(_inline_references(tiffstore.open(sample_dir[0]))))
    assert TiffStoreBackendEntrypoint().guess_can_open(refs)
    with pytest.raises(tiffstore.SourceError, match=r"raw\.json: this reference file carries no"):
        xr.open_dataset(refs, engine=ENGINE, chunks={})


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_image_chunksizes_are_the_stores(sample_dir, zarr_format):
    """Coordinates are chunked as the image along its dims, so the chunks agree (xarray raised
    "inconsistent chunks along dimension ch" when coordinates were chunked otherwise)."""
    directory, _ = sample_dir
    ds = xr.open_dataset(directory, engine=ENGINE, chunks={}, zarr_format=zarr_format)
    store = tiffstore.open(directory)
    sizes = ds["image"].chunksizes
    assert tuple(sizes[d][0] for d in store.dims) == store.chunks
    assert ds.chunksizes == sizes  # every variable agrees with the image

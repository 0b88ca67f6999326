"""End to end: seed-named folders open as one array equal to the files stacked by hand."""

from __future__ import annotations

import pickle
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tests.conftest import fresh_interpreter
from tiffstore.sample import sample_name


@pytest.mark.parametrize(
    ("shape", "dtype", "chunks"),
    [
        ((6, 32, 24), "uint16", None),
        ((5, 17, 13), "uint8", "page"),
        ((7, 16, 16), "float32", 3),
        ((4, 20, 10), "int16", "file"),
        ((9, 8, 12), "uint32", (1, 2, 4, 8, 12)),
        ((24, 18), "uint16", None),
    ],
)
def test_dask_and_zarr_equal_stack_built_file_by_file(make_sample, shape, dtype, chunks):
    directory, ref = make_sample(channels=3, stacks=4, shape=shape, dtype=dtype, missing=[(2, 3)])
    store = tiffstore.open(directory, chunks=chunks)
    assert store.shape == ref.shape
    assert store.dtype == ref.dtype
    np.testing.assert_array_equal(da.from_zarr(store).compute(), ref)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], ref)


def test_seed_naming_dims_and_coords(sample_dir):
    directory, _ref = sample_dir
    store = tiffstore.open(directory)
    assert store.dims == ("ch", "stack", "z", "y", "x")
    assert store.shape == (3, 4, 6, 32, 24)
    assert store.coords["wavelength"] == {"dims": ["ch"], "values": [488, 560, 642], "units": "nm"}
    msec = store.coords["msec"]
    assert msec["dims"] == ["ch", "stack"]
    assert msec["values"][0][1] == 10_123  # channel 0, stack 1
    assert msec["values"][1][2] is None  # the missing file has no timestamp
    attrs = store.attrs
    assert "_ARRAY_DIMENSIONS" not in attrs  # the group view's attrs: see test_store
    assert [a["name"] for a in attrs["tiffstore"]["axes"]] == list(store.dims)
    assert attrs["tiffstore"]["missing"] == [{"ch": 1, "stack": 2}]
    assert attrs["tiffstore"]["files"]["names"][0] == sample_name(0, 0)


def test_files_ordered_by_parsed_index_not_listing(tmp_path):
    """Unpadded numbers sort wrong as text (stack10 before stack2): order comes from the values."""
    import tifffile

    values = [1, 2, 3, 9, 10, 11, 20]
    paths = []
    for s in values:
        paths.append(tmp_path / f"img_ch0_stack{s}.tif")
        tifffile.imwrite(paths[-1], np.full((2, 3), s, np.uint8))
    assert sorted(p.name for p in paths) != [p.name for p in paths]  # text order differs
    for given in (paths, list(reversed(paths)), sorted(paths)):
        store = tiffstore.open(given)
        assert store.coords["stack"]["values"] == values
        np.testing.assert_array_equal(da.from_zarr(store)[:, 0, 0].compute(), values)


def test_stack10_sorts_after_stack9_without_padding(tmp_path):
    import tifffile

    for s in (1, 2, 9, 10, 11):
        tifffile.imwrite(tmp_path / f"img_stack{s}.tif", np.full((2, 3), s, np.uint8))
    store = tiffstore.open(tmp_path)
    assert store.coords["stack"]["values"] == [1, 2, 9, 10, 11]
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:, 0, 0], [1, 2, 9, 10, 11])


def test_glob_and_list_sources(sample_dir):
    directory, ref = sample_dir
    (directory / "notes.txt").write_text("not a TIFF")
    by_glob = tiffstore.open(str(directory / "*_ch0_*"))
    assert by_glob.shape == (4, 6, 32, 24)
    np.testing.assert_array_equal(da.from_zarr(by_glob).compute(), ref[0])
    # A list: other files in it are left out, as a folder listing leaves them out.
    listed = [*sorted(directory.glob("*_ch2_*.tif")), directory / "notes.txt"]
    by_list = tiffstore.open(listed)
    assert by_list.manifest.files == tuple(p.name for p in listed[:-1])
    np.testing.assert_array_equal(da.from_zarr(by_list).compute(), ref[2])


def test_missing_file_is_fill_value(make_sample):
    directory, _ref = make_sample(missing=[(0, 1)])
    store = tiffstore.open(directory, fill_value=7)
    got = zarr.open_array(store, mode="r")[0, 1]
    assert (got == 7).all()


def test_store_pickles_small_and_reads_after_unpickling(sample_dir):
    directory, ref = sample_dir
    store = tiffstore.open(directory)
    blob = pickle.dumps(store)
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    assert clone == store
    np.testing.assert_array_equal(da.from_zarr(clone).compute(), ref)


def test_memory_filesystem_source(sample_dir):
    """fsspec URLs list and read through the file system object, not local paths."""
    import fsspec

    directory, ref = sample_dir
    fs = fsspec.filesystem("memory")
    for path in Path(directory).iterdir():
        fs.pipe(f"/acq/{path.name}", path.read_bytes())
    try:
        store = tiffstore.open("memory://acq/")
        np.testing.assert_array_equal(da.from_zarr(store).compute(), ref)
    finally:
        fs.rm("/acq", recursive=True)


@pytest.mark.parametrize("chunks", [None, "page", 4, (2, 3, 5, 7, 9)])
def test_to_dask_equals_from_zarr(make_sample, chunks):
    directory, ref = make_sample(channels=3, stacks=4, shape=(9, 17, 23), missing=[(1, 1)])
    store = tiffstore.open(directory, chunks=chunks, fill_value=3)
    direct = store.to_dask()
    through_zarr = da.from_zarr(store)
    assert direct.chunks == through_zarr.chunks
    assert direct.dtype == through_zarr.dtype
    ref[1, 1] = 3
    np.testing.assert_array_equal(direct.compute(), ref)
    np.testing.assert_array_equal(through_zarr.compute(), ref)
    # Same files, same graph keys.
    assert tiffstore.open(directory, chunks=chunks, fill_value=3).to_dask().name == direct.name


ARRAY_EXPRESSION_MODE = """
import json, sys
import dask.array as da
import numpy as np
import xarray as xr
import tiffstore

store = tiffstore.open(sys.argv[1], fill_value=7)
ref = np.load(sys.argv[2])
x = store.to_dask()
grid = tuple(tuple(min(c, n - i) for i in range(0, n, c)) for c, n in zip(store.chunks, store.shape))
print(json.dumps({
    "mode": da.array_expr_enabled(),
    "module": type(x).__module__,
    "chunks": x.chunks == grid,
    "same_keys": x.name == tiffstore.open(sys.argv[1], fill_value=7).to_dask().name,
    "values": bool(np.array_equal(x.compute(), ref)),
    "max": bool(np.array_equal(x[1, :, 2:5].max(axis=1).compute(), ref[1, :, 2:5].max(axis=1))),
    "sum": [int(x.sum().compute()), int(ref.sum(dtype=np.uint64))],
    "xarray": bool(np.array_equal(xr.open_zarr(store)["image"].data.compute(), ref)),
}))
"""


def test_to_dask_and_open_zarr_in_dasks_array_expression_mode(make_sample, tmp_path):
    """dask's array-expression mode (``array.query-planning``) has an ``Array`` that takes
    an expression, not a graph: ``to_dask`` (and so napari's reader) must still work."""
    directory, ref = make_sample(channels=2, stacks=3, shape=(9, 16, 12), missing=[(1, 2)])
    ref[1, 2] = 7
    np.save(tmp_path / "ref.npy", ref)
    env = {"DASK_ARRAY__QUERY_PLANNING": "True"}
    got = fresh_interpreter(
        ARRAY_EXPRESSION_MODE, str(directory), str(tmp_path / "ref.npy"), env=env
    )
    assert got["mode"], "dask's array-expression mode is off"
    assert got["module"].startswith("dask.array._array_expr"), got["module"]
    assert got["chunks"] and got["values"] and got["max"] and got["xarray"], got
    assert got["same_keys"], "the same files gave other keys"
    assert got["sum"][0] == got["sum"][1]


def test_a_stray_thumbnail_is_left_out_and_listed(make_sample, caplog):
    directory, ref = make_sample(channels=2, stacks=3, shape=(4, 16, 12))
    thumb = sample_name(1, 1).replace("_0000t", "_0000t_thumb")
    tifffile.imwrite(directory / thumb, np.zeros((8, 6), np.uint8))  # another shape too
    store = tiffstore.open(directory)
    assert store.dims == ("ch", "stack", "z", "y", "x")
    assert store.left_out == (thumb,)
    assert thumb not in store.manifest.files and store.manifest.missing() == []
    np.testing.assert_array_equal(store.to_dask().compute(), ref)
    assert "Left out 1 file " in caplog.text and thumb in caplog.text
    assert pickle.loads(pickle.dumps(store)).left_out == (thumb,)


def test_a_truncated_file_is_named_at_open_without_validate(make_sample, caplog):
    directory, ref = make_sample(channels=2, stacks=2, shape=(4, 16, 16))
    end = int(tiffstore.open(directory).manifest.data_ends()[0])
    assert end is not None
    victim = directory / sample_name(1, 0)
    victim.write_bytes(victim.read_bytes()[: end - 10])  # cut inside the pixel data
    store = tiffstore.open(directory, chunks="file")  # the other files' chunks stay whole
    assert store.incomplete == (victim.name,) and store.truncated == []
    assert "1 file that looks still being written" in caplog.text and victim.name in caplog.text
    np.testing.assert_array_equal(store.to_dask()[0].compute(), ref[0])
    assert not store.to_dask()[1, 0].compute().any()
    assert pickle.loads(pickle.dumps(store)).incomplete == (victim.name,)

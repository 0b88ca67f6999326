"""Zarr format 3: ``zarr.json``, chunk keys ``c/...``, and shards of pages with a made-up index."""

from __future__ import annotations

import json
import pickle

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import tiffstore
from tiffstore.errors import ReadOnlyError
from tiffstore.read.pipeline import PIPELINE_PATH, ZARR_PIPELINE_PATH

PLANE = 32 * 24 * 2  # bytes of one (32, 24) uint16 page of the sample


@pytest.fixture
def sharded(sample_dir):
    return tiffstore.open(sample_dir[0], zarr_format=3, chunks="file")


def _get(store, key, byte_range=None):
    buf = sync(store.get(key, default_buffer_prototype(), byte_range))
    return None if buf is None else buf.to_bytes()


async def _collect(aiter):
    return [k async for k in aiter]


def test_zarr_json_of_the_sharded_array(sharded, sample_dir):
    doc = json.loads(_get(sharded, "zarr.json"))
    assert doc["zarr_format"] == 3 and doc["node_type"] == "array"
    assert doc["shape"] == list(sample_dir[1].shape)
    assert doc["dimension_names"] == ["ch", "stack", "z", "y", "x"]
    assert doc["data_type"] == "uint16"
    assert doc["chunk_grid"]["configuration"]["chunk_shape"] == [1, 1, 6, 32, 24]
    (codec,) = doc["codecs"]
    assert codec["name"] == "sharding_indexed"
    assert codec["configuration"]["chunk_shape"] == [1, 1, 1, 32, 24]
    assert "tiffstore" in doc["attributes"]
    assert sharded.attrs == doc["attributes"]
    assert _get(sharded, ".zarray") is None
    arr = zarr.open_array(sharded, mode="r")
    assert arr.shards == (1, 1, 6, 32, 24) and arr.chunks == (1, 1, 1, 32, 24)


def test_plain_format3_and_page_chunks_are_not_sharded(sample_dir):
    directory = sample_dir[0]
    assert tiffstore.open(directory, zarr_format=3, sharded=False).shards is None
    # One page per chunk already: nothing to shard.
    page = tiffstore.open(directory, zarr_format=3, chunks="page")
    assert page.shards is None
    doc = json.loads(_get(page, "zarr.json"))
    assert doc["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]
    assert _get(page, "c/2/1/3/0/0") == sample_dir[1][2, 1, 3].tobytes()


@pytest.mark.parametrize("options", [{}, {"sharded": False}, {"chunks": "page"}, {"chunks": 4}])
def test_format3_reads_equal_the_files(sample_dir, options):
    directory, ref = sample_dir
    store = tiffstore.open(directory, zarr_format=3, **options)
    arr = zarr.open_array(store, mode="r")
    np.testing.assert_array_equal(arr[...], ref)
    np.testing.assert_array_equal(arr[1, 2], ref[1, 2])  # the missing file: fill value
    np.testing.assert_array_equal(arr[2, 3, 5], ref[2, 3, 5])
    np.testing.assert_array_equal(da.from_zarr(store).compute(), ref)
    np.testing.assert_array_equal(da.from_zarr(store, chunks=store.chunks).compute(), ref)
    np.testing.assert_array_equal(store.to_dask().compute(), ref)


def test_shard_is_pages_end_to_end_then_the_index(sharded, sample_dir):
    ref = sample_dir[1]
    m = sharded.manifest
    nbytes = m.chunk_nbytes + 16 * 6
    assert sync(sharded.getsize("c/0/1/0/0/0")) == nbytes
    whole = _get(sharded, "c/0/1/0/0/0")
    assert len(whole) == nbytes
    assert whole[: m.chunk_nbytes] == ref[0, 1].tobytes()
    index = np.frombuffer(whole[m.chunk_nbytes :], "<u8").reshape(6, 2)
    assert index[:, 0].tolist() == [k * PLANE for k in range(6)]
    assert index[:, 1].tolist() == [PLANE] * 6
    # zarr's two requests: the index by suffix, then one inner chunk by range.
    assert _get(sharded, "c/0/1/0/0/0", SuffixByteRequest(96)) == whole[m.chunk_nbytes :]
    page = _get(sharded, "c/0/1/0/0/0", RangeByteRequest(3 * PLANE, 4 * PLANE))
    assert page == ref[0, 1, 3].tobytes()
    # Ranges across pages and across the end of the pixels.
    cut = RangeByteRequest(PLANE - 10, m.chunk_nbytes + 20)
    assert _get(sharded, "c/0/1/0/0/0", cut) == whole[PLANE - 10 : m.chunk_nbytes + 20]
    # The missing file's shard is absent; zarr serves the fill value.
    assert _get(sharded, "c/1/2/0/0/0") is None
    assert not sync(sharded.exists("c/1/2/0/0/0"))


def test_shard_index_marks_missing_pages_and_pages_past_the_edge(make_sample):
    directory, ref = make_sample(channels=2, stacks=3, shape=(5, 8, 6), missing=[(0, 1)])
    store = tiffstore.open(directory, zarr_format=3, chunks=(1, 2, 2, 8, 6))
    assert store.shards is not None and store.shards.per_shard == (1, 2, 2, 1, 1)
    empty = 2**64 - 1
    # Stacks 0-1, planes 2-3: stack 1 has no file.
    index = store.shard_index((0, 0, 1, 0, 0)).reshape(-1, 2)
    page = 8 * 6 * 2
    assert index.tolist() == [[0, page], [page, page], [empty, empty], [empty, empty]]
    # Stack 2 (stack 3 is past the edge), plane 4 (plane 5 is past the edge).
    index = store.shard_index((1, 1, 2, 0, 0)).reshape(-1, 2)
    assert index.tolist() == [[0, page], [empty, empty], [empty, empty], [empty, empty]]
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], ref)


def test_one_plane_through_zarr_reads_one_page(sharded, sample_dir, local_reads):
    """Default chunks (six pages) sharded: ``arr[c, s, z]`` reads one page of one file."""
    ref = sample_dir[1]
    arr = zarr.open_array(sharded, mode="r")
    arr[0, 0, 0]  # first reads check headers
    calls = local_reads
    calls.clear()
    np.testing.assert_array_equal(arr[2, 3, 4], ref[2, 3, 4])
    m = sharded.manifest
    name = m.files[int(m.file_index[2, 3])]
    header = [c for c in calls if c[2] != PLANE]
    assert [c for c in calls if c[2] == PLANE] and {c[0] for c in calls} == {name}
    assert sum(n for _, _, n in header) <= 1024  # at most this file's header check
    calls.clear()
    np.testing.assert_array_equal(arr[2, 3, 1], ref[2, 3, 1])
    assert [n for _, _, n in calls] == [PLANE]


def test_whole_shard_read_is_one_read_of_the_file(sharded, sample_dir, local_reads):
    sharded.mapping["c/0/1/0/0/0"]  # the first read checks the file's header
    calls = local_reads
    calls.clear()
    np.testing.assert_array_equal(zarr.open_array(sharded, mode="r")[0, 1], sample_dir[1][0, 1])
    assert [n for _, _, n in calls] == [sharded.manifest.chunk_nbytes]


def test_keys_listing_and_group_view(sharded, sample_dir):
    ref = sample_dir[1]
    keys = sync(_collect(sharded.list()))
    assert keys[0] == "zarr.json"
    assert "c/0/0/0/0/0" in keys and "c/1/2/0/0/0" not in keys
    assert "group/zarr.json" in keys and "group/image/c/0/0/0/0/0" in keys
    assert sorted(sync(_collect(sharded.list_dir("group")))) == sorted(
        ["zarr.json", "image", "ch", "stack", "wavelength", "msec", "msecabs"]
    )
    assert list(sharded.mapping) == keys
    group = zarr.open_group(sharded, path="group", mode="r")
    np.testing.assert_array_equal(group["image"][...], ref)
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(sharded, group="group", zarr_format=3, consolidated=False)
    assert ds["image"].dims == ("ch", "stack", "z", "y", "x")
    assert ds["image"].dtype == ref.dtype  # no masking of pixels equal to the fill value
    np.testing.assert_array_equal(ds["image"].values, ref)
    assert ds["wavelength"].values.tolist() == [488, 560, 642]
    assert np.isnan(ds["msec"].values[1, 2])
    assert ds["msec"].attrs["units"] == "ms"


def test_string_coordinates_in_format3(make_sample):
    xr = pytest.importorskip("xarray")
    directory, ref = make_sample(channels=2, stacks=2, shape=(2, 8, 6))
    for path in directory.iterdir():
        path.rename(path.with_name(path.name.replace("CamA", "CamB")))
    store = tiffstore.open(
        directory, zarr_format=3, pattern="{_}_Cam{cam}_ch{ch}_{_}_stack{stack}_{_}.tif"
    )
    ds = xr.open_zarr(store, group="group", zarr_format=3, consolidated=False)
    np.testing.assert_array_equal(ds["image"].values, ref)
    assert {str(v) for v in np.ravel(ds["cam"].values)} == {"B"}


def test_pickling_equality_and_writes_refused(sharded, sample_dir):
    copy = pickle.loads(pickle.dumps(sharded))
    assert copy == sharded and copy.shards == sharded.shards and copy.zarr_format == 3
    assert copy != tiffstore.open(sample_dir[0])
    assert copy != tiffstore.open(sample_dir[0], zarr_format=3, sharded=False)
    assert sharded.with_read_only(True) == sharded
    np.testing.assert_array_equal(zarr.open_array(copy, mode="r")[...], sample_dir[1])
    with pytest.raises(ReadOnlyError):
        sharded.set_sync("zarr.json", default_buffer_prototype().buffer.from_bytes(b"{}"))
    with pytest.raises(ReadOnlyError):
        sharded.delete_sync("zarr.json")


def test_zarr_format_is_checked(sample_dir):
    with pytest.raises(tiffstore.OptionError, match="zarr_format=4"):
        tiffstore.open(sample_dir[0], zarr_format=4)


def test_xarray_engine_opens_a_format3_store(sharded, sample_dir):
    xr = pytest.importorskip("xarray")
    from tiffstore.apps.xarray_backend import TiffStoreBackendEntrypoint

    ds = xr.open_dataset(sharded, engine=TiffStoreBackendEntrypoint, chunks={})
    np.testing.assert_array_equal(ds["image"].values, sample_dir[1])
    assert ds["wavelength"].values.tolist() == [488, 560, 642]


def test_materialize_a_format3_store(sharded, sample_dir, tmp_path):
    tiffstore.materialize(sharded, str(tmp_path / "copy.zarr"))
    copy = zarr.open_group(str(tmp_path / "copy.zarr"), mode="r")
    np.testing.assert_array_equal(copy["image"][...], sample_dir[1])
    assert copy["wavelength"][...].tolist() == [488, 560, 642]


@pytest.mark.parametrize("pipeline", [ZARR_PIPELINE_PATH, PIPELINE_PATH], ids=["zarr", "tiffstore"])
def test_a_file_truncated_after_open_raises_naming_it(make_sample, pipeline):
    directory, _ = make_sample(channels=2, stacks=2)
    with zarr.config.set({"codec_pipeline.path": pipeline}):
        store = tiffstore.open(directory, zarr_format=3, chunks="file")
        arr = zarr.open_array(store, mode="r")
    name = store.manifest.files[int(store.manifest.file_index[0, 0])]
    path = directory / name
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    for read in (lambda: arr[0, 0, 5], lambda: arr[...]):
        with pytest.raises((tiffstore.TiffReadError, BaseExceptionGroup)) as caught:
            read()
        # zarr 3.4 (Python >= 3.12) reads a shard's inner chunks in a task group, which
        # raises tiffstore's error inside an ExceptionGroup; zarr 3.1 raises it alone.
        errors = _leaves(caught.value)
        assert any(isinstance(e, tiffstore.TiffReadError) and name in str(e) for e in errors)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]

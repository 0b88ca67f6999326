"""tiffstore's codec pipeline: whole chunks read in place, everything else as zarr does it."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.core.codec_pipeline import BatchedCodecPipeline

import tiffstore
from tiffstore.read.pipeline import PIPELINE_PATH, TiffCodecPipeline
from tiffstore.read.store import TiffStore

FORMATS = [
    pytest.param({}, id="format2"),
    pytest.param({"zarr_format": 3}, id="format3-sharded"),
    pytest.param({"zarr_format": 3, "sharded": False}, id="format3"),
    pytest.param({"chunks": 4}, id="format2-edge-chunks"),
]


@pytest.fixture
def pipeline():
    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
        yield


def _pipeline_of(arr: zarr.Array):
    return arr._async_array.codec_pipeline


@pytest.fixture
def chunk_gets(monkeypatch):
    """Keys of the pixels' chunks fetched through the store's ``get``."""
    keys: list[str] = []
    real = TiffStore.get

    async def counting(self, key, prototype=None, byte_range=None):
        if self.keys.chunk_key(key) is not None:
            keys.append(key)
        return await real(self, key, prototype, byte_range)

    monkeypatch.setattr(TiffStore, "get", counting)
    return keys


@pytest.mark.parametrize("options", FORMATS)
def test_reads_equal_the_files_with_whole_chunks_in_place(
    pipeline, sample_dir, options, chunk_gets
):
    directory, ref = sample_dir
    store = tiffstore.open(directory, **options)
    arr = zarr.open_array(store, mode="r")
    assert isinstance(_pipeline_of(arr), TiffCodecPipeline)
    assert _pipeline_of(arr).store is store
    np.testing.assert_array_equal(da.from_zarr(store, chunks=store.chunks).compute(), ref)
    np.testing.assert_array_equal(arr[...], ref)
    if store.chunks[2] == ref.shape[2]:
        # Every chunk was wanted whole: none went through the store's get.
        assert chunk_gets == []
    # Part of a chunk (one plane) goes through zarr's own path.
    np.testing.assert_array_equal(arr[2, 1, 3], ref[2, 1, 3])
    np.testing.assert_array_equal(arr[1, 2, 3], ref[1, 2, 3])  # the missing file
    np.testing.assert_array_equal(arr[:, :, 1:3, 5:9], ref[:, :, 1:3, 5:9])
    assert chunk_gets


def test_group_view_and_xarray(pipeline, sample_dir):
    xr = pytest.importorskip("xarray")
    directory, ref = sample_dir
    ds = xr.open_zarr(tiffstore.open(directory))
    np.testing.assert_array_equal(ds["image"].values, ref)
    assert ds["wavelength"].values.tolist() == [488, 560, 642]


def test_fill_value_of_missing_chunks(pipeline, make_sample):
    directory, _ = make_sample(missing=[(0, 1)])
    store = tiffstore.open(directory, fill_value=5)
    assert (da.from_zarr(store).compute()[0, 1] == 5).all()
    assert (zarr.open_group(store, mode="r")["image"][...][0, 1] == 5).all()


def test_other_byte_order_goes_through_zarr(pipeline, make_sample):
    directory, ref = make_sample(byteorder=">")
    store = tiffstore.open(directory, zarr_format=3)
    assert store.dtype.byteorder == ">"
    arr = zarr.open_array(store, mode="r")
    np.testing.assert_array_equal(arr[...], ref)
    np.testing.assert_array_equal(da.from_zarr(store, chunks=store.chunks).compute(), ref)


def test_other_stores_get_zarrs_own_behaviour(pipeline):
    data = np.arange(60, dtype="u2").reshape(3, 4, 5)
    arr = zarr.create_array(zarr.storage.MemoryStore(), data=data, chunks=(1, 2, 5))
    assert type(_pipeline_of(arr)) is BatchedCodecPipeline
    np.testing.assert_array_equal(arr[...], data)
    arr[0] = 7
    assert (arr[0] == 7).all()


def test_store_has_zarrs_whole_synchronous_surface(sample_dir):
    """zarr >= 3.3's FusedCodecPipeline reads in threads only from such stores."""
    store = tiffstore.open(sample_dir[0])
    for name in ("get_sync", "set_sync", "delete_sync"):
        assert callable(getattr(store, name))
    store_abc = pytest.importorskip("zarr.abc.store")
    if hasattr(store_abc, "SupportsSyncStore"):
        assert isinstance(store, store_abc.SupportsSyncStore)


@pytest.mark.parametrize("options", FORMATS)
def test_zarrs_fused_pipeline_where_it_exists(sample_dir, options):
    fused = "zarr.core.codec_pipeline.FusedCodecPipeline"
    codec_pipeline = pytest.importorskip("zarr.core.codec_pipeline")
    if not hasattr(codec_pipeline, "FusedCodecPipeline"):
        pytest.skip("zarr < 3.3 has no FusedCodecPipeline")
    directory, ref = sample_dir
    with zarr.config.set({"codec_pipeline.path": fused}):
        store = tiffstore.open(directory, **options)
        arr = zarr.open_array(store, mode="r")
        np.testing.assert_array_equal(arr[...], ref)
        np.testing.assert_array_equal(arr[2, 1, 3], ref[2, 1, 3])
        np.testing.assert_array_equal(da.from_zarr(store, chunks=store.chunks).compute(), ref)


def test_one_plane_of_page_chunks_is_read_in_place(pipeline, sample_dir, chunk_gets):
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks="page")
    arr = zarr.open_array(store, mode="r")
    np.testing.assert_array_equal(arr[2, 1, 3], ref[2, 1, 3])
    np.testing.assert_array_equal(arr[1, 2, 3], ref[1, 2, 3])  # the missing file
    np.testing.assert_array_equal(arr[0, :, 2], ref[0, :, 2])
    assert chunk_gets == []
    np.testing.assert_array_equal(arr[2, 1, 3, 4:9], ref[2, 1, 3, 4:9])  # part of a page
    assert chunk_gets


def test_pages_of_a_shard_are_read_in_place(pipeline, sample_dir, chunk_gets):
    directory, ref = sample_dir
    store = tiffstore.open(directory, zarr_format=3)
    assert store.shards is not None and store.shards.inner[2] == 1
    arr = zarr.open_array(store, mode="r")
    np.testing.assert_array_equal(arr[2, 1, 3], ref[2, 1, 3])  # one page: no shard index
    np.testing.assert_array_equal(arr[1, 2, 3], ref[1, 2, 3])  # the missing file
    np.testing.assert_array_equal(arr[0, 1, 2:5], ref[0, 1, 2:5])  # pages of one shard
    np.testing.assert_array_equal(arr[:, :, 4], ref[:, :, 4])  # one page of each shard
    assert chunk_gets == []
    # Part of a page goes through zarr's sharding codec (the index, then the bytes).
    np.testing.assert_array_equal(arr[2, 1, 3, 4:9], ref[2, 1, 3, 4:9])
    assert chunk_gets


def test_pages_at_the_edge_of_the_array(pipeline, make_sample, chunk_gets):
    # 7 planes in shards of 4 planes: the last shard overhangs the array.
    directory, ref = make_sample(channels=2, stacks=2, shape=(7, 16, 16))
    store = tiffstore.open(directory, zarr_format=3, chunks=(1, 1, 4, 16, 16))
    assert store.shards is not None
    arr = zarr.open_array(store, mode="r")
    np.testing.assert_array_equal(arr[1, 1, 4:7], ref[1, 1, 4:7])
    np.testing.assert_array_equal(arr[:, :, 6], ref[:, :, 6])
    np.testing.assert_array_equal(arr[...], ref)
    assert chunk_gets == []

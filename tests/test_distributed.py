"""The store works in dask.distributed worker processes (it pickles; no open handles)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import tiffstore
from tiffstore.read.dask_graph import DirectArray, read_directly

distributed = pytest.importorskip("distributed")


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [{}, {"zarr_format": 3}, {"zarr_format": 3, "sharded": False}],
    ids=["format2", "format3-sharded", "format3"],
)
def test_compute_with_two_worker_processes(make_sample, options):
    directory, ref = make_sample(channels=3, stacks=3, shape=(8, 24, 20), missing=[(0, 2)])
    store = tiffstore.open(directory, chunks=3, **options)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        arr = da.from_zarr(store, chunks=store.chunks)
        # dask's optimization (tiffstore's) sends the workers the array as a DirectArray:
        # it pickles, and reads on the workers' task threads.
        layers = read_directly(arr.__dask_graph__()).layers.values()
        assert any(type(v) is DirectArray for layer in layers for v in layer.values())
        np.testing.assert_array_equal(client.compute(arr).result(), ref)
        np.testing.assert_array_equal(client.compute(store.to_dask()).result(), ref)
        # Reads really happened in other processes.
        pids = set(client.run(lambda: __import__("os").getpid()).values())
        assert len(pids) == 2
        # Unpickling the store imported tiffstore there, which chose its codec pipeline
        # for zarr as it did here.
        paths = client.run(lambda: __import__("zarr").config.get("codec_pipeline.path"))
        assert set(paths.values()) == {zarr.config.get("codec_pipeline.path")}
        total = client.compute(arr.sum(dtype="u8")).result()
        assert total == ref.sum(dtype="u8")
        # xarray's variable too: its wrapper of the zarr array goes as a DirectArray.
        ds = xr.open_dataset(directory, engine="tiffstore", chunks={}, store_chunks=3, **options)
        layers = read_directly(ds["image"].data.__dask_graph__()).layers.values()
        assert any(type(v) is DirectArray for layer in layers for v in layer.values())
        np.testing.assert_array_equal(ds["image"].compute().values, ref)

"""``import tiffstore`` makes ``da.from_zarr(store)``'s tasks read a TiffStore's chunks themselves.

dask's array optimization becomes :func:`tiffstore.read.dask_graph.optimize`: a zarr
array of a TiffStore's pixels in the graph (bare, or inside the lazy wrappers
``xr.open_zarr`` gives dask) is swapped for a :class:`DirectArray`,
whose whole-chunk reads run on the task's own thread; any other selection, and any
other store's array, goes through zarr as before. Values always equal tifffile's; an
``array_optimize`` set elsewhere is never replaced; ``TIFFSTORE_DASK_OPTIMIZE=0`` and
``use_dask_optimization(False)`` turn it off.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from dask.highlevelgraph import HighLevelGraph

import tiffstore
from tests.conftest import STORE_FORMATS, fresh_interpreter
from tiffstore._compat import xarray_zarr_array
from tiffstore.read.assemble import ChunkReader
from tiffstore.read.dask_graph import (
    CONFIG_KEY,
    SWITCH_VARIABLE,
    DirectArray,
    direct_array,
    optimize,
    read_directly,
)
from tiffstore.read.pipeline import switched_off

FORMATS = STORE_FORMATS


@pytest.fixture(autouse=True)
def _tiffstores_default():
    """These tests start from what ``import tiffstore`` set, and leave it so."""
    if switched_off(SWITCH_VARIABLE):
        pytest.skip(f"{SWITCH_VARIABLE} turns tiffstore's optimization off here")
    if dask.config.config.get(CONFIG_KEY) is not optimize:
        pytest.skip("dask's array_optimize was set outside tiffstore in this environment")
    yield
    tiffstore.use_dask_optimization(True)


def _direct(x: da.Array) -> list[DirectArray]:
    """The DirectArrays the optimization puts into ``x``'s graph."""
    graph = read_directly(x.__dask_graph__())
    return [v for layer in graph.layers.values() for v in layer.values() if type(v) is DirectArray]


@pytest.fixture
def read_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every chunk read, as they happen."""
    names: list[str] = []
    real = ChunkReader.read_chunk

    def read_chunk(self, index, out=None):
        names.append(threading.current_thread().name)
        return real(self, index, out)

    monkeypatch.setattr(ChunkReader, "read_chunk", read_chunk)
    return names


# -- TiffStore arrays: read on the task's thread, the same values ---------------------------


@pytest.mark.parametrize("options", FORMATS)
@pytest.mark.parametrize("chunks", ["default", "store"])
def test_from_zarr_reads_on_the_tasks_thread(sample_dir, read_threads, options, chunks):
    directory, ref = sample_dir
    store = tiffstore.open(directory, **options)
    x = da.from_zarr(store, **({"chunks": store.chunks} if chunks == "store" else {}))
    assert [d.store for d in _direct(x)] == [store]
    np.testing.assert_array_equal(x.compute(scheduler="sync"), ref)
    # Every chunk (the missing file's too: filled) was read by the one thread that ran
    # the tasks, none on zarr's event loop or its workers.
    assert read_threads
    assert set(read_threads) == {threading.main_thread().name}
    assert x.sum(dtype="u8").compute() == ref.sum(dtype="u8")


def test_off_reads_through_zarr(sample_dir, read_threads):
    """The test above can fail: with the optimization off the reads leave the task's thread."""
    directory, ref = sample_dir
    store = tiffstore.open(directory)
    assert tiffstore.use_dask_optimization(False) is True
    x = da.from_zarr(store)
    np.testing.assert_array_equal(x.compute(scheduler="sync"), ref)
    assert read_threads
    assert threading.main_thread().name not in read_threads


@pytest.mark.parametrize("options", FORMATS)
def test_other_selections_go_through_zarr(sample_dir, options):
    directory, ref = sample_dir
    store = tiffstore.open(directory, **options)
    x = da.from_zarr(store)
    picks = [
        (1, 2, slice(1, 4), slice(5, 20), slice(None, None, 2)),
        (slice(None), 2, 3),
        (Ellipsis, slice(7, 9)),
        (slice(None), slice(None), 4, [0, 5, 31]),
    ]
    for pick in picks:
        np.testing.assert_array_equal(x[pick].compute(), ref[pick])
    # dask chunks on no chunk boundary of the store
    odd = da.from_zarr(store, chunks=(2, 3, 4, 10, 7))
    assert _direct(odd)
    np.testing.assert_array_equal(odd.compute(), ref)
    np.testing.assert_array_equal(odd.max(axis=2).compute(), ref.max(axis=2))


@pytest.mark.parametrize("options", FORMATS)
def test_integer_picks_of_one_long_chunks_read_on_the_tasks_thread(
    sample_dir, read_threads, options
):
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks="file", **options)  # (1, 1, 6, 32, 24)
    x = da.from_zarr(store, chunks=store.chunks)
    for pick in [(1,), (slice(None), 2), (-1, 0), (1, 2)]:  # (1, 2): the missing file
        np.testing.assert_array_equal(x[pick].compute(scheduler="sync"), ref[pick])
    assert read_threads
    assert set(read_threads) == {threading.main_thread().name}
    image = _open_xarray(store, options)["image"]
    assert int(image.isel(ch=2).sum(dtype="u8")) == ref[2].sum(dtype="u8")


def test_integer_picks_of_longer_chunks_go_through_zarr(sample_dir, read_threads):
    """One plane of a 6-plane chunk is not a chunk: zarr reads it, not the whole chunk."""
    directory, ref = sample_dir
    x = da.from_zarr(tiffstore.open(directory, chunks="file"))
    np.testing.assert_array_equal(x[:, :, 3].compute(scheduler="sync"), ref[:, :, 3])
    # No whole chunk went through the store's reader: zarr read the plane's bytes only.
    assert read_threads == []


def test_direct_array_selections(sample_dir):
    directory, ref = sample_dir
    store = tiffstore.open(directory, zarr_format=3, chunks="file")
    direct = direct_array(zarr.open_array(store, mode="r"))
    assert isinstance(direct, DirectArray)
    assert (direct.shape, direct.dtype, direct.ndim) == (ref.shape, ref.dtype, ref.ndim)
    whole = tuple(slice(0, n) for n in store.chunks)
    page = (slice(0, 1), slice(0, 1), slice(2, 3), slice(None), slice(None))
    for sel in [whole, page, (slice(2, 3), slice(2, 3), slice(0, 6), slice(0, 32), slice(0, 24))]:
        got = direct[sel]
        np.testing.assert_array_equal(got, ref[sel])
        assert got.flags.writeable
    np.testing.assert_array_equal(direct[1, 2], ref[1, 2])
    # Integers along one-long chunk dims pick a chunk; out of range is zarr's error.
    for pick in [(1, 2, slice(0, 1), whole[3], whole[4]), (-1, 0, 5, whole[3], whole[4])]:
        np.testing.assert_array_equal(direct[pick], ref[pick])
    with pytest.raises(IndexError):
        direct[(3, 0, 0, whole[3], whole[4])]
    # Empty selections at the array's end are empty, as in NumPy.
    empty = (slice(0, 1), slice(0, 1), slice(6, 6), slice(None), slice(None))
    assert direct[empty].shape == ref[empty].shape == (1, 1, 0, 32, 24)
    # It pickles as its array and store.
    again = pickle.loads(pickle.dumps(direct))
    assert again.store == store
    np.testing.assert_array_equal(again[whole], ref[whole])


@pytest.mark.parametrize("options", FORMATS)
def test_group_view_pixels_are_direct(sample_dir, options):
    directory, ref = sample_dir
    store = tiffstore.open(directory, **options)
    group = zarr.open_group(store, mode="r", path="group" if options else "")
    image = group[store.documents.image_name]
    x = da.from_array(image, chunks=image.chunks)
    assert _direct(x)
    np.testing.assert_array_equal(x.compute(), ref)
    # Coordinate arrays of the same store are not the pixels: zarr reads them.
    for name in store.coords:
        coord = group[name]
        assert direct_array(coord) is None
        np.testing.assert_array_equal(da.from_array(coord).compute(), coord[...])


def test_big_endian_files(make_sample):
    directory, ref = make_sample(channels=2, stacks=2, dtype=">u2")
    store = tiffstore.open(directory)
    x = da.from_zarr(store)
    assert _direct(x)
    got = x.compute()
    assert got.dtype == zarr.open_array(store, mode="r").dtype
    np.testing.assert_array_equal(got, ref)


# -- xarray: xr.open_zarr(store) and engine="tiffstore" -------------------------------------


def _open_xarray(store: tiffstore.TiffStore, options: dict[str, object]) -> xr.Dataset:
    """The store's group view in xarray, with dask, as the README opens it."""
    if options.get("zarr_format") == 3:
        return xr.open_zarr(store, group="group", zarr_format=3, consolidated=False)
    return xr.open_zarr(store)


@pytest.mark.parametrize("options", FORMATS)
@pytest.mark.parametrize("chunks", [None, 4], ids=["default-chunks", "4-planes"])
def test_open_zarr_reads_on_the_tasks_thread(sample_dir, read_threads, options, chunks):
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks=chunks, **options)
    image = _open_xarray(store, options)["image"]
    assert [d.store for d in _direct(image.data)] == [store]
    np.testing.assert_array_equal(image.compute(scheduler="sync").values, ref)
    assert read_threads
    assert set(read_threads) == {threading.main_thread().name}
    assert int(image.sum(dtype="u8")) == ref.sum(dtype="u8")
    assert image.max("z").values.tolist() == ref.max(axis=2).tolist()


def test_xarray_off_reads_through_zarr(sample_dir, read_threads):
    """The test above can fail: with the optimization off xarray's reads leave the thread."""
    directory, ref = sample_dir
    assert tiffstore.use_dask_optimization(False) is True
    image = xr.open_zarr(tiffstore.open(directory))["image"]
    np.testing.assert_array_equal(image.compute(scheduler="sync").values, ref)
    assert read_threads
    assert threading.main_thread().name not in read_threads


@pytest.mark.parametrize("options", FORMATS)
def test_engine_tiffstore_is_direct(sample_dir, options):
    directory, ref = sample_dir
    ds = xr.open_dataset(directory, engine="tiffstore", chunks={}, **options)
    assert _direct(ds["image"].data)
    np.testing.assert_array_equal(ds["image"].values, ref)
    # Coordinates of the same store are not the pixels: xarray reads them through zarr.
    lazy_coords = [c.data for c in ds.coords.values() if isinstance(c.data, da.Array)]
    assert lazy_coords
    assert not any(_direct(c) for c in lazy_coords)


def test_xarray_selections_keep_xarrays_meaning(sample_dir):
    """Any other selection goes to xarray's own wrapper: outer indexing stays outer."""
    directory, ref = sample_dir
    image = xr.open_zarr(tiffstore.open(directory))["image"]
    lazy = xr.open_zarr(tiffstore.open(directory), chunks=None)["image"]
    picks = [
        {"ch": [0, 2], "y": [1, 5, 30]},
        {"ch": 1, "stack": slice(1, 3), "z": [0, 5]},
        {"z": slice(1, 5), "x": slice(None, None, 3)},
    ]
    for pick in picks:
        got = image.isel(pick)
        assert _direct(got.data)
        np.testing.assert_array_equal(got.values, lazy.isel(pick).values)
    np.testing.assert_array_equal(
        image.isel(ch=[0, 2], y=[1, 5, 30]).values, ref[[0, 2]][:, :, :, [1, 5, 30]]
    )
    # dask chunks on no chunk boundary of the store
    odd = image.chunk({"z": 4, "y": 10, "x": 7})
    np.testing.assert_array_equal(odd.values, ref)
    np.testing.assert_array_equal(odd.max("z").values, ref.max(axis=2))


def test_xarray_variables_already_indexed_are_left_alone(sample_dir):
    """A variable selected before dask chunks it is no longer the zarr array as it is:
    its chunks' reads must not be taken for the store's chunks of the same index."""
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks="page")
    # No cache (open_zarr's chunks=None would add one, which is left alone anyway): only
    # the selection already taken tells this chain from one read as it is.
    lazy = xr.open_dataset(store, engine="zarr", chunks=None, cache=False)["image"]
    part = lazy.isel(z=slice(2, 5)).chunk(dict(zip(lazy.dims, (1, 1, 1, 32, 24), strict=True)))
    graph = part.data.__dask_graph__()
    value = next(v for layer in graph.layers.values() for v in layer.values() if len(layer) == 1)
    assert xarray_zarr_array(value) is None
    assert read_directly(graph) is graph
    np.testing.assert_array_equal(part.values, ref[:, :, 2:5])
    # The same, selected nothing: swapped (so the check above is what keeps it out).
    whole = lazy.chunk(dict(zip(lazy.dims, (1, 1, 1, 32, 24), strict=True)))
    assert _direct(whole.data)
    np.testing.assert_array_equal(whole.values, ref)


def test_xarray_other_selections_go_to_xarrays_wrapper(sample_dir):
    """Selections that are not one chunk keep xarray's meaning, which is not zarr's."""
    directory, ref = sample_dir
    (direct,) = _direct(xr.open_zarr(tiffstore.open(directory))["image"].data)
    pairs = ([0, 1], [0, 2], [0, 5], [0, 31], [0, 23])
    outer = np.asarray(direct[tuple(np.array(p) for p in pairs)])
    assert outer.shape == (2, 2, 2, 2, 2)  # outer indexing, where zarr's would be (2,)
    np.testing.assert_array_equal(outer, ref[np.ix_(*pairs)])
    backwards = np.asarray(direct[(slice(None),) * 4 + (slice(None, None, -1),)])
    np.testing.assert_array_equal(backwards, ref[..., ::-1])  # zarr refuses negative steps


def test_xarray_of_other_stores_is_left_alone(tmp_path):
    data = np.arange(6 * 10 * 12, dtype="u2").reshape(6, 10, 12)
    xr.DataArray(data, dims=("z", "y", "x"), name="v").to_dataset().to_zarr(tmp_path / "o.zarr")
    v = xr.open_zarr(tmp_path / "o.zarr")["v"]
    graph = v.data.__dask_graph__()
    # The chain is xarray's zarr backend's, but the array is not a TiffStore's.
    value = next(v for layer in graph.layers.values() for v in layer.values() if len(layer) == 1)
    assert isinstance(xarray_zarr_array(value), zarr.Array)
    assert direct_array(value) is None
    assert read_directly(graph) is graph
    np.testing.assert_array_equal(v.values, data)
    assert xarray_zarr_array(np.zeros(3)) is None


def test_xarray_direct_array_pickles(sample_dir):
    directory, ref = sample_dir
    store = tiffstore.open(directory)
    (direct,) = _direct(xr.open_zarr(store)["image"].data)
    again = pickle.loads(pickle.dumps(direct))
    whole = tuple(slice(0, n) for n in store.chunks)
    np.testing.assert_array_equal(again[whole], ref[whole])
    np.testing.assert_array_equal(np.asarray(again[0, 1:3]), ref[0, 1:3])


# -- everything else is left as it is ------------------------------------------------------


def test_other_array_kinds_are_left_to_zarr(sample_dir, monkeypatch):
    """With zarr giving another kind of array (CuPy, under ``enable_gpu``), zarr reads."""
    from zarr.buffer import cpu

    from tiffstore.read import dask_graph

    class OtherNDBuffer(cpu.NDBuffer):
        pass

    other = cpu.buffer_prototype._replace(nd_buffer=OtherNDBuffer)
    monkeypatch.setattr(dask_graph, "default_buffer_prototype", lambda: other)
    store = tiffstore.open(sample_dir[0])
    assert direct_array(zarr.open_array(store, mode="r")) is None
    assert not _direct(da.from_zarr(store))


def test_other_stores_arrays_are_left_alone(tmp_path, sample_dir):
    data = np.arange(6 * 10 * 12, dtype="u2").reshape(6, 10, 12)
    others = [
        zarr.create_array(zarr.storage.MemoryStore(), data=data, chunks=(2, 5, 6)),
        zarr.create_array(tmp_path / "a.zarr", data=data, chunks=(2, 5, 6), compressors=None),
    ]
    for arr in others:
        x = da.from_zarr(arr)
        graph = x.__dask_graph__()
        assert read_directly(graph) is graph
        np.testing.assert_array_equal(x.compute(), data)
    # In one graph with a TiffStore array, only that one is swapped.
    store = tiffstore.open(sample_dir[0])
    both = da.from_zarr(store)[0, 0, :, :10, :12] + da.from_zarr(others[0])
    assert [d.store for d in _direct(both)] == [store]
    np.testing.assert_array_equal(both.compute(), sample_dir[1][0, 0, :, :10, :12] + data)


def test_non_graphs_and_inlined_arrays(sample_dir):
    directory, ref = sample_dir
    store = tiffstore.open(directory)
    plain = {"a": 1}
    assert read_directly(plain) is plain
    inlined = da.from_zarr(store, inline_array=True)
    assert not _direct(inlined)
    np.testing.assert_array_equal(inlined.compute(), ref)
    # optimize_graph=False skips dask's optimizations, this one too: still right.
    (got,) = dask.compute(da.from_zarr(store), optimize_graph=False)
    np.testing.assert_array_equal(got, ref)


def test_graph_of_the_array_is_not_changed(sample_dir):
    store = tiffstore.open(sample_dir[0])
    x = da.from_zarr(store)
    before = dict(x.__dask_graph__())
    x.sum().compute()
    assert isinstance(x.__dask_graph__(), HighLevelGraph)
    assert dict(x.__dask_graph__()) == before


# -- the switch ------------------------------------------------------------------------------


def test_off_and_on_in_process(sample_dir):
    directory, ref = sample_dir
    x = da.from_zarr(tiffstore.open(directory))
    assert tiffstore.use_dask_optimization(False) is True
    assert CONFIG_KEY not in dask.config.config
    assert tiffstore.use_dask_optimization(False) is False
    np.testing.assert_array_equal(x.compute(), ref)
    assert tiffstore.use_dask_optimization(True) is False
    assert dask.config.config[CONFIG_KEY] is optimize
    np.testing.assert_array_equal(x.compute(), ref)


def test_off_puts_back_what_it_replaced():
    def mine(dsk, keys, **kwargs):
        return dsk

    tiffstore.use_dask_optimization(False)
    with dask.config.set({CONFIG_KEY: mine}):
        assert tiffstore.use_dask_optimization(True) is False
        assert dask.config.config[CONFIG_KEY] is optimize
        assert tiffstore.use_dask_optimization(False) is True
        assert dask.config.config[CONFIG_KEY] is mine


_PROBE = """
import json, sys, dask
{before}
import tiffstore, dask.array as da
value = dask.config.config.get("array_optimize", "unset")
name = f"{{value.__module__}}.{{value.__name__}}" if callable(value) else str(value)
x = da.from_zarr(tiffstore.open(sys.argv[1]))
print(json.dumps({{"optimize": name, "sum": int(x.sum(dtype="u8").compute())}}))
"""

OURS = "tiffstore.read.dask_graph.optimize"


def _probe(directory: Path, env: dict[str, str], before: str = "") -> dict[str, object]:
    """``import tiffstore`` in a fresh interpreter: dask's ``array_optimize`` and a sum."""
    code = _PROBE.format(before=before)
    return fresh_interpreter(code, str(directory), env=env, clear=("DASK_", "TIFFSTORE_"))


def test_nothing_configured_tiffstores_optimization(sample_dir):
    directory, ref = sample_dir
    assert _probe(directory, {}) == {"optimize": OURS, "sum": int(ref.sum(dtype="u8"))}


def test_config_set_before_import_is_kept(sample_dir):
    directory, ref = sample_dir
    before = "dask.config.set(array_optimize=False)"
    assert _probe(directory, {}, before) == {"optimize": "False", "sum": int(ref.sum(dtype="u8"))}


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_off_switch(sample_dir, value):
    directory, ref = sample_dir
    got = _probe(directory, {SWITCH_VARIABLE: value})
    assert got == {"optimize": "unset", "sum": int(ref.sum(dtype="u8"))}

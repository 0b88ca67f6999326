"""``import tiffstore`` makes its codec pipeline zarr's, for TiffStore arrays only.

A TiffStore array gets :class:`TiffCodecPipeline`; every other store's array gets
zarr's own ``BatchedCodecPipeline`` itself (and behaves as zarr's: a representative
part of zarr's array tests, run with tiffstore imported); a pipeline the user chose
is never replaced; ``TIFFSTORE_CODEC_PIPELINE=0`` and ``use_codec_pipeline(False)``
turn it off.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.core.codec_pipeline import BatchedCodecPipeline

import tiffstore
from tests.conftest import STORE_FORMATS, fresh_interpreter
from tiffstore.read.pipeline import (
    PIPELINE_PATH,
    SWITCH_VARIABLE,
    ZARR_PIPELINE_PATH,
    TiffCodecPipeline,
    switched_off,
)

#: A pipeline a user might choose (zarrs'); never imported here, only configured.
ZARRS = "zarrs.ZarrsCodecPipeline"

FORMATS = STORE_FORMATS


@pytest.fixture(autouse=True)
def _tiffstores_default():
    """These tests start from what ``import tiffstore`` set, and leave it so."""
    if switched_off(SWITCH_VARIABLE):
        pytest.skip(f"{SWITCH_VARIABLE} turns tiffstore's pipeline off here")
    if zarr.config.get("codec_pipeline.path") != PIPELINE_PATH:
        pytest.skip("a codec pipeline was chosen outside tiffstore in this environment")
    yield
    zarr.config.set({"codec_pipeline.path": PIPELINE_PATH})


def _pipeline_of(arr: zarr.Array):
    return arr._async_array.codec_pipeline


def _pipelines(arr: zarr.Array) -> list[object]:
    """The array's pipeline, and the inner pipeline of its sharding codec if any."""
    pipeline = _pipeline_of(arr)
    inner = getattr(pipeline.array_bytes_codec, "codec_pipeline", None)
    return [pipeline] if inner is None else [pipeline, inner]


# -- TiffStore arrays ------------------------------------------------------------------


@pytest.mark.parametrize("options", FORMATS)
def test_tiffstore_arrays_get_tiffstores_pipeline(sample_dir, options):
    directory, ref = sample_dir
    store = tiffstore.open(directory, **options)
    arr = zarr.open_array(store, mode="r")
    assert isinstance(_pipeline_of(arr), TiffCodecPipeline)
    assert _pipeline_of(arr).store is store
    np.testing.assert_array_equal(da.from_zarr(store).compute(), ref)
    np.testing.assert_array_equal(arr[...], ref)
    np.testing.assert_array_equal(arr[2, 1, 3], ref[2, 1, 3])


def test_off_and_on_in_process(sample_dir):
    directory, ref = sample_dir
    assert tiffstore.use_codec_pipeline(False) is True
    assert zarr.config.get("codec_pipeline.path") == ZARR_PIPELINE_PATH
    off = zarr.open_array(tiffstore.open(directory), mode="r")
    assert type(_pipeline_of(off)) is BatchedCodecPipeline
    assert tiffstore.use_codec_pipeline(False) is False  # already off: nothing changes
    assert tiffstore.use_codec_pipeline(True) is False
    on = zarr.open_array(tiffstore.open(directory), mode="r")
    assert isinstance(_pipeline_of(on), TiffCodecPipeline)
    # An array keeps the pipeline it was opened with.
    assert type(_pipeline_of(off)) is BatchedCodecPipeline
    np.testing.assert_array_equal(off[...], on[...])
    np.testing.assert_array_equal(on[...], ref)


def test_off_puts_back_what_it_replaced():
    with zarr.config.set({"codec_pipeline.path": ZARRS}):
        assert tiffstore.use_codec_pipeline(True) is False
        assert zarr.config.get("codec_pipeline.path") == PIPELINE_PATH
        assert tiffstore.use_codec_pipeline(False) is True
        assert zarr.config.get("codec_pipeline.path") == ZARRS


# -- every other store: zarr's own pipeline, zarr's own behaviour -------------------------


def _stores(tmp_path: Path) -> dict[str, object]:
    return {
        "memory": zarr.storage.MemoryStore(),
        "local": zarr.storage.LocalStore(tmp_path / "array.zarr"),
    }


ARRAYS = [
    pytest.param({"zarr_format": 2}, id="format2"),
    pytest.param({"zarr_format": 2, "compressors": None}, id="format2-raw"),
    pytest.param({"zarr_format": 3}, id="format3"),
    pytest.param({"zarr_format": 3, "compressors": None}, id="format3-raw"),
    pytest.param({"zarr_format": 3, "shards": (8, 10)}, id="format3-sharded"),
    pytest.param({"zarr_format": 3, "shards": (8, 10), "compressors": None}, id="sharded-raw"),
]
DTYPES = ["u1", "i2", "<u2", ">u2", "u4", "i8", "f4", "f8", "c8", "bool"]


def _data(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    values = np.arange(int(np.prod(shape))).reshape(shape)
    if dtype == "bool":
        return values % 3 == 0
    if np.dtype(dtype).kind == "c":
        return (values + 1j * values[::-1]).astype(dtype)
    return (values % 251).astype(dtype)


@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize("layout", ARRAYS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_other_stores_arrays_are_zarrs_own(tmp_path, kind, layout, dtype):
    store = _stores(tmp_path)[kind]
    shape, chunks = (13, 17), (4, 5)
    fill = 0 if dtype != "bool" else False
    arr = zarr.create_array(
        store, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, **layout
    )
    for pipeline in _pipelines(arr):
        assert type(pipeline) is BatchedCodecPipeline
    expected = np.full(shape, fill, dtype=dtype)
    np.testing.assert_array_equal(arr[...], expected)  # nothing written: the fill value

    data = _data(dtype, shape)
    arr[2:11, 3:] = data[2:11, 3:]  # partial chunks at every edge
    expected[2:11, 3:] = data[2:11, 3:]
    np.testing.assert_array_equal(arr[...], expected)
    arr[...] = data
    reopened = zarr.open_array(store, mode="r")
    for pipeline in _pipelines(reopened):
        assert type(pipeline) is BatchedCodecPipeline
    got = reopened[...]
    # Format 3 reads in native byte order (its bytes codec carries the files' order).
    assert got.dtype.newbyteorder("=") == data.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(reopened[5], data[5])
    np.testing.assert_array_equal(reopened[1:12:3, 2:9], data[1:12:3, 2:9])
    np.testing.assert_array_equal(reopened[4:8, 5:10], data[4:8, 5:10])  # one whole chunk
    np.testing.assert_array_equal(
        reopened.oindex[[0, 7, 12], [1, 16]], data[[0, 7, 12]][:, [1, 16]]
    )
    np.testing.assert_array_equal(
        reopened.vindex[[0, 7, 12], [1, 16, 3]], data[[0, 7, 12], [1, 16, 3]]
    )
    mask = data != data.flat[0]
    np.testing.assert_array_equal(reopened.vindex[mask], data[mask])
    np.testing.assert_array_equal(da.from_zarr(reopened).compute(), data)


@pytest.mark.parametrize("layout", ARRAYS)
def test_other_stores_fill_values_and_resize(layout):
    arr = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(6, 7),
        chunks=(4, 5),
        dtype="f4",
        fill_value=-1.5,
        **layout,
    )
    assert type(_pipeline_of(arr)) is BatchedCodecPipeline
    arr[1, 2] = 3.0
    expected = np.full((6, 7), -1.5, dtype="f4")
    expected[1, 2] = 3.0
    np.testing.assert_array_equal(arr[...], expected)
    if "shards" not in layout:
        arr.resize((9, 7))
        grown = np.full((9, 7), -1.5, dtype="f4")
        grown[:6] = expected
        np.testing.assert_array_equal(arr[...], grown)
    nan = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(5, 3),
        chunks=(4, 5),
        dtype="f8",
        fill_value=np.nan,
        **layout,
    )
    assert np.isnan(nan[...]).all()


def test_other_stores_group_and_zarr_api(tmp_path):
    group = zarr.open_group(zarr.storage.LocalStore(tmp_path / "g.zarr"), mode="w")
    data = np.arange(24, dtype="i4").reshape(4, 6)
    group.create_array("a", data=data, chunks=(2, 3))
    assert type(_pipeline_of(group["a"])) is BatchedCodecPipeline
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "g.zarr"), mode="r")["a"][...], data
    )
    np.testing.assert_array_equal(zarr.load(str(tmp_path / "g.zarr/a")), data)


# -- a pipeline chosen elsewhere, and the off switch: fresh interpreters ------------------

_PROBE = """
import json, sys, numpy as np, zarr
{before}
import tiffstore
store = tiffstore.open(sys.argv[1])
path = zarr.config.get("codec_pipeline.path")
pipeline = None
if path in (tiffstore.PIPELINE_PATH, "zarr.core.codec_pipeline.BatchedCodecPipeline"):
    pipeline = type(zarr.open_array(store, mode="r")._async_array.codec_pipeline).__name__
print(json.dumps({{"path": path, "pipeline": pipeline}}))
"""


def _probe(directory: Path, env: dict[str, str], before: str = "") -> dict[str, object]:
    """``import tiffstore`` in a fresh interpreter: zarr's pipeline setting and a TiffStore's pipeline."""
    code = _PROBE.format(before=before)
    return fresh_interpreter(code, str(directory), env=env, clear=("ZARR_", "TIFFSTORE_"))


def test_nothing_configured_tiffstores_pipeline(sample_dir):
    assert _probe(sample_dir[0], {}) == {"path": PIPELINE_PATH, "pipeline": "TiffCodecPipeline"}


@pytest.mark.parametrize("chosen", [ZARRS, ZARR_PIPELINE_PATH], ids=["zarrs", "zarrs-default"])
def test_environment_variable_choice_is_kept(sample_dir, chosen):
    got = _probe(sample_dir[0], {"ZARR_CODEC_PIPELINE__PATH": chosen})
    assert got["path"] == chosen
    assert got["pipeline"] in (None, "BatchedCodecPipeline")


def test_config_set_before_import_is_kept(sample_dir):
    before = f'zarr.config.set({{"codec_pipeline.path": "{ZARRS}"}})'
    assert _probe(sample_dir[0], {}, before=before) == {"path": ZARRS, "pipeline": None}


def test_config_file_choice_is_kept(sample_dir, tmp_path):
    folder = tmp_path / "zarr-config"
    folder.mkdir()
    (folder / "zarr.yaml").write_text(f"codec_pipeline:\n  path: {ZARRS}\n")
    got = _probe(sample_dir[0], {"ZARR_CONFIG": str(folder)})
    assert got == {"path": ZARRS, "pipeline": None}


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_off_switch(sample_dir, value):
    got = _probe(sample_dir[0], {SWITCH_VARIABLE: value})
    assert got == {"path": ZARR_PIPELINE_PATH, "pipeline": "BatchedCodecPipeline"}

"""TiffStore against zarr-python 3's read-path checklist for stores, and the Mapping view."""

from __future__ import annotations

import json
import pickle

import numpy as np
import psutil
import pytest
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import tiffstore
from tiffstore.errors import ReadOnlyError
from tiffstore.sources.local import LocalSource


@pytest.fixture
def store(sample_dir):
    return tiffstore.open(sample_dir[0], chunks="page")


def _get(store: Store, key: str, byte_range=None) -> bytes | None:
    buf = sync(store.get(key, default_buffer_prototype(), byte_range))
    return None if buf is None else buf.to_bytes()


def test_is_a_read_only_zarr_store(store):
    assert isinstance(store, Store)
    assert store.read_only
    assert not store.supports_writes
    assert not store.supports_deletes
    assert store.supports_listing


def test_metadata_documents(store, sample_dir):
    zarray = json.loads(_get(store, ".zarray"))
    assert zarray["zarr_format"] == 2
    assert zarray["shape"] == list(sample_dir[1].shape)
    assert zarray["chunks"] == [1, 1, 1, 32, 24]
    assert zarray["compressor"] is None
    assert zarray["dtype"] == "<u2"
    zattrs = json.loads(_get(store, ".zattrs"))
    # The root attributes are the group view's too: the dims are on the image array.
    assert "_ARRAY_DIMENSIONS" not in zattrs
    assert [a["name"] for a in zattrs["tiffstore"]["axes"]] == ["ch", "stack", "z", "y", "x"]
    image_attrs = json.loads(_get(store, "image/.zattrs"))
    assert image_attrs["_ARRAY_DIMENSIONS"] == ["ch", "stack", "z", "y", "x"]


def test_byte_range_of_a_chunk_reads_only_that_range(store, sample_dir, monkeypatch):
    lengths: list[int] = []
    real = LocalSource.read_bytes

    def counting(self, name, offset, length):
        lengths.append(length)
        return real(self, name, offset, length)

    monkeypatch.setattr(LocalSource, "read_bytes", counting)
    store.mapping["0.1.0.0.0"]  # the first read of a file may check its header
    lengths.clear()
    got = _get(store, "0.1.2.0.0", RangeByteRequest(100, 164))
    assert got == sample_dir[1][0, 1, 2].tobytes()[100:164]
    assert lengths == [64]


def test_get_chunk_and_each_byte_request(store, sample_dir):
    ref = sample_dir[1]
    full = _get(store, "2.3.4.0.0")
    assert full == ref[2, 3, 4].tobytes()
    assert _get(store, "2.3.4.0.0", RangeByteRequest(10, 30)) == full[10:30]
    assert _get(store, "2.3.4.0.0", OffsetByteRequest(100)) == full[100:]
    assert _get(store, "2.3.4.0.0", SuffixByteRequest(16)) == full[-16:]
    assert _get(store, ".zarray", RangeByteRequest(0, 5)) == _get(store, ".zarray")[:5]


def test_get_partial_values(store, sample_dir):
    ref = sample_dir[1]
    got = sync(
        store.get_partial_values(
            default_buffer_prototype(),
            [("0.0.0.0.0", RangeByteRequest(0, 4)), ("1.2.0.0.0", None), ("0.1.5.0.0", None)],
        )
    )
    assert got[0].to_bytes() == ref[0, 0, 0].tobytes()[:4]
    assert got[1] is None  # the missing file
    assert got[2].to_bytes() == ref[0, 1, 5].tobytes()


@pytest.mark.parametrize(
    "key",
    [
        "9.0.0.0.0",
        "0.0.0.0",
        "0.0.0.0.0.0",
        "../etc/passwd",
        "0.0.-1.0.0",
        "a.b",
        "",
        "0/0/0/0/0",
        "zarr.json",
        "0.0.0.0.0 ",
        "0." * 4 + "99999999999999",
        "image/../0.0.0.0.0",
        "image/9.0.0.0.0",
        "ch/1",
        "nothing/.zarray",
    ],
)
def test_hostile_and_absent_keys_are_absent(store, key):
    assert _get(store, key) is None
    assert not sync(store.exists(key))
    with pytest.raises(FileNotFoundError):
        sync(store.getsize(key))
    assert key not in store.mapping


def test_exists_getsize_and_missing_chunks(store):
    assert sync(store.exists(".zarray"))
    assert sync(store.exists("0.0.0.0.0"))
    assert not sync(store.exists("1.2.0.0.0"))  # channel 1, stack 2 has no file
    assert sync(store.getsize("0.0.0.0.0")) == 32 * 24 * 2
    assert sync(store.getsize(".zattrs")) == len(_get(store, ".zattrs"))


def test_listing(store):
    async def collect(it):
        return [k async for k in it]

    keys = sync(collect(store.list()))
    assert keys[:2] == [".zarray", ".zattrs"]
    root_chunks = [k for k in keys if "/" not in k and k[0].isdigit()]
    # 3 x 4 files minus one missing, 6 pages each
    assert len(root_chunks) == 11 * 6
    assert "1.2.0.0.0" not in keys
    # The group view lists every image chunk (missing cells are served filled).
    assert sum(k.startswith("image/") and k[6].isdigit() for k in keys) == 12 * 6
    assert sync(collect(store.list_prefix("2.3."))) == [f"2.3.{z}.0.0" for z in range(6)]
    root = sync(collect(store.list_dir("")))
    assert {".zarray", ".zattrs", ".zgroup", ".zmetadata", "image", "ch", "wavelength"} <= set(root)
    assert set(root_chunks) <= set(root)
    assert sorted(sync(collect(store.list_dir("ch")))) == [".zarray", ".zattrs", "0"]
    assert sync(collect(store.list_dir("0.0.0.0.0"))) == []
    assert not sync(store.is_empty(""))


def test_writes_raise_read_only_error(store):
    buf = default_buffer_prototype().buffer.from_bytes(b"x")
    with pytest.raises(ReadOnlyError, match="read-only"):
        sync(store.set("0.0.0.0.0", buf))
    with pytest.raises(ReadOnlyError):
        sync(store.delete("0.0.0.0.0"))
    with pytest.raises(ReadOnlyError):
        sync(store.clear())
    with pytest.raises(ReadOnlyError):
        store.with_read_only(False)
    # zarr itself refuses to open a read-only store for writing...
    with pytest.raises(ValueError, match="read-only"):
        zarr.open_array(store, mode="w", shape=(1,), dtype="u1")
    # ...and a write through an array opened for reading reaches the store, which refuses.
    arr = zarr.open_array(store, mode="r")
    with pytest.raises(ReadOnlyError, match="materialize"):
        arr[0, 0, 0, 0, 0] = 1


def test_with_read_only_equality_and_pickling(store, sample_dir):
    again = store.with_read_only(True)
    assert again == store
    assert again is not store
    assert tiffstore.open(sample_dir[0], chunks="page") == store
    assert tiffstore.open(sample_dir[0]) != store  # other chunks
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store
    assert _get(clone, "0.1.2.0.0") == _get(store, "0.1.2.0.0")


def test_sync_helpers(store, sample_dir):
    ref = sample_dir[1]
    assert store.get_sync("0.0.1.0.0").to_bytes() == ref[0, 0, 1].tobytes()
    assert store.get_sync("1.2.0.0.0") is None
    assert json.loads(store.get_sync(".zarray").to_bytes())["zarr_format"] == 2
    part = store.get_sync("0.0.1.0.0", byte_range=RangeByteRequest(2, 6))
    assert part.to_bytes() == ref[0, 0, 1].tobytes()[2:6]


async def _collect(it):
    return [k async for k in it]


def test_mapping_view(store, sample_dir):
    mapping = store.mapping
    assert json.loads(mapping[".zarray"])["shape"] == list(sample_dir[1].shape)
    assert mapping["0.0.3.0.0"] == sample_dir[1][0, 0, 3].tobytes()
    # Channel 1's stack 2 has no file: its chunks are absent, so readers use the fill value.
    with pytest.raises(KeyError):
        mapping["1.2.0.0.0"]
    assert "1.2.0.0.0" not in mapping and mapping.get("1.2.0.0.0") is None
    assert "0.0.3.0.0" in mapping and ".zattrs" in mapping and 5 not in mapping
    keys = sync(_collect(store.list()))
    assert list(mapping) == keys and len(mapping) == len(keys)
    assert "1.2.0.0.0" not in keys and "image/1.2.0.0.0" in keys


def test_one_plane_read_touches_one_file_and_one_plane_of_bytes(sample_dir, local_reads):
    """With chunks="page", reading a[c, s, z] reads one plane's bytes from one file."""
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks="page")
    plane_bytes = 32 * 24 * 2
    calls = local_reads
    store.mapping["0.0.0.0.0"]  # warm up: metadata and any first-read header check
    calls.clear()
    io = psutil.Process().io_counters()
    before = io.read_chars
    got = store.mapping["2.1.3.0.0"]
    after = psutil.Process().io_counters().read_chars
    assert got == ref[2, 1, 3].tobytes()
    files = {name for name, _, _ in calls}
    assert len(files) == 1
    # A header check of a file first seen costs at most its header (< 1 KiB here).
    assert plane_bytes <= sum(n for _, _, n in calls) <= plane_bytes + 1024
    # The process as a whole read about one plane (the kernel's own count).
    assert plane_bytes <= after - before <= plane_bytes + 1024 + 4096

    # Through zarr too: one chunk, one file.
    calls.clear()
    arr = zarr.open_array(store, mode="r")
    calls.clear()
    np.testing.assert_array_equal(arr[0, 3, 5], ref[0, 3, 5])
    assert {name for name, _, _ in calls} == {
        store.manifest.files[int(store.manifest.file_index[0, 3])]
    }
    assert sum(n for _, _, n in calls) <= plane_bytes + 1024


def test_xarray_open_zarr_gives_coordinates(sample_dir):
    xr = pytest.importorskip("xarray")
    directory, ref = sample_dir
    ds = xr.open_zarr(tiffstore.open(directory))
    image = ds["image"]
    assert image.dims == ("ch", "stack", "z", "y", "x")
    assert image.dtype == ref.dtype  # no masking of pixels equal to the fill value
    np.testing.assert_array_equal(image.values, ref)
    assert ds["ch"].values.tolist() == [0, 1, 2]
    assert ds["wavelength"].dims == ("ch",)
    assert ds["wavelength"].values.tolist() == [488, 560, 642]
    msec = ds["msec"]
    assert msec.dims == ("ch", "stack")
    assert msec.attrs["units"] == "ms"
    assert np.isnan(msec.values[1, 2])  # the missing file
    assert msec.values[0, 1] == 10_123
    assert float(ds["image"].sel(ch=2, stack=3, z=0, y=0, x=0)) == ref[2, 3, 0, 0, 0]


def test_group_view_serves_missing_cells_filled(make_sample):
    directory, _ = make_sample(missing=[(0, 1)])
    store = tiffstore.open(directory, fill_value=5)
    group = zarr.open_group(store, mode="r")
    assert (group["image"][0, 1] == 5).all()
    assert zarr.open_array(store, mode="r").fill_value == 5


def test_read_only_errors_suggest_what_ships(sample_dir, tmp_path):
    directory, ref = sample_dir
    store = tiffstore.open(directory)
    with pytest.raises(ReadOnlyError) as info:
        store.with_read_only(False)
    with pytest.raises(ReadOnlyError) as refused:
        sync(store.delete("0.0.0.0.0"))
    for message in (str(info.value), str(refused.value)):
        assert "`tiffstore materialize SOURCE OUT`" in message
    # The suggestion works as written.
    tiffstore.materialize(store, str(tmp_path / "copy.zarr"))
    copy = zarr.open_group(str(tmp_path / "copy.zarr"), mode="r")
    np.testing.assert_array_equal(copy["image"][...], ref)

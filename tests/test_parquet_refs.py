"""Parquet references written directly: read by fsspec + zarr alone, and key for key what
fsspec's own ``LazyReferenceMapper`` writes from the same pairs."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr

import tiffstore
from tests.conftest import write_positions
from tiffstore.errors import OptionError, ReferenceError
from tiffstore.outputs.parquet_refs import write_parquet_references
from tiffstore.outputs.references import references
from tiffstore.sample import write_sample

pytest.importorskip("fastparquet")

Pairs = list[tuple[str, Any]]

#: Small acquisitions: each writes its TIFFs into a folder.
CASES: dict[str, Callable[[Path], object]] = {
    "raw": lambda d: write_positions(d),
    # Last strips stored short: inlined, beside byte ranges.
    "zlib-short-strips": lambda d: write_positions(
        d, shape=(4, 40, 50), compression="zlib", rowsperstrip=16
    ),
    # 64 strips a file: paths written as a category.
    "zlib-many-strips": lambda d: write_positions(
        d, shape=(8, 64, 50), compression="zlib", rowsperstrip=8
    ),
    # A cell with no file (its chunks inlined as fill), and coordinate arrays.
    "missing-compressed": lambda d: write_sample(
        d, channels=2, stacks=3, shape=(2, 32, 24), compression="zlib", missing=[(1, 2)]
    ),
    "coordinates": lambda d: write_sample(d, channels=3, stacks=4, shape=(2, 16, 12)),
}


def _pairs(folder: Path) -> Pairs:
    return list(references(tiffstore.open(folder), version=0, inline_missing=True))


def _fsspec_written(pairs: Pairs, folder: Path, record_size: int) -> None:
    """What tiffstore wrote before: fsspec's LazyReferenceMapper, a key at a time."""
    pytest.importorskip("kerchunk")  # its write() calls kerchunk.df
    from fsspec.implementations.reference import LazyReferenceMapper

    out = LazyReferenceMapper.create(
        str(folder), fs=fsspec.filesystem("file"), record_size=record_size
    )
    for key, value in pairs:
        if key != ".zmetadata":
            out[key] = value.encode() if isinstance(value, str) else value
    out.flush()


def _read_group(folder: Path) -> zarr.Group:
    fs = fsspec.filesystem(
        "reference",
        fo=str(folder),
        remote_protocol="file",
        remote_options={"asynchronous": True},
        asynchronous=True,
    )
    return zarr.open_group(zarr.storage.FsspecStore(fs, read_only=True), mode="r")


def _every_value(folder: Path) -> dict[str, Any]:
    """Every key fsspec's reader knows of (metadata, every chunk of every grid) -> its value."""
    from fsspec.implementations.reference import LazyReferenceMapper

    mapper = LazyReferenceMapper(str(folder))
    keys = list(mapper.zmetadata)
    for field in sorted(mapper.listdir()):
        zarray = mapper.zmetadata[f"{field}/.zarray"]
        grid = [math.ceil(s / c) for s, c in zip(zarray["shape"], zarray["chunks"], strict=True)]
        keys += [f"{field}/" + ".".join(map(str, i)) for i in np.ndindex(*grid or [1])]
    values: dict[str, Any] = {}
    for key in keys:
        try:
            value = mapper[key]
        except KeyError:
            value = "missing"
        # A row with no path reads back as [nan, 0, 0]: NaN compares unequal to itself.
        values[key] = repr(value) if isinstance(value, list) else value
    return values


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("record_size", [3, 100_000])
@pytest.mark.parametrize("case", list(CASES))
def test_fsspec_and_zarr_read_the_source(tmp_path, case, record_size):
    expected = CASES[case](tmp_path / "raw")
    store = tiffstore.open(tmp_path / "raw")
    pairs = _pairs(tmp_path / "raw")
    n = write_parquet_references(
        iter(pairs), fsspec.filesystem("file"), str(tmp_path / "r.parq"), record_size
    )
    assert n == sum(key != ".zmetadata" for key, _ in pairs)
    group = _read_group(tmp_path / "r.parq")
    np.testing.assert_array_equal(group["image"][...], zarr.open_array(store, mode="r")[...])
    live = xr.open_zarr(store)
    for name in group.array_keys():
        if name != "image":
            np.testing.assert_array_equal(group[name][...], live[name].values)
    if isinstance(expected, np.ndarray):  # write_positions' files, as tifffile reads them
        np.testing.assert_array_equal(group["image"][...], expected)
    image = group["image"]
    chunks = math.prod(math.ceil(s / c) for s, c in zip(image.shape, image.chunks, strict=True))
    records = math.ceil(chunks / record_size)
    assert len(list((tmp_path / "r.parq" / "image").glob("refs.*.parq"))) == records


@pytest.mark.parametrize("record_size", [3, 100_000])
@pytest.mark.parametrize("case", list(CASES))
def test_same_keys_and_values_as_fsspecs_writer(tmp_path, case, record_size):
    CASES[case](tmp_path / "raw")
    pairs = _pairs(tmp_path / "raw")
    write_parquet_references(pairs, fsspec.filesystem("file"), str(tmp_path / "ours"), record_size)
    _fsspec_written(pairs, tmp_path / "fsspec", record_size)
    files = _files(tmp_path / "ours")
    assert files == _files(tmp_path / "fsspec")
    for name in (f for f in files if f.endswith(".parq")):  # the same files, byte for byte
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "fsspec" / name).read_bytes()
    ours, theirs = (
        json.loads((tmp_path / k / ".zmetadata").read_text()) for k in ("ours", "fsspec")
    )
    assert ours == theirs and list(ours["metadata"]) == list(theirs["metadata"])
    assert _every_value(tmp_path / "ours") == _every_value(tmp_path / "fsspec")


def test_gaps_and_every_kind_of_value_as_fsspec_writes_them(tmp_path):
    """Chunks left out (single ones, a whole record), inlined base64 text, a bare URL, None."""
    CASES["zlib-short-strips"](tmp_path / "raw")
    # Chunks 1 and 35 left out, and 6 to 8: record 2 (of 3 chunks each) has none.
    gone = {"image/0.0.1.0", "image/2.3.2.0", "image/0.2.0.0", "image/0.2.1.0", "image/0.2.2.0"}
    pairs = [p for p in _pairs(tmp_path / "raw") if p[0] not in gone]
    index = {key: i for i, (key, _) in enumerate(pairs)}
    raw = "image/1.0.2.0"
    assert isinstance(pairs[index[raw]][1], bytes)
    pairs[index[raw]] = (raw, "base64:" + base64.b64encode(pairs[index[raw]][1]).decode())
    pairs[index["image/1.1.0.0"]] = ("image/1.1.0.0", pairs[index["image/1.1.0.0"]][1][:1])
    pairs[index["image/1.1.1.0"]] = ("image/1.1.1.0", None)
    write_parquet_references(pairs, fsspec.filesystem("file"), str(tmp_path / "ours"), 3)
    _fsspec_written(pairs, tmp_path / "fsspec", 3)
    assert _files(tmp_path / "ours") == _files(tmp_path / "fsspec")
    values = _every_value(tmp_path / "ours")
    assert values == _every_value(tmp_path / "fsspec")
    assert all(values[key] == "missing" for key in gone)
    assert isinstance(values[raw], bytes) and values["image/1.1.1.0"] == "missing"
    assert values["image/1.1.0.0"] == repr([str(tmp_path / "raw" / "pos1.tif")])


def test_out_of_order_pairs_are_refused(tmp_path):
    CASES["zlib-short-strips"](tmp_path / "raw")
    pairs = _pairs(tmp_path / "raw")
    fs = fsspec.filesystem("file")
    first = next(i for i, (key, _) in enumerate(pairs) if key.startswith("image/0."))
    swapped = list(pairs)
    swapped[first], swapped[first + 1] = swapped[first + 1], swapped[first]
    with pytest.raises(ReferenceError, match="C order"):
        write_parquet_references(swapped, fs, str(tmp_path / "a"), 100)
    chunk_first = [pairs[first], *pairs[:first], *pairs[first + 1 :]]
    with pytest.raises(ReferenceError, match=r"image/\.zarray"):
        write_parquet_references(chunk_first, fs, str(tmp_path / "b"), 100)
    pos = next(i for i, (key, _) in enumerate(pairs) if key == "pos/0")
    two_runs = [*pairs[:pos], pairs[first], pairs[pos], *pairs[first + 1 :]]
    with pytest.raises(ReferenceError, match="another array"):
        write_parquet_references(two_runs, fs, str(tmp_path / "c"), 100)
    beyond = [*pairs[:first], ("image/9.0.0.0", pairs[first][1])]
    with pytest.raises(ReferenceError, match="no chunk of the grid"):
        write_parquet_references(beyond, fs, str(tmp_path / "d"), 100)
    with pytest.raises(OptionError, match="record_size"):
        write_parquet_references(pairs, fs, str(tmp_path / "e"), 0)


def test_any_fsspec_file_system(tmp_path):
    """Written through the file system's own open, pipe and makedirs: here in memory."""
    CASES["zlib-short-strips"](tmp_path / "raw")
    pairs = _pairs(tmp_path / "raw")
    memory = fsspec.filesystem("memory")
    write_parquet_references(pairs, memory, "/refs.parq", 5)
    write_parquet_references(pairs, fsspec.filesystem("file"), str(tmp_path / "local"), 5)
    assert sorted(memory.cat(memory.find("/refs.parq")).values()) == sorted(
        p.read_bytes() for p in (tmp_path / "local").rglob("*") if p.is_file()
    )
    memory.rm("/refs.parq", recursive=True)

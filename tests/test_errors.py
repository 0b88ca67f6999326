"""Bad input gets a clear error naming the file and what is wrong."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile

import tiffstore
from tiffstore.errors import LayoutMismatchError, NamingError, SourceError, TiffReadError
from tiffstore.sample import sample_name


def test_empty_folder(tmp_path):
    with pytest.raises(SourceError, match="holds no TIFF files"):
        tiffstore.open(tmp_path)


def test_no_such_path(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        tiffstore.open(tmp_path / "nope")


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(SourceError, match="matches no TIFF files"):
        tiffstore.open(str(tmp_path / "*.tif"))


def test_files_of_different_shapes_name_both(make_sample):
    directory, _ = make_sample(channels=2, stacks=2, shape=(4, 16, 16))
    odd = directory / sample_name(1, 1)
    tifffile.imwrite(odd, np.zeros((4, 16, 17), np.uint16), photometric="minisblack")
    with pytest.raises(LayoutMismatchError) as info:
        tiffstore.open(directory)
    msg = str(info.value)
    assert odd.name in msg
    assert "shape" in msg


def test_files_of_different_dtypes(make_sample):
    directory, _ = make_sample(channels=2, stacks=2, shape=(4, 16, 16))
    tifffile.imwrite(
        directory / sample_name(0, 1), np.zeros((4, 16, 16), np.float32), photometric="minisblack"
    )
    with pytest.raises(LayoutMismatchError, match="dtype"):
        tiffstore.open(directory)


def test_not_a_tiff_names_the_file(make_sample):
    directory, _ = make_sample(channels=2, stacks=2, shape=(4, 16, 16))
    bad = directory / sample_name(1, 0)
    bad.write_bytes(b"this is not a tiff file at all" * 10)
    with pytest.raises(TiffReadError) as info:
        tiffstore.open(directory)
    assert bad.name in str(info.value)


def test_truncated_file_is_reported_when_read(make_sample):
    directory, _ = make_sample(channels=2, stacks=2, shape=(4, 16, 16))
    victim = directory / sample_name(1, 1)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 16 * 16 * 2 - 10])
    # Cut before the open, it looks still being written: left out, its cell the fill
    # value (cut after it, the file is one that changed: see
    # tests/reliability/test_changing_files.py, where a read raises).
    store = tiffstore.open(directory, chunks="page")
    assert store.incomplete == (victim.name,) and store.truncated == []
    arr = da.from_zarr(store)
    assert not arr[1, 1].compute().any()
    with pytest.raises(TiffReadError, match="truncated") as info:
        tiffstore.open(directory, validate=True)
    assert victim.name in str(info.value)


def test_names_without_a_common_structure(tmp_path):
    for name in ("a_1.tif", "b-x-2.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((4, 4), np.uint8))
    with pytest.raises(NamingError, match="do not share one structure"):
        tiffstore.open(tmp_path)


def test_same_size_file_holding_another_array_fails_when_read(make_sample):
    """A same-size file holding another array is detected on first read, never misread.

    (A same-size file holding the same array with another header is read by its own
    header: see test_plans.test_differing_header_is_read_with_its_own_layout.)
    """
    directory, _ref = make_sample(channels=1, stacks=6, shape=(3, 8, 8))
    victim = directory / sample_name(0, 2)
    other = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    # Same size, different header: a description padded to the same length is
    # impossible to arrange generally, so write big-endian with the same shape.
    tifffile.imwrite(victim, other, byteorder=">", photometric="minisblack")
    store = tiffstore.open(directory)
    assert victim.stat().st_size == (directory / sample_name(0, 1)).stat().st_size
    with pytest.raises(LayoutMismatchError, match="stack0002"):
        da.from_zarr(store).compute()

"""``store.refresh()`` and the "what is new" step (``manifest/growth.py``): the grown
array equals a fresh open, the old store keeps reading its own, only new headers are
read, and every change that is not growth is refused by name."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tests.conftest import stack_files
from tiffstore.errors import GrowthError, TiffStoreError
from tiffstore.manifest.growth import changed_chunks, grow
from tiffstore.manifest.model import Manifest
from tiffstore.refresh import extend_names
from tiffstore.sample import sample_name, write_sample
from tiffstore.sources.local import LocalSource

SHAPE = (4, 16, 12)


def read_all(store: tiffstore.TiffStore) -> np.ndarray:
    return np.asarray(zarr.open_array(store, mode="r")[...])


def assert_same_array(a: Manifest, b: Manifest) -> None:
    """The same array from the same bytes (which headers were parsed, and which only
    compared with a group's, may differ)."""
    assert (a.files, a.name_axes, a.coords, a.chunks) == (b.files, b.name_axes, b.coords, b.chunks)
    assert a.file_versions == b.file_versions and a.tables == b.tables
    np.testing.assert_array_equal(a.file_index, b.file_index)
    np.testing.assert_array_equal(a.file_sizes, b.file_sizes)
    assert [a.file_layout_of(i) for i in range(len(a.files))] == [
        b.file_layout_of(i) for i in range(len(b.files))
    ]


@pytest.fixture
def acquisition(tmp_path: Path) -> tuple[Path, Path]:
    """``(full, growing)``: 2 channels x 6 stacks written whole, and an empty folder that
    files are copied into as the microscope would write them."""
    full, growing = tmp_path / "full", tmp_path / "growing"
    write_sample(full, channels=2, stacks=6, shape=SHAPE)
    growing.mkdir()
    return full, growing


def arrive(full: Path, growing: Path, cells: list[tuple[int, int]]) -> None:
    for c, s in cells:
        shutil.copy2(full / sample_name(c, s), growing / sample_name(c, s))


def stacks(n0: int, n1: int, channels: int = 2) -> list[tuple[int, int]]:
    return [(c, s) for s in range(n0, n1) for c in range(channels)]


@pytest.fixture
def touched(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """The names of local files whose bytes were read (headers included)."""
    names: set[str] = set()
    real_open, real_bytes = LocalSource.open, LocalSource.read_bytes
    real_many = LocalSource.read_many_into

    def open_(self: LocalSource, name: str) -> Any:
        names.add(name)
        return real_open(self, name)

    def read_bytes(self: LocalSource, name: str, offset: int, length: int) -> bytes:
        names.add(name)
        return real_bytes(self, name, offset, length)

    def read_many_into(self: LocalSource, name: str, requests: Any) -> None:
        names.add(name)
        real_many(self, name, requests)

    monkeypatch.setattr(LocalSource, "open", open_)
    monkeypatch.setattr(LocalSource, "read_bytes", read_bytes)
    monkeypatch.setattr(LocalSource, "read_many_into", read_many_into)
    yield names


@pytest.mark.parametrize("options", [{}, {"chunks": "file"}, {"zarr_format": 3}])
def test_refresh_grows_the_stack_axis(
    acquisition: tuple[Path, Path], options: dict[str, Any]
) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 3))
    old = tiffstore.open(growing, **options)
    before = read_all(old)
    arrive(full, growing, stacks(3, 5))
    new = old.refresh()

    assert new.shape == (2, 5, *SHAPE) and old.shape == (2, 3, *SHAPE)
    growth = new.growth
    assert growth is not None and growth.axes == ("stack",) and growth.axis == "stack"
    assert growth.added_files == tuple(sorted(sample_name(c, s) for c, s in stacks(3, 5)))
    assert growth.filled_files == () and growth.still_missing_cells == 0
    assert "stack 3 -> 5" in growth.summary()
    # The grown array is tifffile's, and a fresh open's; the old store still reads its own.
    fresh = tiffstore.open(growing, **options)
    pinned = tiffstore.open(growing, **{**options, "chunks": old.chunks})
    assert_same_array(new.manifest, pinned.manifest)
    np.testing.assert_array_equal(read_all(new), stack_files(growing, 2, 5, SHAPE))
    np.testing.assert_array_equal(read_all(new), read_all(fresh))
    np.testing.assert_array_equal(read_all(old), before)
    np.testing.assert_array_equal(before, stack_files(growing, 2, 5, SHAPE)[:, :3])
    # Every old chunk key keeps its bytes.
    for key in [k for k in old.mapping if k[0].isdigit() or k.startswith("c/")]:
        assert new.get_bytes_sync(key) == old.get_bytes_sync(key), key


def test_only_new_headers_are_read(acquisition: tuple[Path, Path], touched: set[str]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 4))
    old = tiffstore.open(growing, validate=True)  # every header parsed at the open
    arrive(full, growing, stacks(4, 5))
    touched.clear()
    new = old.refresh()
    assert new.shape[1] == 5
    assert touched == {sample_name(c, 4) for c in range(2)}
    touched.clear()
    same = new.refresh()
    assert touched == set() and not same.growth.changed  # type: ignore[union-attr]
    assert same.manifest is new.manifest


def test_a_missing_cell_filled(tmp_path: Path) -> None:
    directory = tmp_path / "raw"
    write_sample(directory, channels=2, stacks=3, shape=SHAPE)
    late = directory / sample_name(1, 1)
    kept = late.read_bytes()
    late.unlink()
    old = tiffstore.open(directory)
    assert old.manifest.missing() and read_all(old)[1, 1].max() == 0
    late.write_bytes(kept)
    new = old.refresh()
    assert new.growth is not None
    assert new.growth.filled_files == (late.name,) and new.growth.axes == ()
    assert new.growth.still_missing_cells == 0
    np.testing.assert_array_equal(read_all(new), stack_files(directory, 2, 3, SHAPE))
    assert read_all(old)[1, 1].max() == 0  # the old store: still the fill value


def test_a_file_still_being_written_then_whole(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 3))
    name = sample_name(1, 3)
    data = (full / name).read_bytes()
    arrive(full, growing, [(0, 3)])
    (growing / name).write_bytes(data[:200])  # its header, cut short
    old = tiffstore.open(growing)
    assert old.incomplete == (name,) and old.shape[1] == 4
    (growing / name).write_bytes(data)
    new = old.refresh()
    assert new.incomplete == () and new.growth is not None
    assert new.growth.filled_files == (name,)
    np.testing.assert_array_equal(read_all(new), stack_files(growing, 2, 4, SHAPE))


def test_the_store_pickles_with_how_it_was_opened(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 2))
    old = pickle.loads(pickle.dumps(tiffstore.open(growing, chunks="page")))
    arrive(full, growing, stacks(2, 3))
    new = old.refresh()
    assert new.shape[1] == 3 and new.chunks == old.chunks
    assert pickle.loads(pickle.dumps(new)).refresh().shape == new.shape


def test_chunks_across_files_stay_put(tmp_path: Path) -> None:
    # 2-D planes named by z: the default chunks run across files along z, and resolve
    # against z's size. A refresh keeps the old chunks, so old keys keep their bytes.
    full, growing = tmp_path / "full", tmp_path / "growing"
    full.mkdir()
    growing.mkdir()
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 60000, (9, 8, 6), dtype=np.uint16)
    for z, plane in enumerate(planes):
        tifffile.imwrite(full / f"plane_z{z:03d}.tif", plane)
    for z in range(5):
        shutil.copy2(full / f"plane_z{z:03d}.tif", growing)
    old = tiffstore.open(growing)
    assert old.chunks[0] == 5
    for z in range(5, 9):
        shutil.copy2(full / f"plane_z{z:03d}.tif", growing)
    new = old.refresh()
    assert new.chunks == old.chunks and new.shape == (9, 8, 6)
    np.testing.assert_array_equal(read_all(new), planes)
    changed = changed_chunks(old.manifest, new.manifest)
    assert changed.reshape(-1).tolist() == [False, True]


def test_changed_chunks_mark_new_and_filled_cells(tmp_path: Path) -> None:
    directory = tmp_path / "raw"
    write_sample(directory, channels=2, stacks=4, shape=SHAPE)
    kept = {(c, s): (directory / sample_name(c, s)).read_bytes() for c, s in [(1, 1), (0, 3)]}
    for c, s in [(1, 1), (0, 3), (1, 3)]:
        (directory / sample_name(c, s)).unlink()
    old = tiffstore.open(directory, chunks="page")
    for (c, s), data in kept.items():
        (directory / sample_name(c, s)).write_bytes(data)
    new = old.refresh()
    growth = grow(old.manifest, new.manifest)
    assert growth.filled_files == (sample_name(1, 1),) and growth.axes == ("stack",)
    assert growth.still_missing_cells == 1
    changed = changed_chunks(old.manifest, new.manifest)
    assert changed.shape == new.manifest.chunk_grid
    cells = changed.any(axis=(2, 3, 4))
    assert cells.tolist() == [[False, False, False, True], [False, True, False, True]]
    assert changed[1, 1].all() and not changed[0, 0].any()


# -- what is not growth is refused ----------------------------------------------------


def test_a_new_channel_in_the_middle_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "raw"
    write_sample(directory, channels=3, stacks=2, shape=SHAPE)
    middle = {s: (directory / sample_name(1, s)).read_bytes() for s in range(2)}
    for s in range(2):
        (directory / sample_name(1, s)).unlink()
    old = tiffstore.open(directory)
    assert old.coords["ch"]["values"] == [0, 2]
    for s, data in middle.items():
        (directory / sample_name(1, s)).write_bytes(data)
    with pytest.raises(GrowthError, match=r"axis 'ch' did not grow at its end.*\[1\]"):
        old.refresh()
    assert old.shape[0] == 2 and read_all(old).shape[0] == 2  # the old store still reads


def test_a_rewritten_file_is_refused(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 3))
    old = tiffstore.open(growing)
    target = growing / sample_name(0, 1)
    tifffile.imwrite(target, np.zeros(SHAPE, np.uint16), photometric="minisblack")
    with pytest.raises(GrowthError, match=sample_name(0, 1)) as err:
        old.refresh()
    assert "changed" in str(err.value) and "again" in str(err.value)
    # Users catch it by its top-level name, beside the other errors.
    assert isinstance(err.value, tiffstore.GrowthError)


def test_a_touched_file_is_refused(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 2))
    old = tiffstore.open(growing)
    target = growing / sample_name(1, 0)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with pytest.raises(GrowthError, match="modification time"):
        old.refresh()


def test_a_removed_file_is_refused(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 3))
    old = tiffstore.open(growing)
    (growing / sample_name(0, 2)).unlink()
    with pytest.raises(GrowthError, match=f"removed or renamed.*{sample_name(0, 2)}"):
        old.refresh()


def test_another_file_shape_is_refused(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 2))
    old = tiffstore.open(growing)
    odd = sample_name(0, 2)
    tifffile.imwrite(growing / odd, np.ones((8, 16, 12), np.uint16), photometric="minisblack")
    with pytest.raises(TiffStoreError, match=odd):
        old.refresh()


def test_a_new_axis_is_refused(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 1))  # one stack: no stack axis yet
    old = tiffstore.open(growing)
    assert old.dims[0] == "ch" and len(old.dims) == 4
    arrive(full, growing, stacks(1, 2))
    with pytest.raises(GrowthError, match=r"axes are now \['ch', 'stack'\]"):
        old.refresh()


def test_a_reference_file_store_is_refused(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 2))
    refs = growing.parent / "refs.json"
    tiffstore.write_references(tiffstore.open(growing), str(refs))
    store = tiffstore.open(refs)
    assert store.opened_from is None
    with pytest.raises(GrowthError, match="no source to list again"):
        store.refresh()


def test_grow_compares_one_source(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 2))
    with pytest.raises(GrowthError, match="not this source"):
        grow(tiffstore.open(growing).manifest, tiffstore.open(full).manifest)
    with pytest.raises(GrowthError, match="chunks"):
        grow(
            tiffstore.open(growing).manifest,
            tiffstore.open(growing, chunks="page").manifest,
        )


# -- remote --------------------------------------------------------------------------


@pytest.mark.network
def test_refresh_on_s3(
    acquisition: tuple[Path, Path], s3_bucket: tuple[str, dict[str, Any]], upload: Any
) -> None:
    full, growing = acquisition
    url, options = s3_bucket
    arrive(full, growing, stacks(0, 2))
    upload(growing, f"{url}/raw/", options)
    old = tiffstore.open(f"{url}/raw/", storage_options=options)
    assert old.shape[1] == 2
    later = growing.parent / "later"
    later.mkdir()
    arrive(full, later, stacks(2, 4))
    upload(later, f"{url}/raw/", options)  # only the new objects, each appearing whole
    arrive(full, growing, stacks(2, 4))
    new = old.refresh()
    assert new.shape[1] == 4 and new.growth is not None
    assert len(new.growth.added_files) == 4
    np.testing.assert_array_equal(read_all(new), stack_files(growing, 2, 4, SHAPE))
    # The same manifest as a fresh open with the old store's chunks (kept by a refresh).
    fresh = tiffstore.open(f"{url}/raw/", storage_options=options, chunks=old.chunks)
    assert_same_array(new.manifest, fresh.manifest)
    np.testing.assert_array_equal(read_all(old), stack_files(growing, 2, 2, SHAPE))


# -- the new names: read with the template, or by the naming stage ---------------------


def test_new_names_extend_the_grid_with_the_template(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 2))
    old = tiffstore.open(growing).manifest
    names = [sample_name(c, s) for c, s in stacks(2, 4)]
    grid = extend_names(old, names)
    assert grid is not None
    assert [a.size for a in grid.axes] == [2, 4] and grid.axes[1].values[:2] == (0, 1)
    assert grid.positions == ((0, 2), (1, 2), (0, 3), (1, 3))
    wavelength = next(c for c in grid.coords if c.name == "wavelength")
    assert wavelength.values == (488, 560)
    # Not an extension: the naming stage decides (and grow() refuses what is not growth).
    assert extend_names(old, [sample_name(0, 0)]) is None  # a cell that has its file
    assert extend_names(old, ["thumbnail.tif"]) is None  # the template does not match it
    one = tiffstore.open(growing, include="*ch0*stack000[1]*").manifest
    assert extend_names(one, [sample_name(0, 0)]) is None  # no axis to extend: one file


def test_a_stray_arriving_goes_through_the_naming_stage(acquisition: tuple[Path, Path]) -> None:
    full, growing = acquisition
    arrive(full, growing, stacks(0, 2))
    old = tiffstore.open(growing)
    arrive(full, growing, stacks(2, 3))
    thumb = sample_name(0, 2).replace(".tif", "_thumb.tif")
    shutil.copy2(full / sample_name(0, 2), growing / thumb)
    new = old.refresh()
    assert new.left_out == (thumb,) and new.shape[1] == 3
    np.testing.assert_array_equal(read_all(new), stack_files(growing, 2, 3, SHAPE))
    assert thumb not in new.growth.added_files  # type: ignore[union-attr]
    # Next time the stray is known: the template path again, and nothing new.
    again = new.refresh()
    assert again.manifest is new.manifest and again.left_out == (thumb,)

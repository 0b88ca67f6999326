"""Choosing which files: recursion, include/exclude globs, local and fsspec listings."""

from __future__ import annotations

import pickle

import fsspec
import numpy as np
import pytest
import tifffile

import tiffstore
from tiffstore.errors import NamingError, SourceError
from tiffstore.sample import sample_name
from tiffstore.sources.base import SourceFile
from tiffstore.sources.files import NO_MTIME, ListedFiles
from tiffstore.sources.listing import matches_glob, resolve_source


@pytest.fixture
def with_mips(make_sample):
    """An acquisition with a subfolder of derived MIPs (other shape, other names)."""
    directory, ref = make_sample(channels=2, stacks=3, shape=(4, 16, 12))
    (directory / "MIPs").mkdir()
    for c in range(2):
        for s in range(3):
            name = sample_name(c, s)[: -len(".tif")] + "_MIP_z.tif"
            tifffile.imwrite(directory / "MIPs" / name, ref[c, s].max(axis=0))
    return directory, ref


def test_matches_glob_on_relative_name_or_file_name():
    assert matches_glob("MIPs/a_MIP_z.tif", ["MIPs/*"])
    assert matches_glob("MIPs/a_MIP_z.tif", ["*_MIP_z.tif"])
    assert matches_glob("sub/ex6_a.tif", ["ex6*"])
    assert not matches_glob("sub/ex6_a.tif", ["other/*"])


def test_mixed_folder_levels_say_which_glob_picks_the_acquisition(with_mips):
    directory, ref = with_mips
    with pytest.raises(NamingError, match="do not share one structure") as info:
        tiffstore.open(directory)
    assert "exclude=['MIPs/*']" in str(info.value)
    for options in ({"recursive": False}, {"exclude": "MIPs/*"}, {"include": ["*_0000t.tif"]}):
        store = tiffstore.open(directory, **options)
        assert store.shape == ref.shape, options
        np.testing.assert_array_equal(store.to_dask().compute(), ref)
    mips = tiffstore.open(directory, include="MIPs/*")
    assert mips.dims == ("ch", "stack", "y", "x")


def test_a_filter_that_leaves_nothing_is_a_clear_error(with_mips):
    with pytest.raises(SourceError, match="None of the 12 TIFF files is left"):
        tiffstore.open(with_mips[0], include="*.tiff")


def test_fsspec_listing_obeys_recursive_and_globs(with_mips):
    directory, ref = with_mips
    fs = fsspec.filesystem("memory")
    root = "memory://firstcontact-sources"
    for path in directory.rglob("*.tif"):
        fs.pipe(f"{root}/{path.relative_to(directory).as_posix()}", path.read_bytes())
    try:
        _, files = resolve_source(root, recursive=False)
        assert len(files) == 6 and all("/" not in f.name for f in files)
        _, files = resolve_source(root, exclude=["*_MIP_z.tif"])
        assert len(files) == 6
        _, files = resolve_source(root)
        assert len(files) == 12
        store = tiffstore.open(root, recursive=False)
        np.testing.assert_array_equal(store.to_dask().compute(), ref)
    finally:
        fs.rm(root, recursive=True)


def test_listed_files_are_columns_and_a_sequence_of_source_files():
    records = [
        SourceFile("b.tif", 2, 20),
        SourceFile("a.tif", 1, None),
        SourceFile("c.tif", 3, 30, version="v3"),
    ]
    files = ListedFiles.of(records)
    assert files.names == ("b.tif", "a.tif", "c.tif")
    assert files.sizes.tolist() == [2, 1, 3]
    assert files.mtimes is not None and files.mtimes.tolist() == [20, NO_MTIME, 30]
    assert files.versions == (None, None, "v3")
    # Made again from the columns, the records are the ones given.
    again = ListedFiles(files.names, files.sizes, files.mtimes, files.versions)
    assert list(again) == records and again[1] == records[1] and again == records
    assert [f.name for f in again.sorted()] == ["a.tif", "b.tif", "c.tif"]
    assert again.take([2, 0]).names == ("c.tif", "b.tif")
    assert again.take(np.array([False, True, False])).names == ("a.tif",)
    assert list(again[1:]) == records[1:]
    assert again.mtimes_or_unknown().tolist() == [20, -1, 30]  # as manifests keep them
    assert again.stamps() == {"b.tif": (2, 20), "c.tif": (3, 30)}
    assert pickle.loads(pickle.dumps(again)) == records
    # No time, no version known: no column (local files have no version, remote no time).
    bare = ListedFiles(["a.tif"], [1], [NO_MTIME], [None])
    assert bare.mtimes is None and bare.versions is None and bare.mtimes_or_unknown() is None


def test_block_file_keeps_every_block_a_read_needs(tmp_path):
    """A read spanning a kept block (the least recently used) and a missing one: the
    kept one must not be dropped to make room before the read is served."""
    from tiffstore.sources.blockfile import BlockFile
    from tiffstore.sources.local import LocalSource

    data = bytes(range(256)) * 4
    (tmp_path / "f.bin").write_bytes(data)
    source = LocalSource(str(tmp_path))
    with BlockFile(source, "f.bin", len(data), block=16, kept=2) as fh:
        fh.seek(0)
        assert fh.read(16) == data[:16]  # block 0
        fh.seek(16)
        assert fh.read(16) == data[16:32]  # block 1
        fh.seek(0)
        assert fh.read(1) == data[:1]  # block 0 again: block 1 is now the oldest
        fh.seek(20)
        assert fh.read(30) == data[20:50]  # block 1 (kept, oldest) and blocks 2, 3
        fh.seek(900)
        assert fh.read() == data[900:]

"""Choosing which files: recursion, include/exclude globs, local and fsspec listings."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
import tifffile

import tiffstore
from tiffstore.errors import NamingError, SourceError
from tiffstore.sample import sample_name
from tiffstore.sources import matches_glob, resolve_source


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

"""The napari reader, without napari: the npe2 manifest and the layer data it returns."""

from __future__ import annotations

import fnmatch
import importlib
import tomllib
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile

import tiffstore
from tiffstore.apps.napari_reader import contrast_limits, get_reader, layer_data
from tiffstore.detect import REFERENCE_SUFFIXES, TIFF_SUFFIXES

MANIFEST = Path(tiffstore.__file__).with_name("napari.yaml")


def test_manifest_validates_with_npe2():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()  # every python_name imports
    assert manifest.name == "tiffstore"
    [reader] = manifest.contributions.readers
    assert reader.accepts_directories
    assert {"*.tif", "*.tiff", "*.json", "*.parq"} <= set(reader.filename_patterns)
    # Every name tiffstore lists as a TIFF, in either case, is offered to the reader.
    for suffix in TIFF_SUFFIXES + REFERENCE_SUFFIXES:
        for name in (f"a{suffix}", f"a{suffix.upper()}"):
            assert any(fnmatch.fnmatchcase(name, p) for p in reader.filename_patterns), name
    [command] = [c for c in manifest.contributions.commands if c.id == reader.command]
    module, name = command.python_name.split(":")
    assert getattr(importlib.import_module(module), name) is get_reader


def test_manifest_declared_and_shipped():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["napari.manifest"]["tiffstore"] == (
        "tiffstore:napari.yaml"
    )
    assert "napari.yaml" in project["tool"]["setuptools"]["package-data"]["tiffstore"]


def test_reader_layers(sample_dir):
    directory, ref = sample_dir
    reader = get_reader(str(directory))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(directory))
    assert kind == "image"
    assert isinstance(data, da.Array)  # lazy: napari slices it plane by plane
    assert data.shape == ref.shape
    np.testing.assert_array_equal(data[2, 3, 1].compute(), ref[2, 3, 1])
    assert kwargs["channel_axis"] == 0
    assert kwargs["name"] == ["488 nm", "560 nm", "642 nm"]
    assert kwargs["rgb"] is False
    assert "scale" not in kwargs  # the sample files carry no voxel size
    limits = kwargs["contrast_limits"]
    assert len(limits) == 3
    for c, (lo, hi) in enumerate(limits):
        # Within the channel's real range (the missing cell's 0 is not sampled)...
        assert ref[c].min() <= lo < hi <= ref[c].max()
        # ...and exactly the range of the two sampled planes.
        stacks = [0, 3]
        sample = ref[c, stacks, ref.shape[2] // 2]
        assert (lo, hi) == (sample.min(), sample.max())


def test_contrast_sample_reads_a_few_planes_only(make_sample, monkeypatch):
    directory, _ = make_sample(channels=2, stacks=6, shape=(8, 16, 12))
    store = tiffstore.open(directory, chunks="page")
    reads: list[tuple[int, ...]] = []
    real = store.reader.read_chunk

    def counting(index):
        reads.append(tuple(index))
        return real(index)

    monkeypatch.setattr(store.reader, "read_chunk", counting)
    contrast_limits(store)
    assert sorted(reads) == [(c, s, 4, 0, 0) for c in (0, 1) for s in (0, 5)]


def test_missing_first_stack_is_not_sampled(make_sample):
    directory, ref = make_sample(channels=2, stacks=3, missing=[(1, 0)])
    limits = contrast_limits(tiffstore.open(directory))
    assert limits[1][0] > 0  # the fill value of the missing stack 0 is not the minimum
    assert limits[1] == (ref[1, 1:, 3].min(), ref[1, 1:, 3].max())


def test_one_channel_and_file_list(make_sample):
    directory, ref = make_sample(channels=1, stacks=2)
    files = sorted(str(p) for p in directory.iterdir())
    reader = get_reader(files)
    assert reader is not None
    [(data, kwargs, _)] = reader(files)
    assert "channel_axis" not in kwargs
    assert kwargs["name"] == directory.name
    lo, hi = kwargs["contrast_limits"]
    assert ref.min() <= lo < hi <= ref.max()
    np.testing.assert_array_equal(data.compute(), ref[0])


def test_channel_names_label_layers(tmp_path):
    for c, name in enumerate(["DAPI", "GFP"]):
        for t in range(2):
            data = np.full((4, 8), 10 * c + t + 1, dtype=np.uint8)
            tifffile.imwrite(tmp_path / f"well_A01_t{t}_{name}.tif", data)
    [(_, kwargs, _)] = layer_data(tiffstore.open(tmp_path))
    assert sorted(kwargs["name"]) == ["DAPI", "GFP"]


def test_scale_from_store(sample_dir, monkeypatch):
    directory, _ = sample_dir
    store = tiffstore.open(directory)
    monkeypatch.setattr(
        type(store), "scale", {"z": 2.5, "y": (0.65, "um"), "x": 0.65}, raising=False
    )
    [(_, kwargs, _)] = layer_data(store)
    assert kwargs["scale"] == (1.0, 2.5, 0.65, 0.65)  # stack, z, y, x: ch is split off


def test_get_reader_declines_what_it_cannot_open(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([]) is None
    assert get_reader(str(tmp_path / "refs.json")) is None  # absent


def test_npe2_reads_through_the_installed_plugin(sample_dir):
    """napari's own read path (npe2 discovery + the reader contribution), no GUI."""
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    try:
        pm.get_manifest("tiffstore")
    except KeyError:
        pytest.skip("tiffstore is not installed: its napari.manifest entry point is absent")
    directory, ref = sample_dir
    [(data, kwargs, kind)] = npe2.read([str(directory)], stack=False, plugin_name="tiffstore")
    assert (kind, kwargs["name"]) == ("image", ["488 nm", "560 nm", "642 nm"])
    np.testing.assert_array_equal(data[0, 1].compute(), ref[0, 1])


def test_channels_inside_the_files(hyperstacks):
    """ImageJ hyperstacks (Z, C, Y, X) per time point: the channel dim is a file dim."""
    directory, ref = hyperstacks
    store = tiffstore.open(directory)
    assert store.dims == ("t", "z", "c", "y", "x")
    [(data, kwargs, _)] = layer_data(store)
    assert kwargs["channel_axis"] == 2
    assert kwargs["name"] == ["c 0", "c 1"]
    for c, (lo, hi) in enumerate(kwargs["contrast_limits"]):
        sample = ref[[0, 2], 2, c]  # middle z of the first and last time point
        assert (lo, hi) == (sample.min(), sample.max())
    np.testing.assert_array_equal(data.compute(), ref)

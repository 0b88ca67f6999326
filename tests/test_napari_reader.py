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
from tiffstore.apps.grid import AcquisitionGrid
from tiffstore.apps.napari_reader import (
    SAMPLE_PLANES,
    contrast_limits,
    get_reader,
    layer_data,
    sample_indices,
)
from tiffstore.colors import wavelength_colormap
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
    assert "scale" not in kwargs and "units" not in kwargs  # the sample files carry none
    assert kwargs["axis_labels"] == [("stack", "z", "y", "x")] * 3
    assert kwargs["colormap"] == ["green", "red", "magenta"]  # 488, 560, 642 nm
    assert kwargs["blending"] == ["additive"] * 3 and kwargs["rendering"] == "mip"
    meta = [m["tiffstore"] for m in kwargs["metadata"]]
    assert [m["wavelength"] for m in meta] == [488.0, 560.0, 642.0]
    assert meta[0]["contrast_limits_range"] == (0.0, 65535.0)  # the dtype's, not the limits
    assert meta[0]["coords"]["msec"]["values"][0][1] == 10123  # each stack's time
    limits = kwargs["contrast_limits"]
    assert len(limits) == 3
    for c, (lo, hi) in enumerate(limits):
        present = [s for s in range(ref.shape[1]) if (c, s) != (1, 2)]
        data = ref[c, present]
        # Within the channel's real range (the missing cell's 0 is not sampled), and
        # above its 99.9th percentile: bright pixels anywhere are not flat-topped.
        assert data.min() <= lo < hi <= data.max()
        assert lo <= np.percentile(data, 0.1) and hi >= np.percentile(data, 99.9)


def test_contrast_sample_spreads_over_stacks_and_z(make_sample, monkeypatch):
    directory, _ = make_sample(channels=2, stacks=6, shape=(8, 16, 12))
    store = tiffstore.open(directory, chunks="page")
    reads: list[tuple[int, ...]] = []
    real = store.reader.read_chunk

    def counting(index):
        reads.append(tuple(index))
        return real(index)

    monkeypatch.setattr(store.reader, "read_chunk", counting)
    contrast_limits(store)
    # One plane per stack and z on a diagonal: first to last of each, 8 per channel.
    diagonal = [(round(i * 5 / 7), round(i * 7 / 7)) for i in range(8)]
    assert sorted(reads) == sorted((c, s, z, 0, 0) for c in (0, 1) for s, z in diagonal)


def test_sample_indices_bounded(make_sample):
    directory, _ = make_sample(channels=1, stacks=50, shape=(40, 4, 4))
    grid = AcquisitionGrid.of(tiffstore.open(directory))
    picks = sample_indices(grid, None)
    assert len(picks) == SAMPLE_PLANES
    assert picks[0][:2] == (0, 0) and picks[-1][:2] == (49, 39)


def test_missing_first_stack_is_not_sampled(make_sample):
    directory, ref = make_sample(channels=2, stacks=3, missing=[(1, 0)])
    limits = contrast_limits(tiffstore.open(directory))
    assert limits[1][0] > 0  # the fill value of the missing stack 0 is not the minimum
    assert ref[1, 1:].min() <= limits[1][0] < limits[1][1] <= ref[1, 1:].max()


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
    assert kwargs["scale"] == [(1.0, 2.5, 0.65, 0.65)] * 3  # stack, z, y, x: ch split off
    assert kwargs["units"] == [("pixel", "pixel", "um", "pixel")] * 3


def test_wavelength_colormaps_by_band():
    assert [wavelength_colormap(nm) for nm in (350, 405, 445, 488, 514, 532, 561, 594)] == [
        "blue",
        "blue",
        "cyan",
        "green",
        "yellow",
        "yellow",
        "red",
        "red",
    ]
    assert wavelength_colormap(640) == wavelength_colormap(900) == "magenta"


def test_a_failure_names_the_path_on_its_first_line(tmp_path):
    tifffile.imwrite(tmp_path / "a_ch0_t0.tif", np.zeros((4, 8), np.uint8))
    (tmp_path / "a_ch1_t0.tif").write_bytes(b"not a tiff")
    reader = get_reader(str(tmp_path))
    assert reader is not None  # a TIFF folder is tiffstore's: its failure is shown
    with pytest.raises(tiffstore.TiffStoreError) as caught:
        reader(str(tmp_path))
    first = str(caught.value).splitlines()[0]
    assert first.startswith(f"tiffstore cannot open {tmp_path}: ")
    assert "a_ch1_t0.tif" in first


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
    assert "colormap" not in kwargs  # no wavelengths: napari's own cycle
    for c, (lo, hi) in enumerate(kwargs["contrast_limits"]):
        assert ref[:, :, c].min() <= lo < hi <= ref[:, :, c].max()
    np.testing.assert_array_equal(data.compute(), ref)

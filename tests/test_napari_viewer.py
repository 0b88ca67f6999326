"""The napari reader in napari itself: layers as a viewer makes them, and its refusals.

``ViewerModel`` (napari's viewer without Qt) runs wherever napari installs; the Qt
viewer (``napari.Viewer(show=False)``) needs an X display with OpenGL: an ``Xvfb``
started here when there is no ``DISPLAY`` (CI installs Debian's xvfb and Qt's X
libraries: see ``.ci/run``). Each is skipped where it cannot start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tiffstore
from tiffstore.sample import write_sample

napari = pytest.importorskip("napari")

#: ImageJ metadata: z spacing 2 um, pixels 0.65 um.
IMAGEJ: dict[str, Any] = {
    "imagej": True,
    "resolution": (1 / 0.65, 1 / 0.65),
    "metadata": {"spacing": 2.0, "unit": "um", "axes": "ZYX"},
}


@pytest.fixture
def acquisition(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """3 channels (488, 560, 642 nm) x 6 stacks of ImageJ (8, 32, 24) uint16 files."""
    directory = tmp_path / "raw"
    write_sample(directory, channels=3, stacks=6, shape=(8, 32, 24), **IMAGEJ)
    return directory, np.asarray(tiffstore.open(directory).to_dask())


def check_layers(layers: list, ref: np.ndarray) -> None:
    assert [layer.name for layer in layers] == ["488 nm", "560 nm", "642 nm"]
    assert [layer.colormap.name for layer in layers] == ["green", "red", "magenta"]
    for c, layer in enumerate(layers):
        assert tuple(layer.axis_labels) == ("stack", "z", "y", "x")
        assert [str(u) for u in layer.units] == ["pixel"] + ["micrometer"] * 3
        np.testing.assert_allclose(layer.scale, [1, 2.0, 0.65, 0.65])
        lo, hi = layer.contrast_limits
        assert lo <= np.percentile(ref[c], 0.1) and hi >= np.percentile(ref[c], 99.9)
        assert hi <= ref[c].max()
        assert (layer.blending, layer.rendering) == ("additive", "mip")
        assert layer.metadata["tiffstore"]["coords"]["msec"]["units"] == "ms"


@pytest.fixture(scope="module")
def model_plugins() -> None:
    import npe2
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    try:
        npe2.PluginManager.instance().get_manifest("tiffstore")
    except KeyError:
        pytest.skip("tiffstore is not installed: its napari.manifest entry point is absent")


def test_viewer_model_layers(model_plugins, acquisition):
    from napari.components import ViewerModel

    directory, ref = acquisition
    viewer = ViewerModel()
    layers = viewer.open(str(directory), plugin="tiffstore")
    check_layers(layers, ref)
    assert tuple(viewer.dims.axis_labels) == ("stack", "z", "y", "x")


def test_viewer_model_refusals(model_plugins, tmp_path):
    from napari.components import ViewerModel

    viewer = ViewerModel()
    bad = tmp_path / "bad"
    write_sample(bad, channels=2, stacks=2, shape=(2, 8, 8))
    broken = sorted(bad.iterdir())[1]
    broken.write_bytes(b"not a tiff")
    with pytest.raises(Exception) as caught:  # napari may wrap it (ReaderPluginError)
        viewer.open(str(bad), plugin="tiffstore")
    error = caught.value
    while not isinstance(error, tiffstore.TiffStoreError) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, tiffstore.TiffStoreError)
    assert broken.name in str(error).splitlines()[0]
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match="refused"):  # not tiffstore's: napari's refusal
        viewer.open(str(tmp_path / "notes"), plugin="tiffstore")


@pytest.fixture(scope="module")
def display() -> Iterator[None]:
    """An X display for Qt and OpenGL: ``DISPLAY``, or an ``Xvfb`` started for the module."""
    env = dict(os.environ)
    process = None
    if not env.get("DISPLAY"):
        xvfb = shutil.which("Xvfb")
        if xvfb is None:
            pytest.skip("no DISPLAY and no Xvfb (apt install xvfb)")
        number = 90 + os.getpid() % 100
        process = subprocess.Popen(
            [xvfb, f":{number}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"]
        )
        env["DISPLAY"] = f":{number}"
        time.sleep(1)
    # Qt aborts the process when its platform cannot start: try it in a child first.
    probe = "import napari; napari.Viewer(show=False).close()"
    env.pop("QT_QPA_PLATFORM", None)
    tried = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=120)
    if tried.returncode != 0:
        if process is not None:
            process.terminate()
        pytest.skip(f"napari's Qt viewer cannot start: {tried.stderr.decode()[-400:]}")
    saved = {k: os.environ.get(k) for k in ("DISPLAY", "QT_QPA_PLATFORM")}
    os.environ["DISPLAY"] = env["DISPLAY"]
    os.environ.pop("QT_QPA_PLATFORM", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if process is not None:
        process.terminate()
        process.wait(10)


def test_qt_viewer(display, acquisition):
    directory, ref = acquisition
    viewer = napari.Viewer(show=False)
    try:
        layers = viewer.open(str(directory), plugin="tiffstore")
        check_layers(layers, ref)
        # The contrast slider spans the dtype, not just the sampled limits.
        assert [tuple(layer.contrast_limits_range) for layer in layers] == [(0, 65535)] * 3
        viewer.dims.ndisplay = 3  # the volume renders (mip) under Xvfb's OpenGL
    finally:
        viewer.close()

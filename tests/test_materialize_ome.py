"""materialize(ome=True): valid OME-NGFF 0.4 and 0.5, read back by ome-zarr-py, nothing lost
silently: the axis order said and recorded, the channels' wavelengths, the coordinates,
the pixel size or that it is unknown."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tiffstore import MaterializeError, materialize
from tiffstore.outputs.materialize.metadata import OME_RECORD
from tiffstore.outputs.materialize.ome import plan_axes, wavelength_color


def image(out: Path, path: str = "0") -> np.ndarray:
    return np.asarray(zarr.open_array(out, path=path, mode="r")[...])


def ome_attrs(out: Path) -> dict[str, Any]:
    """The OME-NGFF attributes: the group's own (0.4), or under ``ome`` (0.5)."""
    attrs = dict(zarr.open_group(out, mode="r").attrs)
    ome = attrs.get("ome", attrs)
    assert isinstance(ome, dict)
    return ome


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_ngff_validates(make_sample, tmp_path, zarr_format):
    models = pytest.importorskip(f"ome_zarr_models.v0{4 if zarr_format == 2 else 5}")
    from ome_zarr_models.common.omero import Omero

    directory, ref = make_sample(channels=2, stacks=3, shape=(4, 40, 30))
    out = tmp_path / "ome.zarr"
    store = tiffstore.open(directory, scale={"z": 2.0, "y": 0.5, "x": 0.5})
    summary = materialize(
        store,
        out,
        zarr_format=zarr_format,
        ome=True,
        levels=3,
        chunks=(1, 1, 2, 16, 16),
        shards=(1, 1, 4, 32, 32) if zarr_format == 3 else None,
        verify=True,
    )
    assert summary.verified
    group = zarr.open_group(out, mode="r")
    model = models.Image.from_zarr(group)
    attrs = model.attributes if zarr_format == 2 else model.attributes.ome
    multiscale = attrs.multiscales[0]
    assert [a.name for a in multiscale.axes] == ["stack", "ch", "z", "y", "x"]
    assert [a.type for a in multiscale.axes] == ["time", "channel", "space", "space", "space"]
    assert [d.path for d in multiscale.datasets] == ["0", "1", "2"]
    # The voxel size carries over: micrometres along z, y, x, doubled in y, x per level.
    assert [a.unit for a in multiscale.axes] == [None, None, *["micrometer"] * 3]
    scales = [d.coordinateTransformations[0].scale for d in multiscale.datasets]
    assert scales == [[1, 1, 2, 0.5, 0.5], [1, 1, 2, 1, 1], [1, 1, 2, 2, 2]]
    # The omero block is valid too (0.5's model leaves it unchecked: check it here).
    Omero.model_validate(ome_attrs(out)["omero"])
    # Level 0 is the source in OME order (time before channel); level 1 the 2 x 2 mean.
    np.testing.assert_array_equal(image(out, "0"), ref.transpose(1, 0, 2, 3, 4))
    level1 = image(out, "1")
    assert level1.shape == (3, 2, 4, 20, 15)
    expected = ref.transpose(1, 0, 2, 3, 4)[..., :2, :2].mean(axis=(-1, -2))
    np.testing.assert_array_equal(level1[..., 0, 0], np.rint(expected).astype(ref.dtype))
    assert image(out, "2").shape == (3, 2, 4, 10, 8)
    record = group.attrs[OME_RECORD]
    assert record["pixel_size"]["z"] == {"size": 2.0, "unit": "micrometer"}
    assert not any("no pixel size" in note for note in record["notes"])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_chunk_keys_are_nested(make_sample, tmp_path, zarr_format):
    """OME-NGFF 0.4 keys chunks ``0/1/0/0/0`` (``dimension_separator: "/"``); 0.5 ``c/...``."""
    directory, ref = make_sample(channels=2, stacks=2, shape=(3, 16, 12))
    out = tmp_path / "ome.zarr"
    materialize(directory, out, zarr_format=zarr_format, ome=True, levels=2)
    for level in ("0", "1"):
        if zarr_format == 2:
            meta = json.loads((out / level / ".zarray").read_text())
            assert meta["dimension_separator"] == "/"
            assert (out / level / "1" / "0" / "0" / "0" / "0").is_file()  # stack 1, ch 0
        else:
            meta = json.loads((out / level / "zarr.json").read_text())
            assert meta["chunk_key_encoding"]["configuration"]["separator"] == "/"
            assert (out / level / "c" / "1" / "0" / "0" / "0" / "0").is_file()
    np.testing.assert_array_equal(image(out), ref.transpose(1, 0, 2, 3, 4))
    # Without --ome the format 2 layout is zarr's default, flat keys.
    plain = tmp_path / "plain.zarr"
    materialize(directory, plain)
    assert json.loads((plain / "image" / ".zarray").read_text())["dimension_separator"] == "."


def test_verify_and_resume_find_nested_chunks(make_sample, tmp_path):
    directory, ref = make_sample(channels=2, stacks=2, shape=(3, 16, 12))
    out = tmp_path / "ome.zarr"
    materialize(directory, out, ome=True)
    (out / "0" / "1" / "0" / "0" / "0" / "0").write_bytes(b"not blosc at all")
    checked = materialize(directory, out, ome=True, resume=True, verify=True)
    assert checked.verified is False and checked.mismatched == ("0/1/0/0/0/0",)
    repaired = materialize(directory, out, ome=True, resume=True, verify=True)
    assert repaired.verified and repaired.complete and repaired.chunks_written == 1
    np.testing.assert_array_equal(image(out), ref.transpose(1, 0, 2, 3, 4))


def test_ome_says_what_it_does(make_sample, tmp_path, caplog):
    """The axis order and why, logged and kept; no pixel size: scale 1, no unit, said so."""
    directory, _ = make_sample(channels=2, stacks=3, shape=(4, 32, 24))
    out = tmp_path / "ome.zarr"
    with caplog.at_level(logging.INFO, logger="tiffstore"):
        materialize(directory, out, ome=True, levels=2)
    said = {r.levelno: r.getMessage() for r in caplog.records if "OME" in r.getMessage()}
    assert "transposed from the source's ('ch', 'stack', 'z', 'y', 'x')" in said[logging.INFO]
    assert "stack: time, a light-sheet stack is one volume" in said[logging.INFO]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no pixel size along z, y, x" in m and "--scale" in m for m in warned)

    attrs = ome_attrs(out)
    multiscale = attrs["multiscales"][0]
    assert all("unit" not in a for a in multiscale["axes"])  # no micrometre claimed
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[1, 1, 1, 1, 1], [1, 1, 1, 2, 2]]  # per pixel: the factor to level 0
    record = zarr.open_group(out, mode="r").attrs[OME_RECORD]
    assert record["dims"] == ["stack", "ch", "z", "y", "x"]
    assert record["source_dims"] == ["ch", "stack", "z", "y", "x"]
    assert [(a["name"], a["type"], a["source_index"]) for a in record["axes"]][:2] == [
        ("stack", "time", 1),
        ("ch", "channel", 0),
    ]
    assert record["pixel_size"] == {"z": None, "y": None, "x": None}
    assert record["notes"][0] == said[logging.INFO]
    assert any("time stamps are the coords msec, msecabs" in n for n in record["notes"])


def test_channels_and_coordinates_carry_over(make_sample, tmp_path):
    directory, ref = make_sample(channels=2, stacks=3, shape=(4, 32, 24))
    out = tmp_path / "ome.zarr"
    materialize(directory, out, ome=True)
    omero = ome_attrs(out)["omero"]
    channels = omero["channels"]
    assert [c["label"] for c in channels] == ["488 nm", "560 nm"]
    assert [c["color"] for c in channels] == ["00F7FF", "C3FF00"]  # cyan, yellow-green
    for c, channel in enumerate(channels):
        # The middle z of the first time point, 0.1-99.9 percentiles, as whole pixel values.
        low, high = np.percentile(ref[c, 0, 2], (0.1, 99.9))
        assert channel["window"] == {
            "min": 0,
            "max": 65535,
            "start": np.floor(low),
            "end": np.ceil(high),
        }
    assert omero["rdefs"]["defaultZ"] == 2
    # Every coordinate, its dims in the image's order (stack before ch) and values to match.
    source = tiffstore.open(directory)
    coords = zarr.open_group(out, mode="r").attrs[OME_RECORD]["coords"]
    assert set(coords) == set(source.coords)
    assert coords["wavelength"] == {"dims": ["ch"], "values": [488, 560], "units": "nm"}
    assert coords["msec"]["dims"] == ["stack", "ch"] and coords["msec"]["units"] == "ms"
    np.testing.assert_array_equal(
        coords["msec"]["values"], np.array(source.coords["msec"]["values"]).T
    )


def _write_angles(directory: Path) -> np.ndarray:
    """``angle{a}_t{t}.tif``: float32 planes over an axis NGFF has no type for."""
    directory.mkdir()
    rng = np.random.default_rng(1)
    ref = rng.normal(5.0, 2.0, (2, 3, 20, 16)).astype(np.float32)
    for a in range(2):
        for t in range(3):
            tifffile.imwrite(directory / f"angle{a}_t{t}.tif", ref[a, t])
    return ref


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_custom_axis_takes_the_channels_place(tmp_path, zarr_format):
    models = pytest.importorskip(f"ome_zarr_models.v0{4 if zarr_format == 2 else 5}")
    ref = _write_angles(tmp_path / "raw")
    out = tmp_path / "ome.zarr"
    materialize(tmp_path / "raw", out, ome=True, zarr_format=zarr_format)
    model = models.Image.from_zarr(zarr.open_group(out, mode="r"))
    attrs = model.attributes if zarr_format == 2 else model.attributes.ome
    axes = attrs.multiscales[0].axes
    assert [(a.name, a.type) for a in axes] == [
        ("t", "time"),
        ("angle", None),
        ("y", "space"),
        ("x", "space"),
    ]
    np.testing.assert_array_equal(image(out), ref.transpose(1, 0, 2, 3))
    # No channel axis: one omero channel, white, its window the float data's range.
    [channel] = ome_attrs(out)["omero"]["channels"]
    assert channel["color"] == "FFFFFF"
    plane = ref[0, 0]
    assert channel["window"]["min"] == pytest.approx(float(plane.min()))
    assert channel["window"]["max"] == pytest.approx(float(plane.max()))
    assert plane.min() < channel["window"]["start"] < channel["window"]["end"] < plane.max()


@pytest.mark.parametrize(
    ("dims", "written"),
    [
        (("ch", "stack", "z", "y", "x"), ("stack:time", "ch:channel", "z", "y", "x")),
        (("t", "c", "z", "y", "x"), ("t:time", "c:channel", "z", "y", "x")),
        (("y", "x", "c"), ("c:channel", "y", "x")),  # RGB samples before the plane
        (("tile", "z", "y", "x"), ("tile:None", "z", "y", "x")),
        (("t", "stack", "y", "x"), ("t:time", "stack:None", "y", "x")),  # t is the time
        (("y", "x"), ("y", "x")),
    ],
)
def test_axis_order_and_types(dims, written):
    expected = [(w.split(":")[0], w.split(":")[1] if ":" in w else "space") for w in written]
    assert [(a.name, str(a.type)) for a in plan_axes(dims)] == expected


@pytest.mark.parametrize(
    ("dims", "named"),
    [
        (("ch", "tile", "z", "y", "x"), "tile fit no place"),  # channel and another
        (("view", "tile", "y", "x"), "view, tile fit no place"),  # two others
        (("t", "ch", "tile", "z", "y", "x"), "tile fit no place"),
        (("ch", "x"), "the array's dims are ('ch', 'x')"),  # one space axis
        (("ch", "stack", "z", "z2", "y", "x"), "the array's dims are"),  # four space-like
    ],
)
def test_dims_ngff_cannot_hold_are_refused(dims, named):
    with pytest.raises(MaterializeError, match="ome=True needs") as info:
        plan_axes(dims)
    assert named in str(info.value) and "without ome=True" in str(info.value)


def test_wavelength_colors():
    def rgb(nm: float) -> tuple[int, ...]:
        return tuple(int(wavelength_color(nm)[i : i + 2], 16) for i in (0, 2, 4))

    assert rgb(450)[0] == 0 and rgb(450)[1] < rgb(450)[2] == 255  # blue
    assert rgb(530)[0] < rgb(530)[1] == 255 and rgb(530)[2] == 0  # green
    assert rgb(620)[0] == 255 > rgb(620)[1] and rgb(620)[2] == 0  # orange
    assert wavelength_color(350) == wavelength_color(380)  # ultraviolet: violet
    assert wavelength_color(900) == "FF0000"  # infrared: red


_READ_BACK = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(sys.argv[1]))())
    node = nodes[0]
    np.save(sys.argv[2], np.asarray(node.data[0]))
    meta = {k: node.metadata.get(k) for k in ("axes", "channel_names", "contrast_limits")}
    meta["levels"] = [list(level.shape) for level in node.data]
    meta["imported"] = sorted(m.split(".")[0] for m in sys.modules)
    with open(sys.argv[3], "w") as f:
        json.dump(meta, f)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("ome_zarr") is None, reason="needs ome-zarr")
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_py_reads_it_back(make_sample, tmp_path, zarr_format):
    """ome-zarr-py, in a process of its own that never imports tiffstore, reads the values
    tifffile reads, with the axes and channels."""
    directory, ref = make_sample(channels=2, stacks=3, shape=(4, 32, 24))
    out = tmp_path / "ome.zarr"
    materialize(directory, out, ome=True, levels=2, zarr_format=zarr_format)
    script = tmp_path / "read_back.py"
    script.write_text(_READ_BACK)
    pixels, meta_file = tmp_path / "pixels.npy", tmp_path / "meta.json"
    subprocess.run(
        [sys.executable, str(script), str(out), str(pixels), str(meta_file)],
        check=True,
        cwd=tmp_path,
        timeout=120,
    )
    meta = json.loads(meta_file.read_text())
    assert "tiffstore" not in meta["imported"]
    np.testing.assert_array_equal(np.load(pixels), ref.transpose(1, 0, 2, 3, 4))
    assert [a["name"] for a in meta["axes"]] == ["stack", "ch", "z", "y", "x"]
    assert meta["channel_names"] == ["488 nm", "560 nm"]
    assert meta["levels"] == [[3, 2, 4, 32, 24], [3, 2, 4, 16, 12]]
    assert all(start < end for start, end in meta["contrast_limits"])

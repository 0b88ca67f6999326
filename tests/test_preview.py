"""``tiffstore preview``: the contact sheet, checked pixel by pixel against the source."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

import tiffstore
from tiffstore.apps.grid import evenly_spaced
from tiffstore.apps.preview import write_preview
from tiffstore.cli.main import main


def _shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """Block maximum, written plainly: each output pixel is the max of its block."""
    h, w = image.shape
    out = np.empty((-(-h // factor), -(-w // factor)), dtype=image.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = image[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor].max()
    return out


def test_sheet_layout_missing_mark_and_pixels(make_sample, tmp_path):
    directory, ref = make_sample(channels=2, stacks=5, shape=(20, 40, 30), missing=[(1, 2)])
    store = tiffstore.open(directory, chunks="page")
    out = tmp_path / "sheet.png"
    preview = write_preview(store, out, max_columns=3, max_planes=6, tile=16)

    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[1::-1] == preview.size
    assert preview.row_labels == ("488 nm", "560 nm")
    assert preview.column_labels == ("stack=0", "stack=2", "stack=4")
    assert preview.columns_total == 5
    assert preview.projected_dims == ("z",)
    planes = [p[0] for p in preview.planes]
    assert planes == evenly_spaced(20, 6) and len(planes) == 6 and planes[-1] == 19
    assert preview.downsample == 3  # 40 rows onto 16 pixels
    assert len(preview.cells) == 6

    stacks = [0, 2, 4]
    expected = {
        (c, k): _shrink(ref[c, s, planes].max(axis=0), 3)
        for c in range(2)
        for k, s in enumerate(stacks)
        if (c, s) != (1, 2)
    }
    for cell in preview.cells:
        left, top, right, bottom = cell.box
        assert (bottom - top, right - left) == (14, 10)
        pixels = picture[top:bottom, left:right].astype(int)
        if cell.missing:
            assert (cell.row, cell.column) == (1, 1)
            assert cell.label == "560 nm, stack=2"
            assert (pixels[..., 0] > pixels[..., 1]).mean() > 0.5  # red, not an image
            continue
        values = [v for (c, _), v in expected.items() if c == cell.row]
        lo, hi = np.percentile(np.concatenate([v.ravel() for v in values]), [0.5, 99.5])
        assert preview.contrast[cell.row] == pytest.approx((lo, hi))
        want = np.clip(np.rint((expected[cell.row, cell.column] - lo) * 255 / (hi - lo)), 0, 255)
        assert (pixels[..., 0] == pixels[..., 2]).all()  # gray
        np.testing.assert_allclose(pixels[..., 0], want, atol=1)
    assert [c.missing for c in preview.cells].count(True) == 1
    # Each cell is labelled with the timestamps parsed from its file's name.
    [cell] = [c for c in preview.cells if (c.row, c.column) == (0, 1)]
    assert cell.label.startswith("488 nm, stack=2, msec=20246 ms, msecabs=")


def test_reads_only_the_planes_it_draws(make_sample, tmp_path):
    directory, _ = make_sample(channels=2, stacks=6, shape=(12, 16, 16), missing=[(0, 5)])
    store = tiffstore.open(directory, chunks="page")
    read: list[tuple[int, ...]] = []
    # Through zarr's Store protocol (read_chunk_bytes) or tiffstore's codec pipeline,
    # which zarr uses by default (read_chunk): either way a chunk read is counted.
    for method in ("read_chunk_bytes", "read_chunk"):
        real = getattr(store.reader, method)

        def counting(index, *args, _real=real, **kwargs):
            read.append(tuple(index))
            return _real(index, *args, **kwargs)

        setattr(store.reader, method, counting)
    calls: list[tuple[int, int]] = []
    preview = write_preview(
        store, tmp_path / "p.png", max_columns=2, max_planes=3, progress=lambda *a: calls.append(a)
    )
    planes = [p[0] for p in preview.planes]
    assert planes == [0, 6, 11]
    # Columns: stacks 0 and 5; channel 0's stack 5 is missing and is not read.
    want = {(c, s, z, 0, 0) for c, s in [(0, 0), (1, 0), (1, 5)] for z in planes}
    assert sorted(read) == sorted(want)
    assert calls[0] == (0, 9) and calls[-1] == (9, 9)


def test_one_channel_all_planes(make_sample, tmp_path):
    directory, ref = make_sample(channels=1, stacks=2, shape=(5, 8, 8))
    preview = write_preview(tiffstore.open(directory), tmp_path / "one.png", max_planes=0, tile=8)
    assert preview.row_labels == ("",)
    assert [p[0] for p in preview.planes] == [0, 1, 2, 3, 4]
    left, top, right, bottom = preview.cells[1].box
    pixels = np.asarray(Image.open(tmp_path / "one.png").convert("L"))[top:bottom, left:right]
    mip = ref[0, 1].max(axis=0)
    # Same order of pixel values as the projection (the contrast is monotonic).
    assert np.corrcoef(pixels.ravel(), mip.ravel())[0, 1] > 0.99


def test_cli_preview_json(sample_dir, tmp_path, capsys):
    directory, _ = sample_dir
    out = tmp_path / "cli.png"
    assert main(["preview", str(directory), str(out), "--json", "--stacks", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.is_file()
    assert Image.open(out).size == tuple(report["size"])
    assert report["columns"] == ["stack=0", "stack=3"]
    assert report["rows"] == ["488 nm", "560 nm", "642 nm"]
    assert report["missing"] == []  # channel 1's stack 2 is not among the columns drawn
    assert main(["preview", str(directory), str(out)]) == 0
    assert "560 nm, stack=2" in capsys.readouterr().out


def test_cli_preview_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["preview", "--help"])
    assert "tiffstore preview raw/ preview.png" in capsys.readouterr().out


def test_evenly_spaced():
    assert evenly_spaced(199, 8)[0] == 0 and evenly_spaced(199, 8)[-1] == 198
    assert len(evenly_spaced(199, 8)) == 8
    assert evenly_spaced(5, 0) == [0, 1, 2, 3, 4]
    assert evenly_spaced(9, 1) == [4]


def test_channels_inside_the_files(hyperstacks, tmp_path):
    """ImageJ hyperstacks (Z, C, Y, X) per time point: rows are the files' channels."""
    directory, ref = hyperstacks
    out = tmp_path / "ij.png"
    preview = write_preview(tiffstore.open(directory), out, max_planes=0, tile=16)
    assert preview.row_labels == ("c 0", "c 1")
    assert preview.column_labels == ("t=0", "t=1", "t=2")
    assert preview.projected_dims == ("z",) and preview.downsample == 1
    [cell] = [c for c in preview.cells if (c.row, c.column) == (1, 2)]
    left, top, right, bottom = cell.box
    pixels = np.asarray(Image.open(out).convert("L"))[top:bottom, left:right]
    lo, hi = preview.contrast[1]
    want = np.clip(np.rint((ref[2, :, 1].max(axis=0) - lo) * 255 / (hi - lo)), 0, 255)
    np.testing.assert_allclose(pixels, want, atol=1)


def test_cli_progress_on_a_terminal(sample_dir, tmp_path):
    import io

    from rich.console import Console

    from tiffstore.cli.parser import build_parser

    directory, _ = sample_dir
    out = tmp_path / "tty.png"
    args = build_parser().parse_args(["preview", str(directory), str(out), "--planes", "2"])
    args.source = args.source[0]
    text = io.StringIO()
    console = Console(file=text, force_terminal=True, width=100)
    assert args.func(args, console) == 0
    assert out.is_file()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.getvalue())
    assert "reading planes" in shown  # the progress bar was drawn
    assert "2 of 6 plane(s)" in shown

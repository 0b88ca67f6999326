"""Files still being written: left out of an open with one warning that names them, their
cells read as the fill value; refused with validate=True; named by ``inspect``. And
what else is in a folder, said plainly: two experiments, a stray beside a wrong pattern.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import tiffstore
from tests.conftest import upload_folder
from tiffstore.cli.main import main
from tiffstore.errors import NamingError, TiffReadError

SHAPE = (4, 16, 16)
FILL = 65535  # no pixel of the written files holds it


def write_series(
    folder: Path, n: int = 4, shape: tuple[int, ...] = SHAPE, **options: Any
) -> dict[str, np.ndarray]:
    """``n`` files ``img_t{k}.tif`` of random uint16 pixels; returns name -> pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = {}
    for k in range(n):
        data = rng.integers(0, 4000, shape, dtype=np.uint16)
        name = f"img_t{k}.tif"
        tifffile.imwrite(folder / name, data, photometric="minisblack", **options)
        out[name] = data
    return out


def _keep(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:n])


def _data_end(path: Path) -> int:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[-1]
        return int(page.dataoffsets[-1] + page.databytecounts[-1])


def _first_ifd_at(path: Path, offset: int) -> None:
    """The header's first 200 bytes, pointing at a directory not written yet."""
    head = path.read_bytes()[:200]
    path.write_bytes(head[:4] + offset.to_bytes(4, "little") + head[8:])


#: Ways a file looks while a writer is at it: name -> surgery on a complete file.
MID_WRITE: dict[str, Callable[[Path], None]] = {
    "empty": lambda p: _keep(p, 0),
    "six bytes of header": lambda p: _keep(p, 6),
    "first 100 bytes": lambda p: _keep(p, 100),
    "cut inside the pixel data": lambda p: _keep(p, _data_end(p) - 300),
    "first directory not yet written": lambda p: _first_ifd_at(p, 10**6),
}

#: What validate=True says of each.
WORDS = {
    "empty": "empty",
    "six bytes of header": "cut short",
    "first 100 bytes": "cannot be read yet",
    "cut inside the pixel data": "past the end of the file",
    "first directory not yet written": "cannot be read yet",
}


def assert_reads(
    store: tiffstore.TiffStore, files: dict[str, np.ndarray], incomplete: set[str]
) -> None:
    """Each complete file's cell equals its pixels; each incomplete one's is all fill."""
    arr = store.to_dask().compute()
    for k, (name, data) in enumerate(sorted(files.items())):
        if name in incomplete:
            assert (arr[k] == store.manifest.fill_value).all(), name
        else:
            np.testing.assert_array_equal(arr[k], data)


@pytest.mark.parametrize("kind", list(MID_WRITE))
def test_a_file_mid_write_is_left_out_with_one_warning(kind, tmp_path, caplog):
    files = write_series(tmp_path)
    MID_WRITE[kind](tmp_path / "img_t2.tif")
    with caplog.at_level(logging.DEBUG):
        store = tiffstore.open(tmp_path, fill_value=FILL)
    assert store.incomplete == ("img_t2.tif",)
    assert store.shape == (4, *SHAPE)  # the grid is the names', the cell is there
    assert "img_t2.tif" not in store.manifest.files
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "img_t2.tif" in warnings[0].getMessage()
    assert "still being written" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]
    assert_reads(store, files, {"img_t2.tif"})
    again = pickle.loads(pickle.dumps(store))
    assert again.incomplete == store.incomplete
    assert store.with_read_only(True).incomplete == store.incomplete


@pytest.mark.parametrize("kind", list(MID_WRITE))
def test_validate_refuses_a_file_mid_write_and_says_why(kind, tmp_path):
    write_series(tmp_path)
    MID_WRITE[kind](tmp_path / "img_t2.tif")
    with pytest.raises(TiffReadError) as info:
        tiffstore.open(tmp_path, validate=True)
    message = str(info.value)
    assert "img_t2.tif" in message and WORDS[kind] in message
    assert "still being written" in message
    assert "without validate=True" in message and "exclude=" in message


def test_several_files_mid_write_are_named_first_few_and_counted(tmp_path, caplog):
    files = write_series(tmp_path, n=10)
    for k in range(2, 9):
        _keep(tmp_path / f"img_t{k}.tif", 0 if k % 2 else 50)
    with caplog.at_level(logging.WARNING):
        store = tiffstore.open(tmp_path, fill_value=FILL)
    assert store.incomplete == tuple(f"img_t{k}.tif" for k in range(2, 9))
    (warning,) = caplog.records
    assert "Left out 7 files" in warning.getMessage() and "and 2 more" in warning.getMessage()
    assert_reads(store, files, set(store.incomplete))


def test_an_incomplete_first_file_decides_no_shape(tmp_path):
    """The first file (by name) cut short: the array is the siblings' all the same."""
    files = write_series(tmp_path)
    _keep(tmp_path / "img_t0.tif", _data_end(tmp_path / "img_t0.tif") // 2)
    store = tiffstore.open(tmp_path, fill_value=FILL)
    assert store.incomplete == ("img_t0.tif",) and store.shape == (4, *SHAPE)
    assert_reads(store, files, {"img_t0.tif"})


def test_every_file_mid_write_is_a_clear_error(tmp_path):
    write_series(tmp_path, n=3)
    for k in range(3):
        _keep(tmp_path / f"img_t{k}.tif", 0)
    with pytest.raises(
        TiffReadError, match="Every one of the 3 files looks still being written"
    ) as info:
        tiffstore.open(tmp_path)
    assert "img_t0.tif" in str(info.value)


def test_a_broken_file_is_still_an_error(tmp_path):
    """Not a TIFF at all, or corrupt at its siblings' size: no file being written."""
    write_series(tmp_path)
    (tmp_path / "img_t1.tif").write_text("notes\n" * 200)
    with pytest.raises(TiffReadError, match=r"img_t1\.tif: not a TIFF"):
        tiffstore.open(tmp_path)


def test_a_file_growing_between_listing_and_header_read(tmp_path):
    """Listed at one size, another when its header is read: a writer is at it."""
    files = write_series(tmp_path)
    victim = tmp_path / "img_t3.tif"
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 3])

    def progress(step: str, done: int, total: int | None) -> None:
        if step == "headers" and done == 0:
            victim.write_bytes(whole)  # done writing, after the listing saw a third

    store = tiffstore.open(tmp_path, fill_value=FILL, progress=progress)
    assert store.incomplete == ("img_t3.tif",)
    assert_reads(store, files, {"img_t3.tif"})
    assert tiffstore.open(tmp_path).incomplete == ()  # complete now


# -- ImageJ acquisitions: later page directories after the pixel data -------------


@pytest.fixture
def imagej_acquisition(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """18 ImageJ stacks of (40, 64, 64), as an acquisition in the issue's trial."""
    rng = np.random.default_rng(3)
    files = {}
    for t in range(18):
        data = rng.integers(0, 4000, (40, 64, 64), dtype=np.uint16)
        name = f"ex6-2_ch0_t{t:03d}.tif"
        tifffile.imwrite(tmp_path / name, data, imagej=True)
        files[name] = data
    return tmp_path, files


def test_imagej_file_cut_inside_its_pixel_data(imagej_acquisition, caplog):
    """tifffile reads one page of it (its directories are lost): no LayoutMismatchError."""
    folder, files = imagej_acquisition
    victim = folder / "ex6-2_ch0_t017.tif"
    _keep(victim, victim.stat().st_size // 2)
    with caplog.at_level(logging.DEBUG):
        store = tiffstore.open(folder, fill_value=FILL)
    assert store.incomplete == (victim.name,) and store.shape[0] == 18
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "cut short inside its pixel data" in warning.getMessage()
    assert "invalid page offset" in warning.getMessage()  # tifffile's word, folded in
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]
    assert_reads(store, files, {victim.name})


def test_imagej_file_cut_in_its_trailing_directories(imagej_acquisition):
    """Only the last 4,000 bytes lost: the pixels are there, the page directories not."""
    folder, files = imagej_acquisition
    victim = folder / "ex6-2_ch0_t005.tif"
    _keep(victim, victim.stat().st_size - 4000)
    store = tiffstore.open(folder, fill_value=FILL)
    assert store.incomplete == (victim.name,) and store.truncated == []
    assert_reads(store, files, {victim.name})
    with pytest.raises(TiffReadError, match="page directories after the pixel data"):
        tiffstore.open(folder, validate=True)


def test_tifffile_says_nothing_on_stderr(imagej_acquisition, capfd):
    folder, _ = imagej_acquisition
    _keep(folder / "ex6-2_ch0_t017.tif", 100_000)
    logging.getLogger("tifffile").addHandler(handler := logging.StreamHandler())
    try:
        tiffstore.open(folder)
    finally:
        logging.getLogger("tifffile").removeHandler(handler)
    assert "tifffile" not in capfd.readouterr().err


# -- inspect ----------------------------------------------------------------------


def test_inspect_lists_files_still_being_written(tmp_path, capsys):
    write_series(tmp_path)
    _keep(tmp_path / "img_t1.tif", 0)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Still being written 1 file" in out and "img_t1.tif" in out
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["incomplete"] == ["img_t1.tif"] and report["files"] == 3
    assert main(["inspect", str(tmp_path), "--validate"]) == 1
    err = capsys.readouterr().err
    assert "img_t1.tif" in err and "--validate" in err and "validate=True" not in err


# -- remote -----------------------------------------------------------------------


@pytest.mark.network
def test_short_and_empty_objects_on_s3(tmp_path, s3_bucket):
    """An object appears whole, but a writer may have put an empty or a short one."""
    url, options = s3_bucket
    files = write_series(tmp_path / "raw", n=5)
    _keep(tmp_path / "raw" / "img_t1.tif", 0)
    _keep(tmp_path / "raw" / "img_t3.tif", _data_end(tmp_path / "raw" / "img_t3.tif") - 100)
    upload_folder(tmp_path / "raw", f"{url}/raw", options)
    store = tiffstore.open(f"{url}/raw", storage_options=options, fill_value=FILL)
    assert store.incomplete == ("img_t1.tif", "img_t3.tif")
    assert_reads(store, files, {"img_t1.tif", "img_t3.tif"})
    with pytest.raises(TiffReadError, match=r"img_t1\.tif.*empty"):
        tiffstore.open(f"{url}/raw", storage_options=options, validate=True)


# -- said plainly -------------------------------------------------------------------


def test_two_experiments_in_one_folder_are_named(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for ex in ("6-2", "7-1"):
        for t in range(3):
            data = rng.integers(0, 9, (2, 8, 8), dtype=np.uint16)
            tifffile.imwrite(tmp_path / f"ex{ex}_CamA_ch0_stack{t:04d}.tif", data)
    with caplog.at_level(logging.WARNING):
        store = tiffstore.open(tmp_path)
    assert store.shape[:2] == (2, 3)  # still opens, as before
    text = caplog.text
    assert "looks like the name of an experiment" in text
    assert "include=['ex6-2_*']" in text and "include=['ex7-1_*']" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        one = tiffstore.open(tmp_path, include="ex6-2_*")  # as the warning says
    assert one.shape[0] == 3 and "experiment" not in caplog.text


def test_positions_are_no_experiments(tmp_path, caplog):
    for pos in range(2):
        for t in range(2):
            tifffile.imwrite(tmp_path / f"pos{pos:02d}_t{t}.tif", np.zeros((4, 4), np.uint8))
    with caplog.at_level(logging.WARNING):
        tiffstore.open(tmp_path)
    assert "experiment" not in caplog.text


def test_a_wrong_pattern_suggests_a_template_without_the_stray(tmp_path):
    for c in range(2):
        for t in range(3):
            tifffile.imwrite(
                tmp_path / f"ex6-2_CamA_ch{c}_stack{t:04d}_560nm_0001011msec.tif",
                np.zeros((4, 4), np.uint8),
            )
    tifffile.imwrite(
        tmp_path / "ex6-2_CamA_ch0_stack0000_560nm_0001011msec_thumb.tif",
        np.zeros((2, 2), np.uint8),
    )
    with pytest.raises(NamingError) as info:
        tiffstore.open(tmp_path, pattern="ex6-2_CamB_ch{ch}_stack{stack}.tif")
    start = str(info.value).split("Start from", 1)[1]
    template = start.splitlines()[1].strip()
    assert template == "ex6-2_CamA_ch{ch}_stack{stack}_560nm_0001011msec.tif"
    assert "_thumb.tif" in start  # named as left out of the suggestion
    store = tiffstore.open(tmp_path, pattern=template)  # the stray left out, as said
    assert store.shape[:2] == (2, 3)
    assert store.left_out == ("ex6-2_CamA_ch0_stack0000_560nm_0001011msec_thumb.tif",)

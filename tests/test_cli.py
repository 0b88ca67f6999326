"""The tiffstore command: inspect and demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tiffstore.cli import main


def test_inspect_prints_axes_coords_missing_and_template(sample_dir, capsys):
    assert main(["inspect", str(sample_dir[0])]) == 0
    out = capsys.readouterr().out
    for text in (
        "ch",
        "stack",
        "wavelength",
        "488",
        "Missing",
        "ch=1, stack=2",
        "Template",
        "{ch}",
    ):
        assert text in out


def test_inspect_json(sample_dir, capsys):
    assert main(["inspect", str(sample_dir[0]), "--json", "--chunks", "page"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dims"] == ["ch", "stack", "z", "y", "x"]
    assert report["shape"] == [3, 4, 6, 32, 24]
    assert report["chunks"] == [1, 1, 1, 32, 24]
    assert report["missing"] == [{"ch": 1, "stack": 2}]
    assert report["files"] == 11


def test_inspect_files_table(sample_dir, capsys):
    assert main(["inspect", str(sample_dir[0]), "--files"]) == 0
    out = capsys.readouterr().out
    assert "(missing)" in out
    assert "stack0003" in out


def test_inspect_error_is_one_clear_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no TIFF files" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_demo_runs_and_checks_itself():
    result = subprocess.run(
        [sys.executable, "-m", "tiffstore.cli", "demo", "--stacks", "3", "--z", "16"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "equals tifffile.imread" in result.stdout
    assert "True" in result.stdout

"""The tiffstore command: inspect and demo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile

import tiffstore
from tiffstore.cli.arguments import parse_chunks
from tiffstore.cli.main import main
from tiffstore.sample import sample_name


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, output piped (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "tiffstore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
    )


def test_inspect_prints_axes_coords_missing_and_template(sample_dir, capsys):
    assert main(["inspect", str(sample_dir[0]), "--chunks", "file"]) == 0
    out = capsys.readouterr().out
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if (cells := [c.strip() for c in re.split(r"[│┃]", line)[1:-1]])
    }
    assert rows["ch"] == ["3", "channel", "name", "0, 1, 2"]
    assert rows["stack"] == ["4", "other", "name", "0, 1, 2, 3"]
    assert rows["z"] == ["6", "space", "file", "0 .. 5"]
    assert rows["wavelength"] == ["ch", "nm", "488, 560, 642"]
    assert rows["msec"][:2] == ["ch, stack", "ms"]
    assert "Missing 1 file, served as fill value 0: ch=1, stack=2" in out
    template = tiffstore.open(sample_dir[0]).manifest.template
    assert f"Template {template}" in out
    assert "Chunks  (1, 1, 6, 32, 24)" in out and "6 pages of one file per chunk" in out


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
    assert main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "holds no TIFF files" in err
    assert "Traceback" not in err


def test_inspect_starts_without_dask_array_or_xarray(sample_dir):
    """dask.array pulls in xarray, pandas and scipy (a third of a second here): a command
    that does not read pixels through dask must not pay for it."""
    code = (
        "import sys\n"
        "from tiffstore.cli.main import main\n"
        f"assert main(['inspect', {str(sample_dir[0])!r}]) == 0\n"
        "heavy = sorted(m for m in ('dask.array', 'xarray', 'pandas') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


@pytest.mark.slow
def test_demo_runs_and_checks_itself():
    result = subprocess.run(
        [sys.executable, "-m", "tiffstore", "demo", "--stacks", "3", "--z", "16"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "equals tifffile.imread" in result.stdout
    assert "True" in result.stdout


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("native", "native"),
        ("page", "page"),
        ("file", "file"),
        ("auto", "auto"),
        ("10", 10),
        ("1,1,10,-1,-1", (1, 1, 10, None, None)),
        ("1,1,2,,", (1, 1, 2, None, None)),
    ],
)
def test_chunks_take_every_value_open_takes(sample_dir, capsys, text, spec):
    assert parse_chunks(text) == spec
    assert main(["inspect", str(sample_dir[0]), "--json", "--chunks", text]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chunks"] == list(tiffstore.open(sample_dir[0], chunks=spec).chunks)


def test_every_open_option_on_the_command_line(sample_dir, capsys):
    directory = sample_dir[0]
    template = tiffstore.open(directory).manifest.template
    (directory / "sub").mkdir()
    tifffile.imwrite(directory / "sub" / "other.tif", np.zeros((3, 3), np.uint8))
    args = ["inspect", str(directory), "--json", "--fill-value", "7", "--no-recursive"]
    args += ["--exclude", "*stack0003*", "--include", "ex6-2_*", "--scale", "z=2,y=0.5,x=250nm"]
    args += ["--validate", "--tiles", "stitch", "--pattern", template, "--checksum"]
    args += ["--chunks", "page", "--zarr-format", "3", "--no-sharded", "--timeout", "9"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shape"] == [3, 3, 6, 32, 24] and report["files"] == 8
    assert report["scale"]["x"] == {"size": 250.0, "units": "nanometer"}
    assert report["scale"]["z"] == {"size": 2.0, "units": "micrometer"}
    assert report["fill_value"] == 7
    assert report["template"] == template
    assert report["checksums"]["blocks"] >= 8  # every file read for its checksums
    assert report["chunks"] == [1, 1, 1, 32, 24]
    assert report["zarr_format"] == 3 and report["shards"] is None
    # (--validate, --tiles and --timeout reach the open: tests/test_options.py.)


def test_usage_errors_exit_2_and_data_errors_exit_1(sample_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["inspect", str(sample_dir[0]), "--chunks", "pages"])
    assert usage.value.code == 2
    assert "native" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["inspect", str(sample_dir[0]), "--scale", "q=3"])
    assert usage.value.code == 2
    assert main(["inspect", str(tmp_path / "absent")]) == 1
    assert main(["inspect", str(sample_dir[0]), "--chunks", "1,1,1"]) == 1
    assert "has 3 entries" in capsys.readouterr().err
    help_text = run_cli("--help").stdout
    assert "exit status" in help_text and "2  the command line" in help_text


def test_piped_output_is_never_wrapped_or_cut(make_sample, tmp_path):
    directory, _ = make_sample(channels=2, stacks=2, shape=(2, 8, 8))
    deep = tmp_path / ("a-very-long-folder-name-" * 4) / "raw"
    directory.rename(deep.parent.mkdir(parents=True) or deep)
    result = run_cli("inspect", str(deep), "--files")
    assert result.returncode == 0, result.stderr
    template = tiffstore.open(deep).manifest.template
    lines = result.stdout.splitlines()
    assert any(line.endswith(template) for line in lines), result.stdout
    assert any(str(deep) in line for line in lines)
    assert all(any(sample_name(c, s) in line for line in lines) for c in range(2) for s in range(2))
    assert "(4 files," in result.stdout
    failed = run_cli("inspect", str(deep / "nothing-here" / ("x" * 80)))
    assert failed.returncode == 1
    assert str(deep / "nothing-here" / ("x" * 80)) in failed.stderr.replace("\n", "")
    assert len(failed.stderr.strip().splitlines()) == 1


def test_one_file_is_one_file(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "only.tif", np.zeros((4, 4), np.uint8))
    assert main(["inspect", str(tmp_path)]) == 0
    assert "(1 file," in capsys.readouterr().out


def test_incomplete_and_left_out_files_are_named(make_sample, capsys):
    directory, _ = make_sample(channels=2, stacks=2, shape=(4, 16, 16))
    end = int(tiffstore.open(directory).manifest.data_ends()[0])
    victim = directory / sample_name(1, 1)
    victim.write_bytes(victim.read_bytes()[: end - 10])
    thumb = sample_name(0, 1).replace("_0000t", "_0000t_thumb")
    tifffile.imwrite(directory / thumb, np.zeros((5, 5), np.uint8))
    assert main(["inspect", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "Still being written 1 file" in out and victim.name in out
    assert "Left out 1 file" in out and thumb in out
    assert "Missing 1 file" in out  # the incomplete file's cell
    assert main(["inspect", str(directory), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["incomplete"] == [victim.name] and report["left_out"] == [thumb]
    assert report["truncated"] == []
    assert main(["inspect", str(directory), "--validate"]) == 1
    err = capsys.readouterr().err
    assert victim.name in err and "--validate" in err and "validate=True" not in err


def test_error_messages_speak_of_command_line_options(make_sample, capsys):
    directory, _ = make_sample(channels=2, stacks=2, shape=(2, 8, 8))
    (directory / "MIPs").mkdir()
    for c in range(2):
        for s in range(2):
            name = sample_name(c, s)[:-4] + "_MIP_z.tif"
            tifffile.imwrite(directory / "MIPs" / name, np.zeros((8, 8), np.uint16))
    assert main(["inspect", str(directory)]) == 1
    err = capsys.readouterr().err
    assert "--exclude 'MIPs/*'" in err and "--no-recursive" in err and "--pattern" in err
    assert "exclude=[" not in err and "pattern=" not in err
    assert main(["inspect", str(directory), "--exclude", "MIPs/*"]) == 0


def test_progress_is_reported_to_a_callback_and_never_printed_when_piped(sample_dir, capsys):
    steps: list[tuple[str, int, int | None]] = []
    tiffstore.open(sample_dir[0], validate=True, progress=lambda *a: steps.append(a))
    assert steps[:3] == [("listing", 0, None), ("names", 0, 11), ("headers", 0, 11)]
    assert steps[3:] == [("headers", done, 11) for done in range(1, 12)]  # one per header
    assert main(["inspect", str(sample_dir[0])]) == 0
    captured = capsys.readouterr()
    assert "Opening" not in captured.err and "listing" not in captured.err.lower()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_shows_on_a_terminal_unless_quiet(sample_dir):
    import pty

    def on_terminal(*args: str) -> str:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tiffstore", *args],
            stdout=follower,
            stderr=follower,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
        os.close(leader)
        return b"".join(chunks).decode(errors="replace")

    shown = on_terminal("inspect", str(sample_dir[0]))
    assert "Reading the TIFF headers (" in shown or "Opening" in shown
    quiet = on_terminal("inspect", str(sample_dir[0]), "--quiet")
    assert "Opening" not in quiet and "Reading the TIFF headers" not in quiet
    assert "Template" in quiet


def test_warnings_on_stderr_name_command_options(make_sample):
    directory, _ = make_sample(channels=2, stacks=2, shape=(2, 8, 8))
    thumb = sample_name(0, 1).replace("_0000t", "_0000t_thumb")
    tifffile.imwrite(directory / thumb, np.zeros((5, 5), np.uint8))
    result = run_cli("inspect", str(directory))
    assert result.returncode == 0, result.stderr
    assert "WARNING: Left out 1 file whose name" in result.stderr and thumb in result.stderr
    assert "--exclude" in result.stderr and "exclude=" not in result.stderr


def test_a_truncated_file_gives_no_anonymous_tifffile_error(make_sample):
    directory, _ = make_sample(channels=2, stacks=2, shape=(4, 16, 16))
    end = int(tiffstore.open(directory).manifest.data_ends()[0])
    victim = directory / sample_name(0, 1)
    victim.write_bytes(victim.read_bytes()[: end - 10])
    result = run_cli("inspect", str(directory))
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("WARNING: Left out 1 file that looks still being written")
    assert victim.name in result.stderr
    # tifffile's own lines ("<tifffile.TiffPages @8> invalid page offset") stay out: what
    # it said is folded into tiffstore's one message.
    assert "TiffPages" not in result.stderr and "tifffile." not in result.stderr
    assert result.stderr.count("\n") == 1
    assert victim.name in result.stdout


def test_a_bad_option_value_is_named(sample_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["refs", str(sample_dir[0]), str(tmp_path / "r.json"), "--storage-options", "{bad"])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "--storage-options" in err and "is not JSON" in err


def test_tiffstore_errors_are_one_line_and_their_traceback_under_v(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "absent: no such file or folder" in err
    assert "Traceback" not in err
    assert main(["-v", "inspect", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "SourceError" in err and "absent: no such file" in err


def test_any_other_exception_is_a_bug_and_shows_its_traceback(sample_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("tiffstore.cli.inspect.inspect_report", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["inspect", str(sample_dir[0]), "--json"])


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "raw/"],
        ["demo"],
        ["materialize", "raw/", "out.zarr"],
        ["refs", "raw/", "r.json"],
        ["preview", "raw/", "p.png"],
        ["check", "raw/"],
        ["serve", "raw/"],
    ],
    ids=lambda argv: argv[0],
)
def test_quiet_and_verbose_after_every_command(argv):
    from tiffstore.cli.parser import build_parser

    args = build_parser().parse_args([*argv, "-q", "-vv"])
    assert args.quiet is True and args.verbose == 2
    args = build_parser().parse_args(["-q", *argv])
    assert args.quiet is True and args.verbose == 0

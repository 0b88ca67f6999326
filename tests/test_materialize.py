"""materialize: a real Zarr copy equal to the source, resumable, verified, refused where unsafe."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr

import tiffstore
from tests.conftest import ctrl_c_reaches
from tiffstore import MaterializeError, materialize
from tiffstore.cli.main import main
from tiffstore.outputs.materialize.journal import stored_bytes
from tiffstore.outputs.materialize.plan import JOURNAL, default_chunks

ROOT = Path(__file__).resolve().parent.parent


def image(out: str | Path, path: str = "image", **kwargs: object) -> np.ndarray:
    return np.asarray(zarr.open_array(str(out), path=path, mode="r", **kwargs)[...])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "zlib"},
        {"compression": "zlib", "tile": (16, 16)},
        {"byteorder": ">"},
    ],
    ids=["uncompressed", "zlib-strips", "zlib-tiles", "big-endian"],
)
@pytest.mark.parametrize(
    ("zarr_format", "chunks", "shards"),
    [
        (2, None, None),
        (2, (1, 2, 4, 16, 10), None),
        (3, (1, 1, 3, 32, 32), None),
        (3, (1, 1, 2, 16, 16), (1, 2, 4, 32, 32)),
    ],
    ids=["v2-default", "v2-rechunk", "v3", "v3-shards"],
)
def test_output_equals_source(make_sample, tmp_path, options, zarr_format, chunks, shards):
    directory, ref = make_sample(
        channels=2, stacks=3, shape=(6, 32, 24), missing=[(1, 1)], **options
    )
    out = tmp_path / "out.zarr"
    summary = materialize(
        directory, out, chunks=chunks, zarr_format=zarr_format, shards=shards, workers=3
    )
    assert summary.complete and summary.verified is None
    np.testing.assert_array_equal(image(out), ref)
    arr = zarr.open_array(out, path="image", mode="r")
    assert arr.metadata.zarr_format == zarr_format
    expected_chunks = chunks or default_chunks(("ch", "stack", "z", "y", "x"), ref.shape)
    assert arr.chunks == tuple(min(c, n) for c, n in zip(expected_chunks, ref.shape, strict=True))
    if shards:
        assert arr.shards == shards
    assert summary.bytes == ref.nbytes
    assert summary.chunks_written > 0 and summary.chunks_skipped == 0
    assert not (out / JOURNAL).exists()
    assert tiffstore.materialize_status(out)["complete"] is True


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_source_chunks_read_straight_into_the_task_and_fill_value(
    make_sample, tmp_path, zarr_format
):
    directory, ref = make_sample(channels=2, stacks=2, shape=(6, 32, 24), missing=[(0, 1)])
    ref[0, 1] = 7
    # Pages of 2 planes: each task (a whole file) is three source chunks, read in place.
    store = tiffstore.open(directory, chunks=2, fill_value=7)
    out = tmp_path / "out.zarr"
    summary = materialize(store, out, zarr_format=zarr_format, verify=True)
    assert summary.verified
    np.testing.assert_array_equal(image(out), ref)
    # The missing file's chunk is not stored (it reads as the fill value); others are.
    missing, present = (
        ("0.1.0.0.0", "1.1.0.0.0") if zarr_format == 2 else ("c/0/1/0/0/0", "c/1/1/0/0/0")
    )
    assert not (out / "image" / missing).exists()
    assert (out / "image" / present).exists()


def test_tasks_of_the_seed_data_cover_whole_planes_in_bounded_memory():
    # The seed's acquisition: 3 ch x 199 stacks x 201 planes of 1024 x 768 uint16, read
    # in source chunks of 10 whole planes, written in (1, 1, 64, 256, 256) chunks.
    from tiffstore.outputs.materialize.plan import TASK_BYTES, ArrayPlan
    from tiffstore.outputs.materialize.plan import cut_tasks as _tasks

    shape = (3, 199, 201, 1024, 768)
    plan = ArrayPlan("image", shape, default_chunks(("ch", "stack", "z", "y", "x"), shape), None, 0)
    tasks = _tasks(plan, (1, 1, 10, 1024, 768), 2)
    assert len(tasks) == 3 * 199 * 4  # one task per 64 planes of one stack: whole planes
    first = tasks[0]
    assert (first.start, first.stop) == ((0, 0, 0, 0, 0), (1, 1, 64, 1024, 768))
    assert first.chunks == 4 * 3
    assert max(np.prod(np.subtract(t.stop, t.start)) * 2 for t in tasks) <= TASK_BYTES
    assert sum(t.chunks for t in tasks) == np.prod(
        [-(-n // c) for n, c in zip(shape, plan.chunks, strict=True)]
    )


def test_defaults_blosc_zstd_bitshuffle_and_dims(sample_dir, tmp_path):
    directory, _ = sample_dir
    out = tmp_path / "out.zarr"
    materialize(directory, out)
    meta = json.loads((out / "image" / ".zarray").read_text())
    assert meta["compressor"] == {
        "id": "blosc",
        "cname": "zstd",
        "clevel": 3,
        "shuffle": 2,
        "blocksize": 0,
    }
    attrs = json.loads((out / "image" / ".zattrs").read_text())
    assert attrs["_ARRAY_DIMENSIONS"] == ["ch", "stack", "z", "y", "x"]
    assert attrs["tiffstore"]["coords"]["wavelength"]["values"] == [488, 560, 642]
    materialize(directory, tmp_path / "v3.zarr", zarr_format=3, cname="lz4", shuffle="shuffle")
    arr = zarr.open_array(tmp_path / "v3.zarr", path="image", mode="r")
    assert arr.metadata.dimension_names == ("ch", "stack", "z", "y", "x")
    codec = arr.metadata.codecs[-1].to_dict()
    assert codec["configuration"]["cname"] == "lz4"
    assert codec["configuration"]["shuffle"] == "shuffle"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_xarray_sees_coordinates(sample_dir, tmp_path, zarr_format):
    xr = pytest.importorskip("xarray")
    directory, ref = sample_dir
    out = tmp_path / "out.zarr"
    materialize(directory, out, zarr_format=zarr_format)
    ds = xr.open_zarr(out)
    assert ds["image"].dims == ("ch", "stack", "z", "y", "x")
    assert ds["image"].dtype == ref.dtype  # not masked to float by a fill value
    np.testing.assert_array_equal(ds["image"].values, ref)
    assert ds["wavelength"].values.tolist() == [488, 560, 642]
    assert ds["wavelength"].dims == ("ch",)
    assert np.isnan(ds["msec"].values[1, 2])  # the missing file has no timestamp


def test_fsspec_memory_output(sample_dir):
    directory, ref = sample_dir
    url = f"memory://materialize-{os.getpid()}/out.zarr"
    summary = materialize(directory, url, zarr_format=3, verify=True)
    assert summary.verified and summary.stored_bytes is None
    np.testing.assert_array_equal(image(url), ref)
    assert tiffstore.materialize_status(url)["complete"] is True


@pytest.mark.network
def test_s3_round_trip(make_sample, s3_bucket):
    url, options = s3_bucket
    directory, ref = make_sample(channels=2, stacks=2, shape=(4, 32, 24))
    out = f"{url}/copy.zarr"
    summary = materialize(directory, out, chunks=(1, 1, 2, 16, 16), storage_options=options)
    assert summary.complete
    np.testing.assert_array_equal(image(out, storage_options=options), ref)
    again = materialize(
        directory,
        out,
        chunks=(1, 1, 2, 16, 16),
        storage_options=options,
        resume=True,
        verify=True,
    )
    assert again.verified and again.chunks_written == 0


def test_refuses_non_empty_output(sample_dir, tmp_path):
    directory, _ = sample_dir
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(MaterializeError, match="exists and is not empty"):
        materialize(directory, foreign)
    for flags in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(MaterializeError, match="not written by tiffstore materialize"):
            materialize(directory, foreign, **flags)
    assert (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "out.zarr"
    materialize(directory, out)
    with pytest.raises(MaterializeError, match="exists and is not empty"):
        materialize(directory, out)
    with pytest.raises(
        MaterializeError, match=r"image chunks: \[1, 1, 6, 32, 24\] then, \[1, 1, 2, 8, 8\] now"
    ):
        materialize(directory, out, chunks=(1, 1, 2, 8, 8), resume=True)


def test_interrupted_run_is_marked_incomplete_and_resumes(make_sample, tmp_path, capsys):
    directory, ref = make_sample(channels=2, stacks=4, shape=(8, 32, 32))
    out = tmp_path / "out.zarr"
    calls = []

    def stop_after_three(phase: str, done: int, total: int) -> None:
        calls.append(done)
        if len(calls) > 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        materialize(
            directory,
            out,
            chunks=(1, 1, 4, 16, 16),
            workers=1,
            progress=stop_after_three,
            open_options={"chunks": "file"},  # one task per file
        )
    status = tiffstore.materialize_status(out)
    assert status is not None and status["complete"] is False
    attrs = json.loads((out / "image" / ".zattrs").read_text())
    assert attrs["tiffstore"]["materialize"]["complete"] is False
    assert main(["inspect", str(out)]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out
    done = len(list((out / JOURNAL / "image").iterdir()))
    assert 0 < done < 8
    summary = materialize(
        directory,
        out,
        chunks=(1, 1, 4, 16, 16),
        resume=True,
        verify=True,
        open_options={"chunks": "file"},
    )
    assert summary.verified and summary.complete
    assert summary.chunks_skipped == done * 8
    assert summary.chunks_written == 64 - done * 8
    np.testing.assert_array_equal(image(out), ref)
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True


#: The name zarr's LocalStore writes a file under before renaming it (32 hex digits).
HEX = "0123456789abcdef" * 2


def _temporary_files(out: Path) -> list[Path]:
    return [f for f in out.rglob("*") if f.name.endswith(".partial")]


@pytest.mark.parametrize("flags", [{}, {"resume": True}, {"overwrite": True}])
def test_an_output_holding_only_temporary_files_is_begun_afresh(sample_dir, tmp_path, flags):
    """A run killed while writing its first file left only that file's temporary name."""
    directory, ref = sample_dir
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / f".zgroup.{HEX}.partial").write_text('{"zarr_fo')
    (out / JOURNAL).mkdir()
    (out / JOURNAL / f"setup.{HEX}.partial").write_text("{")
    summary = materialize(directory, out, **flags)
    assert summary.complete and not _temporary_files(out)
    np.testing.assert_array_equal(image(out), ref)


def test_an_output_holding_only_temporary_keys_is_begun_afresh_on_fsspec(sample_dir):
    directory, ref = sample_dir
    url = f"memory://materialize-temporary-{os.getpid()}/out.zarr"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{url}/.zgroup.{HEX}.partial", b"{")
    assert materialize(directory, url, resume=True).complete
    assert not [k for k in fs.find(url) if k.endswith(".partial")]
    np.testing.assert_array_equal(image(url), ref)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_setup_cut_short_is_begun_again_on_resume(sample_dir, tmp_path, zarr_format):
    """Killed after the setup record, in the metadata: nothing there is trusted."""
    directory, ref = sample_dir
    whole = tmp_path / "whole.zarr"
    materialize(directory, whole, zarr_format=zarr_format)
    out = tmp_path / "out.zarr"
    with pytest.raises(KeyboardInterrupt):
        materialize(directory, out, zarr_format=zarr_format, progress=_stop)
    # As if killed in the metadata: the setup record back, a coordinate without values,
    # the image without its attributes, the root half written, temporary files.
    marker = tiffstore.materialize_status(out)
    (out / JOURNAL / "setup.json").write_text(json.dumps(marker))
    for chunk in (out / "wavelength").glob("[0-9c]*"):
        chunk.unlink() if chunk.is_file() else shutil.rmtree(chunk)
    if zarr_format == 2:
        (out / "image" / ".zattrs").unlink()
        (out / ".zattrs").unlink()
    (out / "image" / f"0.0.{HEX}.partial").write_bytes(b"x" * 5000)
    (out / f".zattrs.{HEX}.partial").write_text("{")
    with pytest.raises(MaterializeError, match=r"unfinished materialize output\. Pass resume"):
        materialize(directory, out, zarr_format=zarr_format)
    summary = materialize(directory, out, zarr_format=zarr_format, resume=True)
    assert summary.complete and summary.chunks_skipped == 0
    assert not _temporary_files(out) and not (out / JOURNAL).exists()
    np.testing.assert_array_equal(image(out), ref)
    for name in ("wavelength", "msec"):
        np.testing.assert_array_equal(image(out, name), image(whole, name))


def _stop(phase: str, done: int, total: int) -> None:
    if done:
        raise KeyboardInterrupt


def test_resume_removes_temporary_files_and_they_are_not_stored_bytes(make_sample, tmp_path):
    directory, ref = make_sample(channels=2, stacks=4, shape=(8, 32, 32))
    out = tmp_path / "out.zarr"
    options = {"chunks": (1, 1, 4, 16, 16), "workers": 1, "open_options": {"chunks": "file"}}
    with pytest.raises(KeyboardInterrupt):
        materialize(directory, out, progress=_stop, **options)
    assert not _temporary_files(out)  # an exception leaves none behind
    planted = [out / "image" / f"1.0.1.0.{HEX}.partial", out / f".zattrs.{HEX}.partial"]
    planted[0].write_bytes(b"x" * 7_500_000)
    planted[1].write_text("{")
    chunks_only = stored_bytes(out / "image")
    assert chunks_only is not None and chunks_only < 7_500_000
    summary = materialize(directory, out, resume=True, **options)
    assert summary.complete and not _temporary_files(out)
    chunks = [f for f in (out / "image").iterdir() if not f.name.startswith(".")]
    assert summary.stored_bytes == sum(f.stat().st_size for f in chunks)
    np.testing.assert_array_equal(image(out), ref)


def test_verify_checks_a_finished_output_without_resume(sample_dir, tmp_path, capsys):
    directory, _ = sample_dir
    out = tmp_path / "out.zarr"
    materialize(directory, out)
    before = {f: f.stat().st_mtime_ns for f in out.rglob("*")}
    summary = materialize(directory, out, verify=True)
    assert summary.verified and summary.complete and summary.chunks_written == 0
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*")} == before  # only read
    assert main(["materialize", str(directory), str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "Checked" in printed and "Verified" in printed and "Wrote" not in printed
    with pytest.raises(MaterializeError, match=r"other settings \(image chunks"):
        materialize(directory, out, verify=True, chunks=(1, 1, 2, 8, 8))
    (out / "image" / "0.0.0.0.0").write_bytes(b"not blosc at all")
    assert main(["materialize", str(directory), str(out), "--verify", "--quiet"]) == 1
    assert "image/0.0.0.0.0" in capsys.readouterr().err
    with pytest.raises(MaterializeError, match="unfinished materialize output"):
        materialize(directory, out, verify=True)
    repaired = materialize(directory, out, resume=True, verify=True)
    assert repaired.verified and repaired.complete and repaired.chunks_written > 0


def test_refusals_speak_python_and_the_command_speaks_its_options(sample_dir, tmp_path, capsys):
    directory, _ = sample_dir
    out = tmp_path / "out.zarr"
    materialize(directory, out)
    with pytest.raises(MaterializeError) as finished:
        materialize(directory, out)
    assert "overwrite=True" in str(finished.value) and "verify=True" in str(finished.value)
    assert "--" not in str(finished.value)
    assert main(["materialize", str(directory), str(out)]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--verify" in err and "=True" not in err
    with pytest.raises(MaterializeError) as other:
        materialize(directory, out, resume=True, chunks=(1, 1, 2, 8, 8))
    assert "overwrite=True" in str(other.value) and "--" not in str(other.value)
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for flags in ({}, {"resume": True}, {"overwrite": True}, {"verify": True}):
        with pytest.raises(MaterializeError, match="not written by tiffstore materialize"):
            materialize(directory, a_file, **flags)
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_verify_names_a_corrupted_chunk_and_resume_repairs_it(
    sample_dir, tmp_path, zarr_format, capsys
):
    directory, ref = sample_dir
    out = tmp_path / "out.zarr"
    options = {"chunks": (1, 1, 3, 16, 24), "zarr_format": zarr_format}
    materialize(directory, out, **options)
    # Valid Blosc data with other values: only a comparison with the source finds it.
    arr = zarr.open_array(out, path="image", mode="r+")
    good = arr[0, 1, 3:6, 16:32, :]
    arr[0, 1, 3:6, 16:32, :] = good + 1
    keys = ["0.1.1.1.0", "2.0.0.0.0"] if zarr_format == 2 else ["c/0/1/1/1/0", "c/2/0/0/0/0"]
    (out / "image" / keys[1]).write_bytes(b"not blosc at all")
    if zarr_format == 2:  # through the command: it names the chunks (even --quiet), exits 1
        command = ["materialize", str(directory), str(out), "--resume", "--verify", "--quiet"]
        assert main([*command, "--chunks", "1,1,3,16,24"]) == 1
        err = capsys.readouterr().err
        assert "2 chunk(s) differ" in err
        assert all(f"image/{k}" in err for k in keys)
    else:
        summary = materialize(directory, out, resume=True, verify=True, **options)
        assert summary.verified is False and not summary.complete
        assert summary.mismatched == tuple(f"image/{k}" for k in keys)
    assert tiffstore.materialize_status(out)["complete"] is False
    # Consolidated metadata, which readers such as xarray use, says so too.
    consolidated = zarr.open_group(out, mode="r", use_consolidated=True)
    assert consolidated.attrs["tiffstore"]["materialize"]["complete"] is False
    assert consolidated["image"].attrs["tiffstore"]["materialize"]["complete"] is False
    repaired = materialize(directory, out, resume=True, verify=True, **options)
    assert repaired.verified and repaired.complete
    assert 0 < repaired.chunks_written < repaired.chunks_skipped
    np.testing.assert_array_equal(image(out), ref)


def test_ome_refuses_dims_it_cannot_name(make_sample, tmp_path):
    directory, _ = make_sample(channels=2, stacks=2, shape=(2, 3, 16, 16))
    with pytest.raises(MaterializeError, match="ome=True needs"):
        materialize(directory, tmp_path / "o.zarr", ome=True)


def test_cli_json_quiet_and_refusal(sample_dir, tmp_path, capsys):
    directory, ref = sample_dir
    out = tmp_path / "out.zarr"
    code = main(
        ["materialize", str(directory), str(out), "--json", "--verify", "--chunks", "1,1,3,-1,-1"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verified"] is True and summary["complete"] is True
    assert summary["chunks"] == [1, 1, 3, 32, 24]
    assert summary["bytes"] == ref.nbytes
    assert (
        main(["materialize", str(directory), str(out), "--quiet"]) == 1
    )  # refused: not a usage error
    captured = capsys.readouterr()
    assert "--overwrite" in captured.err and "Traceback" not in captured.err
    assert main(["materialize", str(directory), str(out), "--quiet", "--overwrite"]) == 0
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(image(out), ref)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--chunks", "1,1"], "--chunks (1, 1) has 2 entries, but the array has 5 dims"),
        (["--chunks", "1,1,1,1,1,1"], "has 6 entries"),
        (["--shards", "1,1,1"], "--shards (1, 1, 1) has 3 entries"),
        (["--cname", "zstandard"], "--cname 'zstandard': choose one of"),
    ],
)
def test_bad_output_settings_are_refused_before_anything_is_written(
    sample_dir, tmp_path, capsys, flags, message
):
    directory, _ = sample_dir
    out = tmp_path / "out.zarr"
    code = main(["materialize", str(directory), str(out), "--zarr-format", "3", *flags])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_open_options_with_an_open_store(sample_dir, tmp_path):
    directory, ref = sample_dir
    store = tiffstore.open(directory)
    # no option given: nothing to refuse
    materialize(store, tmp_path / "a.zarr", open_options=tiffstore.OpenOptions())
    materialize(store, tmp_path / "b.zarr", open_options={})
    np.testing.assert_array_equal(image(tmp_path / "a.zarr"), ref)
    with pytest.raises(tiffstore.OptionError, match=r"open_options= \(chunks\) does not apply"):
        materialize(store, tmp_path / "c.zarr", open_options={"chunks": "file"})
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.slow
def test_distributed_cluster(make_sample, tmp_path):
    distributed = pytest.importorskip("distributed")
    directory, ref = make_sample(channels=2, stacks=3, shape=(8, 32, 32), missing=[(0, 2)])
    out = tmp_path / "out.zarr"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        summary = materialize(
            directory,
            out,
            chunks=(1, 1, 4, 16, 16),
            scheduler=cluster.scheduler_address,
            verify=True,
        )
    assert summary.verified and summary.complete
    np.testing.assert_array_equal(image(out), ref)


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(make_sample, tmp_path):
    directory, ref = make_sample(channels=2, stacks=8, shape=(32, 192, 192))
    out = tmp_path / "out.zarr"
    command = [sys.executable, "-m", "tiffstore", "materialize", str(directory), str(out)]
    command += ["--chunks", "1,1,4,32,32", "--workers", "1", "--quiet"]
    proc = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_reaches
    )
    journal = out / JOURNAL / "image"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.is_dir() and len(os.listdir(journal)) >= 2:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert tiffstore.materialize_status(out)["complete"] is False
    assert (
        main(
            [
                "materialize",
                str(directory),
                str(out),
                "--chunks",
                "1,1,4,32,32",
                "--resume",
                "--quiet",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(image(out), ref)


def test_overwrite_never_deletes_the_whole_output_for_a_member_named_dot(tmp_path):
    """Members come from the output's own attributes, which anyone may edit: "." or
    ".." would name the whole output (or above it), so they are never deleted."""
    from tiffstore.sample import write_sample

    write_sample(tmp_path / "src", channels=1, stacks=2, shape=(2, 16, 16))
    out = tmp_path / "out.zarr"
    tiffstore.materialize(tiffstore.open(tmp_path / "src"), out)
    attrs_path = out / ".zattrs"
    attrs = json.loads(attrs_path.read_text())
    attrs["tiffstore"]["materialize"]["members"] += [".", ".."]
    attrs_path.write_text(json.dumps(attrs))
    (out / "mine.txt").write_text("the user's")  # a file of the user's beside ours
    (tmp_path / "beside.txt").write_text("the user's")
    tiffstore.materialize(tiffstore.open(tmp_path / "src"), out, overwrite=True)
    assert (out / "mine.txt").read_text() == "the user's"
    assert (tmp_path / "beside.txt").read_text() == "the user's"

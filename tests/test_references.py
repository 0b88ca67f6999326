"""Reference files: written by tiffstore, read back by fsspec + zarr alone, equal to the source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

import tiffstore
from tests.conftest import HttpServer, upload_folder, write_positions
from tiffstore.cli.main import main
from tiffstore.manifest import build
from tiffstore.outputs.references import ReferenceError, reference_chunks, write_references
from tiffstore.sample import write_sample
from tiffstore.sources import local

#: What a reader runs: fsspec, zarr and dask, and imagecodecs' codecs for compressed
#: files, exactly as docs/cloud.md says. It must never import tiffstore.
READER = """
import json, sys
if sys.argv[5] == "no-imagecodecs":
    sys.modules["imagecodecs"] = None  # importing it fails: numcodecs alone must do
import dask.array as da
import fsspec
import numpy as np
import zarr
if sys.argv[5] == "imagecodecs":
    from imagecodecs.numcodecs import register_codecs
    register_codecs()
fo, protocol, options, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
# asynchronous=True: zarr reads through fsspec's async API, and the files' own file
# system must be made the same way (zarr-python issue 2946).
options = dict(options, asynchronous=True)
fs = fsspec.filesystem(
    "reference", fo=fo, remote_protocol=protocol, remote_options=options, asynchronous=True
)
group = zarr.open_group(zarr.storage.FsspecStore(fs, read_only=True), mode="r")
np.save(out, da.from_zarr(group["image"]).compute())
assert "tiffstore" not in sys.modules, "the reader imported tiffstore"
if sys.argv[5] == "no-imagecodecs":
    assert sys.modules["imagecodecs"] is None
"""


def _read_elsewhere(
    tmp_path: Path, fo: str, protocol: str, options: dict[str, Any], codecs: str = ""
) -> np.ndarray:
    out = tmp_path / "read.npy"
    result = subprocess.run(
        [sys.executable, "-c", READER, fo, protocol, json.dumps(options), str(out), codecs],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the checkout: tiffstore must not be importable by accident
    )
    assert result.returncode == 0, result.stderr
    return np.load(out)


def _read_here(
    fo: str, protocol: str = "file", target_options: dict[str, Any] | None = None, **options: Any
) -> zarr.Group:
    fs = fsspec.filesystem(
        "reference",
        fo=fo,
        target_options=target_options,
        remote_protocol=protocol,
        remote_options=dict(options, asynchronous=True),
        asynchronous=True,
    )
    return zarr.open_group(zarr.storage.FsspecStore(fs, read_only=True), mode="r")


LAYOUTS: dict[str, dict[str, Any]] = {
    "raw": {},
    "zlib-predictor-strips": {"compression": "zlib", "predictor": True, "rowsperstrip": 16},
    "lzw-strips": {"compression": "lzw", "rowsperstrip": 8},
    "zstd-tiles": {"compression": "zstd", "tile": (16, 16)},
}


@pytest.mark.parametrize("fmt", ["json-0", "json-1", "parquet"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_round_trip_equals_the_source(tmp_path, layout, fmt):
    ref = write_positions(tmp_path / "raw", **LAYOUTS[layout])
    store = tiffstore.open(tmp_path / "raw")
    kind, _, version = fmt.partition("-")
    target = str(tmp_path / ("refs.parq" if kind == "parquet" else "refs.json"))
    write_references(store, target, format=kind, version=int(version or 0))
    group = _read_here(target)
    np.testing.assert_array_equal(group["image"][...], ref)
    assert group["image"].attrs["_ARRAY_DIMENSIONS"] == list(store.dims)


@pytest.mark.parametrize("codecs", ["imagecodecs"])
def test_read_with_fsspec_and_zarr_alone(tmp_path, codecs):
    """imagecodecs' codecs, registered with numcodecs as docs/cloud.md says, suffice."""
    ref = write_positions(tmp_path / "raw", **LAYOUTS["zlib-predictor-strips"])
    target = str(tmp_path / "refs.json")
    write_references(tiffstore.open(tmp_path / "raw"), target)
    got = _read_elsewhere(tmp_path, target, "file", {}, codecs)
    np.testing.assert_array_equal(got, ref)


def test_uncompressed_needs_no_codec_package(tmp_path):
    directory = tmp_path / "raw"
    write_sample(directory, channels=2, stacks=2, shape=(4, 16, 12), missing=[(1, 1)])
    store = tiffstore.open(directory)
    target = str(tmp_path / "refs.json")
    write_references(store, target)
    got = _read_elsewhere(tmp_path, target, "file", {})
    np.testing.assert_array_equal(got, zarr.open_array(store, mode="r")[...])


@pytest.mark.parametrize(("kind", "missing"), [("json", [(1, 2)]), ("parquet", [])])
def test_same_values_dims_and_coords_as_the_live_store(tmp_path, kind, missing):
    directory = tmp_path / "raw"
    write_sample(directory, channels=3, stacks=3, shape=(4, 16, 12), missing=missing)
    store = tiffstore.open(directory)
    live = xr.open_zarr(store)
    for name in ("refs.json" if kind == "json" else "refs.parq",):
        target = str(tmp_path / name)
        write_references(store, target, format=kind)
        refs = xr.open_dataset(
            "reference://",
            engine="zarr",
            backend_kwargs={"storage_options": {"fo": target, "remote_protocol": "file"}},
            chunks={},
        )
        assert refs.image.dims == live.image.dims
        np.testing.assert_array_equal(refs.image.values, live.image.values)
        for coord in ("wavelength", "msec"):
            np.testing.assert_array_equal(refs[coord].values, live[coord].values)
        assert "_ARRAY_DIMENSIONS" not in refs.attrs


def test_url_rewrites_to_s3_and_reads_from_there(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    ref = write_positions(tmp_path / "raw", **LAYOUTS["zstd-tiles"])
    upload_folder(tmp_path / "raw", f"{bucket}/raw", options)
    target = str(tmp_path / "refs.json")
    store = tiffstore.open(tmp_path / "raw")
    write_references(store, target, url=f"{bucket}/raw/", version=0)
    text = Path(target).read_text()
    assert (
        f"{bucket}/raw/pos0.tif" in text
        and str(tmp_path) not in json.loads(text)["image/0.0.0.0"][0]
    )
    got = _read_elsewhere(tmp_path, target, "s3", options, "imagecodecs")
    np.testing.assert_array_equal(got, ref)


def test_references_to_s3_written_on_s3(tmp_path, s3_bucket):
    """Files opened on S3, references written to S3 and read from there."""
    bucket, options = s3_bucket
    ref = write_positions(tmp_path / "raw", **LAYOUTS["lzw-strips"])
    upload_folder(tmp_path / "raw", f"{bucket}/raw", options)
    store = tiffstore.open(f"{bucket}/raw/", storage_options=options)
    write_references(store, f"{bucket}/refs.json", storage_options=options)
    group = _read_here(f"{bucket}/refs.json", "s3", target_options=options, **options)
    np.testing.assert_array_equal(group["image"][...], ref)


@pytest.mark.network
def test_url_rewrites_to_http(tmp_path, http_server: HttpServer):
    folder = http_server.root / "refs-raw dir"
    ref = write_positions(folder, **LAYOUTS["raw"])
    target = str(tmp_path / "refs.json")
    url = http_server.url + "refs-raw dir/"
    write_references(tiffstore.open(folder), target, url=url)
    doc = json.loads(Path(target).read_text())
    assert doc["templates"]["u"].endswith("/refs-raw dir")
    assert doc["refs"]["image/0.0.0.0"][0] == "{{u}}/pos0.tif"
    got = _read_elsewhere(tmp_path, target, "http", {})
    np.testing.assert_array_equal(got, ref)


def test_names_are_quoted_for_http(tmp_path):
    folder = tmp_path / "raw"
    write_positions(folder, n=2)
    (folder / "pos1.tif").rename(folder / "pos 1#.tif")
    (folder / "pos0.tif").rename(folder / "pos 0#.tif")
    target = str(tmp_path / "refs.json")
    write_references(tiffstore.open(folder), target, url="https://host/data/", version=0)
    urls = {
        v[0] for k, v in json.loads(Path(target).read_text()).items() if k.startswith("image/0")
    }
    assert urls == {"https://host/data/pos%200%23.tif"}


def test_short_last_strip_is_inlined_and_reads_right(tmp_path):
    """Strips of 16 rows over 40: the last holds 8 rows, fewer than a zarr chunk."""
    ref = write_positions(tmp_path / "raw", shape=(2, 40, 50), compression="zlib", rowsperstrip=16)
    target = str(tmp_path / "refs.json")
    write_references(tiffstore.open(tmp_path / "raw"), target, version=0)
    doc = json.loads(Path(target).read_text())
    assert isinstance(doc["image/0.0.0.0"], list)  # a whole strip: one reference
    assert doc["image/0.0.2.0"].startswith("base64:")  # the short last strip: inlined
    np.testing.assert_array_equal(_read_here(target)["image"][...], ref)


def test_chunks_that_are_not_one_range_are_refused_with_the_way_out(tmp_path):
    write_positions(tmp_path / "raw", compression="zlib", rowsperstrip=8)
    store = tiffstore.open(tmp_path / "raw")
    with pytest.raises(ReferenceError, match="chunks='native'"):
        write_references(store, str(tmp_path / "r.json"), chunks=(1, 1, 40, 30))
    # By default a working chunking is chosen: the files' own strips.
    assert reference_chunks(store.manifest).chunks == (1, 1, 8, 30)


def test_default_keeps_the_store_chunks_when_they_are_ranges(make_sample):
    directory, _ = make_sample(channels=1, stacks=2, shape=(6, 8, 8))
    store = tiffstore.open(directory, chunks=3)
    assert reference_chunks(store.manifest).chunks == store.chunks
    # Chunks across files are no byte range: whole files are (they are contiguous).
    spanning = tiffstore.open(directory, chunks=(2, 6, 8, 8))
    assert reference_chunks(spanning.manifest).chunks == (1, 6, 8, 8)


def test_existing_target_is_refused_unless_overwrite(tmp_path):
    write_positions(tmp_path / "raw")
    store = tiffstore.open(tmp_path / "raw")
    keep = tmp_path / "mine.parq"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_references(store, str(keep), format="parquet")
    assert (keep / "precious.txt").read_text() == "mine"
    write_references(store, str(keep), format="parquet", overwrite=True)
    np.testing.assert_array_equal(
        _read_here(str(keep))["image"][...], write_positions(tmp_path / "x")
    )


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_a_target_that_cannot_be_written_is_one_line(tmp_path, capsys, fmt):
    ref = write_positions(tmp_path / "raw")
    name = f"refs.{'json' if fmt == 'json' else 'parq'}"
    # A folder that is not there yet is made, as materialize and preview make theirs.
    made = tmp_path / "new" / "folder" / name
    assert main(["refs", str(tmp_path / "raw"), str(made), "--format", fmt, "-q"]) == 0
    np.testing.assert_array_equal(_read_here(str(made))["image"][...], ref)
    # A file where the folder should be is one line naming the target.
    (tmp_path / "a-file").write_text("mine")
    target = tmp_path / "a-file" / name
    code = main(["refs", str(tmp_path / "raw"), str(target), "--format", fmt])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"{target}: cannot write the references" in err and "Traceback" not in err
    assert (tmp_path / "a-file").read_text() == "mine"


def test_records_what_it_was_made_from_and_no_secrets(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    write_positions(tmp_path / "raw")
    upload_folder(tmp_path / "raw", f"{bucket}/raw", options)
    secret = dict(options, secret="s3cr3t-never-written", key="AKIA-never-written")
    store = tiffstore.open(f"{bucket}/raw/", storage_options=secret)
    target = tmp_path / "refs.json"
    write_references(store, str(target))
    text = target.read_text()
    assert "s3cr3t-never-written" not in text and "AKIA-never-written" not in text
    made = json.loads(json.loads(text)["refs"][".zattrs"])["tiffstore"]["made_from"]
    assert made["files"] == ["pos0.tif", "pos1.tif", "pos2.tif"]
    assert made["sizes"] == [int(s) for s in store.manifest.file_sizes]


def test_cli_refs(tmp_path, capsys):
    ref = write_positions(tmp_path / "raw")
    target = tmp_path / "refs.json"
    assert main(["refs", str(tmp_path / "raw"), str(target), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == 3 and summary["target"] == str(target)
    np.testing.assert_array_equal(_read_here(str(target))["image"][...], ref)
    assert main(["refs", str(tmp_path / "raw"), str(target)]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert main(["refs", str(tmp_path / "raw"), str(target), "--overwrite", "-q"]) == 0


def test_files_only_tifffile_decodes_are_refused(tmp_path):
    for i in range(2):
        tifffile.imwrite(tmp_path / f"pos{i}.tif", np.zeros((2, 8, 8), bool))
    with pytest.raises(ReferenceError, match="materialize"):
        write_references(tiffstore.open(tmp_path), str(tmp_path / "r.json"))


def test_parquet_with_gaps_in_uncompressed_data_is_refused(tmp_path):
    directory = tmp_path / "raw"
    write_sample(directory, channels=2, stacks=2, shape=(2, 8, 8), missing=[(0, 1)])
    store = tiffstore.open(directory)
    with pytest.raises(ReferenceError, match="format='json'"):
        write_references(store, str(tmp_path / "r.parq"), format="parquet")
    assert not (tmp_path / "r.parq").exists()


# -- opening again from a reference file ---------------------------------------


@pytest.mark.parametrize(("kind", "missing"), [("json", [(2, 1)]), ("parquet", [])])
def test_open_a_reference_file_restores_the_store_without_reading_headers(
    tmp_path, monkeypatch, kind, missing
):
    directory = tmp_path / "raw"
    write_sample(directory, channels=3, stacks=3, shape=(4, 16, 12), missing=missing)
    store = tiffstore.open(directory, chunks="page")
    for name in ("refs.json" if kind == "json" else "refs.parq",):
        target = str(tmp_path / name)
        write_references(store, target, format=kind)

        def no_headers(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a header was read")

        with monkeypatch.context() as patch:
            patch.setattr(build, "scan_headers", no_headers)
            patch.setattr(local, "_walk_local", no_headers)
            again = tiffstore.open(target)
        assert again.manifest == tiffstore.verify_manifest(store.manifest)
        assert (again.dims, again.shape, again.chunks) == (store.dims, store.shape, store.chunks)
        assert again.coords == store.coords
        assert again.manifest.missing() == [{"ch": c, "stack": t} for c, t in missing]
        np.testing.assert_array_equal(
            zarr.open_array(again, mode="r")[...], zarr.open_array(store, mode="r")[...]
        )


def test_reopened_references_read_from_their_url(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    ref = write_positions(tmp_path / "raw", **LAYOUTS["zlib-predictor-strips"])
    upload_folder(tmp_path / "raw", f"{bucket}/raw", options)
    target = str(tmp_path / "refs.json")
    write_references(tiffstore.open(tmp_path / "raw"), target, url=f"{bucket}/raw/")
    (tmp_path / "raw" / "pos0.tif").unlink()  # the local copy is gone: S3 serves
    again = tiffstore.open(target, storage_options=options)
    assert again.manifest.source.url("").startswith(bucket)
    np.testing.assert_array_equal(zarr.open_array(again, mode="r")[...], ref)


def test_saved_manifest_round_trips_and_never_holds_secrets(tmp_path):
    from tiffstore.manifest.saved import dump_manifest, load_manifest

    ref = write_positions(tmp_path / "raw", **LAYOUTS["zstd-tiles"])
    store = tiffstore.open(tmp_path / "raw")
    m = store.manifest
    assert load_manifest(dump_manifest(m)) == m
    with pytest.raises(tiffstore.SourceError, match="not a saved tiffstore manifest"):
        load_manifest(b"PK\x03\x04 not an archive")
    np.testing.assert_array_equal(
        zarr.open_array(tiffstore.TiffStore(load_manifest(dump_manifest(m))), mode="r")[...], ref
    )


def test_a_foreign_reference_file_is_named(tmp_path):
    target = tmp_path / "other.json"
    target.write_text(json.dumps({"version": 1, "refs": {".zattrs": "{}", ".zgroup": "{}"}}))
    with pytest.raises(tiffstore.SourceError, match="carries no tiffstore manifest"):
        tiffstore.open(target)

"""Icechunk repositories: written by tiffstore, read back by icechunk + zarr alone, equal
to the TIFFs; appends as new commits; refusals that name the file and the way out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tests.conftest import read_icechunk_elsewhere, upload_folder, write_positions
from tiffstore.cli.main import main
from tiffstore.errors import GrowthError, OutputError, ReferenceError
from tiffstore.manifest.headers import verify_manifest
from tiffstore.outputs.icechunk.repository import container_for
from tiffstore.outputs.icechunk.write import to_icechunk
from tiffstore.outputs.reference_chunks import reference_chunks, reference_codecs
from tiffstore.outputs.virtual_chunks import _planned_columns, virtual_chunks
from tiffstore.sample import write_sample

#: What a reader runs: icechunk, zarr and numpy, as docs/icechunk.md says. It
#: authorizes the repository's virtual chunk containers (with S3 credentials where
#: the TIFFs are on S3) and must never import tiffstore.

LAYOUTS: dict[str, dict[str, Any]] = {
    "raw": {},
    "zlib-strips": {"compression": "zlib", "rowsperstrip": 8},
    "zstd-tiles": {"compression": "zstd", "tile": (16, 16)},
    # A last strip of 8 of 16 rows: stored short, so written as a native chunk.
    "zlib-short-strips": {"compression": "zlib", "rowsperstrip": 16},
}


def _read_elsewhere(tmp_path: Path, how: dict[str, Any]) -> tuple[dict[str, np.ndarray], Any]:
    """The repository's arrays read by icechunk + zarr alone, and the image's dims and shape."""
    arrays, info = read_icechunk_elsewhere(tmp_path, how)
    return arrays, info["image"]


def _local(repo: Path, snapshot: str | None = None) -> dict[str, Any]:
    return {"path": str(repo), "snapshot": snapshot}


def _open_here(repo: Path) -> icechunk.Repository:
    storage = icechunk.local_filesystem_storage(str(repo))
    prefixes = icechunk.Repository.open(storage).config.virtual_chunk_containers or {}
    return icechunk.Repository.open(
        storage,
        authorize_virtual_chunk_access=icechunk.containers_credentials({p: None for p in prefixes}),
    )


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_round_trip_equals_the_source(tmp_path, layout):
    ref = write_positions(tmp_path / "raw", **LAYOUTS[layout])
    store = tiffstore.open(tmp_path / "raw")
    snapshot = to_icechunk(store, str(tmp_path / "repo"))
    assert isinstance(snapshot, str) and len(snapshot) == 20
    got, meta = _read_elsewhere(tmp_path, _local(tmp_path / "repo"))
    np.testing.assert_array_equal(got["image"], ref)
    assert meta["dims"] == list(store.dims)


def test_coordinates_attributes_and_commit_message(tmp_path):
    directory = tmp_path / "raw"
    write_sample(directory, channels=2, stacks=3, shape=(4, 16, 12), missing=[(1, 2)])
    store = tiffstore.open(directory, scale={"z": 2.0, "y": 0.5, "x": 0.5})
    to_icechunk(store, str(tmp_path / "repo"))
    repo = _open_here(tmp_path / "repo")
    group = zarr.open_group(repo.readonly_session(branch="main").store, mode="r")
    # A missing file reads as the fill value: no reference, no pixel stored.
    np.testing.assert_array_equal(group["image"][...], zarr.open_array(store, mode="r")[...])
    for name, coord in store.coords.items():
        expected = np.asarray(coord["values"])
        if expected.dtype == object:  # None where no file: NaN in the array
            expected = expected.astype(float)
        np.testing.assert_array_equal(group[name][...], expected, name)
    np.testing.assert_allclose(group["z"][...], np.arange(4) * 2.0)
    attrs = group["image"].attrs.asdict()
    assert attrs["tiffstore"]["scale"]["z"]["size"] == 2.0
    assert group.attrs["tiffstore"]["repository"] == 1
    (commit, *_) = repo.ancestry(branch="main")
    assert "5 TIFF files" in commit.message and "ch 2, stack 3, z 4, y 16, x 12" in commit.message


def test_a_replaced_tiff_is_an_error_not_other_pixels(tmp_path):
    write_positions(tmp_path / "raw")
    to_icechunk(tiffstore.open(tmp_path / "raw"), str(tmp_path / "repo"))
    later = os.stat(tmp_path / "raw" / "pos1.tif").st_mtime + 100
    os.utime(tmp_path / "raw" / "pos1.tif", (later, later))
    session = _open_here(tmp_path / "repo").readonly_session("main")
    image = zarr.open_group(session.store, mode="r")["image"]
    image[0]  # untouched files still read
    with pytest.raises(Exception, match="checksum"):
        image[1]


def test_url_rewrites_the_locations_and_the_container(tmp_path):
    ref = write_positions(tmp_path / "raw", **LAYOUTS["zstd-tiles"])
    store = tiffstore.open(tmp_path / "raw")
    copy = tmp_path / "copy of raw"  # a space: the container stops before it
    shutil.copytree(tmp_path / "raw", copy)
    to_icechunk(store, str(tmp_path / "repo"), url=str(copy))
    shutil.rmtree(tmp_path / "raw")
    prefixes = list(_open_here(tmp_path / "repo").config.virtual_chunk_containers or {})
    assert prefixes == [(tmp_path.as_uri() + "/")]
    got, _ = _read_elsewhere(tmp_path, _local(tmp_path / "repo"))
    np.testing.assert_array_equal(got["image"], ref)


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"compression": "zlib", "predictor": True}, "horizontal differencing predictor"),
        ({"compression": "lzw"}, "LZW"),
    ],
)
def test_codecs_without_a_zarr_codec_are_refused(tmp_path, options, words):
    write_positions(tmp_path / "raw", **options)
    with pytest.raises(ReferenceError) as info:
        to_icechunk(tiffstore.open(tmp_path / "raw"), str(tmp_path / "repo"))
    message = str(info.value)
    assert "pos0.tif" in message and words in message and "tiffstore materialize" in message
    assert not (tmp_path / "repo").exists()


def test_a_repository_tiffstore_did_not_write_is_refused(tmp_path):
    write_positions(tmp_path / "raw")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    theirs = icechunk.Repository.create(storage)
    session = theirs.writable_session("main")
    zarr.open_group(session.store, mode="w").create_array("data", shape=(2,), dtype="i4")
    first = session.commit("someone else's data")
    store = tiffstore.open(tmp_path / "raw")
    with pytest.raises(OutputError, match=r"tiffstore did not write.*force"):
        to_icechunk(store, str(tmp_path / "repo"))
    with pytest.raises(OutputError, match="holds no array tiffstore wrote"):
        to_icechunk(store, str(tmp_path / "repo"), append=True)
    assert theirs.lookup_branch("main") == first  # nothing committed, nothing configured
    assert not icechunk.Repository.open(storage).config.virtual_chunk_containers
    forced = to_icechunk(store, str(tmp_path / "repo"), force=True)
    assert icechunk.Repository.open(storage).lookup_branch("main") == forced


def test_a_second_write_without_append_is_refused(tmp_path):
    write_positions(tmp_path / "raw")
    store = tiffstore.open(tmp_path / "raw")
    to_icechunk(store, str(tmp_path / "repo"))
    with pytest.raises(OutputError, match=r"already holds.*append=True"):
        to_icechunk(store, str(tmp_path / "repo"))


def test_a_folder_that_is_no_repository_is_left_alone(tmp_path):
    write_positions(tmp_path / "raw")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an Icechunk repository"):
        to_icechunk(tiffstore.open(tmp_path / "raw"), str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["notes.txt"]


# -- append ---------------------------------------------------------------------------


def _sample(directory: Path, stacks: int, keep: int | None = None) -> None:
    """Stacks ``keep..stacks`` of a 2-channel sample into ``directory`` (others untouched)."""
    scratch = directory.parent / f"scratch{stacks}"
    write_sample(scratch, channels=2, stacks=stacks, shape=(4, 16, 12))
    directory.mkdir(exist_ok=True)
    for f in sorted(scratch.iterdir()):
        stack = int(f.name.split("stack")[1][:4])
        if stack >= (keep or 0):
            shutil.copy2(f, directory / f.name)


def test_append_commits_the_new_files_only(tmp_path):
    directory, repo = tmp_path / "raw", tmp_path / "repo"
    _sample(directory, stacks=2)
    first = to_icechunk(tiffstore.open(directory), str(repo))
    _sample(directory, stacks=4, keep=2)
    grown = tiffstore.open(directory)
    second = to_icechunk(grown, str(repo), append=True)
    repository = _open_here(repo)
    ancestry = list(repository.ancestry(branch="main"))
    assert [a.id for a in ancestry[:2]] == [second, first]
    assert ancestry[0].message.startswith("tiffstore append: 4 new files; stack 2 -> 4")
    # Only the new chunks' references were written; the old ones are untouched.
    diff = repository.diff(from_snapshot_id=first, to_snapshot_id=second)
    updated = sorted(diff.updated_chunks["/image"])
    assert updated == [[c, s, 0, 0, 0] for c in range(2) for s in (2, 3)]
    got, meta = _read_elsewhere(tmp_path, _local(repo))
    np.testing.assert_array_equal(got["image"], zarr.open_array(grown, mode="r")[...])
    np.testing.assert_array_equal(got["stack"], [0, 1, 2, 3])
    old, old_meta = _read_elsewhere(tmp_path, _local(repo, first))
    assert old_meta["shape"] == [2, 2, 4, 16, 12] and meta["shape"] == [2, 4, 4, 16, 12]
    np.testing.assert_array_equal(old["image"], got["image"][:, :2])
    np.testing.assert_array_equal(old["stack"], [0, 1])


def test_append_with_nothing_new_commits_nothing(tmp_path):
    _sample(tmp_path / "raw", stacks=2)
    first = to_icechunk(tiffstore.open(tmp_path / "raw"), str(tmp_path / "repo"))
    again = to_icechunk(tiffstore.open(tmp_path / "raw"), str(tmp_path / "repo"), append=True)
    assert again == first
    assert len(list(_open_here(tmp_path / "repo").ancestry(branch="main"))) == 2


def test_append_refuses_files_that_do_not_extend_the_array(tmp_path):
    directory, repo = tmp_path / "raw", tmp_path / "repo"
    _sample(directory, stacks=3)
    first = to_icechunk(tiffstore.open(directory), str(repo))
    removed = next(directory.glob("*stack0001*"))
    removed.unlink()  # a gap in the middle: not growth at the end
    with pytest.raises(GrowthError, match=removed.name):
        to_icechunk(tiffstore.open(directory), str(repo), append=True)
    assert _open_here(repo).lookup_branch("main") == first


def test_append_refuses_another_acquisition(tmp_path):
    directory, repo = tmp_path / "raw", tmp_path / "repo"
    write_positions(directory, n=2)
    first = to_icechunk(tiffstore.open(directory), str(repo))
    shutil.rmtree(directory)
    write_positions(directory, n=3, shape=(3, 20, 30))  # same names, other pixels and shape
    with pytest.raises(GrowthError, match=r"each file holds .*y.: 20.*was .*y.: 40"):
        to_icechunk(tiffstore.open(directory), str(repo), append=True)
    assert _open_here(repo).lookup_branch("main") == first


# -- the command line ------------------------------------------------------------------


def test_cli_prints_the_snapshot_id(tmp_path, capsys):
    _sample(tmp_path / "raw", stacks=2)
    repo = str(tmp_path / "repo")
    assert main(["icechunk", str(tmp_path / "raw"), repo, "-m", "first light"]) == 0
    printed = capsys.readouterr().out.strip()
    repository = _open_here(tmp_path / "repo")
    assert printed == repository.lookup_branch("main")
    assert next(iter(repository.ancestry(branch="main"))).message == "first light"
    _sample(tmp_path / "raw", stacks=3, keep=2)
    assert main(["icechunk", str(tmp_path / "raw"), repo, "--append", "-q"]) == 0
    assert capsys.readouterr().out.strip() == _open_here(tmp_path / "repo").lookup_branch("main")
    assert main(["icechunk", str(tmp_path / "raw"), repo]) == 1  # without --append: refused
    assert "--append" in capsys.readouterr().err


def test_store_method_and_package_export(tmp_path):
    write_positions(tmp_path / "raw")
    store = tiffstore.open(tmp_path / "raw")
    assert tiffstore.to_icechunk is to_icechunk
    snapshot = store.to_icechunk(str(tmp_path / "repo"), message="from the store")
    assert _open_here(tmp_path / "repo").lookup_branch("main") == snapshot


# -- virtual chunks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "zlib", "rowsperstrip": 7},
        {"rowsperstrip": 7, "contiguous": False},
        {"compression": "zstd", "tile": (16, 16)},
        {"tile": (16, 16)},
    ],
    ids=["raw", "zlib-short-strips", "raw-strips", "zstd-tiles", "raw-tiles"],
)
def test_virtual_chunks_at_once_equal_a_plan_per_chunk(tmp_path, options):
    write_positions(tmp_path / "raw", **options)
    m = tiffstore.open(tmp_path / "raw").manifest
    vc = virtual_chunks(m)
    checked = reference_chunks(verify_manifest(m))
    planned = _planned_columns(checked, reference_codecs(checked))
    columns = (vc.index, vc.file, vc.offset, vc.length, vc.native)
    for got, expected in zip(columns, planned, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert all(url.startswith("file://") for url in vc.locations)
    for index, file, offset, length in zip(vc.index, vc.file, vc.offset, vc.length, strict=True):
        assert file >= 0 and offset > 0 and length > 0 and len(index) == len(vc.shape)


def test_virtual_chunk_locations_are_encoded_urls(tmp_path):
    write_positions(tmp_path / "a b", n=1)
    vc = virtual_chunks(tiffstore.open(tmp_path / "a b").manifest)
    assert vc.prefix == (tmp_path / "a b").as_uri() + "/"
    assert vc.urls == ((tmp_path / "a b" / "pos0.tif").as_uri(),)
    assert container_for(vc.prefix).prefix == tmp_path.as_uri() + "/"
    data = tifffile.TiffFile(tmp_path / "a b" / "pos0.tif").pages[0]
    assert int(vc.offset[0]) == data.dataoffsets[0]


# -- S3 ----------------------------------------------------------------------------------


@pytest.mark.network
@pytest.mark.parametrize("layout", ["raw", "zstd-tiles"])
def test_tiffs_and_repository_on_s3(tmp_path, s3_bucket, s3_server, layout):
    bucket, options = s3_bucket
    ref = write_positions(tmp_path / "raw", **LAYOUTS[layout])
    upload_folder(tmp_path / "raw", f"{bucket}/raw", options)
    store = tiffstore.open(f"{bucket}/raw/", storage_options=options)
    snapshot = to_icechunk(store, f"{bucket}/repo", storage_options=options)
    s3 = {"bucket": bucket.removeprefix("s3://"), "prefix": "repo", "endpoint": s3_server.endpoint}
    how = {"s3": s3, "snapshot": snapshot}
    got, _ = _read_elsewhere(tmp_path, how)
    np.testing.assert_array_equal(got["image"], ref)


@pytest.mark.network
def test_append_on_s3(tmp_path, s3_bucket, s3_server):
    bucket, options = s3_bucket
    ref = write_positions(tmp_path / "raw", n=3)
    (tmp_path / "raw" / "pos2.tif").rename(tmp_path / "pos2.tif")
    upload_folder(tmp_path / "raw", f"{bucket}/raw", options)
    repo = f"{bucket}/repo"
    first = to_icechunk(
        tiffstore.open(f"{bucket}/raw/", storage_options=options), repo, storage_options=options
    )
    (tmp_path / "raw" / "pos0.tif").unlink()
    (tmp_path / "raw" / "pos1.tif").unlink()
    (tmp_path / "pos2.tif").rename(tmp_path / "raw" / "pos2.tif")
    upload_folder(tmp_path / "raw", f"{bucket}/raw", options)
    store = tiffstore.open(f"{bucket}/raw/", storage_options=options)
    second = to_icechunk(store, repo, storage_options=options, append=True)
    assert second != first
    s3 = {"bucket": bucket.removeprefix("s3://"), "prefix": "repo", "endpoint": s3_server.endpoint}
    got, meta = _read_elsewhere(tmp_path, {"s3": s3})
    assert meta["shape"] == [3, 3, 40, 30]
    np.testing.assert_array_equal(got["image"], ref)

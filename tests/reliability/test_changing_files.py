"""Files that change under an open store: replaced, grown, cut, touched or removed files
are refused by name when their chunk is read (never stale or wrong bytes), and
``tiffstore check`` says which files no longer match a reference file."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tiffstore
from tiffstore.apps.check import check_references, check_source
from tiffstore.cli.main import main
from tiffstore.errors import FileChangedError, TiffStoreError
from tiffstore.outputs.references import write_references

from .corpus import bounded, read_everything, stacks, write_stack

#: How each storage is written: whole uncompressed pages (byte ranges), zlib strips
#: (decoded one by one), 1-bit pages (decoded by tifffile).
STORAGES: dict[str, dict[str, object]] = {
    "raw": {},
    "zlib": {"compression": "zlib"},
    "tifffile": {},
}


def _acquisition(folder: Path, storage: str) -> np.ndarray:
    if storage == "tifffile":
        rng = np.random.default_rng(2)
        ref = rng.integers(0, 2, (3, 2, 16, 16)).astype(bool)
        for t in range(3):
            write_stack(folder / f"img_t{t}.tif", ref[t])
        return ref
    return stacks(folder, shape=(2, 16, 16), **STORAGES[storage])  # type: ignore[arg-type]


def _later() -> None:
    # File times come from a coarse kernel clock: let it tick before changing a file.
    time.sleep(0.03)


def _replace(path: Path) -> None:
    other = path.with_suffix(".new")
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(8)  # same size, other pixels
    other.write_bytes(bytes(data))
    os.replace(other, path)


def _rewrite_in_place(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(x ^ 0xFF for x in data[-8:])
    with path.open("r+b") as fh:
        fh.write(bytes(data))


def _grow(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(bytes(4096))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _delete(path: Path) -> None:
    path.unlink()


CHANGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "replaced": (_replace, "replaced"),
    "rewritten in place": (_rewrite_in_place, "rewritten"),
    "grown": (_grow, "grown"),
    "truncated": (_truncate, "truncated"),
    "deleted": (_delete, "removed"),
}


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_file_changed_after_open_is_refused_by_name(
    change: str, storage: str, tmp_path: Path
) -> None:
    ref = _acquisition(tmp_path, storage)
    store = tiffstore.open(tmp_path, chunks="file")
    victim = tmp_path / "img_t1.tif"
    _later()
    do, words = CHANGES[change]
    do(victim)
    arr = store.to_dask()
    np.testing.assert_array_equal(arr[0].compute(), ref[0])  # the others still read
    np.testing.assert_array_equal(arr[2].compute(), ref[2])
    with pytest.raises(FileChangedError, match=words) as info:
        bounded(lambda: store.get_bytes_sync("1.0.0.0"))
    assert str(victim) in str(info.value)


def test_unchanged_files_read_after_a_reopen(tmp_path: Path) -> None:
    ref = stacks(tmp_path)
    store = tiffstore.open(tmp_path)
    _later()
    victim = tmp_path / "img_t1.tif"
    new = ref[1] + 1
    write_stack(victim, new)
    with pytest.raises(FileChangedError):
        read_everything(store)
    again = read_everything(tiffstore.open(tmp_path))
    np.testing.assert_array_equal(again[1], new)


def test_a_pickled_store_checks_in_its_new_process_too(tmp_path: Path) -> None:
    import pickle

    stacks(tmp_path)
    store = tiffstore.open(tmp_path)
    clone = pickle.loads(pickle.dumps(store))
    _later()
    _grow(tmp_path / "img_t2.tif")
    with pytest.raises(FileChangedError, match="img_t2"):
        read_everything(clone)


def test_files_cut_while_threads_read_give_data_or_a_named_error(tmp_path: Path) -> None:
    """Cutting files while 8 threads read: each read is right or a tiffstore error."""
    ref = stacks(tmp_path, n=8, shape=(4, 64, 64))
    store = tiffstore.open(tmp_path, chunks="page")
    m = store.manifest
    keys = [".".join(map(str, i)) for i in np.ndindex(*m.chunk_grid)] * 4

    def read(key: str) -> str:
        try:
            raw = store.get_bytes_sync(key)
        except TiffStoreError as exc:
            assert "img_t" in str(exc)
            return "error"
        assert raw is not None
        t, z = (int(p) for p in key.split(".")[:2])
        np.testing.assert_array_equal(np.frombuffer(raw, m.dtype).reshape(64, 64), ref[t, z])
        return "data"

    def cut() -> None:
        _later()
        for t in range(0, 8, 2):
            _truncate(tmp_path / f"img_t{t}.tif")

    with ThreadPoolExecutor(8) as pool:
        cutting = pool.submit(cut)
        results = bounded(lambda: list(pool.map(read, keys)))
        cutting.result()
    assert "data" in results
    after = [read(f"{t}.0.0.0") for t in range(8)]
    assert after == ["error", "data"] * 4


# -- tiffstore check -------------------------------------------------------------


def test_check_references_names_missing_resized_and_modified_files(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    stacks(folder, n=5)
    refs = str(tmp_path / "raw.json")
    write_references(tiffstore.open(folder), refs)
    made = json.loads(json.loads(Path(refs).read_text())["refs"][".zattrs"])
    assert "mtimes_ns" in made["tiffstore"]["made_from"]
    assert check_references(refs) == (5, [])
    _later()
    _delete(folder / "img_t0.tif")
    _grow(folder / "img_t1.tif")
    _rewrite_in_place(folder / "img_t2.tif")
    n, problems = check_references(refs)
    assert n == 5
    found = {Path(p.file).name: p.problem for p in problems}
    assert found.keys() == {"img_t0.tif", "img_t1.tif", "img_t2.tif"}
    assert found["img_t0.tif"] == "missing"
    assert "bytes now" in found["img_t1.tif"]
    assert "modified" in found["img_t2.tif"]


def test_check_parquet_references(tmp_path: Path) -> None:
    pytest.importorskip("fastparquet")
    folder = tmp_path / "raw"
    stacks(folder, n=3)
    refs = str(tmp_path / "raw.parq")
    write_references(tiffstore.open(folder), refs, format="parquet")
    assert check_references(refs) == (3, [])
    _later()
    _truncate(folder / "img_t2.tif")
    _, problems = check_references(refs)
    assert [Path(p.file).name for p in problems] == ["img_t2.tif"]


def test_check_source_names_broken_files(tmp_path: Path) -> None:
    stacks(tmp_path, n=4)
    assert check_source(str(tmp_path)) == (4, [])
    _truncate(tmp_path / "img_t1.tif")
    (tmp_path / "img_t2.tif").write_text("not a tiff")
    write_stack(tmp_path / "img_t3.tif", np.zeros((2, 8, 8), np.float32))
    n, problems = check_source(str(tmp_path))
    found = {Path(p.file).name: p.problem for p in problems}
    assert n == 4
    assert "truncated" in found["img_t1.tif"] or "cut short" in found["img_t1.tif"]
    assert "not a TIFF" in found["img_t2.tif"]
    assert "dtype" in found["img_t3.tif"]
    assert "img_t0.tif" not in found


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "raw"
    stacks(folder, n=3)
    refs = str(tmp_path / "raw.json")
    write_references(tiffstore.open(folder), refs)
    assert main(["check", refs]) == 0
    assert "All 3 files match" in capsys.readouterr().out
    _later()
    _grow(folder / "img_t1.tif")
    assert main(["check", refs]) == 1
    assert "img_t1.tif" in capsys.readouterr().out
    assert main(["check", refs, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "references"
    assert [Path(p["file"]).name for p in doc["problems"]] == ["img_t1.tif"]
    assert main(["check", str(folder)]) == 0
    assert main(["check", str(tmp_path / "nothing.json")]) == 1
    assert "no such reference file" in capsys.readouterr().err


@pytest.mark.network
def test_check_references_of_remote_files(
    tmp_path: Path,
    s3_bucket: tuple[str, dict[str, Any]],
    upload: Callable[[str | Path, str, dict[str, Any]], None],
) -> None:
    import fsspec

    url, options = s3_bucket
    stacks(tmp_path / "raw", n=3)
    upload(tmp_path / "raw", f"{url}/raw", options)
    refs = str(tmp_path / "raw.json")
    write_references(tiffstore.open(f"{url}/raw", storage_options=options), refs)
    assert check_references(refs, options) == (3, [])
    fs = fsspec.filesystem("s3", **options)
    fs.rm(f"{url}/raw/img_t0.tif")
    fs.pipe(f"{url}/raw/img_t1.tif", b"short")
    fs.invalidate_cache()
    _, problems = check_references(refs, options)
    found = {p.file.rsplit("/", 1)[-1]: p.problem for p in problems}
    assert found == {"img_t0.tif": "missing", "img_t1.tif": found["img_t1.tif"]}
    assert "5 bytes now" in found["img_t1.tif"]


def test_references_pointing_at_copies_do_not_check_the_originals_times(tmp_path: Path) -> None:
    """A reference file written with ``url=`` reads copies of the files, whose times
    differ from the originals': they are read, not refused as changed."""
    import shutil

    ref = stacks(tmp_path / "raw", n=3)
    copies = tmp_path / "copies"
    copies.mkdir()
    for path in sorted((tmp_path / "raw").iterdir()):
        shutil.copyfile(path, copies / path.name)  # new modification times
        os.utime(copies / path.name, ns=(0, path.stat().st_mtime_ns + 5_000_000_000))
    refs = str(tmp_path / "raw.json")
    write_references(tiffstore.open(tmp_path / "raw", chunks="file"), refs, url=str(copies))
    np.testing.assert_array_equal(tiffstore.open(refs).to_dask().compute(), ref)
    # Without url=, the originals are read and their times checked.
    plain = str(tmp_path / "plain.json")
    write_references(tiffstore.open(tmp_path / "raw", chunks="file"), plain)
    os.utime(tmp_path / "raw" / "img_t1.tif", ns=(0, 1))
    with pytest.raises(FileChangedError, match=r"img_t1\.tif"):
        tiffstore.open(plain).to_dask().compute()


def test_references_to_the_same_folder_spelled_otherwise_still_check_times(
    tmp_path: Path,
) -> None:
    """``url=file://...`` of the very folder the files are in: the same files, so their
    recorded times still apply."""
    stacks(tmp_path / "raw", n=3)
    refs = str(tmp_path / "raw.json")
    url = f"file://{tmp_path / 'raw'}/"
    write_references(tiffstore.open(tmp_path / "raw", chunks="file"), refs, url=url)
    os.utime(tmp_path / "raw" / "img_t1.tif", ns=(0, 1))
    with pytest.raises(FileChangedError, match=r"img_t1\.tif"):
        tiffstore.open(refs).to_dask().compute()

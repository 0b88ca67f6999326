"""``checksum=True``: every byte read at the open, every later read checked against
CRC-32s of whole blocks, so that a file rewritten at the same size and modification
time (which the size-and-time check cannot see) is refused by name, locally and on
S3, through the store, zarr and dask, in another process, and from reference files."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tests.conftest import HttpServer
from tiffstore.apps.check import check_references
from tiffstore.cli.main import main
from tiffstore.errors import FileChangedError, OptionError, TiffReadError
from tiffstore.outputs.references import write_references
from tiffstore.read.store import TiffStore
from tiffstore.sources.checksums import BLOCK, ChecksummedSource, compute_checksums

from .corpus import read_everything, stacks, write_stack

#: Whole uncompressed pages (byte ranges), zlib strips with a predictor and zstd tiles
#: (decoded segment by segment), 1-bit pages (decoded by tifffile).
STORAGES: dict[str, dict[str, Any]] = {
    "raw": {},
    "zlib+predictor strips": {"compression": "zlib", "predictor": True, "rowsperstrip": 8},
    "zstd tiles": {"compression": "zstd", "tile": (16, 16)},
    "tifffile": {},
}


def _acquisition(folder: Path, storage: str, shape: tuple[int, ...] = (3, 40, 48)) -> np.ndarray:
    if storage == "tifffile":
        ref = np.random.default_rng(2).integers(0, 2, (3, *shape)).astype(bool)
        for t in range(3):
            write_stack(folder / f"img_t{t}.tif", ref[t])
        return ref
    return stacks(folder, shape=shape, **STORAGES[storage])


def _rewrite_keeping_stamp(path: Path, offset: int, length: int = 8) -> None:
    """Flip ``length`` bytes at ``offset`` in place, then put the modification time back:
    the size and the time are as listed, so only the content tells."""
    before = path.stat()
    with path.open("r+b") as fh:
        fh.seek(offset)
        data = fh.read(length)
        fh.seek(offset)
        fh.write(bytes(x ^ 0xFF for x in data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _pixel_offset(path: Path) -> int:
    """Where the first page's last strip or tile of pixel data lies in the file."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return int(page.dataoffsets[-1])


def _checked(store: TiffStore, block: int) -> TiffStore:
    """The store reading through checksums of blocks of ``block`` bytes."""
    m = store.manifest
    source = compute_checksums(m.source, m.files, m.file_sizes, block=block)
    return TiffStore(dataclasses.replace(m, source=source))


@pytest.mark.parametrize("storage", list(STORAGES))
def test_checksummed_reads_equal_plain_reads(storage: str, tmp_path: Path) -> None:
    ref = _acquisition(tmp_path, storage)
    plain = tiffstore.open(tmp_path, chunks="page")
    steps: list[tuple[str, int, int | None]] = []
    store = tiffstore.open(
        tmp_path, chunks="page", checksum=True, progress=lambda *a: steps.append(a)
    )
    assert isinstance(store.manifest.source, ChecksummedSource)
    assert ("checksums", 0, 3) in steps and ("checksums", 3, 3) in steps
    expected = read_everything(plain)
    np.testing.assert_array_equal(expected, ref.reshape(expected.shape))
    # Blocks of 1 KiB: every strip, tile and page spans several, at any offset.
    for checked in (store, _checked(plain, 1024)):
        np.testing.assert_array_equal(read_everything(checked), expected)
        np.testing.assert_array_equal(checked.to_dask().compute(), expected)
        np.testing.assert_array_equal(zarr.open_array(checked, mode="r")[...], expected)


@pytest.mark.parametrize("storage", list(STORAGES))
def test_a_same_size_rewrite_with_the_same_time_is_refused(storage: str, tmp_path: Path) -> None:
    ref = _acquisition(tmp_path, storage)
    plain = tiffstore.open(tmp_path, chunks="file")
    store = tiffstore.open(tmp_path, chunks="file", checksum=True)
    victim = tmp_path / "img_t1.tif"
    _rewrite_keeping_stamp(victim, _pixel_offset(victim))
    if storage == "raw":
        # The limit checksums lift: size and time match, so the changed bytes are served.
        changed = plain.to_dask()[1].compute()
        assert not np.array_equal(changed, ref[1])
    reads: dict[str, Callable[[], Any]] = {
        "store": lambda: store.get_bytes_sync("1.0.0.0"),
        "zarr": lambda: zarr.open_array(store, mode="r")[1],
        "dask from_zarr": lambda: da.from_zarr(store)[1].compute(),
        "to_dask": lambda: store.to_dask()[1].compute(),
    }
    for how, read in reads.items():
        with pytest.raises(FileChangedError, match="differ from when the store was opened") as e:
            read()
        assert str(victim) in str(e.value), how
    arr = store.to_dask()
    np.testing.assert_array_equal(arr[0].compute(), ref[0])  # the others still read
    np.testing.assert_array_equal(arr[2].compute(), ref[2])


def test_a_change_is_refused_only_where_it_is_read(
    tmp_path: Path, local_reads: list[tuple[str, int, int]]
) -> None:
    """Blocks, not files: a chunk whose blocks are unchanged reads, and reads stay small."""
    page = BLOCK // 2  # (256, 256) uint16
    ref = stacks(tmp_path, n=2, shape=(8, 256, 256))
    store = tiffstore.open(tmp_path, chunks="page", checksum=True)
    m = store.manifest
    victim = tmp_path / "img_t1.tif"
    start = int(m.tables.data_offset[1])
    _rewrite_keeping_stamp(victim, start + 7 * page + 100)  # in the last page
    local_reads.clear()
    z = zarr.open_array(store, mode="r")
    for k in range(5):  # pages whose blocks hold none of the change
        np.testing.assert_array_equal(z[1, k], ref[1, k])
    read = sum(n for name, _, n in local_reads if name == "img_t1.tif")
    assert read <= 5 * (page + 2 * BLOCK), "each read takes its own blocks, not the file"
    with pytest.raises(FileChangedError, match=r"img_t1\.tif: bytes") as info:
        z[1, 7]
    lo = (start + 7 * page + 100) // BLOCK * BLOCK
    assert f"bytes {lo}-{lo + BLOCK}" in str(info.value)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
def test_every_read_gives_the_files_bytes_and_checks_only_its_blocks(
    remote: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random ranges (unaligned, overlapping, touching, empty) through every read method,
    over blocks of 64 bytes; then one changed byte fails exactly the reads of its block."""
    from tiffstore.sources.local import LocalSource

    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "empty.bin").write_bytes(b"")
    inner = LocalSource(str(tmp_path))
    monkeypatch.setattr(LocalSource, "remote", remote)  # the remote path: widened, copied
    source = compute_checksums(inner, ["a.bin", "empty.bin"], [5000, 0], block=64)
    assert source.remote is remote and len(source.crcs) == -(-5000 // 64)

    def ranges() -> list[tuple[int, int]]:
        starts = rng.integers(0, 5000, rng.integers(1, 6))
        return [(int(a), int(rng.integers(0, min(300, 5000 - a) + 1))) for a in starts]

    for _ in range(100):
        wanted = ranges()
        views = source.read_ranges("a.bin", wanted)
        assert [bytes(v) for v in views] == [data[a : a + n] for a, n in wanted]
        # Buffers of 2-byte items too: a read takes any buffer of the right size.
        outs: list[np.ndarray] = [
            np.zeros(n // 2, np.uint16) if n % 2 == 0 else np.zeros(n, np.uint8) for _, n in wanted
        ]
        requests = [(a, memoryview(o.data)) for (a, _), o in zip(wanted, outs, strict=True)]
        source.read_many_into("a.bin", requests)
        assert [o.tobytes() for o in outs] == [data[a : a + n] for a, n in wanted]
        a, n = wanted[0]
        assert source.read_bytes("a.bin", a, n) == data[a : a + n]
    assert source.read_header("a.bin", 10) == data[:10]
    assert source.read_bytes("empty.bin", 0, 0) == b""
    with source.open("a.bin") as fh:
        fh.seek(4990)
        assert fh.read(100) == data[4990:]
        fh.seek(100)
        assert fh.read(1000) == data[100:1100] and fh.tell() == 1100
    with pytest.raises(TiffReadError, match="past the end"):
        source.read_bytes("a.bin", 4990, 20)

    changed = bytearray(data)
    changed[1000] ^= 1  # block 15: bytes 960-1024
    (tmp_path / "a.bin").write_bytes(bytes(changed))
    assert source.read_bytes("a.bin", 0, 960) == data[:960]
    assert source.read_bytes("a.bin", 1024, 100) == data[1024:1124]
    for read in (
        lambda: source.read_bytes("a.bin", 1001, 1),
        lambda: source.read_ranges("a.bin", [(0, 10), (959, 2)]),
        lambda: source.read_many_into("a.bin", [(990, memoryview(bytearray(40)))]),
    ):
        with pytest.raises(FileChangedError, match=r"a\.bin: bytes 960-1024 differ"):
            read()
    assert source.changed() == {"a.bin": (960, 1024)}
    os.truncate(tmp_path / "a.bin", 4000)
    assert "truncated" in str(source.changed(["a.bin"])["a.bin"])
    with pytest.raises(TiffReadError, match="truncated"):
        compute_checksums(inner, ["a.bin"], [5000])


def test_a_chunk_of_many_small_pages_reads_their_block_once(
    tmp_path: Path, local_reads: list[tuple[str, int, int]]
) -> None:
    """Pages written one by one (an IFD between each) are one request each: requests that
    share blocks are read and checked once together."""
    ref = np.random.default_rng(3).integers(0, 4000, (5, 40, 50), dtype=np.uint16)
    with tifffile.TiffWriter(tmp_path / "one.tif") as tif:
        for k, page in enumerate(ref):
            # (A description per page keeps tifffile from writing them as one block.)
            tif.write(page, contiguous=False, metadata=None, description="p" * (k + 1))
    store = tiffstore.open(tmp_path, chunks="file", checksum=True)
    assert store.manifest.layout.storage == "pages"
    assert [p.kind for p in tiffstore.plan_chunk(store.manifest, (0, 0, 0)).pieces] == ["copy"] * 5
    local_reads.clear()
    np.testing.assert_array_equal(store.to_dask().compute(), ref)
    size = (tmp_path / "one.tif").stat().st_size
    assert sum(n for _, _, n in local_reads) <= size


def test_header_bytes_rewritten_are_refused_on_the_first_read(tmp_path: Path) -> None:
    """Same-size files whose header was trusted at the open have it compared on their first
    read: with checksums, that read is refused, whichever chunk asked."""
    ref = stacks(tmp_path, n=5, shape=(8, 256, 256))
    plain = tiffstore.open(tmp_path, chunks="page")
    store = tiffstore.open(tmp_path, chunks="page", checksum=True)
    m = store.manifest
    assert not m.verified.all()
    k = int(np.flatnonzero(~m.verified)[0])
    victim = tmp_path / m.files[k]
    description = victim.read_bytes().index(b'{"shape"')
    _rewrite_keeping_stamp(victim, description + 2, 1)  # "shape" -> another word
    # Without checksums the header is compared, differs, and is parsed: same pixels.
    np.testing.assert_array_equal(zarr.open_array(plain, mode="r")[k, 7], ref[k, 7])
    last_page = (k, 7, 0, 0)  # far from the header block: only the header check reads it
    with pytest.raises(FileChangedError, match=f"{m.files[k]}: bytes 0-{BLOCK} differ"):
        store.get_bytes_sync(".".join(map(str, last_page)))


def test_device_reads_take_the_checked_host_path(tmp_path: Path) -> None:
    """GPU reads of raw ranges go straight to the device (KvikIO) only from a plain local
    source: with checksums they are read into host memory, checked, then copied."""
    from tiffstore.read import gpu

    from ..test_gpu import MARKED, DirectStaging, MarkedBuffer

    ref = stacks(tmp_path, shape=(2, 64, 64))
    plain = tiffstore.open(tmp_path, chunks="file")
    store = tiffstore.open(tmp_path, chunks="file", checksum=True)
    direct = DirectStaging()
    gpu.register_staging(MarkedBuffer, direct)
    try:
        assert plain.get_sync("0.0.0.0", prototype=MARKED) is not None
        assert len(direct.direct) == 1  # the plain store's read went straight to the device
        value = store.get_sync("0.0.0.0", prototype=MARKED)
        assert value is not None and value.to_bytes() == ref[0].tobytes()
        assert len(direct.direct) == 1 and direct.copies == [ref[0].nbytes]
        victim = tmp_path / "img_t1.tif"
        _rewrite_keeping_stamp(victim, _pixel_offset(victim))
        with pytest.raises(FileChangedError, match=r"img_t1\.tif: bytes"):
            store.get_sync("1.0.0.0", prototype=MARKED)
    finally:
        gpu.unregister_staging(MarkedBuffer)


def _read_pickled(path: str) -> str:
    """Run in a new process: unpickle a store and read every chunk."""
    code = (
        "import pickle, sys\n"
        "from tests.reliability.corpus import read_everything\n"
        "store = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "print(type(store.manifest.source).__name__)\n"
        "try:\n"
        "    read_everything(store)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, path],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_file_changed_between_listing_and_checksums_is_refused_at_the_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stacks(tmp_path)
    real = tiffstore.opening.resolve_source

    def listed_then_changed(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        victim = tmp_path / "img_t1.tif"
        victim.write_bytes(victim.read_bytes() + bytes(8))  # after the listing
        return found

    monkeypatch.setattr(tiffstore.opening, "resolve_source", listed_then_changed)
    with pytest.raises(FileChangedError, match=r"img_t1\.tif: the file changed after"):
        tiffstore.open(tmp_path, checksum=True)


def test_a_pickled_store_checks_in_another_process(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    stacks(folder, shape=(2, 64, 64))
    plain = tiffstore.open(folder)
    store = tiffstore.open(folder, checksum=True)
    read_everything(store)  # builds the process-local lookups, which must not travel
    data = pickle.dumps(store)
    assert len(data) < len(pickle.dumps(plain)) + 1024
    assert "_index" not in pickle.loads(data).manifest.source.__dict__
    saved = tmp_path / "store.pickle"
    saved.write_bytes(data)
    victim = folder / "img_t2.tif"
    _rewrite_keeping_stamp(victim, _pixel_offset(victim))
    out = _read_pickled(str(saved))
    assert out.startswith("ChecksummedSource\nFileChangedError")
    assert f"{victim}: bytes 0-" in out


def test_dask_names_follow_the_checksums(tmp_path: Path) -> None:
    stacks(tmp_path)
    one = tiffstore.open(tmp_path, checksum=True)
    two = tiffstore.open(tmp_path, checksum=True)
    assert one.manifest == two.manifest and hash(one.manifest) == hash(two.manifest)
    assert one.to_dask().name == two.to_dask().name
    assert one.to_dask().name != tiffstore.open(tmp_path).to_dask().name
    _rewrite_keeping_stamp(tmp_path / "img_t0.tif", _pixel_offset(tmp_path / "img_t0.tif"))
    three = tiffstore.open(tmp_path, checksum=True)
    assert three.manifest != one.manifest
    assert three.to_dask().name != one.to_dask().name


def test_reference_files_keep_the_checksums(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "raw"
    ref = stacks(folder, shape=(2, 64, 64))
    store = tiffstore.open(folder, checksum=True)
    refs = str(tmp_path / "raw.json")
    write_references(store, refs)
    again = tiffstore.open(refs)
    assert isinstance(again.manifest.source, ChecksummedSource)
    assert again.manifest.source == store.manifest.source
    np.testing.assert_array_equal(read_everything(again), ref)
    assert main(["check", refs, "--checksum"]) == 0
    assert "All 3 files match" in capsys.readouterr().out

    victim = folder / "img_t1.tif"
    _rewrite_keeping_stamp(victim, _pixel_offset(victim))
    with pytest.raises(FileChangedError, match=r"img_t1\.tif"):
        read_everything(tiffstore.open(refs))
    assert main(["check", refs]) == 0  # size and time match: the cheap check cannot tell
    capsys.readouterr()
    assert main(["check", refs, "--checksum", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [Path(p["file"]).name for p in doc["problems"]] == ["img_t1.tif"]
    problem = doc["problems"][0]["problem"]
    assert problem.startswith("content differs from when referenced (checksum), first in bytes 0-")

    # Touched, content unchanged: the cheap check names it, the content check clears it.
    os.utime(folder / "img_t2.tif", ns=(1, 2))
    assert main(["check", refs, "--checksum", "--json"]) == 1
    found = {
        Path(p["file"]).name: p["problem"] for p in json.loads(capsys.readouterr().out)["problems"]
    }
    assert found["img_t2.tif"].endswith("its content is unchanged (checksum)")
    assert main(["check", str(folder), "--checksum"]) == 1  # a source has no checksums
    err = capsys.readouterr().err
    assert "--checksum (content checksums) does not apply" in err
    assert "the checksums a reference file carries" in err

    plain_refs = str(tmp_path / "plain.json")
    write_references(tiffstore.open(folder), plain_refs)
    assert not isinstance(tiffstore.open(plain_refs).manifest.source, ChecksummedSource)
    with pytest.raises(OptionError, match="carry no checksums"):
        check_references(plain_refs, checksum=True)
    assert main(["check", plain_refs, "--checksum"]) == 1
    assert "--checksum" in capsys.readouterr().err
    # Opened with checksum=True, references without them get them now.
    assert isinstance(tiffstore.open(plain_refs, checksum=True).manifest.source, ChecksummedSource)


def test_checksum_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], local_reads: list[tuple[str, int, int]]
) -> None:
    folder = tmp_path / "raw"
    stacks(folder, shape=(2, 64, 64))
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert main(["inspect", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checksums"] is None
    assert sum(n for _, _, n in local_reads) < total  # headers only
    local_reads.clear()
    assert main(["inspect", str(folder), "--json", "--checksum"]) == 0
    assert json.loads(capsys.readouterr().out)["checksums"] == {
        "block_bytes": BLOCK,
        "blocks": 3,
    }
    assert sum(n for _, _, n in local_reads) >= total  # every byte
    refs = str(tmp_path / "raw.json")
    assert main(["refs", str(folder), refs, "--checksum", "-q"]) == 0
    assert isinstance(tiffstore.open(refs).manifest.source, ChecksummedSource)


@pytest.mark.network
def test_a_remote_rewrite_its_etag_misses_is_refused(http_server: HttpServer) -> None:
    """nginx's ETag is the size and the time in whole seconds: a same-size rewrite
    with the time put back keeps it, so the conditional reads pass, and only the
    checksums catch it."""
    name = f"acq-{uuid.uuid4().hex[:8]}"
    folder = http_server.root / name
    ref = stacks(folder, shape=(2, 64, 64))
    url = f"{http_server.url}{name}/"
    plain = tiffstore.open(url)
    store = tiffstore.open(url, checksum=True)
    assert store.manifest.source.remote
    assert all(v.startswith('"') for v in store.manifest.file_versions)
    np.testing.assert_array_equal(read_everything(store), ref)
    local = folder / "img_t1.tif"
    _rewrite_keeping_stamp(local, _pixel_offset(local))
    assert not np.array_equal(read_everything(plain)[1], ref[1])  # served as it is now
    with pytest.raises(FileChangedError, match=rf"{name}/img_t1\.tif: bytes 0-"):
        read_everything(store)


def test_a_remote_file_replaced_on_s3_is_refused_with_or_without_checksums(
    tmp_path: Path,
    s3_bucket: tuple[str, dict[str, Any]],
    upload: Callable[[str | Path, str, dict[str, Any]], None],
) -> None:
    import fsspec

    url, options = s3_bucket
    ref = stacks(tmp_path / "raw", shape=(2, 64, 64))
    upload(tmp_path / "raw", f"{url}/raw", options)
    plain = tiffstore.open(f"{url}/raw", storage_options=options)
    store = tiffstore.open(f"{url}/raw", storage_options=options, checksum=True)
    np.testing.assert_array_equal(read_everything(store), ref)
    fs = fsspec.filesystem("s3", **options)
    local = tmp_path / "raw" / "img_t1.tif"
    _rewrite_keeping_stamp(local, _pixel_offset(local))
    fs.pipe(f"{url}/raw/img_t1.tif", local.read_bytes())  # same size, other bytes
    fs.invalidate_cache()
    # S3's ETag is the content's MD5: the conditional read refuses it either way.
    for candidate in (plain, store):
        with pytest.raises(FileChangedError, match=r"raw/img_t1\.tif: "):
            read_everything(candidate)


def test_xarray_backend_takes_checksum(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    ref = stacks(tmp_path / "raw", shape=(2, 64, 64))
    ds = xr.open_dataset(tmp_path / "raw", engine="tiffstore", checksum=True, chunks={})
    plain = xr.open_dataset(tmp_path / "raw", engine="tiffstore", chunks={})
    np.testing.assert_array_equal(ds["image"].values, ref)
    local = tmp_path / "raw" / "img_t2.tif"
    _rewrite_keeping_stamp(local, _pixel_offset(local))
    assert not np.array_equal(plain["image"].values[2], ref[2])  # served as it is now
    with pytest.raises(FileChangedError, match=r"img_t2\.tif: bytes"):
        ds["image"].values  # noqa: B018 - the read is the test


def test_materialize_command_takes_the_open_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiffstore.outputs.materialize import run

    ref = stacks(tmp_path / "raw", n=4, shape=(2, 64, 64))
    (tmp_path / "raw" / "img_t3.tif").rename(tmp_path / "raw" / "skip_t3.tif")
    opened: list[TiffStore] = []
    real_open = run.open_store

    def recording_open(*args: Any, **kwargs: Any) -> TiffStore:
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(run, "open_store", recording_open)
    out = tmp_path / "out.zarr"
    argv = ["materialize", str(tmp_path / "raw"), str(out), "--quiet", "--checksum"]
    argv += ["--validate", "--exclude", "skip_*"]
    assert main(argv) == 0
    (store,) = opened
    assert isinstance(store.manifest.source, ChecksummedSource)
    assert bool(store.manifest.verified.all())
    assert store.shape[0] == 3
    np.testing.assert_array_equal(zarr.open_array(str(out), path="image", mode="r")[...], ref[:3])

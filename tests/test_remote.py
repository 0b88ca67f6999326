"""Remote TIFFs: ``tiffstore.open`` on s3:// and http:// sources, against real servers on
loopback (moto, nginx). Faults (a proxy that breaks requests) are in
``tests/reliability/test_remote_faults.py``."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tests.conftest import HttpServer, stack_files
from tiffstore.errors import SourceError
from tiffstore.sample import sample_name, write_sample
from tiffstore.sources.remote import FsspecSource
from tiffstore.sources.settings import RemoteSettings

pytestmark = pytest.mark.network

CHANNELS, STACKS, SHAPE = 2, 3, (4, 40, 50)

#: Name -> options for tifffile: the compressions the issue names, plus tiles.
CASES: dict[str, dict[str, Any]] = {
    "raw": {},
    "zlib-predictor": {"compression": "zlib", "predictor": True, "rowsperstrip": 16},
    "lzw": {"compression": "lzw", "rowsperstrip": 16},
    "zstd": {"compression": "zstd"},
    "tiled": {"compression": "zlib", "tile": (16, 32)},
    # 12-bit samples: no strip codec, decoded through tifffile on the ranged file.
    "12-bit": {"bitspersample": 12},
}


def write_case(directory: Path, case: str, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Write the acquisition for ``case`` and return tifffile's reading of it."""
    write_sample(directory, channels=CHANNELS, stacks=STACKS, shape=shape, **CASES[case])
    return stack_files(directory, CHANNELS, STACKS, shape)


def read_all(store: tiffstore.TiffStore) -> np.ndarray:
    """The whole array through zarr's async path (the store's ``get``)."""
    return np.asarray(zarr.open_array(store, mode="r")[...])


def http_folder(http_server: HttpServer) -> tuple[Path, str]:
    """A fresh folder below nginx's root, and its URL."""
    name = f"acq-{uuid.uuid4().hex[:8]}"
    return http_server.root / name, f"{http_server.url}{name}/"


def file_requests(requests: list[Any], method: str = "GET") -> list[Any]:
    return [r for r in requests if r.method == method and r.path.endswith(".tif")]


# -- round trips -------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_s3_folder(case, tmp_path, s3_bucket, upload):
    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", case)
    upload(tmp_path / "raw", f"{url}/raw/", options)
    store = tiffstore.open(f"{url}/raw/", storage_options=options)
    assert store.manifest.source.url("") == f"{url}/raw/"
    assert store.shape == ref.shape
    np.testing.assert_array_equal(read_all(store), ref)
    np.testing.assert_array_equal(store.to_dask().compute(), ref)


@pytest.mark.parametrize("case", list(CASES))
def test_http_folder(case, http_server):
    folder, url = http_folder(http_server)
    ref = write_case(folder / "raw", case)
    store = tiffstore.open(f"{url}raw/")
    assert store.shape == ref.shape
    np.testing.assert_array_equal(read_all(store), ref)
    np.testing.assert_array_equal(store.to_dask().compute(), ref)


@pytest.mark.parametrize("chunks", ["page", (1, 1, 3, 24, 20)])
def test_http_chunks_across_strips(chunks, http_server):
    """Chunks that cut strips and tiles read only what they need, and right."""
    folder, url = http_folder(http_server)
    ref = write_case(folder / "raw", "tiled", shape=(5, 70, 90))
    store = tiffstore.open(f"{url}raw/", chunks=chunks)
    np.testing.assert_array_equal(read_all(store), ref)


def test_http_large_pages_through_tifffile(http_server):
    """Pages tifffile decodes, larger than a few header blocks, read right."""
    folder, url = http_folder(http_server)
    ref = write_case(folder / "raw", "12-bit", shape=(2, 512, 384))
    store = tiffstore.open(f"{url}raw/")
    assert store.manifest.layouts[0].storage == "tifffile"
    np.testing.assert_array_equal(read_all(store), ref)


def test_list_of_urls(tmp_path, s3_bucket, upload, http_server):
    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", "raw")
    upload(tmp_path / "raw", f"{url}/raw/", options)
    folder, http_url = http_folder(http_server)
    shutil.copytree(tmp_path / "raw", folder / "raw")
    names = [sample_name(c, s) for c in range(CHANNELS) for s in range(STACKS)]
    for root, opts in ((f"{url}/raw/", options), (f"{http_url}raw/", None)):
        store = tiffstore.open([root + n for n in reversed(names)], storage_options=opts)
        assert store.manifest.source.url("") == root
        np.testing.assert_array_equal(read_all(store), ref)


def test_names_that_need_quoting(tmp_path, http_server, s3_bucket, upload):
    """Spaces and '#' in names: the names stay as the files are called, URLs are quoted."""
    folder, url = http_folder(http_server)
    for d in (folder, tmp_path / "q"):
        d.mkdir()
        for i in range(3):
            tifffile.imwrite(d / f"run 1#a_t{i}.tif", np.full((4, 5), i, "uint16"))
    bucket, options = s3_bucket
    upload(tmp_path / "q", f"{bucket}/q/", options)
    for source, opts in ((url, None), (f"{bucket}/q/", options)):
        store = tiffstore.open(source, storage_options=opts)
        assert store.manifest.files == tuple(f"run 1#a_t{i}.tif" for i in range(3))
        assert store.dims == ("t", "y", "x")
        np.testing.assert_array_equal(read_all(store)[:, 0, 0], [0, 1, 2])


def test_s3_glob_and_folder_without_slash(tmp_path, s3_server, s3_bucket, upload):
    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", "raw")
    (tmp_path / "raw" / "notes.txt").write_text("not a TIFF")
    upload(tmp_path / "raw", f"{url}/raw/", options)
    for source in (f"{url}/raw", f"{url}/raw/*_CAM1_*.tif"):
        s3_server.clear()
        store = tiffstore.open(source, storage_options=options)
        assert store.manifest.source.url("") == f"{url}/raw/"
        assert not [r for r in s3_server.requests if r.method == "HEAD"]
        np.testing.assert_array_equal(read_all(store), ref)
    with pytest.raises(SourceError, match=f"{url}/nothing/: no such folder"):
        tiffstore.open(f"{url}/nothing/", storage_options=options)


def test_missing_url_is_named(http_server):
    folder, url = http_folder(http_server)
    write_case(folder / "raw", "raw")
    absent = f"{url}raw/{sample_name(5, 5)}"
    with pytest.raises(SourceError, match=absent):
        tiffstore.open([f"{url}raw/{sample_name(0, 0)}", absent])


def test_source_pickles_without_its_file_system(tmp_path, s3_bucket, upload):
    import pickle

    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", "raw")
    upload(tmp_path / "raw", f"{url}/raw/", options)
    store = tiffstore.open(f"{url}/raw/", storage_options=options)
    source = store.manifest.source
    assert isinstance(source, FsspecSource)
    assert source.fs is source.fs  # built once
    data = pickle.dumps(store)
    assert b"S3FileSystem" not in data
    again = pickle.loads(data)
    assert again == store
    np.testing.assert_array_equal(read_all(again), ref)


# -- what open costs -----------------------------------------------------------


def test_s3_open_costs_listing_and_three_header_reads(tmp_path, s3_server, s3_bucket, upload):
    url, options = s3_bucket
    write_sample(tmp_path / "raw", channels=4, stacks=5, shape=SHAPE)
    upload(tmp_path / "raw", f"{url}/raw/", options)
    s3_server.clear()
    store = tiffstore.open(f"{url}/raw/", storage_options=options)
    requests = list(s3_server.requests)
    assert store.shape == (4, 5, *SHAPE)
    objects = [r for r in requests if ".tif" in r.path]
    listings = [r for r in requests if ".tif" not in r.path]
    assert all(r.method == "GET" and "list-type=2" in r.path for r in listings), requests
    assert len(listings) == 1, requests
    # Ranged reads of headers only (206), at most three, for 20 uniform files.
    assert 1 <= len(objects) <= 3, requests
    assert all(r.method == "GET" and r.status == 206 for r in objects), requests


def test_http_open_costs_listing_sizes_and_three_header_reads(http_server):
    folder, url = http_folder(http_server)
    write_sample(folder / "raw", channels=4, stacks=5, shape=SHAPE)
    http_server.clear()
    store = tiffstore.open(f"{url}raw/")
    requests = http_server.requests
    assert store.shape == (4, 5, *SHAPE)
    pages = [r for r in requests if r.path.endswith("/")]
    assert len(pages) == 1, requests
    # An index page holds no sizes: one HEAD per file, sent concurrently.
    assert len(file_requests(requests, "HEAD")) == 20
    reads = file_requests(requests)
    assert 1 <= len(reads) <= 3, requests
    assert all(r.status == 206 and r.range for r in reads), requests
    page_end = max(int(r.range.rsplit("-", 1)[1]) for r in reads)
    assert page_end < RemoteSettings().header_block


def test_first_read_of_a_file_checks_its_header_in_the_same_request(http_server):
    """A file trusted at open on its group's header is checked on its first read: the
    header and the chunk go out together (one GET where they lie close)."""
    folder, url = http_folder(http_server)
    ref = write_case(folder / "raw", "raw", shape=(4, 96, 128))
    store = tiffstore.open(f"{url}raw/", chunks="file")
    m = store.manifest
    trusted = [i for i in range(len(m.files)) if not m.verified[i]]
    assert len(trusted) >= 2
    for file, how in zip(trusted, ("store", "reader"), strict=False):
        c, s = (int(v) for v in np.argwhere(m.file_index == file)[0])
        http_server.clear()
        if how == "store":
            got = store.get_sync(f"{c}.{s}.0.0.0")
            assert got is not None
            data = got.to_bytes()
        else:
            data = store.reader.read_chunk((c, s, 0, 0, 0)).tobytes()
        np.testing.assert_array_equal(
            np.frombuffer(data, ref.dtype).reshape(ref.shape[2:]), ref[c, s]
        )
        reads = file_requests(http_server.requests)
        assert len(reads) == 1 and reads[0].range.startswith("bytes=0-"), reads


def test_first_read_of_a_file_whose_header_differs_parses_it(http_server):
    folder, url = http_folder(http_server)
    ref = write_case(folder / "raw", "raw", shape=(4, 96, 128))
    store = tiffstore.open(f"{url}raw/", chunks="file")
    m = store.manifest
    file = next(i for i in range(len(m.files)) if not m.verified[i])
    c, s = (int(v) for v in np.argwhere(m.file_index == file)[0])
    # Same size, same pixels, another header byte: the signature check fails.
    path = folder / "raw" / m.files[file]
    data = path.read_bytes()
    at = data.index(b"tifffile.py")
    st = path.stat()
    path.write_bytes(data[:at] + b"tifffile.pz" + data[at + 11 :])
    # The same time as listed: nginx's ETag (time and size) says it is the same file.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    got = store.reader.read_chunk((c, s, 0, 0, 0))
    assert got is not None
    np.testing.assert_array_equal(got[0, 0], ref[c, s])
    # Read by its own header, parsed on this read, not by its group's.
    assert store.reader.layout_of(file) is not m.file_layout_of(file)


def test_chunk_of_tiles_is_one_request_batch(http_server):
    """A chunk's tiles go out together; tiles written back to back are one GET."""
    folder, url = http_folder(http_server)
    # Pages larger than a header block, so page 1 is read from the server.
    ref = write_case(folder / "raw", "tiled", shape=(2, 256, 256))
    store = tiffstore.open(f"{url}raw/", chunks="page")
    http_server.clear()
    got = store.get_sync("0.0.1.0.0")
    assert got is not None
    np.testing.assert_array_equal(
        np.frombuffer(got.to_bytes(), ref.dtype).reshape(256, 256), ref[0, 0, 1]
    )
    reads = file_requests(http_server.requests)
    # 16 x 8 tiles of page 1: one merged range (and none for headers: parsed at open).
    assert len(reads) == 1, reads


def test_s3_list_of_urls_sizes_from_one_listing(tmp_path, s3_server, s3_bucket, upload):
    url, options = s3_bucket
    write_sample(tmp_path / "raw", channels=4, stacks=5, shape=SHAPE)
    upload(tmp_path / "raw", f"{url}/raw/", options)
    urls = [f"{url}/raw/{p.name}" for p in sorted((tmp_path / "raw").iterdir())]
    s3_server.clear()
    store = tiffstore.open(urls, storage_options=options)
    requests = list(s3_server.requests)
    assert store.shape == (4, 5, *SHAPE)
    assert not [r for r in requests if r.method == "HEAD"], requests
    assert len([r for r in requests if ".tif" not in r.path]) == 1, requests


@pytest.mark.slow
def test_worker_processes_read_from_s3(tmp_path, s3_bucket, upload):
    """Pickled to other processes, the store rebuilds its file system and reads."""
    distributed = pytest.importorskip("distributed")
    import dask.array as da

    url, options = s3_bucket
    ref = write_case(tmp_path / "raw", "zlib-predictor")
    upload(tmp_path / "raw", f"{url}/raw/", options)
    store = tiffstore.open(f"{url}/raw/", storage_options=options, chunks="page")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        np.testing.assert_array_equal(client.compute(da.from_zarr(store)).result(), ref)

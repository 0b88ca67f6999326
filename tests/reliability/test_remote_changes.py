"""Remote files replaced after the open, even at the same size, are refused by name.

Reads of files on S3 (moto) and HTTP (nginx) are conditional on the version listed
at the open: ``If-Match`` on the ETag, or ``If-Unmodified-Since`` on the last-modified
time where there is no strong ETag. Other protocols compare the version once per file
before its first read; that path is tested by turning the S3 conditions off.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tiffstore
from tests.conftest import HttpServer
from tiffstore.apps.check import check_references
from tiffstore.errors import FileChangedError
from tiffstore.outputs.references import write_references
from tiffstore.sources import listing, remote

from .corpus import bounded, stacks

pytestmark = pytest.mark.network


def _same_size_other_pixels(path: Path) -> bytes:
    """The file's bytes with its last pixel changed: same size, same header."""
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    return bytes(data)


@pytest.fixture
def s3_acquisition(
    tmp_path: Path,
    s3_bucket: tuple[str, dict[str, Any]],
    upload: Callable[[str | Path, str, dict[str, Any]], None],
) -> tuple[str, dict[str, Any], np.ndarray, Path]:
    url, options = s3_bucket
    ref = stacks(tmp_path / "raw", n=3)
    upload(tmp_path / "raw", f"{url}/raw", options)
    return f"{url}/raw", options, ref, tmp_path / "raw"


def _replace_on_s3(url: str, options: dict[str, Any], local: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("s3", **options)
    fs.pipe(f"{url}/img_t1.tif", _same_size_other_pixels(local / "img_t1.tif"))
    fs.invalidate_cache()


def test_s3_listing_records_each_files_etag(s3_acquisition):
    url, options, _, _ = s3_acquisition
    store = tiffstore.open(url, storage_options=options, chunks="file")
    versions = store.manifest.file_versions
    assert len(versions) == 3
    assert all(v.startswith('"') and v.endswith('"') and len(v) > 2 for v in versions)


def test_s3_file_replaced_at_the_same_size_is_refused_by_name(s3_acquisition):
    url, options, ref, local = s3_acquisition
    store = tiffstore.open(url, storage_options=options, chunks="file")
    np.testing.assert_array_equal(store.to_dask().compute(), ref)  # every file read once
    _replace_on_s3(url, options, local)
    with pytest.raises(FileChangedError, match=r"img_t1\.tif: the file was replaced .*ETag"):
        bounded(lambda: store.reader.read_chunk((1, 0, 0, 0)))
    # The others still read.
    np.testing.assert_array_equal(store.reader.read_chunk((0, 0, 0, 0)), ref[:1])
    np.testing.assert_array_equal(store.reader.read_chunk((2, 0, 0, 0)), ref[2:])


def test_s3_replacement_is_caught_through_zarr_and_in_another_process(s3_acquisition):
    import pickle

    url, options, _, local = s3_acquisition
    store = tiffstore.open(url, storage_options=options, chunks="file")
    _replace_on_s3(url, options, local)
    clone = pickle.loads(pickle.dumps(store))
    for candidate in (store, clone):
        with pytest.raises(FileChangedError, match=r"img_t1\.tif"):
            candidate.to_dask().compute()


def test_reference_files_record_versions_and_reopen_conditional(s3_acquisition, tmp_path):
    url, options, ref, local = s3_acquisition
    refs = str(tmp_path / "raw.json")
    write_references(tiffstore.open(url, storage_options=options, chunks="file"), refs)
    reopened = tiffstore.open(refs, storage_options=options)
    np.testing.assert_array_equal(reopened.to_dask().compute(), ref)
    assert check_references(refs, options) == (3, [])
    _replace_on_s3(url, options, local)
    _, problems = check_references(refs, options)
    assert [p.file.rsplit("/", 1)[-1] for p in problems] == ["img_t1.tif"]
    assert "replaced since it was referenced (same size" in problems[0].problem
    with pytest.raises(FileChangedError, match=r"img_t1\.tif"):
        tiffstore.open(refs, storage_options=options).to_dask().compute()


def test_protocols_without_conditions_compare_the_version_before_the_first_read(
    s3_acquisition, monkeypatch
):
    # Pretend S3 had no conditional GET: the version is compared by an info request
    # once it is older than version_recheck (0 here: every read).
    monkeypatch.setattr(remote, "S3_PROTOCOLS", ())
    url, options, ref, local = s3_acquisition
    store = tiffstore.open(
        url, storage_options=options, chunks="file", remote={"version_recheck": 0.0}
    )
    np.testing.assert_array_equal(store.to_dask().compute(), ref)
    _replace_on_s3(url, options, local)
    with pytest.raises(FileChangedError, match=r"img_t1\.tif: .*ETag was \"\w+\", now \"\w+\""):
        store.reader.read_chunk((1, 0, 0, 0))
    np.testing.assert_array_equal(store.reader.read_chunk((0, 0, 0, 0)), ref[:1])


# -- HTTP (nginx: strong ETags from size and modification time) ------------------


def _http_acquisition(http_server: HttpServer) -> tuple[Path, str, np.ndarray]:
    name = f"acq-{uuid.uuid4().hex[:8]}"
    ref = stacks(http_server.root / name, n=3)
    return http_server.root / name, f"{http_server.url}{name}/", ref


def _replace_in_place(path: Path) -> None:
    """New pixels at the same size; the modification time moves on a second, as any
    real rewrite's does (nginx's ETag holds it in whole seconds)."""
    st = path.stat()
    path.write_bytes(_same_size_other_pixels(path))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_http_file_replaced_at_the_same_size_is_refused_by_name(http_server):
    folder, url, ref = _http_acquisition(http_server)
    store = tiffstore.open(url, chunks="file")
    assert all(v.startswith('"') for v in store.manifest.file_versions)
    np.testing.assert_array_equal(store.to_dask().compute(), ref)
    _replace_in_place(folder / "img_t2.tif")
    with pytest.raises(FileChangedError, match=r"img_t2\.tif: the file was replaced"):
        bounded(lambda: store.reader.read_chunk((2, 0, 0, 0)))
    np.testing.assert_array_equal(store.reader.read_chunk((1, 0, 0, 0)), ref[1:2])


def test_http_without_etag_uses_the_modification_time(http_server, monkeypatch):
    folder, url, ref = _http_acquisition(http_server)
    # A server that sends no ETag: its Last-Modified is what the reads are conditional on.
    real = listing.version_of

    def no_etag(info: dict[str, Any]) -> str | None:
        return real({k: v for k, v in info.items() if k.lower() != "etag"})

    monkeypatch.setattr(listing, "version_of", no_etag)
    store = tiffstore.open(url, chunks="file")
    assert all(v.startswith("modified:") for v in store.manifest.file_versions)
    np.testing.assert_array_equal(store.to_dask().compute(), ref)
    _replace_in_place(folder / "img_t0.tif")
    with pytest.raises(FileChangedError, match=r"img_t0\.tif: .*last-modified time was"):
        store.reader.read_chunk((0, 0, 0, 0))


def test_a_new_open_sees_a_file_replaced_behind_fsspecs_cache(s3_acquisition):
    """Replaced by another client, the file system's cached listing is stale: a new open
    lists afresh, and reads the file as it is now."""
    import io

    import boto3
    import tifffile

    url, options, ref, local = s3_acquisition
    tiffstore.open(url, storage_options=options, chunks="file")  # fills the listing cache
    new = _same_size_other_pixels(local / "img_t1.tif")
    client = boto3.client(
        "s3",
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
        **options["client_kwargs"],
    )
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    client.put_object(Bucket=bucket, Key=f"{prefix}/img_t1.tif", Body=new)
    urls = [f"{url}/img_t{i}.tif" for i in range(3)]
    got = tiffstore.open(urls, storage_options=options, chunks="file").to_dask().compute()
    np.testing.assert_array_equal(got[1], tifffile.imread(io.BytesIO(new)))
    np.testing.assert_array_equal(got[[0, 2]], ref[[0, 2]])

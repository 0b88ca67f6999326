"""An acquisition opened again and again while another process writes it, slowly and in
pieces, as a microscope does: every open succeeds, every file it takes as complete reads
equal to tifffile's values of the finished file, every file it names as still being
written reads as the fill value, and no value of a half-written file is ever read.

The writer writes some files in place (the file created empty, the header first, the
pixel data in several writes, then the rest: ImageJ keeps later page directories after
the data) and renames others into place; on S3 it puts an empty object, then a short
one, then the whole file, each put whole at once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tiffstore.errors import FileChangedError

FILL = 65535  # no pixel written holds it
SHAPE = (6, 32, 32)
FILES = 10  # img_t00 .. img_t09; the first two are complete before the writer starts
SECONDS = 20

#: The writer: a separate process, importing only numpy and tifffile (and boto3 on S3).
WRITER = r"""
import io, os, sys, time
import numpy as np, tifffile

where, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PAUSE = 0.03

def whole(k):
    data = np.random.default_rng(k).integers(0, 4000, __SHAPE__, dtype=np.uint16)
    buf = io.BytesIO()
    if k % 2:
        tifffile.imwrite(buf, data, photometric="minisblack")
    else:
        tifffile.imwrite(buf, data, imagej=True, metadata={"axes": "ZYX"})
    raw = buf.getvalue()
    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        start = int(tif.series[0].dataoffset)
    end = start + data.nbytes
    return raw, start, end

if where.startswith("s3://"):
    import boto3
    endpoint = os.environ["WRITER_ENDPOINT"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket, _, prefix = where[len("s3://"):].partition("/")
    for k in range(first, last):
        raw, start, end = whole(k)
        key = f"{prefix}/img_t{k:02d}.tif"
        for body in (b"", raw[:start], raw[: (start + end) // 2], raw):
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            time.sleep(PAUSE)
else:
    for k in range(first, last):
        raw, start, end = whole(k)
        name = os.path.join(where, f"img_t{k:02d}.tif")
        if k % 3 == 2:
            with open(name + ".part", "wb") as f:
                f.write(raw)
            time.sleep(PAUSE)
            os.replace(name + ".part", name)
            continue
        step = (end - start) // 4
        cuts = [0, start, start + step, start + 2 * step, start + 3 * step, end, len(raw)]
        with open(name, "wb") as f:
            for a, b in zip(cuts, cuts[1:]):
                time.sleep(PAUSE)
                f.write(raw[a:b])
                f.flush()
""".replace("__SHAPE__", repr(SHAPE))


def expected(k: int) -> np.ndarray:
    return np.random.default_rng(k).integers(0, 4000, SHAPE, dtype=np.uint16)


@dataclass
class Seen:
    """What one open showed of one file."""

    name: str
    listed: bool  # among the store's files (taken as complete)
    incomplete: bool
    size: int  # as listed, for the files taken as complete
    values: np.ndarray | None = None
    changed: bool = False  # its read raised FileChangedError (written to after the open)


@dataclass
class Watch:
    opens: int = 0
    seen: list[Seen] = field(default_factory=list)


def watch(open_store: Callable[[], tiffstore.TiffStore], writer: subprocess.Popen[bytes]) -> Watch:
    """Open and read everything again and again until the writer is done."""
    out = Watch()
    deadline = time.monotonic() + SECONDS
    while True:
        done = writer.poll() is not None
        store = open_store()  # must not fail, whatever the writer is at
        out.opens += 1
        m = store.manifest
        (axis,) = m.name_axes
        arr = zarr.open_array(store, mode="r")
        for k, t in enumerate(axis.values):
            name = f"img_t{int(t):02d}.tif"
            listed = name in m.files
            seen = Seen(
                name,
                listed,
                name in store.incomplete,
                int(m.file_sizes[m.files.index(name)]) if listed else -1,
            )
            try:
                seen.values = np.asarray(arr[k])
            except FileChangedError:
                seen.changed = True
            out.seen.append(seen)
        if done:
            return out
        assert time.monotonic() < deadline, "the writer did not finish in time"


def check(result: Watch, finished: dict[str, bytes]) -> None:
    """Every file each open showed: fill where incomplete or unlisted, else its values."""
    assert result.opens >= 5, result.opens
    assert any(s.incomplete for s in result.seen), "no open caught a file mid-write"
    for s in result.seen:
        k = int(s.name[5:7])
        if s.incomplete or not s.listed:
            assert s.values is not None and (s.values == FILL).all(), s
            continue
        if s.changed:
            # Taken with all its pixels but before its last bytes (page directories
            # after the data), then written to: refused, never read as it was.
            assert s.size < len(finished[s.name]), s
            continue
        assert s.values is not None
        np.testing.assert_array_equal(s.values, expected(k), err_msg=s.name)


def _start(where: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, where, "2", str(FILES)],
        env=env,
    )


def _stop(writer: subprocess.Popen[bytes]) -> None:
    if writer.poll() is None:
        writer.kill()
    writer.wait()


def _first_two(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(2):
        tifffile.imwrite(folder / f"img_t{k:02d}.tif", expected(k), photometric="minisblack")


def test_opening_a_folder_while_it_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    _first_two(folder)
    writer = _start(str(folder))
    try:
        result = watch(lambda: tiffstore.open(folder, fill_value=FILL), writer)
    finally:
        _stop(writer)
    assert writer.returncode == 0
    finished = {p.name: p.read_bytes() for p in folder.glob("*.tif")}
    assert len(finished) == FILES
    for k in range(FILES):  # the writer wrote what tifffile reads back
        np.testing.assert_array_equal(tifffile.imread(folder / f"img_t{k:02d}.tif"), expected(k))
    check(result, finished)
    final = tiffstore.open(folder, fill_value=FILL)
    assert final.incomplete == () and final.shape == (FILES, *SHAPE)
    np.testing.assert_array_equal(final.to_dask().compute(), [expected(k) for k in range(FILES)])


@pytest.mark.network
def test_opening_a_bucket_while_it_is_written(
    tmp_path: Path, s3_bucket: Any, s3_server: Any
) -> None:
    import os

    from tests.conftest import upload_folder

    url, options = s3_bucket
    _first_two(tmp_path / "raw")
    upload_folder(tmp_path / "raw", f"{url}/raw", options)
    writer = _start(f"{url}/raw", env={**os.environ, "WRITER_ENDPOINT": s3_server.endpoint})
    try:
        result = watch(
            lambda: tiffstore.open(f"{url}/raw", storage_options=options, fill_value=FILL), writer
        )
    finally:
        _stop(writer)
    assert writer.returncode == 0
    final = tiffstore.open(f"{url}/raw", storage_options=options, fill_value=FILL)
    assert final.incomplete == () and final.shape == (FILES, *SHAPE)
    values = final.to_dask().compute()
    np.testing.assert_array_equal(values, [expected(k) for k in range(FILES)])
    # An object appears whole: none taken as complete is ever replaced after an open.
    assert not any(s.changed for s in result.seen)
    check(result, {})

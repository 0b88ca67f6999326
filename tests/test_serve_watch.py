"""``tiffstore serve --watch``: the served array grows while files arrive, ETags change
only where bytes did, and the viewer page's sliders extend in a real browser."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tiffstore
from tests.conftest import stack_files
from tests.test_serve import browser, check_drawn, request, running, wait_drawn
from tiffstore.sample import sample_name, write_sample

pytestmark = pytest.mark.network

__all__ = ["browser"]  # the fixture, shared with the viewer tests

REPO = Path(__file__).resolve().parents[1]
SHAPE = (4, 40, 30)


@pytest.fixture
def acquisition(tmp_path: Path) -> tuple[Path, Path]:
    """``(full, growing)``: 2 channels x 4 stacks, and a folder they arrive in."""
    full, growing = tmp_path / "full", tmp_path / "growing"
    write_sample(full, channels=2, stacks=4, shape=SHAPE)
    growing.mkdir()
    return full, growing


def arrive(full: Path, growing: Path, cells: list[tuple[int, int]]) -> None:
    for c, s in cells:
        shutil.copy2(full / sample_name(c, s), growing / sample_name(c, s))


def etags(url: str, keys: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in keys:
        status, headers, _ = request(url, "/" + key, method="HEAD")
        out[key] = headers.get("etag") if status == 200 else None
    return out


def test_serve_watch_command_grows_with_etags_that_change_where_bytes_did(
    acquisition: tuple[Path, Path],
) -> None:
    full, growing = acquisition
    arrive(full, growing, [(0, 0), (1, 0), (0, 1)])  # channel 1's stack 1 still to come
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["serve", str(growing), "--port", "0", "--chunks", "file", "--watch", "--interval"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiffstore", *args, "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Serving "), first + proc.stderr.read()  # type: ignore[union-attr]
        url = first.split(" at ")[-1].strip()
        proc.stdout.readline()  # the viewer's address
        keys = [".zarray", ".zattrs", "0.0.0.0.0", "1.0.0.0.0", "0.1.0.0.0", "1.1.0.0.0"]
        before = etags(url, keys)
        assert before["1.1.0.0.0"] is None  # no file yet: absent, the fill value
        arrive(full, growing, [(1, 1), (0, 2), (1, 2)])
        grew = proc.stdout.readline()
        assert grew.startswith("Grew: 3 new files; stack 2 -> 3"), grew
        after = etags(url, [*keys, "0.2.0.0.0", "1.2.0.0.0"])
        # Files that were there: the same bytes, the same ETags.
        for key in ("0.0.0.0.0", "1.0.0.0.0", "0.1.0.0.0"):
            assert after[key] == before[key], key
        # What changed: the metadata, the filled cell, the new stack.
        assert after[".zarray"] != before[".zarray"] and after[".zattrs"] != before[".zattrs"]
        assert after["1.1.0.0.0"] is not None and after["0.2.0.0.0"] is not None
        status, headers, body = request(url, "/1.2.0.0.0")
        assert status == 200 and headers["etag"] == after["1.2.0.0.0"]
        ref = stack_files(growing, 2, 3, SHAPE)
        np.testing.assert_array_equal(np.frombuffer(body, "<u2").reshape(SHAPE), ref[1, 2])
        # An ETag sent back for an unchanged chunk still matches: 304.
        status, _, _ = request(
            url, "/0.0.0.0.0", headers={"If-None-Match": str(before["0.0.0.0.0"])}
        )
        assert status == 304
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_etags_stay_for_a_store_grown_across_chunks(acquisition: tuple[Path, Path]) -> None:
    from tiffstore.apps.serve import StoreIdentity

    full, growing = acquisition
    arrive(full, growing, [(c, s) for s in range(2) for c in range(2)])
    old = tiffstore.open(growing, chunks=(1, 2, 2, 40, 30))  # chunks of two stacks
    arrive(full, growing, [(c, 2) for c in range(2)])
    new = old.refresh()
    a, b = StoreIdentity.of(old), StoreIdentity.of(new)
    assert a == b  # the same encoding of every chunk
    assert a.etag("0.0.0.0.0") == b.etag("0.0.0.0.0")  # stacks 0-1: whole before
    # Stacks 2-3: the edge chunk, which the array grew into.
    assert old.keys.chunk_key("0.1.0.0.0") is None and b.etag("0.1.0.0.0")
    assert a.etag(".zarray") != b.etag(".zarray")


@pytest.mark.parametrize(
    "options",
    # Chunks of one file or less, so that a missing file's chunks are absent.
    [{"chunks": "page"}, {"chunks": "file", "zarr_format": 3}],
    ids=["format2", "format3-shards"],
)
def test_viewer_sliders_extend_as_stacks_arrive(
    browser: Any, acquisition: tuple[Path, Path], options: dict[str, Any]
) -> None:
    full, growing = acquisition
    arrive(full, growing, [(0, 0), (1, 0), (0, 1)])
    store = tiffstore.open(growing, **options)
    with running(store, watch=0.2) as url:
        page = browser.new_page()
        try:
            page.goto(url)
            wait_drawn(page, (0, 0, 0, 0, 0))
            assert page.locator("#dim-stack").get_attribute("max") == "1"
            assert page.evaluate("document.body.dataset.poll") == "200"
            # Look at the cell still missing: the fill value until its file arrives.
            page.locator("#dim-ch").press("ArrowRight")
            page.locator("#dim-stack").press("ArrowRight")
            wait_drawn(page, (1, 1, 0, 0, 0))
            assert "no file here" in page.locator("#status").inner_text()
            arrive(full, growing, [(1, 1), (0, 2), (1, 2), (0, 3)])
            page.wait_for_function(
                "document.getElementById('dim-stack').max === '3'", timeout=15_000
            )
            assert page.evaluate("document.body.dataset.grown") == "2,4,4,40,30"
            ref = stack_files(growing, 2, 4, SHAPE, missing=[(1, 3)])
            # The plane in view was drawn again: its file arrived, no reload. Wait for
            # the drawing to end ("contrast ..."), not only for the note to go: the
            # status says "reading..." while the shard index and the plane are fetched.
            page.wait_for_function(
                "(() => { const s = document.getElementById('status').innerText;"
                " return s.includes('contrast') && !s.includes('no file here'); })()",
                timeout=10_000,
            )
            check_drawn(page, ref[1, 1, 0])
            for _ in range(2):
                page.locator("#dim-stack").press("ArrowRight")
            page.locator("#dim-z").press("ArrowRight")
            wait_drawn(page, (1, 3, 1, 0, 0))  # stack 3 of channel 1: still missing
            assert "no file here" in page.locator("#status").inner_text()
            page.locator("#dim-ch").press("ArrowLeft")
            wait_drawn(page, (0, 3, 1, 0, 0))
            check_drawn(page, ref[0, 3, 1])
        finally:
            page.close()

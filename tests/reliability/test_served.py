"""The served store (``tiffstore serve``) as an attacker or a changing file system sees
it: only GET and HEAD of keys the store synthesized, hostile paths refused before the
store is asked, and a file cut under the server a named error while the server goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tiffstore
from tests.test_serve import request, running
from tiffstore.read.store import TiffStore
from tiffstore.sample import sample_name

pytestmark = pytest.mark.network


def test_missing_keys_and_writes(served: tuple[str, TiffStore, np.ndarray]) -> None:
    url, _, _ = served
    assert request(url, "/1.2.0.0.0")[0] == 404  # the missing file's chunk: zarr fills it
    assert request(url, "/9.0.0.0.0")[0] == 404  # past the grid
    assert request(url, "/nothing/here")[0] == 404
    assert request(url, "/1.2.0.0.0", method="HEAD")[0] == 404
    for method in ("PUT", "POST", "DELETE", "PATCH"):
        status, headers, _ = request(url, "/.zarray", method=method)
        assert status == 405, method
        assert "GET" in headers["allow"]


def test_a_file_cut_after_open_is_a_named_error(
    make_sample: Callable[..., tuple[Path, np.ndarray]],
) -> None:
    directory, ref = make_sample(channels=2, stacks=2, shape=(3, 16, 12))
    store = tiffstore.open(directory, chunks="file")
    victim = directory / sample_name(1, 1)
    with running(store) as url:
        victim.write_bytes(victim.read_bytes()[:600])  # cut inside the pixel data
        status, _, body = request(url, "/1.1.0.0.0")
        assert status == 500
        assert victim.name in body.decode()
        status, _, body = request(url, "/0.1.0.0.0")  # the server goes on
        assert status == 200
        assert body == ref[0, 1].tobytes()


@pytest.mark.parametrize(
    "path",
    [
        "/../etc/passwd",
        "/image/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%5c..%5cwindows",
        "/.zarray%00",
        "/" + "1." * 600 + "0",
    ],
)
def test_hostile_keys_are_refused(served: tuple[str, TiffStore, np.ndarray], path: str) -> None:
    url, _, _ = served
    status, _, body = request(url, path)
    assert status == 400, (path, body)
    assert b"Refused key" in body


def test_repeated_slashes_name_the_same_key(served: tuple[str, TiffStore, np.ndarray]) -> None:
    """What a client sends for ``url + "/group"`` when the URL ends in "/": the same key,
    never a path outside the store's keys."""
    url, _, _ = served
    assert request(url, "//.zarray")[2] == request(url, "/.zarray")[2]
    assert request(url, "/image//.zarray")[0] == 200
    for outside in ("//etc/passwd", "/a//b", "///"):
        status, _, body = request(url, outside)
        assert status in (400, 404), (outside, body)
        assert b"passwd" not in body.split(b"\n", 1)[-1]

"""Security: the store serves only keys it made, refuses every write, keeps secrets out
of what it writes, and materialize stays inside its output.

Covered elsewhere, and listed in docs/reliability.md: hostile keys sent raw over
HTTP to ``tiffstore serve`` (tests/test_serve.py::test_hostile_keys_are_refused),
its loopback default and refused writes (test_serve_command,
test_missing_keys_and_writes), symbolic links in materialize's output
(tests/test_materialize.py::test_symlinked_output_is_refused) and removing only what
it wrote (test_overwrite_removes_only_what_it_wrote).
"""

from __future__ import annotations

import builtins
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import tiffstore
from tests.test_materialize import image
from tiffstore import MaterializeError, materialize
from tiffstore.cli.parser import build_parser
from tiffstore.errors import ReadOnlyError
from tiffstore.outputs.references import write_references
from tiffstore.read.store import TiffStore

from .corpus import stacks

HOSTILE_KEYS = [
    "..",
    "../.zarray",
    "../../../../etc/passwd",
    "/etc/passwd",
    "/.zarray",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2E%2E%2F.zarray",
    "..%2f..%2fetc%2fpasswd",
    "%252e%252e/x",
    "0.0.0\\..\\..\\x",
    "..\\.zarray",
    "0.0.0\x00",
    ".zarray\x00.png",
    "\x00",
    "0." * 50_000 + "0",
    "9" * 100_000,
    "a" * 1_000_000,
    "image/../.zarray",
    "image/./0.0.0",
    "./.zarray",
    ".zarray/",
    "0.0.0/../../x",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
    "img_t0.tif",
    "-1.0.0",
    "0.0",
    "3.0.0.0",
    "0.0.0.0.0",
]


@pytest.fixture
def store(tmp_path: Path) -> TiffStore:
    stacks(tmp_path / "raw", n=3, shape=(2, 8, 8))
    store = tiffstore.open(tmp_path / "raw", chunks="page")
    store.get_bytes_sync(".zmetadata")  # the documents are built once, up front
    return store


@contextmanager
def file_system_watched(store: TiffStore) -> Iterator[list[str]]:
    """Record every call that could touch the file system (the calls still run).

    Python's own look-ups (a coverage tracer resolving the path of the code it
    traces: the folders of ``sys.path`` and their parents) are not the store's.
    """
    calls: list[str] = []
    python = [os.path.realpath(p) for p in [sys.prefix, *sys.path] if p and os.path.isdir(p)]

    def pythons_own(arg: Any) -> bool:
        if not isinstance(arg, str | os.PathLike):
            return False
        path = os.fspath(arg)
        if not isinstance(path, str):
            return False
        return any(p.startswith(path) or path.startswith(p) for p in python)

    def watch(owner: Any, name: str, what: str) -> None:
        original = getattr(owner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if not (args and pythons_own(args[0])):
                calls.append(f"{what}{args[:1]!r:.80}")
            return original(*args, **kwargs)

        patch.setattr(owner, name, call)

    with pytest.MonkeyPatch.context() as patch:
        for name in ("open", "stat", "lstat", "scandir", "listdir", "pread", "preadv"):
            watch(os, name, f"os.{name}")
        watch(builtins, "open", "open")
        for name in ("read_into", "read_many_into", "read_bytes", "read_ranges", "open"):
            watch(type(store.manifest.source), name, f"source.{name}")
        yield calls


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda k: repr(k[:24]))
def test_hostile_keys_are_absent_without_touching_the_file_system(
    key: str, store: TiffStore
) -> None:
    with file_system_watched(store) as calls:
        got = store.get_bytes_sync(key), store.get_sync(key), sync(store.exists(key))
        with pytest.raises(FileNotFoundError):
            sync(store.getsize(key))
        contained = key in store.mapping
        with pytest.raises(KeyError):
            store.mapping[key]
        partial = sync(store.get_partial_values(default_buffer_prototype(), [(key, None)]))
    assert calls == [], f"{key[:40]!r} touched the file system: {calls}"
    assert got == (None, None, False)
    assert not contained
    assert partial == [None]
    # The watch sees reads: a real chunk key is read from its file.
    with file_system_watched(store) as calls:
        assert store.get_bytes_sync("0.0.0.0") is not None
    assert calls


def test_only_synthesized_keys_exist(store: TiffStore) -> None:
    listed = list(store.mapping)
    assert all(store.get_bytes_sync(k) is not None for k in listed)
    for key in listed:
        assert ".." not in key and not key.startswith("/") and "\\" not in key
        assert "\x00" not in key and len(key) < 256


def _writes(store: TiffStore) -> dict[str, Callable[[], Any]]:
    buf = default_buffer_prototype().buffer.from_bytes(b"x")
    return {
        "set": lambda: sync(store.set("0.0.0.0", buf)),
        "set new key": lambda: sync(store.set("evil", buf)),
        "set hostile key": lambda: sync(store.set("../../evil", buf)),
        "set_if_not_exists": lambda: sync(store.set_if_not_exists("evil", buf)),
        "delete": lambda: sync(store.delete(".zarray")),
        "delete_dir": lambda: sync(store.delete_dir("")),
        "clear": lambda: sync(store.clear()),
        "with_read_only(False)": lambda: store.with_read_only(False),
        "TiffStore(read_only=False)": lambda: TiffStore(store.manifest, read_only=False),
        "mapping[key] = value": lambda: store.mapping.__setitem__("0.0.0.0", b"x"),
        "del mapping[key]": lambda: store.mapping.__delitem__(".zarray"),
        "array write": lambda: zarr.open_array(store, mode="r").__setitem__((0, 0, 0, 0), 1),
    }


WRITES = [
    "set",
    "set new key",
    "set hostile key",
    "set_if_not_exists",
    "delete",
    "delete_dir",
    "clear",
    "with_read_only(False)",
    "TiffStore(read_only=False)",
    "mapping[key] = value",
    "del mapping[key]",
    "array write",
]


@pytest.mark.parametrize("what", WRITES)
def test_every_write_raises_read_only_error(what: str, store: TiffStore, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in (tmp_path / "raw").iterdir()}
    with pytest.raises(ReadOnlyError):
        _writes(store)[what]()
    assert {p: p.read_bytes() for p in (tmp_path / "raw").iterdir()} == before


# -- secrets ---------------------------------------------------------------------

FAKE_KEY = "AKIAFAKEKEYTIFFSTORE1"
FAKE_SECRET = "fAkE/sEcReT+tiffstore/0123456789abcdefXYZ"


def _all_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


@pytest.mark.network
def test_references_and_materialized_attributes_hold_no_secrets(
    tmp_path: Path,
    s3_server: Any,
    s3_bucket: tuple[str, dict[str, Any]],
    upload: Callable[[str | Path, str, dict[str, Any]], None],
) -> None:
    pytest.importorskip("fastparquet")
    url, options = s3_bucket
    ref = stacks(tmp_path / "raw", n=3, shape=(2, 8, 8))
    upload(tmp_path / "raw", f"{url}/raw", options)
    # moto takes any credentials: these are fake, and must appear nowhere.
    secret_options = dict(options, key=FAKE_KEY, secret=FAKE_SECRET, token=FAKE_SECRET)
    store = tiffstore.open(f"{url}/raw", storage_options=secret_options)
    out = tmp_path / "written"
    out.mkdir()
    write_references(store, str(out / "refs.json"))
    write_references(store, str(out / "refs.parq"), format="parquet")
    summary = materialize(store, out / "copy.zarr")
    assert summary.complete
    np.testing.assert_array_equal(zarr.open_array(str(out / "copy.zarr" / "image"))[...], ref)
    documents = {k: store.get_bytes_sync(k) for k in (".zarray", ".zattrs", ".zmetadata")}
    needles = [FAKE_KEY, FAKE_SECRET, hashlib.sha256(FAKE_SECRET.encode()).hexdigest()[:16]]
    for needle in needles:
        for path, data in _all_bytes(out):
            assert needle.encode() not in data, f"{path} holds a secret"
        for key, doc in documents.items():
            assert doc is not None and needle.encode() not in doc, f"{key} holds a secret"
        assert needle not in repr(store)


# -- materialize stays inside OUT ------------------------------------------------


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, bytes]]:
    """Every path below ``root`` outside ``skip``: its mode and (files) bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[str(path)] = (st.st_mode, data)
    return out


def test_materialize_writes_only_inside_out(tmp_path: Path) -> None:
    stacks(tmp_path / "raw")
    (tmp_path / "neighbour.zarr").mkdir()
    (tmp_path / "neighbour.zarr" / ".zgroup").write_text("{}")
    out = tmp_path / "out.zarr"
    before = _snapshot(tmp_path, out)
    materialize(tmp_path / "raw", out)
    materialize(tmp_path / "raw", out, overwrite=True)
    materialize(tmp_path / "raw", out, resume=True)
    assert _snapshot(tmp_path, out) == before


def test_materialize_never_follows_a_link_out_on_resume(tmp_path: Path) -> None:
    from tiffstore import MaterializeError

    stacks(tmp_path / "raw")
    out = tmp_path / "out.zarr"
    materialize(tmp_path / "raw", out)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    chunk = next(p for p in (out / "image").rglob("*") if p.is_file() and p.name[0].isdigit())
    chunk.unlink()
    chunk.symlink_to(victim)
    for flags in ({"resume": True}, {"overwrite": True}):
        with pytest.raises(MaterializeError, match="symbolic link"):
            materialize(tmp_path / "raw", out, **flags)  # type: ignore[arg-type]
    assert victim.read_text() == "keep me"


def test_serve_binds_loopback_by_default() -> None:
    args = build_parser().parse_args(["serve", "raw/"])
    assert args.host == "127.0.0.1"


def test_overwrite_removes_only_what_it_wrote(sample_dir, tmp_path):
    directory, ref = sample_dir
    out = tmp_path / "out.zarr"
    materialize(directory, out, chunks=(1, 1, 2, 8, 8))
    (out / "README.txt").write_text("kept")
    (out / "image" / "extra").mkdir()
    summary = materialize(directory, out, overwrite=True, zarr_format=3)
    assert summary.complete
    assert (out / "README.txt").read_text() == "kept"
    assert not (out / ".zarray").exists() and not (out / ".zgroup").exists()
    np.testing.assert_array_equal(image(out), ref)


def test_symlinked_output_is_refused(sample_dir, tmp_path):
    directory, _ = sample_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "link.zarr"
    link.symlink_to(elsewhere)
    with pytest.raises(MaterializeError, match="symbolic link"):
        materialize(directory, link)
    out = tmp_path / "out.zarr"
    materialize(directory, out)
    (out / "image" / "escape").symlink_to(elsewhere)
    with pytest.raises(MaterializeError, match="symbolic link inside"):
        materialize(directory, out, overwrite=True)
    assert not any(elsewhere.iterdir())

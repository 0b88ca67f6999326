"""Helpers of the reliability tests: outcomes of opening and reading, bounded in time,
and small surgery on real TIFF files (patching tags and offsets)."""

from __future__ import annotations

import struct
import threading
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

import tiffstore
from tiffstore.errors import TiffStoreError

#: Any open + read of the corpus must end within this many seconds.
SECONDS = 30


@dataclass
class Outcome:
    """What opening a source and reading all of it gave: an array or a tiffstore error."""

    data: np.ndarray | None = None
    error: TiffStoreError | None = None


def bounded(fn: Callable[[], Any], seconds: float = SECONDS) -> Any:
    """``fn()`` in a thread; fail the test if it runs longer than ``seconds``."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc
            result["trace"] = traceback.format_exc()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"did not finish within {seconds} s (a hang)")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def read_everything(store: tiffstore.TiffStore) -> np.ndarray:
    """Every chunk of the store, through the store's keys, assembled as zarr would."""
    m = store.manifest
    # Chunk by chunk, and the whole array only once every chunk is read: a header
    # declaring a huge image must fail on its chunk, not in this test's allocation.
    chunks = {}
    for index in np.ndindex(*m.chunk_grid):
        raw = store.get_bytes_sync(".".join(map(str, index)))
        if raw is not None:
            chunks[index] = raw
    out = np.full(m.shape, m.fill_value, m.dtype)
    for index, raw in chunks.items():
        chunk = np.frombuffer(raw, m.dtype).reshape(m.chunks)
        starts, stops = m.chunk_bounds(index)
        region = tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))
        out[region] = chunk[tuple(slice(0, b - a) for a, b in zip(starts, stops, strict=True))]
    # Every metadata document serializes (names with odd characters included).
    for key in (".zarray", ".zattrs", ".zmetadata"):
        assert store.get_bytes_sync(key)
    return out


def outcome(source: Any, seconds: float = SECONDS, **options: Any) -> Outcome:
    """Open ``source`` and read all of it; only a tiffstore error may come out."""

    def run() -> Outcome:
        try:
            store = tiffstore.open(source, **options)
            return Outcome(data=read_everything(store))
        except TiffStoreError as exc:
            return Outcome(error=exc)

    try:
        result: Outcome = bounded(run, seconds)
    except AssertionError:
        raise
    except BaseException as exc:
        raise AssertionError(
            f"a foreign exception escaped: {type(exc).__name__}: {exc}\n"
            + "".join(traceback.format_exception(exc))
        ) from exc
    return result


def write_stack(path: Path, data: np.ndarray, **options: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, photometric="minisblack", **options)


def stacks(
    folder: Path, n: int = 3, shape: tuple[int, ...] = (2, 8, 8), seed: int = 0, **options: Any
) -> np.ndarray:
    """``n`` files ``img_t{i}.tif`` of random uint16 ``shape``; returns the stacked array."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 4000, (n, *shape), dtype=np.uint16)
    for i in range(n):
        write_stack(folder / f"img_t{i}.tif", ref[i], **options)
    return ref


def patch_tag(path: Path, tag_name: str, value: int, page: int = 0) -> None:
    """Overwrite the first value of a tag of one page (in place, same type)."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[page].tags[tag_name]  # type: ignore[union-attr]
        where, kind, byteorder = tag.valueoffset, int(tag.dtype), tif.byteorder
    fmt = byteorder + {3: "H", 4: "I", 16: "Q"}[kind]
    data = bytearray(path.read_bytes())
    data[where : where + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def page_offsets(path: Path) -> list[int]:
    with tifffile.TiffFile(path) as tif:
        return [int(p.offset) for p in tif.pages]


def png_bytes() -> bytes:
    """A valid one-pixel PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )

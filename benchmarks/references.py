"""Reference files: how fast tiffstore writes them, and reading one plane through one.

* Writing JSON references for ``--many`` small files, beside ``tiffstore.open`` on the
  same files (target: at most 2x) and beside the peers that make references
  (kerchunk's ``tiff_to_zarr`` + ``MultiZarrToZarr``, VirtualiZarr), per file.
* Parquet references for the largest ``--many`` folder (one reference per page), with
  the peak memory the writing traced.
* One plane read through a reference file (fsspec + zarr, local files), beside
  ``pread`` of the plane's bytes (target: within 3x).
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import fsspec
import zarr

import tiffstore

from . import cases
from .data import Context
from .harness import Row, Target, Timing, attempt, timed_row
from .limits import PLANE_LIMIT
from .peers import Kerchunk, VirtualiZarr

WRITE = "write references (per file)"
PEER_FILES = 1_000


def targets(ctx: Context) -> list[Target]:
    out = [
        Target(
            "one plane through a reference file <= 3x pread",
            "refs/plane",
            PLANE_LIMIT,
            "ratio",
            at_most=3,
        )
    ]
    for n in ctx.many:
        if n == 10_000 or n == max(ctx.many):
            out.append(
                Target(
                    f"references for {n:,} files <= 2x tiffstore.open",
                    f"refs/{n}/json",
                    f"refs/{n}/open",
                    "ratio",
                    at_most=2,
                )
            )
            # The references read every header, to check it (the open reads a sample):
            # beside an open that reads every header too.
            out.append(
                Target(
                    f"references for {n:,} files <= 1x tiffstore.open(validate=True)",
                    f"refs/{n}/json",
                    f"refs/{n}/open_validate",
                    "ratio",
                    at_most=1,
                )
            )
    small = min(ctx.many)
    for peer in ("kerchunk", "virtualizarr"):
        out.append(
            Target(
                f"references per file >= 100x faster than {peer}",
                f"refs/{small}/json",
                f"refs/{PEER_FILES}/{peer}",
                "speedup",
                at_least=100,
            )
        )
    return out


def _per_file(key: str, tool: str, role: Any, seconds: list[float], n: int, note: str = "") -> Row:
    """A row in microseconds per file, so folders of any size compare."""
    per = sorted(s / n for s in seconds)
    timing = Timing(per[0], per[len(per) // 2], tuple(per))
    row = timed_row(key, WRITE, tool, role, timing, unit="us", note=note or f"{n:,} files")
    return row


def _timed(fn: Any, repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    repeats = max(1, min(ctx.repeats, 3))
    for n in ctx.many:
        ds = ctx.many_files(n)
        target = ctx.workdir / f"refs-{n}.json"

        def write(path: Path = ds.path, target: Path = target) -> None:
            tiffstore.write_references(tiffstore.open(path), str(target), overwrite=True)

        def opened(path: Path = ds.path) -> None:
            tiffstore.open(path)

        def validated(path: Path = ds.path) -> None:
            tiffstore.open(path, validate=True)

        measured: list[tuple[str, str, Any]] = [
            ("open", "tiffstore.open (for scale)", opened),
            ("json", "tiffstore refs (open + JSON)", write),
        ]
        if n == 10_000 or n == max(ctx.many):
            measured.append(("open_validate", "tiffstore.open(validate=True)", validated))
        for key, tool, fn in measured:

            def measure(key: str = key, tool: str = tool, fn: Any = fn, n: int = n) -> Row:
                return _per_file(f"refs/{n}/{key}", tool, "tiffstore", _timed(fn, repeats), n)

            rows.append(attempt(f"refs/{n}/{key}", WRITE, tool, "tiffstore", measure, unit="us"))
    big = max(ctx.many)
    rows.append(_parquet(ctx, big))
    peer_ds = ctx.many_files(min(PEER_FILES, max(ctx.many)))
    n_peer = len(peer_ds.files)
    for peer in (Kerchunk(), VirtualiZarr()):

        def peer_open(peer: Any = peer) -> Row:
            return _per_file(
                f"refs/{PEER_FILES}/{peer.key}",
                peer.name,
                "peer",
                _timed(lambda: peer.open(peer_ds), 1),
                n_peer,
            )

        rows.append(
            attempt(f"refs/{PEER_FILES}/{peer.key}", WRITE, peer.name, "peer", peer_open, unit="us")
        )
    rows.append(_plane(ctx))
    return rows


def _parquet(ctx: Context, n: int) -> Row:
    ds = ctx.many_files(n)
    key = f"refs/{n}/parquet_memory"
    case = f"Parquet references for {n:,} files: peak traced memory"

    def measure() -> Row:
        store = tiffstore.open(ds.path, chunks="page")
        tracemalloc.start()
        try:
            t0 = time.perf_counter()
            tiffstore.write_references(
                store, str(ctx.workdir / f"refs-{n}.parq"), format="parquet", overwrite=True
            )
            seconds = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return Row(
            key,
            case,
            "tiffstore refs --format parquet --chunks page",
            "tiffstore",
            "MB",
            peak / 1e6,
            note=f"{seconds:.1f} s, {store.manifest.chunk_grid} chunks",
        )

    return attempt(key, case, "tiffstore refs --format parquet", "tiffstore", measure, unit="MB")


def _plane(ctx: Context) -> Row:
    ds = ctx.dataset("raw")
    target = ctx.workdir / "refs-plane.json"

    def make() -> Any:
        tiffstore.write_references(
            tiffstore.open(ds.path, chunks="page"), str(target), overwrite=True
        )
        fs = fsspec.filesystem(
            "reference",
            fo=str(target),
            remote_protocol="file",
            remote_options={"asynchronous": True},
            asynchronous=True,
        )
        z = zarr.open_group(zarr.storage.FsspecStore(fs, read_only=True), mode="r")["image"]
        return lambda c, s, p: z[c, s, p]

    return cases.one_plane(
        ctx, ds, "refs/plane", "zarr over the reference file (fsspec)", "tiffstore", make
    )

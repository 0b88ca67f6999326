"""Opening many small uniform files: tiffstore and the peers beside ``os.scandir`` + ``stat``.

The folder sizes come from ``--many`` (default 1,000, 10,000 and 100,000; at
100,000 it also checks that the open holds little memory and leaves no file
handles open). Figures are per open and, in the note, per file, so growth shows.
A tool whose open of a folder would take far too long, projected from the
smaller folder before, is skipped there with a note.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import psutil

import tiffstore

from .data import Context, Dataset, warm
from .harness import Row, Target, Timing, attempt, time_best, timed_row
from .peers import Kerchunk, Peer, SeedRecipe, TifffileSequence, VirtualiZarr

#: Peers whose open makes the whole array (dask-image's makes a flat one, so it is left out).
OPEN_PEERS: list[Peer] = [SeedRecipe(), TifffileSequence(), Kerchunk(), VirtualiZarr()]

TOOL = "tiffstore.open(dir)"

#: A peer whose open of a folder would take longer than this (projected per file from
#: the smaller folder before) is skipped there.
SLOW_OPEN_S = 30.0
#: The same for tiffstore itself, which gets a longer leash (it is what is measured).
TIFFSTORE_CAP_S = 120.0


def case(n: int) -> str:
    return f"open {n:,} files"


def targets(ctx: Context) -> list[Target]:
    out = []
    for n in ctx.many:
        if n == 10_000:
            out.append(
                Target(
                    "open 10,000 files <= 3x scandir+stat",
                    f"open/{n}/tiffstore",
                    f"open/{n}/scandir_stat",
                    "ratio",
                    at_most=3,
                )
            )
        if n >= 100_000:
            out += [
                Target(
                    f"open {n:,} files: peak traced memory <= 1 GB (MB)",
                    f"open/{n}/tiffstore_memory",
                    f"open/{n}/tiffstore_memory",
                    "value",
                    at_most=1024,
                ),
                Target(
                    f"open {n:,} files: file handles left open",
                    f"open/{n}/tiffstore_handles",
                    f"open/{n}/tiffstore_handles",
                    "value",
                    at_most=0,
                ),
            ]
    return out


def scandir_stat(path: Path) -> int:
    """The open limit: list the folder and stat every file."""
    n = 0
    with os.scandir(path) as it:
        for entry in it:
            n += entry.stat().st_size > 0
    return n


def scandir_fd_stat(path: Path) -> int:
    """The same through a descriptor of the folder: each ``stat`` relative to it
    (``fstatat``), as tiffstore's local listing does where the system allows."""
    fd = os.open(path, os.O_RDONLY)
    try:
        n = 0
        with os.scandir(fd) as it:
            for entry in it:
                n += entry.stat().st_size > 0
        return n
    finally:
        os.close(fd)


def _per_file(ms: float | None, n: int) -> str:
    return "" if ms is None else f"{ms * 1e3 / n:.3g} us/file"


def measure_resources(ds: Dataset, n: int) -> list[Row]:
    """What one open of ``n`` files holds: peak traced memory, handles left open."""
    proc = psutil.Process()
    fds_before = proc.num_fds()
    tracemalloc.start()
    try:
        store = tiffstore.open(ds.path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    fds_after = proc.num_fds()
    assert store.shape[:2] == (ds.channels, ds.stacks)
    return [
        Row(
            f"open/{n}/tiffstore_memory",
            case(n),
            "tiffstore: peak traced memory during open",
            "tiffstore",
            "MB",
            peak / 1e6,
            note=f"{peak / n:.3g} bytes/file",
        ),
        Row(
            f"open/{n}/tiffstore_handles",
            case(n),
            "tiffstore: file handles left open after open",
            "tiffstore",
            "files",
            float(fds_after - fds_before),
            note=f"{fds_before} open before",
        ),
    ]


def open_rows(ctx: Context, ds: Dataset, n: int, projected: dict[str, float]) -> list[Row]:
    """The limit, tiffstore and each peer opening one folder of ``n`` files."""
    limit = f"open/{n}/scandir_stat"
    t = time_best(lambda: scandir_stat(ds.path), ctx.repeats)
    note = _per_file(t.best * 1e3, n)
    rows = [timed_row(limit, case(n), "limit: os.scandir + stat", "limit", t, note=note)]

    own = f"open/{n}/tiffstore"
    if "tiffstore" in projected and projected["tiffstore"] * n > TIFFSTORE_CAP_S:
        note = f"skipped: would take about {projected['tiffstore'] * n:.0f} s"
        rows.append(Row(own, case(n), TOOL, "tiffstore", "ms", limit=limit, note=note))
        return rows

    def open_tiffstore() -> Row:
        t = time_best(lambda: tiffstore.open(ds.path), ctx.repeats)
        projected["tiffstore"] = t.best / n
        note = _per_file(t.best * 1e3, n)
        return timed_row(own, case(n), TOOL, "tiffstore", t, limit=limit, note=note)

    rows.append(attempt(own, case(n), TOOL, "tiffstore", open_tiffstore, limit=limit))
    if n >= 100_000:
        rows += measure_resources(ds, n)
    for peer in OPEN_PEERS:
        key = f"open/{n}/{peer.key}"
        if peer.key in projected and projected[peer.key] * n > SLOW_OPEN_S:
            note = f"skipped: would take about {projected[peer.key] * n:.0f} s"
            rows.append(Row(key, case(n), peer.name, "peer", "ms", limit=limit, note=note))
            continue
        ctx.log(f"  open {n:,}: {peer.name}")
        rows.append(
            attempt(
                key,
                case(n),
                peer.name,
                "peer",
                _open_peer(ctx, ds, n, peer, key, limit, projected),
                limit=limit,
            )
        )
    return rows


def _open_peer(
    ctx: Context,
    ds: Dataset,
    n: int,
    peer: Peer,
    key: str,
    limit: str,
    projected: dict[str, float],
) -> Callable[[], Row]:
    def measure() -> Row:
        peer.prepare()
        t0 = time.perf_counter()
        peer.open(ds)
        first = time.perf_counter() - t0
        projected[peer.key] = first / n
        if first > 1:
            t = Timing(first, first, (first,))  # a slow open is timed once
        else:
            t = time_best(lambda: peer.open(ds), ctx.repeats, warmup=0, budget_s=5)
        note = _per_file(t.best * 1e3, n)
        return timed_row(key, case(n), peer.name, "peer", t, limit=limit, note=note)

    return measure


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    projected: dict[str, float] = {}  # seconds per file of each peer's last open
    for n in ctx.many:
        ds = ctx.many_files(n)
        try:
            warm(ds.files)
            rows += open_rows(ctx, ds, n, projected)
        finally:
            ctx.drop(ds)
    return rows

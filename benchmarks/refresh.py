"""Refreshing a store after 1% new files, beside a full open and ``os.scandir`` + ``stat``.

An acquisition of ``n`` small uniform files (``--many``; the open benchmark's data) is
opened with its last 1% of stacks (every channel) not there yet; they then arrive
(renamed into place) and ``store.refresh()`` is timed, beside a full
``tiffstore.open`` of the grown folder, tiffstore's own listing stage, and the
limit: listing the folder and stat-ing every file (and, for reference, the same
through a descriptor of the folder, each ``stat`` relative to it, as the local
listing does). Each timed refresh starts from the same old store (a refresh leaves
it unchanged), so each reads the same new headers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import tiffstore
from tiffstore import opening

from .data import Context, Dataset, warm
from .harness import Row, Target, attempt, time_best, timed_row
from .open_many import scandir_fd_stat, scandir_stat

#: The share of files that arrive between the open and the refresh.
NEW_SHARE = 0.01


def case(n: int) -> str:
    return f"refresh {n:,} files after 1% new"


def targets(ctx: Context) -> list[Target]:
    out = []
    for n in ctx.many:
        if n < 10_000:
            continue
        out += [
            Target(
                f"refresh {n:,} files after 1% new <= 0.5x a full open",
                f"refresh/{n}/tiffstore",
                f"refresh/{n}/open",
                "ratio",
                at_most=0.5,
            ),
            Target(
                f"refresh {n:,} files after 1% new <= 1.5x scandir+stat",
                f"refresh/{n}/tiffstore",
                f"refresh/{n}/scandir_stat",
                "ratio",
                at_most=1.5,
            ),
        ]
    return out


def late_files(ds: Dataset, share: float = NEW_SHARE) -> list[Path]:
    """The files of the last ``share`` of stacks, every channel (the data are written
    channel by channel, ``stacks`` files each)."""
    late = max(1, math.ceil(ds.stacks * share))
    return [f for i, f in enumerate(ds.files) if i % ds.stacks >= ds.stacks - late]


def opened_before(ds: Dataset, late: list[Path]) -> tiffstore.TiffStore:
    """The store opened while ``late`` were not there yet; they are back on return."""
    aside = ds.path.with_name(ds.path.name + "-aside")
    aside.mkdir(exist_ok=True)
    for f in late:
        os.rename(f, aside / f.name)
    try:
        return tiffstore.open(ds.path)
    finally:
        for f in late:
            os.rename(aside / f.name, f)
        aside.rmdir()


def refresh_rows(ctx: Context, ds: Dataset, n: int) -> list[Row]:
    late = late_files(ds)
    old = opened_before(ds, late)
    grown = old.refresh()
    assert grown.shape[1] == ds.stacks and len(grown.growth.added_files) == len(late)  # type: ignore[union-attr]
    limit = f"refresh/{n}/scandir_stat"
    per_file = f"{len(late):,} new files"
    t = time_best(lambda: scandir_stat(ds.path), ctx.repeats)
    rows = [timed_row(limit, case(n), "limit: os.scandir + stat", "limit", t)]
    t = time_best(lambda: scandir_fd_stat(ds.path), ctx.repeats)
    rows.append(
        timed_row(
            f"refresh/{n}/scandir_fd_stat",
            case(n),
            "os.scandir(directory descriptor) + stat relative to it",
            "limit",
            t,
            note="the listing's own system calls (for reference)",
        )
    )
    options = old.opened_from.options  # type: ignore[union-attr]

    def measure(key: str, tool: str, fn: object, note: str = "") -> Row:
        def run() -> Row:
            t = time_best(fn, ctx.repeats)  # type: ignore[arg-type]
            return timed_row(key, case(n), tool, "tiffstore", t, limit=limit, note=note)

        return attempt(key, case(n), tool, "tiffstore", run, limit=limit)

    rows += [
        measure(
            f"refresh/{n}/listing",
            "tiffstore's listing stage (list_files)",
            lambda: opening.list_files(ds.path, options),
        ),
        measure(f"refresh/{n}/tiffstore", "store.refresh()", old.refresh, per_file),
        measure(
            f"refresh/{n}/open",
            "tiffstore.open(dir), new files in",
            lambda: tiffstore.open(ds.path),
        ),
    ]
    return rows


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for n in ctx.many:
        ds = ctx.many_files(n)
        try:
            warm(ds.files)
            rows += refresh_rows(ctx, ds, n)
        finally:
            ctx.drop(ds)
    return rows

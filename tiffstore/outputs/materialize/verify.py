"""Verifying a materialize output: every chunk read back and compared with the source.

A chunk that differs (or cannot be decoded) is named; the output is then marked
incomplete with the journal records of its tasks removed, so that ``resume=True``
rewrites just those tasks (and the pyramid levels above them).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from zarr.buffer import default_buffer_prototype

from tiffstore._compat import zarr_sync
from tiffstore.outputs.materialize.job import Job
from tiffstore.outputs.materialize.journal import mark
from tiffstore.outputs.materialize.plan import JOURNAL, Task, task_bytes
from tiffstore.outputs.materialize.runner import ProgressCallback, Runner

__all__ = ["reopen_mismatched", "verify_all", "verify_task"]

logger = logging.getLogger(__name__)


def verify_task(job: Job, task: Task) -> list[str]:
    """Keys of the task's chunks whose values differ from the source (or cannot be read).

    A shard is compared part by part (:meth:`Job.parts`), so that memory stays bounded
    as when it was written.
    """
    bad: list[str] = []
    for part in job.parts(task):
        bad += [key for key in _differing(job, part) if key not in bad]
    return bad


def _differing(job: Job, task: Task) -> list[str]:
    expected, _ = job.expected(task)
    arr = job.array(task.path)
    try:
        found: np.ndarray | None = np.asarray(arr[task.slices])  # one read, decoded in parallel
    except Exception as exc:  # some chunk cannot be decoded: read them one by one
        logger.debug("%s: reading chunk by chunk (%s)", task.record_key, exc)
        found = None
    bad: list[str] = []
    for key, region in job.chunk_regions(task):
        local = tuple(
            slice(r.start - a, r.stop - a) for r, a in zip(region, task.start, strict=True)
        )
        try:
            got = found[local] if found is not None else arr[region]
            same = np.array_equal(got, expected[local])
        except Exception as exc:  # a chunk that cannot be decoded differs, whatever the cause
            logger.debug("%s cannot be read: %s", key, exc)
            same = False
        if not same and key not in bad:
            bad.append(key)
    return bad


def verify_all(job: Job, runner: Runner, progress: ProgressCallback | None) -> list[str]:
    """Keys of the image's chunks that differ from the source."""
    itemsize = job.source.dtype.itemsize
    tasks = job.tasks(job.arrays[0])
    total = sum(task_bytes(t, itemsize) for t in tasks)
    checked = 0
    mismatched: list[str] = []
    if progress:
        progress("verifying", 0, total)
    for task, bad in runner.map(verify_task, tasks):
        mismatched += bad
        checked += task_bytes(task, itemsize)
        if progress:
            progress("verifying", checked, total)
    if mismatched:
        logger.error(
            "%d chunk(s) differ from the source: %s",
            len(mismatched),
            ", ".join(sorted(mismatched)[:20]),
        )
    return mismatched


def reopen_mismatched(
    job: Job, store: Any, root: Any, marker: dict[str, Any], mismatched: Sequence[str]
) -> None:
    """Mark the output incomplete, with every task done but those holding a bad chunk.

    A later ``resume`` then rewrites just those tasks (and the pyramid above them). The
    records of bad tasks go first and the good ones are written last, so that a run
    killed in between leaves no bad task recorded as done (at worst, good ones redone).
    """
    image = job.arrays[0]
    bad = set(mismatched)
    tasks = [(t, bool(bad.intersection(job.chunk_keys(t)))) for t in job.tasks(image)]
    record = default_buffer_prototype().buffer.from_bytes(b"{}")

    async def forget_bad() -> None:
        for plan in job.arrays[1:]:
            await store.delete_dir(f"{JOURNAL}/{plan.path}")
        for task, is_bad in tasks:
            if is_bad:
                with contextlib.suppress(FileNotFoundError):
                    await store.delete(task.record_key)

    async def record_good() -> None:
        for task, is_bad in tasks:
            if not is_bad:
                await store.set(task.record_key, record)

    zarr_sync(forget_bad())
    mark(store, root, marker, job.arrays, complete=False)
    zarr_sync(record_good())

"""Running materialize's tasks: local threads by default, or a dask.distributed cluster."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from tiffstore.outputs.materialize.job import Job, write_task
from tiffstore.outputs.materialize.plan import Task, task_bytes

__all__ = ["ProgressCallback", "Runner", "write_all"]

logger = logging.getLogger(__name__)

#: ``progress(phase, done_bytes, total_bytes)``.
ProgressCallback = Callable[[str, int, int], None]


class Runner:
    """Runs tasks on local threads or on a dask.distributed cluster, results as they finish."""

    def __init__(self, job: Job, workers: int | None, scheduler: Any) -> None:
        self.job = job
        self.workers = workers or os.cpu_count() or 1
        self.client: Any = None
        self._own_client = False
        self._job_ref: Any = job
        if scheduler is not None:
            from distributed import Client

            if isinstance(scheduler, Client):
                self.client = scheduler
            else:
                self.client = Client(scheduler)
                self._own_client = True
            self._job_ref = self.client.scatter(job, broadcast=True, hash=False)

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def map(
        self, fn: Callable[[Job, Task], Any], tasks: Sequence[Task]
    ) -> Iterator[tuple[Task, Any]]:
        if not tasks:
            return
        if self.client is not None:
            from distributed import as_completed

            futures = {
                self.client.submit(
                    fn,
                    self._job_ref,
                    t,
                    pure=False,
                    key=f"{fn.__name__}-{t.path}-{t.number}-{time.time_ns()}",
                ): t
                for t in tasks
            }
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                self.client.cancel(list(futures))
            return
        # Submit a bounded window so a huge task list never sits in memory as futures.
        todo = iter(tasks)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="materialize") as pool:
            running: dict[Future[Any], Task] = {}
            try:
                for t in itertools.islice(todo, self.workers * 2):
                    running[pool.submit(fn, self.job, t)] = t
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        task = running.pop(future)
                        yield task, future.result()
                        nxt = next(todo, None)
                        if nxt is not None:
                            running[pool.submit(fn, self.job, nxt)] = nxt
            finally:
                for future in running:
                    future.cancel()


def write_all(
    job: Job, runner: Runner, done: set[str], progress: ProgressCallback | None
) -> tuple[int, int, int]:
    """Write every task not ``done``, level by level; chunks written, skipped, bytes."""
    itemsize = job.source.dtype.itemsize
    written = skipped = nbytes = 0
    for plan in job.arrays:
        tasks = job.tasks(plan)
        todo = [t for t in tasks if t.record_key not in done]
        skipped += sum(t.chunks for t in tasks if t.record_key in done)
        total = sum(task_bytes(t, itemsize) for t in todo)
        phase = f"writing {plan.path}"
        level_bytes = 0
        if progress:
            progress(phase, 0, total)
        for task, n in runner.map(write_task, todo):
            written += task.chunks
            level_bytes += n
            if progress:
                progress(phase, level_bytes, total)
        nbytes += level_bytes
        logger.info(
            "%s: %d task(s) written, %d found done", plan.path, len(todo), len(tasks) - len(todo)
        )
    return written, skipped, nbytes

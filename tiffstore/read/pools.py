"""Thread pools of this process, shared by name: built on first use, and again in a
child after a fork (a parent's threads do not exist there)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["process_pool"]

_pools: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def process_pool(name: str, threads: int) -> ThreadPoolExecutor:
    """The pool called ``name`` (``threads`` threads, named after it) of this process."""
    pool = _pools.get(name)
    if pool is None:
        with _lock:
            pool = _pools.get(name)
            if pool is None:
                pool = ThreadPoolExecutor(threads, thread_name_prefix=f"tiffstore-{name}")
                _pools[name] = pool
    return pool


def _forget_after_fork() -> None:
    # The child has none of the parent's threads, and the lock may have been held.
    global _lock
    _pools.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)

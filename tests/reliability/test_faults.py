"""Faults and load: a dask.distributed worker killed mid-run, 16 threads and 4
processes reading one store at once, and 100,000 files under ``ulimit -n 256``.

Covered elsewhere, and listed in docs/reliability.md: remote faults through a
fault-injecting proxy (tests/test_remote.py: resets, 500/503, slow and truncated
bodies), and materialize killed with SIGKILL five times then resumed
(tests/test_materialize.py::test_sigkill_at_random_points_then_resume).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest

import tiffstore
from tests.test_materialize import image
from tiffstore.outputs.materialize.plan import JOURNAL
from tiffstore.read.store import TiffStore

from .corpus import bounded, read_everything, stacks

ROOT = Path(__file__).resolve().parents[2]


def _slow_copy(block: np.ndarray) -> np.ndarray:
    time.sleep(0.05)  # keep the workers busy long enough to kill one mid-run
    return block.copy()


@pytest.mark.slow
def test_a_killed_distributed_worker_is_survived(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    ref = stacks(tmp_path, n=6, shape=(16, 32, 32), compression="zlib")
    store = tiffstore.open(tmp_path, chunks="page")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        arr = store.to_dask().map_blocks(_slow_copy, dtype=store.dtype)
        future = client.compute(arr)
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        # Kill once some tasks are done, well before the end (96 tasks of 50 ms on 4
        # threads: over a second of work).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = sum(s == "memory" for s in client.run_on_scheduler(_task_states).values())
            if done >= 8:
                break
            time.sleep(0.005)
        assert not future.done()
        os.kill(victim, signal.SIGKILL)
        result = future.result(timeout=120)
        np.testing.assert_array_equal(result, ref)
        assert victim not in client.run(os.getpid).values()  # it really died


def _task_states(dask_scheduler: object) -> dict[str, str]:
    return {str(k): t.state for k, t in dask_scheduler.tasks.items()}  # type: ignore[attr-defined]


def _digest(store: TiffStore) -> tuple[str, int]:
    """In a worker process: every chunk read in a random order, hashed; and peak RSS."""
    import resource

    data = read_everything(store)
    for _ in range(2):
        keys = [".".join(map(str, i)) for i in np.ndindex(*store.manifest.chunk_grid)]
        random.shuffle(keys)
        for key in keys:
            assert store.get_bytes_sync(key) is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return hashlib.sha256(data.tobytes()).hexdigest(), peak


@pytest.mark.slow
def test_16_threads_and_4_processes_read_one_store(tmp_path: Path) -> None:
    ref = stacks(tmp_path, n=8, shape=(16, 64, 64), compression="zlib")
    store = tiffstore.open(tmp_path, chunks="page")
    m = store.manifest
    keys = [".".join(map(str, i)) for i in np.ndindex(*m.chunk_grid)]

    def read(key: str) -> bool:
        t, z = (int(p) for p in key.split(".")[:2])
        raw = store.get_bytes_sync(key)
        assert raw is not None
        return bool(np.array_equal(np.frombuffer(raw, m.dtype).reshape(64, 64), ref[t, z]))

    process = psutil.Process()
    with ThreadPoolExecutor(16) as pool:

        def read_all(order: list[str]) -> bool:
            return all(pool.map(read, order))

        assert bounded(lambda: read_all(keys * 2), 60)
        before = process.memory_info().rss
        for _ in range(5):
            order = random.sample(keys * 4, len(keys) * 4)
            assert bounded(partial(read_all, order), 60)
        grown = process.memory_info().rss - before
    # Reads keep nothing: five more passes over the store do not grow the process.
    assert grown < 32 * 2**20, f"RSS grew by {grown:,} bytes"

    expected = hashlib.sha256(ref.tobytes()).hexdigest()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=spawn) as processes:
        results = list(processes.map(_digest, [store] * 4, timeout=120))
    assert [digest for digest, _ in results] == [expected] * 4
    assert max(peak for _, peak in results) < 1 << 30


MANY_FILES = """
import os, resource, sys
import numpy as np, tifffile, io
n, folder = int(sys.argv[1]), sys.argv[2]
done = os.path.join(folder, f".written-{n}")
if not os.path.exists(done):  # written once, then reused (see the test)
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((4, 4), np.uint16), photometric="minisblack")
    data = bytearray(buf.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        at = tif.pages[0].dataoffsets[0]
    for i in range(n):
        data[at : at + 4] = i.to_bytes(4, "little")  # each file's first pixels say its number
        with open(os.path.join(folder, f"img_t{i:06d}.tif"), "wb") as fh:
            fh.write(data)
    open(done, "w").close()
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
import tiffstore
for chunks in [(500, -1, -1), "file"]:
    store = tiffstore.open(folder, chunks=chunks)
    assert store.shape == (n, 4, 4), store.shape
    if chunks == "file":
        # One file per chunk: read a sample through the store, from 64 threads.
        from concurrent.futures import ThreadPoolExecutor
        picks = list(range(0, n, 97))
        with ThreadPoolExecutor(64) as pool:
            raws = list(pool.map(lambda i: store.get_bytes_sync(f"{i}.0.0"), picks))
        got = [int.from_bytes(r[:4], "little") for r in raws]
        assert got == picks
    else:
        arr = store.to_dask().compute(scheduler="threads", num_workers=64)
        first = arr[:, 0, :2].copy().view(np.uint32).reshape(-1)
        assert (first == np.arange(n)).all()
print("ok", resource.getrlimit(resource.RLIMIT_NOFILE))
"""


@pytest.fixture
def many_files_folder(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where the 100,000 files live: written once into pytest's cache folder and reused by
    later runs (no 100,000 files to write, and to delete, each run); a temporary folder
    when the cache is off (``-p no:cacheprovider``)."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("many-files-v1")) if cache is not None else tmp_path / "many"


@pytest.mark.slow
def test_100000_files_under_ulimit_256(many_files_folder: Path) -> None:
    """Opening and reading 100,000 files with at most 256 descriptors (about 20 s)."""
    result = subprocess.run(
        [sys.executable, "-c", MANY_FILES, "100000", str(many_files_folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok (256, 256)")


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(make_sample, tmp_path):
    directory, ref = make_sample(channels=2, stacks=6, shape=(32, 96, 96), compression="zlib")
    out = tmp_path / "out.zarr"
    base = [sys.executable, "-m", "tiffstore", "materialize", str(directory), str(out)]
    base += ["--chunks", "1,1,4,32,32", "--workers", "2", "--quiet"]
    rng = random.Random(11)
    journal = out / JOURNAL / "image"
    killed = 0
    for attempt in range(5):
        proc = subprocess.Popen(base + (["--resume"] if attempt else []), cwd=ROOT)
        # Kill after a random number of finished tasks (0: during start-up or metadata).
        target = rng.randint(0, 10)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            done = len(os.listdir(journal)) if journal.is_dir() else 0
            if done >= target and (target or rng.random() < 0.02):
                break
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(timeout=30)
    assert killed >= 3
    status = tiffstore.materialize_status(out)
    assert status is None or status["complete"] is False
    result = subprocess.run(
        [*base, "--resume", "--verify", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["verified"] is True and summary["complete"] is True
    np.testing.assert_array_equal(image(out), ref)

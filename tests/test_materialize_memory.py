"""materialize's memory bound: shards written part by part, whatever their size."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

import tiffstore
from tiffstore.outputs.materialize import plan as plan_module
from tiffstore.outputs.materialize.plan import ArrayPlan, Task, cut_parts, cut_tasks, worker_bytes
from tiffstore.sample import write_sample

ROOT = Path(__file__).resolve().parent.parent


def test_a_shard_is_cut_into_parts_under_the_task_size() -> None:
    shape = (2, 8, 64, 1024, 1024)
    plan = ArrayPlan("image", shape, (1, 1, 64, 256, 256), (1, 8, 64, 1024, 1024), 0)
    source_chunks = (1, 1, 1, 1024, 1024)  # pages
    (task, *_) = cut_tasks(plan, source_chunks, 2)
    assert task.stop == (1, 8, 64, 1024, 1024)  # one task a shard: 1 GiB
    parts = cut_parts(plan, task, source_chunks, 2)
    assert all(math.prod(np.subtract(p.stop, p.start)) * 2 <= plan_module.TASK_BYTES for p in parts)
    assert parts[0].stop == (1, 1, 64, 1024, 1024)  # whole pages, 128 MiB
    covered = sum(math.prod(np.subtract(p.stop, p.start)) for p in parts)
    assert covered == math.prod(np.subtract(task.stop, task.start))
    assert sum(p.chunks for p in parts) == task.chunks


def test_parts_of_an_unsharded_task_are_the_task() -> None:
    plan = ArrayPlan("image", (4, 100, 100), (1, 50, 50), None, 0)
    task = Task("image", 0, (0, 0, 0), (1, 100, 100), 4)
    assert cut_parts(plan, task, None, 2) == [task]


def test_the_bound_does_not_grow_with_local_shards() -> None:
    chunks = (1, 1, 64, 256, 256)
    small = ArrayPlan("image", (2, 8, 64, 1024, 1024), chunks, (1, 1, 64, 512, 512), 0)
    huge = ArrayPlan("image", (2, 8, 64, 1024, 1024), chunks, (1, 8, 64, 1024, 1024), 0)
    page = 1024 * 1024 * 2
    # Local: the index grows (16 bytes a chunk), nothing else.
    assert worker_bytes(huge, page, 2, local=True) - worker_bytes(small, page, 2, local=True) == (
        16 * (8 * 16 - 4)
    )
    # An object store takes whole objects: the encoded shard is held.
    assert worker_bytes(huge, page, 2, local=False) > 2**30
    unsharded = ArrayPlan("image", (2, 8, 64, 1024, 1024), chunks, None, 0)
    assert worker_bytes(unsharded, page, 2, local=True) < 2 * plan_module.TASK_BYTES + 2**24


def test_a_pyramid_level_holds_what_its_bound_says() -> None:
    import tracemalloc

    from tiffstore.outputs.materialize.job import _downsample
    from tiffstore.outputs.materialize.plan import downsample_bytes

    # One output chunk of a level: the 2 x 2 chunks below it, odd along x (padded).
    below = np.arange(16 * 512 * 513, dtype=np.uint16).reshape(16, 512, 513)
    chunk = 16 * 256 * 257 * 2
    tracemalloc.start()
    try:
        out = _downsample(below, (1, 2))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (16, 256, 257) and out.dtype == np.uint16
    # The output chunk itself is the worker's part, counted apart.
    assert below.nbytes + peak - out.nbytes <= downsample_bytes(chunk, 2)
    level = ArrayPlan("1", (1, 16, 256, 257), (1, 16, 256, 257), None, 1)
    assert worker_bytes(level, 0, 2, True) - worker_bytes(
        ArrayPlan("0", (1, 16, 256, 257), (1, 16, 256, 257), None, 0), 0, 2, True
    ) == downsample_bytes(chunk, 2)


def test_shards_with_missing_files_and_edges(make_sample, tmp_path: Path) -> None:
    # stack 2 of both channels is missing: shard (., 2:4) holds fill value chunks,
    # and the odd y/x make edge chunks and shards overhanging the array.
    directory, expected = make_sample(
        channels=2, stacks=4, shape=(5, 40, 30), missing=[(0, 2), (1, 2), (0, 3), (1, 3)]
    )
    out = tmp_path / "out.zarr"
    summary = tiffstore.materialize(
        directory,
        out,
        zarr_format=3,
        chunks=(1, 1, 2, 16, 16),
        shards=(1, 2, 4, 32, 32),
        workers=2,
        verify=True,
    )
    assert summary.complete and summary.verified
    arr = zarr.open_array(str(out), path="image", mode="r")
    np.testing.assert_array_equal(arr[:, :2], expected[:, :2])
    assert not np.asarray(arr[:, 2:]).any()
    # A shard of missing files only is not stored at all.
    assert not (out / "image" / "c" / "0" / "1").exists()


_CHILD = """
import json, sys
import tiffstore


def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


from tiffstore.outputs.materialize import plan
plan.TASK_BYTES = 2**20 * args["task_mib"]
store = tiffstore.open(args["src"], chunks="page")
store.reader.read_chunk((0,) * len(store.shape))  # the reader's first-use setup
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS:")
s = tiffstore.materialize(
    store, args["out"], zarr_format=3, chunks=args["chunks"], shards=args["shards"],
    workers=args["workers"], verify=args["verify"],
)
after = status("VmHWM:")
a = s.shards and plan.ArrayPlan("image", s.shape, s.chunks, s.shards, 0)
page = store.dtype.itemsize * store.shape[-1] * store.shape[-2]
bound = args["workers"] * plan.worker_bytes(a, page, store.dtype.itemsize, local=True)
print(json.dumps({"grew": after - before, "bound": bound, "complete": s.complete}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux: resets VmHWM")
@pytest.mark.parametrize("verify", [False, True], ids=["write", "verify"])
def test_peak_memory_with_a_shard_much_bigger_than_the_bound(tmp_path: Path, verify: bool) -> None:
    # 96 MiB of pixels, one shard for all of it; the bound is 2 workers x ~2.3 MiB.
    src = tmp_path / "raw"
    write_sample(src, channels=2, stacks=3, shape=(32, 512, 512))
    args = {
        "src": str(src),
        "out": str(tmp_path / "out.zarr"),
        "chunks": [1, 1, 16, 128, 128],
        "shards": [2, 3, 32, 512, 512],
        "workers": 2,
        "task_mib": 1,
        "verify": verify,
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = "import json, sys\nargs = json.loads(sys.argv[1])\n" + textwrap.dedent(_CHILD)
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["complete"]
    # Allocator and zarr slack (its event loop, buffers of puts in flight): 16 MiB; the
    # old whole-shard write grew by more than the shard (96 MiB).
    assert found["grew"] <= found["bound"] + 16 * 2**20, found
    assert found["bound"] < 96 * 2**20 / 4


def test_shards_held_whole_past_half_the_memory_are_refused() -> None:
    chunks = (1, 1, 64, 256, 256)
    huge = ArrayPlan("image", (2, 8, 64, 1024, 1024), chunks, (1, 8, 64, 1024, 1024), 0)
    page = 1024 * 1024 * 2
    # Streamed to a local file: a few chunks per worker, whatever the shard.
    plan_module.check_memory([huge], page, 2, local=True, workers=4, memory=2**31)
    with pytest.raises(tiffstore.MaterializeError, match=r"held whole.*smaller shards="):
        plan_module.check_memory([huge], page, 2, local=False, workers=4, memory=2**31)
    plan_module.check_memory([huge], page, 2, local=False, workers=4, memory=None)  # unknown


def test_the_refusal_comes_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    import fsspec

    from tiffstore.outputs.materialize import run as run_module

    write_sample(tmp_path / "src", channels=1, stacks=2, shape=(8, 64, 64))
    monkeypatch.setattr(run_module, "machine_memory", lambda: 2**20)  # 1 MiB
    with pytest.raises(tiffstore.MaterializeError, match="half of this machine"):
        tiffstore.materialize(
            tiffstore.open(tmp_path / "src"), "memory://refused.zarr", zarr_format=3, shards="1MB"
        )
    assert not fsspec.filesystem("memory").exists("/refused.zarr")

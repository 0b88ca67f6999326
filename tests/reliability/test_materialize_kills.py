"""materialize killed with SIGKILL at random moments, its first milliseconds included,
then resumed: every time the copy equals the source and holds no temporary file.

Each run is a subprocess that imports tiffstore and opens the source, says it is
ready, and starts writing when told: the kill delays count from that moment, so
they land in the writes (the setup record, the metadata, the chunks, the finish)
rather than in the imports. The next subprocess starts while this one's output is
resumed (with ``tiffstore materialize --resume``, in this process) and checked.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import tiffstore
from tests.test_materialize import image
from tiffstore.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

#: One run, writing when it reads a line: SOURCE OUT then the settings as JSON.
RUN = """
import json, sys
import tiffstore
source, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
store = tiffstore.open(source, chunks="page")
print("ready", flush=True)
sys.stdin.readline()
tiffstore.materialize(store, out, workers=2, **settings)
"""

#: The settings cycled through, as the library takes them and as the command does.
SETTINGS = [
    ({"chunks": [1, 1, 4, 16, 16], "zarr_format": 2}, ["--chunks", "1,1,4,16,16"]),
    (
        {"chunks": [1, 1, 4, 16, 16], "zarr_format": 3},
        ["--chunks", "1,1,4,16,16", "--zarr-format", "3"],
    ),
    (
        {"chunks": [1, 1, 2, 16, 16], "zarr_format": 3, "shards": [1, 1, 4, 32, 32]},
        ["--chunks", "1,1,2,16,16", "--zarr-format", "3", "--shards", "1,1,4,32,32"],
    ),
]
KILLS = 24


def _start(source: Path, out: Path, settings: dict[str, object]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(source), str(out), json.dumps(settings)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _go(proc: subprocess.Popen[str]) -> float:
    """Wait until the run is ready, tell it to write; the moment it was told."""
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line == "ready\n", proc.communicate(timeout=30)[1][-3000:]
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return time.perf_counter()


def _files(out: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(out) for name in names]


def _check(out: Path, ref: np.ndarray, coords: dict[str, np.ndarray], summary: dict) -> None:
    assert summary["complete"] is True, summary
    np.testing.assert_array_equal(image(out), ref)
    for name, values in coords.items():
        np.testing.assert_array_equal(image(out, name), values)
    files = _files(out)
    left = [f for f in files if f.name.endswith(".partial") or ".tiffstore-journal" in f.parts]
    assert not left, left
    chunks = [
        f
        for f in (out / "image").rglob("*")
        if f.is_file() and not f.name.startswith(".") and f.name != "zarr.json"
    ]
    assert summary["stored_bytes"] == sum(f.stat().st_size for f in chunks)
    status = tiffstore.materialize_status(out)
    assert status is not None and status["complete"] is True


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(make_sample, tmp_path, capsys):
    source, ref = make_sample(channels=2, stacks=3, shape=(8, 32, 32), compression="zlib")
    store = tiffstore.open(source)
    view = zarr.open_group(store, mode="r")
    coords = {name: np.asarray(view[name][...]) for name in store.coords}
    assert coords
    rng = random.Random(20260517)

    # One whole run first: when the first write comes and how long the run takes here.
    whole = tmp_path / "whole.zarr"
    proc = _start(source, whole, SETTINGS[0][0])
    told = _go(proc)
    while not whole.exists() and proc.poll() is None:
        time.sleep(2e-4)
    first = time.perf_counter() - told
    assert proc.wait(timeout=60) == 0, proc.communicate()[1][-3000:]
    span = time.perf_counter() - told
    np.testing.assert_array_equal(image(whole), ref)

    outs = [tmp_path / f"out{i}.zarr" for i in range(KILLS)]
    proc = _start(source, outs[0], SETTINGS[0][0])
    killed = early = left_temporary = 0
    try:
        for i, out in enumerate(outs):
            _, flags = SETTINGS[i % len(SETTINGS)]
            # A third around the first write (before it too), a third in the first 30% of
            # the run (the metadata), a third anywhere.
            start, width = rng.choice([(0, first + 3e-3), (first, 0.3 * span), (0, span)])
            delay = start + width * rng.random()
            told = _go(proc)
            time.sleep(max(0.0, told + delay - time.perf_counter()))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)  # a zombie, if it just ended: no error
                killed += 1
                early += delay < first + 3e-3
            elif proc.returncode:
                raise AssertionError(proc.communicate()[1][-3000:])
            proc.wait(timeout=30)
            left_temporary += any(f.name.endswith(".partial") for f in _files(out))
            if i + 1 < KILLS:  # the next run imports while this one is resumed
                proc = _start(source, outs[i + 1], SETTINGS[(i + 1) % len(SETTINGS)][0])
            command = ["materialize", str(source), str(out), *flags, "--resume", "--json"]
            assert main(command) == 0, capsys.readouterr().err
            summary = json.loads(capsys.readouterr().out)
            _check(out, ref, coords, summary)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Most runs die mid-write (the rest finish first), a few before or in the first write.
    assert killed >= KILLS // 2 and early >= 3, (killed, early, left_temporary, first, span)

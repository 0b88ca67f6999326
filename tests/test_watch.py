"""``tiffstore inspect --watch``: the command in a subprocess while files arrive, stopped
with Ctrl-C (SIGINT), as a user runs it beside a microscope."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ctrl_c_reaches
from tiffstore.sample import sample_name, write_sample

REPO = Path(__file__).resolve().parents[1]
SHAPE = (3, 16, 12)


@contextmanager
def watching(*args: str) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """``tiffstore inspect --watch ARGS`` running, and a queue of its stdout lines."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiffstore", "inspect", "--watch", "--interval", "0.2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ctrl_c_reaches,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    out = proc.stdout

    def pump() -> None:
        for line in out:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def next_line(proc: subprocess.Popen[str], lines: queue.Queue[str], want: str) -> str:
    """The next line holding ``want`` (within 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                raise AssertionError(f"watch exited: {proc.stderr.read()}") from None  # type: ignore[union-attr]
            continue
        if want in line:
            return line
    raise AssertionError(f"no line with {want!r} within 30 s")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
    assert proc.wait(20) == 0, proc.stderr.read()  # type: ignore[union-attr]


def arrive(full: Path, growing: Path, stack: int) -> None:
    for c in range(2):
        # Written beside, then renamed into place, as acquisition software does.
        part = growing / (sample_name(c, stack) + ".part")
        shutil.copyfile(full / sample_name(c, stack), part)
        part.rename(growing / sample_name(c, stack))


@pytest.fixture
def full(tmp_path: Path) -> Path:
    write_sample(tmp_path / "full", channels=2, stacks=4, shape=SHAPE)
    return tmp_path / "full"


def test_watch_json_lines(full: Path, tmp_path: Path) -> None:
    growing = tmp_path / "growing"
    growing.mkdir()
    with watching(str(growing), "--json") as (proc, lines):
        time.sleep(0.5)  # no TIFF yet: the watch waits for the first files
        arrive(full, growing, 0)
        opened = json.loads(next_line(proc, lines, '"opened"'))
        assert opened["files"] == 2 and opened["dims"] == ["ch", "z", "y", "x"]
        # The second stack gives the names a stack axis: not growth, so opened again.
        arrive(full, growing, 1)
        reopened = json.loads(next_line(proc, lines, '"reopened"'))
        assert reopened["shape"] == [2, 2, *SHAPE] and "axes are now" in reopened["why"]
        arrive(full, growing, 2)
        grew = json.loads(next_line(proc, lines, '"grew"'))
        assert grew["old_shape"] == [2, 2, *SHAPE] and grew["shape"] == [2, 3, *SHAPE]
        assert grew["grown"] == ["stack"]
        assert grew["added"] == sorted(sample_name(c, 2) for c in range(2))
        assert grew["missing"] == 0 and grew["incomplete"] == [] and grew["filled"] == []
        stop(proc)
    # Every line is one JSON object.
    rest: list[Any] = []
    while not lines.empty():
        rest.append(json.loads(lines.get()))
    assert all(r["event"] in ("opened", "grew", "reopened") for r in rest)


def test_watch_prints_each_change(full: Path, tmp_path: Path) -> None:
    growing = tmp_path / "growing"
    growing.mkdir()
    for s in range(2):
        arrive(full, growing, s)
    with watching(str(growing)) as (proc, lines):
        next_line(proc, lines, "Template")  # the inspect report first
        arrive(full, growing, 2)
        line = next_line(proc, lines, "new files")
        assert "2 new files; stack 2 -> 3" in line and "stack=3" in line
        stop(proc)

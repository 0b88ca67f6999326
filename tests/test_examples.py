"""Every script in examples/ runs to the end on its small default data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiffstore.errors import GpuError
from tiffstore.read import gpu

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
#: Examples that need an NVIDIA GPU and CuPy: run where there is one, skipped elsewhere.
GPU_EXAMPLES = {"gpu_max_projection"}


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5, EXAMPLES


def _example(path: Path) -> object:
    marks = [pytest.mark.gpu] if path.stem in GPU_EXAMPLES else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("script", [_example(p) for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    if script.stem in GPU_EXAMPLES:
        try:
            gpu.require_cupy()
        except GpuError as exc:
            pytest.skip(str(exc))
    # This checkout's tiffstore, whatever is installed; the examples' temporary files
    # go under tmp_path.
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} printed nothing"

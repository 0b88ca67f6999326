"""The docs site builds with ``mkdocs build --strict`` (broken links, pages left out of
the nav and docstrings mkdocstrings cannot render all fail it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.fail('mkdocs is not installed: pip install -e ".[docs]"')
    site = tmp_path / "site"
    command = ["mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(site)]
    result = subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("tiffstore.open", "tiffstore.TiffStore", "tiffstore.apps.serve.make_app"):
        assert f'id="{name}"' in api, name
    assert (site / "benchmarks" / "index.html").exists()

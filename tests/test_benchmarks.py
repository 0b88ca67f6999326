"""The benchmark suite still runs: ``benchmarks/run.py --quick`` on tiny data, in a subprocess.

Marked ``bench``: the README's test command runs them once; ``-m "not bench"`` leaves
them out of a quick local run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Rows that need nothing beyond tiffstore's own dependencies, so every run has them.
EXPECTED = [
    "full/copy_limit",
    "sum/read_sum_limit",
    "plane/pread",
    "plane/zarr_memory",
    "full/tiffstore",
    "sum/tiffstore",
    "full/tiffstore_zarr_pipeline",
    "sum/tiffstore_zarr_pipeline",
    "full/tiffstore_v3",
    "sum/tiffstore_v3",
    "full/tiffstore_xarray",
    "sum/tiffstore_xarray",
    "sum/tiffstore_threads",
    "plane/tiffstore_v3_sharded",
    "plane/tiffstore_page_zarr_pipeline",
    "zarr/tiffstore",
    "plane/tiffstore_default",
    "plane/tiffstore_page_mapping",
    "plane/tiffstore_page",
    "compressed/decode_limit",
    "compressed/tiffstore",
    "compressed/recipe",
    "compressed/tifffile",
    "full/recipe",
    "full/tifffile",
]
PEERS = ["recipe", "tifffile", "dask_image", "kerchunk", "virtualizarr"]


@pytest.mark.bench
@pytest.mark.slow
def test_quick_run_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    docs = tmp_path / "benchmarks.md"
    docs.write_text(
        "# Results\n<!-- results: begin -->\nstale-results\n<!-- results: end -->\nafter\n"
    )
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--out", str(out), "--docs", str(docs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = {r["key"]: r for r in doc["rows"]}

    for key in EXPECTED:
        assert key in rows, f"missing row {key}"
        assert rows[key]["error"] is None, f"{key}: {rows[key]['error']}"
        assert rows[key]["figure"] > 0, key
    # Every peer has its rows, with a figure or the reason it has none.
    for peer in PEERS:
        for case in ("full", "sum", "plane"):
            row = rows[f"{case}/{peer}"]
            assert (row["figure"] or 0) > 0 or row["error"], row
    # Ratios are filled in against the limits, and the open and scaling groups ran.
    assert rows["full/tiffstore"]["ratio_to_limit"] > 0
    assert any(k.startswith("open/") and k.endswith("/tiffstore") for k in rows)
    assert any(k.startswith("scaling/") for k in rows)
    assert rows["small/200/default"]["figure"] > 0  # the small-files group, on 200 files
    assert rows["refresh/40/tiffstore"]["figure"] > 0  # refresh after new files, 40 files
    assert {t["name"] for t in doc["targets"]} >= {"full read >= 0.6 of the copy limit"}
    assert doc["machine"]["cores"] >= 1
    # The table was printed, and the docs section replaced, keeping what is around it.
    assert "tiffstore benchmarks" in proc.stdout
    text = docs.read_text()
    assert "stale-results" not in text and "after" in text and "| case |" in text


@pytest.mark.bench
@pytest.mark.slow
def test_materialize_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "materialize.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/materialize.py",
            "--quick",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    for kind in ("codec_limit", "tiffstore", "recipe"):
        found = [r for k, r in rows.items() if k.endswith(f"/{kind}") and r["unit"] == "GB/s"]
        assert len(found) == 2, kind  # two sizes
        assert all(r["error"] is None and r["figure"] > 0 for r in found), found
    memory = [r for r in rows.values() if r["unit"] == "MB"]
    assert len(memory) == 4 and all(r["figure"] > 10 for r in memory)

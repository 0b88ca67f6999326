"""Materialize beside the seed recipe and the codec's own limit, with peak memory, at two sizes.

- codec limit: numcodecs Blosc (zstd, level 3, bit-shuffle) encoding the array's
  bytes, already in memory, in output-chunk pieces, one thread per core;
- tiffstore: ``tiffstore.materialize(folder, out)`` with its defaults (Zarr format 2,
  chunks ``(1, 1, 64, 256, 256)``, the same codec);
- seed recipe: ``dask.delayed(tifffile.imread)`` per file + ``da.block`` +
  ``to_zarr`` with the same codec (one chunk per file, as the recipe makes them).

Each write runs in a child process whose resident memory is sampled with psutil
every 5 ms: the peak is that process's own, from its start (imports included).
Sizes are ``--size`` and half of it, so memory growth with the array shows.

Run alone::

    python benchmarks/materialize.py --size 1      # = run.py --only materialize
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks.data import Context, Dataset, cores, warm
from benchmarks.harness import Row, Target, Timing, attempt, error_text, timed_row

CASE = "materialize to Zarr, Blosc zstd-3 bit-shuffle"
MEMORY = "materialize: peak resident memory"
CHUNKS = (1, 1, 64, 256, 256)
ROOT = Path(__file__).resolve().parent.parent

#: What a child process runs; ``{args}`` is its JSON arguments. Prints seconds taken.
_CHILD = {
    "tiffstore": """
        import tiffstore
        t0 = time.perf_counter()
        s = tiffstore.materialize(args["src"], args["out"])
        assert s.complete
    """,
    "recipe": """
        import dask, dask.array as da, numcodecs, tifffile, re
        from pathlib import Path
        files = sorted(Path(args["src"]).glob("*.tif"))
        rx = re.compile(r"_ch(\\d+)_CAM1_stack(\\d+)_")
        cells = {tuple(int(g) for g in rx.search(f.name).groups()): str(f) for f in files}
        chans = sorted({c for c, _ in cells}); stacks = sorted({s for _, s in cells})
        with tifffile.TiffFile(files[0]) as tif:
            shape, dtype = tif.series[0].shape, tif.series[0].dtype
        t0 = time.perf_counter()
        read = dask.delayed(tifffile.imread, pure=True)
        a = da.block([[[[[da.from_delayed(read(cells[c, s]), shape, dtype)[None, None]]]]
                       for s in stacks] for c in chans])
        blosc = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
        a.to_zarr(args["out"], compressors=[blosc], zarr_format=2)  # zarr 3: compressors=
    """,
}


def limit_key(gb: str) -> str:
    """The key of the codec limit's row at one size."""
    return f"materialize/{gb}/codec_limit"


def _child_code(kind: str) -> str:
    return (
        "import json, sys, time\nargs = json.loads(sys.argv[1])\n"
        + textwrap.dedent(_CHILD[kind])
        + "print(json.dumps({'seconds': time.perf_counter() - t0}))\n"
    )


def run_child(kind: str, src: Path, out: Path) -> tuple[float, float]:
    """Run one write in a child process: (seconds, peak RSS in bytes)."""
    import psutil

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    args = json.dumps({"src": str(src), "out": str(out)})
    proc = subprocess.Popen(
        [sys.executable, "-c", _child_code(kind), args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.005)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{kind} child failed: {stderr.strip().splitlines()[-1:]}")
    return float(json.loads(stdout.strip().splitlines()[-1])["seconds"]), float(peak)


def check_output(ds: Dataset, out: Path) -> None:
    """Raise unless the written array holds the first and the last file's pixels."""
    import tifffile
    import zarr

    image = out / "image"
    arr = zarr.open_array(image if image.is_dir() else out, mode="r")
    for c, s in {(0, 0), (ds.channels - 1, ds.stacks - 1)}:
        if not np.array_equal(arr[c, s], tifffile.imread(ds.file(c, s))):
            raise AssertionError(f"{out.name}: wrong pixels for file (ch {c}, stack {s})")


def write_rows(ctx: Context, ds: Dataset, kind: str, tool: str, role: str) -> list[Row]:
    """Throughput and peak memory of one tool writing ``ds``: best of a few child runs."""
    gb = f"{ds.nbytes / 1e9:.3g} GB"
    key = f"materialize/{gb}/{kind}"
    out = ctx.workdir / f"out-{kind}.zarr"
    runs: list[float] = []
    peaks: list[float] = []
    try:
        for _ in range(max(1, min(ctx.repeats, 3))):
            shutil.rmtree(out, ignore_errors=True)
            warm(ds.files)
            seconds, peak = run_child(kind, ds.path, out)
            runs.append(seconds)
            peaks.append(peak)
        check_output(ds, out)
        stored = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    except Exception as exc:
        return [
            Row(
                key,
                f"{CASE} @ {gb}",
                tool,
                role,
                "GB/s",
                limit=limit_key(gb),
                error=error_text(exc),
            ),  # type: ignore[arg-type]
        ]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    timing = Timing(min(runs), float(np.median(runs)), tuple(runs))
    speed = timed_row(
        key,
        f"{CASE} @ {gb}",
        tool,
        role,  # type: ignore[arg-type]
        timing,
        nbytes=ds.nbytes,
        limit=limit_key(gb),
        note=f"ratio {ds.nbytes / stored:.2f}, {stored / 1e9:.2f} GB stored",
    )
    memory = Row(
        f"memory/{gb}/{kind}",
        MEMORY,
        f"{tool} @ {gb}",
        role,  # type: ignore[arg-type]
        "MB",
        figure=max(peaks) / 1e6,
        median=float(np.median(peaks)) / 1e6,
        note=f"child process from start; {ds.nbytes / 1e9:.2f} GB array",
    )
    return [speed, memory]


def codec_limit(ctx: Context, ds: Dataset) -> Row:
    """Blosc encoding the array's bytes from memory, output-chunk pieces, one thread per core."""
    import numcodecs

    import tiffstore

    gb = f"{ds.nbytes / 1e9:.3g} GB"
    data = np.asarray(tiffstore.open(ds.path).to_dask().compute())
    pieces = [
        np.ascontiguousarray(data[c, s, z : z + CHUNKS[2], y : y + CHUNKS[3], x : x + CHUNKS[4]])
        for c in range(data.shape[0])
        for s in range(data.shape[1])
        for z in range(0, data.shape[2], CHUNKS[2])
        for y in range(0, data.shape[3], CHUNKS[3])
        for x in range(0, data.shape[4], CHUNKS[4])
    ]
    blosc = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    n = cores()
    parts = [pieces[i::n] for i in range(n)]

    def encode(part: list[np.ndarray]) -> int:
        return sum(len(blosc.encode(p)) for p in part)

    with ThreadPoolExecutor(n) as pool:
        from benchmarks.harness import time_best

        t = time_best(lambda: list(pool.map(encode, parts)), ctx.repeats)
        stored = sum(pool.map(encode, parts))
    return timed_row(
        limit_key(gb),
        f"{CASE} @ {gb}",
        f"codec limit: Blosc zstd-3 bit-shuffle, {n} threads, from memory",
        "limit",
        t,
        nbytes=ds.nbytes,
        note=f"{len(pieces)} chunks of {CHUNKS}, ratio {ds.nbytes / stored:.2f}",
    )


def sizes(ctx: Context) -> tuple[float, float]:
    return (ctx.size_gb / 2, ctx.size_gb)


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for size in sizes(ctx):
        ds = ctx.dataset("raw", size_gb=size)
        gb = f"{ds.nbytes / 1e9:.3g} GB"
        rows.append(
            attempt(
                limit_key(gb),
                f"{CASE} @ {gb}",
                "codec limit",
                "limit",
                lambda ds=ds: codec_limit(ctx, ds),
                unit="GB/s",
            )  # type: ignore[misc]
        )
        rows += write_rows(ctx, ds, "tiffstore", "tiffstore.materialize (defaults)", "tiffstore")
        rows += write_rows(
            ctx,
            ds,
            "recipe",
            "seed recipe: delayed(imread) + da.block + to_zarr (same Blosc)",
            "peer",
        )
        ctx.log(f"materialize @ {gb} done")
    return rows


def targets(ctx: Context) -> list[Target]:
    """Goals at the larger size, keyed by its row names."""
    stacks_gb = [f"{ctx.dataset('raw', size_gb=s).nbytes / 1e9:.3g} GB" for s in sizes(ctx)]
    big = stacks_gb[-1]
    return [
        Target(
            f"materialize >= 0.8 of the codec limit @ {big}",
            f"materialize/{big}/tiffstore",
            limit_key(big),
            "ratio",
            0.8,
        ),
        Target(
            f"materialize >= 1.5x the seed recipe @ {big}",
            f"materialize/{big}/tiffstore",
            f"materialize/{big}/recipe",
            "speedup",
            1.5,
        ),
        Target(
            f"materialize peak memory @ {big} <= 1.25x that @ {stacks_gb[0]}",
            f"memory/{big}/tiffstore",
            f"memory/{stacks_gb[0]}/tiffstore",
            "ratio",
            at_most=1.25,
        ),
        Target(
            f"materialize peak memory <= 1000 MB @ {big}",
            f"memory/{big}/tiffstore",
            f"memory/{big}/tiffstore",
            "value",
            at_most=1000,
        ),
    ]


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "materialize", *sys.argv[1:]]))

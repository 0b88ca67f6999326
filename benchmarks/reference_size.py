"""Reference files: how big they are per TIFF file, and what writing them costs.

Group ``refsize``. tiffstore's default chunks for references are measured beside
``chunks="page"`` (one reference per page: the size a reference file cannot go far
below) and beside the peers that write references:

* **kB per TIFF file and ms per file** for two shapes: the benchmark dataset
  (``--size``, ``--shape``) and a light-sheet acquisition of 3 channels x 20 stacks
  of ``(50, 512, 512)`` uint16 (60 files, 1.57 GB), whose 50 planes are not a multiple
  of a power-of-two chunk. Tools: ``tiffstore.write_references(tiffstore.open(dir),
  "x.json")`` with no ``chunks`` (the default is what is measured), the same with
  ``chunks="page"``, VirtualiZarr + virtual-tiff (``ds.vz.to_kerchunk(path,
  format="json")``) and kerchunk (``tiff_to_zarr`` per file + ``MultiZarrToZarr``,
  ``json.dump``). A write time is the folder's open plus the writing, per file.
* **The blog post's acquisition**: 597 files (3 channels x 199 stacks) of
  ``(201, 1024, 768)`` uint16, 189 GB apparent, written as sparse files (a few kB of
  IFDs each on disk; the pixels are a hole that reads as zeros): the default against
  ``chunks="page"``, wall time, peak memory and kB per file.

Every tiffstore write runs in a fresh ``python`` process with a wall-clock limit
(:data:`TIMEOUT_S`) and an address-space limit (:data:`MEMORY_GUARD`, ``RLIMIT_AS``):
a writer that would take the machine down fails its row with ``MemoryError`` or a
time-out instead. Peak memory is that process's peak resident set (``VmHWM``, its
imports included: about 60 MB; see :func:`peak_rss_mb`). Write times are the best of
up to 3 runs within 10 s in that process. The peers run in this process, once each
(they are slow, and small in memory).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data import Context, Dataset, disk_bytes, stacks_for, warm
from .harness import Row, Target, Timing, error_text, failed_row, time_best, timed_row

ROOT = Path(__file__).resolve().parent.parent

#: Seconds a child process may take to open and write (all its runs together).
TIMEOUT_S = 120.0
#: The children's address-space limit: 8 GiB, or half the machine's memory if less.
MEMORY_GUARD = 8 * 2**30
#: Timed runs in a child stop once they have taken this long (one run at least).
BUDGET_S = 10.0

#: Light-sheet acquisition: channels, stacks, (Z, Y, X); and its --quick size.
LIGHTSHEET = (3, 20, (50, 512, 512))
LIGHTSHEET_QUICK = (3, 2, (50, 32, 32))
#: The blog post's acquisition, as sparse files; and its --quick size.
BLOG = (3, 199, (201, 1024, 768))
BLOG_QUICK = (3, 4, (201, 128, 96))

#: tiffstore's ways, by key: (tool name, chunks= of write_references).
WAYS: dict[str, tuple[str, str | None]] = {
    "default": ("tiffstore: write_references(open(dir)), default chunks", None),
    "page": ("tiffstore: write_references(open(dir), chunks='page')", "page"),
}
#: Few kB per file: the most tiffstore's default may take.
FEW_KB = 4.0
RESULT = "refsize-result: "


def _guard() -> int:
    try:
        import psutil

        return int(min(MEMORY_GUARD, psutil.virtual_memory().total // 2))
    except ImportError:
        return MEMORY_GUARD


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def _shapes(ctx: Context) -> list[tuple[str, str]]:
    """The shapes of the per-file rows: (key, label)."""
    c, s, shape = LIGHTSHEET_QUICK if ctx.quick else LIGHTSHEET
    n = ctx.channels * stacks_for(ctx.size_gb, ctx.channels, ctx.shape, ctx.dtype)
    return [
        ("bench", f"{n} files of {_shape_text(ctx.shape)} (benchmark dataset)"),
        ("lightsheet", f"{c * s} files of {_shape_text(shape)} (light-sheet, {c} ch)"),
    ]


def _blog_label(ctx: Context) -> str:
    c, s, shape = BLOG_QUICK if ctx.quick else BLOG
    gb = c * s * math.prod(shape) * np.dtype(ctx.dtype).itemsize / 1e9
    return f"{c * s} sparse files of {_shape_text(shape)}, {gb:.3g} GB"


def targets(ctx: Context) -> list[Target]:
    out: list[Target] = []
    for key, label in _shapes(ctx):
        out += [
            Target(
                f"refs, {label}: default kB per file <= 2x chunks='page'",
                f"refsize/{key}/size/default",
                f"refsize/{key}/size/page",
                "ratio",
                at_most=2,
            ),
            Target(
                f"refs, {label}: default <= {FEW_KB:g} kB per file",
                f"refsize/{key}/size/default",
                "",
                "value",
                at_most=FEW_KB,
            ),
        ]
    label = _blog_label(ctx)
    out += [
        Target(
            f"refs, {label}: default time <= 2x --chunks page",
            "refsize/blog/time/default",
            "refsize/blog/time/page",
            "ratio",
            at_most=2,
        ),
        Target(
            f"refs, {label}: default peak memory <= 2x --chunks page",
            "refsize/blog/memory/default",
            "refsize/blog/memory/page",
            "ratio",
            at_most=2,
        ),
    ]
    return out


# -- the child process -----------------------------------------------------------

CHILD = """\
import json, resource, sys
spec = json.loads(sys.argv[1])
limit = spec["memory_limit"]
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
if hard != resource.RLIM_INFINITY:
    limit = min(limit, hard)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.path[:0] = spec["sys_path"]
from benchmarks.reference_size import child
child(spec)
"""


def zarray_chunks(path: Path) -> list[int] | None:
    """The chunks of ``image`` in a reference file, from its first 4 MiB (no full parse)."""
    with open(path, "rb") as fh:
        head = fh.read(2**22).decode("utf-8", "replace")
    m = re.search(r'"image\\?/\.zarray"\s*:\s*', head)
    if not m:
        return None
    try:
        text, _ = json.JSONDecoder().raw_decode(head, m.end())
        chunks = json.loads(text)["chunks"]
    except (ValueError, KeyError, TypeError):
        return None
    return [int(n) for n in chunks]


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB (2**20 bytes).

    ``VmHWM`` from ``/proc/self/status`` where there is one: on Linux ``ru_maxrss`` keeps
    the high-water mark of the process before its ``exec``, which for a child started
    with ``vfork`` is the parent's, so it would count the benchmark's own arrays.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB; bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def child(spec: dict[str, Any]) -> None:
    """In a fresh process: open the folder and write its references; print one JSON line."""
    import tiffstore

    target = Path(spec["target"])
    kwargs = {} if spec["chunks"] is None else {"chunks": spec["chunks"]}
    result: dict[str, Any] = {"tiffstore": str(Path(tiffstore.__file__).parent)}

    def write() -> None:
        store = tiffstore.open(spec["folder"])
        tiffstore.write_references(store, str(target), overwrite=True, **kwargs)

    try:
        t = time_best(write, spec["repeats"], warmup=0, budget_s=spec["budget_s"])
        result["runs_s"] = list(t.runs)
        result["bytes"] = target.stat().st_size
        result["chunks"] = zarray_chunks(target)
    except Exception as exc:  # MemoryError included: the row says so
        result["error"] = error_text(exc)
    finally:
        result["maxrss_mb"] = peak_rss_mb()
        target.unlink(missing_ok=True)
    print(RESULT + json.dumps(result), flush=True)


def in_child(ctx: Context, ds: Dataset, chunks: str | None, repeats: int) -> dict[str, Any]:
    """Run :func:`child` on ``ds`` in a fresh process, limited in time and memory."""
    import tiffstore

    spec: dict[str, Any] = {
        "folder": str(ds.path),
        "target": str(ctx.workdir / f"refsize-{ds.path.name}-{chunks or 'default'}.json"),
        "chunks": chunks,
        "repeats": repeats,
        "budget_s": BUDGET_S,
        "memory_limit": _guard(),
        # The tiffstore this process measures, then the benchmarks package.
        "sys_path": [str(Path(tiffstore.__file__).resolve().parent.parent), str(ROOT)],
    }
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)],
            cwd=ctx.workdir,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        Path(spec["target"]).unlink(missing_ok=True)
        return {"error": f"TimeoutExpired: no result in {TIMEOUT_S:g} s (the process was killed)"}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            result: dict[str, Any] = json.loads(line[len(RESULT) :])
            result["process_s"] = wall
            if "error" in result:  # what it had reached when it failed
                result["error"] += (
                    f" (after {wall:.3g} s, peak RSS {result['maxrss_mb']:,.0f} MB; "
                    f"address space limited to {spec['memory_limit'] / 2**30:g} GiB)"
                )
            return result
    Path(spec["target"]).unlink(missing_ok=True)
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
    return {"error": f"ChildProcessError: exited with {how}: {last[:200]}"}


# -- rows ------------------------------------------------------------------------------


def _per_file(runs: list[float], n: int) -> Timing:
    per = sorted(r / n for r in runs)
    return Timing(per[0], per[len(per) // 2], tuple(per))


def _tiffstore_rows(
    ctx: Context, ds: Dataset, key: str, label: str, way: str, repeats: int
) -> list[Row]:
    """Size (kB/file) and write time (ms/file) of one tiffstore way, from a child."""
    tool, chunks = WAYS[way]
    size_key, write_key = f"refsize/{key}/size/{way}", f"refsize/{key}/write/{way}"
    size_case, write_case = f"reference file size: {label}", f"write references: {label}"
    limits = (
        (f"refsize/{key}/size/page", f"refsize/{key}/write/page") if way != "page" else (None,) * 2
    )
    n = len(ds.files)
    r = in_child(ctx, ds, chunks, repeats)
    if "error" in r:
        error = r["error"]
        size = Row(size_key, size_case, tool, "tiffstore", "kB/file", limit=limits[0], error=error)
        return [size, failed_row(size, write_key, write_case, "ms", limits[1])]
    chunk_text = f"chunks {tuple(r['chunks'])}" if r.get("chunks") else ""
    size = Row(
        size_key,
        size_case,
        tool,
        "tiffstore",
        "kB/file",
        r["bytes"] / n / 1e3,
        r["bytes"] / n / 1e3,
        limits[0],
        note=f"{r['bytes'] / 1e6:.3g} MB for {n} files; {chunk_text}",
        extra={"bytes": r["bytes"], "files": n, "chunks": r.get("chunks")},
    )
    write = timed_row(
        write_key,
        write_case,
        tool,
        "tiffstore",
        _per_file(r["runs_s"], n),
        unit="ms",
        limit=limits[1],
        note=f"{min(r['runs_s']):.3g} s for {n} files; peak RSS {r['maxrss_mb']:.0f} MB",
        maxrss_mb=r["maxrss_mb"],
        process_s=r["process_s"],
        tiffstore=r["tiffstore"],
    )
    return [size, write]


def _virtualizarr_json(ds: Dataset, target: Path) -> None:
    from .peers import VirtualiZarr

    combined, _ = VirtualiZarr().combine(ds)
    combined.to_dataset(name="image").vz.to_kerchunk(str(target), format="json")


def _kerchunk_json(ds: Dataset, target: Path) -> None:
    from .peers import Kerchunk

    refs = Kerchunk().references(ds)
    with open(target, "w") as fh:
        json.dump(refs, fh)


def _peer_rows(ctx: Context, ds: Dataset, key: str, label: str) -> list[Row]:
    """Size and write time of the peers that write references, in this process, once."""
    from .peers import Kerchunk, Peer, VirtualiZarr

    rows: list[Row] = []
    n = len(ds.files)
    peers: list[tuple[Peer, Callable[[Dataset, Path], None], str]] = [
        (VirtualiZarr(), _virtualizarr_json, "ds.vz.to_kerchunk(path, format='json')"),
        (Kerchunk(), _kerchunk_json, "json.dump(MultiZarrToZarr(...).translate())"),
    ]
    for peer, write, how in peers:
        size_key, write_key = f"refsize/{key}/size/{peer.key}", f"refsize/{key}/write/{peer.key}"
        size_case, write_case = f"reference file size: {label}", f"write references: {label}"
        target = ctx.workdir / f"refsize-{key}-{peer.key}.json"
        try:
            peer.prepare()
            t = time_best(lambda: write(ds, target), 1, warmup=0)  # noqa: B023
            nbytes = target.stat().st_size
            chunks = zarray_chunks(target)
        except Exception as exc:
            size = Row(size_key, size_case, peer.name, "peer", "kB/file", error=error_text(exc))
            rows += [size, failed_row(size, write_key, write_case, "ms", None)]
            continue
        finally:
            target.unlink(missing_ok=True)
        chunk_text = f"; chunks {tuple(chunks)}" if chunks else ""
        rows.append(
            Row(
                size_key,
                size_case,
                peer.name,
                "peer",
                "kB/file",
                nbytes / n / 1e3,
                nbytes / n / 1e3,
                note=f"{nbytes / 1e6:.3g} MB for {n} files{chunk_text}; {how}",
                extra={"bytes": nbytes, "files": n, "chunks": chunks},
            )
        )
        rows.append(
            timed_row(
                write_key,
                write_case,
                peer.name,
                "peer",
                _per_file(list(t.runs), n),
                unit="ms",
                note=f"{t.best:.3g} s for {n} files",
            )
        )
    return rows


def _blog_rows(ctx: Context, ds: Dataset, label: str, repeats: int) -> list[Row]:
    """Default against chunks='page' on the blog's acquisition: time, memory, size."""
    rows: list[Row] = []
    n = len(ds.files)
    on_disk = disk_bytes(ds.files)
    cases = {
        "time": (f"references for {label}: open + write", "s"),
        "memory": (f"references for {label}: peak memory (RSS)", "MB"),
        "size": (f"references for {label}: size", "kB/file"),
    }
    for way in ("page", "default"):
        tool = WAYS[way][0].replace("tiffstore: ", "tiffstore, fresh process: ")
        r = in_child(ctx, ds, WAYS[way][1], repeats)
        for what, (case, unit) in cases.items():
            key = f"refsize/blog/{what}/{way}"
            limit = f"refsize/blog/{what}/page" if way != "page" else None
            if "error" in r:
                error = r["error"]
                rows.append(Row(key, case, tool, "tiffstore", unit, limit=limit, error=error))
                continue
            chunk_text = f"chunks {tuple(r['chunks'])}" if r.get("chunks") else ""
            figure, note = {
                "time": (
                    min(r["runs_s"]),
                    f"{r['process_s']:.3g} s for the whole process; "
                    f"{on_disk / 1e6:.3g} MB of files on disk",
                ),
                "memory": (r["maxrss_mb"], f"address space limited to {_guard() / 2**30:g} GiB"),
                "size": (r["bytes"] / n / 1e3, f"{r['bytes'] / 1e6:.3g} MB; {chunk_text}"),
            }[what]
            rows.append(
                Row(key, case, tool, "tiffstore", unit, figure, figure, limit, note=note, extra=r)
            )
    return rows


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    repeats = max(1, min(ctx.repeats, 3))
    c, s, shape = LIGHTSHEET_QUICK if ctx.quick else LIGHTSHEET
    for key, label in _shapes(ctx):
        ds = ctx.dataset() if key == "bench" else ctx.acquisition("lightsheet", c, s, shape)
        warm(ds.files)
        ctx.log(f"  references of {label} ...")
        for way in ("page", "default"):
            rows += _tiffstore_rows(ctx, ds, key, label, way, repeats)
        rows += _peer_rows(ctx, ds, key, label)
        if key != "bench":
            ctx.drop(ds)
    c, s, shape = BLOG_QUICK if ctx.quick else BLOG
    label = _blog_label(ctx)
    ctx.log(f"  references of {label} ...")
    try:
        blog = ctx.sparse("blog", c, s, shape)
    except OSError as exc:
        error = error_text(exc)
        whats = {"time": "s", "memory": "MB", "size": "kB/file"}
        case = f"references for {label}"
        return rows + [
            Row(f"refsize/blog/{what}/{way}", case, WAYS[way][0], "tiffstore", unit, error=error)
            for what, unit in whats.items()
            for way in WAYS
        ]
    try:
        rows += _blog_rows(ctx, blog, label, repeats)
    finally:
        ctx.drop(blog)
    return rows

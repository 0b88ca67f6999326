"""GPU: bytes per second into device memory through tiffstore, the seed recipe and the copy limit.

Usage::

    python benchmarks/gpu.py                   # about 2 GB of uncompressed stacks
    python benchmarks/gpu.py --size 8          # more data (it must fit the page cache)
    python benchmarks/gpu.py --compressed      # zlib stacks too (decoded on the host)
    python benchmarks/gpu.py --quick           # a smoke run on tiny data (seconds)
    python benchmarks/gpu.py --json gpu.json   # the figures as JSON too

Every row reads the same page-cached files (each byte read once before the
measurements) into device memory, on one thread per core:

* ``h2d_limit``: CuPy copying pinned host buffers of one chunk's size into device
  arrays, once per chunk of the array, one CUDA stream per thread: what the
  host-to-device link allows for that buffer size, with no file read at all.
* ``h2d_pageable``: the same from pageable (ordinary) host memory, which is what
  ``cp.asarray`` of a NumPy chunk gets.
* ``host_read``: ``store.to_dask()`` into host memory only: the file reads alone.
* ``tiffstore_gpu``: ``store.to_dask(gpu=True)``: pinned staging, one copy per chunk
  (``tiffstore_gpu_kvikio``: the same read by KvikIO, when it is installed).
* ``tiffstore_zarr_gpu``: ``zarr.open_array(store)[...]`` with ``zarr.config.enable_gpu()``.
* ``tiffstore_from_zarr_gpu``: ``da.from_zarr(store)`` with ``enable_gpu()``.
* ``recipe``: the seed recipe, ``dask.delayed(tifffile.imread)`` + ``da.block``, then
  ``map_blocks(cp.asarray)``; ``tiffstore_asarray``: ``store.to_dask()`` then
  ``map_blocks(cp.asarray)`` (what the docs said before GPU reads).

Each figure is the best of ``--repeats`` runs; the table gives it as GB/s, as a
ratio to ``h2d_limit`` and as a ratio to ``recipe``. Targets (issue 16): for
uncompressed data, ``tiffstore_gpu`` at least 0.8 of ``h2d_limit`` and faster than
``recipe``. Exits with status 1 and a message saying why when there is no CUDA
device or no CuPy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make ``benchmarks`` importable from the repository root
    # (appended, so an installed or PYTHONPATH tiffstore is the one measured).
    sys.path.append(str(Path(__file__).resolve().parent.parent))


def gpu_or_exit() -> Any:
    """The ``cupy`` module, or exit with the reason there is no GPU to measure."""
    try:
        import cupy as cp
    except ImportError:
        sys.exit(
            "benchmarks/gpu.py: CuPy is not installed, so nothing can be measured on a GPU. "
            'Install it with: pip install "tiffstore[gpu]" (needs an NVIDIA GPU and driver).'
        )
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        sys.exit(f"benchmarks/gpu.py: no CUDA device to measure ({type(exc).__name__}: {exc}).")
    if count == 0:
        sys.exit("benchmarks/gpu.py: no CUDA device to measure (CuPy sees none).")
    return cp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=2.0, help="GB of stacks (default 2)")
    parser.add_argument("--shape", default="64,1024,1024", help="Z,Y,X of one file")
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compressed", action="store_true", help="also zlib-compressed stacks")
    parser.add_argument("--quick", action="store_true", help="tiny data, one run (a smoke test)")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--workdir", help="where to write the data (default: a temporary folder)")
    args = parser.parse_args(argv)
    cp = gpu_or_exit()

    from benchmarks.data import cores, stacks_for, warm, write_stacks

    shape = tuple(int(n) for n in args.shape.split(","))
    if args.quick:
        args.size, shape, args.repeats = 0.02, (8, 256, 256), 1
    device = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    info = {
        "gpu": device["name"].decode() if isinstance(device["name"], bytes) else device["name"],
        "gpu_memory_gb": round(device["totalGlobalMem"] / 1e9, 1),
        "cupy": cp.__version__,
        "cores": cores(),
        "kvikio": _kvikio_version(),
    }
    print(", ".join(f"{k}: {v}" for k, v in info.items()))
    results: dict[str, Any] = {"machine": info, "cases": {}}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        kinds = [None, "zlib"] if args.compressed else [None]
        for compression in kinds:
            stacks = stacks_for(args.size, args.channels, shape, "uint16")
            name = compression or "uncompressed"
            print(f"\nwriting {name} data: {args.channels} x {stacks} x {shape} uint16 ...")
            ds = write_stacks(Path(tmp) / name, args.channels, stacks, shape, "uint16", compression)
            warm(ds.files)
            rows = measure(cp, ds, args.repeats)
            results["cases"][name] = {"dataset": ds.describe(), "rows": rows}
            print_rows(f"{name}: {ds.describe()}", rows, targets=compression is None)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _kvikio_version() -> str | None:
    try:
        import kvikio
    except ImportError:
        return None
    return str(getattr(kvikio, "__version__", "installed"))


def measure(cp: Any, ds: Any, repeats: int) -> dict[str, dict[str, Any]]:
    """Every row's best time and GB/s on dataset ``ds``."""
    import dask.array as da
    import numpy as np
    import zarr

    import tiffstore
    from benchmarks.data import cores
    from benchmarks.peers import SeedRecipe

    store = tiffstore.open(ds.path, kvikio=False)
    ref = tiffstore.open(ds.path).to_dask()
    n_chunks = int(np.prod(store.manifest.chunk_grid))
    chunk_nbytes = store.manifest.chunk_nbytes
    nbytes = ds.nbytes
    threads = cores()
    meta = cp.empty((0,) * len(store.shape), store.dtype)

    def persist(arr: Any) -> Callable[[], Any]:
        def run() -> Any:
            kept = arr.persist(scheduler="threads", num_workers=threads)
            cp.cuda.Device().synchronize()
            return kept

        return run

    def check(arr: Any) -> None:
        """The first and last chunks equal the host read: a figure of wrong data is no figure."""
        for index in ((0,) * arr.ndim, tuple(n - 1 for n in arr.numblocks)):
            got = arr.blocks[index].compute(scheduler="sync")
            if not isinstance(got, cp.ndarray):
                raise AssertionError(f"chunk {index} is a {type(got).__name__}, not a CuPy array")
            region = tuple(
                slice(sum(c[:i]), sum(c[: i + 1])) for c, i in zip(arr.chunks, index, strict=True)
            )
            if not np.array_equal(cp.asnumpy(got), ref[region].compute()):
                raise AssertionError(f"chunk {index} differs from the host read")

    rows: dict[str, Callable[[], Any]] = {
        "h2d_limit": h2d_copies(cp, chunk_nbytes, n_chunks, threads, pinned=True),
        "h2d_pageable": h2d_copies(cp, chunk_nbytes, n_chunks, threads, pinned=False),
        "host_read": lambda: ref.persist(scheduler="threads", num_workers=threads),
    }
    on_gpu = store.to_dask(gpu=True)  # through pinned host memory (kvikio=False)
    check(on_gpu)
    rows["tiffstore_gpu"] = persist(on_gpu)
    if _kvikio_version() is not None:
        kvikio_store = tiffstore.open(ds.path, kvikio=True)
        with_kvikio = kvikio_store.to_dask(gpu=True, name="tiffstore-kvikio")
        check(with_kvikio)
        rows["tiffstore_gpu_kvikio"] = persist(with_kvikio)

    def zarr_gpu() -> Any:
        with zarr.config.enable_gpu():
            out = zarr.open_array(store, mode="r")[...]
        cp.cuda.Device().synchronize()
        return out

    def from_zarr_gpu() -> Any:
        with zarr.config.enable_gpu():
            return persist(da.from_zarr(store))()

    rows["tiffstore_zarr_gpu"] = zarr_gpu
    rows["tiffstore_from_zarr_gpu"] = from_zarr_gpu
    recipe = SeedRecipe().open(ds).array.map_blocks(cp.asarray, meta=meta)
    check(recipe)
    rows["recipe"] = persist(recipe)
    rows["tiffstore_asarray"] = persist(ref.map_blocks(cp.asarray, meta=meta))

    out: dict[str, dict[str, Any]] = {}
    for key, run in rows.items():
        best = float("inf")
        for _ in range(1 + repeats):  # the first run is a warm-up
            t0 = time.perf_counter()
            kept = run()
            dt = time.perf_counter() - t0
            del kept
            cp.get_default_memory_pool().free_all_blocks()
            best = min(best, dt)
        out[key] = {"seconds": best, "gb_per_s": nbytes / best / 1e9}
        print(f"  {key:<26} {nbytes / best / 1e9:8.2f} GB/s")
    limit, recipe_rate = out["h2d_limit"]["gb_per_s"], out["recipe"]["gb_per_s"]
    for row in out.values():
        row["of_h2d_limit"] = row["gb_per_s"] / limit
        row["vs_recipe"] = row["gb_per_s"] / recipe_rate
    return out


def h2d_copies(
    cp: Any, chunk_nbytes: int, n_chunks: int, threads: int, *, pinned: bool
) -> Callable[[], Any]:
    """Copy a host buffer of one chunk's size to a new device array ``n_chunks`` times."""
    import numpy as np

    local = threading.local()

    def buffers() -> tuple[Any, Any]:
        if not hasattr(local, "host"):
            host = cp.cuda.alloc_pinned_memory(chunk_nbytes) if pinned else bytearray(chunk_nbytes)
            local.host = np.frombuffer(host, np.uint8, chunk_nbytes)
            local.host[:] = 1
            local.stream = cp.cuda.Stream(non_blocking=False)
        return local.host, local.stream

    def copy(count: int) -> list[Any]:
        host, stream = buffers()
        kept = []
        for _ in range(count):
            dev = cp.empty(chunk_nbytes, np.uint8)
            dev.set(host, stream=stream)
            kept.append(dev)
        stream.synchronize()
        return kept

    counts = [n_chunks // threads + (i < n_chunks % threads) for i in range(threads)]
    pool = ThreadPoolExecutor(threads)

    def run() -> list[Any]:
        return list(pool.map(copy, counts))

    return run


def print_rows(title: str, rows: dict[str, dict[str, Any]], *, targets: bool) -> None:
    print(f"\n{title}")
    print(f"{'row':<26} {'GB/s':>8} {'of H2D limit':>13} {'vs recipe':>10}")
    for key, row in rows.items():
        print(
            f"{key:<26} {row['gb_per_s']:8.2f} {row['of_h2d_limit']:13.2f} {row['vs_recipe']:10.2f}"
        )
    if targets:
        got = rows["tiffstore_gpu"]
        ok_limit = got["of_h2d_limit"] >= 0.8
        ok_recipe = got["vs_recipe"] > 1.0
        print(
            f"target: tiffstore_gpu >= 0.8 of h2d_limit: {got['of_h2d_limit']:.2f} "
            f"{'met' if ok_limit else 'NOT met'}; faster than recipe: "
            f"{got['vs_recipe']:.2f}x {'met' if ok_recipe else 'NOT met'}"
        )


if __name__ == "__main__":
    sys.exit(main())

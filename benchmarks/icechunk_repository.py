"""Icechunk repositories: how fast tiffstore builds one, how fast it reads, how big it is.

* Build, per file: ``tiffstore.open(dir).to_icechunk(repo)`` (open, every header
  checked, references, commit) for the ``--many`` folders up to 10,000 files, beside
  VirtualiZarr + virtual-tiff (the ``VirtualTIFF`` parser and ``open_virtual_dataset``
  per file, xarray concat, ``vds.vz.to_icechunk`` and the commit) on a sample of
  :data:`PEER_FILES` files of the same kind. Target: at least 50x faster per file at
  10,000 files.
* Full read of the uncompressed dataset through the repository (icechunk's store,
  zarr, dask), beside the live ``TiffStore`` and the copy limit, measured here.
* Bytes of repository per TIFF file, for each folder built.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

import tiffstore

from . import cases
from .data import Context, Dataset, warm
from .harness import Row, Target, Timing, attempt, timed_row
from .limits import copy_limit
from .peers import VirtualiZarr

BUILD = "build an Icechunk repository (per file)"
SIZE = "Icechunk repository size (per TIFF file)"
FULL = "full read through an Icechunk repository"
FULL_LIMIT = "icechunk/full/copy_limit"
#: Files the peer builds a repository of (it takes milliseconds per file).
PEER_FILES = 200
#: Folders past this are left out: the build is measured at 1,000 and 10,000 files.
MAX_FILES = 10_000


def _sizes(ctx: Context) -> list[int]:
    return [n for n in ctx.many if n <= MAX_FILES] or [min(ctx.many)]


def targets(ctx: Context) -> list[Target]:
    n = max(_sizes(ctx))
    return [
        Target(
            f"Icechunk build for {n:,} files >= 50x faster per file than VirtualiZarr + "
            "virtual-tiff",
            f"icechunk/build/{n}/tiffstore",
            "icechunk/build/peer/virtualizarr",
            "speedup",
            at_least=50,
        )
    ]


def _container(path: Path) -> Any:
    import icechunk

    prefix = path.resolve().as_uri() + "/"
    return icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(path)))


def _reader(repo: Path) -> Any:
    """The repository's main branch as a zarr group, with its container authorized."""
    import icechunk
    import zarr

    storage = icechunk.local_filesystem_storage(str(repo))
    prefixes = icechunk.Repository.open(storage).config.virtual_chunk_containers or {}
    repository = icechunk.Repository.open(
        storage,
        authorize_virtual_chunk_access=icechunk.containers_credentials({p: None for p in prefixes}),
    )
    return zarr.open_group(repository.readonly_session(branch="main").store, mode="r")


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _per_file(key: str, tool: str, role: Any, seconds: list[float], n: int, note: str) -> Row:
    per = sorted(s / n for s in seconds)
    timing = Timing(per[0], per[len(per) // 2], tuple(per))
    return timed_row(key, BUILD, tool, role, timing, unit="us", note=note)


def _build(ctx: Context, ds: Dataset, repeats: int) -> tuple[list[Row], Path]:
    """tiffstore's build of ``ds``, timed per file, and the size of the last repository."""
    n = len(ds.files)
    key = f"icechunk/build/{n}/tiffstore"
    tool = "tiffstore: open(dir).to_icechunk(repo)"
    repo = ctx.workdir / f"icechunk-{n}"
    runs: list[float] = []

    def measure() -> Row:
        for _ in range(repeats):
            shutil.rmtree(repo, ignore_errors=True)
            t0 = time.perf_counter()
            tiffstore.open(ds.path).to_icechunk(str(repo))
            runs.append(time.perf_counter() - t0)
        group = _reader(repo)
        if not np.array_equal(group["image"][0, 0], _first_file(ds)):
            raise AssertionError("the repository reads wrong pixels for the first file")
        note = f"{n:,} files, best {min(runs):.2f} s"
        return _per_file(key, tool, "tiffstore", runs, n, note)

    rows = [attempt(key, BUILD, tool, "tiffstore", measure, unit="us")]
    size_key = f"icechunk/size/{n}/tiffstore"

    def size() -> Row:
        nbytes = _tree_bytes(repo)
        return Row(
            size_key,
            SIZE,
            "tiffstore icechunk (virtual references + coordinates + saved manifest)",
            "tiffstore",
            "kB/file",
            nbytes / n / 1e3,
            nbytes / n / 1e3,
            note=f"{nbytes / 1e6:.3g} MB for {n:,} files",
            extra={"bytes": nbytes, "files": n},
        )

    rows.append(attempt(size_key, SIZE, "tiffstore icechunk", "tiffstore", size, unit="kB/file"))
    return rows, repo


def _first_file(ds: Dataset) -> np.ndarray:
    import tifffile

    return np.asarray(tifffile.imread(ds.files[0]))


def _peer_build(ctx: Context) -> list[Row]:
    """VirtualiZarr + virtual-tiff + ``to_icechunk`` on a sample of files, per file."""
    ds = ctx.many_files(min(PEER_FILES, max(ctx.many)))
    n = len(ds.files)
    peer = VirtualiZarr()
    key = "icechunk/build/peer/virtualizarr"
    tool = f"{peer.name} + vz.to_icechunk ({n} files sampled)"
    repo = ctx.workdir / "icechunk-peer"

    def measure() -> Row:
        import icechunk

        shutil.rmtree(repo, ignore_errors=True)
        t0 = time.perf_counter()
        combined, _ = peer.combine(ds)
        config = icechunk.RepositoryConfig.default()
        config.set_virtual_chunk_container(_container(ds.path))
        repository = icechunk.Repository.create(
            icechunk.local_filesystem_storage(str(repo)), config
        )
        session = repository.writable_session("main")
        combined.to_dataset(name="image").vz.to_icechunk(session.store)
        session.commit("VirtualiZarr + virtual-tiff")
        seconds = time.perf_counter() - t0
        nbytes = _tree_bytes(repo)
        note = f"{n} files in {seconds:.2f} s; {nbytes / n / 1e3:.2f} kB of repository per file"
        return _per_file(key, tool, "peer", [seconds], n, note)

    return [attempt(key, BUILD, tool, "peer", measure, unit="us")]


def _full_reads(ctx: Context) -> list[Row]:
    """The uncompressed dataset read whole through a repository, the live store, and
    the copy limit, in this group (so the ratios need no other group)."""
    ds = ctx.dataset()
    warm(ds.files)
    repo = ctx.workdir / "icechunk-raw"
    shutil.rmtree(repo, ignore_errors=True)
    out = np.zeros(ds.array_shape, dtype=ds.dtype)
    rows = [copy_limit(ctx, ds, FULL_LIMIT, FULL)]
    rows.append(
        cases.full_read(
            ctx,
            ds,
            "icechunk/full/tiffstore",
            "live TiffStore: da.store(da.from_zarr(store), out)",
            "tiffstore",
            lambda: da.from_zarr(tiffstore.open(ds.path)),
            out,
            case=FULL,
            limit=FULL_LIMIT,
        )
    )

    def through_repository() -> da.Array:
        if not repo.exists():
            tiffstore.open(ds.path).to_icechunk(str(repo))
        return da.from_zarr(_reader(repo)["image"])

    rows.append(
        cases.full_read(
            ctx,
            ds,
            "icechunk/full/icechunk",
            "Icechunk repository: da.store(da.from_zarr(group['image']), out)",
            "tiffstore",
            through_repository,
            out,
            case=FULL,
            limit=FULL_LIMIT,
        )
    )
    return rows


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    repeats = max(1, min(ctx.repeats, 3))
    for n in _sizes(ctx):
        built, repo = _build(ctx, ctx.many_files(n), repeats)
        rows += built
        shutil.rmtree(repo, ignore_errors=True)
    rows += _peer_build(ctx)
    rows += _full_reads(ctx)
    return rows

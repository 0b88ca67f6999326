"""VirtualiZarr's ``open_virtual_dataset``: tiffstore's parser on a folder, per file,
beside virtual-tiff's parser on a sample of the same files, per file.

* tiffstore: ``open_virtual_dataset("file://dir/", parser=TiffStoreParser())`` on the
  ``--many`` folders up to 10,000 files: the whole folder, listed and read through
  the registry, named, stitched, one dataset with coordinates.
* virtual-tiff: ``open_virtual_dataset("file://dir/one.tif", parser=VirtualTIFF())``
  for each of :data:`PEER_FILES` files of the same kind: one dataset per file, not
  yet combined (combining them is more time again).

(Not ``benchmarks/virtualizarr.py``: run as a script, ``benchmarks/run.py`` puts this
folder first on the path, where it would shadow the ``virtualizarr`` package.)

Run with the others: ``python benchmarks/run.py --only virtualizarr --many 1000``
(an optional group: only with ``--only``), or on its own:
``python -m benchmarks.virtualizarr_parser --many 1000``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from .data import Context, warm
from .harness import (
    Row,
    Timing,
    attempt,
    finalize,
    print_table,
    time_best,
    time_each,
    timed_row,
)

CASE = "open_virtual_dataset (per file)"
PEER_KEY = "virtualizarr/open/peer/virtual_tiff"
#: Files virtual-tiff's parser opens, one at a time (it takes milliseconds per file).
PEER_FILES = 100
#: Folders past this are left out.
MAX_FILES = 10_000


def _sizes(ctx: Context) -> list[int]:
    return [n for n in ctx.many if n <= MAX_FILES] or [min(ctx.many)]


def _registry() -> Any:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore

    return ObjectStoreRegistry({"file:///": LocalStore("/")})


def _tiffstore(ctx: Context, n: int, repeats: int) -> Row:
    from virtualizarr import open_virtual_dataset

    from tiffstore.outputs.virtualizarr import TiffStoreParser

    ds = ctx.many_files(n)
    key = f"virtualizarr/open/{n}/tiffstore"
    tool = "open_virtual_dataset(dir, parser=TiffStoreParser())"

    def measure() -> Row:
        warm(ds.files)
        url = f"file://{ds.path.resolve()}/"
        t = time_best(
            lambda: open_virtual_dataset(url, registry=_registry(), parser=TiffStoreParser()),
            repeats,
        )
        per = Timing(t.best / n, t.median / n, tuple(r / n for r in t.runs))
        note = f"{n:,} files, best {t.best:.3f} s for the folder"
        return timed_row(key, CASE, tool, "tiffstore", per, unit="us", note=note)

    return attempt(key, CASE, tool, "tiffstore", measure, unit="us")


def _virtual_tiff(ctx: Context, repeats: int) -> Row:
    tool = f"open_virtual_dataset(file, parser=VirtualTIFF()), {PEER_FILES} files sampled"

    def measure() -> Row:
        from virtual_tiff import VirtualTIFF
        from virtualizarr import open_virtual_dataset

        ds = ctx.many_files(min(ctx.many))
        files = ds.files[:PEER_FILES]
        warm(files)
        registry, parser = _registry(), VirtualTIFF(ifd_layout="flat")
        t = time_each(
            lambda p: open_virtual_dataset(
                f"file://{p.resolve()}", registry=registry, parser=parser
            ),
            files,
            repeats,
        )
        note = f"{len(files)} files, one dataset each (not combined)"
        return timed_row(PEER_KEY, CASE, tool, "peer", t, unit="us", note=note)

    return attempt(PEER_KEY, CASE, tool, "peer", measure, unit="us")


def run(ctx: Context) -> list[Row]:
    repeats = max(1, min(ctx.repeats, 3))
    rows = [_tiffstore(ctx, n, repeats) for n in _sizes(ctx)]
    rows.append(_virtual_tiff(ctx, repeats))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--many", default="1000", help="comma-separated folder sizes")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    many = tuple(int(x) for x in args.many.split(",") if x)
    with tempfile.TemporaryDirectory(prefix="tiffstore-bench-") as tmp:
        ctx = Context(workdir=Path(tmp), many=many, repeats=args.repeats)
        rows = finalize(run(ctx))
        print_table(rows, [], "VirtualiZarr parsers, per file")


if __name__ == "__main__":
    main()

"""What ``checksum=True`` costs, on the uncompressed dataset, beside the same reads without.

- full read: ``da.store(store.to_dask(), out)`` and ``da.store(da.from_zarr(store), out)``,
  each with a store opened plainly and one opened with ``checksum=True`` (every read
  widened to whole blocks of 256 KiB and its CRC-32s checked);
- open: ``tiffstore.open(dir, checksum=True)``, which reads every byte once, in GB/s
  of the files beside the copy limit (every byte ``preadv``-ed, one thread per core)
  measured in the same group; the plain open's time is in the note.

zlib's CRC-32 runs at 2 to 3.5 GB/s per core on the benchmark machine, a third to a
half of what a core copies from the page cache, and it is most of what checksums cost:
the open, which only reads and checksums, reaches about a third of the copy limit, and
a full read about 0.6 of the read without checksums.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import dask.array as da
import numpy as np

import tiffstore
from tiffstore.sources.checksums import ChecksummedSource

from . import cases
from .data import Context, cores, warm
from .harness import Row, Target, attempt, time_best, timed_row
from .limits import copy_limit

READ = "checksum: full read into a preallocated array"
OPEN = "checksum: open with checksum=True (reads every byte)"
COPY = "checksum/copy_limit"

TARGETS = [
    Target(
        "checksum: to_dask full read >= 0.5 of the read without",
        "checksum/to_dask_checksum",
        "checksum/to_dask",
        "ratio",
        0.5,
    ),
    Target(
        "checksum: from_zarr full read >= 0.5 of the read without",
        "checksum/from_zarr_checksum",
        "checksum/from_zarr",
        "ratio",
        0.5,
    ),
    Target(
        "checksum: open >= 0.3 of the copy limit (a read of every byte)",
        "checksum/open",
        COPY,
        "ratio",
        0.3,
    ),
]


def run(ctx: Context) -> list[Row]:
    ds = ctx.dataset()
    path = ds.path
    warm(ds.files)
    out = np.zeros(ds.array_shape, dtype=ds.dtype)
    rows = [copy_limit(ctx, ds, key=COPY, case=READ)]
    ways: dict[str, Callable[[tiffstore.TiffStore], da.Array]] = {
        "to_dask": lambda store: store.to_dask(),
        "from_zarr": da.from_zarr,
    }
    for way, make in ways.items():
        for checksum in (False, True):
            key = f"checksum/{way}" + ("_checksum" if checksum else "")
            # Opened outside the timing: only the reads are measured.
            store = tiffstore.open(path, checksum=checksum)
            rows.append(
                cases.full_read(
                    ctx,
                    ds,
                    key,
                    f"tiffstore: {way}, checksum={checksum}",
                    "tiffstore",
                    functools.partial(make, store),
                    out,
                    case=READ,
                    limit=COPY,
                )
            )
    del out
    file_bytes = ds.file_bytes

    def measure() -> Row:
        plain = time_best(lambda: tiffstore.open(path), ctx.repeats)
        t0 = time.perf_counter()
        store = tiffstore.open(path, checksum=True)
        first = time.perf_counter() - t0
        source = store.manifest.source
        assert isinstance(source, ChecksummedSource)
        blocks = len(source.crcs)
        t = time_best(lambda: tiffstore.open(path, checksum=True), ctx.repeats, warmup=0)
        return timed_row(
            "checksum/open",
            OPEN,
            f"tiffstore.open(dir, checksum=True), {min(8, cores())} threads",
            "tiffstore",
            t,
            nbytes=file_bytes,
            limit=COPY,
            note=f"{t.best:.3g} s ({first:.3g} s the first time); plain open "
            f"{plain.best * 1e3:.3g} ms; {blocks:,} blocks",
        )

    rows.append(attempt("checksum/open", OPEN, "tiffstore", "tiffstore", measure, unit="GB/s"))
    return rows

"""The compressed variant: tiffstore and the peers beside the decode limit.

The decode limit is imagecodecs decoding the files' own strips from memory in
a tight loop, one thread per core, into one preallocated array: what decoding
alone costs, with no file reads, TIFF parsing or scheduling.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import dask.array as da
import numpy as np
import tifffile

import tiffstore

from . import cases
from .data import Context, Dataset, cores, warm
from .harness import Row, Target, time_best, timed_row
from .peers import Peer, SeedRecipe, TifffileSequence
from .tiffstore_read import to_dask

CASE = "compressed: full read into a preallocated array"
LIMIT = "compressed/decode_limit"

TARGETS = [
    Target(
        "compressed: full read >= 0.8 of the decode limit",
        "compressed/tiffstore",
        LIMIT,
        "ratio",
        0.8,
    )
]


def strips(ds: Dataset) -> tuple[list[bytes], list[int], object]:
    """Every strip's compressed bytes, their decoded sizes, and the decoder tifffile would use."""
    data: list[bytes] = []
    sizes: list[int] = []
    decode = None
    for path in ds.files:
        with tifffile.TiffFile(path) as tif:
            fh = tif.filehandle
            for page in tif.pages:
                assert isinstance(page, tifffile.TiffPage)
                if page.predictor != 1:
                    raise NotImplementedError("the decode limit does not undo predictors yet")
                decode = tifffile.TIFF.DECOMPRESSORS[page.compression]
                rows = page.rowsperstrip
                row_bytes = page.imagewidth * page.samplesperpixel * np.dtype(ds.dtype).itemsize
                for i, (offset, count) in enumerate(
                    zip(page.dataoffsets, page.databytecounts, strict=True)
                ):
                    fh.seek(offset)
                    data.append(fh.read(count))
                    n_rows = min(rows, page.imagelength - i * rows)
                    sizes.append(n_rows * row_bytes)
    return data, sizes, decode


def decode_limit(ctx: Context, ds: Dataset) -> Row:
    """imagecodecs decoding every strip from memory, one thread per core."""
    data, sizes, decode = strips(ds)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
    out = np.zeros(starts[-1], dtype=np.uint8)
    n_threads = cores()
    parts = [range(i, len(data), n_threads) for i in range(n_threads)]

    def work(part: range) -> None:
        for i in part:
            decode(data[i], out=out[starts[i] : starts[i + 1]])  # type: ignore[operator]

    with ThreadPoolExecutor(n_threads) as pool:
        t = time_best(lambda: list(pool.map(work, parts)), ctx.repeats)
    ref = tifffile.imread(ds.files[-1])
    if not np.array_equal(out[starts[-1] - ref.nbytes :].view(ref.dtype), ref.reshape(-1)):
        raise AssertionError("decode limit decoded wrong pixels")
    comp = sum(len(d) for d in data)
    return timed_row(
        LIMIT,
        CASE,
        f"decode limit: imagecodecs, {n_threads} threads, from memory",
        "limit",
        t,
        nbytes=ds.nbytes,
        note=f"{len(data):,} strips, ratio {ds.nbytes / comp:.2f}",
    )


def _peer_array(peer: Peer, ds: Dataset) -> da.Array:
    return peer.open(ds).array


def run(ctx: Context) -> list[Row]:
    ds = ctx.dataset("compressed")
    out = np.zeros(ds.array_shape, dtype=ds.dtype)
    warm(ds.files)
    rows = [
        decode_limit(ctx, ds),
        cases.full_read(
            ctx,
            ds,
            "compressed/tiffstore",
            "tiffstore: da.store(da.from_zarr(store), out)",
            "tiffstore",
            lambda: da.from_zarr(tiffstore.open(ds.path)),
            out,
            case=CASE,
            limit=LIMIT,
        ),
        cases.full_read(
            ctx,
            ds,
            "compressed/tiffstore_to_dask",
            "tiffstore: da.store(store.to_dask(), out)",
            "tiffstore",
            lambda: to_dask(tiffstore.open(ds.path)),
            out,
            case=CASE,
            limit=LIMIT,
        ),
    ]
    for peer in (SeedRecipe(), TifffileSequence()):
        warm(ds.files)
        rows.append(
            cases.full_read(
                ctx,
                ds,
                f"compressed/{peer.key}",
                peer.name,
                "peer",
                functools.partial(_peer_array, peer, ds),
                out,
                case=CASE,
                limit=LIMIT,
            )
        )
    return rows

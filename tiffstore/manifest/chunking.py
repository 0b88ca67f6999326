"""Chunk shapes: what ``chunks=`` asks for, and why the default is what it is.

A chunk request (``None``, ``"page"``, ``"file"``, ``"native"``, an int of pages, or
a shape) becomes a chunk shape over every dim here; :func:`rechunk` gives the same
virtual array with other chunks. No I/O.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from tiffstore.errors import OptionError
from tiffstore.manifest.model import Manifest
from tiffstore.names.axes import Axis
from tiffstore.tiff.layout import FileLayout

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "SMALL_FILE_RATIO",
    "ChunkSpec",
    "balanced_run",
    "checked_chunks",
    "describe_chunks",
    "even_page_runs",
    "rechunk",
    "resolve_chunks",
]

#: Default chunks group whole pages up to about this many bytes: big enough that
#: a 189 GB acquisition is a graph of thousands of tasks, small enough that a
#: worker holds a few of them without strain.
DEFAULT_CHUNK_BYTES = 16 * 2**20

#: Files at most this many times smaller than the chunk target are grouped whole
#: across the name axes by default.
SMALL_FILE_RATIO = 4

ChunkSpec = str | int | Sequence[int | None] | None


def resolve_chunks(
    spec: ChunkSpec,
    name_axes: tuple[Axis, ...],
    layout: FileLayout,
    target_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[int, ...]:
    """Turn a chunk request into a chunk shape over all dims.

    ``None`` groups whole pages up to ``target_bytes``, in equal runs where a divisor
    of the page count lies within a factor of 2 of that (:func:`balanced_run`; 25 +
    25 of 50 pages, not 32 + 18), continuing across files
    along a spatial name axis next to the files' dims, such as 2-D planes named by
    ``z``); ``"page"`` is one page; ``"file"`` one file; ``"native"`` one of the
    files' own strips or tiles (one page where pages are stored uncompressed and
    whole); an int is that many pages; a tuple gives every dim (``None`` or -1 for
    the whole dim).
    """
    name_shape = tuple(a.size for a in name_axes)
    shape = name_shape + layout.shape
    nn, nl = len(name_shape), len(layout.leading_shape)
    if isinstance(spec, (tuple, list)):
        if len(spec) != len(shape):
            raise OptionError(
                f"chunks={tuple(spec)} has {len(spec)} entries; the array has {len(shape)} dims {shape}."
            )
        out = []
        for c, n in zip(spec, shape, strict=True):
            if c is None or c == -1:
                out.append(max(n, 1))
            elif isinstance(c, (int, np.integer)) and c > 0:
                out.append(min(int(c), max(n, 1)))
            else:
                raise OptionError(
                    f"chunks={tuple(spec)}: each entry must be a positive int, -1 or None."
                )
        return tuple(out)
    if spec == "file":
        return (1,) * nn + tuple(max(n, 1) for n in layout.shape)
    if spec == "native":
        # Uncompressed whole pages are read as byte ranges: a page is their natural unit.
        page = layout.page_shape if layout.raw_pages else layout.native_page_chunks()
        return (1,) * (nn + nl) + tuple(max(n, 1) for n in page)
    if spec == "page":
        pages = 1
    elif spec is None or spec == "auto":
        pages = max(1, target_bytes // max(layout.page_nbytes, 1))
    elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and spec > 0:
        pages = int(spec)
    else:
        raise OptionError(
            f"chunks={spec!r} is not understood: use None, 'page', 'file', 'native', an int "
            "(pages per chunk) or a tuple with one entry per dim."
        )
    lead: list[int] = []
    budget = pages
    for k, n in enumerate(reversed(layout.leading_shape)):
        take = min(n, budget)
        if k == 0 and (spec is None or spec == "auto") and take < n:
            # Balanced: equal runs (25 + 25 of 50 pages, not 32 + 18) where a divisor
            # of the page count lies within a factor of 2 of the target.
            take = balanced_run(n, take)
        lead.insert(0, max(take, 1))
        budget = budget // n if take == n else 1
    name_chunks = [1] * nn
    file_nbytes = layout.page_nbytes * layout.n_pages
    if spec is None or spec == "auto":
        # Files far smaller than a chunk (thumbnails, 2-D planes, small stacks):
        # group whole files along the name axes, innermost first, up to the target,
        # so 10,000 tiny files are not 10,000 tiny tasks.
        if file_nbytes * SMALL_FILE_RATIO <= target_bytes:
            budget = max(1, target_bytes // max(file_nbytes, 1))
            for k in range(nn - 1, -1, -1):
                take = min(budget, name_shape[k])
                name_chunks[k] = max(take, 1)
                if take < name_shape[k]:
                    break
                budget //= max(name_shape[k], 1)
    elif spec != "page" and nl == 0 and nn and name_axes[-1].kind == "space":
        # 2-D planes named by z (or another spatial axis just before the file dims):
        # continue grouping across files along that axis.
        name_chunks[-1] = max(1, min(budget, name_shape[-1]))
    return tuple(name_chunks) + tuple(lead) + tuple(layout.page_shape)


def even_page_runs(layout: FileLayout, target_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[int, ...]:
    """Chunks over a file's leading dims: runs of whole pages that divide each dim evenly.

    Innermost first, each dim takes its largest divisor that keeps the run within
    ``target_bytes`` (at least one page); an outer dim grows only once the inner
    ones are whole. No run is cut short at a file's end, so every chunk is the
    same number of back-to-back pages: 50 pages of 512 KiB give runs of 25, and the
    201 pages of a (201, 1024, 768) uint16 stack, divisible only by 3 and 67, runs
    of 3.

    Examples
    --------
    >>> lay = FileLayout((50, 512, 512), "<u2", ("z", "y", "x"), 2, "contiguous", data_offset=8)
    >>> even_page_runs(lay)
    (25,)
    """
    budget = max(1, target_bytes // max(layout.page_nbytes, 1))
    lead: list[int] = []
    for n in reversed(layout.leading_shape):
        take = _largest_divisor(max(n, 1), budget)
        lead.insert(0, take)
        budget = budget // n if take == n else 1
    return tuple(lead)


def balanced_run(n: int, target: int) -> int:
    """Pages per chunk along a dim of ``n`` pages, near ``target``: the divisor of ``n``
    nearest ``target`` (by ratio) within a factor of 2, so that every run is the same
    length; else ``target`` itself (the last run shorter).

    Examples
    --------
    >>> balanced_run(50, 32), balanced_run(64, 32), balanced_run(201, 10)
    (25, 32, 10)
    """
    if target >= n or target < 1:
        return min(max(target, 1), n)
    near = [d for d in _divisors(n) if target / 2 <= d <= target * 2]
    if not near:
        return target
    return min(near, key=lambda d: (abs(math.log(d / target)), d))


def _divisors(n: int) -> list[int]:
    out: set[int] = set()
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            out.update((d, n // d))
    return sorted(out)


def _largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is at most ``at_most`` (1 at least)."""
    return max(d for d in _divisors(n) if d <= max(at_most, 1))


def describe_chunks(m: Manifest) -> str:
    """Why the manifest's chunks are what they are, in a sentence for ``inspect``."""
    nn = m.n_name_dims
    files = math.prod(m.chunks[:nn])
    pages = math.prod(m.chunks[nn : nn + len(m.layout.leading_shape)])
    size = m.chunk_nbytes
    if files > 1:
        return (
            f"{files} whole files per chunk: each file holds only "
            f"{m.layout.page_nbytes * m.layout.n_pages:,} bytes, so chunks group files "
            f"along {', '.join(d for d, c in zip(m.dims[:nn], m.chunks[:nn], strict=True) if c > 1)} "
            f"up to about {DEFAULT_CHUNK_BYTES // 2**20} MiB (here {size:,} bytes a chunk)"
        )
    return f"{pages} page{'s' if pages != 1 else ''} of one file per chunk ({size:,} bytes)"


def checked_chunks(
    chunks: tuple[int, ...], stitched: tuple[tuple[int, int], ...], layout: FileLayout
) -> tuple[int, ...]:
    """Chunks must not straddle stitched tiles: along a tiled dim they divide the tile."""
    nv = len(chunks) - len(layout.shape)
    for _, d in stitched:
        if layout.shape[d] % chunks[nv + d]:
            raise OptionError(
                f"chunks={chunks}: along the stitched {layout.dims[d]} dim a chunk must divide "
                f"the tile size {layout.shape[d]}."
            )
    return chunks


def rechunk(m: Manifest, chunks: ChunkSpec) -> Manifest:
    """The same virtual array with other chunks (see :func:`resolve_chunks`).

    Examples
    --------
    >>> pages = rechunk(store.manifest, "page")  # doctest: +SKIP
    """
    shape = resolve_chunks(chunks, m.array_axes, m.layout)
    return dataclasses.replace(m, chunks=checked_chunks(shape, m.stitched, m.layout))

"""Building a manifest: the policy that turns listed files into one virtual array.

Names become axes (:mod:`tiffstore.naming`), headers become layouts
(:mod:`tiffstore.headers`), and the choices a user can make land here: the chunk
shape, stitching tiles, the fill value, renaming axes that collide.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from .axes import Axis, Coordinate
from .errors import NamingError, OptionError
from .headers import check_plausible, check_same_array, check_truncated, scan_headers
from .layout import FileLayout
from .manifest import Manifest, columnize
from .naming import NameGrid, understand_names
from .sources import FileSource, SourceFile

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ChunkSpec",
    "build_manifest",
    "describe_chunks",
    "rechunk",
    "resolve_chunks",
]

logger = logging.getLogger(__name__)

#: Default chunks group whole pages up to about this many bytes: big enough that
#: a 189 GB acquisition is a graph of thousands of tasks, small enough that a
#: worker holds a few of them without strain.
DEFAULT_CHUNK_BYTES = 16 * 2**20

#: Files at most this many times smaller than the chunk target are grouped whole
#: across the name axes by default.
SMALL_FILE_RATIO = 4

ChunkSpec = str | int | Sequence[int | None] | None


def _rename_collisions(name_axes: tuple[Axis, ...], file_dims: tuple[str, ...]) -> tuple[Axis, ...]:
    """Rename name axes whose names the files' own dims already use."""
    taken = set(file_dims)
    out = []
    for a in name_axes:
        name = a.name
        if name in taken:
            base = f"tile_{name}" if a.kind == "space" else f"{name}_file"
            name, n = base, 2
            while name in taken:
                name, n = f"{base}{n}", n + 1
        taken.add(name)
        out.append(Axis(name, a.kind, a.values, a.label, a.units) if name != a.name else a)
    return tuple(out)


def resolve_chunks(
    spec: ChunkSpec,
    name_axes: tuple[Axis, ...],
    layout: FileLayout,
    target_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[int, ...]:
    """Turn a chunk request into a chunk shape over all dims.

    ``None`` groups whole pages up to ``target_bytes`` (continuing across files
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
    for n in reversed(layout.leading_shape):
        take = min(n, budget)
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


def _stitch_plan(
    tiles: str, grid_axes: tuple[Axis, ...], layout: FileLayout
) -> tuple[tuple[int, int], ...]:
    """Which name axes ``tiles="stitch"`` folds into which file dims, checked to tile.

    A name axis is a tile axis when its name (before any renaming) is ``x``, ``y``
    or ``z`` and the files have that dim. Its values must be tile indices (steps of
    1) or pixel offsets that step by exactly the files' size along the dim;
    anything else means the tiles overlap or leave gaps and need registration.
    """
    if tiles == "keep":
        return ()
    if tiles != "stitch":
        raise OptionError(f"tiles={tiles!r}: use 'keep' (tile axes stay axes) or 'stitch'.")
    plan: list[tuple[int, int]] = []
    for k, axis in enumerate(grid_axes):
        name = axis.name.lower()
        if name not in ("x", "y", "z") or name not in layout.dims:
            continue
        d = layout.dims.index(name)
        size = layout.shape[d]
        values = axis.values
        if not all(isinstance(v, int) for v in values):
            raise NamingError(
                f"tiles='stitch': the {axis.name} tile values {list(values)[:5]} are not "
                "numbers, so the tiles cannot be placed. Open with tiles='keep'."
            )
        steps = {int(b) - int(a) for a, b in itertools.pairwise(values)}
        if steps and steps != {1} and steps != {size}:
            raise NamingError(
                f"tiles='stitch': the {axis.name} tile positions {list(values)[:6]} step by "
                f"{sorted(steps)}, but each file is {size} pixels along {name}: the tiles "
                "overlap or leave gaps and need registration, which tiffstore does not do. "
                "Open with tiles='keep' to get each tile on its own axis."
            )
        plan.append((k, d))
    if not plan:
        logger.warning(
            "tiles='stitch': no x/y/z field varies in the names, so there is nothing to stitch"
        )
    return tuple(plan)


def _checked_chunks(
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


def _checked_fill_value(fill_value: int | float | None, dtype: np.dtype) -> int | float:
    if fill_value is None:
        fill_value = 0
    if dtype.kind == "b" and fill_value in (0, 1):
        return bool(fill_value)  # bilevel images: Zarr wants true or false
    if not np.can_cast(np.min_scalar_type(fill_value), dtype, casting="same_kind"):
        raise OptionError(f"fill_value={fill_value!r} does not fit the files' dtype {dtype}.")
    return fill_value


def _mtimes(files: Sequence[SourceFile]) -> np.ndarray | None:
    """Each file's listed modification time (ns; -1 unknown), or ``None`` if none is known."""
    if all(f.mtime_ns is None for f in files):
        return None
    return np.array([-1 if f.mtime_ns is None else f.mtime_ns for f in files], np.int64)


def _versions(files: Sequence[SourceFile]) -> tuple[str, ...]:
    """Each file's listed version (``""`` unknown), or ``()`` if none is known."""
    if all(f.version is None for f in files):
        return ()
    return tuple(f.version or "" for f in files)


def build_manifest(
    source: FileSource,
    files: Sequence[SourceFile],
    *,
    pattern: str | None = None,
    chunks: ChunkSpec = None,
    fill_value: int | float | None = None,
    validate: bool = False,
    tiles: str = "keep",
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Describe the virtual array that a list of TIFF files forms.

    Parameters
    ----------
    source, files
        The acquisition's reader and files, from :func:`tiffstore.sources.resolve_source`.
    pattern
        Template or regex for the names (see :func:`tiffstore.naming.understand_names`).
    chunks
        Chunk request (see :func:`resolve_chunks`).
    fill_value
        Value for grid cells with no file (default 0).
    tiles
        ``"keep"``: tile axes from the names (``x``, ``y``, ``z`` fields) stay axes of
        their own (tiles usually overlap and need registration). ``"stitch"``: place a
        non-overlapping grid of tiles side by side along the files' own dims.
    validate
        Parse every file's header now instead of trusting same-size files whose
        header bytes match a parsed one, and check that each file holds all the
        pixel data its header points to.
    workers
        Threads for header parsing.
    progress
        Called with the number of files whose header has been read or checked so far.
    """
    names = [f.name for f in files]
    grid: NameGrid = understand_names(names, pattern)
    scan = scan_headers(source, files, validate, workers, progress)
    check_same_array(source, files, scan.layouts)
    check_plausible(source, files, scan.layouts)
    geometries, file_layout, tables = columnize(scan.layouts)
    layout = geometries[0]
    stitched = _stitch_plan(tiles, grid.axes, layout)
    name_axes = _rename_collisions(grid.axes, layout.dims)
    renamed = {a.name: b.name for a, b in zip(grid.axes, name_axes, strict=True)}
    coords = tuple(
        Coordinate(
            c.name if c.name not in set(layout.dims) | set(renamed.values()) else f"{c.name}_coord",
            tuple(renamed[d] for d in c.dims),
            c.values,
            c.units,
        )
        for c in grid.coords
    )
    folded = {k for k, _ in stitched}
    array_axes = tuple(a for k, a in enumerate(name_axes) if k not in folded)
    manifest = Manifest(
        source=source,
        files=tuple(names),
        file_sizes=np.array([f.size for f in files], np.int64),
        file_index=grid.file_index(),
        file_layout=file_layout,
        layouts=geometries,
        tables=tables,
        signatures=tuple(scan.signatures),
        file_signature=scan.file_signature,
        verified=scan.verified,
        name_axes=name_axes,
        file_dims=layout.dims,
        chunks=_checked_chunks(resolve_chunks(chunks, array_axes, layout), stitched, layout),
        fill_value=_checked_fill_value(fill_value, np.dtype(layout.dtype)),
        coords=coords,
        template=grid.template,
        stitched=stitched,
        file_mtimes=_mtimes(files),
        file_versions=_versions(files),
    )
    if validate:
        check_truncated(manifest)
    logger.info(
        "%d files -> array %s %s of dims %s, chunks %s",
        len(files),
        manifest.shape,
        manifest.dtype,
        manifest.dims,
        manifest.chunks,
    )
    return manifest


def rechunk(m: Manifest, chunks: ChunkSpec) -> Manifest:
    """The same virtual array with other chunks (see :func:`resolve_chunks`).

    Examples
    --------
    >>> pages = rechunk(store.manifest, "page")  # doctest: +SKIP
    """
    shape = resolve_chunks(chunks, m.array_axes, m.layout)
    return dataclasses.replace(m, chunks=_checked_chunks(shape, m.stitched, m.layout))

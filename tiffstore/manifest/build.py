"""Building a manifest: the policy that turns listed files and their names into one array.

The names arrive understood (:func:`tiffstore.names.grid.understand_names` made the
:class:`~tiffstore.names.grid.NameGrid`); here the headers are read
(:mod:`tiffstore.manifest.headers`) and the choices a user can make land: the chunk
shape, stitching tiles, the fill value, the pixel size, renaming axes that collide.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tiffstore.errors import NamingError, OptionError
from tiffstore.manifest.chunking import ChunkSpec, checked_chunks, resolve_chunks
from tiffstore.manifest.headers import (
    check_plausible,
    check_same_array,
    scan_headers,
)
from tiffstore.manifest.incomplete import split_incomplete
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.tables import columnize
from tiffstore.names.axes import Axis, Coordinate
from tiffstore.names.grid import NameGrid
from tiffstore.sources.base import FileSource, SourceFile
from tiffstore.sources.files import ListedFiles
from tiffstore.tiff.layout import FileLayout
from tiffstore.tiff.scale import VoxelSize, unit_name

__all__ = [
    "ScaleSpec",
    "build_manifest",
    "build_with_incomplete",
    "checked_fill_value",
    "with_fill_value",
    "with_scale",
]

logger = logging.getLogger(__name__)

#: ``scale=`` values: a size per dim (in the files' unit, else micrometres), or
#: ``(size, unit)``.
ScaleSpec = Mapping[str, float | tuple[float, str]]


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


def checked_fill_value(fill_value: int | float | None, dtype: np.dtype) -> int | float:
    if fill_value is None:
        fill_value = 0
    if dtype.kind == "b" and fill_value in (0, 1):
        return bool(fill_value)  # bilevel images: Zarr wants true or false
    if not _fits(fill_value, dtype):
        raise OptionError(f"fill_value={fill_value!r} does not fit the files' dtype {dtype}.")
    return fill_value


def _fits(value: int | float, dtype: np.dtype) -> bool:
    """Whether ``value`` is a value of ``dtype``: of its kind, and in its range."""
    if dtype.kind in "iu":
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            return False
        info = np.iinfo(dtype)
        return int(info.min) <= int(value) <= int(info.max)
    if dtype.kind == "f":
        if not isinstance(value, (int, float, np.integer, np.floating)):
            return False
        return not np.isfinite(value) or abs(float(value)) <= float(np.finfo(dtype).max)
    return bool(np.can_cast(np.min_scalar_type(value), dtype, casting="same_kind"))


def _versions(files: ListedFiles) -> tuple[str, ...]:
    """Each file's listed version (``""`` unknown), or ``()`` if none is known."""
    if files.versions is None:
        return ()
    return tuple(v or "" for v in files.versions)


def build_manifest(
    source: FileSource,
    files: Sequence[SourceFile],
    grid: NameGrid,
    *,
    chunks: ChunkSpec = None,
    fill_value: int | float | None = None,
    validate: bool = False,
    tiles: str = "keep",
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Describe the virtual array that a list of TIFF files forms.

    Files that look still being written are left out (their cells read as the fill
    value); :func:`build_with_incomplete` also says which and why.

    Parameters
    ----------
    source, files
        The acquisition's reader and files, from
        :func:`tiffstore.sources.listing.resolve_source`.
    grid
        What the files' names say (:func:`tiffstore.names.grid.understand_names`), one
        position per file of ``files`` (see :meth:`~tiffstore.names.grid.NameGrid.placed`).
    chunks
        Chunk request (see :func:`tiffstore.manifest.chunking.resolve_chunks`).
    fill_value
        Value for grid cells with no file (default 0).
    tiles
        ``"keep"``: tile axes from the names (``x``, ``y``, ``z`` fields) stay axes of
        their own (tiles usually overlap and need registration). ``"stitch"``: place a
        non-overlapping grid of tiles side by side along the files' own dims.
    validate
        Parse every file's header now instead of trusting same-size files whose
        header bytes match a parsed one, and check that each file holds all the
        pixel data its header points to: a file that looks still being written
        raises :class:`~tiffstore.errors.TiffReadError` instead of being left out.
    workers
        Threads for header parsing.
    progress
        Called with the number of files whose header has been read or checked so far.
    """
    manifest, _ = build_with_incomplete(
        source,
        files,
        grid,
        chunks=chunks,
        fill_value=fill_value,
        validate=validate,
        tiles=tiles,
        workers=workers,
        progress=progress,
    )
    return manifest


def build_with_incomplete(
    source: FileSource,
    files: Sequence[SourceFile],
    grid: NameGrid,
    *,
    chunks: ChunkSpec = None,
    fill_value: int | float | None = None,
    validate: bool = False,
    tiles: str = "keep",
    workers: int = 16,
    known: Mapping[str, FileLayout] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Manifest, dict[str, str]]:
    """:func:`build_manifest`, and the files left out as still being written.

    Returns ``(manifest, incomplete)``: ``incomplete`` maps each such file's name to
    why it looks still being written (see
    :func:`tiffstore.manifest.incomplete.split_incomplete`). The grid keeps their
    cells (the names decide the array's shape), which read as the fill value; they
    are not among ``manifest.files``, and no header of theirs decides the array's
    shape or dtype. ``known`` maps names to layouts of headers read before (a
    refresh), which are taken as they are. The other parameters are
    :func:`build_manifest`'s.
    """
    files = ListedFiles.of(files)
    names = files.names
    if len(grid.positions) != len(names) or any(p is None for p in grid.positions):
        raise ValueError("build_manifest: the grid must place every file given, in order")
    scan = scan_headers(source, files, validate, workers, progress, known)
    why = split_incomplete(source, files, scan, validate=validate)
    incomplete = {names[i]: w for i, w in why.items()}
    if why:
        keep = [i for i in range(len(files)) if i not in why]
        files = files.take(keep)
        names = files.names
        scan = scan.subset(keep)
        grid = dataclasses.replace(grid, positions=tuple(grid.positions[i] for i in keep))
    full = [lay for lay in scan.layouts if lay is not None]
    assert len(full) == len(files)
    check_same_array(source, files, full)
    check_plausible(source, files, full)
    geometries, file_layout, tables = columnize(full)
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
        files=names,
        file_sizes=files.sizes,
        file_index=grid.file_index(),
        file_layout=file_layout,
        layouts=geometries,
        tables=tables,
        signatures=tuple(scan.signatures),
        file_signature=scan.file_signature,
        verified=scan.verified,
        name_axes=name_axes,
        file_dims=layout.dims,
        chunks=checked_chunks(resolve_chunks(chunks, array_axes, layout), stitched, layout),
        fill_value=checked_fill_value(fill_value, np.dtype(layout.dtype)),
        coords=coords,
        template=grid.template,
        stitched=stitched,
        file_mtimes=files.mtimes_or_unknown(),
        file_versions=_versions(files),
    )
    logger.info(
        "%d files -> array %s %s of dims %s, chunks %s",
        len(files),
        manifest.shape,
        manifest.dtype,
        manifest.dims,
        manifest.chunks,
    )
    return manifest, incomplete


def with_scale(manifest: Manifest, scale: ScaleSpec) -> Manifest:
    """The manifest with its voxel size along ``z``/``y``/``x`` set from ``scale``."""
    known = manifest.layout.scale.as_dict() if manifest.layout.scale else {}
    sizes = dict(known)
    for dim, value in scale.items():
        if dim not in ("z", "y", "x") or dim not in manifest.file_dims:
            raise OptionError(
                f"scale={dict(scale)!r}: {dim!r} is not one of the files' own dims "
                f"{manifest.file_dims} among z, y, x."
            )
        size, unit = value if isinstance(value, tuple) else (value, None)
        unit = unit_name(unit) or unit or known.get(dim, (0.0, "micrometer"))[1]
        if not float(size) > 0:
            raise OptionError(f"scale={dict(scale)!r}: the size along {dim} must be positive.")
        sizes[dim] = (float(size), unit)
    voxel = VoxelSize(**sizes)
    layouts = tuple(dataclasses.replace(lay, scale=voxel) for lay in manifest.layouts)
    return dataclasses.replace(manifest, layouts=layouts)


def with_fill_value(manifest: Manifest, fill_value: int | float) -> Manifest:
    """The manifest with another fill value for its cells with no file.

    Raises
    ------
    OptionError
        When ``fill_value`` does not fit the files' dtype.
    """
    return dataclasses.replace(manifest, fill_value=checked_fill_value(fill_value, manifest.dtype))

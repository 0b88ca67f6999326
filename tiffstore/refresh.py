"""``store.refresh()``: the store over an acquisition as it is now, grown.

A store remembers how it was opened (:class:`~tiffstore.opening.OpenedFrom`: the source
as given and the options). A refresh lists the source again (a listing is what says
what is new) and then does work in proportion to what is new, not to the acquisition::

    list_files      the source listed again, in the order listed (only new names are
                    sorted: the old manifest's files are in name order already)
    what is new     files the old manifest does not hold (and those that were still
                    being written); a file of the old manifest removed, or listed with
                    another size, time or version, is refused (GrowthError)
    names           the new names read with the old template, extending the old axes
                    at their ends; where they do not simply extend them (a new axis, a
                    stray file, a value in the middle), the naming stage reads every
                    name again, as an open does
    read_headers    headers of the new files only (a few old files ride along, read
                    before, as siblings to compare sizes and page counts with)
    merge           the old manifest and the new files' part, the new files put in
                    between the old ones by name
    grow            the result checked to be the old array grown (manifest/growth.py)
    make_store      a new store, with ``growth``: what was added, what is still missing

The chunks are the old store's (a chunk request such as the default resolves against
the axes' sizes, which grow), so every chunk key of the old array keeps its bytes.
The old store is not touched and keeps reading the array it describes.
"""

from __future__ import annotations

import dataclasses
import logging
from bisect import bisect_left
from collections.abc import Collection, Sequence
from itertools import repeat
from typing import TypeVar

import numpy as np

from tiffstore.errors import GrowthError, NamingError
from tiffstore.manifest.growth import Growth, grow, refuse_changes
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.tables import FileTables
from tiffstore.names.axes import Axis
from tiffstore.names.fields import NameField
from tiffstore.names.grid import NameGrid
from tiffstore.names.templates import fields_from_pattern
from tiffstore.opening import (
    Listing,
    OpenedFrom,
    Progress,
    list_files,
    make_store,
    read_headers,
    read_names,
    take_checksums,
)
from tiffstore.options import OpenOptions
from tiffstore.read.store import TiffStore
from tiffstore.sources.files import NO_MTIME
from tiffstore.tiff.layout import FileLayout

__all__ = ["extend_names", "known_layouts", "refresh"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Old files whose headers ride along with the new ones: siblings to compare with.
_SIBLINGS = 2


def known_layouts(old: Manifest, files: Sequence[int]) -> dict[str, FileLayout]:
    """``name -> layout`` of ``files`` (numbers in ``old``), whose headers were read.

    Files whose bytes lie alike (one geometry, one table row or data offset) share one
    layout object, as they did in the scan that made ``old``, so that a manifest built
    from them stays as small.
    """
    t, numbers = old.tables, np.asarray(files, np.int64)
    # Only these files' rows: a refresh passes two of 100,000.
    geometry = old.file_layout[numbers].tolist()
    start, offset = t.start[numbers].tolist(), t.data_offset[numbers].tolist()
    shared: dict[tuple[int, int, int], FileLayout] = {}
    known: dict[str, FileLayout] = {}
    for k, i in enumerate(numbers.tolist()):
        name = old.files[i]
        key = (geometry[k], start[k], offset[k])
        layout = shared.get(key)
        if layout is None:
            layout = shared[key] = old.file_layout_of(i)
        known[name] = layout
    return known


def _what_is_new(store: TiffStore, listing: Listing) -> tuple[np.ndarray, np.ndarray]:
    """The listed files the old manifest does not hold (strays it left out aside), as
    numbers in the listing in their names' order, and per listed file its number in
    the old manifest (-1: not there). The listing may be in any order.

    Raises :class:`GrowthError` for a file of the old manifest that is gone, or listed
    with another size, modification time or version than when it was read.
    """
    old, files = store.manifest, listing.files
    names = files.names
    number = dict(zip(old.files, range(len(old.files)), strict=True))
    # Whole columns at once, with the loops in C: this runs on every file, every refresh.
    at = np.fromiter(map(number.get, names, repeat(-1)), np.int64, len(names))
    held = np.flatnonzero(at >= 0)
    was = at[held]
    changed = old.file_sizes[was] != files.sizes[held]
    if old.file_mtimes is not None and files.mtimes is not None:
        listed, then = files.mtimes[held], old.file_mtimes[was]
        changed |= (then >= 0) & (listed != NO_MTIME) & (listed != then)
    if old.file_versions and files.versions is not None:
        versions = files.versions
        changed |= np.array(
            [
                bool(versions[k] and old.file_versions[i]) and versions[k] != old.file_versions[i]
                for k, i in zip(held.tolist(), was.tolist(), strict=True)
            ],
            bool,
        )
    removed: list[str] = []
    if len(held) < len(old.files):
        listed_names = set(names)
        removed = [name for name in old.files if name not in listed_names]
    refuse_changes(old, removed, sorted(names[k] for k in held[changed].tolist()))
    strays = set(store.left_out)
    new = [k for k in np.flatnonzero(at < 0).tolist() if names[k] not in strays]
    new.sort(key=names.__getitem__)
    return np.array(new, np.int64), at


def extend_names(old: Manifest, names: Sequence[str]) -> NameGrid | None:
    """The old manifest's name grid grown by ``names``, read with its template.

    The grid has the old axes, each extended at its end by the new names' values, the
    coordinates extended alike, and ``names``' places. ``None`` where the new names
    do not simply extend the old grid: a name the template does not match (a stray,
    another acquisition), a value that sorts before an old one, a coordinate that
    would take two values in one cell, a cell that already has a file, axes renamed
    or stitched. The naming stage then reads every name, as an open does.
    """
    if old.stitched or not old.template or not names:
        return None
    try:
        fields = {f.name: f for f in fields_from_pattern(names, old.template)}
    except NamingError:
        return None
    if set(fields) != {a.name for a in old.name_axes} | {c.name for c in old.coords}:
        return None
    axes: list[Axis] = []
    places: list[list[int]] = []
    for a in old.name_axes:
        values = fields[a.name].values
        if any(isinstance(v, int) for v in values) != any(isinstance(v, int) for v in a.values):
            return None
        known = set(a.values)
        merged = a.values + tuple(
            NameField(a.name, 0, tuple({v for v in values if v not in known}), a.label).distinct
        )
        # The open sorts an axis's values: the old ones must still come first.
        if NameField(a.name, 0, merged, a.label).distinct != list(merged):
            return None
        at = dict(zip(merged, range(len(merged)), strict=True))
        axes.append(dataclasses.replace(a, values=merged))
        places.append([at[v] for v in values])
    positions = list(zip(*places, strict=True)) if places else [()] * len(names)
    shape = tuple(a.size for a in axes)
    taken = np.zeros(shape, bool)
    taken[tuple(slice(0, n) for n in old.file_index.shape)] = old.file_index >= 0
    for p in positions:
        if taken[p]:
            return None  # two files for one cell: the naming stage says which
        taken[p] = True
    coords = []
    dims = [a.name for a in old.name_axes]
    for c in old.coords:
        ks = [dims.index(d) for d in c.dims]
        grid = np.full(tuple(shape[k] for k in ks), None, dtype=object)
        grid[tuple(slice(0, old.name_axes[k].size) for k in ks)] = c.as_array(
            tuple(old.name_axes[k].size for k in ks)
        )
        for p, v in zip(positions, fields[c.name].values, strict=True):
            cell = tuple(p[k] for k in ks)
            if grid[cell] is not None and grid[cell] != v:
                return None  # the field no longer follows these axes
            grid[cell] = v
        coords.append(dataclasses.replace(c, values=tuple(grid.ravel().tolist())))
    return NameGrid(
        axes=tuple(axes),
        positions=tuple(positions),
        coords=tuple(coords),
        template=old.template,
        fields=tuple(fields),
    )


def _old_file_places(old: Manifest, files: Sequence[int]) -> list[tuple[int, ...]]:
    """The grid cell of each of ``files`` (numbers in ``old``)."""
    flat, shape = old.file_index.ravel(), old.file_index.shape
    return [
        tuple(int(x) for x in np.unravel_index(int(np.flatnonzero(flat == i)[0]), shape))
        for i in files
    ]


def _in_name_order(names: Sequence[str]) -> bool:
    """Whether ``names`` are sorted, as a listing sorts them."""
    # Sorting sorted names is one comparison each, in C.
    return sorted(names) == list(names)


def _spliced(olds: Sequence[T], slots: Sequence[int], news: Sequence[T]) -> list[T]:
    """``olds`` with each of ``news`` put in before ``olds[slot]`` (``slots`` ascending)."""
    out: list[T] = []
    start = 0
    for slot, item in zip(slots, news, strict=True):
        out.extend(olds[start:slot])
        out.append(item)
        start = slot
    out.extend(olds[start:])
    return out


def _merged(
    old: Manifest, part: Manifest, siblings: Collection[str]
) -> tuple[Manifest, np.ndarray]:
    """``old`` and ``part`` (the new files on the grown grid, and ``siblings``: old files
    that rode along) as one manifest whose files are in name order, as a listing sorts
    them, and each old file's number in it.

    ``old``'s files are in name order, so the new ones are put in between them: no
    work per old file but copying its columns.
    """
    q_list = [j for j, name in enumerate(part.files) if name not in siblings]
    q_list.sort(key=part.files.__getitem__)
    added = [part.files[j] for j in q_list]
    q = np.array(q_list, np.int64)
    # Each new file goes in before the first old file named after it.
    slots = np.array([bisect_left(old.files, name) for name in added], np.int64)
    n_old = len(old.files)
    n = n_old + len(added)
    new_at = slots + np.arange(len(added))
    old_at = np.arange(n_old) + np.searchsorted(slots, np.arange(n_old), side="right")

    def gather(a: np.ndarray, b: np.ndarray, shift: int = 0) -> np.ndarray:
        out = np.empty(n, a.dtype)
        out[old_at] = a
        out[new_at] = np.where(b[q] >= 0, b[q] + shift, b[q])
        return out

    layouts = list(old.layouts)
    geometry = np.array([_place(layouts, lay) for lay in part.layouts], np.int32)
    t, u = old.tables, part.tables
    tables = FileTables(
        data_offset=gather(t.data_offset, u.data_offset),
        start=gather(t.start, u.start, len(t.offsets)),
        offsets=np.concatenate([t.offsets, u.offsets]),
        bytecounts=np.concatenate([t.bytecounts, u.bytecounts]),
    )
    file_layout = np.empty(n, np.int32)
    file_layout[old_at] = old.file_layout
    file_layout[new_at] = geometry[part.file_layout[q]]
    old_to_new = np.full(n_old + 1, -1, np.int64)  # [-1] stays -1: no file
    old_to_new[:n_old] = old_at
    part_to_new = np.full(len(part.files) + 1, -1, np.int64)  # siblings: their old cells
    part_to_new[q] = new_at
    file_index = part_to_new[part.file_index]
    region = tuple(slice(0, k) for k in old.file_index.shape)
    file_index[region] = np.where(
        file_index[region] >= 0, file_index[region], old_to_new[old.file_index]
    )
    mtimes = None
    if old.file_mtimes is not None and part.file_mtimes is not None:
        mtimes = gather(old.file_mtimes, part.file_mtimes)
    versions: tuple[str, ...] = ()
    if old.file_versions and part.file_versions:
        versions = tuple(
            _spliced(old.file_versions, slots.tolist(), [part.file_versions[j] for j in q_list])
        )
    merged = dataclasses.replace(
        old,
        files=tuple(_spliced(old.files, slots.tolist(), added)),
        file_sizes=gather(old.file_sizes, part.file_sizes),
        file_index=file_index,
        file_layout=file_layout,
        layouts=tuple(layouts),
        tables=tables,
        signatures=old.signatures + part.signatures,
        file_signature=gather(old.file_signature, part.file_signature, len(old.signatures)),
        verified=gather(old.verified, part.verified),
        name_axes=part.name_axes,
        coords=part.coords,
        file_mtimes=mtimes,
        file_versions=versions,
    )
    return merged, old_at


def _place(layouts: list[FileLayout], layout: FileLayout) -> int:
    """``layout``'s number in ``layouts``, appended when new."""
    if layout not in layouts:
        layouts.append(layout)
    return layouts.index(layout)


def _grown_by_parts(
    store: TiffStore,
    listing: Listing,
    at: np.ndarray,
    new: np.ndarray,
    grid: NameGrid,
    options: OpenOptions,
    progress: Progress | None,
) -> tuple[Manifest, tuple[str, ...], np.ndarray]:
    """The grown manifest from the headers of ``new`` (numbers in the listing) alone,
    those still being written, and each old file's number in the grown manifest."""
    old = store.manifest
    # A few old files, already read, ride along: siblings to compare the new ones with,
    # spread over the old files (in name order).
    old_numbers = sorted({int(i) for i in np.linspace(0, len(old.files) - 1, _SIBLINGS)})
    listed_as = np.full(len(old.files), -1, np.int64)
    held = np.flatnonzero(at >= 0)
    listed_as[at[held]] = held
    siblings = listed_as[old_numbers].tolist()
    files = listing.files.take([*new.tolist(), *siblings])
    positions = [*grid.positions, *_old_file_places(old, old_numbers)]
    part_grid = dataclasses.replace(grid, positions=tuple(positions))
    known = known_layouts(old, old_numbers)
    part, incomplete = read_headers(
        Listing(listing.source, files), part_grid, options, progress, known=known
    )
    if part.layout.shape != old.layout.shape or part.dtype != old.dtype:
        raise GrowthError(
            f"{old.url(0)}: the new files hold {part.layout.describe()}, the old ones "
            f"{old.layout.describe()}. Open the source again (tiffstore.open)."
        )
    merged, old_at = _merged(old, part, {old.files[i] for i in old_numbers})
    return merged, incomplete, old_at


def _opened_from(store: TiffStore) -> OpenedFrom:
    opened = store.opened_from
    if not isinstance(opened, OpenedFrom):
        raise GrowthError(
            f"{store.manifest.source.url('')}: this store was not opened from TIFF files "
            "(it was opened from a reference file, or made from a manifest), so there is "
            "no source to list again. Open the folder of TIFF files with tiffstore.open "
            "to refresh it."
        )
    return opened


def refresh(store: TiffStore, progress: Progress | None = None) -> TiffStore:
    """A new store over ``store``'s source as it is now: new files added, the array grown.

    Parameters
    ----------
    store
        A store from :func:`tiffstore.open` over TIFF files (not a reference file).
    progress
        As :func:`tiffstore.open`'s: ``progress(step, done, total)``.

    Returns
    -------
    TiffStore
        The grown store; its ``growth`` (:class:`~tiffstore.manifest.growth.Growth`)
        says which dims grew, the files added, those that filled a missing cell, the
        cells still missing and the files still being written. ``store`` is unchanged.

    Raises
    ------
    GrowthError
        The store was not opened from TIFF files; or the source changed in a way that
        is not growth (a file removed or rewritten, a value new in the middle of an
        axis, another shape): the message names the file or axis.

    Examples
    --------
    >>> store = tiffstore.open("raw/")  # doctest: +SKIP
    >>> later = store.refresh()  # doctest: +SKIP
    >>> later.growth.added_files, later.shape  # doctest: +SKIP
    (('ch0_stack0012.tif', 'ch1_stack0012.tif'), (2, 13, 40, 256, 256))
    """
    opened = _opened_from(store)
    old = store.manifest
    options = opened.options
    # In the order listed: only the new names are sorted (the old ones are, in the
    # manifest), unless every name is read again below.
    listing = list_files(opened.source, options, progress, sort=False)
    new, at = _what_is_new(store, listing)
    if not len(new):
        growth = Growth(old.dims, old.shape, old.shape, (), (), int((old.file_index < 0).sum()))
        return _store(old, opened, store.left_out, (), growth)
    # The old chunks, not the request: a request resolves against the axes' sizes.
    pinned = dataclasses.replace(options, chunks=old.chunks)
    grid = None
    old_at: np.ndarray | None = None
    if not options.checksum and options.tiles == "keep" and _in_name_order(old.files):
        grid = extend_names(old, [listing.files.names[k] for k in new.tolist()])
    if grid is not None:
        manifest, incomplete, old_at = _grown_by_parts(
            store, listing, at, new, grid, pinned, progress
        )
        left_out = store.left_out
    else:
        listing = dataclasses.replace(listing, files=listing.files.sorted())
        listing, full_grid = read_names(listing, options, progress)
        left_out = full_grid.left_out
        if len(full_grid.axes) == len(old.name_axes):
            options = pinned  # (where the names now have other axes, grow() says so)
        number = dict(zip(old.files, range(len(old.files)), strict=True))
        known = known_layouts(old, [number[n] for n in listing.files.names if n in number])
        if options.checksum:
            # Every file's bytes again: a checksum table covers the whole listing.
            listing = take_checksums(listing, progress)
        manifest, incomplete = read_headers(listing, full_grid, options, progress, known=known)
    growth = grow(old, manifest, incomplete, old_at=old_at)
    logger.info(
        "refreshed %s: %s (%d headers read)",
        old.source.url(""),
        growth.summary(),
        len(new),
    )
    return _store(manifest, opened, left_out, incomplete, growth)


def _store(
    manifest: Manifest,
    opened: OpenedFrom,
    left_out: Sequence[str],
    incomplete: Sequence[str],
    growth: Growth,
) -> TiffStore:
    new = make_store(manifest, opened.options, left_out, incomplete=incomplete, opened_from=opened)
    new.growth = growth
    return new

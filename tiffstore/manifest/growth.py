"""What is new in a source since its manifest was made, checked to be growth only.

An acquisition still being written only grows: new files arrive at the end of an
axis (a new stack, time point, channel), and cells that had no file get one. A
consumer that kept the array it saw (a served store, an Icechunk repository) can then
take the new array as an extension of the old one: every chunk of the old array keeps
its bytes. This module says what grew, and refuses anything else. It is pure: two
manifests in, plain data out, no I/O.

The API (used by :mod:`tiffstore.refresh` and by Icechunk appends)::

    grow(old, new, incomplete=(), *, old_at=None) -> Growth    raises GrowthError
    changed_chunks(old, new)                        -> bool array over new.chunk_grid

``old`` and ``new`` are manifests of one source made with the same options, ``new``
later, and the same chunks: the default chunks depend on the axes' sizes, so open the
later one with ``chunks=old.chunks`` (as a refresh does). :func:`grow` raises :class:`~tiffstore.errors.GrowthError` when ``new`` is not
``old`` grown: a file of ``old`` removed, or changed (size, modification time, version
or byte locations); a new value in the middle of an axis (a channel between two old
ones); other dims, file shape, dtype, chunks, fill value or stitching. More than one
axis may grow at once (a new channel and a new stack): each old value keeps its index,
so each old chunk keeps its key.

>>> growth = grow(old_store.manifest, new_store.manifest)  # doctest: +SKIP
>>> growth.axis, growth.old_shape, growth.new_shape  # doctest: +SKIP
('stack', (2, 10, 40, 256, 256), (2, 12, 40, 256, 256))
>>> mask = changed_chunks(old_store.manifest, new_store.manifest)  # doctest: +SKIP
>>> [tuple(i) for i in np.argwhere(mask)]  # chunks to (re)write  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from tiffstore.errors import GrowthError
from tiffstore.manifest.model import Manifest

__all__ = ["Growth", "changed_chunks", "grow", "refuse_changes"]

#: Files named in one error message at most.
_SHOWN = 5


@dataclass(frozen=True)
class Growth:
    """How a source's array grew between two manifests (see :func:`grow`).

    Attributes
    ----------
    dims
        The array's dims (the same before and after).
    old_shape, new_shape
        The array's shape before and after.
    added_files
        Files of the new manifest that the old one did not hold, in file order.
    filled_files
        Those of ``added_files`` in a cell of the old array that had no file then
        (missing, or still being written): its chunks' bytes changed from the fill value.
    still_missing_cells
        Cells of the new array's name grid that have no file.
    incomplete
        Files still being written, left out of the new array (as the caller says).
    """

    dims: tuple[str, ...]
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    added_files: tuple[str, ...]
    filled_files: tuple[str, ...]
    still_missing_cells: int
    incomplete: tuple[str, ...] = ()

    @property
    def axes(self) -> tuple[str, ...]:
        """The dims whose size grew, in the array's order (empty when none did)."""
        return tuple(
            d for d, a, b in zip(self.dims, self.old_shape, self.new_shape, strict=True) if a != b
        )

    @property
    def axis(self) -> str | None:
        """The dim that grew when exactly one did, else ``None`` (see ``axes``)."""
        axes = self.axes
        return axes[0] if len(axes) == 1 else None

    @property
    def changed(self) -> bool:
        """Whether the array is any different: it grew, or cells got their file."""
        return bool(self.added_files) or self.old_shape != self.new_shape

    def summary(self) -> str:
        """One line saying what changed, for logs and status lines."""
        n = len(self.added_files)
        parts = [f"{n:,} new file{'' if n == 1 else 's'}"]
        parts += [
            f"{d} {a} -> {b}"
            for d, a, b in zip(self.dims, self.old_shape, self.new_shape, strict=True)
            if a != b
        ]
        if self.filled_files:
            parts.append(f"{len(self.filled_files):,} filled a missing cell")
        if self.still_missing_cells:
            parts.append(f"{self.still_missing_cells:,} cells still missing")
        if self.incomplete:
            parts.append(f"{len(self.incomplete):,} still being written")
        return "; ".join(parts)


def _listed(names: Sequence[str], more: int = 0) -> str:
    shown = ", ".join(names[:_SHOWN])
    rest = len(names) - _SHOWN + more
    return shown + (f" ... and {rest:,} more" if rest > 0 else "")


def _again(m: Manifest) -> str:
    return f"Open {m.source.url('')} again (tiffstore.open) to see the files as they are now."


def _check_same_array(old: Manifest, new: Manifest) -> None:
    where = old.source.url("")
    if old.source != new.source:
        raise GrowthError(
            f"{where}: the new manifest reads {new.source.url('')}, not this source; "
            "growth compares two manifests of one source."
        )
    differs: list[str] = []
    if tuple(a.name for a in old.name_axes) != tuple(a.name for a in new.name_axes):
        differs.append(
            f"the names' axes are now {[a.name for a in new.name_axes]}, were "
            f"{[a.name for a in old.name_axes]} (a part of the names that did not vary now "
            "does: a pattern= that names it an axis, {name:axis}, keeps the axes fixed)"
        )
    if old.file_dims != new.file_dims or old.layout.shape != new.layout.shape:
        differs.append(
            f"each file holds {dict(zip(new.file_dims, new.layout.shape, strict=True))}, "
            f"was {dict(zip(old.file_dims, old.layout.shape, strict=True))}"
        )
    if old.dtype != new.dtype:
        differs.append(f"the dtype is {new.dtype}, was {old.dtype}")
    if old.chunks != new.chunks and not differs:
        differs.append(f"the chunks are {new.chunks}, were {old.chunks} (pass chunks= to fix them)")
    if old.fill_value != new.fill_value:
        differs.append(f"the fill value is {new.fill_value!r}, was {old.fill_value!r}")
    if old.stitched != new.stitched:
        differs.append("the tiles stitched differ")
    if differs:
        raise GrowthError(
            f"{where}: the array is no longer the one opened, grown: "
            + "; ".join(differs)
            + ". "
            + _again(old)
        )


def refuse_changes(old: Manifest, removed: Sequence[str], changed: Sequence[str]) -> None:
    """Raise :class:`GrowthError` naming files of ``old`` removed, or changed since listed.

    A refresh calls it on the listing, before any header is read; :func:`grow` on the
    new manifest.
    """
    if removed:
        n = len(removed)
        raise GrowthError(
            f"{old.source.url('')}: {n:,} file{'s were' if n > 1 else ' was'} removed or "
            f"renamed since the store was opened: {_listed(removed)}. An array only grows. "
            + _again(old)
        )
    if changed:
        n = len(changed)
        raise GrowthError(
            f"{old.source.url('')}: {n:,} file{'s' if n > 1 else ''} changed (size, "
            f"modification time or version) since the store was opened: {_listed(changed)}. "
            "Files already read must stay as they are (rewritten? written in place?). "
            + _again(old)
        )


def _old_at(old: Manifest, new: Manifest) -> np.ndarray:
    """``int64`` per old file: its number in ``new``; raises for removed files."""
    number = dict(zip(new.files, range(len(new.files)), strict=True))
    # number.get(name, -1) for each name, called from C: 100,000 files in a few ms.
    at = np.fromiter(map(number.get, old.files, repeat(-1)), np.int64, len(old.files))
    refuse_changes(old, [old.files[i] for i in np.flatnonzero(at < 0).tolist()], ())
    return at


def _grown_axes(old: Manifest, new: Manifest) -> None:
    """Raise unless each old axis's values are the first values of the new axis."""
    for a, b in zip(old.name_axes, new.name_axes, strict=True):
        if b.values[: a.size] == a.values:
            continue
        inserted = [v for v in b.values if v not in set(a.values)]
        lost = [v for v in a.values if v not in set(b.values)]
        what = (
            f"the values {lost[:_SHOWN]} are gone"
            if lost
            else f"the new values {inserted[:_SHOWN]} fall between the old ones "
            f"{list(a.values)[:_SHOWN]}{' ...' if a.size > _SHOWN else ''}"
        )
        raise GrowthError(
            f"{old.source.url('')}: axis {a.name!r} did not grow at its end: {what}, so the "
            "old array's chunks would move. " + _again(old)
        )


def _check_kept(old: Manifest, new: Manifest, at: np.ndarray) -> None:
    """Raise unless each old file is listed alike, sits in its old cell and keeps its bytes."""
    changed = old.file_sizes != new.file_sizes[at]
    if old.file_mtimes is not None and new.file_mtimes is not None:
        a, b = old.file_mtimes, new.file_mtimes[at]
        changed |= (a >= 0) & (b >= 0) & (a != b)
    if old.file_versions and new.file_versions:
        # Where both listings said a version (an ETag, a time), it must be the same.
        changed |= np.array(
            [
                bool(x) and bool(new.file_versions[j]) and x != new.file_versions[j]
                for x, j in zip(old.file_versions, at.tolist(), strict=True)
            ],
            bool,
        )
    refuse_changes(old, (), [old.files[i] for i in np.flatnonzero(changed).tolist()])
    # Each old cell holds the same file (old values keep their index along each axis).
    region = tuple(slice(0, n) for n in old.file_index.shape)
    before, after = old.file_index, new.file_index[region]
    held = before >= 0
    moved = held & (after != np.where(held, at[np.maximum(before, 0)], -1))
    if moved.any():
        cell = tuple(int(i) for i in np.argwhere(moved)[0])
        raise GrowthError(
            f"{old.url(int(before[cell]))}: no longer sits at its place on the grid "
            f"{dict(zip((a.name for a in old.name_axes), cell, strict=True))}. " + _again(old)
        )
    _check_bytes(old, new, at)


def _check_bytes(old: Manifest, new: Manifest, at: np.ndarray) -> None:
    """Raise naming an old file whose pixels the new manifest finds elsewhere."""
    # Geometries: compared once per (old, new) pair of geometry numbers.
    theirs = new.file_layout[at].astype(np.int64)
    width = len(new.layouts)
    keys = old.file_layout.astype(np.int64) * width + theirs
    pairs = np.flatnonzero(np.bincount(keys, minlength=len(old.layouts) * width)).tolist()
    for ko, kn in (divmod(p, width) for p in pairs):
        if old.layouts[ko] != new.layouts[kn]:
            i = int(np.flatnonzero((old.file_layout == ko) & (theirs == kn))[0])
            _rewritten(old, i)
    t, u = old.tables, new.tables
    bad = np.flatnonzero(t.data_offset != u.data_offset[at])
    if bad.size:
        _rewritten(old, int(bad[0]))
    for k, lay in enumerate(old.layouts):
        members = np.flatnonzero((old.file_layout == k) & (t.start >= 0))
        if not members.size:
            continue
        rows = lay.n_pages * (1 if lay.segments is None else lay.segments.offsets.shape[1])
        mine = t.start[members][:, None] + np.arange(rows)
        theirs = u.start[at[members]][:, None] + np.arange(rows)
        if (u.start[at[members]] < 0).any():
            _rewritten(old, int(members[np.flatnonzero(u.start[at[members]] < 0)[0]]))
        same = (t.offsets[mine] == u.offsets[theirs]) & (t.bytecounts[mine] == u.bytecounts[theirs])
        bad = np.flatnonzero(~same.all(axis=1))
        if bad.size:
            _rewritten(old, int(members[bad[0]]))


def _rewritten(old: Manifest, file: int) -> None:
    raise GrowthError(
        f"{old.url(file)}: its pixel data is no longer where the store read it (the file was "
        "rewritten). " + _again(old)
    )


def grow(
    old: Manifest,
    new: Manifest,
    incomplete: Sequence[str] = (),
    *,
    old_at: np.ndarray | None = None,
) -> Growth:
    """What grew from ``old`` to ``new``, checked to be growth only.

    Parameters
    ----------
    old, new
        Manifests of one source, made with the same options; ``new`` later.
    incomplete
        Files the new manifest left out as still being written (reported as given).
    old_at
        Each old file's number in ``new``, where the caller made ``new`` from ``old``
        and so knows them (a refresh's merge): not looked up again by name.

    Returns
    -------
    Growth
        The dims that grew, the files added, those that filled a missing cell, the
        cells still missing.

    Raises
    ------
    GrowthError
        ``new`` is not ``old`` grown: an old file removed, changed or rewritten (other
        size, time, version or byte locations), or in another cell; a new value in the
        middle of an axis; other dims, file shape, dtype, chunks, fill value or tiles.
        The message names the file or axis, and says to open the source again.

    Examples
    --------
    >>> later = tiffstore.open("raw/", chunks=store.chunks)  # the same chunks  # doctest: +SKIP
    >>> g = grow(store.manifest, later.manifest)  # doctest: +SKIP
    >>> g.axes, g.added_files[:1]  # doctest: +SKIP
    (('stack',), ('ch0_stack0011.tif',))
    """
    _check_same_array(old, new)
    _grown_axes(old, new)
    at = _old_at(old, new) if old_at is None else old_at
    _check_kept(old, new, at)
    kept = np.zeros(len(new.files), bool)
    kept[at] = True
    added = np.flatnonzero(~kept)
    # Files added inside the old grid filled a cell that had no file.
    # (Marks, not np.unique: a hash table per call costs more than the rest of grow.)
    inside = new.file_index[tuple(slice(0, n) for n in old.file_index.shape)]
    in_old_grid = np.zeros(len(new.files), bool)
    in_old_grid[inside[inside >= 0]] = True
    filled = np.flatnonzero(in_old_grid & ~kept)
    return Growth(
        dims=new.dims,
        old_shape=old.shape,
        new_shape=new.shape,
        added_files=tuple(new.files[j] for j in added.tolist()),
        filled_files=tuple(new.files[j] for j in filled.tolist()),
        still_missing_cells=int((new.file_index < 0).sum()),
        incomplete=tuple(incomplete),
    )


def _block_any(mask: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``mask`` reduced along ``axis`` by blocks of ``size`` (a chunk's cells): any."""
    n = mask.shape[axis]
    pad = -n % size
    if pad:
        widths = [(0, 0)] * mask.ndim
        widths[axis] = (0, pad)
        mask = np.pad(mask, widths)
    shape = (*mask.shape[:axis], (n + pad) // size, size, *mask.shape[axis + 1 :])
    return np.asarray(mask.reshape(shape).any(axis=axis + 1))


def changed_chunks(old: Manifest, new: Manifest) -> np.ndarray:
    """Which chunks of ``new`` are new or may hold other bytes than in ``old``.

    A chunk changed where one of its grid cells is beyond the old array or got a file
    it had no file for (a fill value before). Every other chunk reads the same bytes
    from the same files (:func:`grow` checks that); call it after :func:`grow`.

    Returns
    -------
    numpy.ndarray
        ``bool`` of shape ``new.chunk_grid``.
    """
    cells = new.file_index >= 0
    region = tuple(slice(0, n) for n in old.file_index.shape)
    was = np.zeros(new.file_index.shape, bool)
    was[region] = old.file_index >= 0
    beyond = np.ones(new.file_index.shape, bool)
    beyond[region] = False
    mask = beyond | (cells & ~was)
    nn = new.n_name_dims
    fold = dict(new.stitched)
    targets: list[int] = []
    v = 0
    for k in range(len(new.name_axes)):
        if k in fold:
            d = fold[k]
            # A tile is whole chunks along its dim (chunks divide the tile size).
            mask = np.repeat(mask, new.layout.shape[d] // new.chunks[nn + d], axis=k)
            targets.append(nn + d)
        else:
            mask = _block_any(mask, k, new.chunks[v])
            targets.append(v)
            v += 1
    rest = [nn + d for d in range(len(new.file_dims)) if nn + d not in targets]
    mask = mask.reshape(mask.shape + (1,) * len(rest))
    order = np.argsort(targets + rest)
    return np.broadcast_to(mask.transpose(order), new.chunk_grid).copy()

"""File names -> axes, coordinates and a template: the naming stage's one entry point.

:func:`understand_names` turns a list of file names (relative paths) into a
:class:`NameGrid`: which varying parts of the names are the axes of the array,
where each file sits on those axes, which parts are coordinates (values that
other parts determine, such as a wavelength fixed by the channel), and a
template that reproduces the understanding. It does no I/O.

The steps live in their own modules: :mod:`~tiffstore.names.tokens` cuts and
aligns the names, :mod:`~tiffstore.names.fields` names the parts that vary,
:mod:`~tiffstore.names.templates` reads and writes templates,
:mod:`~tiffstore.names.strays` finds files that do not belong, and
:mod:`~tiffstore.names.search` chooses the axes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from tiffstore.errors import NamingError
from tiffstore.names.axes import Axis, Coordinate, Value, axis_kind
from tiffstore.names.fields import Role, fields_from_columns
from tiffstore.names.hints import experiment_hint, structure_error
from tiffstore.names.search import (
    check_unambiguous,
    choose_axes,
    coordinate,
    name_tied_fields,
    tie_classes,
)
from tiffstore.names.strays import find_strays
from tiffstore.names.templates import fields_from_pattern, render_template
from tiffstore.names.tokens import (
    Columns,
    align,
    align_like_first,
    signatures_of,
    strip_suffixes,
)

__all__ = ["NameGrid", "understand_names"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NameGrid:
    """What the names say: the axes, where each file sits, coordinates and a template.

    ``positions[i]`` is the index along every axis of the i-th name given, or
    ``None`` for a name left out (see ``left_out``).
    ``left_out`` holds the stray names that were not placed on the grid: names
    with a part the others lack (``..._thumb.tif`` beside the acquisition), which
    would otherwise invent an axis (see :func:`find_strays`).
    """

    axes: tuple[Axis, ...]
    positions: tuple[tuple[int, ...] | None, ...]
    coords: tuple[Coordinate, ...] = ()
    template: str = ""
    fields: tuple[str, ...] = field(default=())
    left_out: tuple[str, ...] = ()

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    def file_index(self) -> np.ndarray:
        """Array of the grid's shape holding each cell's file number, -1 where none."""
        index = np.full(self.shape, -1, dtype=np.int64)
        for i, pos in enumerate(self.positions):
            if pos is not None:
                index[pos] = i
        return index

    def placed(self) -> NameGrid:
        """The grid of the placed names only: ``positions`` without the left-out names
        (which stay listed in ``left_out``)."""
        if all(p is not None for p in self.positions):
            return self
        return replace(self, positions=tuple(p for p in self.positions if p is not None))

    def missing(self) -> list[dict[str, Value]]:
        """The axis values of every grid cell that has no file."""
        index = self.file_index()
        return [
            {a.name: a.values[i] for a, i in zip(self.axes, cell, strict=True)}
            for cell in zip(*np.nonzero(index < 0), strict=True)
        ]


def understand_names(names: Sequence[str], pattern: str | None = None) -> NameGrid:
    """Work out the axes and coordinates that a list of file names describes.

    Parameters
    ----------
    names
        File names, as paths relative to the acquisition's root (``/``-separated).
    pattern
        Optional template (``"{_}_ch{ch}_stack{stack}.tif"``; ``{_}`` ignores a part,
        ``{name:axis}`` / ``{name:coord}`` force a role, and the name written is the
        axis's name) or a regular expression with named groups. Without it the
        fields are inferred from the names.

    Returns
    -------
    NameGrid
        The axes (outermost first, in the order their fields appear in the names),
        each name's position on them, the coordinates and a template.

    Raises
    ------
    NamingError
        When the names do not form a grid, are ambiguous, or do not match ``pattern``.
        The message lists the fields found and a template to start from.

    Examples
    --------
    >>> g = understand_names(["a_ch1_t1.tif", "a_ch1_t2.tif", "a_ch2_t1.tif", "a_ch2_t2.tif"])
    >>> g.dims, g.shape
    (('ch', 't'), (2, 2))
    >>> g.template
    'a_ch{ch}_t{t}.tif'
    """
    names = tuple(names)
    n = len(names)
    if n == 0:
        raise NamingError("No file names to understand.")
    if len(set(names)) != n:
        dup = next(x for x, count in Counter(names).items() if count > 1)
        raise NamingError(
            f"The file {dup!r} is listed twice; each file can sit at one place only. "
            "Remove the duplicate from the list."
        )
    cols: Columns | None = None
    if pattern is None:
        if n == 1:
            only = names[0].replace("{", "{{").replace("}", "}}")
            return NameGrid(axes=(), positions=((),), template=only)
        stems = strip_suffixes(names)
        cols = align_like_first(stems)
        if cols is None:
            strays = find_strays(names)
            if strays:
                return _leave_out(names, strays)
            cols = align(stems)
            if cols is None:
                raise NamingError(structure_error(names, signatures_of(stems)))
        fields = fields_from_columns(names, cols)
    else:
        try:
            fields = fields_from_pattern(names, pattern)
        except NamingError:
            strays = find_strays(names)
            if not strays:
                raise
            if not _fit_without(names, strays, pattern):
                fields_from_pattern(names, pattern, strays)  # raises, suggesting without them
                raise
            # Only the strays miss the template (it was written for the acquisition,
            # as the suggestion in this very message is): leave them out, as inferred.
            return _leave_out(names, strays, pattern)
        if n == 1 and not any(f.role == "axis" for f in fields):
            return NameGrid(axes=(), positions=((),), template=pattern)
    if not fields:
        raise NamingError(
            f"The {n} file names have no part that varies, so they cannot be placed on axes."
        )

    classes = tie_classes(fields)
    chosen = choose_axes(classes, fields, names)
    check_unambiguous(chosen, fields, names)
    if pattern is None:
        fields = name_tied_fields(classes, fields)

    axes: list[Axis] = []
    index: list[np.ndarray] = []
    for c in chosen:
        rep = c.rep
        distinct = rep.distinct
        if rep.numeric:
            # Integer codes come from np.unique: already the sorted order.
            index.append(rep.coded[0])
        else:
            order = {v: i for i, v in enumerate(distinct)}
            index.append(np.fromiter(map(order.__getitem__, rep.values), np.int64, n))
        kind = axis_kind(rep.label or rep.name)
        axes.append(Axis(rep.name, kind, tuple(distinct), rep.label, rep.units))
    positions = tuple(zip(*(i.tolist() for i in index), strict=True))

    axis_fields = {id(c.rep) for c in chosen}
    coords = tuple(
        coordinate(f, chosen, index) for c in classes for f in c.members if id(f) not in axis_fields
    )
    if cols is not None:
        roles: dict[str, Role] = {c.rep.name: "auto" for c in chosen}
        covered = {
            i
            for c in chosen
            for i in range(c.rep.position, c.rep.position + c.rep.width)
            if c.rep.width > 1
        }
        for f in fields:
            # Parts of a well that is an axis, and a well derived from its row and
            # column, are not written separately.
            if f.name not in roles and f.width == 1 and f.position not in covered:
                roles[f.name] = "coord"
        template = render_template(names, cols, fields, roles)
    else:
        template = pattern or ""
    grid = NameGrid(
        axes=tuple(axes),
        positions=positions,
        coords=coords,
        template=template,
        fields=tuple(f.name for f in fields),
    )
    if pattern is None:
        hint = experiment_hint(names, grid.axes, positions)
        if hint:
            logger.warning(hint)
    logger.debug("understood %d names as %s %s", n, grid.dims, grid.shape)
    return grid


def _fit_without(names: Sequence[str], strays: Sequence[str], pattern: str) -> bool:
    """Whether the names other than ``strays`` all match ``pattern``."""
    out = set(strays)
    try:
        fields_from_pattern([n for n in names if n not in out], pattern)
    except NamingError:
        return False
    return True


def _leave_out(names: Sequence[str], strays: Sequence[str], pattern: str | None = None) -> NameGrid:
    """The grid of the names without ``strays``, which are listed as left out."""
    out = set(strays)
    shown = ", ".join(strays[:5]) + (f" ... and {len(strays) - 5} more" if len(strays) > 5 else "")
    logger.warning(
        "Left out %d file%s whose name has a part the others lack (it would invent an "
        "axis): %s. Leave them out with exclude= to silence this.",
        len(strays),
        "" if len(strays) == 1 else "s",
        shown,
    )
    grid = understand_names([n for n in names if n not in out], pattern)
    placed = iter(grid.positions)
    positions = tuple(None if n in out else next(placed) for n in names)
    return replace(grid, positions=positions, left_out=tuple(strays) + grid.left_out)

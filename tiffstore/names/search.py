"""Fields -> axes: which fields index the files on a grid, and what the others are.

1. Fields tied one-to-one (a channel number and its wavelength) form a class;
   the one that counts (small, regular, labelled integers) represents it.
2. The axes are the set of classes whose value combinations index the files
   (a minimal key) and fill a dense grid, preferring more, shorter axes.
3. Every other field becomes a coordinate over the smallest set of axes that
   determines it.

No I/O.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from tiffstore.errors import NamingError
from tiffstore.names.axes import Coordinate
from tiffstore.names.fields import NameField, fields_table, unique_name
from tiffstore.names.templates import suggest_template
from tiffstore.names.tokens import natural_key

__all__ = [
    "MIN_GRID_DENSITY",
    "TieClass",
    "check_unambiguous",
    "choose_axes",
    "coordinate",
    "name_tied_fields",
    "tie_classes",
]

#: Below this fraction of filled grid cells the names are not taken as a grid.
MIN_GRID_DENSITY = 0.5


def name_tied_fields(classes: list[TieClass], fields: list[NameField]) -> list[NameField]:
    """Give a tied class's representative the plain name its members share.

    ``CamA_..._CAM1`` gives two fields labelled ``cam``, tied one to one; they were
    named ``cam`` and ``cam_2`` in order of appearance. The one that becomes the axis
    (or speaks for the class) is ``cam``; the other is ``cam_letter`` (single letters),
    ``cam_name`` (other text) or ``cam_number``.
    """
    taken = {f.name for f in fields}
    renames: dict[str, str] = {}
    for cls in classes:
        groups: dict[str, list[NameField]] = {}
        for f in cls.members:
            groups.setdefault(re.sub(r"_\d+$", "", f.name), []).append(f)
        for base, group in groups.items():
            if len(group) < 2 or all(f.name != base for f in group):
                continue
            best = next((f for f in group if f is cls.rep), None) or max(group, key=_rank)
            renames[best.name] = base
            for f in group:
                if f is not best:
                    kind = (
                        "number"
                        if f.numeric
                        else "letter"
                        if all(len(str(v)) == 1 for v in f.values)
                        else "name"
                    )
                    renames[f.name] = unique_name(f"{base}_{kind}", taken)
    if not renames:
        return fields
    for cls in classes:
        cls.members = [replace(f, name=renames.get(f.name, f.name)) for f in cls.members]
        cls.__dict__.pop("rep", None)
    by_name = {f.name: f for cls in classes for f in cls.members}
    return [by_name[renames.get(f.name, f.name)] for f in fields]


def _combined(codes: Sequence[tuple[np.ndarray, int]], n: int) -> np.ndarray:
    """Dense codes (0 .. k-1, every one used, in mixed-radix order) of the value tuples."""
    key = np.zeros(n, dtype=np.int64)
    bound = 1
    for c, card in codes:
        if bound * card >= 2**62:
            # Re-compress so the mixed-radix key never overflows on many fields.
            uniq, key = np.unique(key, return_inverse=True)
            key, bound = key.astype(np.int64).reshape(-1), len(uniq)
        key = key * card + c
        bound *= card
    _, key = np.unique(key, return_inverse=True)
    return key.astype(np.int64).reshape(-1)


def _determines(det: np.ndarray, dep: np.ndarray) -> bool:
    """True where each value of ``det`` comes with one value of ``dep`` (codes from 0)."""
    if len(det) == 0:
        return True
    # One pass, no sort: keep one ``dep`` per ``det`` value, then compare all.
    seen = np.empty(int(det.max()) + 1, dtype=dep.dtype)
    seen[det] = dep
    return bool(np.array_equal(seen[det], dep))


def _is_key(key: np.ndarray) -> bool:
    """Whether dense codes (from :func:`_combined`) tell every file apart."""
    return len(key) == 0 or int(key.max()) + 1 == len(key)


def _rank(f: NameField) -> tuple[bool, bool, bool, bool, int]:
    """How strongly a field claims to be the axis of its tie class.

    Forced roles first; then a well outranks its own row or column (it names the
    plate position); then numbers beat text and counters beat measurements.
    """
    return (f.role == "axis", f.role != "coord", f.width > 1, f.numeric, f.counting_score())


@dataclass
class TieClass:
    """Fields tied one-to-one; ``rep`` is the one that becomes the axis."""

    members: list[NameField]
    codes: np.ndarray
    card: int

    @cached_property
    def rep(self) -> NameField:
        # max() keeps the first of equals: the field that comes first in the names.
        return max(self.members, key=_rank)

    @property
    def can_be_axis(self) -> bool:
        return any(f.role != "coord" for f in self.members)


def _same_order(a: NameField, b: NameField) -> bool:
    """Whether two tied fields sort the files the same way."""
    pairs = sorted(set(zip(a.values, b.values, strict=True)), key=lambda p: natural_key(p[0]))
    return [p[1] for p in pairs] == sorted((p[1] for p in pairs), key=natural_key)


def tie_classes(fields: list[NameField]) -> list[TieClass]:
    classes: list[TieClass] = []
    for f in fields:
        codes, card = f.coded
        for cls in classes:
            if cls.card == card and _determines(cls.codes, codes) and _determines(codes, cls.codes):
                cls.members.append(f)
                break
        else:
            classes.append(TieClass([f], codes, card))
    return classes


def check_unambiguous(axes: list[TieClass], fields: list[NameField], names: Sequence[str]) -> None:
    """Fail where two tied fields could equally be an axis but order the files differently."""
    for cls in axes:
        ranked = sorted(cls.members, key=_rank, reverse=True)
        if (
            len(ranked) > 1
            and ranked[0].role == "auto"
            and _rank(ranked[0]) == _rank(ranked[1])
            and not _same_order(ranked[0], ranked[1])
        ):
            raise NamingError(
                f"The names are ambiguous: {ranked[0].name} and {ranked[1].name} go together "
                "one to one but order the files differently, and either could be the axis.\n"
                + fields_table(fields)
                + f"\nGive pattern= marking the axis with {{{ranked[0].name}:axis}}; start from:\n  "
                + suggest_template(names)
            )


def _same_cell(classes: Sequence[TieClass], names: Sequence[str]) -> str:
    """`` (such as a and b)``: two files no field tells apart (stack1 and stack01)."""
    key = _combined([(c.codes, c.card) for c in classes], len(names))
    first: dict[int, int] = {}
    for i, k in enumerate(key.tolist()):
        if k in first:
            return f" (such as {names[first[k]]} and {names[i]})"
        first[k] = i
    return ""


def choose_axes(
    classes: list[TieClass], fields: list[NameField], names: Sequence[str]
) -> list[TieClass]:
    n = len(names)
    forced = [c for c in classes if any(f.role == "axis" for f in c.members)]
    optional = [c for c in classes if c not in forced and c.can_be_axis]
    max_cells = n / MIN_GRID_DENSITY
    key_cache: dict[frozenset[int], bool] = {}

    def is_key(subset: Sequence[TieClass]) -> bool:
        ident = frozenset(id(c) for c in subset)
        if ident not in key_cache:
            key_cache[ident] = _is_key(_combined([(c.codes, c.card) for c in subset], n))
        return key_cache[ident]

    def minimal(subset: list[TieClass], extra: list[TieClass]) -> bool:
        return not any(is_key([c for c in subset if c is not e]) for e in extra)

    candidates: list[tuple[tuple[Any, ...], list[TieClass]]] = []

    def visit(start: int, extra: list[TieClass], cells: int) -> None:
        subset = forced + extra
        if subset and is_key(subset):
            # Any larger set holds this key, so is not minimal: stop here.
            if minimal(subset, extra):
                score = (len(subset), round(n / cells, 6), sum(_rank(c.rep)[-1] for c in subset))
                candidates.append((score, subset))
            return
        for k in range(start, len(optional)):
            # Only grids at least MIN_GRID_DENSITY full are candidates.
            if cells * optional[k].card <= max_cells:
                visit(k + 1, [*extra, optional[k]], cells * optional[k].card)

    visit(0, [], math.prod(c.card for c in forced))

    if not candidates:
        everything = forced + optional
        if not everything or not is_key(everything):
            raise NamingError(
                "Some files share every varying part of their names, so they cannot be told "
                f"apart{_same_cell(everything, names)}:\n"
                + fields_table(fields)
                + "\nGive pattern= with the fields that tell "
                "them apart; start from:\n  " + suggest_template(names)
            )
        # The smallest grid that still indexes the files, for the message (or, when
        # the template forced every axis, as asked).
        best = list(everything)
        for c in sorted(optional, key=lambda c: -c.card):
            if is_key([b for b in best if b is not c]):
                best.remove(c)
        if all(c in forced for c in best):
            return sorted(best, key=lambda c: c.rep.position)
        raise NamingError(
            f"The best grid the names allow is mostly empty ({n} files in "
            f"{math.prod(c.card for c in best)} cells of "
            + " x ".join(f"{c.rep.name}({c.card})" for c in best)
            + "):\n"
            + fields_table(fields)
            + "\nGive pattern= naming the axes ({name:axis} keeps a sparse axis); start from:\n  "
            + suggest_template(names)
        )
    candidates.sort(key=lambda c: c[0], reverse=True)
    best_score, best = candidates[0]
    if len(candidates) > 1 and candidates[1][0] == best_score:
        other = candidates[1][1]
        raise NamingError(
            "The names are ambiguous: both ("
            + ", ".join(c.rep.name for c in best)
            + ") and ("
            + ", ".join(c.rep.name for c in other)
            + ") index the files equally well.\n"
            + fields_table(fields)
            + "\nGive pattern= marking the axes with {name:axis}; start from:\n  "
            + suggest_template(names)
        )
    return sorted(best, key=lambda c: c.rep.position)


def coordinate(f: NameField, axes: list[TieClass], index: list[np.ndarray]) -> Coordinate:
    """A field over the smallest set of axes that determines it.

    ``index[k]`` holds every file's position along ``axes[k]``.
    """
    codes, _ = f.coded
    n = len(codes)
    for size in range(1, len(axes) + 1):
        for subset in itertools.combinations(range(len(axes)), size):
            key = _combined([(axes[k].codes, axes[k].card) for k in subset], n)
            if _determines(key, codes):
                break
        else:
            continue
        break
    shape = tuple(axes[k].card for k in subset)
    cells = np.full(math.prod(shape), None, dtype=object)
    values = np.empty(n, dtype=object)
    values[:] = list(f.values)
    cells[np.ravel_multi_index(tuple(index[k] for k in subset), shape)] = values
    return Coordinate(f.name, tuple(axes[k].rep.name for k in subset), tuple(cells), f.units)

"""File names -> fields -> axes, coordinates and templates.

This module does no I/O. It turns a list of file names (relative paths) into a
:class:`NameGrid`: which varying parts of the names are the axes of the array,
where each file sits on those axes, which parts are coordinates (values that
other parts determine, such as a wavelength fixed by the channel), and a
template that reproduces the understanding.

Inference works on the names alone:

1. Each name is split into tokens at separators and digit/letter boundaries.
   Tokens that never change are ignored; the others are *fields*.
2. Fields tied one-to-one (a channel number and its wavelength) form a class;
   the one that counts (small, regular, labelled integers) represents it.
3. The axes are the set of classes whose value combinations index the files
   (a minimal key) and fill a dense grid, preferring more, shorter axes.
4. Every other field becomes a coordinate over the smallest set of axes that
   determines it.

A template such as ``"{_}_ch{ch}_{_}_stack{stack}_{wavelength}nm_{_}.tif"`` (or a
regular expression with named groups) replaces step 1; ``{name:axis}`` and
``{name:coord}`` force a role, ``{_}`` ignores a part.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import NamingError

__all__ = [
    "TIFF_SUFFIXES",
    "Axis",
    "Coordinate",
    "NameField",
    "NameGrid",
    "axis_kind",
    "natural_key",
    "split_tokens",
    "strip_tiff_suffix",
    "understand_names",
]

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".btf", ".tf8", ".tf2")

AxisKind = Literal["channel", "time", "space", "other"]
Role = Literal["axis", "coord", "auto"]
Value = int | str

#: Labels that count things: a field carrying one of these is preferred as an axis.
COUNTING_LABELS = frozenset(
    {
        "c",
        "ch",
        "chan",
        "channel",
        "w",
        "wl",
        "wave",
        "t",
        "tp",
        "time",
        "timepoint",
        "frame",
        "f",
        "fld",
        "field",
        "fov",
        "s",
        "series",
        "stack",
        "stk",
        "pos",
        "position",
        "p",
        "pt",
        "point",
        "site",
        "tile",
        "view",
        "v",
        "angle",
        "a",
        "z",
        "zplane",
        "plane",
        "slice",
        "sl",
        "x",
        "y",
        "row",
        "r",
        "col",
        "column",
        "well",
        "img",
        "image",
        "im",
        "cam",
        "camera",
        "illumination",
        "ill",
        "il",
        "sk",
        "fk",
        "fl",
        "k",
        "n",
        "i",
        "idx",
        "index",
        "loop",
        "cycle",
        "round",
        "iter",
        "region",
        "roi",
        "scene",
        "sc",
        "m",
        "mark",
    }
)

#: Suffix labels that are units of measurement, with the name and unit they give.
UNIT_LABELS: dict[str, tuple[str, str]] = {
    "nm": ("wavelength", "nm"),
    "msec": ("msec", "ms"),
    "ms": ("ms", "ms"),
    "msecabs": ("msecabs", "ms"),
    "sec": ("sec", "s"),
    "um": ("um", "µm"),
    "µm": ("um", "µm"),
    "mm": ("mm", "mm"),
    "mw": ("power", "mW"),
    "hz": ("frequency", "Hz"),
}

CHANNEL_LABELS = frozenset({"c", "ch", "chan", "channel", "w", "wl", "wave", "wavelength"})
TIME_LABELS = frozenset({"t", "tp", "time", "timepoint", "frame"})
SPACE_LABELS = frozenset({"x", "y", "z"})

#: Below this fraction of filled grid cells the names are not taken as a grid.
MIN_GRID_DENSITY = 0.5

_TOKEN_RE = re.compile(r"\d+|[^\W\d_]+|[\W_]+")


def strip_tiff_suffix(name: str) -> str:
    """Return ``name`` without its TIFF extension (``.tif``, ``.ome.tiff``...).

    Examples
    --------
    >>> strip_tiff_suffix("a/b_t001.ome.tif")
    'a/b_t001'
    """
    lower = name.lower()
    for suffix in TIFF_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_tokens(stem: str) -> list[str]:
    """Split a name into runs of digits, runs of letters and runs of separators.

    Examples
    --------
    >>> split_tokens("xy001c1_t2")
    ['xy', '001', 'c', '1', '_', 't', '2']
    """
    return _TOKEN_RE.findall(stem)


def natural_key(value: Value) -> tuple[int, int | str]:
    """Sort key putting numbers before text, numbers by value, text case-insensitively."""
    if isinstance(value, int):
        return (0, value)
    return (1, value.lower())


def axis_kind(label: str) -> AxisKind:
    """The OME-NGFF axis type a label implies: ``channel``, ``time``, ``space`` or ``other``.

    Examples
    --------
    >>> axis_kind("ch"), axis_kind("T"), axis_kind("z"), axis_kind("stack")
    ('channel', 'time', 'space', 'other')
    """
    low = label.lower()
    if low in CHANNEL_LABELS:
        return "channel"
    if low in TIME_LABELS:
        return "time"
    if low in SPACE_LABELS:
        return "space"
    return "other"


@dataclass(frozen=True)
class NameField:
    """One varying part of the names, with its value in each file."""

    name: str
    position: int
    values: tuple[Value, ...]
    label: str | None = None
    units: str | None = None
    role: Role = "auto"

    @property
    def numeric(self) -> bool:
        return all(isinstance(v, int) for v in self.values)

    @property
    def distinct(self) -> list[Value]:
        return sorted(set(self.values), key=natural_key)

    def counting_score(self) -> int:
        """How much this field looks like a counter rather than a measurement."""
        if not self.numeric:
            return -2
        score = 0
        label = (self.label or "").lower()
        if label in COUNTING_LABELS:
            score += 2
        if label in UNIT_LABELS:
            score -= 3
        distinct = self.distinct
        ints = [int(v) for v in distinct]
        if len(ints) > 1 and all(b - a == 1 for a, b in itertools.pairwise(ints)):
            score += 1
        if ints and max(ints) < 10_000:
            score += 1
        return score


@dataclass(frozen=True)
class Axis:
    """An axis of the array that comes from the file names."""

    name: str
    kind: AxisKind
    values: tuple[Value, ...]
    label: str | None = None
    units: str | None = None

    @property
    def size(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Coordinate:
    """Values of a name field over some of the name axes (``None`` where no file)."""

    name: str
    dims: tuple[str, ...]
    values: tuple[Any, ...]
    units: str | None = None

    def as_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """The values as an object array of ``shape`` (the sizes of ``dims``)."""
        arr = np.empty(len(self.values), dtype=object)
        arr[:] = list(self.values)
        return arr.reshape(shape)


@dataclass(frozen=True)
class NameGrid:
    """What the names say: the axes, where each file sits, coordinates and a template.

    ``positions[i]`` is the index along every axis of the i-th name given.
    """

    axes: tuple[Axis, ...]
    positions: tuple[tuple[int, ...], ...]
    coords: tuple[Coordinate, ...] = ()
    template: str = ""
    fields: tuple[str, ...] = field(default=())

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
            index[pos] = i
        return index

    def missing(self) -> list[dict[str, Value]]:
        """The axis values of every grid cell that has no file."""
        index = self.file_index()
        return [
            {a.name: a.values[i] for a, i in zip(self.axes, cell, strict=True)}
            for cell in zip(*np.nonzero(index < 0), strict=True)
        ]


# ---------------------------------------------------------------------------
# fields from names


def _parse_value(text: str) -> Value:
    return int(text) if text.isdigit() else text


def _unique_name(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name)
    return name


def _fields_from_tokens(names: Sequence[str]) -> tuple[list[NameField], list[list[str]]]:
    """Split names into aligned tokens and return the varying ones as fields."""
    tokenized = [split_tokens(strip_tiff_suffix(n)) for n in names]
    lengths = {len(t) for t in tokenized}
    if len(lengths) > 1:
        by_len: dict[int, str] = {}
        for n, t in zip(names, tokenized, strict=True):
            by_len.setdefault(len(t), n)
        examples = "\n".join(f"  {n!r} ({k} parts)" for k, n in sorted(by_len.items())[:4])
        raise NamingError(
            "The file names do not share one structure, so their axes cannot be inferred:\n"
            f"{examples}\n"
            "Select one acquisition with a narrower glob, or give pattern= with a template "
            "such as '{_}_ch{ch}_stack{stack}.tif' (see `tiffstore inspect --help`)."
        )
    (ntok,) = lengths
    columns = list(zip(*tokenized, strict=True)) if ntok else []
    varying = [len(set(col)) > 1 for col in columns]
    constant_letters = [
        (not v) and bool(col) and col[0].isalpha() for col, v in zip(columns, varying, strict=True)
    ]
    constant_sep = [
        (not v) and bool(col) and not col[0].isalnum()
        for col, v in zip(columns, varying, strict=True)
    ]

    raw: list[tuple[int, str | None, tuple[Value, ...]]] = []
    for i, col in enumerate(columns):
        if not varying[i]:
            continue
        values = tuple(_parse_value(v) for v in col)
        if not all(isinstance(v, int) for v in values):
            values = tuple(str(v) for v in col)
        label: str | None = None
        if i > 0 and constant_letters[i - 1]:
            label = columns[i - 1][0]
        elif i + 1 < ntok and constant_letters[i + 1]:
            label = columns[i + 1][0]
        elif i > 1 and constant_sep[i - 1] and constant_letters[i - 2]:
            label = columns[i - 2][0]
        raw.append((i, label, values))

    taken: set[str] = set()
    fields: list[NameField] = []
    for k, (pos, label, values) in enumerate(raw, start=1):
        units = None
        if label is None:
            base = f"field{k}"
        else:
            low = label.lower()
            if low in UNIT_LABELS:
                base, units = UNIT_LABELS[low]
            else:
                base = low
        fields.append(NameField(_unique_name(base, taken), pos, values, label=label, units=units))
    return fields, tokenized


_TEMPLATE_FIELD_RE = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")


def _template_regex(template: str) -> tuple[re.Pattern[str], list[tuple[str, Role]]]:
    """Compile a ``{name}`` template into a regex and the roles of its fields."""
    parts: list[str] = []
    roles: list[tuple[str, Role]] = []
    pos = 0
    ignored = 0
    for m in _TEMPLATE_FIELD_RE.finditer(template):
        literal = template[pos : m.start()].replace("{{", "{").replace("}}", "}")
        parts.append(re.escape(literal))
        name, spec = m.group(1).strip(), (m.group(2) or "").strip().lower()
        if not name or name.startswith("_"):
            parts.append(f"(?P<_ignored{ignored}>.*?)")
            ignored += 1
        else:
            if not name.isidentifier():
                raise NamingError(
                    f"Template field {{{name}}} is not a valid name; use letters, digits and _."
                )
            if spec not in ("", "axis", "coord", "auto", "d", "s"):
                raise NamingError(
                    f"Template field {{{name}:{spec}}}: the role must be 'axis' or 'coord'."
                )
            role: Role = spec if spec in ("axis", "coord") else "auto"  # type: ignore[assignment]
            if any(n == name for n, _ in roles):
                raise NamingError(f"Template field {{{name}}} appears twice in {template!r}.")
            roles.append((name, role))
            parts.append(f"(?P<{name}>[^/]+?)")
        pos = m.end()
    parts.append(re.escape(template[pos:].replace("{{", "{").replace("}}", "}")))
    if not roles:
        raise NamingError(f"The template {template!r} names no field; write fields as {{name}}.")
    return re.compile("".join(parts)), roles


def _fields_from_pattern(names: Sequence[str], pattern: str) -> list[NameField]:
    """Match every name against a template or a regex with named groups."""
    if "(?P<" in pattern:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise NamingError(f"pattern= is not a valid regular expression: {exc}") from None
        roles: list[tuple[str, Role]] = [(n, "auto") for n in regex.groupindex]
    else:
        regex, roles = _template_regex(pattern)
    has_suffix = strip_tiff_suffix(pattern) != pattern or pattern.endswith("$")
    matched: list[dict[str, str]] = []
    failed: list[str] = []
    for name in names:
        candidates = [name, name.rsplit("/", 1)[-1]]
        if not has_suffix:
            candidates = [strip_tiff_suffix(c) for c in candidates]
        m = next((m for c in candidates if (m := regex.fullmatch(c))), None)
        if m is None:
            failed.append(name)
        else:
            matched.append({k: v for k, v in m.groupdict().items() if v is not None})
    if failed:
        shown = "\n".join(f"  {n}" for n in failed[:5])
        more = f"\n  ... and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise NamingError(
            f"{len(failed)} of {len(names)} files do not match pattern {pattern!r}:\n{shown}{more}\n"
            "Fix the pattern, or select only the acquisition's files with a narrower glob."
        )
    fields = []
    for order, (name, role) in enumerate(roles):
        texts = [m.get(name, "") for m in matched]
        values: tuple[Value, ...] = tuple(_parse_value(t) for t in texts)
        if not all(isinstance(v, int) for v in values):
            values = tuple(texts)
        fields.append(NameField(name, order, values, label=name, role=role))
    return fields


# ---------------------------------------------------------------------------
# axes from fields


def _codes(values: Sequence[Value]) -> tuple[np.ndarray, int]:
    """Integer code of each value and the number of distinct values."""
    lookup: dict[Value, int] = {}
    codes = np.fromiter((lookup.setdefault(v, len(lookup)) for v in values), np.int64, len(values))
    return codes, len(lookup)


def _combined(codes: Sequence[tuple[np.ndarray, int]], n: int) -> np.ndarray:
    key = np.zeros(n, dtype=np.int64)
    for c, card in codes:
        key = key * card + c
        # Re-compress so the mixed-radix key never overflows on many fields.
        _, key = np.unique(key, return_inverse=True)
        key = key.astype(np.int64)
    return key


def _determines(det: np.ndarray, dep: np.ndarray) -> bool:
    """True where each value of ``det`` comes with one value of ``dep``."""
    pairs = np.unique(np.stack([det, dep]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1]


def _is_key(key: np.ndarray) -> bool:
    return len(np.unique(key)) == len(key)


@dataclass
class _Class:
    """Fields tied one-to-one; ``rep`` is the one that becomes the axis."""

    members: list[NameField]
    codes: np.ndarray
    card: int

    @property
    def rep(self) -> NameField:
        return max(self.members, key=lambda f: (f.role == "axis", f.counting_score(), -f.position))


def _tie_classes(fields: list[NameField], n: int) -> list[_Class]:
    classes: list[_Class] = []
    for f in fields:
        codes, card = _codes(f.values)
        for cls in classes:
            if cls.card == card and _determines(cls.codes, codes) and _determines(codes, cls.codes):
                cls.members.append(f)
                break
        else:
            classes.append(_Class([f], codes, card))
    return classes


def _choose_axes(classes: list[_Class], n: int, names: Sequence[str]) -> list[_Class]:
    forced = [c for c in classes if any(f.role == "axis" for f in c.members)]
    optional = [
        c for c in classes if c not in forced and not all(f.role == "coord" for f in c.members)
    ]
    max_extra = min(len(optional), 8)

    key_cache: dict[frozenset[int], bool] = {}

    def is_key(subset: Sequence[_Class]) -> bool:
        ident = frozenset(id(c) for c in subset)
        if ident not in key_cache:
            key_cache[ident] = _is_key(_combined([(c.codes, c.card) for c in subset], n))
        return key_cache[ident]

    candidates: list[tuple[tuple[Any, ...], list[_Class]]] = []
    for size in range(0, max_extra + 1):
        for extra in itertools.combinations(optional, size):
            subset = forced + list(extra)
            if not subset or not is_key(subset):
                continue
            # Minimal: no optional member is determined by the rest.
            if any(is_key([c for c in subset if c is not e]) for e in extra):
                continue
            cells = math.prod(c.card for c in subset)
            density = n / cells
            score = (
                density >= MIN_GRID_DENSITY,
                len(subset),
                round(density, 6),
                sum(c.rep.counting_score() for c in subset),
            )
            candidates.append((score, subset))
    if not candidates:
        raise NamingError(
            "Some files share every varying part of their names, so they cannot be told apart:\n"
            + _fields_table(classes)
            + "\nGive pattern= with the fields that tell them apart."
        )
    candidates.sort(key=lambda c: c[0], reverse=True)
    best_score, best = candidates[0]
    if not best_score[0]:
        raise NamingError(
            f"The best grid the names allow is mostly empty ({n} files in "
            f"{math.prod(c.card for c in best)} cells of "
            + " x ".join(f"{c.rep.name}({c.card})" for c in best)
            + "):\n"
            + _fields_table(classes)
            + "\nGive pattern= naming the axes; start from:\n  "
            + _suggest_template(names)
        )
    if len(candidates) > 1 and candidates[1][0] == best_score:
        other = candidates[1][1]
        raise NamingError(
            "The names are ambiguous: both ("
            + ", ".join(c.rep.name for c in best)
            + ") and ("
            + ", ".join(c.rep.name for c in other)
            + ") index the files equally well.\n"
            + _fields_table(classes)
            + "\nGive pattern= marking the axes with {name:axis}; start from:\n  "
            + _suggest_template(names)
        )
    return sorted(best, key=lambda c: c.rep.position)


def _fields_table(classes: list[_Class]) -> str:
    lines = ["Fields found (name: distinct values, examples):"]
    for c in classes:
        for f in c.members:
            distinct = f.distinct
            ex = ", ".join(map(str, distinct[:4])) + (", ..." if len(distinct) > 4 else "")
            lines.append(f"  {f.name}: {len(distinct)} ({ex})")
    return "\n".join(lines)


def _suggest_template(names: Sequence[str]) -> str:
    try:
        fields, tokenized = _fields_from_tokens(names)
    except NamingError:
        return "{_}_{field1}_{field2}.tif"
    return _render_template(names[0], tokenized[0], fields, set())


def _render_template(
    name: str, tokens: list[str], fields: list[NameField], coord_names: set[str]
) -> str:
    by_pos = {f.position: f for f in fields}
    out = []
    for i, tok in enumerate(tokens):
        if i in by_pos:
            f = by_pos[i]
            out.append("{" + f.name + (":coord" if f.name in coord_names else "") + "}")
        else:
            out.append(tok.replace("{", "{{").replace("}", "}}"))
    stem = strip_tiff_suffix(name)
    return "".join(out) + name[len(stem) :]


def _coordinate(f: NameField, axes: list[_Class], n: int) -> Coordinate:
    """A field over the smallest set of axes that determines it."""
    codes, _ = _codes(f.values)
    for size in range(1, len(axes) + 1):
        for subset in itertools.combinations(axes, size):
            key = _combined([(c.codes, c.card) for c in subset], n)
            if _determines(key, codes):
                return _coordinate_over(f, list(subset))
    return _coordinate_over(f, axes)  # all axes form a key, so this is unreachable


def _coordinate_over(f: NameField, subset: list[_Class]) -> Coordinate:
    value_order = [{v: i for i, v in enumerate(c.rep.distinct)} for c in subset]
    shape = tuple(c.card for c in subset)
    cells: list[Any] = [None] * math.prod(shape)
    for i, v in enumerate(f.values):
        idx = tuple(order[c.rep.values[i]] for order, c in zip(value_order, subset, strict=True))
        cells[int(np.ravel_multi_index(idx, shape))] = v
    return Coordinate(f.name, tuple(c.rep.name for c in subset), tuple(cells), f.units)


def understand_names(names: Sequence[str], pattern: str | None = None) -> NameGrid:
    """Work out the axes and coordinates that a list of file names describes.

    Parameters
    ----------
    names
        File names, as paths relative to the acquisition's root (``/``-separated).
    pattern
        Optional template (``"{_}_ch{ch}_stack{stack}.tif"``; ``{_}`` ignores a part,
        ``{name:axis}`` / ``{name:coord}`` force a role) or a regular expression
        with named groups. Without it the fields are inferred from the names.

    Returns
    -------
    NameGrid
        The axes (outermost first, in the order their fields appear in the names),
        each name's position on them, the coordinates and a template.

    Raises
    ------
    NamingError
        When the names do not form a grid, are ambiguous, or do not match ``pattern``.

    Examples
    --------
    >>> g = understand_names(["a_ch1_t1.tif", "a_ch1_t2.tif", "a_ch2_t1.tif", "a_ch2_t2.tif"])
    >>> g.dims, g.shape
    (('ch', 't'), (2, 2))
    """
    names = list(names)
    n = len(names)
    if n == 0:
        raise NamingError("No file names to understand.")
    if len(set(names)) != n:
        dup = next(x for x in names if names.count(x) > 1)
        raise NamingError(f"The file {dup!r} is listed twice.")
    if pattern is None:
        fields, tokenized = _fields_from_tokens(names)
    else:
        fields, tokenized = _fields_from_pattern(names, pattern), []

    if n == 1 and not any(f.role == "axis" for f in fields):
        return NameGrid(axes=(), positions=((),), template=names[0])
    if not fields:
        raise NamingError(
            f"The {n} file names have no part that varies, so they cannot be placed on axes."
        )

    classes = _tie_classes(fields, n)
    chosen = _choose_axes(classes, n, names)

    axes: list[Axis] = []
    positions_by_axis: list[list[int]] = []
    for c in chosen:
        rep = c.rep
        distinct = rep.distinct
        order = {v: i for i, v in enumerate(distinct)}
        positions_by_axis.append([order[v] for v in rep.values])
        label = rep.label or rep.name
        axes.append(Axis(rep.name, axis_kind(label), tuple(distinct), rep.label, rep.units))
    positions = tuple(zip(*positions_by_axis, strict=True)) if axes else tuple(() for _ in names)

    axis_fields = {id(c.rep) for c in chosen}
    coords = tuple(
        _coordinate(f, chosen, n) for c in classes for f in c.members if id(f) not in axis_fields
    )
    coord_names = {c.name for c in coords}
    if tokenized:
        template = _render_template(names[0], tokenized[0], fields, coord_names)
    else:
        template = pattern or ""
    grid = NameGrid(
        axes=tuple(axes),
        positions=positions,
        coords=coords,
        template=template,
        fields=tuple(f.name for f in fields),
    )
    logger.debug("understood %d names as %s %s", n, grid.dims, grid.shape)
    return grid


def describe_fields(fields: Iterable[NameField]) -> str:
    """One line per field, for messages."""
    return "\n".join(f"{f.name}: {len(set(f.values))} values" for f in fields)

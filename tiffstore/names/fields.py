"""Aligned columns -> named fields: which parts of the names vary, and what each is called.

A :class:`NameField` is one varying part of the names with its value in each file,
named after the constant word beside it (``ch1`` -> ``ch``), a unit (``560nm`` ->
``wavelength``), a well ID (``B03`` -> ``row``, ``col``, ``well``), a known
instrument's convention, or a channel name (``DAPI``). No I/O.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from tiffstore.names.axes import Value, axis_kind
from tiffstore.names.tokens import (
    UUID_RE,
    Columns,
    align,
    all_int,
    is_constant,
    natural_key,
    strip_suffixes,
)

__all__ = [
    "CHANNEL_NAMES",
    "CONVENTIONS",
    "COUNTING_LABELS",
    "GENERIC_WORDS",
    "UNIT_LABELS",
    "NameField",
    "Role",
    "codes_of",
    "fields_from_columns",
    "fields_from_names",
    "fields_table",
    "parse_values",
    "unique_name",
]

Role = Literal["axis", "coord", "auto"]

#: Labels that count things: a field carrying one of these is preferred as an axis.
COUNTING_LABELS = frozenset(
    {
        *("c", "ch", "chan", "channel", "w", "wl", "wave"),
        *("t", "tp", "time", "timepoint", "frame", "loop", "cycle", "round", "iter"),
        *("f", "fld", "field", "fov", "s", "site", "series", "stack", "stk"),
        *("pos", "position", "p", "pt", "point", "xy", "tile", "view", "v", "angle", "a"),
        *("z", "zplane", "plane", "slice", "sl", "x", "y", "row", "r", "col", "column", "well"),
        *("cam", "camera", "illumination", "ill", "il", "sk", "fk", "fl", "k", "n", "i"),
        *("idx", "index", "region", "roi", "scene", "sc", "m", "mark"),
    }
)

#: Words that say "this is an image" rather than what a number counts: not labels
#: when a separator stands between them and the number (``img_000000003``).
GENERIC_WORDS = frozenset({"img", "image", "im", "pic", "file", "data", "raw", "export"})

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

#: Channel names that microscopes write into names in place of a channel number
#: (compared lower-cased, without spaces, dashes or underscores).
CHANNEL_NAMES = frozenset(
    {
        *("dapi", "hoechst", "draq5", "gfp", "egfp", "yfp", "cfp", "bfp", "rfp", "mcherry"),
        *("tdtomato", "mkate", "fitc", "tritc", "txred", "texasred", "cy2", "cy3", "cy35"),
        *("cy5", "cy55", "cy7", "af488", "af555", "af568", "af594", "af647", "a488", "a568"),
        *("a594", "a647", "brightfield", "bf", "phase", "phasecontrast", "dic", "farred"),
        *("trans", "transmitted", "pi"),
    }
)


_WELL_ROW_RE = re.compile(r"[A-Z]{1,2}")
_WELL_RE = re.compile(r"([A-Z]{1,2})(\d*)")

#: Instruments whose names carry no labels, or labels that mislead (Harmony's ``c``
#: is the plate column, ``p`` the plane): named groups give the fields their names.
CONVENTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "PerkinElmer Harmony (Opera, Operetta)",
        re.compile(
            r"r(?P<row>\d+)c(?P<col>\d+)f(?P<field>\d+)p(?P<z>\d+)"
            r"-ch(?P<ch>\d+)sk(?P<t>\d+)(?:fk\d+fl\d+)?"
        ),
    ),
    (
        "Micro-Manager 1.4 image files",
        re.compile(r"img_(?P<time>\d{9})_(?P<channel>[^/]+)_(?P<z>\d{3})"),
    ),
)


def _plate_key(value: Value) -> tuple[Any, ...]:
    """Plate order for rows and wells: A..Z, then AA..AF (1536-well plates)."""
    m = _WELL_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        return (1, natural_key(value))
    return (0, len(m[1]), m[1], int(m[2] or 0))


@dataclass(frozen=True)
class NameField:
    """One varying part of the names, with its value in each file.

    ``position`` orders the fields as they appear in the names; ``width`` is the
    number of name parts the field spans (2 for a well ``B03`` made of a row and
    a column).
    """

    name: str
    position: int
    values: tuple[Value, ...]
    label: str | None = None
    units: str | None = None
    role: Role = "auto"
    width: int = 1

    @cached_property
    def numeric(self) -> bool:
        return all_int(self.values)

    @cached_property
    def distinct(self) -> list[Value]:
        if self.numeric:
            # Integers sort by value under either key: no Python key per value.
            return sorted(set(self.values))
        key = _plate_key if self.label in ("row", "well") else natural_key
        return sorted(set(self.values), key=key)

    @cached_property
    def coded(self) -> tuple[np.ndarray, int]:
        """:func:`codes_of` of the values, worked out once."""
        return codes_of(self.values)

    def counting_score(self) -> int:
        return self._counting_score

    @cached_property
    def _counting_score(self) -> int:
        """How much this field looks like a counter rather than a measurement.

        Counters are small integers from 0 or 1 in steps of one, often labelled
        (``ch``, ``t``); measurements (wavelengths, timestamps, stage positions) are
        large, irregular or carry a unit.
        """
        if not self.numeric:
            return -2
        score = 0
        label = (self.label or "").lower()
        if label in COUNTING_LABELS:
            score += 1
        if axis_kind(label) != "other":
            score += 1
        if self.units:
            score -= 3
        ints = [int(v) for v in self.distinct]
        steps = set(map(operator.sub, ints[1:], ints[:-1]))
        if len(steps) == 1:
            score += 2 if steps == {1} else 1
        if ints[0] in (0, 1):
            score += 1
        if ints[-1] < 1_000:
            score += 1
        elif ints[-1] >= 10_000:
            score -= 1
        return score


def parse_values(texts: Sequence[str]) -> tuple[Value, ...]:
    distinct = set(texts)
    if all(map(str.isdigit, distinct)):
        if 4 * len(distinct) < len(texts):
            number = {t: int(t) for t in distinct}
            return tuple(map(number.__getitem__, texts))
        return tuple(map(int, texts))
    return tuple(texts)


def unique_name(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name)
    return name


def _is_channel_names(values: Sequence[Value]) -> bool:
    distinct = {re.sub(r"[\W_]+", "", str(v)).lower() for v in values}
    return 2 * len(distinct & CHANNEL_NAMES) >= len(distinct)


def _label_of(cols: Columns, i: int, numeric: bool) -> str | None:
    """The constant word naming part ``i``: right before it, right after it (numbers
    only: ``560nm``, ``000x``), or before it across a separator (``Position 1``)."""
    columns, kinds = cols.columns, cols.kinds

    def constant_word(j: int) -> str | None:
        if 0 <= j < len(columns) and kinds[j] == "a" and is_constant(columns[j]):
            return columns[j][0]
        return None

    def constant_sep(j: int) -> bool:
        return 0 <= j < len(columns) and kinds[j][0] == "s" and is_constant(columns[j])

    if (word := constant_word(i - 1)) is not None:
        return word
    if numeric and (word := constant_word(i + 1)) is not None:
        return word
    if numeric and constant_sep(i - 1) and (word := constant_word(i - 2)) is not None:
        return word if word.lower() not in GENERIC_WORDS else None
    return None


def _well_parts(cols: Columns, varying: list[bool]) -> list[int]:
    """Parts ``i`` where parts ``i, i+1`` are well IDs (``B03``) whose row letter varies."""
    out = []
    columns, kinds = cols.columns, cols.kinds
    for i in range(len(columns) - 1):
        if not (varying[i] and kinds[i] == "a" and kinds[i + 1] == "d"):
            continue
        if not (
            (i == 0 or kinds[i - 1][0] == "s") and (i + 2 == len(kinds) or kinds[i + 2][0] == "s")
        ):
            continue
        if all(_WELL_ROW_RE.fullmatch(r) for r in columns[i]) and all(
            len(c) <= 3 and 1 <= int(c) <= 48 for c in columns[i + 1]
        ):
            out.append(i)
    return out


def _convention_names(stems: Sequence[str], cols: Columns) -> dict[int, str]:
    """Names that a known instrument convention gives to parts of the names."""
    spans = cols.first_name_spans()
    for _title, regex in CONVENTIONS:
        pattern = re.compile(r"(?:^|/)" + regex.pattern + "$")
        m = pattern.search(stems[0])
        if m is None or not all(pattern.search(s) for s in stems[1:]):
            continue
        out = {}
        for group in m.re.groupindex:
            if m.span(group) in spans:
                out[spans.index(m.span(group))] = group
        return out
    return {}


def fields_from_names(names: Sequence[str]) -> tuple[list[NameField], Columns] | None:
    """The varying parts of ``names`` as named fields, and the aligned columns; ``None``
    when the names do not share one structure."""
    cols = align(strip_suffixes(names))
    return None if cols is None else (fields_from_columns(names, cols), cols)


def fields_from_columns(names: Sequence[str], cols: Columns) -> list[NameField]:
    """The varying columns of aligned names as named fields."""
    stems = strip_suffixes(names)
    columns, kinds = cols.columns, cols.kinds
    varying = [not is_constant(col) for col in columns]
    convention = _convention_names(stems, cols)
    wells = _well_parts(cols, varying)

    # (position, base name, values, label, units, role, width)
    found: list[tuple[int, str, tuple[Value, ...], str | None, str | None, Role, int]] = []
    for k, i in enumerate(i for i, v in enumerate(varying) if v):
        values = parse_values(columns[i])
        numeric = all_int(values)
        label = _label_of(cols, i, numeric)
        units: str | None = None
        role: Role = "auto"
        base = f"field{k + 1}"
        if i in convention:
            base = label = convention[i]
        elif i in wells:
            base = label = "row"
        elif i - 1 in wells:
            base = label = "col"
        elif kinds[i] == "x" and all(UUID_RE.fullmatch(v) for v in columns[i]):
            # A UUID tells files apart but never orders them: never an axis.
            base, label, role = "uuid", None, "coord"
        elif kinds[i] == "x":
            base = label = "datetime"
        elif label is not None and label.lower() in UNIT_LABELS:
            base, units = UNIT_LABELS[label.lower()]
        elif label is not None:
            base = label.lower()
        elif not numeric and _is_channel_names(values):
            base = label = "channel"
        found.append((i, base, values, label, units, role, 1))
    for i in wells:
        if varying[i + 1]:
            wells_values = tuple(r + c for r, c in zip(columns[i], columns[i + 1], strict=True))
            found.append((i, "well", wells_values, "well", None, "auto", 2))

    taken: set[str] = set()
    fields = [
        NameField(unique_name(base, taken), pos, values, label, units, role, width)
        for pos, base, values, label, units, role, width in found
    ]
    return fields


def fields_table(fields: Sequence[NameField]) -> str:
    lines = ["Fields found (name: distinct values, examples):"]
    for f in fields:
        distinct = f.distinct
        ex = ", ".join(map(str, distinct[:4])) + (", ..." if len(distinct) > 4 else "")
        lines.append(f"  {f.name}: {len(distinct)} ({ex})")
    return "\n".join(lines)


def codes_of(values: Sequence[Value]) -> tuple[np.ndarray, int]:
    """Integer code of each value and the number of distinct values."""
    if all_int(values):
        # np.unique sorts in C: ~20x faster than a dict over 100,000 names.
        distinct, codes = np.unique(np.fromiter(values, np.int64, len(values)), return_inverse=True)
        return codes.astype(np.int64), len(distinct)
    lookup: dict[Value, int] = {}
    codes = np.fromiter((lookup.setdefault(v, len(lookup)) for v in values), np.int64, len(values))
    return codes, len(lookup)

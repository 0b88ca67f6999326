"""File names -> fields -> axes, coordinates and templates.

This module does no I/O. It turns a list of file names (relative paths) into a
:class:`NameGrid`: which varying parts of the names are the axes of the array,
where each file sits on those axes, which parts are coordinates (values that
other parts determine, such as a wavelength fixed by the channel), and a
template that reproduces the understanding.

Inference works on the names alone:

1. Each name is split into tokens at separators and digit/letter boundaries
   (UUIDs and date-times stay whole). The names are aligned token by token; where
   their structure differs (``Cy5`` against ``DAPI``), the differing part between
   separators is one text field. Tokens that never change are ignored; the others
   are *fields*, named after the constant word next to them (``ch1`` -> ``ch``).
   Well IDs (``B03``) give ``row``, ``col`` and ``well``; a few instruments whose
   names have no labels (Micro-Manager 1.4) or reuse them (Harmony's ``c`` for
   column) are named by their convention.
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
import operator
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any, Literal

import numpy as np

from .axes import (
    Axis,
    Coordinate,
    Value,
    axis_kind,
)
from .errors import NamingError
from .sources import TIFF_SUFFIXES

__all__ = [
    "NameField",
    "NameGrid",
    "find_strays",
    "natural_key",
    "split_tokens",
    "strip_tiff_suffix",
    "understand_names",
]

logger = logging.getLogger(__name__)


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

#: Below this fraction of filled grid cells the names are not taken as a grid.
MIN_GRID_DENSITY = 0.5

_UUID = (
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
)
_DATETIME = (
    r"(?<!\d)(?:"
    # Incucyte: 2023y05m01d_12h00m
    r"(?:19|20)\d\dy[01]\dm[0-3]\dd_[0-2]\dh[0-5]\dm"
    # ISO-like: 2023-05-01, 2023-05-01_12-30-05, 2023-05-01T123005
    r"|(?:19|20)\d\d-[01]\d-[0-3]\d(?:[T_ ][0-2]\d[-.h]?[0-5]\d(?:[-.m]?[0-5]\d(?:[.,]\d+)?)?)?"
    # compact: 20230501_123005
    r"|(?:19|20)\d\d[01]\d[0-3]\d[T_-]?[0-2]\d[0-5]\d[0-5]\d"
    r")(?!\d)"
)
_UUID_RE = re.compile(_UUID)
# Parts of a name that are one value although they mix digits, letters and separators.
_ATOM_RE = re.compile(f"{_UUID}|{_DATETIME}")
_TOKEN_RE = re.compile(r"\d+|[^\W\d_]+|[\W_]+")
_NATURAL_RE = re.compile(r"(\d+)")
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


def _strip_suffixes(names: Sequence[str]) -> list[str]:
    """:func:`strip_tiff_suffix` of every name, worked out once per distinct ending."""
    cut: dict[str, int] = {}
    stems = []
    for name in names:
        tail = name[-9:]  # as long as the longest suffix
        k = cut.get(tail)
        if k is None:
            k = len(tail) - len(strip_tiff_suffix(tail)) if tail.isascii() else -1
            cut[tail] = k
        stems.append(name[: len(name) - k] if k >= 0 else strip_tiff_suffix(name))
    return stems


def _all_int(values: Sequence[Any]) -> bool:
    """``all(isinstance(v, int) for v in values)``, one check per type."""
    return all(issubclass(t, int) for t in set(map(type, values)))


def _is_constant(col: Sequence[Any]) -> bool:
    """Whether every value equals the first (faster than a set of 100,000 names)."""
    return not col or col.count(col[0]) == len(col)


def split_tokens(stem: str) -> list[str]:
    """Split a name into runs of digits, letters and separators; UUIDs and date-times stay whole.

    Examples
    --------
    >>> split_tokens("xy001c1_t2")
    ['xy', '001', 'c', '1', '_', 't', '2']
    >>> split_tokens("B03_w1A1B2C3D4-0000-4000-8000-0123456789AB")
    ['B', '03', '_', 'w', '1', 'A1B2C3D4-0000-4000-8000-0123456789AB']
    """
    tokens: list[str] = []
    pos = 0
    for m in _ATOM_RE.finditer(stem):
        tokens += _TOKEN_RE.findall(stem[pos : m.start()])
        tokens.append(m.group())
        pos = m.end()
    tokens += _TOKEN_RE.findall(stem[pos:])
    return tokens


def natural_key(value: Value) -> tuple[int, Any]:
    """Sort key: numbers before text, numbers by value, text naturally and case-insensitively.

    Examples
    --------
    >>> sorted(["B10", "b9", 3, "A1"], key=natural_key)
    [3, 'A1', 'b9', 'B10']
    """
    if isinstance(value, int):
        return (0, value)
    parts = _NATURAL_RE.split(value.lower())
    return (1, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p))


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
        return _all_int(self.values)

    @cached_property
    def distinct(self) -> list[Value]:
        if self.numeric:
            # Integers sort by value under either key: no Python key per value.
            return sorted(set(self.values))
        key = _plate_key if self.label in ("row", "well") else natural_key
        return sorted(set(self.values), key=key)

    @cached_property
    def _coded(self) -> tuple[np.ndarray, int]:
        """:func:`_codes` of the values, worked out once."""
        return _codes(self.values)

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

    def missing(self) -> list[dict[str, Value]]:
        """The axis values of every grid cell that has no file."""
        index = self.file_index()
        return [
            {a.name: a.values[i] for a, i in zip(self.axes, cell, strict=True)}
            for cell in zip(*np.nonzero(index < 0), strict=True)
        ]


# ---------------------------------------------------------------------------
# names -> aligned columns


def _token_kind(token: str) -> str:
    """``d`` digits, ``a`` letters, ``x`` a UUID or date-time, else the separator itself."""
    if token.isdigit():
        return "d"
    return _word_kind(token)


@lru_cache(maxsize=4096)
def _word_kind(token: str) -> str:
    if _ATOM_RE.fullmatch(token):
        return "x"
    if token[0].isalpha():
        return "a"
    return "s" + token


def _is_free_text(tokens: list[str]) -> bool:
    """Whether tokens read as one free-text value (``Cy5``, ``Bright Field``, ``mCherry``).

    A number standing alone, a UUID or a folder among them means a part that other
    names lack (``_thumb``, ``_001``), not one value of the same part.
    """
    kinds = [_token_kind(t) for t in tokens]
    if not tokens or "x" in kinds or "s/" in kinds:
        return False
    return all(
        k != "d" or (j > 0 and kinds[j - 1] == "a") or (j + 1 < len(kinds) and kinds[j + 1] == "a")
        for j, k in enumerate(kinds)
    )


@dataclass(frozen=True)
class _Columns:
    """The names cut into aligned parts: ``columns[j][i]`` is part ``j`` of name ``i``."""

    columns: tuple[tuple[str, ...], ...]
    kinds: tuple[str, ...]

    def first_name_spans(self) -> list[tuple[int, int]]:
        """Character span of every part in the first name."""
        spans, pos = [], 0
        for col in self.columns:
            spans.append((pos, pos + len(col[0])))
            pos += len(col[0])
        return spans


def _folder(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def _glob_hint(main: Sequence[str], others: Sequence[str]) -> str:
    """An ``include=``/``exclude=`` choice that keeps ``main`` and drops ``others``, for
    messages; empty when no simple glob tells them apart."""
    main_dirs = {_folder(n) for n in main}
    other_dirs = {_folder(n) for n in others}

    def spelled(option: str, globs: Sequence[str]) -> str:
        lib = ", ".join(f"{g!r}" for g in globs)
        cli = " ".join(f"--{option} '{g}'" for g in globs)
        return f"{option}=[{lib}] ({cli})"

    if not main_dirs & other_dirs:
        if main_dirs == {""}:
            tops = sorted({n.split("/", 1)[0] for n in others})
            if len(tops) <= 3:
                return (
                    spelled("exclude", [f"{t}/*" for t in tops])
                    + ", or recursive=False (--no-recursive)"
                )
        elif len(main_dirs) == 1:
            (folder,) = main_dirs
            return spelled("include", [f"{folder}/*"])
    if len(others) == 1:
        return spelled("exclude", [re.sub(r"([*?\[])", r"[\1]", others[0])])
    # A common ending of the other names (``_MIP_z.tif``) that no kept name has.
    ending = "".join(
        reversed(
            [
                chars[0]
                for chars in itertools.takewhile(
                    lambda chars: len(set(chars)) == 1,
                    zip(*(n[::-1] for n in others), strict=False),
                )
            ]
        )
    )
    ending = ending.lstrip("0123456789")
    shortest = min(map(len, others))
    if 4 < len(ending) < shortest and not any(n.endswith(ending) for n in main):
        return spelled("exclude", [f"*{ending}"])
    return ""


def _structure_error(names: Sequence[str], signatures: list[tuple[str, ...]]) -> str:
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, sig in zip(names, signatures, strict=True):
        groups.setdefault(sig, []).append(name)
    # The largest group first; among equals the one fewest folders down.
    ranked = sorted(groups.values(), key=lambda g: (-len(g), g[0].count("/")))
    examples = "\n".join(f"  {g[0]!r} (and {len(g) - 1} more like it)" for g in ranked[:4])
    main = ranked[0]
    others = [n for g in ranked[1:] for n in g]
    hint = _glob_hint(main, others)
    files = "the file" if len(main) == 1 else f"the {len(main)} files"
    choose = (
        f"To open {files} like the first, pass {hint}; or "
        if hint
        else "Select one acquisition with a narrower glob or include=/exclude= globs, or "
    )
    return (
        f"The file names do not share one structure (they fall into {len(groups)} groups: "
        f"another folder level or another part), so their axes cannot be inferred:\n"
        f"{examples}\n" + choose + "give pattern= with a template; "
        f"for names like the first, start from:\n  {_suggest_template(main)}"
    )


def find_strays(names: Sequence[str]) -> tuple[str, ...]:
    """Names with a part that the other names lack, which must not invent an axis.

    A stray name is the structure of most names with one extra part that starts or
    ends at a separator (``..._0000t_thumb.tif`` beside ``..._0000t.tif``, ``a (1).tif``
    beside ``a.tif``): either the name without that part is another file's name, or
    few files (at most one in 20) have it. Strays are fewer than half the names.
    Differing free text of one part (channels ``DAPI``, ``Cy5``, ``Bright Field``)
    is not stray.

    Examples
    --------
    >>> find_strays(["a_t1.tif", "a_t2.tif", "a_t3.tif", "a_t2_thumb.tif"])
    ('a_t2_thumb.tif',)
    """
    names = list(names)
    if len(names) < 3:
        return ()
    stems = _strip_suffixes(names)
    if _align_like_first(stems) is not None:
        return ()
    tokenized = [split_tokens(s) for s in stems]
    signatures = [tuple(map(_token_kind, t)) for t in tokenized]
    counts = Counter(signatures)
    main = max(counts, key=lambda sig: (counts[sig], -len(sig)))
    main_stems = {st for st, sig in zip(stems, signatures, strict=True) if sig == main}
    few = max(1, len(names) // 20)
    strays: list[str] = []
    for name, tokens, sig in zip(names, tokenized, signatures, strict=True):
        extra = len(sig) - len(main)
        if extra <= 0:
            continue
        for i in range(len(main) + 1):
            if sig[:i] != main[:i] or sig[i + extra :] != main[i:]:
                continue
            if sig[i][0] != "s" and sig[i + extra - 1][0] != "s":
                continue
            if counts[sig] <= few or "".join(tokens[:i] + tokens[i + extra :]) in main_stems:
                strays.append(name)
                break
    if 2 * len(strays) >= len(names):
        return ()
    return tuple(strays)


_KIND_GROUPS = {"d": r"(\d+)", "a": r"([^\W\d_]+)", "x": f"({_UUID}|{_DATETIME})"}


def _align_like_first(stems: Sequence[str]) -> _Columns | None:
    """Columns of names all cut like the first one, or ``None`` where some are not.

    One regex match per name instead of tokenizing each in Python: listings of
    hundreds of thousands of files are usual.
    """
    tokens = split_tokens(stems[0])
    kinds = [_token_kind(t) for t in tokens]
    n_atoms = kinds.count("x")
    # A separator that differs means the names are cut one by one, so without
    # UUIDs or date-times (where the groups could cut a name several ways) the
    # separators are matched as the first name's text and not captured: fewer groups,
    # and a name whose separators differ does not match. On ASCII names (the usual
    # case) re.ASCII gives the same classes, faster.
    literal = n_atoms == 0
    flags = re.ASCII if all(map(str.isascii, stems)) else 0
    regex = re.compile(
        "".join(
            _KIND_GROUPS[k] if k[0] != "s" else re.escape(k[1:]) if literal else r"([\W_]+)"
            for k in kinds
        ),
        flags,
    )
    matches = list(map(regex.fullmatch, stems))
    if not all(matches):
        return None
    # Names whose first holds a UUID or date-time: check the others hold as many
    # whole ones, not a shape the groups could also cut into numbers and words.
    if n_atoms and any(len(_ATOM_RE.findall(s)) != n_atoms for s in stems):
        return None
    n = len(stems)
    captured = iter(zip(*(m.groups() for m in matches if m), strict=True))
    columns = [(k[1:],) * n if literal and k[0] == "s" else next(captured) for k in kinds]
    if any(k[0] == "s" and not _is_constant(c) for k, c in zip(kinds, columns, strict=True)):
        return None  # a separator that differs: cut the names one by one
    return _split_lettered(columns, kinds)


def _align(names: Sequence[str], stems: Sequence[str]) -> _Columns:
    """Cut every name into the same sequence of parts.

    Names of one structure align token by token. Where the structures differ (a
    channel called ``Cy5`` among ``DAPI`` and ``GFP``), the common parts are aligned
    from both ends and what lies between them, cut at separators, is one part.
    """
    aligned = _align_like_first(stems)
    if aligned is not None:
        return aligned
    tokenized = [split_tokens(s) for s in stems]
    signatures = [tuple(_token_kind(t) for t in toks) for toks in tokenized]
    if len(set(signatures)) == 1:
        return _split_lettered(list(zip(*tokenized, strict=True)), list(signatures[0]))

    first = signatures[0]
    shortest = min(len(s) for s in signatures)
    prefix = 0
    while prefix < shortest and len({s[prefix] for s in signatures}) == 1:
        prefix += 1
    while prefix and first[prefix - 1][0] != "s":
        prefix -= 1
    suffix = 0
    while suffix < shortest - prefix and len({s[-1 - suffix] for s in signatures}) == 1:
        suffix += 1
    while suffix and first[-suffix][0] != "s":
        suffix -= 1
    middles = [t[prefix : len(t) - suffix] for t in tokenized]
    if not (prefix or suffix) or not all(_is_free_text(m) for m in middles):
        raise NamingError(_structure_error(names, signatures))
    columns = [tuple(t[k] for t in tokenized) for k in range(prefix)]
    columns.append(tuple("".join(m) for m in middles))
    columns += [tuple(t[len(t) - suffix + k] for t in tokenized) for k in range(suffix)]
    kinds = [*first[:prefix], "m", *first[len(first) - suffix :]]
    return _split_lettered(columns, kinds)


def _split_lettered(columns: list[tuple[str, ...]], kinds: list[str]) -> _Columns:
    """Split words that vary only in a short ending (``CamA``, ``CamB``) into the
    constant word, a label, and the ending, a value."""
    out_columns: list[tuple[str, ...]] = []
    out_kinds: list[str] = []
    for col, kind in zip(columns, kinds, strict=True):
        stem = ""
        distinct = set(col) if kind == "a" and not _is_constant(col) else ()
        if len(distinct) > 1:
            stem = min(distinct)
            for v in distinct:
                while not v.startswith(stem):
                    stem = stem[:-1]
        if len(stem) >= 2 and all(0 < len(v) - len(stem) <= 2 for v in distinct):
            out_columns += [(stem,) * len(col), tuple(v[len(stem) :] for v in col)]
            out_kinds += ["a", "a"]
        else:
            out_columns.append(col)
            out_kinds.append(kind)
    return _Columns(tuple(out_columns), tuple(out_kinds))


# ---------------------------------------------------------------------------
# columns -> named fields


def _parse_values(texts: Sequence[str]) -> tuple[Value, ...]:
    distinct = set(texts)
    if all(map(str.isdigit, distinct)):
        if 4 * len(distinct) < len(texts):
            number = {t: int(t) for t in distinct}
            return tuple(map(number.__getitem__, texts))
        return tuple(map(int, texts))
    return tuple(texts)


def _unique_name(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name)
    return name


def _is_channel_names(values: Sequence[Value]) -> bool:
    distinct = {re.sub(r"[\W_]+", "", str(v)).lower() for v in values}
    return 2 * len(distinct & CHANNEL_NAMES) >= len(distinct)


def _label_of(cols: _Columns, i: int, numeric: bool) -> str | None:
    """The constant word naming part ``i``: right before it, right after it (numbers
    only: ``560nm``, ``000x``), or before it across a separator (``Position 1``)."""
    columns, kinds = cols.columns, cols.kinds

    def constant_word(j: int) -> str | None:
        if 0 <= j < len(columns) and kinds[j] == "a" and _is_constant(columns[j]):
            return columns[j][0]
        return None

    def constant_sep(j: int) -> bool:
        return 0 <= j < len(columns) and kinds[j][0] == "s" and _is_constant(columns[j])

    if (word := constant_word(i - 1)) is not None:
        return word
    if numeric and (word := constant_word(i + 1)) is not None:
        return word
    if numeric and constant_sep(i - 1) and (word := constant_word(i - 2)) is not None:
        return word if word.lower() not in GENERIC_WORDS else None
    return None


def _well_parts(cols: _Columns, varying: list[bool]) -> list[int]:
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


def _convention_names(stems: Sequence[str], cols: _Columns) -> dict[int, str]:
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


def _fields_from_names(
    names: Sequence[str], cols: _Columns | None = None
) -> tuple[list[NameField], _Columns]:
    """Split names into aligned parts (unless given) and return the varying ones as
    named fields."""
    stems = _strip_suffixes(names)
    if cols is None:
        cols = _align(names, stems)
    columns, kinds = cols.columns, cols.kinds
    varying = [not _is_constant(col) for col in columns]
    convention = _convention_names(stems, cols)
    wells = _well_parts(cols, varying)

    # (position, base name, values, label, units, role, width)
    found: list[tuple[int, str, tuple[Value, ...], str | None, str | None, Role, int]] = []
    for k, i in enumerate(i for i, v in enumerate(varying) if v):
        values = _parse_values(columns[i])
        numeric = _all_int(values)
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
        elif kinds[i] == "x" and all(_UUID_RE.fullmatch(v) for v in columns[i]):
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
        NameField(_unique_name(base, taken), pos, values, label, units, role, width)
        for pos, base, values, label, units, role, width in found
    ]
    return fields, cols


# ---------------------------------------------------------------------------
# templates


_TEMPLATE_FIELD_RE = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
_UNIT_PREFIX_RE = re.compile(r"[^\W\d_]+")
# A field written right against the next field ends where its digits or letters
# end, except before a UUID (``w1`` + ``9E1F...``).
_RUN_FIELD = rf"\d+?(?={_UUID})|\d+(?!\d)|[^\W\d_]+(?![^\W\d_])"


def _template_regex(
    template: str,
) -> tuple[re.Pattern[str], list[tuple[str, Role, str | None]]]:
    """Compile a ``{name}`` template into a regex, and each field's role and units."""
    parts: list[str] = []
    fields: list[tuple[str, Role, str | None]] = []
    matches = list(_TEMPLATE_FIELD_RE.finditer(template))
    pos = 0
    ignored = 0
    for k, m in enumerate(matches):
        literal = template[pos : m.start()].replace("{{", "{").replace("}}", "}")
        parts.append(re.escape(literal))
        end = matches[k + 1].start() if k + 1 < len(matches) else len(template)
        following = template[m.end() : end]
        body = _RUN_FIELD if (k + 1 < len(matches) and not following) else "[^/]+?"
        name, spec = m.group(1).strip(), (m.group(2) or "").strip().lower()
        if not name or name.startswith("_"):
            parts.append(f"(?P<_ignored{ignored}>{body if body != '[^/]+?' else '.*?'})")
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
            if any(n == name for n, _, _ in fields):
                raise NamingError(f"Template field {{{name}}} appears twice in {template!r}.")
            unit = _UNIT_PREFIX_RE.match(following)
            units = UNIT_LABELS.get(unit.group().lower(), (None, None))[1] if unit else None
            fields.append((name, role, units))
            parts.append(f"(?P<{name}>{body})")
        pos = m.end()
    parts.append(re.escape(template[pos:].replace("{{", "{").replace("}}", "}")))
    if not fields:
        raise NamingError(f"The template {template!r} names no field; write fields as {{name}}.")
    return re.compile("".join(parts)), fields


def _fields_from_pattern(names: Sequence[str], pattern: str) -> list[NameField]:
    """Match every name against a template or a regex with named groups."""
    if "(?P<" in pattern:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise NamingError(f"pattern= is not a valid regular expression: {exc}") from None
        specs: list[tuple[str, Role, str | None]] = [(n, "auto", None) for n in regex.groupindex]
    else:
        regex, specs = _template_regex(pattern)
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
            + _inferred_hint(names)
            + "\nFix the pattern, or select only the acquisition's files with a narrower glob."
        )
    return [
        NameField(
            name,
            order,
            _parse_values([m.get(name, "") for m in matched]),
            label=name,
            units=units,
            role=role,
        )
        for order, (name, role, units) in enumerate(specs)
    ]


def _render_template(
    names: Sequence[str], cols: _Columns, fields: list[NameField], roles: dict[str, Role]
) -> str:
    """The template of the first name with each field in ``roles`` written as ``{name}``."""
    shown = {f.position: f for f in fields if f.name in roles}
    out: list[str] = []
    skip_to = 0
    for i, col in enumerate(cols.columns):
        if i < skip_to:
            continue
        f = shown.get(i)
        if f is not None:
            out.append("{" + f.name + (":coord" if roles[f.name] == "coord" else "") + "}")
            skip_to = i + f.width
        else:
            out.append(col[0].replace("{", "{{").replace("}", "}}"))
    stem = strip_tiff_suffix(names[0])
    return "".join(out) + names[0][len(stem) :]


def _suggest_template(names: Sequence[str]) -> str:
    """A template for names, with every varying part a field (parts of a well kept apart)."""
    try:
        fields, cols = _fields_from_names(names)
    except NamingError:
        return "{_}_{field1}_{field2}.tif"
    return _render_template(names, cols, fields, {f.name: "auto" for f in fields if f.width == 1})


def _inferred_hint(names: Sequence[str]) -> str:
    """The fields found without a template and a template to start from, for messages."""
    try:
        fields, _cols = _fields_from_names(names)
    except NamingError:
        return ""
    return f"{_fields_table(fields)}\nStart from:\n  {_suggest_template(names)}"


def _fields_table(fields: Sequence[NameField]) -> str:
    lines = ["Fields found (name: distinct values, examples):"]
    for f in fields:
        distinct = f.distinct
        ex = ", ".join(map(str, distinct[:4])) + (", ..." if len(distinct) > 4 else "")
        lines.append(f"  {f.name}: {len(distinct)} ({ex})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# fields -> axes


def _leave_out(names: Sequence[str], strays: Sequence[str]) -> NameGrid:
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
    grid = _understand_cached(tuple(n for n in names if n not in out), None)
    placed = iter(grid.positions)
    positions = tuple(None if n in out else next(placed) for n in names)
    return replace(grid, positions=positions, left_out=tuple(strays) + grid.left_out)


def _name_tied_fields(classes: list[_Class], fields: list[NameField]) -> list[NameField]:
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
                    renames[f.name] = _unique_name(f"{base}_{kind}", taken)
    if not renames:
        return fields
    for cls in classes:
        cls.members = [replace(f, name=renames.get(f.name, f.name)) for f in cls.members]
        cls.__dict__.pop("rep", None)
    by_name = {f.name: f for cls in classes for f in cls.members}
    return [by_name[renames.get(f.name, f.name)] for f in fields]


def _codes(values: Sequence[Value]) -> tuple[np.ndarray, int]:
    """Integer code of each value and the number of distinct values."""
    if _all_int(values):
        # np.unique sorts in C: ~20x faster than a dict over 100,000 names.
        distinct, codes = np.unique(np.fromiter(values, np.int64, len(values)), return_inverse=True)
        return codes.astype(np.int64), len(distinct)
    lookup: dict[Value, int] = {}
    codes = np.fromiter((lookup.setdefault(v, len(lookup)) for v in values), np.int64, len(values))
    return codes, len(lookup)


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
class _Class:
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


def _tie_classes(fields: list[NameField]) -> list[_Class]:
    classes: list[_Class] = []
    for f in fields:
        codes, card = f._coded
        for cls in classes:
            if cls.card == card and _determines(cls.codes, codes) and _determines(codes, cls.codes):
                cls.members.append(f)
                break
        else:
            classes.append(_Class([f], codes, card))
    return classes


def _check_unambiguous(axes: list[_Class], fields: list[NameField], names: Sequence[str]) -> None:
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
                + _fields_table(fields)
                + f"\nGive pattern= marking the axis with {{{ranked[0].name}:axis}}; start from:\n  "
                + _suggest_template(names)
            )


def _same_cell(classes: Sequence[_Class], names: Sequence[str]) -> str:
    """`` (such as a and b)``: two files no field tells apart (stack1 and stack01)."""
    key = _combined([(c.codes, c.card) for c in classes], len(names))
    first: dict[int, int] = {}
    for i, k in enumerate(key.tolist()):
        if k in first:
            return f" (such as {names[first[k]]} and {names[i]})"
        first[k] = i
    return ""


def _choose_axes(
    classes: list[_Class], fields: list[NameField], names: Sequence[str]
) -> list[_Class]:
    n = len(names)
    forced = [c for c in classes if any(f.role == "axis" for f in c.members)]
    optional = [c for c in classes if c not in forced and c.can_be_axis]
    max_cells = n / MIN_GRID_DENSITY
    key_cache: dict[frozenset[int], bool] = {}

    def is_key(subset: Sequence[_Class]) -> bool:
        ident = frozenset(id(c) for c in subset)
        if ident not in key_cache:
            key_cache[ident] = _is_key(_combined([(c.codes, c.card) for c in subset], n))
        return key_cache[ident]

    def minimal(subset: list[_Class], extra: list[_Class]) -> bool:
        return not any(is_key([c for c in subset if c is not e]) for e in extra)

    candidates: list[tuple[tuple[Any, ...], list[_Class]]] = []

    def visit(start: int, extra: list[_Class], cells: int) -> None:
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
                + _fields_table(fields)
                + "\nGive pattern= with the fields that tell "
                "them apart; start from:\n  " + _suggest_template(names)
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
            + _fields_table(fields)
            + "\nGive pattern= naming the axes ({name:axis} keeps a sparse axis); start from:\n  "
            + _suggest_template(names)
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
            + _fields_table(fields)
            + "\nGive pattern= marking the axes with {name:axis}; start from:\n  "
            + _suggest_template(names)
        )
    return sorted(best, key=lambda c: c.rep.position)


def _coordinate(f: NameField, axes: list[_Class], index: list[np.ndarray]) -> Coordinate:
    """A field over the smallest set of axes that determines it.

    ``index[k]`` holds every file's position along ``axes[k]``.
    """
    codes, _ = f._coded
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
    return _understand_cached(tuple(names), pattern)


# Opening calls this twice on the same names (to leave strays out of the listing,
# then to build the manifest); the second call is free.
@lru_cache(maxsize=2)
def _understand_cached(names: tuple[str, ...], pattern: str | None) -> NameGrid:
    n = len(names)
    if n == 0:
        raise NamingError("No file names to understand.")
    if len(set(names)) != n:
        dup = next(x for x, count in Counter(names).items() if count > 1)
        raise NamingError(
            f"The file {dup!r} is listed twice; each file can sit at one place only. "
            "Remove the duplicate from the list."
        )
    cols: _Columns | None = None
    if pattern is None:
        if n == 1:
            only = names[0].replace("{", "{{").replace("}", "}}")
            return NameGrid(axes=(), positions=((),), template=only)
        stems = _strip_suffixes(names)
        cols = _align_like_first(stems)
        strays = find_strays(names) if cols is None else ()
        if strays:
            return _leave_out(names, strays)
        fields, cols = _fields_from_names(names, cols)
    else:
        fields = _fields_from_pattern(names, pattern)
        if n == 1 and not any(f.role == "axis" for f in fields):
            return NameGrid(axes=(), positions=((),), template=pattern)
    if not fields:
        raise NamingError(
            f"The {n} file names have no part that varies, so they cannot be placed on axes."
        )

    classes = _tie_classes(fields)
    chosen = _choose_axes(classes, fields, names)
    _check_unambiguous(chosen, fields, names)
    if pattern is None:
        fields = _name_tied_fields(classes, fields)

    axes: list[Axis] = []
    index: list[np.ndarray] = []
    for c in chosen:
        rep = c.rep
        distinct = rep.distinct
        if rep.numeric:
            # Integer codes come from np.unique: already the sorted order.
            index.append(rep._coded[0])
        else:
            order = {v: i for i, v in enumerate(distinct)}
            index.append(np.fromiter(map(order.__getitem__, rep.values), np.int64, n))
        kind = axis_kind(rep.label or rep.name)
        axes.append(Axis(rep.name, kind, tuple(distinct), rep.label, rep.units))
    positions = tuple(zip(*(i.tolist() for i in index), strict=True))

    axis_fields = {id(c.rep) for c in chosen}
    coords = tuple(
        _coordinate(f, chosen, index)
        for c in classes
        for f in c.members
        if id(f) not in axis_fields
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
        template = _render_template(names, cols, fields, roles)
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

"""Names -> tokens -> aligned columns: how file names are cut into comparable parts.

Each name is split into runs of digits, letters and separators (UUIDs and
date-times stay whole), and the names are aligned token by token into columns:
``columns[j][i]`` is part ``j`` of name ``i``. Where names differ in structure only
by free text between the same separators (a channel called ``Cy5`` among ``DAPI``
and ``GFP``), that text is one column. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tiffstore.detect import TIFF_SUFFIXES
from tiffstore.names.axes import Value

__all__ = [
    "DATETIME_PATTERN",
    "UUID_PATTERN",
    "UUID_RE",
    "Columns",
    "align",
    "align_like_first",
    "all_int",
    "is_constant",
    "natural_key",
    "signatures_of",
    "split_tokens",
    "strip_suffixes",
    "strip_tiff_suffix",
    "token_kind",
]

UUID_PATTERN = (
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
)
DATETIME_PATTERN = (
    r"(?<!\d)(?:"
    # Incucyte: 2023y05m01d_12h00m
    r"(?:19|20)\d\dy[01]\dm[0-3]\dd_[0-2]\dh[0-5]\dm"
    # ISO-like: 2023-05-01, 2023-05-01_12-30-05, 2023-05-01T123005
    r"|(?:19|20)\d\d-[01]\d-[0-3]\d(?:[T_ ][0-2]\d[-.h]?[0-5]\d(?:[-.m]?[0-5]\d(?:[.,]\d+)?)?)?"
    # compact: 20230501_123005
    r"|(?:19|20)\d\d[01]\d[0-3]\d[T_-]?[0-2]\d[0-5]\d[0-5]\d"
    r")(?!\d)"
)
UUID_RE = re.compile(UUID_PATTERN)
# Parts of a name that are one value although they mix digits, letters and separators.
_ATOM_RE = re.compile(f"{UUID_PATTERN}|{DATETIME_PATTERN}")
_TOKEN_RE = re.compile(r"\d+|[^\W\d_]+|[\W_]+")
_NATURAL_RE = re.compile(r"(\d+)")


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


def strip_suffixes(names: Sequence[str]) -> list[str]:
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


def all_int(values: Sequence[Any]) -> bool:
    """``all(isinstance(v, int) for v in values)``, one check per type."""
    return all(issubclass(t, int) for t in set(map(type, values)))


def is_constant(col: Sequence[Any]) -> bool:
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


def token_kind(token: str) -> str:
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
    kinds = [token_kind(t) for t in tokens]
    if not tokens or "x" in kinds or "s/" in kinds:
        return False
    return all(
        k != "d" or (j > 0 and kinds[j - 1] == "a") or (j + 1 < len(kinds) and kinds[j + 1] == "a")
        for j, k in enumerate(kinds)
    )


@dataclass(frozen=True)
class Columns:
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


_KIND_GROUPS = {"d": r"(\d+)", "a": r"([^\W\d_]+)", "x": f"({UUID_PATTERN}|{DATETIME_PATTERN})"}


def align_like_first(stems: Sequence[str]) -> Columns | None:
    """Columns of names all cut like the first one, or ``None`` where some are not.

    One regex match per name instead of tokenizing each in Python: listings of
    hundreds of thousands of files are usual.
    """
    tokens = split_tokens(stems[0])
    kinds = [token_kind(t) for t in tokens]
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
    if any(k[0] == "s" and not is_constant(c) for k, c in zip(kinds, columns, strict=True)):
        return None  # a separator that differs: cut the names one by one
    return _split_lettered(columns, kinds)


def align(stems: Sequence[str]) -> Columns | None:
    """Cut every name (without its suffix) into the same sequence of parts.

    Names of one structure align token by token. Where the structures differ (a
    channel called ``Cy5`` among ``DAPI`` and ``GFP``), the common parts are aligned
    from both ends and what lies between them, cut at separators, is one part.
    ``None`` when the names do not share one structure (see :func:`signatures_of`).
    """
    aligned = align_like_first(stems)
    if aligned is not None:
        return aligned
    tokenized = [split_tokens(s) for s in stems]
    signatures = [tuple(token_kind(t) for t in toks) for toks in tokenized]
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
        return None
    columns = [tuple(t[k] for t in tokenized) for k in range(prefix)]
    columns.append(tuple("".join(m) for m in middles))
    columns += [tuple(t[len(t) - suffix + k] for t in tokenized) for k in range(suffix)]
    kinds = [*first[:prefix], "m", *first[len(first) - suffix :]]
    return _split_lettered(columns, kinds)


def signatures_of(stems: Sequence[str]) -> list[tuple[str, ...]]:
    """Each name's structure: the kind of each of its tokens (see :func:`token_kind`)."""
    return [tuple(map(token_kind, split_tokens(s))) for s in stems]


def _split_lettered(columns: list[tuple[str, ...]], kinds: list[str]) -> Columns:
    """Split words that vary only in a short ending (``CamA``, ``CamB``) into the
    constant word, a label, and the ending, a value."""
    out_columns: list[tuple[str, ...]] = []
    out_kinds: list[str] = []
    for col, kind in zip(columns, kinds, strict=True):
        stem = ""
        distinct = set(col) if kind == "a" and not is_constant(col) else ()
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
    return Columns(tuple(out_columns), tuple(out_kinds))

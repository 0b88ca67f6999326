"""A reference file read back: its attributes, metadata documents and chunk references.

Both layouts fsspec reads: kerchunk JSON, version 0 (the references themselves) or
version 1 (``{"version": 1, "templates": ..., "refs": ...}``), and fsspec's Parquet
folders (``.zmetadata`` holding every metadata document and the ``record_size``,
and each array's references in ``<array>/refs.<n>.parq``, ``record_size`` chunks per
file in C order). :mod:`tiffstore.manifest.saved` checks what is read here against
the manifest tiffstore saved in the file, the chunk references by their digest
(:func:`~tiffstore.manifest.saved.chunk_digest`, made here for both layouts).

Every failure to read is a :class:`~tiffstore.errors.SourceError` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiffstore.errors import SourceError
from tiffstore.sources.network import filesystem_of

__all__ = ["ParquetChunks", "ReferenceFile", "digest_and_urls", "parquet_digest"]

#: A Parquet record file's name: ``refs.<record>.parq``.
_RECORD = re.compile(r"refs\.([0-9]+)\.parq")


@dataclass(frozen=True)
class ParquetChunks:
    """One array's chunk references in a Parquet reference folder, by kind.

    Rows are what fsspec's ``LazyReferenceMapper`` makes of them: inlined ``bytes``
    where a row has them, a whole file where its offset and size are both 0, else a
    byte range; rows with neither a URL nor bytes are no reference.

    Attributes
    ----------
    ranges
        Keys, offsets and sizes of the byte ranges.
    whole
        Keys of the references to whole files.
    inline
        ``(key, bytes)`` of the inlined chunks.
    urls
        Every URL referenced.
    """

    ranges: tuple[list[str], list[int], list[int]]
    whole: list[str]
    inline: list[tuple[str, Any]]
    urls: set[str]


def _parsed(value: Any) -> Any:
    """A metadata document as JSON holds it: text, bytes, ``base64:`` text, or parsed."""
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, str) and value.startswith("base64:"):
        value = base64.b64decode(value[7:], validate=True)
    if not isinstance(value, (str, bytes)):
        raise TypeError(f"a {type(value).__name__}, not a JSON document")
    return json.loads(value)


class ReferenceFile:
    """A JSON reference file or a Parquet reference folder, as read for :func:`tiffstore.open`.

    Parameters
    ----------
    name
        The file's path or URL, as the user gave it (messages name it so).
    storage_options
        fsspec options to read it.

    Attributes
    ----------
    name
        As given.
    parquet
        Whether it is a Parquet folder.
    templates
        JSON version 1: the URL templates (``{{u}}``), else empty.

    Raises
    ------
    SourceError
        When it cannot be read, or is no reference file (not JSON, not an object).

    Examples
    --------
    >>> refs = ReferenceFile("raw.json")  # doctest: +SKIP
    >>> refs.document(".zattrs")["tiffstore"]["references"]  # doctest: +SKIP
    {'version': '0.2.0', 'image': 'image', 'url': None, 'digest': '8d1e...'}
    """

    def __init__(self, name: str, storage_options: dict[str, Any] | None = None) -> None:
        self.name = name
        self._fs, path = filesystem_of(name, storage_options)
        self._path = path.rstrip("/")
        self.templates: dict[str, str] = {}
        self._record_size = 0
        try:
            self.parquet = bool(self._fs.isdir(path))
            if self.parquet:
                meta = json.loads(self._fs.cat_file(f"{self._path}/.zmetadata"))
                self._documents = meta["metadata"]
                self._record_size = meta["record_size"]
                if not isinstance(self._record_size, int) or self._record_size < 1:
                    raise ValueError(f"record_size {self._record_size!r}")
            else:
                doc = json.loads(self._fs.cat_file(path))
                self._documents = doc
                if doc.get("version") == 1:  # else version 0: the references themselves
                    self._documents = doc["refs"]
                    self.templates = dict(doc.get("templates") or {})
                    if not all(isinstance(v, str) for v in self.templates.values()):
                        raise ValueError("templates that are not text")
            if not isinstance(self._documents, dict):
                raise TypeError(f"references that are a {type(self._documents).__name__}")
        except FileNotFoundError as exc:
            raise SourceError(f"{name}: no such reference file.") from exc
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise SourceError(
                f"{name}: not a reference file tiffstore can read ({type(exc).__name__}: {exc})."
            ) from exc

    def document(self, key: str) -> Any:
        """The metadata document ``key`` (``.zattrs``, ``image/.zarray``...), parsed;
        ``None`` when the file has none."""
        value = self._documents.get(key)
        if value is None:
            return None
        try:
            return _parsed(value)
        except (ValueError, TypeError, RecursionError) as exc:  # (binascii.Error too)
            raise SourceError(
                f"{self.name}: its {key} is not a JSON document ({type(exc).__name__}: {exc})."
            ) from exc

    def expand(self, url: str) -> str:
        """``url`` with the file's templates (``{{u}}``) filled in, as fsspec fills them."""
        for key, value in self.templates.items():
            url = url.replace("{{" + key + "}}", value)
        return url

    @property
    def references(self) -> dict[str, Any] | None:
        """JSON: every reference, by key (templates not filled in); Parquet: ``None``."""
        return None if self.parquet else self._documents

    def parquet_chunks(self, image: str, grid: tuple[int, ...]) -> ParquetChunks | None:
        """Parquet: the chunk references of array ``image``, whose chunk grid is ``grid``;
        ``None`` when fastparquet, which reads them, is not installed."""
        try:
            import fastparquet
        except ImportError:
            return None
        total = math.prod(grid)
        size = self._record_size
        folder = f"{self._path}/{image}"
        try:
            names = self._fs.ls(folder, detail=False) if self._fs.isdir(folder) else []
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot list {folder} ({exc}).") from exc
        found = (_RECORD.fullmatch(str(name).rsplit("/", 1)[-1]) for name in names)
        records = sorted(r for m in found if m and (r := int(m.group(1))) * size < total)
        # Every key at once (a dim at a time: fast), unless the grid is far larger than
        # the records there are (a damaged file): then only the records' own keys.
        every = (
            np.array(chunk_keys(f"{image}/", grid), object)
            if total <= (len(records) + 1) * size
            else None
        )
        out = ParquetChunks(([], [], []), [], [], set())
        for record in records:
            url = f"{folder}/refs.{record}.parq"
            try:
                frame = fastparquet.ParquetFile(url, fs=self._fs).to_pandas()
            except Exception as exc:  # fastparquet fails many ways on a damaged file
                raise SourceError(
                    f"{self.name}: its chunk references {url} cannot be read "
                    f"({type(exc).__name__}: {exc})."
                ) from exc
            base = record * size
            stop = min(base + size, total)
            keys = (
                every[base:stop]
                if every is not None
                else np.array(chunk_keys(f"{image}/", grid, base, stop), object)
            )
            _add_rows(out, frame, keys)
        return out


def chunk_keys(
    prefix: str, grid: tuple[int, ...], start: int = 0, stop: int | None = None
) -> list[str]:
    """The keys ``prefix`` + ``"i.j.k"`` of chunks ``start`` to ``stop`` (all by default)
    of ``grid``, in C order: the order of Parquet records and of the writers' pairs.

    All of them are built a dim at a time, the inner dims' indices first (usually few);
    a range from its indices, each distinct index turned to text once.

    Examples
    --------
    >>> chunk_keys("image/", (2, 2))
    ['image/0.0', 'image/0.1', 'image/1.0', 'image/1.1']
    >>> chunk_keys("", (2, 3), 2, 4)
    ['0.2', '1.0']
    """
    if not grid:
        return [f"{prefix}0"][start:stop]
    total = math.prod(grid)
    stop = total if stop is None else min(stop, total)
    if start == 0 and stop == total:
        inner = [""]
        for n in reversed(grid[1:]):
            inner = [f".{i}{rest}" for i in range(n) for rest in inner]
        return [f"{prefix}{i}{rest}" for i in range(grid[0]) for rest in inner]
    n = max(stop - start, 0)
    columns = []
    for index in np.unravel_index(np.arange(start, start + n), grid):
        unique, inverse = np.unique(index, return_inverse=True)
        names = [str(u) for u in unique.tolist()]
        columns.append(
            names * n if len(names) == 1 else list(map(names.__getitem__, inverse.tolist()))
        )
    return [prefix + ".".join(parts) for parts in zip(*columns, strict=True)]


def _add_rows(out: ParquetChunks, frame: Any, keys: np.ndarray) -> None:
    """Add one Parquet record's references, the chunks of ``keys``, to ``out``."""
    frame = frame.iloc[: len(keys)]
    keys = keys[: len(frame)]
    n = len(frame)
    nothing = np.zeros(n, bool)
    has_raw = frame["raw"].notna().to_numpy() if "raw" in frame else nothing
    has_path = frame["path"].notna().to_numpy() & ~has_raw if "path" in frame else nothing
    zero = np.zeros(n, np.int64)
    offsets = frame["offset"].to_numpy(np.int64) if "offset" in frame else zero
    sizes = frame["size"].to_numpy(np.int64) if "size" in frame else zero
    whole = has_path & (offsets == 0) & (sizes == 0)
    ranged = has_path & ~whole
    if has_raw.any():
        raws = frame["raw"].to_numpy(object)[has_raw].tolist()
        out.inline.extend(zip(keys[has_raw].tolist(), raws, strict=True))
    out.whole.extend(keys[whole].tolist())
    out.ranges[0].extend(keys[ranged].tolist())
    out.ranges[1].extend(offsets[ranged].tolist())
    out.ranges[2].extend(sizes[ranged].tolist())
    if has_path.any():
        out.urls.update(frame["path"].to_numpy(object)[has_path].tolist())


# -- the digest of the chunk references --------------------------------------

#: The digest's line of a byte range, and of a whole file.
_RANGE_LINE = "{} {} {}\n".format
_WHOLE_LINE = "{} whole\n".format
#: A chunk's indices in its key, after the array's name and its slash.
_CHUNK_INDEX = re.compile(r"[0-9]+(?:\.[0-9]+)*")
#: What :func:`str.translate` removes of chunk keys joined by newlines: the indices.
_INDEX_CHARS = str.maketrans("", "", "0123456789.\n")


def _digest_line(key: str, value: Any) -> str:
    """The digest's line of any reference (see :func:`chunk_digest`)."""
    if isinstance(value, (list, tuple)):
        if len(value) == 3 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value[1:]
        ):
            return _RANGE_LINE(key, value[1], value[2])
        return _WHOLE_LINE(key) if len(value) == 1 else f"{key} unreadable\n"
    if isinstance(value, str):
        try:  # as fsspec reads it: base64 after the prefix, else the text's own bytes
            value = base64.b64decode(value[7:]) if value.startswith("base64:") else value.encode()
        except (binascii.Error, ValueError):
            return f"{key} unreadable\n"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{key} inline {hashlib.sha256(value).hexdigest()}\n"
    return f"{key} unreadable\n"


def _all_chunk_keys(keys: list[str], prefix: str) -> bool:
    """Whether every key, each ``prefix`` and then no ``"."``, is ``prefix`` and
    dot-separated decimal indices: decided over all the keys at once by string
    methods, which run in C (a regular expression takes ten times as long)."""
    text = "\n".join(keys)
    kept = prefix.translate(_INDEX_CHARS)
    return (
        text.count("\n") == len(keys) - 1  # no newline inside a key
        and text.count("/") == len(keys) * prefix.count("/")  # no slash after the prefix
        and text.translate(_INDEX_CHARS) == kept * len(keys)  # only digits and dots after it
        and ".." not in text  # and no empty index (none starts with ".": see the caller)
        and ".\n" not in text
        and "/\n" not in text
        and text[-1:] not in ("", ".", "/")
    )


def _hashed(lines: list[str]) -> str:
    """The digest of the lines of chunk references: sorted, joined, hashed. (Sorting the
    lines sorts the keys: after the array's name and slash a key holds only digits and
    dots, which sort after the space that ends it.)"""
    lines.sort()
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def digest_and_urls(refs: Iterable[tuple[str, Any]], image: str) -> tuple[str, set[Any]]:
    """:func:`~tiffstore.manifest.saved.chunk_digest` of ``refs``, and the URLs of the
    references under ``image/``, in one pass."""
    prefix = f"{image}/"
    keys: list[str] = []
    urls: list[Any] = []
    add_key, add_url = keys.append, urls.append

    def other_line(key: str, value: Any) -> str:
        if isinstance(value, (list, tuple)) and value:
            add_url(value[0])
        return _digest_line(key, value)

    # Strings only (no tuple or list kept): no work for the garbage collector, which
    # would otherwise walk the whole reference set again and again.
    lines = [
        f"{k} {v[1]} {v[2]}\n"  # (_RANGE_LINE, spelled out: twice as fast)
        if type(v) is list
        and len(v) == 3
        and type(v[1]) is int
        and type(v[2]) is int
        and not add_url(v[0])
        else other_line(k, v)
        for k, v in refs
        if k.startswith(prefix) and "/." not in k and not add_key(k)
    ]
    if keys and not _all_chunk_keys(keys, prefix):
        # Some key under the array is no chunk's: leave those out, one by one.
        n = len(prefix)
        lines = [
            line for key, line in zip(keys, lines, strict=True) if _CHUNK_INDEX.fullmatch(key, n)
        ]
    return _hashed(lines), set(urls)


def parquet_digest(chunks: ParquetChunks) -> str:
    """:func:`~tiffstore.manifest.saved.chunk_digest` of a Parquet folder's chunk
    references, column by column."""
    lines = list(map(_RANGE_LINE, *chunks.ranges))
    lines += map(_WHOLE_LINE, chunks.whole)
    lines += [_digest_line(k, v) for k, v in chunks.inline]
    return _hashed(lines)  # (the keys are made here: chunks' keys all)

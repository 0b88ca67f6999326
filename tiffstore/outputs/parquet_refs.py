"""fsspec's lazy Parquet references, written directly, a record file at a time.

The layout :class:`fsspec.implementations.reference.LazyReferenceMapper` reads
(kerchunk's Parquet references): a folder holding ``.zmetadata``, the JSON
``{"metadata": {key: document}, "record_size": N}``, and per array
``{array}/refs.{i}.parq``: chunks ``i * N`` to ``(i + 1) * N - 1`` in C order of the
array's chunk grid, a row each, padded to ``N`` rows, in columns ``path`` (utf8, null
for none), ``offset``, ``size`` (int64, 0 for none) and ``raw`` (bytes, null unless
inlined). A record with no row is not written: its chunks read as missing.

``LazyReferenceMapper`` writes the same files a key at a time (about 9 µs a key).
Here a key's place is counted, checked a block at a time against the keys the grid
expects, and the columns are built in bulk: fsspec's files, byte for byte, no kerchunk.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import posixpath
from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np

from tiffstore.errors import OptionError, ReferenceError
from tiffstore.manifest.reference_file import chunk_keys

__all__ = ["CATEGORICAL_THRESHOLD", "write_parquet_references"]

#: Paths are written as a category where each occurs more than this many times on
#: average in a record (fsspec's default).
CATEGORICAL_THRESHOLD = 10

#: Chunk keys checked at a time: the most key strings held.
_BLOCK = 4096

#: A record's columns, and what a row with no value holds, as fsspec writes them.
_COLUMNS = {"path": np.nan, "offset": 0, "size": 0, "raw": np.nan}


def write_parquet_references(
    pairs: Iterable[tuple[str, Any]], fs: Any, path: str, record_size: int
) -> int:
    """Write the pairs as fsspec's lazy Parquet references at ``path`` on ``fs``.

    Parameters
    ----------
    pairs
        ``(key, value)`` as :func:`~tiffstore.outputs.references.references` yields
        them: metadata (JSON text) before its array's chunks; each array's chunks
        together, in C order (gaps allowed). A chunk's value is ``[url, offset,
        size]``, ``[url]``, inlined ``bytes`` (or text, as kerchunk takes it) or
        ``None``. A ``.zmetadata`` pair is left out: the layout has its own.
    fs
        An fsspec file system.
    path
        The folder on ``fs``; what is there is deleted first.
    record_size
        Chunks per record file.

    Returns
    -------
    int
        How many keys were written.

    Examples
    --------
    >>> pairs = references(store, version=0, inline_missing=True)  # doctest: +SKIP
    >>> write_parquet_references(pairs, fsspec.filesystem("file"), "r.parq", 100_000)  # doctest: +SKIP
    """
    if isinstance(record_size, bool) or not isinstance(record_size, int) or record_size < 1:
        raise OptionError(f"record_size={record_size!r}: use a number of references, 1 or more.")
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    documents: dict[str, str] = {}  # JSON text, parsed to check it, kept as it is
    arrays: list[_ArrayRecords] = []
    refs = _ArrayRecords(fs, path, None, (0,), record_size)  # no key names it
    keys, add_key, add_path, add_offset, add_size = refs.appenders()
    for key, value in pairs:
        name, _, chunk = key.rpartition("/")
        if name == refs.name and type(value) is list and len(value) == 3 and chunk[:2] != ".z":
            # The common case kept to appends: a byte range, the next chunk.
            add_key(chunk)
            add_path(value[0])
            add_offset(value[1])
            add_size(value[2])
            if len(keys) == _BLOCK:
                refs.check()
        elif key.startswith(".z") or "/.z" in key or "/" not in key:
            if key != ".zmetadata":
                text = value.decode() if isinstance(value, bytes) else value
                json.loads(text)  # as LazyReferenceMapper does: no broken .zmetadata
                documents[key] = text
        else:
            if name != refs.name:
                refs.finish()
                if any(a.name == name for a in arrays) or f"{name}/.zarray" not in documents:
                    raise ReferenceError(
                        f"{path}: {key!r} comes before {name}/.zarray, or after another "
                        "array's chunks: pass metadata first, then each array's chunks."
                    )
                zarray = json.loads(documents[f"{name}/.zarray"])
                shape, chunks = zarray["shape"], zarray["chunks"]
                grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True)) or (1,)
                refs = _ArrayRecords(fs, path, name, grid, record_size)
                arrays.append(refs)
                keys, add_key, add_path, add_offset, add_size = refs.appenders()
            refs.add(chunk, value)
    refs.finish()
    # What json.dumps({"metadata": ..., "record_size": N}) writes, with no re-encoding.
    metadata = ", ".join(f"{json.dumps(key)}: {text}" for key, text in documents.items())
    text = f'{{"metadata": {{{metadata}}}, "record_size": {record_size}}}'
    fs.pipe(posixpath.join(path, ".zmetadata"), text.encode())
    return len(documents) + sum(a.count for a in arrays)


class _ArrayRecords:
    """One array's chunks: a block of keys checked at a time, a record written at a time."""

    def __init__(
        self, fs: Any, root: str, name: str | None, grid: tuple[int, ...], size: int
    ) -> None:
        self.fs, self.name, self.grid, self.size = fs, name, grid, size
        self.folder = posixpath.join(root, name or "")
        # The block not yet checked, cleared in place: the writer's loop appends to it.
        self.keys: list[str] = []
        self.paths: list[str | None] = []
        self.offsets, self.sizes = array("q"), array("q")
        self.raws: dict[int, bytes] = {}
        self.last, self.count = -1, 0  # the number of the last chunk checked; how many
        self.pending: list[tuple[np.ndarray, ...]] = []  # checked, not written

    def appenders(self) -> tuple[Any, ...]:
        return self.keys, *(c.append for c in (self.keys, self.paths, self.offsets, self.sizes))

    def add(self, key: str, value: Any) -> None:
        """Any value: a reference, inlined bytes or text, ``None`` (no chunk)."""
        url, offset, size = None, 0, 0
        if isinstance(value, (list, tuple)) and len(value) in (1, 3):
            url, offset, size = (*value, 0, 0) if len(value) == 1 else value
        elif isinstance(value, (bytes, str)):
            raw = value.encode() if isinstance(value, str) else value
            # As kerchunk.df._proc_raw: inlined "base64:..." is the decoded bytes.
            raw = base64.b64decode(raw[7:]) if raw.startswith(b"base64:") else raw
            self.raws[len(self.keys)] = raw
        elif value is not None:
            raise ReferenceError(f"{self.name}/{key}: {value!r} is no reference.")
        self.keys.append(key)
        self.paths.append(url)
        self.offsets.append(offset)
        self.sizes.append(size)
        if len(self.keys) == _BLOCK:
            self.check()

    def finish(self) -> None:
        """Check the last keys and write every record left."""
        if self.keys:
            self.check()
        self._write(final=True)

    def check(self) -> None:
        """Check the block's keys follow in C order; write the records it completes."""
        n, start = len(self.keys), self.last + 1
        if (
            start + n <= math.prod(self.grid)
            and chunk_keys("", self.grid, start, start + n) == self.keys
        ):
            numbers = np.arange(start, start + n)
        else:  # gaps, or keys out of order
            numbers = np.array([self._number(key) for key in self.keys], dtype=np.int64)
            if numbers[0] < start or (np.diff(numbers) <= 0).any():
                raise ReferenceError(
                    f"{self.name}/{self.keys[0]}...: not in C order of the grid {self.grid}; sort them."
                )
        raws = np.full(n, None, dtype=object)
        for i, raw in self.raws.items():
            raws[i] = raw
        paths = np.empty(n, dtype=object)
        paths[:] = self.paths
        offsets, sizes = (np.array(a, dtype=np.int64) for a in (self.offsets, self.sizes))
        self.pending.append((numbers, paths, offsets, sizes, raws))
        self.last, self.count = int(numbers[-1]), self.count + n
        for block in (self.keys, self.paths, self.offsets, self.sizes):
            del block[:]
        self.raws = {}
        self._write(final=False)

    def _number(self, key: str) -> int:
        parts = key.split(".")
        index = [int(p) if p.isascii() and p.isdigit() else -1 for p in parts]
        if len(index) != len(self.grid) or any(
            not 0 <= i < g or str(i) != p for i, g, p in zip(index, self.grid, parts, strict=True)
        ):
            raise ReferenceError(f"{self.name}/{key}: no chunk of the grid {self.grid}.")
        return int(np.ravel_multi_index(index, self.grid))

    def _write(self, final: bool) -> None:
        """Write the records no later key can reach (every one left when ``final``)."""
        done = self.size * ((self.last + 1) // self.size)
        if not self.pending or (not final and self.pending[0][0][0] >= done):
            return
        columns = [np.concatenate(c) for c in zip(*self.pending, strict=True)]
        stop = len(columns[0]) if final else int(np.searchsorted(columns[0], done))
        self.pending = [tuple(c[stop:] for c in columns)] if stop < len(columns[0]) else []
        records = columns[0][:stop] // self.size
        bounds = [0, *(np.flatnonzero(np.diff(records)) + 1).tolist(), stop]
        for lo, hi in itertools.pairwise(bounds):
            rows = columns[0][lo:hi] - records[lo] * self.size
            self._write_record(int(records[lo]), rows, *(c[lo:hi] for c in columns[1:]))

    def _write_record(self, record: int, rows: np.ndarray, *values: np.ndarray) -> None:
        """One record file, as ``LazyReferenceMapper.write`` writes it."""
        import fastparquet
        import pandas as pd

        columns = {}
        for (name, fill), given in zip(_COLUMNS.items(), values, strict=True):
            columns[name] = np.full(self.size, fill, dtype=given.dtype)
            columns[name][rows] = given
        # Object columns kept so: pandas would infer str for paths (the same file, slower).
        frame = pd.DataFrame(
            {k: pd.Series(v, dtype=v.dtype, copy=False) for k, v in columns.items()}, copy=False
        )
        present = [p for p in values[0].tolist() if p is not None]
        if len(present) / (len(set(present)) or 1) > CATEGORICAL_THRESHOLD:
            frame["path"] = frame["path"].astype("category")
        self.fs.makedirs(self.folder, exist_ok=True)
        fastparquet.write(
            posixpath.join(self.folder, f"refs.{record}.parq"),
            frame,
            compression="zstd",
            write_index=False,
            stats=False,
            object_encoding={"raw": "bytes", "path": "utf8"},
            has_nulls=["path", "raw"],
            open_with=self.fs.open,
        )

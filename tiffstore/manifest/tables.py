"""Where each file's bytes lie, columnar across files: :class:`FileTables`.

A manifest keeps the distinct file *geometries* (shape, dtype, how pages are
stored, the codec), usually one for a whole acquisition, apart from where each
file's own bytes lie: one array entry per file, and one per page or strip/tile
across all files, so that 100,000 compressed files are a few numpy arrays rather
than 100,000 objects (and map straight onto Parquet reference records).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiffstore.tiff.layout import FileLayout

__all__ = ["FileTables", "columnize", "frozen_array", "geometry_of"]


def frozen_array(a: np.ndarray) -> np.ndarray:
    """``a``, made read-only (the manifest's arrays are values)."""
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class FileTables:
    """Where each file's pixel data lie, columnar across files.

    Attributes
    ----------
    data_offset
        ``int64`` per file: the first page's byte offset where pages lie back to back
        uncompressed (``contiguous`` storage), else -1.
    start
        ``int64`` per file: the file's first row in ``offsets``/``bytecounts``, or -1
        when it has no table. A file's rows are its pages (``pages`` storage), its
        pages' strips or tiles in TIFF order (``segments``), or its pages' IFD
        offsets (``tifffile``).
    offsets, bytecounts
        ``int64`` rows of every file's table.
    """

    data_offset: np.ndarray
    start: np.ndarray
    offsets: np.ndarray
    bytecounts: np.ndarray

    def __post_init__(self) -> None:
        for a in (self.data_offset, self.start, self.offsets, self.bytecounts):
            frozen_array(a)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileTables):
            return NotImplemented
        return all(
            np.array_equal(a, b) for a, b in zip(self._columns(), other._columns(), strict=True)
        )

    def __hash__(self) -> int:
        return hash(tuple(a.tobytes() for a in self._columns()))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.data_offset, self.start, self.offsets, self.bytecounts)

    @classmethod
    def from_layouts(cls, layouts: Sequence[FileLayout]) -> FileTables:
        """The tables of files whose full (parsed) layouts are given, in file order.

        Files that share one layout object (same header bytes) share its table rows.
        """
        data_offset = np.full(len(layouts), -1, np.int64)
        start = np.full(len(layouts), -1, np.int64)
        offsets: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        rows = 0
        shared: dict[int, int] = {}
        for i, lay in enumerate(layouts):
            if lay.storage == "contiguous":
                assert lay.data_offset is not None
                data_offset[i] = lay.data_offset
                continue
            first = shared.get(id(lay))
            if first is not None:
                start[i] = first
                continue
            table = _table_of(lay)
            if table is None:
                continue
            shared[id(lay)] = start[i] = rows
            offsets.append(table[0])
            counts.append(table[1])
            rows += len(table[0])
        empty = np.zeros(0, np.int64)
        return cls(
            data_offset,
            start,
            np.concatenate(offsets) if offsets else empty,
            np.concatenate(counts) if counts else empty.copy(),
        )


def _table_of(lay: FileLayout) -> tuple[np.ndarray, np.ndarray] | None:
    if lay.storage == "pages":
        assert lay.page_offsets is not None
        offsets = np.asarray(lay.page_offsets, np.int64)
        return offsets, np.full(len(offsets), lay.page_nbytes, np.int64)
    if lay.storage == "segments":
        assert lay.segments is not None
        return lay.segments.offsets.ravel(), lay.segments.bytecounts.ravel()
    if lay.page_ifds is not None:
        offsets = np.asarray(lay.page_ifds, np.int64)
        return offsets, np.zeros(len(offsets), np.int64)
    return None


def geometry_of(lay: FileLayout) -> FileLayout:
    """A layout without the byte locations that :class:`FileTables` holds."""
    where: dict[str, Any] = {"data_offset": None, "page_offsets": None, "page_ifds": None}
    if lay.segments is not None:
        per_page = lay.segments.offsets.shape[1]
        none = np.zeros((0, per_page), np.int64)
        where["segments"] = dataclasses.replace(lay.segments, offsets=none, bytecounts=none.copy())
    if lay.storage == "tifffile" and lay.page_ifds is not None:
        # Keep "decoded page by page" apart from "decoded as a whole series".
        where["page_ifds"] = ()
    return dataclasses.replace(lay, **where)


def columnize(
    full: Sequence[FileLayout],
) -> tuple[tuple[FileLayout, ...], np.ndarray, FileTables]:
    """Per-file parsed layouts -> distinct geometries, each file's geometry, and the tables.

    Geometries are numbered in order of first use, so the first file's is the first.
    Files that share one layout object are described once.
    """
    geometries: dict[FileLayout, int] = {}
    by_object: dict[int, int] = {}
    file_layout = np.empty(len(full), np.int32)
    for i, lay in enumerate(full):
        k = by_object.get(id(lay))
        if k is None:
            k = geometries.setdefault(geometry_of(lay), len(geometries))
            by_object[id(lay)] = k
        file_layout[i] = k
    return tuple(geometries), file_layout, FileTables.from_layouts(full)

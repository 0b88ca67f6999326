"""The virtual array as plain data: shape, dtype, dims, coordinates, and where every pixel is.

A :class:`Manifest` is frozen dataclasses, tuples and numpy arrays, with no open
files. It pickles small, compares equal, and is all that the store, the reference
writer and materialize need: none of them parse names or headers.

The array's dims are the axes from the file names, outermost first, followed by
the files' own dims (``ch, stack, z, y, x``). Where a chunk's bytes come from is
:meth:`Manifest.chunk_plan` (see :mod:`tiffstore.plans`).

Files are described in two parts. :attr:`Manifest.layouts` holds the distinct
*geometries* (shape, dtype, how pages are stored, the codec), usually one for a
whole acquisition. Where each file's own bytes lie is columnar, in
:class:`FileTables`: one array entry per file, and one per page or strip/tile
across all files, so that 100,000 compressed files are a few numpy arrays rather
than 100,000 objects (and map straight onto Parquet reference records).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from .axes import Axis, Coordinate
from .layout import FileLayout
from .sources import FileSource

if TYPE_CHECKING:
    from .plans import ChunkPlan, PageRun

__all__ = ["FileTables", "Manifest", "columnize", "geometry_of"]


#: Files whose data ends :meth:`Manifest.data_ends` works out in one numpy operation.
_ENDS_BLOCK = 4096


def json_value(v: Any) -> Any:
    """A numpy scalar as the Python value JSON holds."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def _same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is b if a is None or b is None else np.array_equal(a, b)


def _frozen(a: np.ndarray) -> np.ndarray:
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
            _frozen(a)

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


@dataclass(frozen=True, eq=False)
class Manifest:
    """The description of a virtual array built from TIFF files.

    Make one with :func:`tiffstore.open` (``store.manifest``) or
    :func:`tiffstore.build.build_manifest`.

    Attributes
    ----------
    source
        Where the files are (a local folder or an fsspec root).
    files
        File names relative to the source root.
    file_sizes
        ``int64`` size in bytes of each file when it was listed.
    file_index
        Array over the name axes holding each cell's file number (-1: no file).
    file_layout
        ``int32`` per file: the number of its geometry in ``layouts``.
    layouts
        The distinct file geometries (usually one); the first is the first file's.
    tables
        Where each file's bytes are (see :class:`FileTables`).
    signatures
        Header bytes shared by groups of files that were not each parsed at open.
    file_signature
        ``int32`` per file: its group's entry in ``signatures``, or -1 when the file's
        own header was parsed.
    verified
        Per file, whether its header was parsed or compared with its group's at open.
        The others are compared on first read (:meth:`verify` checks them all now).
    name_axes
        Axes from the file names, outermost first.
    file_dims
        The dims of each file's array.
    chunks
        Chunk shape over all dims.
    fill_value
        Value of cells with no file.
    coords
        Coordinates from the names (besides each name axis's own values).
    template
        A template reproducing how the names were understood.
    stitched
        ``(name axis, file dim)`` pairs: tile axes from the names placed side by side
        along the files' own dim (``tiles="stitch"``); they are not dims of the array.
    file_mtimes
        ``int64`` modification time (ns) of each file when it was listed, -1 where the
        source does not say (remote files); ``None`` when not recorded. Local reads
        check size and time, so a file changed after the open is an error, never
        stale bytes.
    file_versions
        Each remote file's version when it was listed: its ETag, or ``"modified:"``
        and its last-modified time; ``""`` where the file system says neither; empty
        when not recorded. Remote reads are conditional on them, so a file replaced
        after the open is an error, never its new bytes.
    """

    source: FileSource
    files: tuple[str, ...]
    file_sizes: np.ndarray
    file_index: np.ndarray
    file_layout: np.ndarray
    layouts: tuple[FileLayout, ...]
    tables: FileTables
    signatures: tuple[bytes, ...]
    file_signature: np.ndarray
    verified: np.ndarray
    name_axes: tuple[Axis, ...]
    file_dims: tuple[str, ...]
    chunks: tuple[int, ...]
    fill_value: int | float
    coords: tuple[Coordinate, ...] = ()
    template: str = ""
    stitched: tuple[tuple[int, int], ...] = ()
    file_mtimes: np.ndarray | None = None
    file_versions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for a in (self.file_sizes, self.file_index, self.file_layout, self.file_signature):
            _frozen(a)
        if self.file_mtimes is not None:
            _frozen(self.file_mtimes)

    def file_stamps(self) -> dict[str, tuple[int, int]]:
        """``name -> (size, mtime_ns)`` of the files whose time was recorded at listing."""
        if self.file_mtimes is None:
            return {}
        return {
            name: (size, mtime)
            for name, size, mtime in zip(
                self.files, self.file_sizes.tolist(), self.file_mtimes.tolist(), strict=True
            )
            if mtime >= 0
        }

    def file_version_map(self) -> dict[str, str]:
        """``name -> version`` of the files whose version was recorded at listing."""
        return {name: v for name, v in zip(self.files, self.file_versions, strict=False) if v}

    # -- the array --------------------------------------------------------

    @property
    def layout(self) -> FileLayout:
        """The geometry of the first file (all files share its shape, dtype and dims)."""
        return self.layouts[0]

    @cached_property
    def page_run(self) -> PageRun | None:
        """What planning the usual chunk (whole pages of one file, back to back) needs,
        worked out once; ``None`` when chunks are not such runs of pages."""
        from .plans import PageRun

        return PageRun.of(self)

    @cached_property
    def array_axes(self) -> tuple[Axis, ...]:
        """The name axes that are dims of the array (all but stitched tile axes)."""
        folded = {k for k, _ in self.stitched}
        return tuple(a for k, a in enumerate(self.name_axes) if k not in folded)

    @cached_property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.array_axes) + self.file_dims

    @cached_property
    def shape(self) -> tuple[int, ...]:
        file_shape = list(self.layout.shape)
        for k, d in self.stitched:
            file_shape[d] *= self.name_axes[k].size
        return tuple(a.size for a in self.array_axes) + tuple(file_shape)

    @cached_property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.layout.dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of one full chunk."""
        return math.prod(self.chunks) * self.dtype.itemsize

    @cached_property
    def chunk_grid(self) -> tuple[int, ...]:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))

    @property
    def n_name_dims(self) -> int:
        """How many of the array's dims come from the names."""
        return len(self.array_axes)

    def missing(self) -> list[dict[str, Any]]:
        """Axis values of the grid cells that have no file."""
        # argwhere, unlike nonzero, takes the 0-d grid of a single file.
        return [
            {a.name: json_value(a.values[i]) for a, i in zip(self.name_axes, cell, strict=True)}
            for cell in np.argwhere(self.file_index < 0).tolist()
        ]

    # -- files ------------------------------------------------------------

    def url(self, file: int) -> str:
        return self.source.url(self.files[file])

    def file_layout_of(self, file: int) -> FileLayout:
        """The full layout of ``file``: its geometry with its own byte locations."""
        geometry = self.layouts[int(self.file_layout[file])]
        t = self.tables
        if geometry.storage == "contiguous":
            return dataclasses.replace(geometry, data_offset=int(t.data_offset[file]))
        start = int(t.start[file])
        if start < 0:
            return geometry
        n = geometry.n_pages
        if geometry.storage == "pages":
            offsets = t.offsets[start : start + n].tolist()
            return dataclasses.replace(geometry, page_offsets=tuple(offsets))
        if geometry.storage == "segments":
            seg = geometry.segments
            assert seg is not None
            per_page = seg.offsets.shape[1]
            rows = slice(start, start + n * per_page)
            return dataclasses.replace(
                geometry,
                segments=dataclasses.replace(
                    seg,
                    offsets=t.offsets[rows].reshape(n, per_page),
                    bytecounts=t.bytecounts[rows].reshape(n, per_page),
                ),
            )
        return dataclasses.replace(geometry, page_ifds=tuple(t.offsets[start : start + n].tolist()))

    def data_ends(self) -> np.ndarray:
        """``int64`` per file: the byte just past its last pixel data, by its header."""
        ends = np.zeros(len(self.files), np.int64)
        t = self.tables
        for k, lay in enumerate(self.layouts):
            members = np.flatnonzero(self.file_layout == k)
            if lay.storage == "contiguous":
                ends[members] = t.data_offset[members] + lay.n_pages * lay.page_nbytes
            elif lay.storage in ("pages", "segments"):
                rows = lay.n_pages * (1 if lay.segments is None else lay.segments.offsets.shape[1])
                stops = t.offsets + t.bytecounts
                # A file's rows at once, a block of files at a time (bounded memory): this
                # runs at every open, for 100,000 compressed files too.
                for b in range(0, len(members), _ENDS_BLOCK):
                    block = members[b : b + _ENDS_BLOCK]
                    rows_of = t.start[block][:, None] + np.arange(rows)
                    ends[block] = stops[rows_of].max(axis=1, initial=0)
        return ends

    def truncated_files(self) -> list[int]:
        """Files whose header points past their end (still being written, or cut short)."""
        return np.flatnonzero(self.data_ends() > self.file_sizes).tolist()

    # -- equality and pickling -------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (
            self.source == other.source
            and self.files == other.files
            and np.array_equal(self.file_sizes, other.file_sizes)
            and np.array_equal(self.file_index, other.file_index)
            and np.array_equal(self.file_layout, other.file_layout)
            and self.layouts == other.layouts
            and self.tables == other.tables
            and self.signatures == other.signatures
            and np.array_equal(self.file_signature, other.file_signature)
            and self.name_axes == other.name_axes
            and self.file_dims == other.file_dims
            and self.chunks == other.chunks
            and self.fill_value == other.fill_value
            and self.coords == other.coords
            and self.stitched == other.stitched
            and _same_optional(self.file_mtimes, other.file_mtimes)
            and self.file_versions == other.file_versions
        )

    def __hash__(self) -> int:
        return hash((self.source, self.files, self.chunks, self.layouts))

    # -- chunks -----------------------------------------------------------

    def chunk_bounds(self, index: Sequence[int]) -> tuple[list[int], list[int]]:
        """Start and stop of chunk ``index`` along every dim, stops cut at the array's edge."""
        starts = [i * c for i, c in zip(index, self.chunks, strict=True)]
        stops = [min(s + c, n) for s, c, n in zip(starts, self.chunks, self.shape, strict=True)]
        return starts, stops

    def chunk_plan(self, index: Sequence[int]) -> ChunkPlan:
        """Where the bytes of chunk ``index`` come from, as plain data.

        See :func:`tiffstore.plans.plan_chunk`.

        Raises
        ------
        IndexError
            When ``index`` is outside the chunk grid.
        """
        from .plans import plan_chunk

        return plan_chunk(self, index)

    def chunk_has_data(self, index: Sequence[int]) -> bool:
        """Whether any file contributes to chunk ``index`` (cheaper than a plan)."""
        if not self.name_axes:
            return True
        from .plans import unstitch

        starts, stops, _ = unstitch(self, *self.chunk_bounds(index))
        nn = len(self.name_axes)
        cells = tuple(slice(s, e) for s, e in zip(starts[:nn], stops[:nn], strict=True))
        return bool((self.file_index[cells] >= 0).any())

    # -- headers ----------------------------------------------------------

    @property
    def fully_verified(self) -> bool:
        """Whether every file's header was parsed or compared with its group's."""
        return bool(self.verified.all())

    def verify(self, workers: int = 16) -> Manifest:
        """A manifest in which every file's header has been checked.

        Files accepted at open on the strength of their size (and a sample of their
        group's headers) have their header bytes compared with their group's; a file
        written differently is parsed and described by its own header. Consumers that
        must not trust sizes alone (reference files, saved manifests) use this.

        Raises
        ------
        LayoutMismatchError
            A file holds a different array from the rest.
        TiffReadError
            A file cannot be read, or is shorter than its header says.

        Examples
        --------
        >>> store = tiffstore.open("raw/")  # doctest: +SKIP
        >>> checked = store.manifest.verify()  # doctest: +SKIP
        >>> checked.fully_verified  # doctest: +SKIP
        True
        """
        from .headers import verify_manifest

        return verify_manifest(self, workers)

"""The virtual array as plain data: shape, dtype, dims, coordinates, and where every pixel is.

A :class:`Manifest` is frozen dataclasses, tuples and numpy arrays, with no open
files. It pickles small, compares equal, and is all that the store, the reference
writer and materialize need: none of them parse names or headers.

The array's dims are the axes from the file names, outermost first, followed by
the files' own dims (``ch, stack, z, y, x``). Where a chunk's bytes come from is
:func:`tiffstore.manifest.plans.plan_chunk`; where each file's bytes lie is in
:class:`~tiffstore.manifest.tables.FileTables`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from tiffstore.manifest.tables import FileTables, frozen_array
from tiffstore.names.axes import Axis, Coordinate
from tiffstore.sources.base import FileSource
from tiffstore.tiff.layout import FileLayout

__all__ = ["Manifest", "PageRun", "json_value", "page_run_geometry", "strides", "unstitch"]


#: Files whose data ends :meth:`Manifest.data_ends` works out in one numpy operation.
_ENDS_BLOCK = 4096


def json_value(v: Any) -> Any:
    """A numpy scalar as the Python value JSON holds."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def _same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is b if a is None or b is None else np.array_equal(a, b)


def strides(shape: Sequence[int]) -> tuple[int, ...]:
    """C-order strides, in items, of an array of ``shape``."""
    out = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        out[k] = out[k + 1] * shape[k + 1]
    return tuple(out)


@dataclass(frozen=True, eq=False)
class Manifest:
    """The description of a virtual array built from TIFF files.

    Make one with :func:`tiffstore.open` (``store.manifest``) or
    :func:`tiffstore.manifest.build.build_manifest`.

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
        The others are compared on first read
        (:func:`~tiffstore.manifest.headers.verify_manifest` checks them all now).
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
            frozen_array(a)
        if self.file_mtimes is not None:
            frozen_array(self.file_mtimes)

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

    def chunk_has_data(self, index: Sequence[int]) -> bool:
        """Whether any file contributes to chunk ``index`` (cheaper than a plan)."""
        if not self.name_axes:
            return True
        starts, stops, _ = unstitch(self, *self.chunk_bounds(index))
        nn = len(self.name_axes)
        cells = tuple(slice(s, e) for s, e in zip(starts[:nn], stops[:nn], strict=True))
        return bool((self.file_index[cells] >= 0).any())

    # -- headers ----------------------------------------------------------

    @property
    def fully_verified(self) -> bool:
        """Whether every file's header was parsed or compared with its group's
        (see :func:`tiffstore.manifest.headers.verify_manifest`)."""
        return bool(self.verified.all())


def page_run_geometry(m: Manifest) -> tuple[int, int] | None:
    """``(name dims, leading dims)`` when every chunk is whole pages of one file, back
    to back in page order; ``None`` when chunks can be anything else."""
    nn, layout = m.n_name_dims, m.layout
    nl = len(layout.leading_shape)
    if m.stitched or any(c != 1 for c in m.chunks[:nn]):
        return None
    if m.chunks[nn + nl :] != layout.page_shape:
        return None
    # Leading dims: whole from some dim inwards, one index outside it.
    lead, sizes = m.chunks[nn : nn + nl], layout.leading_shape
    k = nl
    while k > 0 and lead[k - 1] == sizes[k - 1]:
        k -= 1
    if any(c != 1 for c in lead[: max(k - 1, 0)]):
        return None
    return nn, nl


@dataclass(frozen=True)
class PageRun:
    """What the usual chunk's fast plan needs of a manifest, worked out once."""

    name_dims: int
    lead: tuple[int, ...]
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    n_pages: int

    @classmethod
    def of(cls, m: Manifest) -> PageRun | None:
        geometry = page_run_geometry(m)
        if geometry is None:
            return None
        nn, nl = geometry
        lead = m.chunks[nn : nn + nl]
        sizes = m.layout.leading_shape
        return cls(nn, lead, sizes, strides(sizes), math.prod(lead))


def unstitch(
    m: Manifest, starts: list[int], stops: list[int]
) -> tuple[list[int], list[int], tuple[int, ...]]:
    """A chunk's bounds over every name axis + the file dims, and its chunk shape there.

    Without stitched tiles these are the array's own. With them, a chunk lies in
    one tile (chunks divide the tile size), which is its cell on the tile axes.
    """
    if not m.stitched:
        return starts, stops, m.chunks
    fold = dict(m.stitched)
    nv = m.n_name_dims
    extent = m.layout.shape
    i_starts: list[int] = []
    i_stops: list[int] = []
    i_chunks: list[int] = []
    v = 0
    for k in range(len(m.name_axes)):
        if k in fold:
            tile = starts[nv + fold[k]] // extent[fold[k]]
            i_starts.append(tile)
            i_stops.append(tile + 1)
            i_chunks.append(1)
        else:
            i_starts.append(starts[v])
            i_stops.append(stops[v])
            i_chunks.append(m.chunks[v])
            v += 1
    tiled = set(fold.values())
    for d, n in enumerate(extent):
        base = (starts[nv + d] // n) * n if d in tiled else 0
        i_starts.append(starts[nv + d] - base)
        i_stops.append(stops[nv + d] - base)
        i_chunks.append(m.chunks[nv + d])
    return i_starts, i_stops, tuple(i_chunks)

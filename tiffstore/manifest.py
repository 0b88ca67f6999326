"""The virtual array: shape, dtype, dims, coordinates, and chunk -> where its bytes are.

A :class:`Manifest` is plain data (frozen dataclasses, tuples and numpy arrays,
no open files). It pickles small, compares equal, and is all that the store, the
reference writer and materialize need: none of them parse names or headers.

The array's dims are the axes from the file names, outermost first, followed
by the files' own dims (``ch, stack, z, y, x``). A chunk's bytes come from
:meth:`Manifest.chunk_plan`: contiguous runs of pages where the files are
uncompressed, page reads to decode otherwise.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ._version import __version__
from .errors import LayoutMismatchError, NamingError, TiffReadError
from .layout import FileLayout, read_layout
from .naming import Axis, Coordinate, NameGrid, axis_kind, understand_names
from .sources import FileSource, SourceFile

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ByteRun",
    "ChunkPlan",
    "ChunkSpec",
    "Manifest",
    "PageRead",
    "build_manifest",
]

logger = logging.getLogger(__name__)

#: Default chunks group whole pages up to about this many bytes: big enough that
#: a 189 GB acquisition is a graph of thousands of tasks, small enough that a
#: worker holds a few of them without strain.
DEFAULT_CHUNK_BYTES = 16 * 2**20

#: Uniform files whose pixel data starts within this many bytes are checked by
#: comparing their header bytes to a parsed reference rather than parsing each.
MAX_SIGNATURE_BYTES = 64 * 2**10

ChunkSpec = str | int | Sequence[int | None] | None


@dataclass(frozen=True)
class ByteRun:
    """Pages ``page .. page + n_pages`` of a file, landing at byte ``dest`` of the chunk."""

    file: int
    page: int
    n_pages: int
    dest: int


@dataclass(frozen=True)
class PageRead:
    """A region of one page, to be decoded and placed at ``dest`` in the chunk."""

    file: int
    page: int
    region: tuple[slice, ...]
    dest: tuple[slice, ...]


@dataclass(frozen=True)
class ChunkPlan:
    """How to assemble one chunk: its full shape and the pieces that fill it."""

    shape: tuple[int, ...]
    runs: tuple[ByteRun, ...]
    reads: tuple[PageRead, ...]
    complete: bool

    @property
    def empty(self) -> bool:
        return not self.runs and not self.reads


def _json_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass(frozen=True, eq=False)
class Manifest:
    """The description of a virtual array built from TIFF files.

    Attributes
    ----------
    source
        Where the files are (a local folder or an fsspec root).
    files
        File names relative to the source root.
    file_index
        Array over the name axes holding each cell's file number (-1: no file).
    file_layout
        For each file, the number of its layout in ``layouts``.
    layouts
        The distinct file layouts (usually one).
    signatures
        For each layout, the header bytes that identify files written the same way,
        or ``None``.
    verified
        For each file, whether its own header was parsed or compared at open.
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
    """

    source: FileSource
    files: tuple[str, ...]
    file_index: np.ndarray
    file_layout: np.ndarray
    layouts: tuple[FileLayout, ...]
    signatures: tuple[bytes | None, ...]
    verified: np.ndarray
    name_axes: tuple[Axis, ...]
    file_dims: tuple[str, ...]
    chunks: tuple[int, ...]
    fill_value: int | float
    coords: tuple[Coordinate, ...] = ()
    template: str = ""
    file_sizes: tuple[int, ...] = field(default=())
    stitched: tuple[tuple[int, int], ...] = ()

    # -- the array --------------------------------------------------------

    @property
    def layout(self) -> FileLayout:
        """The layout of the first file (all files share its shape, dtype and dims)."""
        return self.layouts[0]

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
            {a.name: _json_value(a.values[i]) for a, i in zip(self.name_axes, cell, strict=True)}
            for cell in np.argwhere(self.file_index < 0).tolist()
        ]

    def file_layout_of(self, file: int) -> FileLayout:
        return self.layouts[int(self.file_layout[file])]

    def url(self, file: int) -> str:
        return self.source.url(self.files[file])

    # -- equality and pickling -------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (
            self.source == other.source
            and self.files == other.files
            and np.array_equal(self.file_index, other.file_index)
            and np.array_equal(self.file_layout, other.file_layout)
            and self.layouts == other.layouts
            and self.signatures == other.signatures
            and self.name_axes == other.name_axes
            and self.file_dims == other.file_dims
            and self.chunks == other.chunks
            and self.fill_value == other.fill_value
            and self.coords == other.coords
            and self.stitched == other.stitched
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
        """Where the bytes of chunk ``index`` (its position in the chunk grid) come from.

        Raises
        ------
        IndexError
            When ``index`` is outside the chunk grid.
        """
        grid = self.chunk_grid
        if len(index) != len(grid) or any(not 0 <= i < g for i, g in zip(index, grid, strict=True)):
            raise IndexError(f"chunk {tuple(index)} is outside the chunk grid {self.chunk_grid}")
        starts, stops = self.chunk_bounds(index)
        complete = stops == [s + c for s, c in zip(starts, self.chunks, strict=True)]
        starts, stops, chunks = self._unstitch(starts, stops)

        nn = len(self.name_axes)
        layout = self.layout
        nl = len(layout.leading_shape)
        page_shape = layout.page_shape
        itemsize = self.dtype.itemsize
        # Chunk dims beyond the name dims and leading dims cover one page region.
        p_starts, p_stops = starts[nn + nl :], stops[nn + nl :]
        whole_pages = all(
            s == 0 and e == n and c == n
            for s, e, n, c in zip(p_starts, p_stops, page_shape, chunks[nn + nl :], strict=True)
        )
        region = tuple(slice(s, e) for s, e in zip(p_starts, p_stops, strict=True))
        region_dest = tuple(slice(0, e - s) for s, e in zip(p_starts, p_stops, strict=True))

        runs: list[ByteRun] = []
        reads: list[PageRead] = []
        lead_ranges = [
            range(s, e) for s, e in zip(starts[nn : nn + nl], stops[nn : nn + nl], strict=True)
        ]
        name_ranges = [range(s, e) for s, e in zip(starts[:nn], stops[:nn], strict=True)]
        chunk_lead = chunks[nn : nn + nl]
        page_bytes = math.prod(page_shape) * itemsize
        # C-order strides, in pages, of a file's leading dims and of a chunk's
        # name + leading dims (np.ravel_multi_index per page costs more than the read).
        lead_strides = _strides(layout.leading_shape)
        dest_strides = _strides(chunks[:nn] + chunk_lead)
        for cell in itertools.product(*name_ranges):
            file = int(self.file_index[cell]) if nn else 0
            if file < 0:
                complete = False
                continue
            cell_dest = tuple(c - s for c, s in zip(cell, starts[:nn], strict=True))
            raw = self.file_layout_of(file).raw_pages
            for lead in itertools.product(*lead_ranges):
                page = sum(i * st for i, st in zip(lead, lead_strides, strict=True))
                lead_dest = tuple(i - s for i, s in zip(lead, starts[nn : nn + nl], strict=True))
                if whole_pages and raw:
                    flat = sum(
                        i * st for i, st in zip(cell_dest + lead_dest, dest_strides, strict=True)
                    )
                    dest = flat * page_bytes
                    last = runs[-1] if runs else None
                    if (
                        last is not None
                        and last.file == file
                        and last.page + last.n_pages == page
                        and last.dest + last.n_pages * page_bytes == dest
                    ):
                        runs[-1] = ByteRun(file, last.page, last.n_pages + 1, last.dest)
                    else:
                        runs.append(ByteRun(file, page, 1, dest))
                else:
                    dest_slices = (
                        tuple(slice(i, i + 1) for i in cell_dest + lead_dest) + region_dest
                    )
                    reads.append(PageRead(file, page, region, dest_slices))
        return ChunkPlan(chunks, tuple(runs), tuple(reads), complete)

    @cached_property
    def _page_run_geometry(self) -> tuple[int, int] | None:
        """``(name dims, leading dims)`` when every chunk is whole pages of one file,
        back to back in page order; ``None`` when chunks can be anything else."""
        nn, layout = self.n_name_dims, self.layout
        nl = len(layout.leading_shape)
        if self.stitched or any(c != 1 for c in self.chunks[:nn]):
            return None
        if self.chunks[nn + nl :] != layout.page_shape:
            return None
        # Leading dims: whole from some dim inwards, one index outside it.
        lead, sizes = self.chunks[nn : nn + nl], layout.leading_shape
        k = nl
        while k > 0 and lead[k - 1] == sizes[k - 1]:
            k -= 1
        if any(c != 1 for c in lead[: max(k - 1, 0)]):
            return None
        return nn, nl

    def page_run(self, index: Sequence[int]) -> ByteRun | None:
        """Chunk ``index`` as one run of whole pages of one file, when it is one.

        The fast path of :meth:`chunk_plan` for the usual chunks (whole pages of one
        file, inside the array): a few integer operations instead of a plan.
        """
        geometry = self._page_run_geometry
        if geometry is None:
            return None
        nn, nl = geometry
        grid = self.chunk_grid
        if len(index) != len(grid) or any(not 0 <= i < g for i, g in zip(index, grid, strict=True)):
            return None
        file = int(self.file_index[tuple(index[:nn])]) if nn else 0
        if file < 0:
            return None
        lead = self.chunks[nn : nn + nl]
        sizes = self.layout.leading_shape
        starts = [i * c for i, c in zip(index[nn : nn + nl], lead, strict=True)]
        if any(s + c > n for s, c, n in zip(starts, lead, sizes, strict=True)):
            return None  # an edge chunk: padded, so not one run
        page = sum(s * st for s, st in zip(starts, _strides(sizes), strict=True))
        return ByteRun(file, page, math.prod(lead), 0)

    def _unstitch(
        self, starts: list[int], stops: list[int]
    ) -> tuple[list[int], list[int], tuple[int, ...]]:
        """A chunk's bounds over every name axis + the file dims, and its chunk shape there.

        Without stitched tiles these are the array's own. With them, a chunk lies in
        one tile (chunks divide the tile size), which is its cell on the tile axes.
        """
        if not self.stitched:
            return starts, stops, self.chunks
        fold = dict(self.stitched)
        nv = self.n_name_dims
        extent = self.layout.shape
        i_starts: list[int] = []
        i_stops: list[int] = []
        i_chunks: list[int] = []
        v = 0
        for k in range(len(self.name_axes)):
            if k in fold:
                tile = starts[nv + fold[k]] // extent[fold[k]]
                i_starts.append(tile)
                i_stops.append(tile + 1)
                i_chunks.append(1)
            else:
                i_starts.append(starts[v])
                i_stops.append(stops[v])
                i_chunks.append(self.chunks[v])
                v += 1
        tiled = set(fold.values())
        for d, n in enumerate(extent):
            base = (starts[nv + d] // n) * n if d in tiled else 0
            i_starts.append(starts[nv + d] - base)
            i_stops.append(stops[nv + d] - base)
            i_chunks.append(self.chunks[nv + d])
        return i_starts, i_stops, tuple(i_chunks)

    def chunk_has_data(self, index: Sequence[int]) -> bool:
        """Whether any file contributes to chunk ``index`` (cheaper than a plan)."""
        if not self.name_axes:
            return True
        starts, stops, _ = self._unstitch(*self.chunk_bounds(index))
        nn = len(self.name_axes)
        cells = tuple(slice(s, e) for s, e in zip(starts[:nn], stops[:nn], strict=True))
        return bool((self.file_index[cells] >= 0).any())

    # -- metadata ---------------------------------------------------------

    def zarray(self) -> dict[str, Any]:
        """The Zarr format 2 ``.zarray`` document."""
        return {
            "zarr_format": 2,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "dtype": self.layout.dtype,
            "compressor": None,
            "fill_value": _json_value(self.fill_value),
            "order": "C",
            "filters": None,
            "dimension_separator": ".",
        }

    def zattrs(self, max_files: int = 10_000, max_missing: int = 1_000) -> dict[str, Any]:
        """The ``.zattrs`` document: ``_ARRAY_DIMENSIONS`` and tiffstore's description.

        The ``tiffstore`` entry holds ``axes`` (name, kind, where it comes from,
        size and, for name axes, values), ``coords`` (name -> dims, values, units),
        ``template``, ``source``, ``files`` (names in grid order, ``null`` where
        missing; left out past ``max_files``) and ``missing`` (axis values of empty
        cells; cut at ``max_missing``).
        """
        axes: list[dict[str, Any]] = []
        coords: dict[str, dict[str, Any]] = {}
        for a in self.array_axes:
            values = [_json_value(v) for v in a.values]
            axes.append(
                {"name": a.name, "kind": a.kind, "source": "name", "size": a.size, "values": values}
            )
            coords[a.name] = {"dims": [a.name], "values": values}
            if a.units:
                coords[a.name]["units"] = a.units
        nv = self.n_name_dims
        for d, name in enumerate(self.file_dims):
            axes.append(
                {
                    "name": name,
                    "kind": axis_kind(name),
                    "source": "file",
                    "size": self.shape[nv + d],
                }
            )
        sizes = {a.name: a.size for a in self.name_axes}
        tile_axes = {self.name_axes[k].name for k, _ in self.stitched}
        tile_coords: dict[str, dict[str, Any]] = {}
        for c in self.coords:
            shape = tuple(sizes[d] for d in c.dims)
            values = c.as_array(shape).tolist() if shape else list(c.values)
            entry: dict[str, Any] = {"dims": list(c.dims), "values": values}
            if c.units:
                entry["units"] = c.units
            # A coordinate over tile axes has no dim of the stitched array to live on.
            (tile_coords if tile_axes & set(c.dims) else coords)[c.name] = entry
        missing = self.missing()
        files: dict[str, Any] = {"count": len(self.files)}
        if len(self.files) <= max_files:
            names = [self.files[i] if i >= 0 else None for i in self.file_index.ravel().tolist()]
            files["names"] = names
        doc: dict[str, Any] = {
            "_ARRAY_DIMENSIONS": list(self.dims),
            "tiffstore": {
                "version": __version__,
                "source": self.source.url(""),
                "template": self.template,
                "axes": axes,
                "coords": coords,
                "files": files,
                "missing_count": len(missing),
                "missing": missing[:max_missing],
            },
        }
        if self.stitched:
            doc["tiffstore"]["tiles"] = [
                {
                    "axis": self.name_axes[k].name,
                    "into": self.file_dims[d],
                    "tile_size": self.layout.shape[d],
                    "values": [_json_value(v) for v in self.name_axes[k].values],
                }
                for k, d in self.stitched
            ]
            doc["tiffstore"]["tile_coords"] = tile_coords
        return doc


def _strides(shape: Sequence[int]) -> tuple[int, ...]:
    """C-order strides, in items, of an array of ``shape``."""
    out = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        out[k] = out[k + 1] * shape[k + 1]
    return tuple(out)


# ---------------------------------------------------------------------------
# building


def _rename_collisions(name_axes: tuple[Axis, ...], file_dims: tuple[str, ...]) -> tuple[Axis, ...]:
    """Rename name axes whose names the files' own dims already use."""
    taken = set(file_dims)
    out = []
    for a in name_axes:
        name = a.name
        if name in taken:
            base = f"tile_{name}" if a.kind == "space" else f"{name}_file"
            name, n = base, 2
            while name in taken:
                name, n = f"{base}{n}", n + 1
        taken.add(name)
        out.append(Axis(name, a.kind, a.values, a.label, a.units) if name != a.name else a)
    return tuple(out)


def resolve_chunks(
    spec: ChunkSpec,
    name_axes: tuple[Axis, ...],
    layout: FileLayout,
    target_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[int, ...]:
    """Turn a chunk request into a chunk shape over all dims.

    ``None`` groups whole pages up to ``target_bytes`` (continuing across files
    along a spatial name axis next to the files' dims, such as 2-D planes named by
    ``z``); ``"page"`` is one page; ``"file"`` one file; ``"native"`` one of the
    files' own strips or tiles (one page where pages are stored uncompressed and
    whole); an int is that many pages; a tuple gives every dim (``None`` or -1 for
    the whole dim).
    """
    name_shape = tuple(a.size for a in name_axes)
    shape = name_shape + layout.shape
    nn, nl = len(name_shape), len(layout.leading_shape)
    if isinstance(spec, (tuple, list)):
        if len(spec) != len(shape):
            raise ValueError(
                f"chunks={tuple(spec)} has {len(spec)} entries; the array has {len(shape)} dims {shape}."
            )
        out = []
        for c, n in zip(spec, shape, strict=True):
            if c is None or c == -1:
                out.append(max(n, 1))
            elif isinstance(c, (int, np.integer)) and c > 0:
                out.append(min(int(c), max(n, 1)))
            else:
                raise ValueError(
                    f"chunks={tuple(spec)}: each entry must be a positive int, -1 or None."
                )
        return tuple(out)
    if spec == "file":
        return (1,) * nn + tuple(max(n, 1) for n in layout.shape)
    if spec == "native":
        # Uncompressed whole pages are read as byte ranges: a page is their natural unit.
        page = layout.page_shape if layout.raw_pages else layout.native_page_chunks()
        return (1,) * (nn + nl) + tuple(max(n, 1) for n in page)
    if spec == "page":
        pages = 1
    elif spec is None or spec == "auto":
        pages = max(1, target_bytes // max(layout.page_nbytes, 1))
    elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and spec > 0:
        pages = int(spec)
    else:
        raise ValueError(
            f"chunks={spec!r} is not understood: use None, 'page', 'file', 'native', an int "
            "(pages per chunk) or a tuple with one entry per dim."
        )
    lead: list[int] = []
    budget = pages
    for n in reversed(layout.leading_shape):
        take = min(n, budget)
        lead.insert(0, max(take, 1))
        budget = budget // n if take == n else 1
    name_chunks = [1] * nn
    # 2-D planes named by z (or another spatial axis just before the file dims):
    # continue grouping across files along that axis.
    if spec != "page" and nl == 0 and nn and name_axes[-1].kind == "space":
        name_chunks[-1] = max(1, min(budget, name_shape[-1]))
    return tuple(name_chunks) + tuple(lead) + tuple(layout.page_shape)


def _stitch_plan(
    tiles: str, grid_axes: tuple[Axis, ...], layout: FileLayout
) -> tuple[tuple[int, int], ...]:
    """Which name axes ``tiles="stitch"`` folds into which file dims, checked to tile.

    A name axis is a tile axis when its name (before any renaming) is ``x``, ``y``
    or ``z`` and the files have that dim. Its values must be tile indices (steps of
    1) or pixel offsets that step by exactly the files' size along the dim;
    anything else means the tiles overlap or leave gaps and need registration.
    """
    if tiles == "keep":
        return ()
    if tiles != "stitch":
        raise ValueError(f"tiles={tiles!r}: use 'keep' (tile axes stay axes) or 'stitch'.")
    plan: list[tuple[int, int]] = []
    for k, axis in enumerate(grid_axes):
        name = axis.name.lower()
        if name not in ("x", "y", "z") or name not in layout.dims:
            continue
        d = layout.dims.index(name)
        size = layout.shape[d]
        values = axis.values
        if not all(isinstance(v, int) for v in values):
            raise NamingError(
                f"tiles='stitch': the {axis.name} tile values {list(values)[:5]} are not "
                "numbers, so the tiles cannot be placed. Open with tiles='keep'."
            )
        steps = {int(b) - int(a) for a, b in itertools.pairwise(values)}
        if steps and steps != {1} and steps != {size}:
            raise NamingError(
                f"tiles='stitch': the {axis.name} tile positions {list(values)[:6]} step by "
                f"{sorted(steps)}, but each file is {size} pixels along {name}: the tiles "
                "overlap or leave gaps and need registration, which tiffstore does not do. "
                "Open with tiles='keep' to get each tile on its own axis."
            )
        plan.append((k, d))
    if not plan:
        logger.warning(
            "tiles='stitch': no x/y/z field varies in the names, so there is nothing to stitch"
        )
    return tuple(plan)


def _checked_chunks(
    chunks: tuple[int, ...], stitched: tuple[tuple[int, int], ...], layout: FileLayout
) -> tuple[int, ...]:
    """Chunks must not straddle stitched tiles: along a tiled dim they divide the tile."""
    nv = len(chunks) - len(layout.shape)
    for _, d in stitched:
        if layout.shape[d] % chunks[nv + d]:
            raise ValueError(
                f"chunks={chunks}: along the stitched {layout.dims[d]} dim a chunk must divide "
                f"the tile size {layout.shape[d]}."
            )
    return chunks


def _parse_all(source: FileSource, names: Sequence[str], workers: int) -> list[FileLayout]:
    def parse(name: str) -> FileLayout:
        with source.open(name) as fh:
            return read_layout(fh, source.url(name))

    if len(names) == 1 or workers <= 1:
        return [parse(n) for n in names]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(parse, names))


def _scan_layouts(
    source: FileSource, files: Sequence[SourceFile], validate: bool, workers: int
) -> tuple[list[int], list[FileLayout], list[bytes | None], np.ndarray]:
    """Find every file's layout, parsing one header per group of same-size files.

    Files of one size whose header bytes (everything before the pixel data) match
    a parsed reference share its layout; a few of each group are compared at open
    and the rest on their first read. ``validate=True`` parses every header.
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        by_size[f.size].append(i)
    layouts: list[FileLayout] = []
    signatures: list[bytes | None] = []
    index: dict[tuple[FileLayout, bytes | None], int] = {}
    file_layout = [-1] * len(files)
    verified = np.zeros(len(files), dtype=bool)

    def assign(members: Sequence[int], layout: FileLayout, sig: bytes | None) -> None:
        # Hashing a layout walks its offsets: do it once per group, not per file.
        key = (layout, sig)
        if key not in index:
            index[key] = len(layouts)
            layouts.append(layout)
            signatures.append(sig)
        k = index[key]
        for i in members:
            file_layout[i] = k

    refs = [members[0] for members in by_size.values()]
    ref_layouts = _parse_all(source, [files[i].name for i in refs], workers)
    to_parse: list[int] = []
    for members, ref_layout in zip(by_size.values(), ref_layouts, strict=True):
        ref = members[0]
        verified[ref] = True
        sig: bytes | None = None
        if (
            not validate
            and len(members) > 1
            and ref_layout.storage == "contiguous"
            and ref_layout.data_offset is not None
            and ref_layout.data_offset <= MAX_SIGNATURE_BYTES
        ):
            sig = bytes(source.read(files[ref].name, 0, ref_layout.data_offset))
            sample = sorted({members[len(members) // 2], members[-1]} - {ref})
            if all(bytes(source.read(files[i].name, 0, len(sig))) == sig for i in sample):
                verified[sample] = True
            else:
                sig = None
        if sig is None:
            assign([ref], ref_layout, sig)
            to_parse.extend(members[1:])
        else:
            assign(members, ref_layout, sig)
    if to_parse:
        parsed = _parse_all(source, [files[i].name for i in to_parse], workers)
        for i, layout in zip(to_parse, parsed, strict=True):
            verified[i] = True
            assign([i], layout, None)
    if validate:
        for i, f in enumerate(files):
            end = layouts[file_layout[i]].data_end
            if end is not None and end > f.size:
                raise TiffReadError(
                    f"{source.url(f.name)}: file is truncated: its pixel data end at byte "
                    f"{end} but the file holds {f.size} bytes. Was it still being written? "
                    "Replace it, or open without validate=True to read the other files."
                )
    return file_layout, layouts, signatures, verified


def _check_same_array(
    source: FileSource,
    files: Sequence[SourceFile],
    file_layout: list[int],
    layouts: list[FileLayout],
) -> None:
    first = layouts[file_layout[0]]
    for i, k in enumerate(file_layout):
        other = layouts[k]
        if not first.same_array(other):
            raise LayoutMismatchError(
                "The files do not hold arrays of one shape and type, so they cannot be stacked:\n"
                f"  {source.url(files[0].name)}: {first.describe()}\n"
                f"  {source.url(files[i].name)}: {other.describe()}\n"
                f"They differ in {'; '.join(first.differences(other))}. Open each kind "
                "separately (a narrower glob or a list of files)."
            )


def build_manifest(
    source: FileSource,
    files: Sequence[SourceFile],
    *,
    pattern: str | None = None,
    chunks: ChunkSpec = None,
    fill_value: int | float | None = None,
    validate: bool = False,
    tiles: str = "keep",
    workers: int = 16,
) -> Manifest:
    """Describe the virtual array that a list of TIFF files forms.

    Parameters
    ----------
    source, files
        The acquisition's reader and files, from :func:`tiffstore.sources.resolve_source`.
    pattern
        Template or regex for the names (see :func:`tiffstore.naming.understand_names`).
    chunks
        Chunk request (see :func:`resolve_chunks`).
    fill_value
        Value for grid cells with no file (default 0).
    tiles
        ``"keep"``: tile axes from the names (``x``, ``y``, ``z`` fields) stay axes of
        their own (tiles usually overlap and need registration). ``"stitch"``: place a
        non-overlapping grid of tiles side by side along the files' own dims.
    validate
        Parse every file's header now instead of trusting same-size files whose
        header bytes match a parsed one, and check that each file holds all the
        pixel data its header points to.
    workers
        Threads for header parsing.
    """
    names = [f.name for f in files]
    grid: NameGrid = understand_names(names, pattern)
    file_layout, layouts, signatures, verified = _scan_layouts(source, files, validate, workers)
    _check_same_array(source, files, file_layout, layouts)
    layout = layouts[file_layout[0]]
    stitched = _stitch_plan(tiles, grid.axes, layout)
    name_axes = _rename_collisions(grid.axes, layout.dims)
    renamed = {a.name: b.name for a, b in zip(grid.axes, name_axes, strict=True)}
    coords = tuple(
        Coordinate(
            c.name if c.name not in set(layout.dims) | set(renamed.values()) else f"{c.name}_coord",
            tuple(renamed[d] for d in c.dims),
            c.values,
            c.units,
        )
        for c in grid.coords
    )
    folded = {k for k, _ in stitched}
    array_axes = tuple(a for k, a in enumerate(name_axes) if k not in folded)
    # The first layout must be the first file's: it speaks for all of them.
    order = sorted(range(len(layouts)), key=lambda k: file_layout.index(k))
    remap = {old: new for new, old in enumerate(order)}
    if fill_value is None:
        fill_value = 0
    dtype = np.dtype(layout.dtype)
    if dtype.kind == "b" and fill_value in (0, 1):
        fill_value = bool(fill_value)  # bilevel images: Zarr wants true or false
    elif not np.can_cast(np.min_scalar_type(fill_value), dtype, casting="same_kind"):
        raise ValueError(f"fill_value={fill_value!r} does not fit the files' dtype {dtype}.")
    manifest = Manifest(
        source=source,
        files=tuple(names),
        file_index=grid.file_index(),
        file_layout=np.array([remap[k] for k in file_layout], dtype=np.int32),
        layouts=tuple(layouts[k] for k in order),
        signatures=tuple(signatures[k] for k in order),
        verified=verified,
        name_axes=name_axes,
        file_dims=layout.dims,
        chunks=_checked_chunks(resolve_chunks(chunks, array_axes, layout), stitched, layout),
        fill_value=fill_value,
        coords=coords,
        template=grid.template,
        file_sizes=tuple(f.size for f in files),
        stitched=stitched,
    )
    logger.info(
        "%d files -> array %s %s of dims %s, chunks %s",
        len(files),
        manifest.shape,
        manifest.dtype,
        manifest.dims,
        manifest.chunks,
    )
    return manifest

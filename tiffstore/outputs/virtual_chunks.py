"""The manifest's chunks as virtual chunk references: Zarr format 3 metadata and
``(location, offset, length)`` per chunk, as numpy columns.

A virtual chunk reference (Icechunk's, VirtualiZarr's) names a byte range of a
file that a standard Zarr format 3 codec chain decodes to one chunk. The chunks
are chosen as for reference files (:func:`~tiffstore.outputs.reference_chunks.reference_chunks`:
whole uncompressed pages or runs of them, or the files' own strips or tiles) and
every one that is a byte range is one reference
(:func:`~tiffstore.outputs.chunk_ranges.chunk_range`). The codecs are ones any
``zarr`` reader has: ``bytes``, ``zstd`` and ``numcodecs.zlib``. TIFF's
horizontal and floating-point predictors restart every row, so no standard codec
undoes them; nor does one decode LZW, PackBits, JPEG and the other image codecs:
those are refused, pointing to ``tiffstore materialize``.

The few chunks no byte range is (a last strip a TIFF stores short, a strip never
written) are listed in :attr:`VirtualChunks.native`: a writer stores their pixels
(:meth:`VirtualChunks.native_chunk`). Coordinates are values
(:attr:`VirtualChunks.coordinates`), written as ordinary arrays.

The columns are built without a plan per chunk where the chunks are whole pages
of one file, or one strip or tile each, so 100,000 files take a fraction of a second.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numcodecs
import numpy as np

from tiffstore.errors import ReferenceError
from tiffstore.manifest.chunking import ChunkSpec
from tiffstore.manifest.documents import GROUP_V3, ZARR_JSON, Documents
from tiffstore.manifest.headers import verify_manifest
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.plans import page_run_table
from tiffstore.outputs.chunk_ranges import as_read_from, chunk_range, file_url
from tiffstore.outputs.reference_chunks import (
    ReferenceCodecs,
    reference_chunks,
    reference_codecs,
)
from tiffstore.read.assemble import ChunkReader

__all__ = [
    "CoordinateValues",
    "VirtualChunks",
    "location_url",
    "virtual_chunks",
    "zarr_codecs",
]

#: Compressors by numcodecs id that no standard Zarr format 3 codec decodes, in words.
_CODEC_WORDS = {
    "imagecodecs_lzw": "LZW",
    "imagecodecs_packbits": "PackBits",
    "imagecodecs_lzma": "LZMA",
    "imagecodecs_jpeg": "JPEG",
    "imagecodecs_png": "PNG",
    "imagecodecs_webp": "WebP",
    "imagecodecs_jpegxl": "JPEG XL",
    "imagecodecs_jpeg2k": "JPEG 2000",
    "imagecodecs_jpegxr": "JPEG XR",
}

_PREDICTOR_WORDS = {
    "imagecodecs_delta": "TIFF's horizontal differencing predictor",
    "imagecodecs_floatpred": "TIFF's floating-point predictor",
}


@dataclass(frozen=True)
class CoordinateValues:
    """One coordinate array: its values, dims and attributes (``units``)."""

    name: str
    values: np.ndarray
    dims: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class VirtualChunks:
    """The virtual array as Zarr format 3 metadata and one reference per chunk.

    Attributes
    ----------
    manifest
        The manifest, with the chunks the references describe.
    name
        The array's name in a group beside its coordinates (``image`` unless a dim
        or coordinate takes it).
    shape, chunks, dtype, fill_value, dimension_names
        The array's Zarr format 3 metadata (``fill_value`` as its JSON holds it).
    attributes
        The array's attributes: tiffstore's description (axes, coordinates,
        template, ``scale``), and ``coordinates`` naming the non-dim coordinates.
    codecs
        The Zarr format 3 codec chain, as JSON dicts (``bytes`` first).
    index
        ``int64`` ``(n, ndim)``: each referenced chunk's position in the chunk grid.
    file
        ``int64`` ``(n,)``: the file each reference reads (a number into ``urls``).
    offset, length
        ``int64`` ``(n,)``: each reference's byte range.
    urls
        Each file's location as a percent-encoded URL (``file:///data/a%20b.tif``,
        ``s3://...``, or below ``url=``; see :func:`location_url`).
    prefix
        The URL every location starts with (the files' root, encoded alike).
    native
        ``int64`` ``(k, ndim)``: chunks that no byte range is (a last strip stored
        short, a strip never written), whose pixels a writer must store.
    coordinates
        The coordinate arrays' values.
    file_checksums
        Per file, what a reader may check it by: its ETag (``str``), its
        modification time in seconds since the epoch (``int``), or ``None``; all
        ``None`` when the references point at copies (``url=``).
    """

    manifest: Manifest
    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: Any
    dimension_names: tuple[str, ...]
    attributes: dict[str, Any]
    codecs: tuple[dict[str, Any], ...]
    index: np.ndarray
    file: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    urls: tuple[str, ...]
    prefix: str
    native: np.ndarray
    coordinates: tuple[CoordinateValues, ...]
    file_checksums: tuple[str | int | None, ...]

    def __len__(self) -> int:
        """The number of references."""
        return len(self.file)

    @property
    def locations(self) -> np.ndarray:
        """Each reference's URL (``object`` array, ``(n,)``)."""
        return np.asarray(self.urls, dtype=object)[self.file]

    @property
    def native_nbytes(self) -> int:
        """Bytes of pixels in the :attr:`native` chunks, uncompressed."""
        return len(self.native) * math.prod(self.chunks) * self.dtype.itemsize

    def metadata(self) -> dict[str, Any]:
        """The array's Zarr format 3 ``zarr.json`` document."""
        return {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(self.shape),
            "data_type": self.dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(self.chunks)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": self.fill_value,
            "codecs": [dict(c) for c in self.codecs],
            "attributes": self.attributes,
            "dimension_names": list(self.dimension_names),
            "storage_transformers": [],
        }

    def chunk_keys(self, prefix: str = "") -> Iterator[str]:
        """Each reference's Zarr format 3 chunk key (``c/0/3/0/0``), after ``prefix``."""
        for row in self.index.tolist():
            yield prefix + "c/" + "/".join(map(str, row))

    def native_chunk(self, index: tuple[int, ...], reader: ChunkReader | None = None) -> np.ndarray:
        """The pixels of native chunk ``index``: the whole chunk, fill value past the edge."""
        reader = reader or ChunkReader(self.manifest)
        chunk = reader.read_chunk(index)
        if chunk is None:
            return np.full(self.chunks, self.manifest.fill_value, self.dtype)
        return chunk


def location_url(path_or_url: str) -> str:
    """A location as a percent-encoded URL: ``/data/a b.tif`` -> ``file:///data/a%20b.tif``.

    Local paths (and ``file://`` URLs) become absolute ``file://`` URLs; object store
    keys (``s3://bucket/a b.tif``) are encoded; ``http(s)://`` URLs are kept as they
    are (already encoded).
    """
    scheme, sep, rest = path_or_url.partition("://")
    if not sep or scheme == "file":
        path = rest if sep else path_or_url
        url = Path(os.path.abspath(path)).as_uri()
        return url + "/" if path.endswith("/") and not url.endswith("/") else url
    if scheme in ("http", "https"):
        return path_or_url
    host, _, key = rest.partition("/")
    return f"{scheme}://{host}/" + quote(key, safe="/")


def zarr_codecs(m: Manifest, codecs: ReferenceCodecs) -> tuple[dict[str, Any], ...]:
    """The Zarr format 3 codec chain that decodes one chunk's bytes, or a refusal.

    Raises
    ------
    ReferenceError
        For a predictor or a compression no standard Zarr codec decodes, naming the
        file, the codec and the way out.
    """
    dtype = m.dtype
    order = dtype.byteorder if dtype.byteorder != "=" else ("<" if np.little_endian else ">")
    chain: list[dict[str, Any]] = [
        {"name": "bytes", "configuration": {"endian": "big" if order == ">" else "little"}}
    ]
    fix = (
        "Write a real Zarr copy with `tiffstore materialize` instead (or rewrite the TIFFs "
        "without it)."
    )
    for f in codecs.filters or []:
        words = _PREDICTOR_WORDS.get(f["id"], f["id"])
        raise ReferenceError(
            f"{m.url(0)}: its strips or tiles are stored with {words}, which restarts every "
            "row: no standard Zarr codec undoes it, so a Zarr reader could not decode a "
            f"virtual reference to them. {fix}"
        )
    if codecs.compressor is None:
        return tuple(chain)
    cid = codecs.compressor["id"]
    if cid == "zlib":
        chain.append({"name": "numcodecs.zlib", "configuration": {"level": 1}})
    elif cid == "zstd":
        chain.append({"name": "zstd", "configuration": {"level": 0, "checksum": False}})
    else:
        words = _CODEC_WORDS.get(cid, cid)
        raise ReferenceError(
            f"{m.url(0)}: its strips or tiles are compressed with {words}, which no standard "
            f"Zarr codec decodes, so a Zarr reader could not decode a virtual reference to "
            f"them. {fix}"
        )
    return tuple(chain)


def virtual_chunks(m: Manifest, chunks: ChunkSpec = None, url: str | None = None) -> VirtualChunks:
    """The virtual array of ``m`` as Zarr format 3 metadata and virtual chunk references.

    Parameters
    ----------
    m
        The manifest (``store.manifest``). Every file's header is checked first.
    chunks
        The chunks to describe; by default those of reference files (see
        :func:`~tiffstore.outputs.reference_chunks.reference_chunks`).
    url
        Where the TIFFs will be read from (``s3://bucket/raw/``); by default where
        they are now. A local path becomes a ``file://`` URL.

    Raises
    ------
    ReferenceError
        When the chunks cannot be byte ranges, or the files' codec has no standard
        Zarr format 3 codec (a predictor, LZW, JPEG...).

    Examples
    --------
    >>> vc = virtual_chunks(tiffstore.open("raw/").manifest)  # doctest: +SKIP
    >>> vc.locations[0], vc.offset[0], vc.length[0]  # doctest: +SKIP
    ('file:///data/raw/img_c0_s0.tif', 8, 9216)
    """
    m = reference_chunks(verify_manifest(m), chunks)
    codecs = reference_codecs(m)
    chain = zarr_codecs(m, codecs)
    prefix = location_url((url if url is not None else m.source.url("")).rstrip("/") + "/")
    urls = tuple(location_url(file_url(m, i, url)) for i in range(len(m.files)))
    columns = _page_run_columns(m)
    if columns is None:
        columns = _segment_columns(m, codecs)
    if columns is None:
        columns = _planned_columns(m, codecs)
    index, file, offset, length, native = columns
    # The description names where the files are read from: ``url`` when given.
    docs = Documents(as_read_from(m, url), zarr_format=3, sharded=False)
    attributes = json.loads(docs.documents[ZARR_JSON])["attributes"]
    image = json.loads(docs.documents[f"{GROUP_V3}/{docs.image_name}/{ZARR_JSON}"])
    if image["attributes"].get("coordinates"):
        attributes["coordinates"] = image["attributes"]["coordinates"]
    return VirtualChunks(
        manifest=m,
        name=docs.image_name,
        shape=m.shape,
        chunks=m.chunks,
        dtype=m.dtype,
        fill_value=image["fill_value"],
        dimension_names=m.dims,
        attributes=attributes,
        codecs=chain,
        index=index,
        file=file,
        offset=offset,
        length=length,
        urls=urls,
        prefix=prefix,
        native=native,
        coordinates=_coordinates(docs),
        file_checksums=_file_checksums(m) if url is None else (None,) * len(m.files),
    )


_Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _columns(
    grid_shape: tuple[int, ...], file: np.ndarray, offset: np.ndarray, length: np.ndarray
) -> _Columns:
    """References where ``file >= 0`` over the chunk grid; nothing native."""
    cells = np.flatnonzero(file.reshape(-1) >= 0)
    index = np.stack(np.unravel_index(cells, grid_shape), axis=1).astype(np.int64)
    return (
        index.reshape(len(cells), len(grid_shape)),
        file.reshape(-1)[cells].astype(np.int64),
        offset.reshape(-1)[cells].astype(np.int64),
        np.broadcast_to(length, file.shape).reshape(-1)[cells].astype(np.int64),
        np.zeros((0, len(grid_shape)), np.int64),
    )


def _page_run_columns(m: Manifest) -> _Columns | None:
    """Every chunk whole pages of one file: the columns at once (no plan per chunk)."""
    table = page_run_table(m)
    if table is None:
        return None
    files, offsets, nbytes = table
    return _columns(m.chunk_grid, files, offsets, np.array(nbytes, np.int64))


def _segment_columns(m: Manifest, codecs: ReferenceCodecs) -> _Columns | None:
    """Every chunk one strip or tile of one page: the columns at once from the tables.

    Follows :func:`~tiffstore.outputs.chunk_ranges.whole_segment` for a whole grid of
    segments: a chunk is its segment's byte range where the segment was written and
    is whole (interior, an edge tile, or uncompressed and every byte there);
    otherwise it is native. Whether a geometry's edge tiles are stored padded is
    found from its first file with an edge tile (files of one geometry are written
    by one writer; a file that is not fails its read loudly, never silently).
    """
    seg = m.layout.segments
    if m.stitched or seg is None or any(lay.storage != "segments" for lay in m.layouts):
        return None
    shape = (seg.image, seg.segment, seg.samples, seg.planar, seg.codec, seg.tiled)
    for lay in m.layouts:
        s = lay.segments
        if s is None or (s.image, s.segment, s.samples, s.planar, s.codec, s.tiled) != shape:
            return None
    nn, layout = m.n_name_dims, m.layout
    nl = len(layout.leading_shape)
    if m.chunks != (1,) * (nn + nl) + seg.native_chunks():
        return None
    full_items = seg.segment[0] * seg.segment[1] * seg.contig_samples
    if full_items != math.prod(m.chunks):
        return None
    down, across = seg.grid
    per_page = seg.planes * down * across
    if seg.offsets.shape[1] != per_page:
        return None
    n_pages = layout.n_pages
    page_grid = m.chunk_grid[nn + nl :]
    # Segment s of a page is the C-order cell s of the page's chunk grid.
    rows_in = np.arange(per_page) // across % down
    cols_in = np.arange(per_page) % across
    valid_rows = np.minimum(seg.segment[0], seg.image[0] - rows_in * seg.segment[0])
    valid_cols = np.minimum(seg.segment[1], seg.image[1] - cols_in * seg.segment[1])
    interior = (valid_rows == seg.segment[0]) & (valid_cols == seg.segment[1])
    cells = m.file_index.reshape(-1)
    present = cells[cells >= 0]
    t = m.tables
    rows = t.start[present][:, None] + np.arange(n_pages * per_page)[None, :]
    offsets = t.offsets[rows]
    counts = t.bytecounts[rows]
    whole = counts > 0
    if codecs.compressor is None:
        whole &= counts == full_items * m.dtype.itemsize
    else:
        edge_ok = seg.tiled and _edge_tiles_whole(m, codecs, present, interior, n_pages)
        whole &= np.tile(interior | edge_ok, n_pages)[None, :]
    grid_shape = m.chunk_grid
    per_file = n_pages * per_page
    file = np.full((cells.size, per_file), -1, np.int64)
    file[cells >= 0] = np.where(whole, present[:, None], -1)
    offset = np.zeros(file.shape, np.int64)
    length = np.zeros(file.shape, np.int64)
    offset[cells >= 0], length[cells >= 0] = offsets, counts
    index, file_col, offset_col, length_col, _ = _columns(grid_shape, file, offset, length)
    native_cells = np.flatnonzero(np.repeat(cells >= 0, per_file) & (file.reshape(-1) < 0))
    native = np.stack(np.unravel_index(native_cells, grid_shape), axis=1).astype(np.int64)
    assert math.prod(page_grid) == per_page
    return index, file_col, offset_col, length_col, native.reshape(-1, len(grid_shape))


def _edge_tiles_whole(
    m: Manifest, codecs: ReferenceCodecs, present: np.ndarray, interior: np.ndarray, n_pages: int
) -> bool:
    """Whether the files store their compressed edge tiles padded to the whole tile."""
    if interior.all() or not present.size:
        return True
    segment = int(np.flatnonzero(~interior)[0])
    file = int(present[0])
    t = m.tables
    row = int(t.start[file]) + segment
    offset, nbytes = int(t.offsets[row]), int(t.bytecounts[row])
    if nbytes <= 0:
        return False
    (data,) = m.source.read_ranges(m.files[file], [(offset, nbytes)])
    try:
        codecs.decode(bytes(data), m.chunks, m.dtype)
    except Exception:
        return False  # stored at their valid size: their pixels are stored instead
    return True


def _planned_columns(m: Manifest, codecs: ReferenceCodecs) -> _Columns:
    """Any other chunks: a plan per chunk, each a byte range or native."""
    reader = ChunkReader(m)
    whole: dict[int, bool] = {}
    index: list[tuple[int, ...]] = []
    refs: list[tuple[int, int, int]] = []
    native: list[tuple[int, ...]] = []
    for at in np.ndindex(*m.chunk_grid):
        plan = reader.plan(at)
        if plan.empty:
            continue
        piece = chunk_range(m, plan, codecs, whole)
        if piece is None:
            native.append(at)
        else:
            index.append(at)
            refs.append((piece.file, piece.offset, piece.nbytes))
    ndim = len(m.chunk_grid)
    cols = np.array(refs, np.int64).reshape(-1, 3)
    return (
        np.array(index, np.int64).reshape(-1, ndim),
        cols[:, 0].copy(),
        cols[:, 1].copy(),
        cols[:, 2].copy(),
        np.array(native, np.int64).reshape(-1, ndim),
    )


def _coordinates(docs: Documents) -> tuple[CoordinateValues, ...]:
    """The group view's coordinate arrays, as values."""
    group = json.loads(docs.documents[f"{GROUP_V3}/{ZARR_JSON}"])
    out = []
    for name, doc in group["consolidated_metadata"]["metadata"].items():
        if name == docs.image_name:
            continue
        shape = tuple(doc["shape"])
        data = docs.coordinate_chunks[f"{GROUP_V3}/{name}/c" + "/0" * len(shape)]
        if doc["data_type"] == "string":
            values = np.asarray(numcodecs.VLenUTF8().decode(data), dtype=str).reshape(shape)
        else:
            endian = doc["codecs"][0]["configuration"]["endian"]
            dtype = np.dtype(doc["data_type"]).newbyteorder("<" if endian == "little" else ">")
            values = np.frombuffer(data, dtype).reshape(shape)
        dims = tuple(doc["dimension_names"])
        out.append(CoordinateValues(name, values, dims, dict(doc["attributes"])))
    return tuple(out)


def _file_checksums(m: Manifest) -> tuple[str | int | None, ...]:
    """Per file: its ETag, else its modification time in whole seconds, else ``None``."""
    versions = m.file_versions or ("",) * len(m.files)
    mtimes = m.file_mtimes.tolist() if m.file_mtimes is not None else [-1] * len(m.files)
    out: list[str | int | None] = []
    for version, mtime in zip(versions, mtimes, strict=True):
        if version and not version.startswith("modified:"):
            out.append(version)
        elif mtime >= 0:
            out.append(-(-mtime // 1_000_000_000))  # rounded up: "not modified after"
        else:
            out.append(None)
    return tuple(out)

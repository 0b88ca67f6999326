"""One TIFF's header -> where each page's bytes are.

tifffile does the parsing; this module keeps only what the virtual array needs,
as a small frozen value (:class:`FileLayout`) that pickles in bytes and is shared
by every file written the same way.

A file's array is ``leading dims + page dims``: the leading dims index its pages
(``z`` for a plain stack, ``t, z, c`` for an ImageJ hyperstack) and the page dims
are one page's shape (``y, x``, with ``c`` for RGB samples).

A page is stored in *segments* (strips or tiles). Where one page's segments lie
back to back uncompressed, the page is a byte range (``contiguous`` or ``pages``
storage); otherwise each segment is read and decoded alone (``segments``), so a
chunk costs only the segments it overlaps.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import IO, Any, Literal, NamedTuple
from xml.etree import ElementTree

import numpy as np
import tifffile

from .codecs import SegmentCodec, segment_codec
from .errors import TiffReadError, TiffStoreError
from .scale import VoxelSize, read_voxel_size

__all__ = [
    "FileLayout",
    "SegmentPiece",
    "Segments",
    "Storage",
    "read_layout",
    "read_pages_with_tifffile",
]

logger = logging.getLogger(__name__)

#: How a file's pages are stored:
#: ``contiguous`` all pages uncompressed, back to back from ``data_offset``;
#: ``pages`` each page uncompressed and contiguous, at ``page_offsets``;
#: ``segments`` strips or tiles read and decoded one by one (see :class:`Segments`);
#: ``tifffile`` anything else (packed bits, volumetric tiles...), decoded by tifffile.
Storage = Literal["contiguous", "pages", "segments", "tifffile"]

# Sample formats numpy holds as they are: unsigned, signed, float, complex float.
_PLAIN_SAMPLE_FORMATS = {1, 2, 3, 6}


class SegmentPiece(NamedTuple):
    """The part of one segment that falls in a requested page region.

    ``rows`` and ``cols`` are within the segment; ``dest`` is where that part goes in
    the region, as ``(plane, rows, cols)`` over the region's normalized shape.
    """

    segment: int
    rows: slice
    cols: slice
    dest: tuple[int, slice, slice]


@dataclass(frozen=True, eq=False)
class Segments:
    """Where every page's strips or tiles are, and how they are shaped and encoded.

    A page is normalized to ``(planes, rows, columns, samples)``: samples stored in
    separate planes (``PlanarConfiguration=2``) are ``planes``, interleaved ones are
    ``samples``. Segments are numbered as TIFF numbers them: plane by plane, then
    row by row of segments.

    Attributes
    ----------
    offsets, bytecounts
        ``int64`` arrays of ``(pages, segments per page)``: where each segment's
        bytes are and how many (0 for a segment that was never written).
    image
        Rows and columns of a page.
    segment
        Rows and columns of one segment: rows per strip and the page's width for
        strips, the tile shape for tiles.
    samples
        Samples per pixel.
    planar
        Whether samples are stored in separate planes.
    codec
        How each segment is encoded.
    """

    offsets: np.ndarray
    bytecounts: np.ndarray
    image: tuple[int, int]
    segment: tuple[int, int]
    samples: int
    planar: bool
    codec: SegmentCodec

    def __post_init__(self) -> None:
        for a in (self.offsets, self.bytecounts):
            a.setflags(write=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segments):
            return NotImplemented
        return (
            self._geometry() == other._geometry()
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.bytecounts, other.bytecounts)
        )

    def __hash__(self) -> int:
        return hash((self._geometry(), self.offsets.tobytes(), self.bytecounts.tobytes()))

    def _geometry(self) -> tuple[Any, ...]:
        return (self.image, self.segment, self.samples, self.planar, self.codec)

    @property
    def planes(self) -> int:
        return self.samples if self.planar else 1

    @property
    def contig_samples(self) -> int:
        return 1 if self.planar else self.samples

    @property
    def grid(self) -> tuple[int, int]:
        """Segments per plane down and across."""
        return (-(-self.image[0] // self.segment[0]), -(-self.image[1] // self.segment[1]))

    def segment_shape(self, index: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Full shape of segment ``index`` and the part of it inside the image."""
        across = self.grid[1]
        row = (index // across) % self.grid[0] * self.segment[0]
        col = index % across * self.segment[1]
        full = (*self.segment, self.contig_samples)
        valid = (
            min(self.segment[0], self.image[0] - row),
            min(self.segment[1], self.image[1] - col),
            self.contig_samples,
        )
        return full, valid

    def normalize(self, region: tuple[slice, ...]) -> tuple[slice, slice, slice, slice]:
        """A region of the page's own dims as ``(planes, rows, columns, samples)``."""
        one = slice(0, 1)
        if self.samples == 1:
            return (one, region[0], region[1], one)
        if self.planar:
            return (region[0], region[1], region[2], one)
        return (one, region[0], region[1], region[2])

    def denormalize(self, region: tuple[slice, slice, slice, slice]) -> tuple[slice, ...]:
        """The inverse of :meth:`normalize`: ``(planes, rows, columns, samples)`` -> page dims."""
        planes, rows, cols, samples = region
        if self.samples == 1:
            return (rows, cols)
        if self.planar:
            return (planes, rows, cols)
        return (rows, cols, samples)

    def pieces(self, region: tuple[slice, slice, slice, slice]) -> Iterator[SegmentPiece]:
        """The segments a normalized page region overlaps, and which part of each.

        Examples
        --------
        >>> seg = Segments(np.zeros((1, 3), np.int64), np.zeros((1, 3), np.int64),
        ...                (20, 30), (7, 30), 1, False, SegmentCodec())
        >>> [p.segment for p in seg.pieces((slice(0, 1), slice(5, 15), slice(0, 30), slice(0, 1)))]
        [0, 1, 2]
        """
        planes, rows, cols, _ = region
        seg_rows, seg_cols = self.segment
        down, across = self.grid
        for plane in range(planes.start, planes.stop):
            for r in range(rows.start // seg_rows, -(-rows.stop // seg_rows)):
                r0 = r * seg_rows
                in_rows = slice(max(rows.start, r0) - r0, min(rows.stop, r0 + seg_rows) - r0)
                dest_rows = slice(in_rows.start + r0 - rows.start, in_rows.stop + r0 - rows.start)
                for c in range(cols.start // seg_cols, -(-cols.stop // seg_cols)):
                    c0 = c * seg_cols
                    in_cols = slice(max(cols.start, c0) - c0, min(cols.stop, c0 + seg_cols) - c0)
                    dest_cols = slice(
                        in_cols.start + c0 - cols.start, in_cols.stop + c0 - cols.start
                    )
                    yield SegmentPiece(
                        (plane * down + r) * across + c,
                        in_rows,
                        in_cols,
                        (plane - planes.start, dest_rows, dest_cols),
                    )

    def native_chunks(self) -> tuple[int, ...]:
        """One segment's extent over the page's own dims (the file's own chunking)."""
        rows, cols = min(self.segment[0], self.image[0]), min(self.segment[1], self.image[1])
        if self.samples == 1:
            return (rows, cols)
        if self.planar:
            return (1, rows, cols)
        return (rows, cols, self.samples)


@dataclass(frozen=True)
class FileLayout:
    """Where one TIFF file's pixels are, as plain data.

    Attributes
    ----------
    shape
        Shape of the file's array (tifffile's squeezed series shape; for one file of
        a multi-file OME-TIFF set, the part held in this file).
    dtype
        NumPy dtype string with the file's byte order, e.g. ``'<u2'`` or ``'>f4'``.
    dims
        Dimension names, one per entry of ``shape`` (``('z', 'y', 'x')``).
    page_ndim
        How many trailing dims one page holds (2, or 3 with samples).
    storage
        How the pages are stored (see :data:`Storage`).
    data_offset
        For ``contiguous``: byte offset of the first page.
    page_offsets
        For ``pages``: byte offset of every page.
    segments
        For ``segments``: every page's strips or tiles.
    samples
        Samples per pixel (3 for RGB).
    page_ifds
        For ``tifffile``: byte offset of every page's IFD, so that a page is decoded
        without parsing the file's other pages (``None`` when tifffile must decode
        the whole series).
    scale
        What one voxel measures along ``z``, ``y``, ``x``, from the file's metadata
        (see :mod:`tiffstore.scale`); ``None`` when not read.
    """

    shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    page_ndim: int
    storage: Storage
    data_offset: int | None = None
    page_offsets: tuple[int, ...] | None = None
    segments: Segments | None = None
    samples: int = 1
    page_ifds: tuple[int, ...] | None = None
    scale: VoxelSize | None = None

    @cached_property
    def leading_shape(self) -> tuple[int, ...]:
        return self.shape[: len(self.shape) - self.page_ndim]

    @cached_property
    def page_shape(self) -> tuple[int, ...]:
        return self.shape[len(self.shape) - self.page_ndim :]

    @cached_property
    def n_pages(self) -> int:
        return math.prod(self.leading_shape)

    @cached_property
    def page_nbytes(self) -> int:
        return math.prod(self.page_shape) * np.dtype(self.dtype).itemsize

    @cached_property
    def raw_pages(self) -> bool:
        """Whether every page is one uncompressed byte range (see :meth:`page_offset`)."""
        return self.storage in ("contiguous", "pages")

    def page_offset(self, page: int) -> int | None:
        """Byte offset of an uncompressed page, or ``None`` if it must be decoded."""
        if self.storage == "contiguous":
            assert self.data_offset is not None
            return self.data_offset + page * self.page_nbytes
        if self.storage == "pages":
            assert self.page_offsets is not None
            return self.page_offsets[page]
        return None

    def native_page_chunks(self) -> tuple[int, ...]:
        """The chunk of one page that the file's own strips or tiles suggest."""
        if self.segments is not None:
            return self.segments.native_chunks()
        return self.page_shape

    def same_array(self, other: FileLayout) -> bool:
        """True when both files hold arrays of one shape, dtype and dims."""
        return (self.shape, self.dtype, self.dims) == (other.shape, other.dtype, other.dims)

    def differences(self, other: FileLayout) -> list[str]:
        """What keeps two files from stacking, in words (empty when they stack)."""
        what = []
        if self.samples != other.samples:
            what.append(f"samples per pixel {self.samples} vs {other.samples}")
        if self.shape != other.shape:
            what.append(f"shape {self.shape} vs {other.shape}")
        if self.dims != other.dims:
            what.append(f"dims {self.dims} vs {other.dims}")
        a, b = np.dtype(self.dtype), np.dtype(other.dtype)
        if a.newbyteorder("=") != b.newbyteorder("="):
            what.append(f"dtype {a.name} vs {b.name}")
        elif a != b:
            what.append(f"byte order {_byte_order(a)} vs {_byte_order(b)}")
        return what

    def describe(self) -> str:
        dims = ", ".join(f"{d}={n}" for d, n in zip(self.dims, self.shape, strict=True))
        dtype = np.dtype(self.dtype)
        return f"({dims}) {dtype.name} {_byte_order(dtype)}"

    def __repr__(self) -> str:
        return f"<FileLayout {self.describe()} {self.storage}>"


def _byte_order(dtype: np.dtype[Any]) -> str:
    if dtype.itemsize == 1 or dtype.byteorder == "|":
        return "(no byte order)"
    little = dtype.byteorder == "<" or (dtype.byteorder == "=" and np.little_endian)
    return "little-endian" if little else "big-endian"


def _dim_names(axes: str) -> tuple[str, ...]:
    """tifffile's axis letters -> dimension names.

    Samples are ``c`` unless the file also has channels (then ``s``). Q (unknown)
    and I (image sequence) are the pages of a plain stack, which microscopes write
    along z, unless the file names a z itself.
    """
    names: list[str] = []
    for letter in axes:
        if letter == "S":
            name = "s" if "C" in axes else "c"
        elif letter in "QI" and "Z" not in axes:
            name = "z"
        else:
            name = letter.lower()
        if name in names:
            # Two axes that cannot be told apart (QQ): keep both, distinctly.
            name = f"{name}{names.count(name) + 1}"
        names.append(name)
    return tuple(names)


def _xml_children(element: ElementTree.Element, tag: str) -> list[ElementTree.Element]:
    return [e for e in element if e.tag.rsplit("}", 1)[-1] == tag]


def _ome_file_part(
    tif: tifffile.TiffFile, keyframe: tifffile.TiffPage, n_pages: int
) -> tuple[str, tuple[int, ...]] | None:
    """Axes and shape of the planes this file holds in a multi-file OME-TIFF set.

    Each file of such a set carries the OME-XML of the whole set; its ``TiffData``
    elements say which planes (``FirstT/C/Z``) lie in which file (``UUID``). Returns
    ``None`` when this file's planes are not one C-ordered block of the series, or
    the XML cannot be read.
    """
    try:
        root = ElementTree.fromstring(tif.ome_metadata or "")
    except ElementTree.ParseError:
        return None
    images = _xml_children(root, "Image")
    pixels = _xml_children(images[0], "Pixels") if images else []
    if not pixels:
        return None
    px = pixels[0]
    order = px.get("DimensionOrder", "XYZCT")
    lead_axes = order[2:][::-1]  # XYZCT -> T, C, Z, outermost first
    sizes = {ax: int(px.get(f"Size{ax}", "1")) for ax in lead_axes}
    channels = _xml_children(px, "Channel")
    spp = int(channels[0].get("SamplesPerPixel", "1")) if channels else 1
    if spp > 1:
        sizes["C"] = max(sizes["C"] // spp, 1)
    lead_shape = tuple(sizes[ax] for ax in lead_axes)
    own_uuid = root.get("UUID")
    own_name = os.path.basename(tif.filename).lower()
    position: dict[int, int] = {}
    for data in _xml_children(px, "TiffData"):
        uuids = _xml_children(data, "UUID")
        if uuids and not (
            uuids[0].text == own_uuid or uuids[0].get("FileName", "").lower() == own_name
        ):
            continue
        ifd = int(data.get("IFD", "0"))
        count = int(
            data.get("PlaneCount", data.get("NumPlanes", "1" if "IFD" in data.attrib else "0"))
        )
        first = [int(data.get(f"First{ax}", "0")) for ax in lead_axes]
        try:
            start = int(np.ravel_multi_index(first, lead_shape))
        except ValueError:
            return None
        for i in range(count or n_pages - ifd):
            position[ifd + i] = start + i
    if sorted(position) != list(range(n_pages)):
        return None
    planes = np.array([position[i] for i in range(n_pages)])
    if (planes >= math.prod(lead_shape)).any():
        return None
    index = np.unravel_index(planes, lead_shape)
    lows = [int(i.min()) for i in index]
    extents = [int(i.max()) - lo + 1 for i, lo in zip(index, lows, strict=True)]
    block = np.ravel_multi_index([i - lo for i, lo in zip(index, lows, strict=True)], extents)
    if math.prod(extents) != n_pages or not np.array_equal(block, np.arange(n_pages)):
        return None
    keep = [k for k, n in enumerate(extents) if n > 1]
    axes = "".join(lead_axes[k] for k in keep) + keyframe.axes
    return axes, tuple(extents[k] for k in keep) + tuple(keyframe.shape)


def _segments_of(pages: Sequence[Any], keyframe: tifffile.TiffPage, name: str) -> Segments | None:
    """Every page's strips or tiles, or ``None`` if they cannot be decoded one by one."""
    reasons = []
    if keyframe.imagedepth != 1 or keyframe.tiledepth != 1:
        reasons.append("volumetric pages")
    if keyframe.fillorder != 1:
        reasons.append("reversed bit order")
    if keyframe.bitspersample not in (8, 16, 32, 64) or keyframe.dtype is None:
        reasons.append(f"{keyframe.bitspersample}-bit samples")
    if keyframe.sampleformat not in _PLAIN_SAMPLE_FORMATS:
        reasons.append(f"sample format {keyframe.sampleformat}")
    if keyframe.is_subsampled and keyframe.compression not in (7, 33007, 34892):
        reasons.append("chroma subsampling without JPEG")
    codec = None if reasons else segment_codec(keyframe)
    if codec is None:
        logger.debug("%s: decoding through tifffile (%s)", name, ", ".join(reasons) or "codec")
        return None
    if keyframe.is_tiled:
        segment = (int(keyframe.tilelength), int(keyframe.tilewidth))
    else:
        # RowsPerStrip may exceed the image (2**32 - 1 means "one strip").
        rows = min(int(keyframe.rowsperstrip), int(keyframe.imagelength))
        segment = (max(rows, 1), int(keyframe.imagewidth))
    image = (int(keyframe.imagelength), int(keyframe.imagewidth))
    samples = int(keyframe.samplesperpixel)
    planar = keyframe.planarconfig == 2 and samples > 1
    if samples == 1:
        expected: tuple[int, ...] = image
    else:
        expected = (samples, *image) if planar else (*image, samples)
    if tuple(keyframe.shape) != expected:
        # tifffile shapes the page otherwise (a corrupt or unusual header): let it decode.
        logger.debug(
            "%s: page shape %s is not %s; decoding through tifffile", name, keyframe.shape, expected
        )
        return None
    per_page = (samples if planar else 1) * math.prod(
        -(-i // s) for i, s in zip(image, segment, strict=True)
    )
    offsets = np.zeros((len(pages), per_page), np.int64)
    bytecounts = np.zeros((len(pages), per_page), np.int64)
    geometry = _page_geometry(keyframe)
    for k, page in enumerate(pages):
        if page is None:
            continue  # a plane the file does not hold: zero bytes, read as zeros
        if isinstance(page, tifffile.TiffPage) and _page_geometry(page) != geometry:
            logger.debug(
                "%s: page %d is stored unlike the first; decoding through tifffile", name, k
            )
            return None
        if len(page.dataoffsets) != per_page or not _tables_complete(page, per_page):
            return None
        if (
            max(page.dataoffsets, default=0) >= _MAX_OFFSET
            or max(page.databytecounts, default=0) >= _MAX_OFFSET
        ):
            _offset(max(*page.dataoffsets, *page.databytecounts), name)
        offsets[k] = page.dataoffsets
        bytecounts[k] = page.databytecounts
    return Segments(offsets, bytecounts, image, segment, samples, planar, codec)


def _tables_complete(page: Any, per_page: int) -> bool:
    """Whether a page's offset and byte count tags each list every strip or tile.

    tifffile mends a short table (a corrupt header) as it reads; such a page is left
    to tifffile, so that tiffstore reads what tifffile reads.
    """
    if not isinstance(page, tifffile.TiffPage):
        return True
    names = (
        ("TileOffsets", "TileByteCounts") if page.is_tiled else ("StripOffsets", "StripByteCounts")
    )
    for name in names:
        tag = page.tags.get(name)
        if tag is None or tag.count != per_page:
            return False
    return True


def _page_geometry(page: tifffile.TiffPage) -> tuple[Any, ...]:
    return (
        page.shaped,
        page.dtype,
        page.compression,
        page.predictor,
        page.is_tiled,
        page.tilelength,
        page.tilewidth,
        page.rowsperstrip,
        page.planarconfig,
        page.jpegtables,
    )


def _layout_of(tif: tifffile.TiffFile, name: str) -> FileLayout:
    if not tif.series:
        raise TiffReadError(f"{name}: the TIFF holds no image series.")
    series = tif.series[0]
    keyframe = series.keyframe
    axes, shape = series.axes, tuple(int(n) for n in series.shape)
    if tif.is_ome and series.kind != "ome":
        # One file of a multi-file OME set (tifffile was told not to open the others):
        # name this file's own planes by the set's axes.
        part = _ome_file_part(tif, keyframe, len(series.pages))
        if part is not None:
            axes, shape = part
    if not shape or math.prod(shape) == 0 or series.dtype is None:
        raise TiffReadError(
            f"{name}: the TIFF's image holds no pixels (shape {shape}, dtype {series.dtype}): "
            "its header is corrupt or incomplete."
        )
    dims = _dim_names(axes)
    dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder).str
    page_shape = tuple(int(n) for n in keyframe.shape)
    page_ndim = len(page_shape)
    samples = int(keyframe.samplesperpixel)
    if shape[len(shape) - page_ndim :] != page_shape:
        # tifffile squeezed a page dim (one-row pages, say): the file is one "page".
        page_ndim = len(shape)
    n_pages = math.prod(shape[: len(shape) - page_ndim])

    scale = read_voxel_size(tif)

    def layout(storage: Storage, **where: Any) -> FileLayout:
        return FileLayout(
            shape, dtype, dims, page_ndim, storage, samples=samples, scale=scale, **where
        )

    if series.dataoffset is not None:
        return layout("contiguous", data_offset=_offset(series.dataoffset, name))
    pages = list(series.pages)
    if len(pages) != n_pages or page_ndim != len(page_shape):
        return layout("tifffile")
    page_nbytes = math.prod(page_shape) * np.dtype(dtype).itemsize
    offsets: list[int] = []
    for page in pages:
        # ``is_contiguous``: uncompressed, with its strips or tiles back to back, in
        # the file's native layout; the byte counts must then add up to the page.
        if not isinstance(page, tifffile.TiffPage) or not page.is_contiguous:
            break
        if sum(int(n) for n in page.databytecounts) != page_nbytes:
            break
        offsets.append(_offset(page.dataoffsets[0], name))
    if len(offsets) == n_pages:
        return layout("pages", page_offsets=tuple(offsets))
    segments = _segments_of(pages, keyframe, name)
    if segments is not None:
        return layout("segments", segments=segments)
    ifds = tuple(int(page.offset) for page in pages if page is not None)
    return layout("tifffile", page_ifds=ifds if len(ifds) == n_pages else None)


#: No file holds a byte past this: a larger offset is a corrupt header.
_MAX_OFFSET = 1 << 62


def _offset(value: Any, name: str) -> int:
    """A byte offset from the header, checked to be one a file can hold."""
    offset = int(value)
    if not 0 <= offset < _MAX_OFFSET:
        raise TiffReadError(
            f"{name}: the header points at byte {offset}, past any file: it is corrupt."
        )
    return offset


def _open_tiff(fh: IO[bytes] | str) -> tifffile.TiffFile:
    # Never follow a multi-file OME set into its other files: each file is read
    # for its own planes, and opening siblings would multiply handles and work.
    return tifffile.TiffFile(fh, _multifile=False)


def read_layout(fh: IO[bytes] | str, name: str) -> FileLayout:
    """Parse one TIFF header with tifffile and return its :class:`FileLayout`.

    Parameters
    ----------
    fh
        An open binary file (local or fsspec) or a local path.
    name
        The file's name, used in error messages.

    Raises
    ------
    TiffReadError
        When the file is not a TIFF tifffile can read, or holds no image.

    Examples
    --------
    >>> with open("stack.tif", "rb") as fh:  # doctest: +SKIP
    ...     read_layout(fh, "stack.tif")
    <FileLayout (z=6, y=32, x=24) uint16 little-endian contiguous>
    """
    try:
        with _open_tiff(fh) as tif:
            return _layout_of(tif, name)
    except TiffStoreError:
        raise
    except OSError as exc:
        # The storage failed (a network timeout, a permission): not the file's fault.
        raise TiffReadError(f"{name}: cannot read the file ({type(exc).__name__}: {exc}).") from exc
    except (EOFError, struct.error) as exc:
        raise TiffReadError(
            f"{name}: the TIFF header is cut short ({exc}): the file is truncated or still "
            "being written. Replace it, or leave it out (exclude=...)."
        ) from exc
    except (
        tifffile.TiffFileError,
        ValueError,
        KeyError,
        IndexError,
    ) as exc:
        if "header=b''" in str(exc):
            raise TiffReadError(f"{name}: the file is empty (0 bytes), not a TIFF.") from exc
        raise TiffReadError(f"{name}: not a TIFF file tifffile can read ({exc}).") from exc
    except Exception as exc:
        raise TiffReadError(
            f"{name}: reading the TIFF header failed ({type(exc).__name__}: {exc}). Check "
            "that tifffile.TiffFile opens it; if it does, please report this as a tiffstore bug."
        ) from exc


def read_pages_with_tifffile(
    fh: IO[bytes] | str, layout: FileLayout, pages: Sequence[int], name: str
) -> list[np.ndarray]:
    """Decode pages of a file through tifffile, for what segments cannot describe.

    Each array has the layout's page shape. Pages are found by their IFD offsets,
    so a page costs its own IFD, not a parse of the whole file.
    """
    try:
        with _open_tiff(fh) as tif:
            if layout.page_ifds is None:
                # The file is one "page", or one IFD describes many frames: decode the
                # whole series.
                whole = np.asarray(tif.series[0].asarray()).reshape((-1, *layout.page_shape))
                return [whole[p] for p in pages]
            out = []
            want = np.dtype(layout.dtype).newbyteorder("=")
            first = tif.pages[0]
            assert isinstance(first, tifffile.TiffPage)
            kind = (first.compression, first.predictor, first.bitspersample)
            for p in pages:
                tif.filehandle.seek(layout.page_ifds[p])
                page = tifffile.TiffPage(tif, index=p)
                if (
                    page.dtype is None
                    or np.dtype(page.dtype).newbyteorder("=") != want
                    or (page.compression, page.predictor, page.bitspersample) != kind
                ):
                    # tifffile reads every page of a series as its first page says;
                    # a page stored otherwise is a corrupt or mixed file: never guess.
                    raise TiffReadError(
                        f"{name}: page {p} is stored unlike the file's first page "
                        f"({page.dtype}, {page.compression!s} vs {want}, "
                        f"{first.compression!s}): the file is corrupt or mixes images."
                    )
                out.append(np.asarray(page.asarray()).reshape(layout.page_shape))
            return out
    except TiffStoreError:
        raise
    except Exception as exc:
        raise TiffReadError(
            f"{name}: could not decode pages {list(pages)[:8]} ({exc}). Check that the file "
            "is complete and opens with tifffile.imread."
        ) from exc

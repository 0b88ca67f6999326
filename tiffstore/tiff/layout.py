"""Where one TIFF's pixels are, as plain data: :class:`FileLayout` and its :class:`Segments`.

A file's array is ``leading dims + page dims``: the leading dims index its pages
(``z`` for a plain stack, ``t, z, c`` for an ImageJ hyperstack) and the page dims
are one page's shape (``y, x``, with ``c`` for RGB samples).

A page is stored in *segments* (strips or tiles). Where one page's segments lie
back to back uncompressed, the page is a byte range (``contiguous`` or ``pages``
storage); otherwise each segment is read and decoded alone (``segments``), so a
chunk costs only the segments it overlaps. :func:`tiffstore.tiff.header.read_layout`
makes these values from a header; they pickle in bytes and are shared by every
file written the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple

import numpy as np

from tiffstore.tiff.codecs import SegmentCodec
from tiffstore.tiff.scale import VoxelSize

__all__ = ["FileLayout", "SegmentPiece", "Segments", "Storage", "byte_order"]


#: How a file's pages are stored:
#: ``contiguous`` all pages uncompressed, back to back from ``data_offset``;
#: ``pages`` each page uncompressed and contiguous, at ``page_offsets``;
#: ``segments`` strips or tiles read and decoded one by one (see :class:`Segments`);
#: ``tifffile`` anything else (packed bits, volumetric tiles...), decoded by tifffile.
Storage = Literal["contiguous", "pages", "segments", "tifffile"]


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
    tiled
        Whether the segments are tiles, which TIFF stores whole (edge tiles padded),
        rather than strips, whose last one a writer may store short.
    """

    offsets: np.ndarray
    bytecounts: np.ndarray
    image: tuple[int, int]
    segment: tuple[int, int]
    samples: int
    planar: bool
    codec: SegmentCodec
    tiled: bool = False

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
        return (self.image, self.segment, self.samples, self.planar, self.codec, self.tiled)

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
        (see :mod:`tiffstore.tiff.scale`); ``None`` when not read.
    why
        For ``tifffile``: why only tifffile decodes the pages, in words (the codec,
        packed bits, volumetric tiles...), for messages; not compared.
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
    why: str = field(default="", compare=False)

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
            what.append(f"byte order {byte_order(a)} vs {byte_order(b)}")
        return what

    def describe(self) -> str:
        dims = ", ".join(f"{d}={n}" for d, n in zip(self.dims, self.shape, strict=True))
        dtype = np.dtype(self.dtype)
        return f"({dims}) {dtype.name} {byte_order(dtype)}"

    def __repr__(self) -> str:
        return f"<FileLayout {self.describe()} {self.storage}>"


def byte_order(dtype: np.dtype[Any]) -> str:
    if dtype.itemsize == 1 or dtype.byteorder == "|":
        return "(no byte order)"
    little = dtype.byteorder == "<" or (dtype.byteorder == "=" and np.little_endian)
    return "little-endian" if little else "big-endian"

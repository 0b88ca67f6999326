"""One TIFF's header -> where each page's bytes are.

tifffile does the parsing; this module keeps only what the virtual array needs,
as a small frozen value (:class:`FileLayout`) that pickles in bytes and is shared
by every file written the same way.

A file's array is ``leading dims + page dims``: the leading dims index its pages
(``z`` for a plain stack, ``t, z, c`` for an ImageJ hyperstack) and the page dims
are one page's shape (``y, x``, with ``c`` for RGB samples).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np
import tifffile

from .errors import TiffReadError

__all__ = ["FileLayout", "Storage", "read_layout", "read_page_with_tifffile"]

logger = logging.getLogger(__name__)

#: How a file's pages are stored:
#: ``contiguous`` all pages uncompressed, back to back from ``data_offset``;
#: ``pages`` each page uncompressed and contiguous, at ``page_offsets``;
#: ``tifffile`` anything else, decoded through tifffile page by page.
Storage = Literal["contiguous", "pages", "tifffile"]

# tifffile's axis letters -> dimension names. Q (unknown) and I (image sequence)
# are the pages of a plain stack, which microscopes write along z.
_AXIS_NAMES = {"Q": "z", "I": "z", "S": "c"}


@dataclass(frozen=True)
class FileLayout:
    """Where one TIFF file's pixels are, as plain data.

    Attributes
    ----------
    shape
        Shape of the file's first series (tifffile's squeezed shape).
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
    """

    shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    page_ndim: int
    storage: Storage
    data_offset: int | None = None
    page_offsets: tuple[int, ...] | None = None

    @property
    def leading_shape(self) -> tuple[int, ...]:
        return self.shape[: len(self.shape) - self.page_ndim]

    @property
    def page_shape(self) -> tuple[int, ...]:
        return self.shape[len(self.shape) - self.page_ndim :]

    @property
    def n_pages(self) -> int:
        return math.prod(self.leading_shape)

    @property
    def page_nbytes(self) -> int:
        return math.prod(self.page_shape) * np.dtype(self.dtype).itemsize

    def page_offset(self, page: int) -> int | None:
        """Byte offset of an uncompressed page, or ``None`` if it must be decoded."""
        if self.storage == "contiguous":
            assert self.data_offset is not None
            return self.data_offset + page * self.page_nbytes
        if self.storage == "pages":
            assert self.page_offsets is not None
            return self.page_offsets[page]
        return None

    def same_array(self, other: FileLayout) -> bool:
        """True when both files hold arrays of one shape, dtype and dims."""
        return (self.shape, self.dtype, self.dims) == (other.shape, other.dtype, other.dims)

    def describe(self) -> str:
        dims = ", ".join(f"{d}={n}" for d, n in zip(self.dims, self.shape, strict=True))
        return f"({dims}) {np.dtype(self.dtype).name} {self.dtype[0]!r} byte order"


def _dim_names(axes: str) -> tuple[str, ...]:
    names: list[str] = []
    for letter in axes:
        name = _AXIS_NAMES.get(letter, letter.lower())
        if name in names:
            # Two axes tifffile could not name apart (QQ): keep both, distinctly.
            name = f"{name}{names.count(name) + 1}"
        names.append(name)
    return tuple(names)


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
    """
    try:
        with tifffile.TiffFile(fh) as tif:
            if not tif.series:
                raise TiffReadError(f"{name}: the TIFF holds no image series.")
            series = tif.series[0]
            shape = tuple(int(n) for n in series.shape)
            dims = _dim_names(series.axes)
            dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder).str
            keyframe = series.keyframe
            page_shape = tuple(int(n) for n in keyframe.shape)
            page_ndim = len(page_shape)
            if shape[len(shape) - page_ndim :] != page_shape:
                # tifffile squeezed a page dim (a one-row page, say): read whole pages.
                page_ndim = len(shape)
            n_pages = math.prod(shape[: len(shape) - page_ndim])
            if series.dataoffset is not None:
                return FileLayout(
                    shape, dtype, dims, page_ndim, "contiguous", data_offset=int(series.dataoffset)
                )
            pages = list(series.pages)
            offsets: list[int] = []
            page_nbytes = math.prod(shape[len(shape) - page_ndim :]) * np.dtype(dtype).itemsize
            if len(pages) == n_pages:
                for page in pages:
                    contiguous = getattr(page, "is_contiguous", None) if page is not None else None
                    if not contiguous or contiguous[1] != page_nbytes:
                        break
                    offsets.append(int(contiguous[0]))
            if len(offsets) == n_pages:
                return FileLayout(
                    shape, dtype, dims, page_ndim, "pages", page_offsets=tuple(offsets)
                )
            return FileLayout(shape, dtype, dims, page_ndim, "tifffile")
    except TiffReadError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, KeyError, IndexError) as exc:
        raise TiffReadError(f"{name}: not a TIFF file tifffile can read ({exc}).") from exc


def read_page_with_tifffile(fh: IO[bytes] | str, page: int, name: str) -> np.ndarray:
    """Decode one page of a file's first series through tifffile."""
    try:
        with tifffile.TiffFile(fh) as tif:
            series = tif.series[0]
            keyframe_shape = series.keyframe.shape
            pages = series.pages
            if len(pages) == 1 and page > 0:
                # One real IFD describing many frames (ImageJ > 4 GB): read the whole series.
                arr = series.asarray()
                return np.asarray(arr).reshape((-1, *keyframe_shape))[page]
            p = pages[page]
            if p is None:
                raise TiffReadError(f"{name}: page {page} is missing from the file.")
            return np.asarray(p.asarray())
    except TiffReadError:
        raise
    except Exception as exc:
        raise TiffReadError(f"{name}: could not decode page {page} ({exc}).") from exc

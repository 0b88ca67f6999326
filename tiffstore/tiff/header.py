"""One TIFF header -> :class:`~tiffstore.tiff.layout.FileLayout`, parsed by tifffile.

tifffile does the parsing; this module keeps only what the virtual array needs:
the file's series shape and dims, and where each page's bytes are (one range of
uncompressed pages, a range per page, or every strip or tile with its codec).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from xml.etree import ElementTree

import numpy as np
import tifffile

from tiffstore._compat import open_tiff_file
from tiffstore.errors import FileChangedError, TiffReadError, TiffStoreError
from tiffstore.tiff.codecs import SegmentCodec, segment_codec_or_reason
from tiffstore.tiff.layout import FileLayout, Segments, Storage
from tiffstore.tiff.scale import read_voxel_size

__all__ = [
    "HeaderRead",
    "first_ifd_offset",
    "is_tiff_start",
    "read_header",
    "read_layout",
    "walk_pages",
]

logger = logging.getLogger(__name__)

# Sample formats numpy holds as they are: unsigned, signed, float, complex float.
_PLAIN_SAMPLE_FORMATS = {1, 2, 3, 6}


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


def _segments_of(pages: Sequence[Any], keyframe: tifffile.TiffPage, name: str) -> Segments | str:
    """Every page's strips or tiles, or why they cannot be decoded one by one."""
    reasons = []
    if keyframe.imagedepth != 1 or keyframe.tiledepth != 1:
        reasons.append("volumetric pages or tiles")
    if keyframe.fillorder != 1:
        reasons.append("reversed bit order")
    if keyframe.bitspersample not in (8, 16, 32, 64) or keyframe.dtype is None:
        packed = " (packed bits)" if keyframe.bitspersample < 8 else ""
        reasons.append(f"{keyframe.bitspersample}-bit samples{packed}")
    if keyframe.sampleformat not in _PLAIN_SAMPLE_FORMATS:
        reasons.append(f"sample format {keyframe.sampleformat}")
    if keyframe.is_subsampled and keyframe.compression not in (7, 33007, 34892):
        reasons.append("chroma subsampling without JPEG")
    codec = segment_codec_or_reason(keyframe)
    if isinstance(codec, str):
        reasons.append(codec)
    if reasons or not isinstance(codec, SegmentCodec):
        why = ", ".join(reasons)
        logger.debug("%s: decoding through tifffile (%s)", name, why)
        return why
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
        return f"a page tifffile shapes {tuple(keyframe.shape)}, not {expected}"
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
            return f"page {k} is stored unlike the first"
        if len(page.dataoffsets) != per_page or not _tables_complete(page, per_page):
            return f"page {k}'s strip or tile tables are incomplete"
        if (
            max(page.dataoffsets, default=0) >= _MAX_OFFSET
            or max(page.databytecounts, default=0) >= _MAX_OFFSET
        ):
            _offset(max(*page.dataoffsets, *page.databytecounts), name)
        offsets[k] = page.dataoffsets
        bytecounts[k] = page.databytecounts
    return Segments(
        offsets, bytecounts, image, segment, samples, planar, codec, bool(keyframe.is_tiled)
    )


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
        raise _FileFault(f"{name}: the TIFF holds no image series.")
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
        raise _FileFault(
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
        return layout("tifffile", why=f"pages tifffile shapes itself (series {axes} {shape})")
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
    if isinstance(segments, Segments):
        return layout("segments", segments=segments)
    ifds = tuple(int(page.offset) for page in pages if page is not None)
    return layout("tifffile", page_ifds=ifds if len(ifds) == n_pages else None, why=segments)


#: No file holds a byte past this: a larger offset is a corrupt header.
_MAX_OFFSET = 1 << 62


def _offset(value: Any, name: str) -> int:
    """A byte offset from the header, checked to be one a file can hold."""
    offset = int(value)
    if not 0 <= offset < _MAX_OFFSET:
        raise _FileFault(
            f"{name}: the header points at byte {offset}, past any file: it is corrupt."
        )
    return offset


@dataclass(frozen=True)
class HeaderRead:
    """One header as tifffile read it, without raising for the file's own faults.

    Attributes
    ----------
    layout
        The file's layout, or ``None`` when its header cannot be read.
    error
        Why the header cannot be read (``None`` when it was).
    cut
        Whether the bytes ended before the header did (a file cut short or still
        being written), as opposed to bytes that are no TIFF header at all.
    notes
        What tifffile logged while parsing (``invalid page offset ...``), kept here
        instead of reaching the user, to be said once in tiffstore's own words.
    """

    layout: FileLayout | None
    error: TiffReadError | None = None
    cut: bool = False
    notes: tuple[str, ...] = ()


class _TifffileNotes(logging.Filter):
    """Holds what tifffile logs while a thread parses a header, instead of letting it
    reach the user beside tiffstore's own message (threads parse headers at once).

    While any thread collects, tifffile's logger is opened to warnings even where an
    application silenced it (the CLI does), and this filter keeps the silence for the
    records of threads that are not collecting.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self.lock = threading.Lock()
        self.collecting = 0
        self.level = logging.NOTSET  # the logger's own level, restored when done
        self.effective = logging.NOTSET  # the level it let through, kept for others

    def filter(self, record: logging.LogRecord) -> bool:
        notes: list[str] | None = getattr(self.local, "notes", None)
        if notes is None:
            return record.levelno >= self.effective
        notes.append(record.getMessage())
        return False

    @contextmanager
    def kept(self) -> Iterator[list[str]]:
        tifffile_logger = logging.getLogger("tifffile")
        with self.lock:
            if self not in tifffile_logger.filters:
                tifffile_logger.addFilter(self)
            if self.collecting == 0:
                self.level = tifffile_logger.level
                self.effective = tifffile_logger.getEffectiveLevel()
                if self.effective > logging.WARNING:
                    tifffile_logger.setLevel(logging.WARNING)
            self.collecting += 1
        outer = getattr(self.local, "notes", None)
        notes: list[str] = []
        self.local.notes = notes
        try:
            yield notes
        finally:
            self.local.notes = outer
            with self.lock:
                self.collecting -= 1
                if self.collecting == 0:
                    tifffile_logger.setLevel(self.level)
                    self.effective = logging.NOTSET


_NOTES = _TifffileNotes()


def read_header(fh: IO[bytes] | str, name: str) -> HeaderRead:
    """Parse one TIFF header with tifffile: its layout, or why it cannot be read.

    Unlike :func:`read_layout`, a file that is no readable TIFF does not raise: the
    caller decides whether it looks still being written (``cut``, or what tifffile
    noted) or is broken. What tifffile logs meanwhile is kept in ``notes``.

    Raises
    ------
    TiffReadError
        Only when the storage fails (a network timeout, a permission, a remote read
        that keeps failing): not the file's fault, so no verdict on it.
    """
    with _NOTES.kept() as notes:
        try:
            layout = _parse(fh, name)
        except _HeaderCut as cut:
            return HeaderRead(None, cut.error, cut=True, notes=tuple(notes))
        except FileChangedError as exc:
            # Replaced, grown or cut while its header was read: a writer is at it.
            return HeaderRead(None, exc, cut=True, notes=tuple(notes))
        except _FileFault as exc:
            plain = TiffReadError(*exc.args)
            plain.__cause__ = exc.__cause__
            return HeaderRead(None, plain, notes=tuple(notes))
        # Any other TiffReadError is the storage's (a timeout, a permission): raised.
    return HeaderRead(layout, notes=tuple(notes))


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
    read = read_header(fh, name)
    if read.layout is None:
        assert read.error is not None
        raise read.error
    if read.notes:
        logger.info("%s: tifffile: %s", name, "; ".join(read.notes))
    return read.layout


class _FileFault(TiffReadError):
    """A header that is the file's own fault (not the storage's); said to the user as a
    plain :class:`TiffReadError`."""


class _HeaderCut(Exception):
    """The header's bytes end before the header does."""

    def __init__(self, error: TiffReadError) -> None:
        super().__init__(str(error))
        self.error = error


def _parse(fh: IO[bytes] | str, name: str) -> FileLayout:
    try:
        with open_tiff_file(fh) as tif:
            return _layout_of(tif, name)
    except TiffStoreError:
        raise
    except OSError as exc:
        # The storage failed (a network timeout, a permission): not the file's fault.
        raise TiffReadError(f"{name}: cannot read the file ({type(exc).__name__}: {exc}).") from exc
    except (EOFError, struct.error) as exc:
        cut = TiffReadError(
            f"{name}: the TIFF header is cut short ({exc}): the file is truncated or still "
            "being written. Replace it, or leave it out (exclude=...)."
        )
        cut.__cause__ = exc
        raise _HeaderCut(cut) from exc
    except (
        tifffile.TiffFileError,
        ValueError,
        KeyError,
        IndexError,
    ) as exc:
        if "header=b''" in str(exc):
            raise _HeaderCut(
                TiffReadError(f"{name}: the file is empty (0 bytes), not a TIFF.")
            ) from exc
        raise _FileFault(f"{name}: not a TIFF file tifffile can read ({exc}).") from exc
    except Exception as exc:
        raise _FileFault(
            f"{name}: reading the TIFF header failed ({type(exc).__name__}: {exc}). Check "
            "that tifffile.TiffFile opens it; if it does, please report this as a tiffstore bug."
        ) from exc


def walk_pages(fh: IO[bytes] | str) -> tuple[str, ...]:
    """Read every page directory of a file, not only those its series needs, and return
    what tifffile logged (or raised) doing so: empty when the chain of directories is
    whole. ImageJ files keep their later directories after the pixel data; a file cut
    there reads as a whole series, and only this walk notices the lost pages."""
    with _NOTES.kept() as notes:
        try:
            with open_tiff_file(fh) as tif:
                len(tif.pages)  # loads every page's directory
        except (tifffile.TiffFileError, EOFError, struct.error, ValueError, KeyError) as exc:
            notes.append(f"{type(exc).__name__}: {exc}")
    return tuple(notes)


def first_ifd_offset(head: bytes) -> int | None:
    """Where a TIFF's first page directory starts, by its first bytes (``None``: they
    are not a TIFF header, or too few to say)."""
    if head[:4] in (b"II*\x00", b"MM\x00*") and len(head) >= 8:
        return int.from_bytes(head[4:8], "little" if head[:2] == b"II" else "big")
    if head[:4] in (b"II+\x00", b"MM\x00+") and len(head) >= 16:
        return int.from_bytes(head[8:16], "little" if head[:2] == b"II" else "big")
    return None


def is_tiff_start(head: bytes) -> bool:
    """Whether ``head`` begins as a TIFF does (classic or BigTIFF, either byte order);
    an empty or shorter start counts, being what a file just created holds."""
    magics = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    return any(m.startswith(head[:4]) for m in magics)

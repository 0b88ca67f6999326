"""TIFF compression and predictor -> numcodecs codecs that decode one strip or tile.

A :class:`SegmentCodec` says how a file's strips or tiles (its *segments*) are
encoded, as plain data: the numcodecs configuration of the compressor (numcodecs'
own ``zlib`` and ``zstd`` where they decode the bytes, else imagecodecs'
``imagecodecs_*`` codecs) and of the predictor filter.
The reader here decodes through exactly these configurations, so a reference-file
writer can name the same codecs per chunk and fsspec decodes them with no
tiffstore code. The choices follow tifffile's own ``ZarrTiffStore.write_fsspec``.
"""

from __future__ import annotations

import base64
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numcodecs
import numcodecs.abc
import numpy as np
import tifffile

__all__ = [
    "SegmentCodec",
    "compression_name",
    "register_imagecodecs",
    "segment_codec",
    "segment_codec_or_reason",
]

logger = logging.getLogger(__name__)

# TIFF Compression tag value -> numcodecs codec id.
_COMPRESSORS: dict[int, str] = {
    5: "imagecodecs_lzw",
    8: "zlib",  # Deflate
    32946: "zlib",  # Adobe's old code for Deflate
    50013: "zlib",  # PixTIFF
    32773: "imagecodecs_packbits",
    34925: "imagecodecs_lzma",
    # numcodecs' own: reference files need only numcodecs (frames without a content
    # size decode since numcodecs 0.16).
    50000: "zstd",
    7: "imagecodecs_jpeg",
    33007: "imagecodecs_jpeg",
    34892: "imagecodecs_jpeg",  # lossy JPEG (DNG)
    34933: "imagecodecs_png",
    50001: "imagecodecs_webp",
    50002: "imagecodecs_jpegxl",
    52546: "imagecodecs_jpegxl",  # JPEG XL (DNG)
    33003: "imagecodecs_jpeg2k",
    33004: "imagecodecs_jpeg2k",
    33005: "imagecodecs_jpeg2k",
    34712: "imagecodecs_jpeg2k",
    22610: "imagecodecs_jpegxr",
    34934: "imagecodecs_jpegxr",
}

# Codecs that decode to pixels (shape and dtype), not to bytes; TIFF predictors and
# fill order do not apply to them.
_IMAGE_COMPRESSIONS = {7, 33007, 34892, 34933, 50001, 50002, 52546, 33003, 33004, 33005, 34712}
_IMAGE_COMPRESSIONS |= {22610, 34934}
_JPEG = {7, 33007, 34892}

# TIFF Predictor tag value -> (filter codec id, sample distance).
_PREDICTORS: dict[int, tuple[str, int]] = {
    2: ("imagecodecs_delta", 1),  # horizontal differencing
    34892: ("imagecodecs_delta", 2),
    34893: ("imagecodecs_delta", 4),
    3: ("imagecodecs_floatpred", 1),  # floating-point
    34894: ("imagecodecs_floatpred", 2),
    34895: ("imagecodecs_floatpred", 4),
}


@dataclass(frozen=True)
class SegmentCodec:
    """How one file's strips or tiles are encoded, as numcodecs configurations.

    Attributes
    ----------
    compressor
        The compressor's numcodecs configuration as sorted ``(key, value)`` pairs
        (JSON values: JPEG tables are base64), or ``()`` for uncompressed data.
    predictor
        Codec id of the predictor filter (``imagecodecs_delta`` or
        ``imagecodecs_floatpred``), or ``None``.
    predictor_dist
        Distance, in samples, of the predictor's differences.
    image
        Whether the compressor decodes to pixels rather than to bytes.

    Examples
    --------
    >>> codec = SegmentCodec((("id", "zlib"),), "imagecodecs_delta")
    >>> codec.compressor_config()
    {'id': 'zlib'}
    >>> codec.filter_config((7, 30, 1), np.dtype("<u2"))["id"]
    'imagecodecs_delta'
    """

    compressor: tuple[tuple[str, Any], ...] = ()
    predictor: str | None = None
    predictor_dist: int = 1
    image: bool = False

    @property
    def raw(self) -> bool:
        """Whether segments hold the pixels as they are (a byte range is a pixel range)."""
        return not self.compressor and self.predictor is None

    def compressor_config(self) -> dict[str, Any] | None:
        """The numcodecs configuration of the compressor, or ``None`` if uncompressed."""
        return dict(self.compressor) if self.compressor else None

    def filter_config(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> dict[str, Any] | None:
        """The numcodecs configuration of the predictor for a segment of ``shape``.

        ``shape`` is ``(rows, columns, samples)``; the differences run along the columns.
        """
        if self.predictor is None:
            return None
        return {
            "id": self.predictor,
            "axis": -2,
            "dist": self.predictor_dist,
            "shape": list(shape),
            "dtype": dtype.str,
        }

    def decode(
        self,
        data: bytes | memoryview,
        shape: tuple[int, int, int],
        valid: tuple[int, int, int],
        dtype: np.dtype[Any],
    ) -> np.ndarray:
        """Decode one segment to an array of ``(rows, columns, samples)``.

        Parameters
        ----------
        data
            The segment's bytes, as stored in the file.
        shape
            The segment's full shape (rows per strip or the tile shape, with samples).
        valid
            The part of ``shape`` inside the image (fewer rows in a last strip, fewer
            rows and columns in an edge tile).
        dtype
            The file's dtype, with its byte order.

        Returns
        -------
        numpy.ndarray
            At least ``valid`` in extent: writers pad edge tiles to the full tile but
            may end a last strip early, and image codecs may encode only the valid part.

        Raises
        ------
        ValueError
            When the decoded data do not fit the segment (corrupt data); decoders
            raise their own errors on malformed streams.
        """
        if not self.compressor:
            decoded: Any = data
        elif self.image:
            decoded = _decoder(self.compressor).decode(data)
        else:
            # Decoding into a buffer of the full size spares the decoder guessing it.
            out = np.empty(math.prod(shape) * dtype.itemsize, np.uint8)
            decoded = _decoder(self.compressor).decode(data, out=out)
        if self.image:
            arr = np.asarray(decoded)
        else:
            # Some writers end LZW strips without the end code: drop a partial item.
            nbytes = memoryview(decoded).nbytes
            arr = np.frombuffer(decoded, dtype=dtype, count=nbytes // dtype.itemsize)
        arr = _fit(arr.reshape(-1), shape, valid)
        if self.predictor is not None:
            # The filter carries the segment's shape, which is shorter in a last strip.
            unpredict = _filter(self.predictor, self.predictor_dist, arr.shape, arr.dtype.str)
            if self.predictor == "imagecodecs_delta" and arr.flags.writeable:
                unpredict.decode(arr, out=arr)  # undoing differences in place spares a copy
            else:
                arr = np.asarray(unpredict.decode(arr)).reshape(arr.shape)
        return arr

    @property
    def decodes_into(self) -> bool:
        """Whether :meth:`decode_into` can decode segments straight into their destination."""
        return (
            bool(self.compressor)
            and not self.image
            and self.predictor in (None, "imagecodecs_delta")
        )

    def decode_into(self, data: bytes | memoryview, dest: np.ndarray) -> bool:
        """Decode one segment straight into ``dest``, its valid part; ``False`` if it does not fit.

        ``dest`` is a C-contiguous, writeable ``(rows, columns, samples)`` array of
        the file's dtype that the segment's valid pixels fill exactly, row for row
        (a strip, or a tile not padded across). Only for :attr:`decodes_into`
        codecs. On ``False`` (or an error) ``dest`` may hold partial data: decode
        the segment again with :meth:`decode`, which reports what is wrong.
        """
        flat = dest.reshape(-1).view(np.uint8)
        try:
            decoded = _decoder(self.compressor).decode(data, out=flat)
        except Exception:
            return False
        view = np.frombuffer(decoded, np.uint8)
        if view.nbytes < flat.nbytes:
            return False  # too short here; decode() says why, or copes
        if not np.may_share_memory(view, flat):
            flat[...] = view[: flat.nbytes]  # a decoder that ignored ``out``
        if self.predictor is not None:
            unpredict = _filter(self.predictor, self.predictor_dist, dest.shape, dest.dtype.str)
            unpredict.decode(dest, out=dest)  # undoing differences in place
        return True


def _fit(arr: np.ndarray, shape: tuple[int, int, int], valid: tuple[int, int, int]) -> np.ndarray:
    """Shape a decoded segment: full size, its valid part, or whole rows covering it."""
    full = math.prod(shape)
    if arr.size > full:
        # Decoders may return a little more than asked for.
        arr = arr[:full]
    if arr.size == full:
        return arr.reshape(shape)
    if arr.size == math.prod(valid):
        return arr.reshape(valid)
    row = shape[1] * shape[2]
    if arr.size % row == 0 and arr.size // row >= valid[0]:
        return arr.reshape(-1, shape[1], shape[2])
    row = valid[1] * valid[2]
    if arr.size % row == 0 and arr.size // row >= valid[0]:
        return arr.reshape(-1, valid[1], valid[2])
    raise ValueError(
        f"the segment decodes to {arr.size} values, which do not fill its "
        f"{valid[0]} x {valid[1]} x {valid[2]} pixels"
    )


# Codecs to decode with in place of the named ones: libdeflate reads zlib streams
# faster than Python's zlib, and imagecodecs' zstd decodes into a given buffer, while
# "zlib" and "zstd" stay the names any numcodecs can decode.
_FASTER = {"zlib": "imagecodecs_deflate", "zstd": "imagecodecs_zstd"}


@functools.cache
def _codec(config: tuple[tuple[str, Any], ...]) -> numcodecs.abc.Codec:
    register_imagecodecs()
    return numcodecs.get_codec(dict(config))


def _decoder(config: tuple[tuple[str, Any], ...]) -> numcodecs.abc.Codec:
    faster = _FASTER.get(dict(config)["id"])
    return _codec((("id", faster),) if faster else config)


@functools.cache
def _filter(codec_id: str, dist: int, shape: tuple[int, ...], dtype: str) -> numcodecs.abc.Codec:
    register_imagecodecs()
    return numcodecs.get_codec(
        {"id": codec_id, "axis": -2, "dist": dist, "shape": list(shape), "dtype": dtype}
    )


@functools.cache
def register_imagecodecs() -> None:
    from imagecodecs.numcodecs import register_codecs  # optional codecs, loaded on first use

    register_codecs(verbose=False)


def _jpeg_colorspaces(page: tifffile.TiffPage) -> tuple[int | None, int | str | None]:
    """JPEG color space and output color space, as tifffile decodes them."""
    colorspace: int | None = None
    out: int | str | None = None
    if not page.extrasamples:
        if page.photometric == 6:  # YCbCr -> RGB
            out = 2
        elif page.photometric == 2:  # RGB
            if not page.is_jfif:
                # RGB without a JFIF marker is taken as YCbCr by libjpeg (Aperio SVS).
                colorspace = 2
            out = 2
        elif page.photometric == 5:  # CMYK
            out = 4
        elif page.photometric > 3:
            out = tifffile.PHOTOMETRIC(page.photometric).name
    if page.planarconfig != 1:
        out = 1  # decode each separate plane as grayscale
    return colorspace, out


def segment_codec(page: tifffile.TiffPage) -> SegmentCodec | None:
    """The codec of a page's segments, or ``None`` if numcodecs cannot decode them alone.

    Examples
    --------
    >>> with tifffile.TiffFile("lzw.tif") as tif:  # doctest: +SKIP
    ...     segment_codec(tif.pages[0])
    SegmentCodec(compressor=(('id', 'imagecodecs_lzw'),), predictor='imagecodecs_delta', ...)
    """
    codec = segment_codec_or_reason(page)
    return codec if isinstance(codec, SegmentCodec) else None


def compression_name(compression: int) -> str:
    """A TIFF compression in words: ``"LERC (34887)"``, ``"CCITT Group 4 (4)"``."""
    try:
        name = tifffile.COMPRESSION(compression).name
    except ValueError:
        return f"compression {compression}"
    words = _COMPRESSION_WORDS.get(name, name.replace("_", " "))
    return f"{words} ({compression})"


_COMPRESSION_WORDS = {
    "CCITTRLE": "CCITT modified Huffman",
    "CCITT_T4": "CCITT Group 3",
    "CCITT_T6": "CCITT Group 4",
    "ADOBE_DEFLATE": "Deflate",
    "OJPEG": "old-style JPEG",
}


def segment_codec_or_reason(page: tifffile.TiffPage) -> SegmentCodec | str:
    """The codec of a page's segments, or why numcodecs cannot decode them alone."""
    compression = int(page.compression)
    if compression != 1 and compression not in _COMPRESSORS:
        return f"{compression_name(compression)} compression, which no numcodecs codec decodes"
    image = compression in _IMAGE_COMPRESSIONS
    config: dict[str, Any] = {}
    if compression != 1:
        config["id"] = _COMPRESSORS[compression]
    if compression in _JPEG:
        colorspace, out = _jpeg_colorspaces(page)
        tables = page.jpegtables
        config.update(
            tables=None if tables is None else base64.b64encode(bytes(tables)).decode(),
            bitspersample=int(page.bitspersample),
            colorspace_jpeg=colorspace,
            colorspace_data=out,
        )
    elif compression == 50001 and page.samplesperpixel == 4:
        # WebP may leave out an all-opaque alpha channel.
        config["hasalpha"] = True
    predictor: str | None = None
    dist = 1
    if not image and page.predictor != 1:
        if page.predictor not in _PREDICTORS:
            return f"predictor {int(page.predictor)}, which no numcodecs codec undoes"
        predictor, dist = _PREDICTORS[page.predictor]
    codec = SegmentCodec(tuple(sorted(config.items())), predictor, dist, image)
    try:
        register_imagecodecs()
        if codec.compressor:
            _codec(codec.compressor)
        filter_config = codec.filter_config((1, 1, 1), np.dtype("u1"))
        if filter_config is not None:
            numcodecs.get_codec(filter_config)
    except ValueError as exc:  # the codec's library is not available
        logger.debug("cannot decode %s: %s", config.get("id"), exc)
        return f"{compression_name(compression)} compression, whose codec is not installed ({exc})"
    return codec

"""Which chunks and codecs a reference file can describe, and the default choice.

A reference is one byte range per chunk, decoded by one codec chain that every
chunk of the array shares. :func:`reference_chunks` picks chunks that are byte
ranges of the TIFFs (equal runs of uncompressed pages, whole files, single pages,
or the files' own strips and tiles), so that by default no pixel is inlined;
:func:`reference_codecs` names the codecs, or refuses, naming why (the codec,
packed bits, volumetric tiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np

from tiffstore.errors import ReferenceError, TiffStoreError
from tiffstore.manifest.chunking import ChunkSpec, describe_chunks, even_page_runs, rechunk
from tiffstore.manifest.model import Manifest
from tiffstore.tiff.codecs import register_imagecodecs

__all__ = [
    "ReferenceCodecs",
    "describe_reference_chunks",
    "padded_runs",
    "reference_chunks",
    "reference_codecs",
]


@dataclass(frozen=True)
class ReferenceCodecs:
    """The codec chain every chunk of the references shares."""

    compressor: dict[str, Any] | None
    filters: list[dict[str, Any]] | None

    def encode(self, chunk: np.ndarray) -> bytes:
        register_imagecodecs()
        data: Any = np.ascontiguousarray(chunk)
        for f in self.filters or []:
            if "shape" in f:  # imagecodecs' predictors take their own shape
                data = data.reshape(f["shape"])
            data = numcodecs.get_codec(f).encode(data)
        if self.compressor is not None:
            data = numcodecs.get_codec(self.compressor).encode(data)
        return bytes(memoryview(data).cast("B"))

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        register_imagecodecs()
        out: Any = data
        if self.compressor is not None:
            out = numcodecs.get_codec(self.compressor).decode(out)
        for f in reversed(self.filters or []):
            out = numcodecs.get_codec(f).decode(out)
        return np.ascontiguousarray(out).reshape(-1).view(np.uint8).view(dtype).reshape(shape)


def reference_codecs(m: Manifest) -> ReferenceCodecs:
    layout = m.layout
    if layout.storage == "tifffile":
        why = layout.why or "a storage numcodecs cannot decode one strip or tile at a time"
        raise ReferenceError(
            f"{m.url(0)}: its pages ({layout.describe()}) are stored with {why}; only tifffile "
            "decodes them, and no reference can describe them. Write a real Zarr copy with "
            "`tiffstore materialize` instead."
        )
    seg = layout.segments
    if seg is None or seg.codec.raw:
        return ReferenceCodecs(None, None)
    if len({lay.segments.codec for lay in m.layouts if lay.segments is not None}) > 1:
        raise ReferenceError(
            "The files are compressed in different ways; a Zarr array has one codec. "
            "Write references for each kind separately."
        )
    shape = (*seg.segment, seg.contig_samples)
    filt = seg.codec.filter_config(shape, m.dtype)
    return ReferenceCodecs(seg.codec.compressor_config(), [filt] if filt else None)


def reference_chunks(m: Manifest, chunks: ChunkSpec = None) -> Manifest:
    """``m`` with chunks that references can describe: each one byte range.

    ``None`` keeps the manifest's chunks when each is one byte range and none needs
    padding, else picks chunks that describe every file as byte ranges with no
    pixel inlined: runs of back-to-back uncompressed pages that divide the file's
    page count (whole files where they are small), single pages where pages are
    not back to back, or the files' own strips or tiles.

    Raises
    ------
    ReferenceError
        When the asked-for chunks are not one byte range each; the message names
        the chunking that works.
    """
    layout = m.layout
    native = "native" if layout.segments is not None else "page"
    if chunks is not None:
        out = rechunk(m, chunks)
        problem = _chunking_problem(out)
        if problem:
            raise ReferenceError(
                f"chunks={chunks!r} cannot be written as references: {problem}. A reference is "
                f"one byte range of one file; use chunks='{native}'"
                + (" or 'file'" if layout.storage == "contiguous" else "")
                + "."
            )
        return out
    if not _chunking_problem(m) and not padded_runs(m):
        return m
    if layout.storage == "contiguous" and not m.stitched:
        nn = m.n_name_dims
        return rechunk(m, (1,) * nn + even_page_runs(layout) + layout.page_shape)
    return rechunk(m, native)


def describe_reference_chunks(m: Manifest, chunks: ChunkSpec = None) -> str:
    """The chunks :func:`reference_chunks` gives ``m``, and why, in a sentence
    (for ``inspect`` and ``refs``); why there can be none, if so."""
    try:
        out = reference_chunks(m, chunks)
        reference_codecs(out)
    except TiffStoreError as exc:
        return f"none: {exc}"
    layout = out.layout
    what = describe_chunks(out)
    if padded_runs(out):
        return f"{tuple(out.chunks)}: {what}; each file's last run is padded past its end"
    if layout.segments is not None and not layout.raw_pages:
        what = f"one of the files' own {'tiles' if layout.segments.tiled else 'strips'} per chunk"
    elif layout.storage == "contiguous" and out.chunks != m.chunks:
        what += f", equal runs that divide each file's {layout.n_pages} pages"
    return f"{tuple(out.chunks)}: {what}, each one byte range of one file"


def padded_runs(m: Manifest) -> bool:
    """Whether some chunk of uncompressed pages runs past a file's last page (so it
    would be padded and inlined rather than referenced)."""
    layout = m.layout
    if not layout.raw_pages or m.stitched:
        return False
    nn = m.n_name_dims
    lead = m.chunks[nn : nn + len(layout.leading_shape)]
    return any(n % c for n, c in zip(layout.leading_shape, lead, strict=True))


def _chunking_problem(m: Manifest) -> str | None:
    """Why a chunk of ``m`` may not be one piece of one file, or ``None``."""
    layout = m.layout
    nn = m.n_name_dims
    if m.stitched:
        return "stitched tiles put several files in one chunk"
    if any(c != 1 for c in m.chunks[:nn]):
        return "a chunk spans several files"
    page_chunks = m.chunks[len(m.chunks) - layout.page_ndim :]
    seg = layout.segments
    if seg is None or (seg.codec.raw and layout.storage != "segments"):
        if page_chunks != layout.page_shape:
            return "a chunk is part of a page"
        lead = m.chunks[nn : len(m.chunks) - layout.page_ndim]
        sizes = layout.leading_shape
        k = len(lead)
        while k > 0 and lead[k - 1] == sizes[k - 1]:
            k -= 1
        if any(c != 1 for c in lead[: max(k - 1, 0)]):
            return "a chunk's pages are not back to back"
        if layout.storage == "pages" and math.prod(lead) > 1:
            return "the files' pages are not back to back"
        return None
    if any(c != 1 for c in m.chunks[nn : len(m.chunks) - layout.page_ndim]):
        return "a chunk spans several pages, each stored in its own strips or tiles"
    if tuple(page_chunks) != seg.native_chunks():
        return (
            f"the files store pages in strips or tiles of {seg.native_chunks()}, "
            f"not chunks of {tuple(page_chunks)}"
        )
    return None

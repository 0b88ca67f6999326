"""Manifest -> fsspec reference files (kerchunk JSON, version 0 or 1, and Parquet).

A reference file maps every Zarr key of the virtual array to the TIFF bytes that
hold it (``[url, offset, length]``), so any fsspec + zarr client reads the
acquisition with no tiffstore installed: ``fsspec.filesystem("reference", fo=...)``.

Every reference file has one layout, JSON and Parquet alike: a Zarr format 2
group holding the pixels as ``image`` (``_ARRAY_DIMENSIONS`` naming the dims) and
one small array per coordinate (inlined), the same as the live store's group view,
with consolidated metadata. The group's attributes carry tiffstore's description
(axes, coordinates, template) and what the file was made from (each TIFF's name
and size), never credentials.

A reference is one byte range per chunk, so the chunks must be whole pieces of the
files: whole uncompressed pages (or runs of them), or one compressed strip or tile
each. :func:`reference_chunks` picks such chunks; edge chunks a TIFF stores short
(a last strip of fewer rows) are re-encoded padded and inlined, checked to decode
to the same pixels.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import numcodecs
import numpy as np

from tiffstore._version import __version__
from tiffstore.errors import (
    OptionError,
    OutputError,
    OutputExistsError,
    ReferenceError,
    TiffStoreError,
)
from tiffstore.manifest.chunking import ChunkSpec, rechunk
from tiffstore.manifest.documents import Documents, array_attributes, array_metadata
from tiffstore.manifest.headers import verify_manifest
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.plans import ChunkPlan, page_run_table
from tiffstore.manifest.saved import dump_manifest
from tiffstore.read.assemble import ChunkReader
from tiffstore.sources.network import filesystem_of
from tiffstore.tiff.codecs import register_imagecodecs

__all__ = ["ReferenceError", "reference_chunks", "references", "write_references"]

logger = logging.getLogger(__name__)

Format = Literal["json", "parquet"]


@dataclass(frozen=True)
class _Codecs:
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


def _codecs(m: Manifest) -> _Codecs:
    layout = m.layout
    if layout.storage == "tifffile":
        raise ReferenceError(
            f"{m.url(0)}: its pages are stored in a way only tifffile decodes ({layout.describe()}, "
            "packed bits or volumetric tiles), which no reference can describe. Write a real "
            "Zarr copy with `tiffstore materialize` instead."
        )
    seg = layout.segments
    if seg is None or seg.codec.raw:
        return _Codecs(None, None)
    if len({lay.segments.codec for lay in m.layouts if lay.segments is not None}) > 1:
        raise ReferenceError(
            "The files are compressed in different ways; a Zarr array has one codec. "
            "Write references for each kind separately."
        )
    shape = (*seg.segment, seg.contig_samples)
    filt = seg.codec.filter_config(shape, m.dtype)
    return _Codecs(seg.codec.compressor_config(), [filt] if filt else None)


def reference_chunks(m: Manifest, chunks: ChunkSpec = None) -> Manifest:
    """``m`` with chunks that references can describe: each one byte range.

    ``None`` keeps the manifest's chunks when they qualify, else takes whole pages
    (uncompressed files) or the files' own strips or tiles (compressed files).

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
    if not _chunking_problem(m):
        return m
    return rechunk(m, native)


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


def _url_of(m: Manifest, file: int, prefix: str | None) -> str:
    if prefix is None:
        return m.url(file)
    name = m.files[file]
    if prefix.startswith(("http://", "https://")):
        name = quote(name, safe="/")
    return posixpath.join(prefix.rstrip("/") + "/", name)


def _chunk_value(
    m: Manifest, plan: ChunkPlan, reader: ChunkReader, codecs: _Codecs, urls: list[str]
) -> bytes | list[Any]:
    piece = plan.one_range()
    if piece is not None:
        return [urls[piece.file], piece.offset, piece.nbytes]
    if plan.complete and len(plan.pieces) == 1 and plan.pieces[0].kind == "decode":
        p = plan.pieces[0]
        # Tiles are stored whole (edge tiles padded), as zarr stores edge chunks; a
        # last strip is usually stored short, so only whole strips are referenced.
        seg = m.layout.segments
        tiled = seg is not None and seg.segment[1] != seg.image[1]
        if p.nbytes > 0 and (p.valid == p.shape or tiled):
            return [urls[p.file], p.offset, p.nbytes]
    # An edge chunk the TIFF stores short (a last strip, a partial run of pages), or
    # a strip never written: encode the padded chunk as zarr will decode it.
    chunk = reader.execute(plan)
    assert chunk is not None
    try:
        data = codecs.encode(chunk)
        exact = np.array_equal(codecs.decode(data, chunk.shape, m.dtype), chunk)
    except Exception:
        exact = False
    if not exact:
        raise ReferenceError(
            f"{m.url(plan.pieces[0].file)}: chunk {plan.index} is stored short in the TIFF and its "
            "codec does not re-encode it exactly, so no reference can describe it. Use "
            "`tiffstore materialize` for a real Zarr copy."
        )
    return data


def references(
    store_or_manifest: Any,
    *,
    url: str | None = None,
    chunks: ChunkSpec = None,
    version: int = 1,
    inline_missing: bool = False,
) -> Iterator[tuple[str, Any]]:
    """Every reference of the virtual array, metadata first, as ``(key, value)`` pairs.

    Values are JSON strings (metadata), ``bytes`` (inlined data) or
    ``[url, offset, length]`` (with ``{{u}}`` for the URL prefix when ``version=1``).
    See :func:`write_references`.
    """
    m: Manifest = getattr(store_or_manifest, "manifest", store_or_manifest)
    m = reference_chunks(verify_manifest(m), chunks)
    codecs = _codecs(m)
    root = url if url is not None else m.source.url("")
    urls = [_url_of(m, i, url) for i in range(len(m.files))]
    if version == 1:
        prefix = root.rstrip("/") + "/"
        urls = ["{{u}}/" + u[len(prefix) :] if u.startswith(prefix) else u for u in urls]
    docs = Documents(m)
    image = docs.image_name
    zarray = dict(array_metadata(m), compressor=codecs.compressor, filters=codecs.filters)
    # No fill value where it is 0 (zarr's default): xarray would mask real zeros.
    zarray["fill_value"] = None if m.fill_value == 0 else zarray["fill_value"]
    attrs = array_attributes(m)
    dims = attrs.pop("_ARRAY_DIMENSIONS")
    attrs["tiffstore"]["made_from"] = {
        "root": m.source.url(""),
        "files": list(m.files),
        "sizes": m.file_sizes.tolist(),
    }
    if m.file_mtimes is not None:
        attrs["tiffstore"]["made_from"]["mtimes_ns"] = m.file_mtimes.tolist()
    if m.file_versions:
        attrs["tiffstore"]["made_from"]["versions"] = list(m.file_versions)
    attrs["tiffstore"]["references"] = {"version": __version__, "image": image, "url": url}
    # The whole manifest, so that tiffstore.open(this file) needs no listing or header.
    attrs["tiffstore"]["manifest"] = base64.b64encode(dump_manifest(m)).decode()
    group = json.loads(docs.documents[".zmetadata"])["metadata"]
    group[".zattrs"] = attrs
    group[f"{image}/.zarray"] = zarray
    group[f"{image}/.zattrs"] = dict(group[f"{image}/.zattrs"], _ARRAY_DIMENSIONS=dims)
    for key, doc in group.items():
        yield key, json.dumps(doc, allow_nan=True)
    yield (
        ".zmetadata",
        json.dumps({"zarr_consolidated_format": 1, "metadata": group}, allow_nan=True),
    )
    yield from docs.coordinate_chunks.items()
    reader = ChunkReader(m)
    table = page_run_table(m)
    if table is not None:
        # Every chunk whole pages of one file: the references at once, no plan each.
        files, offsets, nbytes = table
        fill = None
        for index, file, offset in zip(
            np.ndindex(*m.chunk_grid), files.ravel().tolist(), offsets.ravel().tolist(), strict=True
        ):
            key = f"{image}/" + ".".join(map(str, index))
            if file >= 0:
                yield key, [urls[file], offset, nbytes]
            elif m.fill_value != 0 or inline_missing:
                if fill is None:
                    fill = codecs.encode(np.full(m.chunks, m.fill_value, m.dtype))
                yield key, fill
        return
    for index in np.ndindex(*m.chunk_grid):
        plan = reader.plan(index)
        if plan.empty:
            if m.fill_value == 0 and not inline_missing:
                continue
            chunk = np.full(plan.shape, m.fill_value, m.dtype)
            yield f"{image}/" + ".".join(map(str, index)), codecs.encode(chunk)
            continue
        yield f"{image}/" + ".".join(map(str, index)), _chunk_value(m, plan, reader, codecs, urls)


def write_references(
    store_or_manifest: Any,
    target: str,
    *,
    url: str | None = None,
    format: Format = "json",
    version: int = 1,
    chunks: ChunkSpec = None,
    storage_options: dict[str, Any] | None = None,
    record_size: int = 100_000,
    overwrite: bool = False,
) -> str:
    """Write fsspec reference files that read the TIFFs as Zarr, with no tiffstore needed.

    Parameters
    ----------
    store_or_manifest
        A :class:`~tiffstore.TiffStore` (from :func:`tiffstore.open`) or its manifest.
    target
        Where to write: a local path or any fsspec URL. JSON is one file; Parquet is a
        folder (fsspec's lazy reference format).
    url
        Where the TIFF files will be read from (``s3://bucket/raw/``,
        ``https://host/raw/``); by default where they are now.
    format
        ``"json"`` (kerchunk's format) or ``"parquet"`` (for millions of chunks; needs
        pandas and fastparquet to write and to read, and kerchunk to write).
    version
        JSON only: 1 (default) writes the URL prefix once as a template; 0 writes
        plain ``{key: value}``.
    chunks
        Chunks of the references (each must be one byte range: see
        :func:`reference_chunks`); by default the store's when they qualify, else
        pages or the files' own strips or tiles.
    storage_options
        For writing ``target``.
    record_size
        Parquet: references per Parquet file.
    overwrite
        Replace an existing ``target``; by default an existing target is refused.

    Returns
    -------
    str
        The target.

    Examples
    --------
    >>> store = tiffstore.open("raw/")  # doctest: +SKIP
    >>> store.write_references("raw.json", url="s3://bucket/raw/")  # doctest: +SKIP
    >>> fs = fsspec.filesystem("reference", fo="raw.json", remote_protocol="s3")  # doctest: +SKIP
    >>> zarr.open_group(fs.get_mapper(), mode="r")["image"]  # doctest: +SKIP
    """

    if format not in ("json", "parquet"):
        raise OptionError(f"format={format!r}: use 'json' or 'parquet'.")
    if version not in (0, 1):
        raise OptionError(f"version={version!r}: use 0 or 1.")
    fs, path = filesystem_of(target, storage_options)
    if fs.exists(path) and not overwrite:
        raise OutputExistsError(
            f"{target}: already exists. Pass overwrite=True (--overwrite) to replace it."
        )
    m: Manifest = getattr(store_or_manifest, "manifest", store_or_manifest)
    try:
        if format == "json":
            return _write_json(m, fs, path, url, chunks, version, target)
        return _write_parquet(m, fs, path, url, chunks, record_size, target)
    except TiffStoreError:
        raise  # the source's own errors (a file that changed, a read that failed)
    except OSError as exc:  # no such folder, no permission, a full disk, a refused PUT
        raise OutputError(f"{target}: cannot write the references ({exc}).") from exc


def _write_json(
    m: Manifest, fs: Any, path: str, url: str | None, chunks: ChunkSpec, version: int, target: str
) -> str:
    refs: dict[str, Any] = {
        key: "base64:" + base64.b64encode(value).decode() if isinstance(value, bytes) else value
        for key, value in references(m, url=url, chunks=chunks, version=version)
    }
    doc: dict[str, Any] = refs
    if version == 1:
        root = url if url is not None else m.source.url("")
        doc = {"version": 1, "templates": {"u": root.rstrip("/")}, "refs": refs}
    text = json.dumps(doc, separators=(",", ":"))  # one string, one write
    if fs.exists(path):
        fs.rm(path, recursive=True)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    if "file" in protocols and "/" in path:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)  # as Parquet's writer does
    with fs.open(path, "w") as fh:
        fh.write(text)
    logger.info("wrote %d references to %s", len(refs), target)
    return target


def _write_parquet(
    m: Manifest,
    fs: Any,
    path: str,
    url: str | None,
    chunks: ChunkSpec,
    record_size: int,
    target: str,
) -> str:
    try:
        from fsspec.implementations.reference import LazyReferenceMapper
    except ImportError as exc:  # pragma: no cover - fsspec always has it
        raise OptionError("Parquet references need fsspec's LazyReferenceMapper.") from exc
    try:
        import fastparquet  # noqa: F401
        import kerchunk.df  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as exc:
        raise OptionError(
            "Parquet references need pandas, fastparquet and kerchunk: "
            "pip install 'tiffstore[parquet]'."
        ) from exc
    if (m.file_index < 0).any() and m.layout.segments is None:
        # fsspec's Parquet reader takes a missing chunk's empty path for a URL under
        # pandas 3 and fails instead of serving the fill value; raw chunks are too big
        # to inline as fill.
        raise ReferenceError(
            f"{m.source.url('')}: the grid has cells with no file, which fsspec's Parquet "
            "references cannot leave out for uncompressed data. Write JSON references "
            "(format='json'), or remove the gaps."
        )
    # Only now, with the target refused or allowed: create() deletes what is there.
    out = LazyReferenceMapper.create(path, fs=fs, record_size=record_size)
    n = 0
    for key, value in references(m, url=url, chunks=chunks, version=0, inline_missing=True):
        if key == ".zmetadata":
            continue  # the Parquet layout's own .zmetadata holds every document
        out[key] = value.encode() if isinstance(value, str) else value
        n += 1
    out.flush()
    logger.info("wrote %d references to %s", n, target)
    return target

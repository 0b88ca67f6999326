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
files: whole uncompressed pages (or runs of them that divide the file's pages), or
one compressed strip or tile each (edge tiles included: TIFF stores them whole,
padded, as Zarr does its edge chunks). :func:`reference_chunks` picks such chunks,
so that by default no pixel is inlined. Only a last strip a TIFF stores short
cannot be a reference: it is re-encoded padded, checked to decode to the same
pixels, and inlined, up to ``max_inline`` bytes in all (:data:`MAX_INLINE`).
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np

from tiffstore._version import __version__
from tiffstore.errors import (
    OptionError,
    OutputError,
    OutputExistsError,
    ReferenceError,
    TiffStoreError,
)
from tiffstore.manifest.chunking import ChunkSpec
from tiffstore.manifest.documents import Documents, array_attributes, array_metadata
from tiffstore.manifest.headers import verify_manifest
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.plans import ChunkPlan, page_run_table
from tiffstore.manifest.reference_file import chunk_keys
from tiffstore.manifest.saved import chunk_digest, dump_manifest
from tiffstore.outputs.chunk_ranges import as_read_from, chunk_range, file_url, source_at
from tiffstore.outputs.parquet_refs import write_parquet_references
from tiffstore.outputs.reference_chunks import (
    ReferenceCodecs,
    describe_reference_chunks,
    padded_runs,
    reference_chunks,
    reference_codecs,
)
from tiffstore.read.assemble import ChunkReader
from tiffstore.sources.network import filesystem_of

__all__ = [
    "MAX_INLINE",
    "ReferenceError",
    "describe_reference_chunks",
    "reference_chunks",
    "references",
    "source_at",
    "write_references",
]

logger = logging.getLogger(__name__)

Format = Literal["json", "parquet"]

#: Bytes of pixels one reference file may inline, in all, by default: the padded,
#: re-encoded last strips that TIFFs store short. Past it the writer refuses.
MAX_INLINE = 2**20


def _chunk_value(
    m: Manifest,
    plan: ChunkPlan,
    reader: ChunkReader,
    codecs: ReferenceCodecs,
    urls: list[str],
    whole: dict[int, bool],
) -> bytes | list[Any]:
    piece = chunk_range(m, plan, codecs, whole)
    if piece is not None:
        return [urls[piece.file], piece.offset, piece.nbytes]
    # An edge chunk the TIFF stores short (a last strip), or a strip never written:
    # encode the padded chunk as zarr will decode it.
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


class _Inlined:
    """The pixels a reference file inlines, counted against ``max_inline``."""

    def __init__(self, m: Manifest, max_inline: int) -> None:
        self.m, self.limit = m, max_inline
        self.count = self.nbytes = 0

    def add(self, data: bytes) -> bytes:
        self.count += 1
        self.nbytes += len(data)
        if self.nbytes > self.limit:
            raise ReferenceError(self._refusal())
        return data

    def check_padded_runs(self) -> None:
        """Refuse at once chunks of uncompressed pages padded past a file's end."""
        m = self.m
        if not padded_runs(m):
            return
        per_file = math.prod(m.chunk_grid[m.n_name_dims :])
        full = math.prod(
            n // c for n, c in zip(m.shape[m.n_name_dims :], m.chunks[m.n_name_dims :], strict=True)
        )
        padded = (per_file - full) * int((m.file_index >= 0).sum())
        if padded * m.chunk_nbytes > self.limit:
            self.count, self.nbytes = padded, padded * m.chunk_nbytes
            raise ReferenceError(self._refusal(done=False))

    def _refusal(self, done: bool = True) -> str:
        m = self.m
        fix = (
            "Leave out chunks (the default chunks are byte ranges), or use chunks='page'"
            if m.layout.raw_pages
            else f"Raise max_inline= (now {self.limit:,} bytes), or write a real Zarr copy with "
            "`tiffstore materialize`"
        )
        return (
            f"{m.source.url('')}: with chunks {tuple(m.chunks)} the references would inline more "
            f"than {self.limit:,} bytes of pixels ({self.count:,} chunks"
            f"{' so far' if done else ''}, {self.nbytes:,} bytes): chunks the TIFFs store short "
            "(a last strip, an edge tile, or pages padded past a file's end) are no byte range "
            f"and must be copied into the reference file. {fix}."
        )

    def report(self) -> None:
        if self.count:
            logger.warning(
                "%s: %d chunks stored short in the TIFFs (last strips, or edge tiles encoded "
                "at their valid size) were re-encoded and inlined into the references: %d "
                "bytes in all (max_inline=%d).",
                self.m.source.url(""),
                self.count,
                self.nbytes,
                self.limit,
            )


def references(
    store_or_manifest: Any,
    *,
    url: str | None = None,
    chunks: ChunkSpec = None,
    version: int = 1,
    inline_missing: bool = False,
    max_inline: int = MAX_INLINE,
) -> Iterator[tuple[str, Any]]:
    """Every reference of the virtual array, metadata first, as ``(key, value)`` pairs.

    Values are JSON strings (metadata), ``bytes`` (inlined data) or
    ``[url, offset, length]`` (with ``{{u}}`` for the URL prefix when ``version=1``).
    See :func:`write_references`.
    """
    m: Manifest = getattr(store_or_manifest, "manifest", store_or_manifest)
    m = reference_chunks(verify_manifest(m), chunks)
    codecs = reference_codecs(m)
    inlined = _Inlined(m, max_inline)
    inlined.check_padded_runs()
    root = url if url is not None else m.source.url("")
    urls = [file_url(m, i, url) for i in range(len(m.files))]
    if version == 1:
        prefix = root.rstrip("/") + "/"
        urls = ["{{u}}/" + u[len(prefix) :] if u.startswith(prefix) else u for u in urls]
    docs = Documents(m)
    image = docs.image_name
    zarray = dict(array_metadata(m), compressor=codecs.compressor, filters=codecs.filters)
    # No fill value where it is 0 (zarr's default): xarray would mask real zeros.
    zarray["fill_value"] = None if m.fill_value == 0 else zarray["fill_value"]
    saved = as_read_from(m, url)
    attrs = array_attributes(saved)
    dims = attrs.pop("_ARRAY_DIMENSIONS")
    attrs["tiffstore"]["made_from"] = {
        "root": saved.source.url(""),
        "files": list(saved.files),
        "sizes": saved.file_sizes.tolist(),
    }
    if saved.file_mtimes is not None:
        attrs["tiffstore"]["made_from"]["mtimes_ns"] = saved.file_mtimes.tolist()
    if saved.file_versions:
        attrs["tiffstore"]["made_from"]["versions"] = list(saved.file_versions)
    attrs["tiffstore"]["references"] = {"version": __version__, "image": image, "url": url}
    # The whole manifest, so that tiffstore.open(this file) needs no listing or header.
    attrs["tiffstore"]["manifest"] = base64.b64encode(dump_manifest(saved)).decode()
    table = page_run_table(m)
    pairs: Iterable[tuple[str, Any]] = _chunk_pairs(
        m, table, image, urls, codecs, inlined, inline_missing
    )
    if table is None:
        pairs = list(pairs)  # each value made once (a chunk may be read and inlined)
        digest = chunk_digest(pairs, image)
    else:
        # Cheap to make twice, with no read: once for the digest, once to write.
        again = _chunk_pairs(m, table, image, urls, codecs, _Inlined(m, max_inline), inline_missing)
        digest = chunk_digest(again, image)
    # A digest of the chunk references (URLs left out): tiffstore.open(this file)
    # refuses references changed since (combined with others, edited).
    attrs["tiffstore"]["references"]["digest"] = digest
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
    yield from pairs
    inlined.report()


def _chunk_pairs(
    m: Manifest,
    table: tuple[np.ndarray, np.ndarray, int] | None,
    image: str,
    urls: list[str],
    codecs: ReferenceCodecs,
    inlined: _Inlined,
    inline_missing: bool,
) -> Iterator[tuple[str, Any]]:
    """The image's chunk references, in C order: byte ranges, or inlined bytes.

    ``table`` is :func:`~tiffstore.manifest.plans.page_run_table` of ``m``: every
    reference at once where it is not ``None``, else a plan per chunk."""
    # Zarr reads a missing key as the fill value: only Parquet needs missing cells inlined.
    fill: bytes | None = None
    if table is not None:
        # Every chunk whole pages of one file: the references at once, no plan each.
        files, offsets, nbytes = table
        keys = chunk_keys(f"{image}/", m.chunk_grid)
        for key, file, offset in zip(
            keys, files.ravel().tolist(), offsets.ravel().tolist(), strict=True
        ):
            if file >= 0:
                yield key, [urls[file], offset, nbytes]
            elif inline_missing:
                if fill is None:
                    fill = codecs.encode(np.full(m.chunks, m.fill_value, m.dtype))
                yield key, inlined.add(fill)
        return
    reader = ChunkReader(m)
    whole: dict[int, bool] = {}  # per file: are its edge tiles stored whole?
    for index in np.ndindex(*m.chunk_grid):
        key = f"{image}/" + ".".join(map(str, index))
        plan = reader.plan(index)
        if plan.empty:
            if inline_missing:
                if fill is None:
                    fill = codecs.encode(np.full(plan.shape, m.fill_value, m.dtype))
                yield key, inlined.add(fill)
            continue
        value = _chunk_value(m, plan, reader, codecs, urls, whole)
        yield key, inlined.add(value) if isinstance(value, bytes) else value


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
    max_inline: int = MAX_INLINE,
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
        ``"json"`` (kerchunk's format) or ``"parquet"`` (fsspec's lazy references, for
        millions of chunks; needs pandas and fastparquet to write and to read).
    version
        JSON only: 1 (default) writes the URL prefix once as a template; 0 writes
        plain ``{key: value}``.
    chunks
        Chunks of the references (each must be one byte range: see
        :func:`reference_chunks`); by default the store's when each is one byte range
        and none would be padded, else equal runs of pages that divide each file's
        pages, single pages, or the files' own strips or tiles: no pixel is inlined.
    storage_options
        For writing ``target``.
    record_size
        Parquet: references per Parquet file.
    overwrite
        Replace an existing ``target``; by default an existing target is refused.
    max_inline
        Bytes of pixels the file may inline in all (:data:`MAX_INLINE`, 1 MiB):
        only last strips a TIFF stores short, and chunks padded past a file's end
        when ``chunks`` asks for them, are inlined (with a warning giving the
        total). Past it the writing is refused, naming what would work.

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
    if isinstance(max_inline, bool) or not isinstance(max_inline, int) or max_inline < 0:
        raise OptionError(f"max_inline={max_inline!r}: use a number of bytes, 0 or more.")
    if isinstance(record_size, bool) or not isinstance(record_size, int) or record_size < 1:
        raise OptionError(f"record_size={record_size!r}: use a number of references, 1 or more.")
    fs, path = filesystem_of(target, storage_options)
    if fs.exists(path) and not overwrite:
        raise OutputExistsError(f"{target}: already exists. Pass overwrite=True to replace it.")
    m: Manifest = getattr(store_or_manifest, "manifest", store_or_manifest)
    try:
        if format == "json":
            refs = references(m, url=url, chunks=chunks, version=version, max_inline=max_inline)
            return _write_json(m, refs, fs, path, url, version, target)
        refs = references(
            m, url=url, chunks=chunks, version=0, inline_missing=True, max_inline=max_inline
        )
        return _write_parquet(m, refs, fs, path, record_size, target)
    except TiffStoreError:
        raise  # the source's own errors (a file that changed, a read that failed)
    except OSError as exc:  # no such folder, no permission, a full disk, a refused PUT
        raise OutputError(f"{target}: cannot write the references ({exc}).") from exc


def _write_json(
    m: Manifest,
    pairs: Iterator[tuple[str, Any]],
    fs: Any,
    path: str,
    url: str | None,
    version: int,
    target: str,
) -> str:
    refs: dict[str, Any] = {
        key: "base64:" + base64.b64encode(value).decode() if isinstance(value, bytes) else value
        for key, value in pairs
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
    pairs: Iterator[tuple[str, Any]],
    fs: Any,
    path: str,
    record_size: int,
    target: str,
) -> str:
    try:
        import fastparquet  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as exc:
        raise OptionError(
            "Parquet references need pandas and fastparquet: pip install 'tiffstore[parquet]'."
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
    # The metadata (and any refusal of the chunks) before the target is touched.
    first = next(pairs)
    try:
        # Deletes what is at the target first, as fsspec's LazyReferenceMapper.create does.
        n = write_parquet_references(itertools.chain([first], pairs), fs, path, record_size)
    except BaseException:
        if fs.exists(path):
            fs.rm(path, recursive=True)  # no half-written references left behind
        raise
    logger.info("wrote %d references to %s", n, target)
    return target

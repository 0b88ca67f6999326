"""A manifest saved as bytes and loaded back, with no pickle and no secrets.

The saved form is a NumPy ``.npz`` archive (loaded with ``allow_pickle=False``, so
loading a file from anywhere runs no code): the manifest's numpy columns as
arrays, and everything else as one JSON document. ``storage_options`` are never
saved; whoever loads a manifest gives their own.

Reference files carry their manifest in the group's attributes
(``tiffstore.manifest``, base64), so :func:`tiffstore.open` on a reference file
restores the whole store (dims, coordinates, missing cells, chunks, ``inspect``)
without listing the files or reading a header. A manifest over a
:class:`~tiffstore.sources.checksums.ChecksummedSource` keeps its checksums (two arrays and
the block size), so the restored store checks its reads the same way.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np

from tiffstore.errors import ReferenceError, SourceError
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.reference_file import ReferenceFile, digest_and_urls, parquet_digest
from tiffstore.manifest.schema import check_saved
from tiffstore.manifest.tables import FileTables
from tiffstore.names.axes import Axis, Coordinate
from tiffstore.sources.base import FileSource
from tiffstore.sources.checksums import ChecksummedSource
from tiffstore.sources.local import LocalSource
from tiffstore.sources.network import filesystem_of
from tiffstore.sources.remote import FsspecSource
from tiffstore.sources.settings import RemoteSettings
from tiffstore.tiff.codecs import SegmentCodec
from tiffstore.tiff.layout import FileLayout, Segments
from tiffstore.tiff.scale import VoxelSize

__all__ = [
    "FORMAT",
    "chunk_digest",
    "dump_manifest",
    "load_manifest",
    "manifest_of_references",
]

logger = logging.getLogger(__name__)

#: The saved form's version; loading refuses other versions.
FORMAT = 1

_ARRAYS = ("file_sizes", "file_index", "file_layout", "file_signature", "verified")
_TABLES = ("data_offset", "start", "offsets", "bytecounts")


def _source_record(source: FileSource) -> dict[str, Any]:
    if isinstance(source, ChecksummedSource):
        # The reader's record, and the checksums' block size (their table is arrays).
        return {**_source_record(source.inner), "checksum": {"block": source.block}}
    if isinstance(source, LocalSource):
        return {"kind": "local", "root": source.root}
    if isinstance(source, FsspecSource):
        return {"kind": "fsspec", "root": source.root, "protocol": source.protocol}
    raise TypeError(f"cannot save a manifest over {type(source).__name__}")


def _layout_record(lay: FileLayout) -> dict[str, Any]:
    seg = lay.segments
    return {
        "shape": list(lay.shape),
        "dtype": lay.dtype,
        "dims": list(lay.dims),
        "page_ndim": lay.page_ndim,
        "storage": lay.storage,
        "samples": lay.samples,
        "page_ifds": None if lay.page_ifds is None else [],
        "scale": None if lay.scale is None else lay.scale.as_dict(),
        "segments": None
        if seg is None
        else {
            "per_page": int(seg.offsets.shape[1]),
            "image": list(seg.image),
            "segment": list(seg.segment),
            "samples": seg.samples,
            "planar": seg.planar,
            "tiled": seg.tiled,
            "codec": {
                "compressor": [list(kv) for kv in seg.codec.compressor],
                "predictor": seg.codec.predictor,
                "predictor_dist": seg.codec.predictor_dist,
                "image": seg.codec.image,
            },
        },
    }


def _layout_from(rec: dict[str, Any]) -> FileLayout:
    seg = rec["segments"]
    segments = None
    if seg is not None:
        codec = seg["codec"]
        none = np.zeros((0, seg["per_page"]), np.int64)
        segments = Segments(
            none,
            none.copy(),
            tuple(seg["image"]),
            tuple(seg["segment"]),
            seg["samples"],
            seg["planar"],
            SegmentCodec(
                tuple((k, v) for k, v in codec["compressor"]),
                codec["predictor"],
                codec["predictor_dist"],
                codec["image"],
            ),
            bool(seg.get("tiled", False)),  # saved since tiffstore 0.2
        )
    scale = rec["scale"]
    return FileLayout(
        shape=tuple(rec["shape"]),
        dtype=rec["dtype"],
        dims=tuple(rec["dims"]),
        page_ndim=rec["page_ndim"],
        storage=rec["storage"],
        segments=segments,
        samples=rec["samples"],
        page_ifds=None if rec["page_ifds"] is None else (),
        scale=None if scale is None else VoxelSize(**{d: tuple(v) for d, v in scale.items()}),
    )


def dump_manifest(m: Manifest) -> bytes:
    """The manifest as ``.npz`` bytes (see :func:`load_manifest`).

    Examples
    --------
    >>> data = dump_manifest(store.manifest)  # doctest: +SKIP
    >>> load_manifest(data) == store.manifest  # doctest: +SKIP
    True
    """
    doc = {
        "format": FORMAT,
        "source": _source_record(m.source),
        "files": list(m.files),
        "layouts": [_layout_record(lay) for lay in m.layouts],
        "signatures": [base64.b64encode(s).decode() for s in m.signatures],
        "name_axes": [
            {
                "name": a.name,
                "kind": a.kind,
                "values": list(a.values),
                "label": a.label,
                "units": a.units,
            }
            for a in m.name_axes
        ],
        "file_dims": list(m.file_dims),
        "chunks": list(m.chunks),
        "fill_value": m.fill_value.item() if isinstance(m.fill_value, np.generic) else m.fill_value,
        "coords": [
            {"name": c.name, "dims": list(c.dims), "values": list(c.values), "units": c.units}
            for c in m.coords
        ],
        "template": m.template,
        "stitched": [list(p) for p in m.stitched],
        "file_versions": list(m.file_versions),
    }
    arrays = {name: getattr(m, name) for name in _ARRAYS}
    if m.file_mtimes is not None:
        arrays["file_mtimes"] = m.file_mtimes
    if isinstance(m.source, ChecksummedSource):
        checked = m.source
        if checked.names != m.files or not np.array_equal(checked.sizes, m.file_sizes):
            raise ValueError("the checksums describe other files than the manifest's")
        arrays["checksum_starts"] = checked.starts
        arrays["checksum_crcs"] = checked.crcs
    arrays.update({f"tables_{name}": getattr(m.tables, name) for name in _TABLES})
    buf = io.BytesIO()
    np.savez_compressed(buf, manifest=np.frombuffer(json.dumps(doc).encode(), np.uint8), **arrays)
    return buf.getvalue()


def load_manifest(
    data: bytes,
    storage_options: dict[str, Any] | None = None,
    root: str | None = None,
    remote: RemoteSettings | None = None,
) -> Manifest:
    """A manifest from :func:`dump_manifest` bytes.

    Parameters
    ----------
    data
        The saved bytes.
    storage_options
        For an fsspec source: the options to read the files with (never saved).
    root
        Read the files from here instead of where they were when saved (a local
        folder or an fsspec URL).
    remote
        For an fsspec source: its time limits and retries (never saved).

    Raises
    ------
    SourceError
        When the bytes are not a saved manifest, or one of another format version.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            doc = json.loads(npz["manifest"].tobytes())
            arrays = {name: npz[name] for name in npz.files if name != "manifest"}
    except Exception as exc:
        # Bytes from anywhere: zipfile, zlib and numpy each fail their own way on
        # damaged ones (BadZipFile, zlib.error, EOFError, NotImplementedError...).
        raise SourceError(f"not a saved tiffstore manifest ({type(exc).__name__}: {exc}).") from exc
    found = doc.get("format") if isinstance(doc, dict) else None
    if found != FORMAT:
        raise SourceError(
            f"the saved manifest has format {found!r}; this tiffstore reads "
            f"format {FORMAT}. Write it again with this version."
        )
    arrays = check_saved(doc, arrays)
    src = doc["source"]
    where = root if root is not None else src["root"]
    # Times and ETags describe the files the manifest was made from: copies elsewhere
    # (references written with ``url=``) have their own, and are not checked by them.
    same_files = _location(where) == _location(str(src["root"]))
    source: FileSource
    if "://" in where and not where.startswith("file://"):
        fs, _ = filesystem_of(where, storage_options)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        source = FsspecSource(
            where, protocol, dict(storage_options or {}), remote or RemoteSettings()
        )
    else:
        source = LocalSource(where.removeprefix("file://"))
    tables = FileTables(*(arrays[f"tables_{name}"] for name in _TABLES))
    files = tuple(doc["files"])
    checksum = src.get("checksum")
    if checksum is not None:
        # Saved from a store opened with checksum=True: its reads stay checked.
        try:
            source = ChecksummedSource(
                source,
                files,
                arrays["file_sizes"].astype(np.int64),
                arrays["checksum_starts"].astype(np.int64),
                arrays["checksum_crcs"].astype(np.uint32),
                int(checksum["block"]),
            )
        except ValueError as exc:
            raise SourceError(f"the saved manifest's checksums are damaged ({exc}).") from exc
    return Manifest(
        source=source,
        files=files,
        file_sizes=arrays["file_sizes"],
        file_index=arrays["file_index"],
        file_layout=arrays["file_layout"],
        layouts=tuple(_layout_from(rec) for rec in doc["layouts"]),
        tables=tables,
        signatures=tuple(base64.b64decode(s) for s in doc["signatures"]),
        file_signature=arrays["file_signature"],
        verified=arrays["verified"],
        name_axes=tuple(
            Axis(a["name"], a["kind"], tuple(a["values"]), a["label"], a["units"])
            for a in doc["name_axes"]
        ),
        file_dims=tuple(doc["file_dims"]),
        chunks=tuple(doc["chunks"]),
        fill_value=doc["fill_value"],
        coords=tuple(
            Coordinate(c["name"], tuple(c["dims"]), tuple(c["values"]), c["units"])
            for c in doc["coords"]
        ),
        template=doc["template"],
        stitched=tuple((int(k), int(d)) for k, d in doc["stitched"]),
        file_mtimes=arrays.get("file_mtimes") if same_files else None,
        file_versions=tuple(doc.get("file_versions", ())) if same_files else (),
    )


def _location(root: str) -> str:
    """A root as one spelling: ``file://`` dropped, local paths resolved, no final slash."""
    path = root.removeprefix("file://")
    if "://" not in path and "\0" not in path:  # (a NUL is no path's: compared as it is)
        path = os.path.realpath(path)
    return path.rstrip("/")


#: What to do with a reference file tiffstore cannot open from its saved manifest.
_WAY_OUT = (
    "Open it with fsspec + zarr directly, which read its references and not tiffstore's "
    'manifest: zarr.open_group(fsspec.filesystem("reference", fo={name!r}).get_mapper(), '
    'mode="r"); or write the references again from the TIFF files with tiffstore.'
)


def chunk_digest(refs: Iterable[tuple[str, Any]], image: str) -> str:
    r"""sha256 hex over the image array's chunk references, URLs left out.

    The reference writer stores it in the group's attributes
    (``tiffstore.references.digest``); :func:`manifest_of_references` computes it
    again from the file and refuses a file whose references changed since.

    Parameters
    ----------
    refs
        ``(key, value)`` pairs of a whole reference set; only keys
        ``f"{image}/<digits>.<digits>..."`` count. A value is ``[url, offset, length]``,
        ``[url]`` (a whole file), ``bytes`` (inlined), or text as a JSON file holds
        inlined bytes (``"base64:..."``, or plain text: its UTF-8 bytes).
    image
        The image array's name.

    Returns
    -------
    str
        The sha256 hex digest of one line per chunk reference, sorted by key, each
        ending in ``"\n"``: ``"<key> <offset> <length>"`` for a byte range, ``"<key>
        whole"`` for a whole file, ``"<key> inline <sha256 hex of the bytes>"`` for
        inlined bytes, ``"<key> unreadable"`` for anything else. URLs are left out, so
        that references moved to another place by rewriting their URLs keep it.

    Examples
    --------
    >>> chunk_digest([("image/.zarray", "{}"), ("image/0.0", ["a.tif", 8, 1024])], "image")
    '27b5df3e704b1e86aa94e2aafa1075f66b7800b86dbd7904abc743dd3c2a97c9'
    >>> import hashlib
    >>> _ == hashlib.sha256(b"image/0.0 8 1024\n").hexdigest()
    True
    """
    return digest_and_urls(refs, image)[0]


@dataclass(frozen=True)
class _Saved:
    """What tiffstore's attributes in a reference file say, checked."""

    manifest: bytes
    image: str
    url: str | None
    digest: str | None


def _saved_attributes(refs: ReferenceFile) -> _Saved:
    name = refs.name
    attrs = refs.document(".zattrs")
    info = attrs.get("tiffstore") if isinstance(attrs, dict) else None
    if not isinstance(info, dict) or not info.get("manifest"):
        raise SourceError(
            f"{name}: this reference file carries no tiffstore manifest (it was not written by "
            "tiffstore, or by an older version): open the TIFF files themselves."
        )

    def damaged(what: str) -> SourceError:
        return SourceError(
            f"{name}: the tiffstore attributes saved in it are damaged: {what}. "
            + _WAY_OUT.format(name=name)
        )

    saved = info["manifest"]
    if not isinstance(saved, str):
        raise damaged(f"tiffstore.manifest is {type(saved).__name__}, not base64 text")
    about = info.get("references", {})
    if not isinstance(about, dict):
        raise damaged(f"tiffstore.references is {type(about).__name__}, not an object")
    image, url, digest = about.get("image", "image"), about.get("url"), about.get("digest")
    if not isinstance(image, str) or not image or "/" in image:
        raise damaged(f"tiffstore.references.image {image!r} is not an array's name")
    if url is not None and (not isinstance(url, str) or not url or "\0" in url):
        raise damaged(f"tiffstore.references.url {url!r} is no URL or path")
    if digest is not None and not (
        isinstance(digest, str) and len(digest) == 64 and not digest.strip("0123456789abcdef")
    ):
        raise damaged(f"tiffstore.references.digest {digest!r} is not a sha256 hex digest")
    try:
        data = base64.b64decode(saved, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise damaged(f"tiffstore.manifest is not base64 ({exc})") from exc
    return _Saved(data, image, url, digest)


def _array_differences(zarray: Any, m: Manifest) -> str | None:
    """How the image array's ``.zarray`` differs from the manifest's array, or ``None``."""
    if not isinstance(zarray, dict):
        return "has no .zarray document" if zarray is None else "has a .zarray that is no object"
    what = []
    for key, want in (("shape", m.shape), ("chunks", m.chunks)):
        found = zarray.get(key)
        if not isinstance(found, list) or tuple(found) != want:
            found = tuple(found) if isinstance(found, list) else found
            what.append((f"{key} {found}", f"{key} {want}"))
    try:
        same_dtype = np.dtype(zarray.get("dtype")) == m.dtype
    except (TypeError, ValueError):
        same_dtype = False
    if not same_dtype:
        what.append((f"dtype {zarray.get('dtype')!r}", f"dtype {m.dtype.str!r}"))
    if not what:
        return None
    return (
        f"has {' and '.join(w for w, _ in what)} but the tiffstore manifest saved in it "
        f"describes {' and '.join(d for _, d in what)}"
    )


def _prefix_of(url: str, names: set[str]) -> str | None:
    """The part of ``url`` before one of ``names`` (the longest that ends it), or ``None``."""
    parts = url.split("/")
    for k in range(1, len(parts)):
        if "/".join(parts[k:]) in names:
            return "/".join(parts[:k]) + "/"
    return None


def _place_differences(urls: set[Any], refs: ReferenceFile, m: Manifest) -> str | None:
    """How the chunk references' URLs differ from the manifest's files, or ``None``:
    each must be one of its files (its name quoted or not), all where it reads them."""
    if not urls:
        return None
    first = next(iter(urls))
    if not isinstance(first, str):
        return f"read {first!r}, which is no URL"
    names = set(m.files)
    prefix = _prefix_of(first, names) or _prefix_of(unquote(first), names) or ""
    expected = {prefix + name for name in m.files} if prefix else set()
    strangers = urls - expected  # (set operations: a few ms for 100,000 files)
    strangers = {u for u in strangers if not isinstance(u, str) or unquote(u) not in expected}
    if strangers:
        stranger = next(iter(strangers))
        return f"read {stranger!r}, which is none of the {len(names):,} files the manifest lists"
    here, there = refs.expand(prefix), m.source.url("")
    if _location(here) != _location(there):
        return f"read the TIFF files from {here}, but the manifest reads them from {there}"
    return None


def _reference_differences(refs: ReferenceFile, saved: _Saved, m: Manifest) -> str | None:
    """How the chunk references differ from those written with the manifest, or ``None``."""
    image, digest = saved.image, saved.digest
    table = refs.references
    if table is not None:
        found, urls = digest_and_urls(table.items(), image)
    else:
        chunks = refs.parquet_chunks(image, m.chunk_grid)
        if chunks is None:
            logger.warning(
                "%s: its chunk references were not compared with those tiffstore wrote: "
                "reading Parquet records needs fastparquet (pip install 'tiffstore[parquet]').",
                refs.name,
            )
            return None
        found, urls = parquet_digest(chunks), chunks.urls
    if found != digest:
        return (
            "has chunk references other than those tiffstore wrote with the manifest saved "
            "in it (their keys, offsets or lengths differ)"
        )
    place = _place_differences(urls, refs, m)
    return None if place is None else f"has chunk references that {place}"


def manifest_of_references(
    source: Any,
    storage_options: dict[str, Any] | None = None,
    remote: RemoteSettings | None = None,
) -> Manifest:
    """The manifest saved in a reference file tiffstore wrote, checked against the file.

    The TIFFs are read from where the references point (``url=`` when they were
    written with one), with ``storage_options``.

    The manifest must describe the file's own image array (its ``.zarray``: shape,
    chunks, dtype), and, where the writer stored a digest of the chunk references
    (:func:`chunk_digest`), the references must be those it wrote, of the files it
    lists, where it reads them. A file combined with others (kerchunk's
    ``MultiZarrToZarr`` copies the first file's attributes, this manifest with
    them), edited, or given another file's attributes is refused: read it with
    fsspec + zarr, which read its references.

    Raises
    ------
    SourceError
        When the file is not a tiffstore reference file, carries no manifest, or its
        manifest or attributes are damaged; the message names the file and the field.
    ReferenceError
        When the manifest does not describe the file's image array or references.
    """
    text = str(source)
    refs = ReferenceFile(text, storage_options)
    saved = _saved_attributes(refs)
    try:
        m = load_manifest(saved.manifest, storage_options, root=saved.url, remote=remote)
    except SourceError as exc:
        raise SourceError(
            f"{text}: tiffstore.manifest in its attributes: {exc} " + _WAY_OUT.format(name=text)
        ) from exc
    image = saved.image
    problem = _array_differences(refs.document(f"{image}/.zarray"), m)
    if problem is None and saved.digest is not None:
        # (Reference files written before digests are checked by their array alone.)
        problem = _reference_differences(refs, saved, m)
    if problem is not None:
        raise ReferenceError(
            f"{text}: its image array {image!r} {problem}: it was combined with other "
            "references or edited by another tool, and tiffstore would read other data "
            "than it describes. " + _WAY_OUT.format(name=text)
        )
    return m

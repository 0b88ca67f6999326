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
import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from tiffstore.errors import SourceError
from tiffstore.manifest.model import Manifest
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

__all__ = ["FORMAT", "dump_manifest", "load_manifest", "manifest_of_references"]

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
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        raise SourceError(f"not a saved tiffstore manifest ({exc}).") from exc
    if doc.get("format") != FORMAT:
        raise SourceError(
            f"the saved manifest has format {doc.get('format')!r}; this tiffstore reads "
            f"format {FORMAT}. Write it again with this version."
        )
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
        except (KeyError, ValueError, TypeError) as exc:
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
    if "://" not in path:
        path = os.path.realpath(path)
    return path.rstrip("/")


def manifest_of_references(
    source: Any,
    storage_options: dict[str, Any] | None = None,
    remote: RemoteSettings | None = None,
) -> Manifest:
    """The manifest saved in a reference file tiffstore wrote.

    The TIFFs are read from where the references point (``url=`` when they were
    written with one), with ``storage_options``.

    Raises
    ------
    SourceError
        When the file is not a tiffstore reference file, or carries no manifest.
    """

    text = str(source)
    fs, path = filesystem_of(text, storage_options)
    try:
        if fs.isdir(path):
            meta = json.loads(fs.cat_file(f"{path.rstrip('/')}/.zmetadata"))
            attrs = meta["metadata"][".zattrs"]
        else:
            doc = json.loads(fs.cat_file(path))
            refs = doc.get("refs", doc)
            attrs = json.loads(refs[".zattrs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{text}: not a reference file tiffstore can read ({exc}).") from exc
    info = attrs.get("tiffstore", {}) if isinstance(attrs, dict) else {}
    saved = info.get("manifest")
    if not saved:
        raise SourceError(
            f"{text}: this reference file carries no tiffstore manifest (it was not written by "
            "tiffstore, or by an older version): open the TIFF files themselves."
        )
    url = info.get("references", {}).get("url")
    return load_manifest(base64.b64decode(saved), storage_options, root=url, remote=remote)

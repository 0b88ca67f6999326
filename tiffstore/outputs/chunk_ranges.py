"""A chunk as one byte range of one file, and the URL it is read from.

Reference files and virtual chunk references (Icechunk) describe a chunk the
same way: ``(url, offset, length)``, decoded by the array's one codec chain. These
are the rules both follow: a chunk that is one run of uncompressed bytes, or one
strip or tile stored whole (edge tiles included: TIFF stores them padded, as Zarr
does its edge chunks), is a byte range; anything else (a last strip stored short,
a strip never written) is not, and the writer stores its pixels instead.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
from urllib.parse import quote

from tiffstore.manifest.model import Manifest
from tiffstore.manifest.plans import ChunkPlan, Piece
from tiffstore.outputs.reference_chunks import ReferenceCodecs
from tiffstore.sources.base import FileSource
from tiffstore.sources.checksums import ChecksummedSource
from tiffstore.sources.local import LocalSource
from tiffstore.sources.remote import FsspecSource

__all__ = ["as_read_from", "chunk_range", "file_url", "source_at", "whole_segment"]


def file_url(m: Manifest, file: int, prefix: str | None) -> str:
    """Where file ``file`` is read from: where it is now, or below ``prefix``."""
    if prefix is None:
        return m.url(file)
    name = m.files[file]
    if prefix.startswith(("http://", "https://")):
        name = quote(name, safe="/")
    return posixpath.join(prefix.rstrip("/") + "/", name)


def as_read_from(m: Manifest, url: str | None) -> Manifest:
    """The manifest as an output saves it: read from ``url`` when given.

    No path of the writing machine is kept: the files are named relative to the
    root, and a copy elsewhere has its own times and versions, so the originals'
    are left out (they would only fail every check against the copy).
    """
    if url is None or _same_place(url, m.source.url("")):
        return m
    return dataclasses.replace(
        m, source=source_at(url, m.source), file_mtimes=None, file_versions=()
    )


def source_at(url: str, like: FileSource) -> FileSource:
    """A source that reads ``like``'s files from ``url`` (opens no connection)."""
    if isinstance(like, ChecksummedSource):
        # The files' checksums hold for copies of them.
        return dataclasses.replace(like, inner=source_at(url, like.inner))
    if "://" in url and not url.startswith("file://"):
        return FsspecSource(url, url.split("://", 1)[0])
    return LocalSource(url.removeprefix("file://"))


def _same_place(a: str, b: str) -> bool:
    return a.removeprefix("file://").rstrip("/") == b.removeprefix("file://").rstrip("/")


def whole_segment(
    m: Manifest, plan: ChunkPlan, codecs: ReferenceCodecs, whole: dict[int, bool]
) -> Piece | None:
    """The one strip or tile that is the whole chunk as zarr decodes it, or ``None``.

    Interior strips and tiles, uncompressed or not, and edge tiles: TIFF writers
    store tiles whole (edge tiles padded), exactly as zarr stores an edge chunk. A
    last strip is usually stored short, so only whole strips qualify; and since a
    writer may encode an edge tile at its valid size only, one edge tile of each
    file is decoded first (``whole`` keeps the answer per file).
    """
    if len(plan.pieces) != 1:
        return None
    p = plan.pieces[0]
    seg = m.layout.segments
    if p.kind not in ("decode", "raw") or p.nbytes <= 0 or seg is None:
        return None
    if math.prod(p.shape) != math.prod(plan.shape):
        return None
    if not plan.complete and any(s.start != 0 for s in (*p.select, *p.dest)):
        return None
    if p.kind == "raw":  # uncompressed: whole only if every byte of the segment is there
        return p if p.nbytes == math.prod(p.shape) * m.dtype.itemsize else None
    if p.valid == p.shape:
        return p
    if not seg.tiled:
        return None
    if p.file not in whole:
        (data,) = m.source.read_ranges(m.files[p.file], [(p.offset, p.nbytes)])
        try:
            codecs.decode(bytes(data), plan.shape, m.dtype)
            whole[p.file] = True
        except Exception:
            whole[p.file] = False  # stored at its valid size: its pixels are stored instead
    return p if whole[p.file] else None


def chunk_range(
    m: Manifest, plan: ChunkPlan, codecs: ReferenceCodecs, whole: dict[int, bool]
) -> Piece | None:
    """The piece whose byte range is the whole chunk (as zarr decodes it), or ``None``.

    ``None`` means no byte range is the chunk: its pixels must be stored (inlined,
    or written as a native chunk). See :func:`whole_segment` for ``whole``.
    """
    piece = plan.one_range()
    if piece is not None:
        return piece
    return whole_segment(m, plan, codecs, whole)

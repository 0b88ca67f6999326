"""What a path names: TIFF files, or a reference file. The one place that decides.

Every part of tiffstore asks here: the listing keeps the files whose names end in
:data:`TIFF_SUFFIXES`, :func:`tiffstore.open` and ``tiffstore check`` take a path
that :func:`is_reference_file` accepts as a reference file, and the xarray backend
and the napari reader, which are asked about every file a user opens, claim only
what :func:`is_tiff_source` or :func:`is_tiffstore_reference` accept. These answer
quickly: a folder is scanned until its first TIFF, a reference file is recognized
from its name and its first few kilobytes.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "REFERENCE_SUFFIXES",
    "TIFF_SUFFIXES",
    "is_reference_file",
    "is_tiff_name",
    "is_tiff_source",
    "is_tiffstore_reference",
    "is_url",
]

#: Name endings of TIFF files (compared lower-cased), longest first.
TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".btf", ".tf8", ".tf2")
#: Name endings of reference files: kerchunk JSON, and fsspec's Parquet folders.
REFERENCE_SUFFIXES = (".json", ".parq", ".parquet")

#: How many directory entries a folder scan looks at before giving up.
_SCAN_LIMIT = 10_000
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")
#: How much of a reference file is read to find tiffstore's mark.
_HEAD_BYTES = 64 * 1024


def is_url(text: Any) -> bool:
    """Whether ``text`` is a URL fsspec opens (``s3://``, ``https://``...), not a local path.

    Examples
    --------
    >>> is_url("s3://bucket/raw/"), is_url("file:///data/raw"), is_url("raw/")
    (True, False, False)
    """
    return isinstance(text, str) and "://" in text and not text.startswith("file://")


def is_tiff_name(name: str) -> bool:
    """Whether a file name ends like a TIFF file's (``.tif``, ``.ome.tiff``, ``.btf``...).

    Examples
    --------
    >>> is_tiff_name("a/b_t001.OME.TIF"), is_tiff_name("big.btf"), is_tiff_name("a.json")
    (True, True, False)
    """
    return name.lower().endswith(TIFF_SUFFIXES)


def _local_path(source: Any) -> Path | None:
    if isinstance(source, os.PathLike):
        return Path(os.fspath(source))
    if isinstance(source, str) and not is_url(source):
        return Path(source.removeprefix("file://"))
    return None


def _walk(directory: Path) -> Iterator[os.DirEntry[str]]:
    """Directory entries, breadth first, hidden folders skipped."""
    pending = [directory]
    while pending:
        current = pending.pop(0)
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    yield entry
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        pending.append(Path(entry.path))
        except OSError:
            continue


def _folder_has_tiff(directory: Path) -> bool:
    for n, entry in enumerate(_walk(directory)):
        if n >= _SCAN_LIMIT:
            return False
        if is_tiff_name(entry.name) and entry.is_file():
            return True
    return False


def is_tiff_source(source: Any) -> bool:
    """Whether ``source`` is a TIFF file, a glob of TIFF files or a folder holding TIFFs.

    A folder is scanned (recursively, breadth first) until its first TIFF file,
    looking at no more than 10,000 entries; a Zarr store's folder (``.zgroup``,
    ``.zarray``, ``zarr.json``) is not. URLs are judged by their suffix alone: listing
    a bucket to answer this would be too slow.

    Examples
    --------
    >>> is_tiff_source("raw/*.tif"), is_tiff_source("data.nc")
    (True, False)
    """
    if isinstance(source, (list, tuple)):
        return bool(source) and all(is_tiff_source(s) for s in source)
    if not isinstance(source, (str, os.PathLike)):
        return False
    text = os.fspath(source)
    if is_tiff_name(text.rstrip("/")):
        return True
    path = _local_path(source)
    if path is None:
        return False
    if glob.has_magic(text):
        return any(is_tiff_name(p) for p in glob.iglob(text, recursive=True))
    if not path.is_dir() or any((path / m).exists() for m in _ZARR_MARKERS):
        return False  # a Zarr store's folder: leave it to the Zarr backend, unscanned
    return _folder_has_tiff(path)


def _parquet_folder(path: Path) -> bool:
    """A folder laid out as fsspec's Parquet references: ``.zmetadata`` and ``*/refs.*.parq``."""
    return (path / ".zmetadata").is_file() and any(path.glob("*/refs.*.parq"))


def is_reference_file(source: Any) -> bool:
    """Whether ``source`` names a reference file rather than TIFF files.

    A reference file is a ``*.json`` file, or a Parquet reference folder: one named
    ``*.parq``/``*.parquet``, or a local folder laid out as fsspec writes them
    (``.zmetadata`` beside ``*/refs.0.parq``). The answer comes from the name (and,
    for a local folder, two file system lookups); whether tiffstore wrote it is
    :func:`is_tiffstore_reference`.

    Examples
    --------
    >>> is_reference_file("raw.json"), is_reference_file("s3://b/raw.parq/")
    (True, True)
    >>> is_reference_file("raw/")  # a folder of TIFFs
    False
    """
    if not isinstance(source, (str, os.PathLike)):
        return False
    text = os.fspath(source).rstrip("/")
    if text.lower().endswith(REFERENCE_SUFFIXES):
        return True
    path = _local_path(source)
    try:
        return path is not None and path.is_dir() and _parquet_folder(path)
    except OSError:
        return False


def is_tiffstore_reference(source: Any) -> bool:
    """Whether ``source`` is a reference file that tiffstore wrote (local paths only).

    A JSON file must hold fsspec references (``"refs"``, or Zarr keys for version 0)
    and name tiffstore in its first 64 KiB (the root attributes); a Parquet reference
    folder must hold a ``.zmetadata`` that names tiffstore. Used where a ``.json``
    might be anything (the xarray backend's and the napari reader's guesses).
    """
    path = _local_path(source)
    if path is None or not is_reference_file(source):
        return False
    try:
        if path.is_dir():
            meta = path / ".zmetadata"
            return meta.is_file() and b"tiffstore" in meta.read_bytes()[: 4 * _HEAD_BYTES]
        if not path.is_file() or path.suffix.lower() != ".json":
            return False
        with path.open("rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    # Version 1 holds "refs"; version 0 is the flat key space itself (".zgroup"...).
    is_refs = b'"refs"' in head or b'".z' in head
    return head.lstrip().startswith(b"{") and is_refs and b"tiffstore" in head

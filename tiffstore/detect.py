"""Whether a path names something tiffstore opens: TIFF files, or a reference file it wrote.

Used by the xarray backend's ``guess_can_open`` and the napari reader, which are asked
about every file a user opens and must answer quickly, without reading much: a folder
is scanned until the first TIFF is found, a reference file is recognized from its first
few kilobytes.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["REFERENCE_SUFFIXES", "TIFF_SUFFIXES", "is_reference_file", "is_tiff_source"]

TIFF_SUFFIXES = (".tif", ".tiff")
REFERENCE_SUFFIXES = (".json", ".parq", ".parquet")

#: How many directory entries a folder scan looks at before giving up.
_SCAN_LIMIT = 10_000
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")
#: How much of a JSON reference file is read to find tiffstore's mark.
_HEAD_BYTES = 64 * 1024


def _is_url(text: str) -> bool:
    return "://" in text


def _local_path(source: Any) -> Path | None:
    if isinstance(source, os.PathLike):
        return Path(os.fspath(source))
    if isinstance(source, str) and not _is_url(source):
        return Path(source)
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
        if entry.name.lower().endswith(TIFF_SUFFIXES) and entry.is_file():
            return True
    return False


def is_tiff_source(source: Any) -> bool:
    """Whether ``source`` is a TIFF file, a glob of TIFF files or a folder holding TIFFs.

    A folder is scanned (recursively, breadth first) until its first ``.tif``/``.tiff``
    file, looking at no more than 10,000 entries; a Zarr store's folder (``.zgroup``,
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
    if text.lower().rstrip("/").endswith(TIFF_SUFFIXES):
        return True
    path = _local_path(source)
    if path is None:
        return False
    if glob.has_magic(text):
        return any(p.lower().endswith(TIFF_SUFFIXES) for p in glob.iglob(text, recursive=True))
    if not path.is_dir() or any((path / m).exists() for m in _ZARR_MARKERS):
        return False  # a Zarr store's folder: leave it to the Zarr backend, unscanned
    return _folder_has_tiff(path)


def is_reference_file(source: Any) -> bool:
    """Whether ``source`` is a JSON or Parquet reference file that tiffstore wrote.

    A JSON file must hold fsspec references (``"refs"``, or Zarr keys for version 0)
    and name tiffstore in its first 64 KiB (the root attributes); a Parquet reference
    folder must hold a ``.zmetadata`` that names tiffstore. Local paths only.
    """
    path = _local_path(source)
    if path is None or not path.name.lower().endswith(REFERENCE_SUFFIXES):
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

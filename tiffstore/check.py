"""``tiffstore check``: which files no longer match what a store or reference file was made from.

Reference files written by tiffstore record what they were made from (the root,
each file's name and size, and its modification time (local files) or ETag
(remote files)) in their
attributes, ``tiffstore.made_from``; :func:`check_references` compares those with
the files as they are now. A source folder, glob or URL has no such record:
:func:`check_source` reads every file's header and names each file that cannot be
read, is shorter than its header says, or holds another array than the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .errors import SourceError, TiffStoreError
from .layout import FileLayout, read_layout
from .sources import FsspecSource, call_bounded, resolve_source, version_of

__all__ = ["FileProblem", "check", "check_references", "check_source", "is_reference_file"]


@dataclass(frozen=True)
class FileProblem:
    """A file that no longer matches, and how."""

    file: str
    problem: str


def is_reference_file(target: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``target`` is a reference file (JSON) or a Parquet reference folder."""
    import fsspec

    if target.endswith(".json"):
        return True
    fs, path = fsspec.core.url_to_fs(target, **(storage_options or {}))
    try:
        return bool(fs.isdir(path) and fs.exists(f"{path.rstrip('/')}/.zmetadata"))
    except Exception:
        return False


def _made_from(target: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The ``tiffstore.made_from`` record of a reference file (JSON or Parquet folder)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(target, **(storage_options or {}))
    try:
        if fs.isdir(path):
            with fs.open(f"{path.rstrip('/')}/.zmetadata", "rb") as fh:
                attrs = json.load(fh)["metadata"][".zattrs"]
        else:
            with fs.open(path, "rb") as fh:
                doc = json.load(fh)
            refs = doc.get("refs", doc)
            attrs = refs[".zattrs"]
            attrs = json.loads(attrs) if isinstance(attrs, str) else attrs
        made = attrs["tiffstore"]["made_from"]
    except FileNotFoundError as exc:
        raise SourceError(f"{target}: no such reference file.") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(
            f"{target}: not a reference file written by tiffstore (no tiffstore.made_from "
            f"in its attributes: {type(exc).__name__}: {exc})."
        ) from exc
    return dict(made)


def check_references(
    target: str, storage_options: dict[str, Any] | None = None
) -> tuple[int, list[FileProblem]]:
    """Compare the files a reference file was made from with the files now.

    Parameters
    ----------
    target
        A JSON reference file or a Parquet reference folder written by tiffstore.
    storage_options
        fsspec options to read ``target`` and, for remote roots, the files.

    Returns
    -------
    (int, list of FileProblem)
        How many files were checked, and those that are missing, of another size, or
        (local files) modified since.

    Examples
    --------
    >>> n, problems = check_references("raw.json")  # doctest: +SKIP
    >>> [p.file for p in problems]  # doctest: +SKIP
    ['/data/raw/stack0003.tif']
    """
    made = _made_from(target, storage_options)
    root, files, sizes = str(made["root"]), list(made["files"]), list(made["sizes"])
    mtimes: Sequence[int | None] = made.get("mtimes_ns") or [None] * len(files)
    versions: Sequence[str] = made.get("versions") or [""] * len(files)
    remote = "://" in root and not root.startswith("file://")
    urls = [root.rstrip("/") + "/" + name for name in files]
    problems: list[FileProblem] = []
    if remote:
        import fsspec

        fs, _ = fsspec.core.url_to_fs(root, **(storage_options or {}))

        def info(url: str) -> tuple[int, int | None, str | None] | None:
            try:
                found = call_bounded(fs, "info", url, timeout=FsspecSource.timeout)
            except FileNotFoundError:
                return None
            return int(found["size"]), None, version_of(found)

        with ThreadPoolExecutor(max_workers=16) as pool:
            now = list(pool.map(info, urls))
    else:

        def stat(path: str) -> tuple[int, int | None, str | None] | None:
            try:
                st = os.stat(path.removeprefix("file://"))
            except FileNotFoundError:
                return None
            return st.st_size, st.st_mtime_ns, None

        with ThreadPoolExecutor(max_workers=16) as pool:
            now = list(pool.map(stat, urls))
    for url, size, mtime, version, found in zip(urls, sizes, mtimes, versions, now, strict=True):
        if found is None:
            problems.append(FileProblem(url, "missing"))
        elif found[0] != size:
            problems.append(FileProblem(url, f"{found[0]} bytes now, {size} when referenced"))
        elif mtime is not None and mtime >= 0 and found[1] is not None and found[1] != mtime:
            problems.append(FileProblem(url, "modified since it was referenced (same size)"))
        elif version and found[2] is not None and found[2] != version:
            problems.append(
                FileProblem(
                    url,
                    f"replaced since it was referenced (same size; version {version} then, "
                    f"{found[2]} now)",
                )
            )
    return len(files), problems


def _data_end(lay: FileLayout) -> int | None:
    """The byte just past a file's last pixel data, by its header (``None``: unknown)."""
    if lay.storage == "contiguous" and lay.data_offset is not None:
        return lay.data_offset + lay.n_pages * lay.page_nbytes
    if lay.storage == "pages" and lay.page_offsets:
        return max(lay.page_offsets) + lay.page_nbytes
    if lay.storage == "segments" and lay.segments is not None:
        return int((lay.segments.offsets + lay.segments.bytecounts).max(initial=0))
    return None


def check_source(
    source: Any, storage_options: dict[str, Any] | None = None, workers: int = 16
) -> tuple[int, list[FileProblem]]:
    """Read every file's header and name those that are unreadable, cut short or unlike the rest.

    Returns
    -------
    (int, list of FileProblem)
        How many files were checked, and the problems found.

    Examples
    --------
    >>> n, problems = check_source("raw/")  # doctest: +SKIP
    >>> problems  # doctest: +SKIP
    [FileProblem(file='/data/raw/stack0007.tif', problem='truncated: pixel data end at byte 12582920, the file holds 4096')]
    """
    reader, files = resolve_source(source, storage_options)

    def parse(name: str) -> FileLayout | str:
        try:
            with reader.open(name) as fh:
                return read_layout(fh, reader.url(name))
        except TiffStoreError as exc:
            return str(exc).removeprefix(reader.url(name) + ": ")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        parsed = list(pool.map(parse, [f.name for f in files]))
    first = next((lay for lay in parsed if isinstance(lay, FileLayout)), None)
    problems = []
    for f, lay in zip(files, parsed, strict=True):
        url = reader.url(f.name)
        if isinstance(lay, str):
            problems.append(FileProblem(url, lay))
            continue
        end = _data_end(lay)
        if end is not None and end > f.size:
            problems.append(
                FileProblem(
                    url, f"truncated: pixel data end at byte {end}, the file holds {f.size}"
                )
            )
        elif first is not None and not first.same_array(lay):
            problems.append(
                FileProblem(url, "unlike the first file: " + "; ".join(first.differences(lay)))
            )
    return len(files), problems


def check(
    target: str, storage_options: dict[str, Any] | None = None
) -> tuple[str, int, list[FileProblem]]:
    """:func:`check_references` for a reference file, else :func:`check_source`.

    Returns ``(kind, files checked, problems)`` with kind ``"references"`` or ``"source"``.

    Examples
    --------
    >>> kind, n, problems = check("raw.json")  # doctest: +SKIP
    >>> kind, n, [p.file for p in problems]  # doctest: +SKIP
    ('references', 1200, [])
    """
    if is_reference_file(target, storage_options):
        return ("references", *check_references(target, storage_options))
    return ("source", *check_source(target, storage_options))

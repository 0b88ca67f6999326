"""``tiffstore check``: which files no longer match what a store or reference file was made from.

Reference files written by tiffstore record what they were made from (the root,
each file's name and size, and its modification time (local files) or ETag
(remote files)) in their
attributes, ``tiffstore.made_from``; :func:`check_references` compares those with
the files as they are now; with ``checksum=True``, reference files written from a
store opened with ``checksum=True`` also have every file read again and compared
with the checksums they carry. A source folder, glob or URL has no such record:
:func:`check_source` reads every file's header and names each file that cannot be
read, is shorter than its header says, or holds another array than the rest.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tiffstore.detect import is_reference_file
from tiffstore.errors import OptionError, SourceError, TiffStoreError
from tiffstore.manifest.reference_file import ReferenceFile
from tiffstore.manifest.saved import load_manifest
from tiffstore.options import OpenOptions
from tiffstore.sources.checksums import ChecksummedSource
from tiffstore.sources.listing import resolve_source
from tiffstore.sources.network import info_within, open_filesystem, version_of
from tiffstore.sources.settings import RemoteSettings
from tiffstore.tiff.header import read_layout
from tiffstore.tiff.layout import FileLayout

__all__ = ["FileProblem", "check", "check_references", "check_source"]


@dataclass(frozen=True)
class FileProblem:
    """A file that no longer matches, and how."""

    file: str
    problem: str


def _made_from(target: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The ``tiffstore`` attributes of a reference file (JSON or Parquet folder) that hold
    a ``made_from`` record."""
    attrs = ReferenceFile(target, storage_options).document(".zattrs")
    try:
        info = attrs["tiffstore"]
        info["made_from"]["root"]
    except (KeyError, TypeError) as exc:
        raise SourceError(
            f"{target}: not a reference file written by tiffstore (no tiffstore.made_from "
            f"in its attributes: {type(exc).__name__}: {exc})."
        ) from exc
    return dict(info)


def _content_changes(
    target: str,
    info: dict[str, Any],
    names: Sequence[str],
    storage_options: dict[str, Any] | None,
) -> dict[str, tuple[int, int] | str]:
    """Which of ``names`` differ from the checksums saved in a reference file's manifest."""
    saved = info.get("manifest")
    m = None
    if saved:
        try:
            data = base64.b64decode(saved, validate=True)
            root = str(info["made_from"]["root"])
        except (binascii.Error, ValueError, TypeError, KeyError) as exc:
            raise SourceError(
                f"{target}: the tiffstore manifest saved in it is damaged ({exc}); write the "
                "references again with tiffstore."
            ) from exc
        m = load_manifest(data, storage_options, root=root)
    if m is None or not isinstance(m.source, ChecksummedSource):
        raise OptionError(
            f"{target}: the references carry no checksums (they were written from a store "
            "opened without checksum=True), so the files' contents cannot be compared. "
            "Check without checksum=True, or write them again from "
            "tiffstore.open(..., checksum=True)."
        )
    return m.source.changed(names)


def check_references(
    target: str,
    storage_options: dict[str, Any] | None = None,
    checksum: bool = False,
    *,
    remote: RemoteSettings | None = None,
) -> tuple[int, list[FileProblem]]:
    """Compare the files a reference file was made from with the files now.

    Parameters
    ----------
    target
        A JSON reference file or a Parquet reference folder written by tiffstore.
    storage_options
        fsspec options to read ``target`` and, for remote roots, the files.
    checksum
        Also read every file whole and compare it with the checksums the reference
        file carries (written from a store opened with ``checksum=True``): names files
        rewritten at the same size, whatever their modification time says. Costs a
        read of all the data.
    remote
        Time limits of the requests for remote files' sizes and versions.

    Returns
    -------
    (int, list of FileProblem)
        How many files were checked, and those that are missing, of another size,
        (local files) modified since, or (``checksum=True``) of other content.

    Raises
    ------
    OptionError
        With ``checksum=True``, when the reference file carries no checksums.

    Examples
    --------
    >>> n, problems = check_references("raw.json")  # doctest: +SKIP
    >>> [p.file for p in problems]  # doctest: +SKIP
    ['/data/raw/stack0003.tif']
    """
    info = _made_from(target, storage_options)
    made = info["made_from"]
    root, files, sizes = str(made["root"]), list(made["files"]), list(made["sizes"])
    mtimes: Sequence[int | None] = made.get("mtimes_ns") or [None] * len(files)
    versions: Sequence[str] = made.get("versions") or [""] * len(files)
    is_remote = "://" in root and not root.startswith("file://")
    urls = [root.rstrip("/") + "/" + name for name in files]
    problems: list[FileProblem] = []
    settings = remote or RemoteSettings()
    if is_remote:
        fs, _ = open_filesystem(root, storage_options or {}, settings)

        def stat_remote(url: str) -> tuple[int, int | None, str | None] | None:
            try:
                found = info_within(fs, url, settings.timeout)
            except FileNotFoundError:
                return None
            return int(found["size"]), None, version_of(found)

        with ThreadPoolExecutor(max_workers=16) as pool:
            now = list(pool.map(stat_remote, urls))
    else:

        def stat(path: str) -> tuple[int, int | None, str | None] | None:
            try:
                st = os.stat(path.removeprefix("file://"))
            except FileNotFoundError:
                return None
            return st.st_size, st.st_mtime_ns, None

        with ThreadPoolExecutor(max_workers=16) as pool:
            now = list(pool.map(stat, urls))
    changed: dict[str, tuple[int, int] | str] = {}
    if checksum:
        same_size = [f for f, s, n in zip(files, sizes, now, strict=True) if n and n[0] == s]
        changed = _content_changes(target, info, same_size, storage_options)
    # A file whose stamp changed but whose checksums hold.
    same = "; its content is unchanged (checksum)" if checksum else ""
    for name, url, size, mtime, version, found in zip(
        files, urls, sizes, mtimes, versions, now, strict=True
    ):
        if found is None:
            problems.append(FileProblem(url, "missing"))
        elif found[0] != size:
            problems.append(FileProblem(url, f"{found[0]} bytes now, {size} when referenced"))
        elif name in changed:
            what = changed[name]
            problems.append(
                FileProblem(
                    url,
                    f"cannot be read: {what}"
                    if isinstance(what, str)
                    else "content differs from when referenced (checksum), first in bytes "
                    f"{what[0]}-{what[1]}",
                )
            )
        elif mtime is not None and mtime >= 0 and found[1] is not None and found[1] != mtime:
            problems.append(FileProblem(url, f"modified since it was referenced (same size){same}"))
        elif version and found[2] is not None and found[2] != version:
            problems.append(
                FileProblem(
                    url,
                    f"replaced since it was referenced (same size; version {version} then, "
                    f"{found[2]} now){same}",
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
    source: Any,
    storage_options: dict[str, Any] | None = None,
    workers: int = 16,
    *,
    recursive: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    remote: RemoteSettings | None = None,
) -> tuple[int, list[FileProblem]]:
    """Read every file's header and name those that are unreadable, cut short or unlike the rest.

    The files are listed as :func:`tiffstore.open` lists them (``recursive``,
    ``include``, ``exclude``, ``storage_options``, ``remote``).

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
    reader, files = resolve_source(
        source,
        storage_options,
        recursive=recursive,
        include=include,
        exclude=exclude,
        remote=remote,
    )

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


#: Options ``check`` cannot apply to a source, and why.
SOURCE_REFUSES = {
    "pattern": "check reads headers, not names; `tiffstore inspect --pattern` shows how "
    "names are read",
    "chunks": "check reads whole headers",
    "fill_value": "check serves nothing",
    "tiles": "check reads headers, not tile positions",
    "scale": "check reads headers, not the pixel size",
    "zarr_format": "check serves nothing",
    "sharded": "check serves nothing",
    "kvikio": "check reads on the CPU",
    "checksum": "it compares files with the checksums a reference file carries; a source "
    "folder, glob or URL has none (its headers are checked)",
}

#: Options ``check`` cannot apply to a reference file, and why.
REFERENCES_REFUSES = {
    name: why
    for name, why in SOURCE_REFUSES.items()
    if name not in ("checksum", "pattern", "tiles")
} | {
    "pattern": "a reference file lists its files itself",
    "tiles": "a reference file lists its files itself",
    "recursive": "a reference file lists its files itself",
    "include": "a reference file lists its files itself",
    "exclude": "a reference file lists its files itself",
    "validate": "check compares every file's size and version with the references",
}


def check(
    target: str, options: OpenOptions | None = None, **option_values: Any
) -> tuple[str, int, list[FileProblem]]:
    """:func:`check_references` for a reference file, else :func:`check_source`.

    Parameters
    ----------
    target
        A reference file (``*.json``, a Parquet reference folder), or a source.
    options
        How to list a source (``recursive``, ``include``, ``exclude``) and reach remote
        files (``storage_options``, ``remote``); ``checksum=True`` also compares a
        reference file's files with the checksums it carries. Options that cannot
        apply raise :class:`~tiffstore.errors.OptionError` naming them.
    **option_values
        Fields of :class:`~tiffstore.options.OpenOptions`, changing ``options``.

    Returns
    -------
    (str, int, list of FileProblem)
        ``(kind, files checked, problems)`` with kind ``"references"`` or ``"source"``.

    Examples
    --------
    >>> kind, n, problems = check("raw.json")  # doctest: +SKIP
    >>> kind, n, [p.file for p in problems]  # doctest: +SKIP
    ('references', 1200, [])
    """
    options = OpenOptions.of(options, **option_values)
    if is_reference_file(target):
        options.refuse(REFERENCES_REFUSES, "checking a reference file", REFERENCES_REFUSES)
        return (
            "references",
            *check_references(
                target, options.fsspec_options, options.checksum, remote=options.remote
            ),
        )
    options.refuse(SOURCE_REFUSES, f"checking {target}", SOURCE_REFUSES)
    return (
        "source",
        *check_source(
            target,
            options.fsspec_options,
            recursive=options.recursive,
            include=options.include,
            exclude=options.exclude,
            remote=options.remote,
        ),
    )

"""Listing an acquisition: which TIFF files a folder, glob, list or URL holds.

:func:`resolve_source` is the listing stage: it returns the source that reads the
files and every file with its size and version (modification time, ETag). Local
sources are listed by :func:`tiffstore.sources.local.list_local`; fsspec URLs with
one recursive listing where the file system has one, and sizes asked for
concurrently where it does not.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from tiffstore._compat import fs_info, gather_in_chunks, has_own_find, strip_protocol
from tiffstore.detect import is_tiff_name, is_url
from tiffstore.errors import SourceError
from tiffstore.sources.base import FileSource
from tiffstore.sources.files import ListedFiles
from tiffstore.sources.local import list_local
from tiffstore.sources.network import (
    WEB_PROTOCOLS,
    driven_from_outside,
    open_filesystem,
    version_of,
    why_failed,
    within,
)
from tiffstore.sources.remote import FsspecSource
from tiffstore.sources.settings import RemoteSettings

__all__ = ["matches_glob", "resolve_source", "select_files"]

logger = logging.getLogger(__name__)


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def _common_parent(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (URLs too: no ``os.path`` normalization)."""
    parts = [_parent(p).split("/") for p in paths]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if any(x != level[0] for x in level):
            break
        common.append(level[0])
    return "/".join(common)


def _infos(fs: Any, paths: Sequence[str], timeout: float) -> list[dict[str, Any] | BaseException]:
    """``fs.info`` of many paths at once: gathered where the file system is async, each
    given up on after ``timeout`` seconds."""
    if not paths:
        return []
    if driven_from_outside(fs):
        return gather_in_chunks(fs, [within(timeout, fs_info(fs, p)) for p in paths])

    def info(path: str) -> dict[str, Any] | BaseException:
        try:
            found: dict[str, Any] = fs.info(path)
            return found
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        return list(pool.map(info, paths))


#: A list of at least this many URLs in one folder has its sizes from one listing of
#: the folder rather than one request per file.
_LIST_PARENT_FROM = 16


def _sizes(
    fs: Any, known: dict[str, dict[str, Any]], listed: bool, timeout: float
) -> dict[str, tuple[int, str | None]]:
    """The size and version of every path of ``known`` (path -> what is known of it):
    from ``known`` itself, a listing of their folder (unless ``listed``: they come
    from one), or ``info`` requests made concurrently. A size nobody reports is an
    error, never 0."""
    found = {
        p: (int(info["size"]), version_of(info))
        for p, info in known.items()
        if info.get("size") is not None
    }
    wanted = [p for p in known if p not in found]
    by_parent: dict[str, list[str]] = {}
    for p in wanted:
        by_parent.setdefault(_parent(p), []).append(p)
    for parent, members in by_parent.items():
        if listed or len(members) < _LIST_PARENT_FROM:
            continue
        try:
            entries = fs.ls(parent, detail=True)
        except Exception as exc:  # only a shortcut: the requests below say what is wrong
            logger.debug("%s: cannot list (%s); asking for each file's size", parent, exc)
            continue
        infos = {strip_protocol(fs, e["name"]).rstrip("/"): e for e in entries}
        for p in members:
            info = infos.get(strip_protocol(fs, p).rstrip("/"))
            if info is not None and info.get("size") is not None:
                found[p] = (int(info["size"]), version_of(info))
    wanted = [p for p in wanted if p not in found]
    for p, info in zip(wanted, _infos(fs, wanted, timeout), strict=True):
        url = fs.unstrip_protocol(p)
        if isinstance(info, FileNotFoundError):
            raise SourceError(f"{url}: no such file.") from info
        if isinstance(info, BaseException):
            raise SourceError(
                f"{url}: cannot get its size ({why_failed(info, timeout)})."
            ) from info
        if info.get("size") is None:
            raise SourceError(
                f"{url}: the server does not say how large the file is (no Content-Length), "
                "so it cannot be read by ranges."
            )
        found[p] = (int(info["size"]), version_of(info))
    return found


def _list_fsspec(
    source: str | Sequence[str],
    storage_options: dict[str, Any],
    recursive: bool,
    settings: RemoteSettings,
) -> tuple[FsspecSource, ListedFiles]:
    urls = [source] if isinstance(source, str) else list(source)
    # A new open sees the files as they are now, not a listing cached by an earlier one.
    fs, _ = open_filesystem(urls[0], storage_options, settings)
    timeout = settings.timeout
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found: dict[str, dict[str, Any]] = {}
    root: str | None = None
    if len(urls) == 1 and not globmod.has_magic(strip_protocol(fs, urls[0])):
        # A folder (or one file): one recursive listing, not a request per entry.
        path = strip_protocol(fs, urls[0])
        try:
            listed = fs.find(
                path,
                detail=True,
                maxdepth=None if recursive else 1,
                **({} if has_own_find(fs) else {"on_error": "raise"}),
            )
        except FileNotFoundError:
            listed = {}
        except Exception as exc:
            raise SourceError(f"{urls[0]}: cannot list ({why_failed(exc, timeout)}).") from exc
        listed = {p: e for p, e in listed.items() if p.rstrip("/") != path.rstrip("/")}
        if listed:
            root = path.rstrip("/")
            for p, info in listed.items():
                if info.get("type", "file") == "file" and is_tiff_name(p):
                    found[p] = info
        elif is_tiff_name(path):
            found[path] = {}
        else:
            raise SourceError(f"{urls[0]}: no such folder, or it holds no files.")
    else:
        for url in urls:
            path = strip_protocol(fs, url)
            if globmod.has_magic(path):
                try:
                    matched = fs.glob(path, detail=True)
                except Exception as exc:
                    raise SourceError(f"{url}: cannot list ({why_failed(exc, timeout)}).") from exc
                for p, info in matched.items():
                    if info.get("type", "file") == "file" and is_tiff_name(p):
                        found[p] = info
            else:
                found[path] = {}
    if not found:
        raise SourceError(f"{source}: no TIFF files found there.")
    sizes = _sizes(fs, found, root is not None, timeout)
    if root is None:
        root = _common_parent(list(sizes))
    names = [p[len(root) :].lstrip("/") for p in sizes]
    if protocol in WEB_PROTOCOLS:
        # Index pages link to quoted names ("run%201.tif"): read the names as they are.
        names = [unquote(name) for name in names]
    files = ListedFiles(
        names, [size for size, _ in sizes.values()], versions=[v for _, v in sizes.values()]
    )
    reader = FsspecSource(fs.unstrip_protocol(root), protocol, dict(storage_options), settings)
    reader.remember_sizes(files)
    return reader, files


def _strip_file_scheme(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    if isinstance(path, str) and path.startswith("file://"):
        return path[len("file://") :]
    return path


def _globs(patterns: str | Sequence[str] | None) -> list[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def matches_glob(name: str, patterns: Sequence[str]) -> bool:
    """Whether a file name (relative, ``/``-separated) matches one of the globs.

    A glob is matched against the whole relative name, where ``*`` crosses folders
    (``MIPs/*``, ``*_MIP_z.tif``); a glob without ``/`` is also matched against the
    file name alone (``ex6-2_*``).

    Examples
    --------
    >>> matches_glob("MIPs/a_MIP_z.tif", ["MIPs/*"]), matches_glob("raw/b.tif", ["b*"])
    (True, True)
    """
    base = name.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(name, p) or ("/" not in p and fnmatch.fnmatchcase(base, p))
        for p in patterns
    )


def select_files(
    files: ListedFiles,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> ListedFiles:
    """The files that match an ``include`` glob (all when none given) and no ``exclude`` glob."""
    inc, exc = _globs(include), _globs(exclude)
    if not inc and not exc:
        return files
    kept = [
        k
        for k, name in enumerate(files.names)
        if (not inc or matches_glob(name, inc)) and not (exc and matches_glob(name, exc))
    ]
    if not kept:
        raise SourceError(
            f"None of the {len(files)} TIFF files is left after include={inc} exclude={exc} "
            f"(first: {files.names[0]!r}). Globs are matched against names relative to the "
            "folder, such as 'MIPs/*' or '*_MIP_z.tif'."
        )
    return files.take(kept)


def resolve_source(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
    *,
    recursive: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    remote: RemoteSettings | None = None,
    sort: bool = True,
) -> tuple[FileSource, ListedFiles]:
    """List an acquisition's TIFF files.

    Parameters
    ----------
    source
        A folder, a glob, a list of files, or fsspec URLs of any of these.
    storage_options
        Passed to fsspec for URLs.
    recursive
        Search a folder's subfolders too (default), or only the folder itself.
    include, exclude
        Globs on the names relative to the root (see :func:`matches_glob`): keep only
        files matching an ``include`` glob, then drop those matching an ``exclude`` glob.
    remote
        Time limits and retries of remote listing and reads (default
        :class:`~tiffstore.sources.settings.RemoteSettings`).
    sort
        Sort the files by name (default); ``False`` keeps the order listed, for a
        caller that sorts only the names it needs (a refresh).

    Returns
    -------
    (FileSource, ListedFiles)
        The reader for the root and the files below it, sorted by name: a sequence of
        :class:`~tiffstore.sources.base.SourceFile` held as columns.
    """
    if isinstance(source, (str, os.PathLike)):
        first: str | os.PathLike[str] = source
    else:
        source = list(source)
        first = source[0] if source else ""
    reader: FileSource
    if is_url(first):
        urls: str | list[str] = (
            os.fspath(source)
            if isinstance(source, (str, os.PathLike))
            else [os.fspath(s) for s in source]
        )
        reader, files = _list_fsspec(
            urls, storage_options or {}, recursive, remote or RemoteSettings()
        )
    else:
        if isinstance(source, (str, os.PathLike)):
            source = _strip_file_scheme(source)
        else:
            source = [_strip_file_scheme(s) for s in source]
        reader, files = list_local(source, recursive)
    files = select_files(files, include, exclude)
    # A plain sort, for a deterministic order: where each file belongs in the
    # array comes from its name's parsed fields, never from this order.
    return reader, files.sorted() if sort else files

"""Where the bytes come from: listing an acquisition's files and reading byte ranges.

A :class:`FileSource` is a small, picklable description of a root (a local folder
or any fsspec URL). Local files are read with ``os.preadv`` straight into the
caller's buffer, opening and closing the file around each read, so no handle
outlives a read and the number open at once is bounded by the reading threads.
Other protocols go through fsspec.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .errors import SourceError, TiffReadError
from .naming import TIFF_SUFFIXES

__all__ = [
    "FileSource",
    "FsspecSource",
    "LocalSource",
    "SourceFile",
    "matches_glob",
    "resolve_source",
    "select_files",
]


@dataclass(frozen=True)
class SourceFile:
    """A file of the acquisition: its name relative to the root, and its size."""

    name: str
    size: int


def _is_tiff(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


class FileSource(ABC):
    """Reads the files of one acquisition below a root."""

    @abstractmethod
    def url(self, name: str) -> str:
        """The full path or URL of a file."""

    @abstractmethod
    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the file's bytes from ``offset``; raise if the file is short."""

    @abstractmethod
    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """Open a file for reading (for header parsing and decoding through tifffile)."""

    def read(self, name: str, offset: int, length: int) -> bytearray:
        buf = bytearray(length)
        self.read_into(name, offset, memoryview(buf))
        return buf

    def read_bytes(self, name: str, offset: int, length: int) -> bytes:
        """The file's bytes ``offset .. offset + length`` as one ``bytes`` object."""
        return bytes(self.read(name, offset, length))

    def read_many_into(self, name: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        """Fill each buffer with the file's bytes from its offset."""
        for offset, out in requests:
            self.read_into(name, offset, out)

    def read_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[memoryview]:
        """Read ``(offset, length)`` ranges of one file; return their bytes in order.

        Ranges that touch or overlap are read as one (strips and tiles are usually
        written back to back), and no byte outside the ranges is read.
        """
        views = [memoryview(b"")] * len(ranges)
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        requests: list[tuple[int, memoryview]] = []
        k = 0
        while k < len(order):
            start = ranges[order[k]][0]
            stop = start + ranges[order[k]][1]
            j = k + 1
            while j < len(order) and ranges[order[j]][0] <= stop:
                stop = max(stop, ranges[order[j]][0] + ranges[order[j]][1])
                j += 1
            buf = memoryview(bytearray(stop - start))
            requests.append((start, buf))
            for i in order[k:j]:
                offset, length = ranges[i]
                views[i] = buf[offset - start : offset - start + length]
            k = j
        if requests:
            self.read_many_into(name, requests)
        return views


@dataclass(frozen=True)
class LocalSource(FileSource):
    """Files on a local file system below ``root``."""

    root: str

    def url(self, name: str) -> str:
        # os.path.join, not pathlib: this runs once per chunk read.
        return os.path.join(self.root, name)

    @contextmanager
    def _descriptor(self, name: str) -> Iterator[tuple[int, str]]:
        """An OS file descriptor for one call's reads, closed right after them."""
        path = self.url(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise TiffReadError(f"{path}: cannot open ({exc.strerror}).") from exc
        try:
            yield fd, path
        finally:
            os.close(fd)

    def read_bytes(self, name: str, offset: int, length: int) -> bytes:
        with self._descriptor(name) as (fd, _):
            # os.pread allocates the bytes object and fills it: no second copy.
            data = os.pread(fd, length, offset)
        if len(data) < length:
            rest = bytearray(data) + self.read(name, offset + len(data), length - len(data))
            return bytes(rest)
        return data

    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        self.read_many_into(name, [(offset, out)])

    def read_many_into(self, name: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        # One open per call, not per range: a chunk of tiles reads many ranges.
        with self._descriptor(name) as (fd, path):
            for offset, out in requests:
                want = out.nbytes
                got = os.preadv(fd, [out], offset)
                while got < want:
                    n = os.preadv(fd, [out[got:]], offset + got)
                    if n == 0:
                        raise TiffReadError(
                            f"{path}: file is truncated: wanted bytes {offset}-{offset + want} "
                            f"but it ends at {offset + got}. Was it still being written?"
                        )
                    got += n

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        path = self.url(name)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise TiffReadError(f"{path}: cannot open ({exc.strerror}).") from exc
        with fh:
            yield fh


@dataclass(frozen=True)
class FsspecSource(FileSource):
    """Files below ``root`` on any fsspec file system (``memory://``, ``s3://``...)."""

    root: str
    protocol: str
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def fs(self) -> Any:
        import fsspec

        return fsspec.filesystem(self.protocol, **self.storage_options)

    def url(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def read_bytes(self, name: str, offset: int, length: int) -> bytes:
        # fsspec returns bytes already: hand them on rather than copy them twice.
        url = self.url(name)
        try:
            data: bytes = self.fs.cat_file(url, start=offset, end=offset + length)
        except (OSError, ValueError) as exc:
            raise TiffReadError(f"{url}: cannot read bytes at {offset} ({exc}).") from exc
        if len(data) != length:
            raise TiffReadError(
                f"{url}: file is truncated: wanted {length} bytes at {offset}, got {len(data)}."
            )
        return data

    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        out[:] = self.read_bytes(name, offset, out.nbytes)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        url = self.url(name)
        try:
            fh = self.fs.open(url, "rb")
        except OSError as exc:
            raise TiffReadError(f"{url}: cannot open ({exc}).") from exc
        with fh:
            yield fh


def _walk_local(root: Path, recursive: bool = True) -> list[SourceFile]:
    found: list[SourceFile] = []
    append = found.append
    stack: list[tuple[str | Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                name = entry.name
                if name[0] == ".":
                    continue
                # The suffix first: most entries are TIFF files, and a directory
                # named like one is caught by is_file (from d_type: no syscall).
                if name.lower().endswith(TIFF_SUFFIXES) and entry.is_file():
                    append(SourceFile(prefix + name, entry.stat().st_size))
                elif recursive and entry.is_dir():
                    stack.append((entry.path, f"{prefix}{name}/"))
    return found


def _common_root(paths: Sequence[str]) -> str:
    parents = [os.path.dirname(p) for p in paths]
    return os.path.commonpath(parents) if parents else "."


def _resolve_local(
    source: str | os.PathLike[str] | Sequence[Any], recursive: bool = True
) -> tuple[LocalSource, list[SourceFile]]:
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            folder = path.resolve()
            found = _walk_local(folder, recursive)
            if not found:
                where = "" if recursive else " directly (recursive=False)"
                raise SourceError(
                    f"{folder}: the folder holds no TIFF files (*.tif, *.tiff){where}."
                )
            return LocalSource(str(folder)), found
        if globmod.has_magic(text):
            paths = [p for p in globmod.glob(os.path.expanduser(text), recursive=True)]
            paths = [os.path.abspath(p) for p in paths if os.path.isfile(p) and _is_tiff(p)]
            if not paths:
                raise SourceError(f"{text}: the glob matches no TIFF files (*.tif, *.tiff).")
        elif path.is_file():
            paths = [str(path.resolve())]
        else:
            raise SourceError(f"{text}: no such file or folder.")
    else:
        paths = [os.path.abspath(os.fspath(p)) for p in source]
        if not paths:
            raise SourceError("The list of files is empty.")
        absent = [p for p in paths if not os.path.isfile(p)]
        if not absent:
            paths = [p for p in paths if _is_tiff(p)]
            if not paths:
                raise SourceError("None of the files listed is a TIFF file (*.tif, *.tiff).")
        if absent:
            raise SourceError(
                f"{absent[0]}: no such file"
                + (f" (and {len(absent) - 1} more)." if len(absent) > 1 else ".")
            )
    root = _common_root(paths)
    files = [
        SourceFile(PurePosixPath(Path(os.path.relpath(p, root))).as_posix(), os.path.getsize(p))
        for p in paths
    ]
    return LocalSource(root), files


def _resolve_fsspec(
    source: str | Sequence[str], storage_options: dict[str, Any], recursive: bool = True
) -> tuple[FsspecSource, list[SourceFile]]:
    import fsspec

    urls = [source] if isinstance(source, str) else list(source)
    fs, _ = fsspec.core.url_to_fs(urls[0], **storage_options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    entries: dict[str, int] = {}
    for url in urls:
        path = fs._strip_protocol(url)
        if globmod.has_magic(path):
            found = fs.glob(path, detail=True)
        elif fs.isdir(path):
            found = fs.find(path, detail=True, maxdepth=None if recursive else 1)
        elif fs.isfile(path):
            found = {path: fs.info(path)}
        else:
            raise SourceError(f"{url}: no such file or folder.")
        for p, info in found.items():
            if info.get("type", "file") == "file" and _is_tiff(p):
                entries[p] = int(info.get("size") or 0)
    if not entries:
        raise SourceError(f"{source}: no TIFF files found there.")
    paths = list(entries)
    first = fs._strip_protocol(urls[0])
    if len(urls) == 1 and fs.isdir(first):
        root = first.rstrip("/")
    else:
        root = os.path.commonpath([p.rsplit("/", 1)[0] if "/" in p else "" for p in paths])
    files = [SourceFile(p[len(root) :].lstrip("/"), size) for p, size in entries.items()]
    return (
        FsspecSource(fs.unstrip_protocol(root), protocol, dict(storage_options)),
        files,
    )


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
    files: list[SourceFile],
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> list[SourceFile]:
    """The files that match an ``include`` glob (all when none given) and no ``exclude`` glob."""
    inc, exc = _globs(include), _globs(exclude)
    if not inc and not exc:
        return files
    kept = [
        f
        for f in files
        if (not inc or matches_glob(f.name, inc)) and not (exc and matches_glob(f.name, exc))
    ]
    if not kept:
        raise SourceError(
            f"None of the {len(files)} TIFF files is left after include={inc} exclude={exc} "
            f"(first: {files[0].name!r}). Globs are matched against names relative to the "
            "folder, such as 'MIPs/*' or '*_MIP_z.tif'."
        )
    return kept


def resolve_source(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
    *,
    recursive: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> tuple[FileSource, list[SourceFile]]:
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

    Returns
    -------
    (FileSource, list of SourceFile)
        The reader for the root and the files below it, sorted by name.
    """
    if isinstance(source, (str, os.PathLike)):
        first: str | os.PathLike[str] = source
    else:
        source = list(source)
        first = source[0] if source else ""
    is_url = isinstance(first, str) and "://" in first and not first.startswith("file://")
    if is_url:
        if not isinstance(source, (str, os.PathLike)):
            source = [os.fspath(s) for s in source]
        reader: FileSource
        reader, files = _resolve_fsspec(source, storage_options or {}, recursive)  # type: ignore[arg-type]
    else:
        if isinstance(source, (str, os.PathLike)):
            source = _strip_file_scheme(source)
        else:
            source = [_strip_file_scheme(s) for s in source]
        reader, files = _resolve_local(source, recursive)
    files = select_files(files, include, exclude)
    # A plain sort, for a deterministic order: where each file belongs in the
    # array comes from its name's parsed fields, never from this order.
    files.sort(key=lambda f: f.name)
    return reader, files

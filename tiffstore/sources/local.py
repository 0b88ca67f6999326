"""Local files: listing a folder, glob or list of paths, and reads with ``os.preadv``.

Local files are read with ``os.preadv`` straight into the caller's buffer, opening
and closing the file around each read, so no handle outlives a read and the number
open at once is bounded by the reading threads.
"""

from __future__ import annotations

import glob as globmod
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tiffstore.detect import TIFF_SUFFIXES, is_tiff_name
from tiffstore.errors import FileChangedError, SourceError, TiffReadError
from tiffstore.sources.base import FileSource
from tiffstore.sources.files import ListedFiles

__all__ = ["LocalSource", "list_local"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalSource(FileSource):
    """Files on a local file system below ``root``.

    Files whose size and modification time were recorded (:meth:`expect`) are
    checked on every read with an ``fstat`` of the descriptor the bytes come
    from: a file replaced, grown, cut or touched since it was listed raises
    :class:`FileChangedError` rather than serving bytes its header no longer
    describes.
    """

    root: str

    def url(self, name: str) -> str:
        # os.path.join, not pathlib: this runs once per chunk read.
        return os.path.join(self.root, name)

    def expect(self, stamps: dict[str, tuple[int, int]]) -> None:
        """Record each file's ``(size, mtime_ns)`` as listed; reads check them from now on."""
        # A frozen dataclass: process-local state beside the fields, never pickled
        # (a manifest's reader records them again in each process).
        self.__dict__.setdefault("_stamps", {}).update(stamps)

    def _check_stamp(self, name: str, path: str, st: os.stat_result) -> None:
        expected = self.__dict__.get("_stamps", {}).get(name)
        if expected is None or (st.st_size, st.st_mtime_ns) == expected:
            return
        size = expected[0]
        if st.st_size < size:
            what = f"truncated: {st.st_size} bytes now, {size} at the open"
        elif st.st_size > size:
            what = f"grown: {st.st_size} bytes now, {size} at the open"
        else:
            what = "rewritten or replaced: same size, another modification time"
        raise FileChangedError(
            f"{path}: the file changed after the store was opened ({what}), so its header may "
            "no longer describe its bytes. Open the source again (tiffstore.open) to read it "
            "as it is now."
        )

    def stamp(self, name: str) -> tuple[int, int] | None:
        """The file's ``(size, mtime_ns)`` now, or ``None`` when it is gone: compared with
        the listing's after a header is read, to tell a file still being written."""
        try:
            st = os.stat(self.url(name))
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _cannot_open(self, name: str, path: str, exc: OSError) -> TiffReadError:
        if isinstance(exc, FileNotFoundError) and name in self.__dict__.get("_stamps", {}):
            return FileChangedError(f"{path}: the file was removed after the store was opened.")
        return TiffReadError(f"{path}: cannot open ({exc.strerror}).")

    @contextmanager
    def _descriptor(self, name: str) -> Iterator[tuple[int, str]]:
        """An OS file descriptor for one call's reads, closed right after them."""
        path = self.url(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise self._cannot_open(name, path, exc) from exc
        try:
            self._check_stamp(name, path, os.fstat(fd))
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
            raise self._cannot_open(name, path, exc) from exc
        with fh:
            self._check_stamp(name, path, os.fstat(fh.fileno()))
            yield fh


#: TIFF suffixes as most names have them, all lower or all upper case: a name ending
#: so needs no lower-cased copy to be told a TIFF file's.
_CASED_SUFFIXES = TIFF_SUFFIXES + tuple(suffix.upper() for suffix in TIFF_SUFFIXES)


#: Folders are read through a descriptor where the system allows it: each file is then
#: stat-ed relative to its folder (``fstatat``), not by its whole path again (about a
#: tenth faster at 10,000 files).
_BY_FD = os.scandir in os.supports_fd
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _walk_local(root: Path, recursive: bool = True) -> ListedFiles:
    # Three columns, not an object per file: at 100,000 files a record each costs
    # half as much again as listing the folder and stat-ing every file. Each entry is
    # stat-ed as it is read and only its size and time kept: holding the entries, or
    # their stat results, until the folder is read costs a third more at 100,000.
    names: list[str] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    add_name, add_size, add_mtime = names.append, sizes.append, mtimes.append
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    # Folders are followed through links, each once: a link to a parent ends.
    seen: set[tuple[int, int]] = set()
    while stack:
        folder, prefix = stack.pop()
        fd = None
        try:
            if _BY_FD:
                fd = os.open(folder, os.O_RDONLY | _O_DIRECTORY)
                st = os.fstat(fd)
            else:
                st = os.stat(folder)
            walked = (st.st_dev, st.st_ino) in seen
            if not walked:
                seen.add((st.st_dev, st.st_ino))
                it = os.scandir(folder if fd is None else fd)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            raise SourceError(f"{folder}: cannot list the folder ({exc.strerror}).") from exc
        if walked:
            logger.debug("%s: already walked (a link to a folder seen before)", folder)
            if fd is not None:
                os.close(fd)
            continue
        try:
            with it:
                for entry in it:
                    name = entry.name
                    if name[0] == ".":
                        continue
                    try:
                        # The suffix first (is_tiff_name, with no lower-cased copy for
                        # the usual cases): a folder named like a TIFF file is caught
                        # by is_file (from d_type: no system call).
                        if (
                            name.endswith(_CASED_SUFFIXES) or is_tiff_name(name)
                        ) and entry.is_file():
                            st = entry.stat()
                            add_name(prefix + name)
                            add_size(st.st_size)
                            add_mtime(st.st_mtime_ns)
                        elif recursive and entry.is_dir():
                            stack.append((os.path.join(folder, name), f"{prefix}{name}/"))
                        elif entry.is_symlink() and not os.path.exists(
                            path := os.path.join(folder, name)
                        ):
                            logger.warning("%s: left out: a link to nothing", path)
                    except OSError as exc:
                        # A link loop, or a file removed while listing: not a file to read.
                        logger.warning(
                            "%s: left out (%s)", os.path.join(folder, name), exc.strerror
                        )
        finally:
            if fd is not None:
                os.close(fd)
    return ListedFiles(names, sizes, mtimes)


def _common_root(paths: Sequence[str]) -> str:
    parents = [os.path.dirname(p) for p in paths]
    return os.path.commonpath(parents) if parents else "."


def list_local(
    source: str | os.PathLike[str] | Sequence[Any], recursive: bool = True
) -> tuple[LocalSource, ListedFiles]:
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
            paths = [os.path.abspath(p) for p in paths if os.path.isfile(p) and is_tiff_name(p)]
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
            paths = [p for p in paths if is_tiff_name(p)]
            if not paths:
                raise SourceError("None of the files listed is a TIFF file (*.tif, *.tiff).")
        if absent:
            raise SourceError(
                f"{absent[0]}: "
                + ("not a regular file" if os.path.lexists(absent[0]) else "no such file")
                + (f" (and {len(absent) - 1} more)." if len(absent) > 1 else ".")
            )
    root = _common_root(paths)
    names, sizes, mtimes = [], [], []
    for p in paths:
        st = os.stat(p)
        names.append(PurePosixPath(Path(os.path.relpath(p, root))).as_posix())
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime_ns)
    return LocalSource(root), ListedFiles(names, sizes, mtimes)

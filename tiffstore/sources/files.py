"""A listing's files as columns: names, sizes, modification times and versions.

A listing of 100,000 files is mostly compared and reordered as a whole (sorted,
filtered by globs, matched against a manifest's files by a refresh), and a Python
object per file costs more than listing the folder does. :class:`ListedFiles` keeps
the columns and is still a sequence of :class:`~tiffstore.sources.base.SourceFile`:
a file read one at a time is made on demand, and all of them at most once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from tiffstore.sources.base import SourceFile

__all__ = ["NO_MTIME", "ListedFiles"]

#: In :attr:`ListedFiles.mtimes`: the listing gave no modification time for this file.
NO_MTIME = int(np.iinfo(np.int64).min)


class ListedFiles(Sequence[SourceFile]):
    """Files as a listing found them, held as columns.

    Parameters
    ----------
    names
        Each file's name relative to the source's root.
    sizes
        Each file's size in bytes.
    mtimes
        Each file's modification time in nanoseconds (:data:`NO_MTIME` where not
        known), or ``None`` when no file's is known (remote files): all unknown is
        read so.
    versions
        Each file's version (ETag or last-modified time; ``None`` where not known),
        or ``None`` when no file's is known (local files): all ``None`` is read so.

    Notes
    -----
    ``files[i]`` and iteration give :class:`~tiffstore.sources.base.SourceFile`
    records, made once and kept; :meth:`take` and :meth:`sorted` work on the columns.
    """

    __slots__ = ("_records", "mtimes", "names", "sizes", "versions")

    names: tuple[str, ...]
    sizes: np.ndarray
    mtimes: np.ndarray | None
    versions: tuple[str | None, ...] | None

    def __init__(
        self,
        names: Sequence[str],
        sizes: Sequence[int] | np.ndarray,
        mtimes: Sequence[int] | np.ndarray | None = None,
        versions: Sequence[str | None] | None = None,
    ) -> None:
        n = len(names)
        self.names = tuple(names)
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(n)
        self.mtimes = None if mtimes is None else np.asarray(mtimes, np.int64).reshape(n)
        if self.mtimes is not None and n and (self.mtimes == NO_MTIME).all():
            self.mtimes = None
        self.versions = None
        if versions is not None and any(v is not None for v in versions):
            self.versions = tuple(versions)
        if self.versions is not None and len(self.versions) != n:
            raise ValueError(f"ListedFiles: {n} names but {len(self.versions)} versions")
        self._records: list[SourceFile] | None = None

    @classmethod
    def of(cls, files: Iterable[SourceFile]) -> ListedFiles:
        """``files`` as columns (themselves when they already are)."""
        if isinstance(files, ListedFiles):
            return files
        files = list(files)
        mtimes = None
        if any(f.mtime_ns is not None for f in files):
            mtimes = [NO_MTIME if f.mtime_ns is None else f.mtime_ns for f in files]
        versions = None
        if any(f.version is not None for f in files):
            versions = [f.version for f in files]
        out = cls([f.name for f in files], [f.size for f in files], mtimes, versions)
        out._records = files
        return out

    def __len__(self) -> int:
        return len(self.names)

    def _all(self) -> list[SourceFile]:
        if self._records is None:
            n = len(self.names)
            mtimes: Iterable[int | None] = (
                [None] * n
                if self.mtimes is None
                else [None if t == NO_MTIME else t for t in self.mtimes.tolist()]
            )
            versions = [None] * n if self.versions is None else self.versions
            self._records = list(map(SourceFile, self.names, self.sizes.tolist(), mtimes, versions))
        return self._records

    @overload
    def __getitem__(self, i: int) -> SourceFile: ...

    @overload
    def __getitem__(self, i: slice) -> ListedFiles: ...

    def __getitem__(self, i: int | slice) -> SourceFile | ListedFiles:
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        if self._records is not None:
            return self._records[i]
        mtime = None if self.mtimes is None else int(self.mtimes[i])
        return SourceFile(
            self.names[i],
            int(self.sizes[i]),
            None if mtime == NO_MTIME else mtime,
            None if self.versions is None else self.versions[i],
        )

    def __iter__(self) -> Iterator[SourceFile]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to lists of records: unhashable

    def __repr__(self) -> str:
        shown = ", ".join(repr(n) for n in self.names[:3])
        more = f", ... ({len(self):,} files)" if len(self) > 3 else ""
        return f"ListedFiles([{shown}{more}])"

    def __getstate__(self) -> dict[str, Any]:
        # The records are made again where needed: the columns are the data.
        return {
            "names": self.names,
            "sizes": self.sizes,
            "mtimes": self.mtimes,
            "versions": self.versions,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self._records = None

    def take(self, indices: Sequence[int] | np.ndarray) -> ListedFiles:
        """The files at ``indices`` (numbers, or a mask of ``len(self)``), in that order."""
        index = np.asarray(indices)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.intp, copy=False).reshape(-1)
        picked = index.tolist()
        names = self.names
        out = ListedFiles.__new__(ListedFiles)
        out.names = tuple([names[i] for i in picked])
        out.sizes = self.sizes[index]
        out.mtimes = None if self.mtimes is None else self.mtimes[index]
        out.versions = None if self.versions is None else tuple([self.versions[i] for i in picked])
        out._records = None if self._records is None else [self._records[i] for i in picked]
        return out

    def sorted(self) -> ListedFiles:
        """The files sorted by name (themselves when they already are)."""
        names = self.names
        order = sorted(range(len(names)), key=names.__getitem__)
        if order == list(range(len(order))):
            return self
        return self.take(order)

    def mtimes_or_unknown(self) -> np.ndarray | None:
        """Each file's modification time in nanoseconds with ``-1`` where not known (as
        manifests keep them), or ``None`` when no file's is known."""
        if self.mtimes is None:
            return None
        return np.where(self.mtimes == NO_MTIME, -1, self.mtimes)

    def stamps(self) -> dict[str, tuple[int, int]]:
        """``name -> (size, mtime_ns)`` of the files whose modification time is known."""
        if self.mtimes is None:
            return {}
        known = np.flatnonzero(self.mtimes != NO_MTIME).tolist()
        names, sizes, mtimes = self.names, self.sizes.tolist(), self.mtimes.tolist()
        return {names[i]: (sizes[i], mtimes[i]) for i in known}

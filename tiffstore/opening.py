"""``tiffstore.open``: a folder, glob or list of TIFF files -> a :class:`TiffStore`.

The open is a short pipeline of named stages, each a function of this module that
hands the next one plain data::

    list_files    source -> the files (names, sizes, versions) and their reader
    read_names    names  -> axes, coordinates, template; strays left out
    take_checksums         (checksum=True) every byte read, every later read checked
    read_headers  headers -> the manifest (chunks, fill value, pixel size applied)
    make_store    manifest -> the zarr store

A reference file tiffstore wrote is its own stage, :func:`open_references`: its
saved manifest replaces the listing, the names and the headers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiffstore.detect import is_reference_file
from tiffstore.manifest.build import build_with_incomplete, with_fill_value, with_scale
from tiffstore.manifest.chunking import rechunk
from tiffstore.manifest.incomplete import incomplete_warning
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.saved import manifest_of_references
from tiffstore.names.grid import NameGrid, understand_names
from tiffstore.options import OpenOptions
from tiffstore.read.store import TiffStore
from tiffstore.sources.base import FileSource
from tiffstore.sources.checksums import ChecksummedSource, compute_checksums
from tiffstore.sources.files import NO_MTIME, ListedFiles
from tiffstore.sources.listing import resolve_source
from tiffstore.tiff.layout import FileLayout

__all__ = [
    "REFERENCE_FILE_REFUSES",
    "Listing",
    "OpenedFrom",
    "Progress",
    "list_files",
    "make_store",
    "open",
    "open_references",
    "read_headers",
    "read_names",
    "take_checksums",
]

logger = logging.getLogger(__name__)

#: ``progress(step, done, total)``: a step starts (``done`` 0) and files are done.
Progress = Callable[[str, int, int | None], None]

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

#: Options a reference file cannot apply, and what to do instead.
REFERENCE_FILE_REFUSES = {
    "pattern": "its file names were read when it was written; write it again from "
    "tiffstore.open(..., pattern=...)",
    "tiles": "its tiles were placed when it was written; write it again with tiles=",
    "recursive": "it lists its files itself",
    "include": "it lists its files itself; write it again from the files you want",
    "exclude": "it lists its files itself; write it again without those files",
    "validate": "its headers were all checked when it was written; `tiffstore check` "
    "compares the files with it now",
}


@dataclass(frozen=True)
class OpenedFrom:
    """How a store was opened: the source as given and the options, for a refresh.

    Plain, picklable data that the open hands the store (``store.opened_from``); the
    refresh stage (:mod:`tiffstore.refresh`) lists and reads the source again with it.
    """

    source: str | os.PathLike[str] | tuple[str | os.PathLike[str], ...]
    options: OpenOptions


@dataclass(frozen=True)
class Listing:
    """What the listing stage found: the files and the source that reads them.

    ``files`` may be given as any sequence of
    :class:`~tiffstore.sources.base.SourceFile`; it is kept as columns
    (:class:`~tiffstore.sources.files.ListedFiles`).
    """

    source: FileSource
    files: ListedFiles

    def __post_init__(self) -> None:
        if not isinstance(self.files, ListedFiles):
            object.__setattr__(self, "files", ListedFiles.of(self.files))

    @property
    def names(self) -> list[str]:
        return list(self.files.names)

    def without(self, names: Sequence[str]) -> Listing:
        """The listing less ``names``."""
        out = set(names)
        kept = [k for k, name in enumerate(self.files.names) if name not in out]
        return dataclasses.replace(self, files=self.files.take(kept))


def _step(progress: Progress | None, name: str, total: int | None, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(name, 0, total)


def list_files(
    source: Source, options: OpenOptions, progress: Progress | None = None, *, sort: bool = True
) -> Listing:
    """The listing stage: every TIFF file of ``source``, with sizes and versions, sorted
    by name (``sort=False``: in the order listed)."""
    _step(progress, "listing", None, f"listing {source}")
    reader, files = resolve_source(
        source,
        options.fsspec_options,
        recursive=options.recursive,
        include=options.include,
        exclude=options.exclude,
        remote=options.remote,
        sort=sort,
    )
    return Listing(reader, files)


def read_names(
    listing: Listing, options: OpenOptions, progress: Progress | None = None
) -> tuple[Listing, NameGrid]:
    """The naming stage: the listing less its stray files, and what the names say.

    Stray files (a name with a part the others lack, such as a thumbnail beside the
    acquisition) are left out before any header is read, with a warning, and stay
    named in the grid's ``left_out``.
    """
    n = len(listing.files)
    _step(progress, "names", n, f"reading {n:,} file names")
    grid = understand_names(listing.names, options.pattern)
    if grid.left_out:
        listing = listing.without(grid.left_out)
    return listing, grid.placed()


def take_checksums(listing: Listing, progress: Progress | None = None) -> Listing:
    """The checksum stage: every byte read now, and a source that checks every later read.

    Local files changed since they were listed are refused here (their listed size and
    time are expected), not checksummed as they are now. The headers are then read
    through the checksums: what is parsed is what the checksums describe.
    """
    files = listing.files
    n = len(files)
    logger.info("reading all %.3g GB of %d files for checksums", files.sizes.sum() / 1e9, n)
    if progress is not None:
        progress("checksums", 0, n)
    reader = listing.source
    reader.expect(files.stamps())
    checked = compute_checksums(
        reader,
        list(files.names),
        files.sizes.tolist(),
        progress=None if progress is None else lambda done: progress("checksums", done, n),
    )
    return dataclasses.replace(listing, source=checked)


def read_headers(
    listing: Listing,
    grid: NameGrid,
    options: OpenOptions,
    progress: Progress | None = None,
    known: Mapping[str, FileLayout] | None = None,
) -> tuple[Manifest, tuple[str, ...]]:
    """The header stage: the files' headers read into the manifest, the options applied.

    Files that look still being written (empty, a header not yet parseable, data
    ending before the header's last offset, a size changing while read, fewer pages
    than their siblings) are left out of the manifest with one warning, and their
    names returned: ``(manifest, incomplete)``; their grid cells read as the fill
    value. With ``validate=True`` such a file fails the open instead. ``known`` maps
    names to layouts of headers read before, which are not read again.
    """
    n = len(listing.files)
    what = "every header" if options.validate else "the headers"
    _step(progress, "headers", n, f"reading {what} of {n:,} files")
    manifest, incomplete = build_with_incomplete(
        listing.source,
        listing.files,
        grid,
        chunks=options.chunks,
        fill_value=options.fill_value,
        validate=options.validate,
        tiles=options.tiles,
        known=known,
        progress=None if progress is None else lambda done: progress("headers", done, n),
    )
    if incomplete:
        logger.warning(incomplete_warning(incomplete))
    if options.scale:
        manifest = with_scale(manifest, options.scale)
    return manifest, tuple(incomplete)


def make_store(
    manifest: Manifest,
    options: OpenOptions,
    left_out: Sequence[str] = (),
    incomplete: Sequence[str] = (),
    opened_from: OpenedFrom | None = None,
) -> TiffStore:
    """The last stage: the zarr store over ``manifest``, truncated files named in a warning.

    ``left_out`` (stray names) and ``incomplete`` (files still being written) are
    recorded on the store as ``store.left_out`` and ``store.incomplete``;
    ``opened_from`` as ``store.opened_from``, for ``store.refresh()``.
    """
    store = TiffStore(
        manifest,
        left_out=left_out,
        incomplete=incomplete,
        zarr_format=options.zarr_format,
        sharded=options.sharded,
        kvikio=options.kvikio,
        opened_from=opened_from,
    )
    truncated = store.truncated
    if truncated:
        them = "it" if len(truncated) == 1 else "them"
        logger.warning(
            "%d file%s truncated: the header points past the end of the file (still being "
            "written?): %s. Reading %s raises TiffReadError; replace or exclude %s.",
            len(truncated),
            " is" if len(truncated) == 1 else "s are",
            ", ".join(truncated[:5]) + (" ..." if len(truncated) > 5 else ""),
            them,
            them,
        )
    return store


def open_references(
    source: str | os.PathLike[str], options: OpenOptions, progress: Progress | None = None
) -> TiffStore:
    """The reference-file stage: a reference file tiffstore wrote -> its store.

    Its saved manifest says everything (no listing, no header read). Options that
    change how it is served apply (chunks, fill value, pixel size, Zarr format,
    checksums); those that change how files are found and named are refused.
    """
    options.refuse(REFERENCE_FILE_REFUSES, "a reference file", REFERENCE_FILE_REFUSES)
    manifest = manifest_of_references(source, options.fsspec_options, options.remote)
    if options.chunks is not None:
        manifest = rechunk(manifest, options.chunks)
    if options.fill_value is not None:
        manifest = with_fill_value(manifest, options.fill_value)
    if options.scale:
        manifest = with_scale(manifest, options.scale)
    if options.checksum and not isinstance(manifest.source, ChecksummedSource):
        # (Saved checksums are kept: they describe the files as referenced.)
        mtimes = manifest.file_mtimes
        listing = Listing(
            manifest.source,
            ListedFiles(
                manifest.files,
                manifest.file_sizes,
                None if mtimes is None else np.where(mtimes < 0, NO_MTIME, mtimes),
            ),
        )
        manifest = dataclasses.replace(manifest, source=take_checksums(listing, progress).source)
    return make_store(manifest, options)


def open(
    source: Source,
    options: OpenOptions | None = None,
    *,
    progress: Progress | None = None,
    **option_values: Any,
) -> TiffStore:
    """Open TIFF files as one virtual, read-only Zarr array.

    Parameters
    ----------
    source
        A folder (searched recursively for TIFF files), a glob, a list of files, or
        fsspec URLs of these; or a reference file tiffstore wrote (``*.json``,
        ``*.parq``), opened from its saved manifest with no listing or header reads.
    options
        An :class:`~tiffstore.options.OpenOptions`; the keyword options below change it.
    progress
        Called as ``progress(step, done, total)`` when each step of the open starts
        (``"listing"``, ``"names"``, ``"headers"``, and ``"checksums"`` with
        ``checksum=True``; ``done`` is 0, ``total`` the number of files, ``None`` while
        unknown) and as files are done, for a progress display. The library itself
        only logs.
    **option_values
        Any field of :class:`~tiffstore.options.OpenOptions`: ``pattern``, ``chunks``,
        ``fill_value``, ``storage_options``, ``validate``, ``tiles``, ``recursive``,
        ``include``, ``exclude``, ``scale``, ``zarr_format``, ``sharded``,
        ``checksum``, ``remote``, ``kvikio``.

    Notes
    -----
    Stray files, whose name has a part the others lack (``..._thumb.tif`` beside the
    acquisition), are left out with a warning and listed in ``store.left_out``.
    Files that look still being written (empty; a header not yet parseable; pixel
    data ending before the header's last offset; a size changing while the header is
    read; an ImageJ or tifffile file holding fewer pages than its siblings in fewer
    bytes) are left out with one warning naming them and listed in
    ``store.incomplete``; their grid cells read as the fill value, and none decides
    the array's shape or dtype. With ``validate=True`` such a file fails the open
    instead, and when every file looks so the open fails too. ``store.truncated``
    names files cut short since a reference file was written (empty for an open of
    TIFF files, which leaves such files out).
    With ``checksum=True`` every byte is read at the open and a CRC-32 of each block
    of 256 KiB is kept; every later read is checked against them, and bytes that
    differ raise :class:`~tiffstore.FileChangedError`. A reference file written from
    such a store keeps the checksums.

    Returns
    -------
    TiffStore
        A zarr-python 3 store; ``.shape``, ``.dims``, ``.coords`` say what was understood.

    Raises
    ------
    OptionError
        An option is not understood, or cannot apply to the source (``pattern=`` for a
        reference file); the message names it.

    Examples
    --------
    >>> import dask.array as da
    >>> store = tiffstore.open("raw/")  # doctest: +SKIP
    >>> da.from_zarr(store)  # doctest: +SKIP
    dask.array<from-zarr, shape=(3, 199, 201, 1024, 768), dtype=uint16, chunksize=(1, 1, 10, 1024, 768), ...>
    >>> tiffstore.open("raw/", chunks="page", exclude="MIPs/*")  # doctest: +SKIP
    """
    options = OpenOptions.of(options, **option_values)
    if isinstance(source, (str, os.PathLike)) and is_reference_file(source):
        return open_references(source, options, progress)
    listing = list_files(source, options, progress)
    listing, grid = read_names(listing, options, progress)
    if options.checksum:
        listing = take_checksums(listing, progress)
    manifest, incomplete = read_headers(listing, grid, options, progress)
    given = source if isinstance(source, (str, os.PathLike)) else tuple(source)
    opened = OpenedFrom(given, options)
    return make_store(manifest, options, grid.left_out, incomplete=incomplete, opened_from=opened)

"""``tiffstore.open``: from a folder, glob or list of TIFF files to a :class:`TiffStore`."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .build import ChunkSpec, build_manifest, rechunk
from .checksums import ChecksummedSource, compute_checksums
from .errors import OptionError
from .manifest import Manifest
from .naming import understand_names
from .saved import is_reference_file, manifest_of_references
from .scale import VoxelSize, unit_name
from .sources import FileSource, resolve_source
from .store import TiffStore

__all__ = ["open"]

logger = logging.getLogger(__name__)

#: ``scale=`` values: a size per dim (in the files' unit, else micrometres), or
#: ``(size, unit)``.
ScaleSpec = Mapping[str, float | tuple[float, str]]


def _with_scale(manifest: Manifest, scale: ScaleSpec) -> Manifest:
    """The manifest with its voxel size along ``z``/``y``/``x`` set from ``scale``."""
    known = manifest.layout.scale.as_dict() if manifest.layout.scale else {}
    sizes = dict(known)
    for dim, value in scale.items():
        if dim not in ("z", "y", "x") or dim not in manifest.file_dims:
            raise OptionError(
                f"scale={dict(scale)!r}: {dim!r} is not one of the files' own dims "
                f"{manifest.file_dims} among z, y, x."
            )
        size, unit = value if isinstance(value, tuple) else (value, None)
        unit = unit_name(unit) or unit or known.get(dim, (0.0, "micrometer"))[1]
        if not float(size) > 0:
            raise OptionError(f"scale={dict(scale)!r}: the size along {dim} must be positive.")
        sizes[dim] = (float(size), unit)
    voxel = VoxelSize(**sizes)
    layouts = tuple(dataclasses.replace(lay, scale=voxel) for lay in manifest.layouts)
    return dataclasses.replace(manifest, layouts=layouts)


def _checksummed(
    reader: FileSource,
    names: Sequence[str],
    sizes: Sequence[int],
    stamps: dict[str, tuple[int, int]],
    progress: Callable[[str, int, int | None], None] | None = None,
) -> ChecksummedSource:
    """``reader`` checking every read against checksums of the files taken now.

    ``stamps`` are the files' ``(size, mtime_ns)`` as listed: a local file changed
    since is refused here, not checksummed as it is now.
    """
    n = len(names)
    logger.info("reading all %.3g GB of %d files for checksums", sum(sizes) / 1e9, n)
    if progress is not None:
        progress("checksums", 0, n)
    expect = getattr(reader, "expect", None)
    if expect is not None:
        expect(stamps)
    return compute_checksums(
        reader,
        names,
        sizes,
        progress=None if progress is None else lambda done: progress("checksums", done, n),
    )


def open(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    pattern: str | None = None,
    chunks: ChunkSpec = None,
    fill_value: int | float | None = None,
    storage_options: dict[str, Any] | None = None,
    validate: bool = False,
    tiles: str = "keep",
    recursive: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    scale: ScaleSpec | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    zarr_format: int = 2,
    sharded: bool = True,
    checksum: bool = False,
) -> TiffStore:
    """Open TIFF files as one virtual, read-only Zarr array.

    Parameters
    ----------
    source
        A folder (searched recursively for ``*.tif``/``*.tiff``), a glob, a list of
        files, or fsspec URLs of these; or a reference file tiffstore wrote (``*.json``,
        ``*.parq``), opened from its saved manifest with no listing or header reads.
    pattern
        How to read the file names. ``None`` infers the axes from the names. A
        template names the parts: ``"{_}_ch{ch}_{_}_stack{stack}_{wavelength}nm_{_}.tif"``
        (``{_}`` ignores a part; ``{name:axis}`` and ``{name:coord}`` force a role).
        A regular expression with named groups works too.
    chunks
        ``None`` (default) groups whole pages into chunks of about 16 MiB;
        ``"page"`` gives one page (z-plane) per chunk; ``"file"`` one file per chunk;
        ``"native"`` one of the files' own strips or tiles (one page for uncompressed
        pages); an int that many pages; a tuple the chunk shape (``None``/-1 for a
        whole dim).
    fill_value
        Value served where the grid has no file (default 0).
    storage_options
        Passed to fsspec for URLs.
    validate
        Parse every file's header now, and check that each file holds all the pixel
        data its header points to (a truncated file is named at open). By default files
        of the same size whose header bytes match a parsed file are trusted, and each is
        checked on its first read.

    tiles
        ``"keep"`` (default) leaves tile fields of the names (``000x_001y``) as axes of
        their own, since tiles usually overlap and need registration. ``"stitch"``
        places a non-overlapping grid of tiles side by side along ``x``/``y``/``z``,
        and fails clearly when the positions do not tile.
    recursive
        Search a folder's subfolders too (default), or only the folder itself.
    include, exclude
        Globs (one or a list) on the names relative to the folder: keep only files
        matching ``include``, then drop those matching ``exclude`` (``"MIPs/*"``,
        ``"*_thumb.tif"``; a glob without ``/`` also matches the file name alone).
    scale
        What one pixel measures along the files' ``z``, ``y``, ``x``, overriding the
        files' metadata: ``{"z": 2.0, "y": 0.1, "x": 0.1}`` (in the files' unit, else
        micrometres) or ``{"z": (2.0, "micrometer")}``. See ``store.scale``.
    zarr_format
        2 (default): ``.zarray``/``.zgroup`` metadata, chunk keys ``c.s.z.y.x``. 3:
        ``zarr.json`` with ``dimension_names``, chunk keys ``c/c/s/z/y/x``, and the
        group view (for xarray) under ``group/``.
    sharded
        Format 3: when a chunk holds several whole pages (the default chunks do),
        serve it as a shard whose inner chunks are the pages, so that
        ``zarr.open_array(store)[c, s, z]`` reads one page while dask keeps the large
        chunks. ``False`` serves plain chunks. Ignored in format 2.
    checksum
        Read every byte of every file now and keep a CRC-32 of each block of 256 KiB
        (4 bytes per block), before the headers, which are then read through them;
        from then on every read is widened to whole blocks and checked, and bytes
        that differ raise :class:`~tiffstore.FileChangedError` naming the file and
        the bytes. This catches what the size-and-time check of local reads misses
        (a file rewritten at the same size within the file system's clock tick) and
        remote files replaced at the same size. It costs one read of all the data at
        the open, a read of at least one block per chunk, and the CRC of what is read
        (a few GB/s per core). A reference file written from such a store keeps the
        checksums: opening it checks reads the same way.
    progress
        Called as ``progress(step, done, total)`` when each step of the open starts
        (``"listing"``, ``"names"``, ``"headers"``, and ``"checksums"`` with
        ``checksum=True``; ``done`` is 0, ``total`` the number of files, ``None`` while
        unknown) and as files are done, for a progress display. The library itself
        only logs.

    Notes
    -----
    Stray files, whose name has a part the others lack (``..._thumb.tif`` beside the
    acquisition), are left out with a warning and listed in ``store.left_out``.
    Files whose header points past their end (truncated) are named in a warning and
    in ``store.truncated``; reading them raises :class:`~tiffstore.TiffReadError`.

    Returns
    -------
    TiffStore
        A zarr-python 3 store; ``.shape``, ``.dims``, ``.coords`` say what was understood.

    Examples
    --------
    >>> import dask.array as da
    >>> store = tiffstore.open("raw/")  # doctest: +SKIP
    >>> da.from_zarr(store)  # doctest: +SKIP
    dask.array<from-zarr, shape=(3, 199, 201, 1024, 768), dtype=uint16, chunksize=(1, 1, 10, 1024, 768), ...>
    """

    if is_reference_file(source):
        # A reference file tiffstore wrote: its manifest says everything, no listing.
        manifest = manifest_of_references(source, storage_options)
        if chunks is not None:
            manifest = rechunk(manifest, chunks)
        if checksum and not isinstance(manifest.source, ChecksummedSource):
            # (Saved checksums are kept: they describe the files as referenced.)
            checked = _checksummed(
                manifest.source,
                manifest.files,
                manifest.file_sizes.tolist(),
                manifest.file_stamps(),
                progress,
            )
            manifest = dataclasses.replace(manifest, source=checked)
        return TiffStore(manifest)

    def step(name: str, total: int | None, message: str) -> None:
        logger.info(message)
        if progress is not None:
            progress(name, 0, total)

    step("listing", None, f"listing {source}")
    reader, files = resolve_source(
        source, storage_options, recursive=recursive, include=include, exclude=exclude
    )
    step("names", len(files), f"reading {len(files):,} file names")
    left_out: tuple[str, ...] = ()
    if pattern is None:
        # Stray files are left out before their headers are read: a thumbnail of
        # another shape must not stop the open. (Cached: build_manifest's own call
        # on the kept names is free.)
        left_out = understand_names([f.name for f in files]).left_out
        if left_out:
            out = set(left_out)
            files = [f for f in files if f.name not in out]
    if checksum:
        # Every byte is read before the headers, and the headers through the checksums:
        # what is parsed is what the checksums describe, local or remote. (A naming
        # problem first: it needs no read.)
        understand_names([f.name for f in files], pattern)
        reader = _checksummed(
            reader,
            [f.name for f in files],
            [f.size for f in files],
            {f.name: (f.size, f.mtime_ns) for f in files if f.mtime_ns is not None},
            progress,
        )
    what = "every header" if validate else "the headers"
    step("headers", len(files), f"reading {what} of {len(files):,} files")
    manifest = build_manifest(
        reader,
        files,
        pattern=pattern,
        chunks=chunks,
        fill_value=fill_value,
        validate=validate,
        tiles=tiles,
        progress=None if progress is None else lambda done: progress("headers", done, len(files)),
    )
    if scale:
        manifest = _with_scale(manifest, scale)
    store = TiffStore(manifest, left_out=left_out, zarr_format=zarr_format, sharded=sharded)
    truncated = store.truncated
    if truncated:
        logger.warning(
            "%d file%s truncated: the header points past the end of the file (still being "
            "written?): %s. Reading %s raises TiffReadError; replace or exclude %s.",
            len(truncated),
            " is" if len(truncated) == 1 else "s are",
            ", ".join(truncated[:5]) + (" ..." if len(truncated) > 5 else ""),
            "it" if len(truncated) == 1 else "them",
            "it" if len(truncated) == 1 else "them",
        )
    return store

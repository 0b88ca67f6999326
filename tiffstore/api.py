"""``tiffstore.open``: from a folder, glob or list of TIFF files to a :class:`TiffStore`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .build import ChunkSpec, build_manifest
from .sources import resolve_source
from .store import TiffStore

__all__ = ["open"]


def open(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    pattern: str | None = None,
    chunks: ChunkSpec = None,
    fill_value: int | float | None = None,
    storage_options: dict[str, Any] | None = None,
    validate: bool = False,
    tiles: str = "keep",
) -> TiffStore:
    """Open TIFF files as one virtual, read-only Zarr array.

    Parameters
    ----------
    source
        A folder (searched recursively for ``*.tif``/``*.tiff``), a glob, a list of
        files, or fsspec URLs of these.
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
    reader, files = resolve_source(source, storage_options)
    manifest = build_manifest(
        reader,
        files,
        pattern=pattern,
        chunks=chunks,
        fill_value=fill_value,
        validate=validate,
        tiles=tiles,
    )
    return TiffStore(manifest)

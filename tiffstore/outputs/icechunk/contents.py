"""What a repository tiffstore writes holds, written through zarr onto a session's store.

One Zarr format 3 group at the root::

    zarr.json               the group; attributes["tiffstore"]: the marker, the array's
                            name, the URL prefix of the TIFFs, tiffstore's version
    image/                  the pixels: one virtual chunk reference per chunk (and
                            native chunks only for the few chunks no byte range is)
    c/, stack/, z/ ...      coordinates, as native chunks (values, labels, pixel positions)
    tiffstore/manifest      the saved manifest (``.npz`` bytes as a ``uint8`` array),
                            from which ``append`` learns what the repository holds

The same layout as reference files' group view, so ``xarray.open_zarr(session.store)``
shows the pixels with their coordinates; the saved manifest sits in a subgroup,
which xarray does not open as a variable.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr

from tiffstore._version import __version__
from tiffstore.errors import OutputError, ReferenceError
from tiffstore.manifest.saved import dump_manifest
from tiffstore.outputs.chunk_ranges import as_read_from
from tiffstore.outputs.icechunk.repository import MARKER, icechunk
from tiffstore.outputs.virtual_chunks import CoordinateValues, VirtualChunks
from tiffstore.read.assemble import ChunkReader

__all__ = [
    "MANIFEST_PATH",
    "MAX_NATIVE",
    "REFERENCE_BATCH",
    "check_native",
    "describe_array",
    "described_after",
    "read_saved_manifest",
    "root_attributes",
    "set_references",
    "write_array",
    "write_coordinates",
    "write_native_chunks",
    "write_saved_manifest",
]

logger = logging.getLogger(__name__)

#: Where the saved manifest is kept.
MANIFEST_PATH = "tiffstore/manifest"

#: Bytes of pixels a repository stores as native chunks, by default: the chunks no
#: byte range of a TIFF is (last strips stored short). Past it the writer refuses.
MAX_NATIVE = 2**20

#: References given to Icechunk at a time (bounded memory for millions of chunks).
REFERENCE_BATCH = 100_000


@contextlib.contextmanager
def _zlib_quiet() -> Iterator[None]:
    """zarr warns that ``numcodecs.zlib`` is not in the Zarr specification: the docs say
    so (it is the codec zarr-python decodes TIFF's Deflate with); not at every write."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
        yield


def check_native(vc: VirtualChunks, count: int, max_native: int) -> None:
    """Refuse when ``count`` native chunks hold more than ``max_native`` bytes of pixels."""
    nbytes = count * math.prod(vc.chunks) * vc.dtype.itemsize
    if nbytes > max_native:
        raise ReferenceError(
            f"{vc.manifest.source.url('')}: {count:,} chunks ({nbytes:,} bytes of pixels) are "
            "no byte range of a TIFF (last strips stored short, or strips never written), so "
            f"the repository would store their pixels, more than max_native={max_native:,} "
            "bytes. Raise max_native (--max-native), or write a real Zarr copy with "
            "`tiffstore materialize`."
        )
    if count:
        logger.warning(
            "%s: %d chunks are no byte range of a TIFF (last strips stored short); their "
            "pixels are stored in the repository as native chunks (%d bytes).",
            vc.manifest.source.url(""),
            count,
            nbytes,
        )


def describe_array(vc: VirtualChunks) -> str:
    """``image (c 3, stack 4, z 6, y 32, x 24) uint16``."""
    dims = ", ".join(f"{d} {n}" for d, n in zip(vc.dimension_names, vc.shape, strict=True))
    return f"{vc.name} ({dims}) {vc.dtype}"


def root_attributes(vc: VirtualChunks, url: str | None) -> dict[str, Any]:
    """The root group's attributes: the marker and what append needs to know."""
    return {
        MARKER: {
            "repository": 1,
            "version": __version__,
            "image": vc.name,
            "prefix": vc.prefix,
            "url": url,
            "manifest": MANIFEST_PATH,
        }
    }


def write_array(store: Any, vc: VirtualChunks, url: str | None) -> zarr.Array:
    """The root group and the pixels' array, replacing what was there: metadata only, and
    no attributes yet (:func:`described_after`)."""
    root = zarr.open_group(store, mode="w", zarr_format=3, attributes=root_attributes(vc, url))
    with _zlib_quiet():
        return root.create_array(
            vc.name,
            shape=vc.shape,
            chunks=vc.chunks,
            dtype=vc.dtype,
            fill_value=vc.manifest.fill_value,
            serializer=vc.codecs[0],
            compressors=list(vc.codecs[1:]) or None,
            dimension_names=vc.dimension_names,
        )


@contextlib.contextmanager
def described_after(array: zarr.Array, vc: VirtualChunks) -> Iterator[None]:
    """The array without attributes inside, with ``vc``'s after.

    Icechunk reads an array's metadata again for every reference it sets, and the
    description names every file: with it in place, 10,000 references took two
    minutes instead of a fifth of a second.
    """
    array.attrs.put({})
    yield
    # A copy: zarr keeps the dict it is given as the metadata's own.
    array.update_attributes(copy.deepcopy(vc.attributes))


def _coordinate(group: zarr.Group, c: CoordinateValues) -> None:
    values = c.values
    text = values.dtype.kind == "U"
    fill: Any = "" if text else (np.nan if values.dtype.kind == "f" else 0)
    arr = group.create_array(
        c.name,
        shape=values.shape,
        chunks=tuple(max(1, n) for n in values.shape),
        dtype=str if text else values.dtype,
        fill_value=fill,
        compressors=None,
        dimension_names=c.dims,
        attributes=dict(c.attributes),
        overwrite=True,
    )
    arr[...] = values


def write_coordinates(
    store: Any, vc: VirtualChunks, old: dict[str, CoordinateValues] | None = None
) -> list[str]:
    """Write the coordinate arrays (those that differ from ``old``); their names."""
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    written = []
    for c in vc.coordinates:
        before = (old or {}).get(c.name)
        if (
            before is not None
            and before.dims == c.dims
            and before.values.shape == c.values.shape
            and np.array_equal(before.values, c.values)
            and before.attributes == c.attributes
        ):
            continue
        _coordinate(group, c)
        written.append(c.name)
    return written


def read_coordinates(store: Any, vc: VirtualChunks) -> dict[str, CoordinateValues]:
    """The coordinate arrays a repository holds now, by name (those ``vc`` has too)."""
    group = zarr.open_group(store, mode="r", zarr_format=3)
    out = {}
    for c in vc.coordinates:
        if c.name in group:
            arr = group[c.name]
            assert isinstance(arr, zarr.Array)
            values = np.asarray(arr[...])
            if values.dtype.kind in "OT":  # variable-length strings
                values = values.astype(str)
            dims = tuple(arr.metadata.dimension_names or ())  # type: ignore[union-attr]
            out[c.name] = CoordinateValues(c.name, values, dims, dict(arr.attrs))
    return out


def _checksums(vc: VirtualChunks) -> list[tuple[str | None, datetime.datetime | None]]:
    """Per file: Icechunk's ``(etag_checksum, last_updated_at_checksum)``."""
    out: list[tuple[str | None, datetime.datetime | None]] = []
    for check in vc.file_checksums:
        if isinstance(check, str):
            out.append((check, None))
        elif isinstance(check, int):
            out.append((None, datetime.datetime.fromtimestamp(check, datetime.UTC)))
        else:
            out.append((None, None))
    return out


def set_references(
    store: Any, vc: VirtualChunks, rows: np.ndarray | None = None, batch: int = REFERENCE_BATCH
) -> int:
    """Set the virtual chunk references (``rows``, numbers of them, or all); how many.

    Each reference carries its file's ETag or modification time, so a reader gets an
    error, never other bytes, once a TIFF is replaced.

    Raises
    ------
    OutputError
        When a location is outside the repository's virtual chunk containers.
    """
    take = np.arange(len(vc)) if rows is None else np.asarray(rows, np.int64)
    checks = _checksums(vc)
    urls = vc.urls
    for start in range(0, len(take), batch):
        part = take[start : start + batch]
        specs = [
            icechunk.VirtualChunkSpec(index, urls[f], offset, length, checks[f][0], checks[f][1])
            for index, f, offset, length in zip(
                vc.index[part].tolist(),
                vc.file[part].tolist(),
                vc.offset[part].tolist(),
                vc.length[part].tolist(),
                strict=True,
            )
        ]
        failed = store.set_virtual_refs(vc.name, specs, validate_containers=True)
        if failed:
            where = vc.index[part].tolist().index(list(failed[0]))
            raise OutputError(
                f"{urls[int(vc.file[part][where])]}: no virtual chunk container of the "
                f"repository holds this location ({len(failed):,} references). Pass url= "
                "to read the files from where the repository's containers point."
            )
    return len(take)


def write_native_chunks(
    store: Any, vc: VirtualChunks, rows: np.ndarray | None = None, reader: ChunkReader | None = None
) -> int:
    """Write the pixels of the native chunks (``rows``, numbers into
    :attr:`VirtualChunks.native`, or all) into the array, encoded by its codecs; how many bytes of pixels."""
    indices = vc.native if rows is None else vc.native[rows]
    if not len(indices):
        return 0
    arr = zarr.open_array(store, path=vc.name, mode="r+", zarr_format=3)
    reader = reader or ChunkReader(vc.manifest)
    with _zlib_quiet():
        for index in indices.tolist():
            chunk = vc.native_chunk(tuple(index), reader)
            starts = [i * c for i, c in zip(index, vc.chunks, strict=True)]
            stops = [min(s + c, n) for s, c, n in zip(starts, vc.chunks, vc.shape, strict=True)]
            region = tuple(slice(s, e) for s, e in zip(starts, stops, strict=True))
            arr[region] = chunk[tuple(slice(0, e - s) for s, e in zip(starts, stops, strict=True))]
    return len(indices) * math.prod(vc.chunks) * vc.dtype.itemsize


def write_saved_manifest(store: Any, vc: VirtualChunks, url: str | None) -> None:
    """Keep the manifest (as read from ``url`` when given) for the next append."""
    data = np.frombuffer(dump_manifest(as_read_from(vc.manifest, url)), np.uint8)
    group = zarr.open_group(store, path=MANIFEST_PATH.rsplit("/", 1)[0], mode="a", zarr_format=3)
    arr = group.create_array(
        MANIFEST_PATH.rsplit("/", 1)[1],
        shape=data.shape,
        chunks=(max(1, min(len(data), 2**24)),),
        dtype=np.uint8,
        fill_value=0,
        compressors=None,  # an .npz is compressed already
        attributes={"format": "tiffstore manifest (.npz)", "version": __version__},
        overwrite=True,
    )
    arr[...] = data


def read_saved_manifest(store: Any) -> bytes | None:
    """The saved manifest's bytes, or ``None`` when the repository holds none."""
    try:
        arr = zarr.open_array(store, path=MANIFEST_PATH, mode="r", zarr_format=3)
    except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError):
        return None
    return bytes(np.asarray(arr[...], np.uint8).tobytes())

"""A read-only ``zarr.abc.store.Store`` over a manifest, and its ``Mapping`` view.

The store holds the manifest (plain data) and makes its reader lazily, so it
pickles to the size of the manifest and works in dask.distributed worker
processes. Metadata is Zarr format 2 (``.zarray``, ``.zattrs``); chunk keys are
``"i.j.k..."`` and are served by reading the right bytes of the right TIFF.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from .assemble import ChunkReader
from .errors import ReadOnlyError
from .manifest import Manifest

__all__ = ["TiffMapping", "TiffStore"]

_CHUNK_KEY = re.compile(r"\d{1,12}(?:\.\d{1,12})*")
_METADATA_KEYS = (".zarray", ".zattrs")


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=True).encode()


def _slice_range(data: bytes | memoryview, byte_range: ByteRequest | None) -> bytes | memoryview:
    if byte_range is None:
        return data
    n = len(data)
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[max(n - byte_range.suffix, 0) :]
    raise TypeError(f"Unexpected byte_range, got {byte_range!r}")


class _Keys:
    """Key <-> chunk index for one manifest, and the metadata documents."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._metadata: dict[str, bytes] = {}

    def metadata(self, key: str) -> bytes:
        if key not in self._metadata:
            doc = self.manifest.zarray() if key == ".zarray" else self.manifest.zattrs()
            self._metadata[key] = _json_bytes(doc)
        return self._metadata[key]

    def chunk_index(self, key: str) -> tuple[int, ...] | None:
        """The chunk index a key names, or ``None`` for anything that is not a chunk key."""
        if not _CHUNK_KEY.fullmatch(key):
            return None
        index = tuple(int(p) for p in key.split("."))
        grid = self.manifest.chunk_grid
        if len(index) != len(grid) or any(i >= g for i, g in zip(index, grid, strict=True)):
            return None
        return index

    def has_data(self, index: tuple[int, ...]) -> bool:
        """Whether any file contributes to the chunk (missing files' chunks are absent)."""
        m = self.manifest
        nn = m.n_name_dims
        cells = tuple(
            slice(i * c, (i + 1) * c) for i, c in zip(index[:nn], m.chunks[:nn], strict=True)
        )
        return bool((m.file_index[cells] >= 0).any()) if nn else True

    def chunk_keys(self) -> Iterator[str]:
        for index in np.ndindex(*self.manifest.chunk_grid):
            if self.has_data(index):
                yield ".".join(map(str, index))

    def chunk_nbytes(self) -> int:
        m = self.manifest
        return int(np.prod(m.chunks)) * m.dtype.itemsize


class TiffStore(Store):
    """A read-only Zarr store whose chunks are read from TIFF files on demand.

    Make one with :func:`tiffstore.open`. The array sits at the root of the store,
    in Zarr format 2 with no compressor, so ``zarr.open_array(store, mode="r")``
    and ``dask.array.from_zarr(store)`` see the stitched array.

    Parameters
    ----------
    manifest
        The virtual array.
    read_only
        Must be ``True``: the store never writes.

    Examples
    --------
    >>> store = tiffstore.open("raw/")  # doctest: +SKIP
    >>> store.dims, store.shape  # doctest: +SKIP
    (('ch', 'stack', 'z', 'y', 'x'), (3, 199, 201, 1024, 768))
    >>> arr = dask.array.from_zarr(store)  # doctest: +SKIP
    """

    supports_writes = False
    supports_deletes = False
    supports_listing = True

    def __init__(self, manifest: Manifest, *, read_only: bool = True) -> None:
        if not read_only:
            raise ReadOnlyError(
                "TiffStore is read-only: it serves TIFF files as Zarr and never writes them. "
                "Use tiffstore's materialize to write a real Zarr copy."
            )
        super().__init__(read_only=True)
        self.manifest = manifest
        self._keys = _Keys(manifest)
        self._reader: ChunkReader | None = None

    # -- the array --------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self.manifest.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.manifest.dtype

    @property
    def dims(self) -> tuple[str, ...]:
        return self.manifest.dims

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.manifest.chunks

    @property
    def coords(self) -> dict[str, dict[str, Any]]:
        """Coordinates: name -> ``{"dims": [...], "values": [...], "units": ...}``."""
        coords: dict[str, dict[str, Any]] = self.manifest.zattrs()["tiffstore"]["coords"]
        return coords

    @property
    def attrs(self) -> dict[str, Any]:
        """The array's attributes (the ``.zattrs`` document)."""
        attrs: dict[str, Any] = json.loads(self._keys.metadata(".zattrs"))
        return attrs

    @property
    def mapping(self) -> TiffMapping:
        """A read-only ``Mapping[str, bytes]`` over the same keys."""
        return TiffMapping(self)

    @property
    def reader(self) -> ChunkReader:
        if self._reader is None:
            self._reader = ChunkReader(self.manifest)
        return self._reader

    # -- identity ---------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TiffStore) and self.manifest == other.manifest

    def __hash__(self) -> int:
        return hash(self.manifest)

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"<TiffStore {m.source.url('')} {len(m.files)} files -> "
            f"{dict(zip(m.dims, m.shape, strict=True))} {m.dtype.name}, chunks {m.chunks}>"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"manifest": self.manifest}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["manifest"])  # type: ignore[misc]

    def with_read_only(self, read_only: bool = False) -> TiffStore:
        """A new store over the same files; ``read_only=False`` raises :class:`ReadOnlyError`."""
        return TiffStore(self.manifest, read_only=read_only)

    # -- reading ----------------------------------------------------------

    def get_bytes_sync(self, key: str, byte_range: ByteRequest | None = None) -> bytes | None:
        """The value of ``key`` as bytes (``None`` if absent), without an event loop."""
        data = self._get_array(key, byte_range)
        return None if data is None else bytes(data)

    def _get_array(self, key: str, byte_range: ByteRequest | None) -> np.ndarray | None:
        if key in _METADATA_KEYS:
            raw = np.frombuffer(self._keys.metadata(key), dtype=np.uint8)
            return np.asarray(_slice_range(raw.data, byte_range))
        index = self._keys.chunk_index(key)
        if index is None:
            return None
        chunk = self.reader.read_chunk(index)
        if chunk is None:
            return None
        flat = chunk.reshape(-1).view(np.uint8)
        if byte_range is None:
            return flat
        return np.asarray(_slice_range(flat.data, byte_range))

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Synchronous :meth:`get`."""
        prototype = prototype or default_buffer_prototype()
        data = self._get_array(key, byte_range)
        return None if data is None else prototype.buffer.from_array_like(data)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        prototype = prototype or default_buffer_prototype()
        if key in _METADATA_KEYS:
            return self.get_sync(key, prototype=prototype, byte_range=byte_range)
        data = await asyncio.to_thread(self._get_array, key, byte_range)
        return None if data is None else prototype.buffer.from_array_like(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # docstring inherited
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        # docstring inherited
        if key in _METADATA_KEYS:
            return True
        index = self._keys.chunk_index(key)
        return index is not None and self._keys.has_data(index)

    async def getsize(self, key: str) -> int:
        # docstring inherited
        if key in _METADATA_KEYS:
            return len(self._keys.metadata(key))
        if await self.exists(key):
            return self._keys.chunk_nbytes()
        raise FileNotFoundError(key)

    # -- writing: refused -------------------------------------------------

    def _refuse(self, what: str) -> ReadOnlyError:
        return ReadOnlyError(
            f"Cannot {what}: TiffStore is read-only and never changes the TIFF files. "
            "To get a writable copy, materialize the array into a real Zarr store."
        )

    async def set(self, key: str, value: Buffer) -> None:
        raise self._refuse(f"set {key!r}")

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        raise self._refuse(f"set {key!r}")

    async def delete(self, key: str) -> None:
        raise self._refuse(f"delete {key!r}")

    async def delete_dir(self, prefix: str) -> None:
        raise self._refuse(f"delete {prefix!r}")

    async def clear(self) -> None:
        raise self._refuse("clear the store")

    def _check_writable(self) -> None:
        raise self._refuse("write")

    # -- listing ----------------------------------------------------------

    def keys(self) -> Iterator[str]:
        """Every key: the metadata documents, then each chunk with data."""
        yield from _METADATA_KEYS
        yield from self._keys.chunk_keys()

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        for key in self.keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for key in self.keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        # Every key lives at the root: there are no sub-directories.
        if prefix.strip("/") == "":
            for key in self.keys():
                yield key


class TiffMapping(Mapping[str, bytes]):
    """A read-only ``Mapping[str, bytes]`` view of a :class:`TiffStore`.

    For zarr-v2-style and fsspec consumers: ``mapping[".zarray"]`` is the JSON
    document, ``mapping["0.1.0.0.0"]`` the raw bytes of a chunk. Missing files'
    chunks are absent (``KeyError``), so readers use the fill value.
    """

    def __init__(self, store: TiffStore) -> None:
        self.store = store

    def __getitem__(self, key: str) -> bytes:
        data = self.store.get_bytes_sync(key)
        if data is None:
            raise KeyError(key)
        return data

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key in _METADATA_KEYS:
            return True
        index = self.store._keys.chunk_index(key)
        return index is not None and self.store._keys.has_data(index)

    def __iter__(self) -> Iterator[str]:
        return self.store.keys()

    def __len__(self) -> int:
        return len(_METADATA_KEYS) + sum(1 for _ in self.store._keys.chunk_keys())

    def __repr__(self) -> str:
        return f"<TiffMapping of {self.store!r}>"

"""A read-only ``zarr.abc.store.Store`` over a manifest, and its ``Mapping`` view.

The store holds the manifest (plain data) and makes its reader lazily, so it
pickles to the size of the manifest and works in dask.distributed worker
processes. Metadata is Zarr format 2 (``.zarray``, ``.zattrs``); chunk keys are
``"i.j.k..."`` and are served by reading the right bytes of the right TIFF.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from .documents import Documents
from .errors import ReadOnlyError
from .keys import KeySpace
from .manifest import Manifest

__all__ = ["TiffMapping", "TiffStore"]


def _byte_span(byte_range: ByteRequest, n: int) -> tuple[int, int]:
    """``(start, stop)`` of a byte request on a value of ``n`` bytes."""
    if isinstance(byte_range, RangeByteRequest):
        return min(byte_range.start, n), min(max(byte_range.end, byte_range.start), n)
    if isinstance(byte_range, OffsetByteRequest):
        return min(byte_range.offset, n), n
    if isinstance(byte_range, SuffixByteRequest):
        return max(n - byte_range.suffix, 0), n
    raise TypeError(f"Unexpected byte_range, got {byte_range!r}")


def _slice_range(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    start, stop = _byte_span(byte_range, len(data))
    return data[start:stop]


#: Threads reading chunks of remote sources (requests wait on the network, not the CPU).
REMOTE_READ_THREADS = 32
_remote_executor: tuple[int, ThreadPoolExecutor] | None = None


def _remote_pool() -> ThreadPoolExecutor:
    """The process's pool for remote chunk reads (a new one after a fork)."""
    global _remote_executor
    if _remote_executor is None or _remote_executor[0] != os.getpid():
        pool = ThreadPoolExecutor(REMOTE_READ_THREADS, thread_name_prefix="tiffstore-remote")
        _remote_executor = (os.getpid(), pool)
    return _remote_executor[1]


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

    #: Chunks up to this size are read in zarr's event loop rather than in a worker
    #: thread: below it the thread hop costs more than the read (one 512 x 512
    #: uint16 plane reads in ~40 us from the page cache; the hop adds ~100 us).
    inline_read_bytes = 1 << 20

    def __init__(
        self, manifest: Manifest, *, read_only: bool = True, left_out: Sequence[str] = ()
    ) -> None:
        if not read_only:
            raise ReadOnlyError(
                "TiffStore is read-only: it serves TIFF files as Zarr and never writes them. "
                "To get a writable copy, write the array to a real Zarr store with "
                "`tiffstore materialize SOURCE OUT`."
            )
        super().__init__(read_only=True)
        self.manifest = manifest
        #: Stray files of the source that were not placed on the grid (see
        #: :func:`tiffstore.naming.find_strays`).
        self.left_out: tuple[str, ...] = tuple(left_out)
        self.documents = Documents(manifest)
        self.keys = KeySpace(manifest, self.documents)
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
        coords: dict[str, dict[str, Any]] = self.attrs["tiffstore"]["coords"]
        return coords

    @property
    def truncated(self) -> list[str]:
        """Files whose header points past their end (cut short, or still being written).

        Costs no I/O: the listing gave each file's size, the header its data's end.
        """
        m = self.manifest
        return [m.files[i] for i in m.truncated_files()]

    @property
    def scale(self) -> dict[str, tuple[float, str]]:
        """What one pixel measures along the files' ``z``/``y``/``x``: dim -> (size, units).

        From the files' metadata (OME ``PhysicalSize*``, ImageJ ``spacing``/``unit``,
        resolution tags) or ``tiffstore.open(..., scale=...)``; empty when unknown.
        """
        return self.documents.scale

    @property
    def attrs(self) -> dict[str, Any]:
        """The array's attributes (the ``.zattrs`` document)."""
        return self.documents.attributes

    @property
    def mapping(self) -> TiffMapping:
        """A read-only ``Mapping[str, bytes]`` over the same keys."""
        return TiffMapping(self)

    def to_dask(self) -> Any:
        """A dask array reading chunks straight from the TIFFs (see :func:`tiffstore.dask_array.to_dask`).

        Same values and chunks as ``dask.array.from_zarr(store)``, one copy less per chunk.
        """
        from .dask_array import to_dask

        return to_dask(self)

    def write_references(self, target: str, **options: Any) -> str:
        """Write fsspec reference files for this array (see :func:`tiffstore.references.write_references`).

        Examples
        --------
        >>> store.write_references("raw.json", url="s3://bucket/raw/")  # doctest: +SKIP
        'raw.json'
        """
        from .references import write_references

        return write_references(self, target, **options)

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
        return {"manifest": self.manifest, "left_out": self.left_out}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["manifest"], left_out=state.get("left_out", ()))  # type: ignore[misc]

    def with_read_only(self, read_only: bool = False) -> TiffStore:
        """A new store over the same files; ``read_only=False`` raises :class:`ReadOnlyError`."""
        return TiffStore(self.manifest, read_only=read_only, left_out=self.left_out)

    # -- reading ----------------------------------------------------------

    def get_bytes_sync(self, key: str, byte_range: ByteRequest | None = None) -> bytes | None:
        """The value of ``key`` as bytes (``None`` if absent), without an event loop."""
        data = self._get_value(key, byte_range)
        return data if data is None or isinstance(data, bytes) else bytes(data)

    def _get_value(self, key: str, byte_range: ByteRequest | None) -> bytes | memoryview | None:
        raw = self._document(key)
        if raw is not None:
            return _slice_range(raw, byte_range)
        chunk_key = self.keys.chunk_key(key)
        if chunk_key is None:
            return None
        nbytes = self.manifest.chunk_nbytes
        part = None if byte_range is None else _byte_span(byte_range, nbytes)
        data = self.reader.read_chunk_bytes(chunk_key.index, part)
        if data is None and chunk_key.grouped:
            # The group view has no fill value: serve the empty cell's pixels.
            m = self.manifest
            full = np.full(m.chunks, m.fill_value, dtype=m.dtype).reshape(-1).view(np.uint8).data
            data = full if part is None else full[part[0] : part[1]]
        return data

    def _document(self, key: str) -> bytes | None:
        docs = self.documents
        return docs.documents.get(key) or docs.coordinate_chunks.get(key)

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Synchronous :meth:`get`."""
        prototype = prototype or default_buffer_prototype()
        data = self._get_value(key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if key in self.documents.documents or (
            self.manifest.chunk_nbytes <= self.inline_read_bytes and not self.manifest.source.remote
        ):
            # Metadata, or a local read that costs less than the hop to a worker thread.
            return self.get_sync(key, prototype=prototype, byte_range=byte_range)
        prototype = prototype or default_buffer_prototype()
        if self.manifest.source.remote:
            # Never wait on the network in zarr's event loop: it would stall every
            # other read. Many chunks are in flight at once, as many as zarr's
            # ``async.concurrency`` lets through, up to this pool's size.
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(_remote_pool(), self._get_value, key, byte_range)
        else:
            data = await asyncio.to_thread(self._get_value, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # docstring inherited
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        # docstring inherited
        return self.keys.exists(key)

    async def getsize(self, key: str) -> int:
        # docstring inherited
        raw = self._document(key)
        if raw is not None:
            return len(raw)
        if self.keys.exists(key):
            return self.manifest.chunk_nbytes
        raise FileNotFoundError(key)

    # -- writing: refused -------------------------------------------------

    def _refuse(self, what: str) -> ReadOnlyError:
        return ReadOnlyError(
            f"Cannot {what}: TiffStore is read-only and never changes the TIFF files. "
            "To get a writable copy, write the array to a real Zarr store with "
            "`tiffstore materialize SOURCE OUT`."
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

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        for key in self.keys.all_keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for key in self.keys.all_keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        prefix = prefix.strip("/")
        if not prefix:
            seen = set()
            for key in self.keys.all_keys():
                head = key.split("/", 1)[0]
                if head not in seen:
                    seen.add(head)
                    yield head
            return
        start = prefix + "/"
        for key in self.keys.all_keys():
            if key.startswith(start):
                rest = key[len(start) :]
                if "/" not in rest:
                    yield rest


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
        return isinstance(key, str) and self.store.keys.exists(key)

    def __setitem__(self, key: str, value: bytes) -> None:
        raise self.store._refuse(f"set {key[:64]!r}")

    def __delitem__(self, key: str) -> None:
        raise self.store._refuse(f"delete {key[:64]!r}")

    def __iter__(self) -> Iterator[str]:
        return self.store.keys.all_keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.store.keys.all_keys())

    def __repr__(self) -> str:
        return f"<TiffMapping of {self.store!r}>"

"""A read-only ``zarr.abc.store.Store`` over a manifest, and its ``Mapping`` view.

The store holds the manifest (plain data) and makes its reader lazily, so it
pickles to the size of the manifest and works in dask.distributed worker
processes. Metadata is Zarr format 2 (``.zarray``, ``.zattrs``; chunk keys
``"i.j.k..."``) or, on request, format 3 (``zarr.json``; chunk keys ``"c/i/j/k..."``,
each chunk a shard of pages when that helps). Chunks are served by reading the
right bytes of the right TIFF.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.buffer import default_buffer_prototype

from tiffstore.errors import ReadOnlyError
from tiffstore.manifest.documents import Documents, ShardLayout
from tiffstore.manifest.growth import Growth
from tiffstore.manifest.model import Manifest
from tiffstore.read.assemble import ChunkReader
from tiffstore.read.dask_array import to_dask
from tiffstore.read.gpu import Staging, read_chunk_staged, staging_for
from tiffstore.read.keys import ChunkKey, KeySpace
from tiffstore.read.pools import process_pool
from tiffstore.read.shards import ShardReader

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


def _to_buffer(
    data: bytes | memoryview, prototype: BufferPrototype, staging: Staging | None = None
) -> Buffer:
    """Host bytes as a ``Buffer`` of ``prototype`` (copied once to the device for a device one).

    Every value the store serves is built here, or by :meth:`TiffStore._get_staged`
    for chunks read straight into a device prototype's staging buffers.
    """
    if staging is None:
        return prototype.buffer.from_bytes(data)
    return prototype.buffer.from_array_like(staging.to_device(np.frombuffer(data, np.uint8)))


class TiffStore(Store):
    """A read-only Zarr store whose chunks are read from TIFF files on demand.

    Make one with :func:`tiffstore.open`. The array sits at the root of the store,
    in Zarr format 2 (or 3) with no compressor, so ``zarr.open_array(store, mode="r")``
    and ``dask.array.from_zarr(store)`` see the stitched array.

    Parameters
    ----------
    manifest
        The virtual array.
    read_only
        Must be ``True``: the store never writes.
    left_out
        Stray files of the source that were not placed on the grid.
    incomplete
        Files of the source left out because they look still being written; their
        grid cells read as the fill value.
    zarr_format
        2 (default) or 3. The format is the store's, not the manifest's: the same
        manifest serves both.
    sharded
        Format 3 only: serve each chunk as a shard whose inner chunks are pages when a
        chunk holds several whole pages (the default chunks do), so a reader of one
        plane reads one page while dask still sees the large chunks. ``False`` serves
        plain chunks.
    kvikio
        Reads into GPU memory: ``None`` (default) reads uncompressed chunks of local
        files with KvikIO when it is installed, ``False`` never, ``True`` always (a
        :class:`~tiffstore.errors.GpuError` where it is missing).
    opened_from
        How the store was opened (a picklable record the open gives it), for
        :meth:`refresh`; ``None`` for a store from a reference file or a manifest.

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
        self,
        manifest: Manifest,
        *,
        read_only: bool = True,
        left_out: Sequence[str] = (),
        incomplete: Sequence[str] = (),
        zarr_format: int = 2,
        sharded: bool = True,
        kvikio: bool | None = None,
        opened_from: Any = None,
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
        #: :func:`tiffstore.names.strays.find_strays`).
        self.left_out: tuple[str, ...] = tuple(left_out)
        #: Files left out at the open because they look still being written (empty,
        #: header or data cut short, size changing); their cells read as the fill value.
        self.incomplete: tuple[str, ...] = tuple(incomplete)
        #: Whether reads into GPU memory use KvikIO (see the ``kvikio`` parameter).
        self.kvikio = kvikio
        self.opened_from = opened_from
        #: What grew since the store this one refreshed (set by :meth:`refresh`).
        self.growth: Growth | None = None
        self.documents = Documents(manifest, zarr_format, sharded)
        self.keys = KeySpace(manifest, self.documents)
        self._sharded = sharded
        self._reader: ChunkReader | None = None
        self._shard_reader: ShardReader | None = None

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
    def zarr_format(self) -> int:
        """The Zarr format of the metadata: 2 or 3."""
        return self.documents.zarr_format

    @property
    def shards(self) -> ShardLayout | None:
        """How each chunk splits into pages as a format 3 shard; ``None`` when not sharded."""
        return self.documents.shards

    @property
    def coords(self) -> dict[str, dict[str, Any]]:
        """Coordinates: name -> ``{"dims": [...], "values": [...], "units": ...}``."""
        coords: dict[str, dict[str, Any]] = self.attrs["tiffstore"]["coords"]
        return coords

    @property
    def truncated(self) -> list[str]:
        """Files whose header points past their end (cut short after the open's listing).

        Costs no I/O: the listing gave each file's size, the header its data's end.
        An open from TIFF files leaves such files out (see :attr:`incomplete`), so this
        is empty for those stores; a store from a reference file names here files cut
        short since the reference was written.
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

    def to_dask(self, name: str | None = None, **options: Any) -> Any:
        """A dask array reading chunks straight from the TIFFs (see
        :func:`tiffstore.read.dask_array.to_dask`).

        Same values and chunks as ``dask.array.from_zarr(store)``, each chunk read on the
        thread that uses it.
        ``gpu=True`` (or ``meta=`` a CuPy array) gives CuPy chunks in GPU memory.
        """
        return to_dask(self, name, **options)

    def to_icechunk(self, repo: str, **options: Any) -> str:
        """Commit the array to an Icechunk repository as virtual chunk references; the
        snapshot id (:func:`tiffstore.outputs.icechunk.write.to_icechunk`)."""
        # A stage above: imported here, as xarray's Dataset.to_zarr imports its backend.
        from tiffstore.outputs.icechunk.write import to_icechunk

        return to_icechunk(self, repo, **options)

    @property
    def reader(self) -> ChunkReader:
        """Reads the manifest's chunks (made on first use, in each process)."""
        if self._reader is None:
            self._reader = ChunkReader(self.manifest)
        return self._reader

    @property
    def shard_reader(self) -> ShardReader | None:
        """Reads the format 3 shards; ``None`` when the store's chunks are not sharded."""
        if self._shard_reader is None and self.shards is not None:
            self._shard_reader = ShardReader(self.shards, self.reader)
        return self._shard_reader

    # -- identity ---------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TiffStore)
            and self.manifest == other.manifest
            and self.zarr_format == other.zarr_format
            and self.shards == other.shards
        )

    def __hash__(self) -> int:
        return hash((self.manifest, self.zarr_format, self.shards))

    def __repr__(self) -> str:
        m = self.manifest
        fmt = (
            "" if self.zarr_format == 2 else f", zarr format 3{', sharded' if self.shards else ''}"
        )
        return (
            f"<TiffStore {m.source.url('')} {len(m.files)} files -> "
            f"{dict(zip(m.dims, m.shape, strict=True))} {m.dtype.name}, chunks {m.chunks}{fmt}>"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "left_out": self.left_out,
            "incomplete": self.incomplete,
            "zarr_format": self.zarr_format,
            "sharded": self._sharded,
            "kvikio": self.kvikio,
            "opened_from": self.opened_from,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["manifest"],
            left_out=state.get("left_out", ()),
            incomplete=state.get("incomplete", ()),
            zarr_format=state.get("zarr_format", 2),
            sharded=state.get("sharded", True),
            kvikio=state.get("kvikio"),
            opened_from=state.get("opened_from"),
        )

    def with_read_only(self, read_only: bool = False) -> TiffStore:
        """A new store over the same files; ``read_only=False`` raises :class:`ReadOnlyError`."""
        return TiffStore(
            self.manifest,
            read_only=read_only,
            left_out=self.left_out,
            incomplete=self.incomplete,
            zarr_format=self.zarr_format,
            sharded=self._sharded,
            kvikio=self.kvikio,
            opened_from=self.opened_from,
        )

    def refresh(self, progress: Any = None) -> TiffStore:
        """A new store over the source as it is now, its ``growth`` saying what was added
        (see :func:`tiffstore.refresh.refresh`); this one keeps reading as it did.

        The read layer cannot import the stages above it that list and open, so the
        open hands the store a picklable record (``opened_from``: source and options),
        and the refresh stage is found here by its module name, as a plug-in is.
        """
        refreshed: TiffStore = importlib.import_module("tiffstore.refresh").refresh(self, progress)
        return refreshed

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
        shards = self.shard_reader
        if shards is not None:
            span = None if byte_range is None else _byte_span(byte_range, shards.nbytes)
            return shards.read(chunk_key.index, span)
        nbytes = self.manifest.chunk_nbytes
        part = None if byte_range is None else _byte_span(byte_range, nbytes)
        data = self.reader.read_chunk_bytes(chunk_key.index, part)
        if data is None and chunk_key.grouped and self.zarr_format == 2:
            return self._empty_cell(part)
        return data

    def _empty_cell(self, part: tuple[int, int] | None) -> memoryview:
        """The group view has no fill value: an empty cell serves its filled pixels."""
        m = self.manifest
        full = np.full(m.chunks, m.fill_value, dtype=m.dtype).reshape(-1).view(np.uint8).data
        return full if part is None else full[part[0] : part[1]]

    def _get_buffer(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None
    ) -> Buffer | None:
        """The value of ``key`` built through ``prototype`` (``None`` if absent).

        Every read path (``get``, ``get_sync``, ``get_partial_values``) ends here, so
        every value is a ``prototype.buffer``: a CuPy-backed one with
        ``zarr.config.enable_gpu()``, read through pinned host memory.
        """
        staging = staging_for(prototype)
        # A shard is pages and its index, not a chunk's pixels: it goes the host way.
        if staging is not None and self.shards is None and self._document(key) is None:
            chunk_key = self.keys.chunk_key(key)
            if chunk_key is not None:
                return self._get_staged(chunk_key, prototype, byte_range, staging)
        data = self._get_value(key, byte_range)
        return None if data is None else _to_buffer(data, prototype, staging)

    def _get_staged(
        self,
        chunk_key: ChunkKey,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None,
        staging: Staging,
    ) -> Buffer | None:
        """A chunk read into ``staging``'s host buffer and copied to the device once."""
        part = None if byte_range is None else _byte_span(byte_range, self.manifest.chunk_nbytes)
        device = read_chunk_staged(self.reader, chunk_key.index, part, staging, self.kvikio)
        if device is None:
            return (
                _to_buffer(self._empty_cell(part), prototype, staging)
                if chunk_key.grouped and self.zarr_format == 2
                else None
            )
        return prototype.buffer.from_array_like(device)

    # -- shards -----------------------------------------------------------

    def shard_index(self, index: tuple[int, ...]) -> np.ndarray:
        """The index of shard ``index`` (see :meth:`ShardReader.index`).

        Raises
        ------
        ValueError
            When the store's chunks are not sharded.
        """
        shards = self.shard_reader
        if shards is None:
            raise ValueError("this store's chunks are not sharded")
        return shards.index(index)

    def _request_nbytes(self, byte_range: ByteRequest | None) -> int:
        """At most how many bytes a request of a chunk's value reads (a shard's index: few)."""
        n = self._value_nbytes()
        if byte_range is None:
            return n
        start, stop = _byte_span(byte_range, n)
        return stop - start

    def _value_nbytes(self) -> int:
        """Bytes of one chunk's value (a shard's includes its index)."""
        sh = self.shards
        return self.manifest.chunk_nbytes + (0 if sh is None else sh.index_nbytes)

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
        return self._get_buffer(key, prototype or default_buffer_prototype(), byte_range)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if key in self.documents.documents or (
            self._request_nbytes(byte_range) <= self.inline_read_bytes
            and not self.manifest.source.remote
        ):
            # Metadata, or a local read that costs less than the hop to a worker thread.
            return self.get_sync(key, prototype=prototype, byte_range=byte_range)
        prototype = prototype or default_buffer_prototype()
        source = self.manifest.source
        if source.remote:
            # Never wait on the network in zarr's event loop: it would stall every
            # other read. Many chunks are in flight at once, as many as zarr's
            # ``async.concurrency`` lets through, up to the source's concurrency.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                process_pool(f"remote-{source.concurrency}", source.concurrency),
                self._get_buffer,
                key,
                prototype,
                byte_range,
            )
        return await asyncio.to_thread(self._get_buffer, key, prototype, byte_range)

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
            return self._value_nbytes()
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

    def set_sync(self, key: str, value: Buffer) -> None:
        """Refused: the store is read-only (zarr's synchronous store surface)."""
        raise self._refuse(f"set {key!r}")

    def delete_sync(self, key: str) -> None:
        """Refused: the store is read-only (zarr's synchronous store surface)."""
        raise self._refuse(f"delete {key!r}")

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
        seen = set()
        for key in self.keys.all_keys():
            if key.startswith(start):
                # The key, or the folder it is in, directly under the prefix.
                head = key[len(start) :].split("/", 1)[0]
                if head not in seen:
                    seen.add(head)
                    yield head


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

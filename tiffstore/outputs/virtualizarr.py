"""VirtualiZarr's parser for a folder of TIFF files: :class:`TiffStoreParser`.

``virtualizarr.open_virtual_dataset(url, registry=registry, parser=TiffStoreParser())``
gives the acquisition as one virtual dataset, stitched from the file names as
:func:`tiffstore.open` stitches it, with its coordinates; VirtualiZarr's own
``to_icechunk`` and ``to_kerchunk`` write it from there.

The parser is tiffstore's open with VirtualiZarr's registry as the source: the
folder (or prefix) is listed, and the headers are read, through the obstore store
the registry holds for the URL, so whatever the registry reads (``file://``,
``s3://``...) the parser reads, with the same credentials. The names, the headers
and the chunking are tiffstore's own stages (:mod:`tiffstore.opening`); the
references are :func:`~tiffstore.outputs.virtual_chunks.virtual_chunks`.

Coordinates are values, not bytes of any file: they are served from memory and
always loaded into the dataset, so writers store them as ordinary arrays.

Importing :mod:`tiffstore` does not import VirtualiZarr; this module does.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

import numpy as np
import obstore
import zarr
from obspec_utils.registry import ObjectStoreRegistry
from obstore.store import MemoryStore
from virtualizarr.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from zarr.dtype import parse_data_type

from tiffstore.detect import is_tiff_name
from tiffstore.errors import ReferenceError, SourceError, TiffReadError
from tiffstore.manifest.model import Manifest
from tiffstore.opening import Listing, read_headers, read_names
from tiffstore.options import OpenOptions
from tiffstore.outputs.virtual_chunks import CoordinateValues, VirtualChunks, virtual_chunks
from tiffstore.sources.base import FileSource, SourceFile
from tiffstore.sources.blockfile import BlockFile
from tiffstore.sources.files import ListedFiles
from tiffstore.sources.listing import select_files
from tiffstore.sources.settings import RemoteSettings

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["TiffStoreParser"]

#: Options the parser cannot apply, and why.
REFUSED = {
    "storage_options": "the files are read through the registry's store for the URL; "
    "give it the credentials and endpoint",
    "remote": "the registry's store has its own client options (time limits, retries)",
    "zarr_format": "VirtualiZarr's stores are Zarr format 3",
    "sharded": "each reference is one chunk, never a shard",
    "checksum": "readers of the references read the files without tiffstore's checksums",
    "kvikio": "nothing is read into GPU memory here",
}

#: Where the coordinates' bytes are served from (in memory): a made-up host no file is at.
_COORDINATES_HOST = "memory://tiffstore-coordinates"


@dataclass(frozen=True)
class TiffStoreParser:
    """VirtualiZarr's parser for a folder of microscope TIFF files.

    Parameters
    ----------
    options
        An :class:`~tiffstore.options.OpenOptions`; the keyword options change it.
    **option_values
        The options of :func:`tiffstore.open` that apply: ``pattern``, ``include``,
        ``exclude``, ``recursive``, ``tiles``, ``fill_value``, ``scale``,
        ``validate`` and ``chunks`` (the references' chunks: by default those of
        reference files, each one byte range of one file). ``storage_options``,
        ``remote``, ``zarr_format``, ``sharded``, ``checksum`` and ``kvikio`` are
        refused: the registry's store reads the files, and the references are
        Zarr format 3 chunks.

    Notes
    -----
    Called as VirtualiZarr calls a parser, ``parser(url, registry)``, it lists the
    folder or prefix ``url`` through ``registry``'s store for it, reads the headers
    through that store, and returns a ``ManifestStore`` whose group holds the pixels
    (``image``, one virtual reference per chunk) and the coordinates. The
    coordinates are always loaded (whatever ``loadable_variables`` says), since
    they are in no file.

    Raises
    ------
    OptionError
        An option that does not apply (see above).
    ReferenceError
        When the files cannot be virtual references: a predictor, LZW, JPEG or
        another codec no standard Zarr codec decodes, chunks that span files, or
        strips stored short (see :func:`~tiffstore.outputs.virtual_chunks.virtual_chunks`).

    Examples
    --------
    >>> from obstore.store import LocalStore
    >>> from obspec_utils.registry import ObjectStoreRegistry
    >>> from virtualizarr import open_virtual_dataset
    >>> registry = ObjectStoreRegistry({"file:///": LocalStore("/")})
    >>> vds = open_virtual_dataset(
    ...     "file:///data/raw/", registry=registry, parser=TiffStoreParser(exclude="MIPs/*")
    ... )  # doctest: +SKIP
    >>> vds.vz.to_icechunk(session.store)  # doctest: +SKIP
    """

    options: OpenOptions

    def __init__(self, options: OpenOptions | None = None, **option_values: Any) -> None:
        opened = OpenOptions.of(options, **option_values)
        opened.refuse(REFUSED, "VirtualiZarr's parser", REFUSED)
        object.__setattr__(self, "options", opened)

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """The acquisition at ``url``, read through ``registry``, as a ``ManifestStore``."""
        chunks = virtual_chunks(self.manifest(url, registry), chunks=self.options.chunks)
        return manifest_store(chunks, registry)

    def manifest(self, url: str, registry: ObjectStoreRegistry) -> Manifest:
        """The manifest :func:`tiffstore.open` builds, listed and read through ``registry``.

        Its chunks are the open's default; the parser's ``chunks`` apply to the references.
        Files still being written are left out, with a warning, as the open leaves them.
        """
        listing = list_registry(url, registry, self.options)
        listing, grid = read_names(listing, self.options)
        manifest, _ = read_headers(listing, grid, dataclasses.replace(self.options, chunks=None))
        return manifest


# -- the source: the registry's store ------------------------------------------


class RegistrySource(FileSource):
    """The files below ``root`` (a URL), read through an obstore store.

    ``prefix`` is where ``root`` is in the store; ``sizes`` are the files' sizes as
    listed (tifffile seeks from the end).
    """

    remote = True

    def __init__(self, store: Any, root: str, prefix: str, sizes: dict[str, int]) -> None:
        self.store = store
        self.root = root.rstrip("/")
        self.prefix = prefix.strip("/")
        self.sizes = sizes
        self.settings = RemoteSettings()

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    def url(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _path(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        self.read_many_into(name, [(offset, out)])

    def read_many_into(self, name: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        try:
            found = obstore.get_ranges(
                self.store,
                self._path(name),
                starts=[offset for offset, _ in requests],
                lengths=[out.nbytes for _, out in requests],
            )
        except Exception as exc:
            raise TiffReadError(f"{self.url(name)}: cannot read ({exc}).") from exc
        for (offset, out), data in zip(requests, found, strict=True):
            view = memoryview(data).cast("B")
            if view.nbytes != out.nbytes:
                raise TiffReadError(
                    f"{self.url(name)}: {view.nbytes} bytes at {offset} where {out.nbytes} "
                    "were expected (the file is shorter than its header says; replace or "
                    "exclude it)."
                )
            out.cast("B")[:] = view

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        with BlockFile(self, name, self.sizes[name], self.settings.header_block) as fh:
            yield cast(IO[bytes], fh)


def list_registry(url: str, registry: ObjectStoreRegistry, options: OpenOptions) -> Listing:
    """The listing stage through ``registry``: the TIFF files of a folder, prefix or file.

    Folders are searched as :func:`tiffstore.open` searches them (``recursive``,
    ``include``, ``exclude``), and the files sorted by name.
    """
    try:
        store, path = registry.resolve(url)
    except ValueError as exc:
        raise SourceError(
            f"{url}: the registry has no store for it. Register one for its bucket or "
            'folder, such as ObjectStoreRegistry({"s3://bucket": S3Store("bucket")}).'
        ) from exc
    prefix = str(path).strip("/")
    root = url.rstrip("/")
    try:
        entries = [e for batch in obstore.list(store, prefix=prefix or None) for e in batch]
        if not entries and prefix and is_tiff_name(prefix):
            entries = [obstore.head(store, prefix)]  # one file: its folder is the root
            root, prefix = root.rsplit("/", 1)[0], prefix.rpartition("/")[0]
    except FileNotFoundError:
        entries = []
    except Exception as exc:
        raise SourceError(f"{url}: cannot list ({exc}).") from exc
    cut = len(prefix) + 1 if prefix else 0
    listed = ListedFiles.of(
        SourceFile(e["path"][cut:], int(e["size"]), version=e.get("e_tag") or None)
        for e in entries
        if is_tiff_name(e["path"]) and (options.recursive or "/" not in e["path"][cut:])
    )
    if not listed:
        raise SourceError(f"{url}: no TIFF files found there.")
    files = select_files(listed, options.include, options.exclude).sorted()
    source = RegistrySource(
        store, root, prefix, dict(zip(files.names, files.sizes.tolist(), strict=True))
    )
    return Listing(source, files)


# -- the ManifestStore ----------------------------------------------------------


class TiffManifestStore(ManifestStore):
    """A ``ManifestStore`` whose coordinates are always loaded: they are in no file."""

    def __init__(
        self, group: ManifestGroup, *, registry: ObjectStoreRegistry, coordinates: Iterable[str]
    ) -> None:
        super().__init__(group, registry=registry)
        self.coordinates = tuple(coordinates)

    def _loaded(self, loadable_variables: Iterable[str] | None) -> list[str]:
        if loadable_variables is None:
            return list(self.coordinates)
        return [*loadable_variables, *(c for c in self.coordinates if c not in loadable_variables)]

    def to_virtual_dataset(
        self,
        group: str = "",
        loadable_variables: Iterable[str] | None = None,
        decode_times: bool | None = None,
    ) -> xr.Dataset:
        return super().to_virtual_dataset(group, self._loaded(loadable_variables), decode_times)

    def to_virtual_datatree(
        self,
        group: str = "",
        *,
        loadable_variables: Iterable[str] | None = None,
        decode_times: bool | None = None,
    ) -> xr.DataTree:
        return super().to_virtual_datatree(
            group, loadable_variables=self._loaded(loadable_variables), decode_times=decode_times
        )


def chunk_manifest(vc: VirtualChunks) -> ChunkManifest:
    """The references of ``vc`` as VirtualiZarr's ``ChunkManifest`` (missing cells empty).

    Each location is the file's URL as the registry names it (``file:///data/run 1/a.tif``),
    not percent-encoded: VirtualiZarr's store, fsspec (``to_kerchunk``) and Icechunk
    all read it as written, and the first two would look for ``run%201`` literally.
    """
    m = vc.manifest
    urls = np.asarray([m.url(i) for i in range(len(m.files))], dtype=np.dtypes.StringDType())
    grid = tuple(math.ceil(n / c) for n, c in zip(vc.shape, vc.chunks, strict=True))
    paths = np.full(grid, "", dtype=np.dtypes.StringDType())
    offsets = np.zeros(grid, np.uint64)
    lengths = np.zeros(grid, np.uint64)
    at = tuple(vc.index.T)
    paths[at] = urls[vc.file]
    offsets[at] = vc.offset
    lengths[at] = vc.length
    return ChunkManifest.from_arrays(
        paths=paths, offsets=offsets, lengths=lengths, validate_paths=False
    )


def manifest_store(vc: VirtualChunks, registry: ObjectStoreRegistry) -> TiffManifestStore:
    """``vc`` as a ``ManifestStore``: the pixels as references, the coordinates in memory.

    Raises
    ------
    ReferenceError
        When some chunk is no byte range (a VirtualiZarr array holds references only).
    """
    if len(vc.native):
        raise ReferenceError(
            f"{vc.manifest.url(0)}: {len(vc.native)} chunk(s) of the files are no byte range of "
            "a file (a last strip stored short, or a strip never written), and a VirtualiZarr "
            "array holds references only. Pass chunks='page' or 'file' for uncompressed "
            "files, write the repository with `tiffstore icechunk` (which stores those "
            "chunks' pixels), or `tiffstore materialize` a real copy."
        )
    image = ManifestArray(
        metadata=_metadata_fields(vc.metadata() | {"attributes": {}}),
        chunkmanifest=chunk_manifest(vc),
    )
    memory = MemoryStore()
    token = uuid.uuid4().hex  # one folder per parse: stores never mix coordinates
    arrays = {vc.name: image}
    for c in vc.coordinates:
        arrays[c.name] = _coordinate_array(memory, f"{token}/{c.name}", c)
    attributes = {k: v for k, v in vc.attributes.items() if k != "coordinates"}
    names = [c.name for c in vc.coordinates]
    if names:
        attributes["coordinates"] = " ".join(names)
    served: ObjectStoreRegistry[Any] = ObjectStoreRegistry()
    served.map = dict(registry.map)  # the caller's stores, and beside them the coordinates
    served.register(f"{_COORDINATES_HOST}/{token}", memory)
    return TiffManifestStore(
        ManifestGroup(arrays=arrays, attributes=attributes), registry=served, coordinates=names
    )


def _metadata_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``zarr.json`` document as the fields ``ManifestArray`` makes its metadata of."""
    fields = {k: v for k, v in doc.items() if k not in ("zarr_format", "node_type")}
    fields["data_type"] = parse_data_type(doc["data_type"], zarr_format=3)
    return fields


def _coordinate_array(memory: MemoryStore, path: str, c: CoordinateValues) -> ManifestArray:
    """Coordinate ``c`` as one chunk, encoded by zarr at ``path`` of ``memory``, and its
    reference."""
    array = zarr.create_array(
        zarr.storage.ObjectStore(memory),
        name=path,
        data=c.values,
        chunks=tuple(max(1, n) for n in c.values.shape),
        dimension_names=c.dims,
        attributes=c.attributes,
        compressors=None,
        zarr_format=3,
    )
    metadata: Any = array.metadata  # format 3, as asked
    key = f"{path}/c" + "/0" * c.values.ndim
    grid = (1,) * c.values.ndim
    return ManifestArray(
        metadata=metadata,
        chunkmanifest=ChunkManifest.from_arrays(
            paths=np.full(grid, f"{_COORDINATES_HOST}/{key}", np.dtypes.StringDType()),
            offsets=np.zeros(grid, np.uint64),
            lengths=np.full(grid, obstore.head(memory, key)["size"], np.uint64),
            validate_paths=False,
        ),
    )

"""The store's key space: which keys exist and what each one holds.

The root of a :class:`~tiffstore.store.TiffStore` is two things at once:

* a Zarr format 2 **array** (``.zarray``, ``.zattrs``, chunk keys ``"c.s.z.y.x"``),
  for ``zarr.open_array(store)`` and ``dask.array.from_zarr(store)``;
* a Zarr format 2 **group** (``.zgroup``, consolidated ``.zmetadata``) holding the
  same pixels as ``image/`` and one small array per coordinate, for
  ``xarray.open_zarr(store)``, which then shows the coordinates (wavelength per
  channel, timestamps per file) as real xarray coordinates.

Both views read the same chunks; nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .manifest import Manifest

__all__ = ["ARRAY_METADATA", "ChunkKey", "StoreKeys"]

ARRAY_METADATA = (".zarray", ".zattrs")
GROUP_METADATA = (".zgroup", ".zmetadata")
_CHUNK_KEY = re.compile(r"\d{1,12}(?:\.\d{1,12})*")


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=True).encode()


@dataclass(frozen=True)
class ChunkKey:
    """A key naming a chunk of the pixels: its index, and whether the group view asked."""

    index: tuple[int, ...]
    grouped: bool


def _coordinate_array(values: Any) -> np.ndarray:
    """Coordinate values (nested lists, ``None`` where no file) as a typed array."""
    flat = np.asarray(values, dtype=object)
    items = [v for v in flat.ravel().tolist() if v is not None]
    if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        if len(items) == flat.size:
            return flat.astype(np.int64)
        return np.where(flat == None, np.nan, flat).astype(np.float64)  # noqa: E711
    if items and all(isinstance(v, (int, float)) for v in items):
        return np.where(flat == None, np.nan, flat).astype(np.float64)  # noqa: E711
    text = np.where(flat == None, "", flat).astype(str)  # noqa: E711
    return text.astype(f"<U{max(1, max((len(t) for t in text.ravel()), default=1))}")


class StoreKeys:
    """Every key of a store over ``manifest`` and the documents behind the metadata keys."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._documents: dict[str, bytes] | None = None
        self._coord_chunks: dict[str, bytes] = {}
        taken = set(manifest.dims) | {c.name for c in manifest.coords}
        self.image_name = "image" if "image" not in taken else "image_data"

    # -- documents --------------------------------------------------------

    def _build(self) -> dict[str, bytes]:
        m = self.manifest
        zarray = m.zarray()
        zattrs = m.zattrs()
        # The root ".zattrs" is also the group view's attributes (xarray's Dataset
        # attrs, copied out by ``to_zarr``), so it leaves out the array's
        # ``_ARRAY_DIMENSIONS``: the dims live on ``image/.zattrs`` and in ``tiffstore``.
        root_attrs = {k: v for k, v in zattrs.items() if k != "_ARRAY_DIMENSIONS"}
        docs: dict[str, dict[str, Any]] = {".zarray": zarray, ".zattrs": root_attrs}
        consolidated: dict[str, Any] = {".zgroup": {"zarr_format": 2}, ".zattrs": {}}
        coords: dict[str, dict[str, Any]] = zattrs["tiffstore"]["coords"]
        # In the group view, missing cells are served as filled chunks and the array
        # has no fill value, so xarray does not mask real pixels that equal it.
        image_zarray = dict(zarray, fill_value=None)
        image_zattrs = {
            "_ARRAY_DIMENSIONS": zattrs["_ARRAY_DIMENSIONS"],
            "coordinates": " ".join(c for c in coords if c not in m.dims),
        }
        consolidated[f"{self.image_name}/.zarray"] = image_zarray
        consolidated[f"{self.image_name}/.zattrs"] = image_zattrs
        for name, coord in coords.items():
            arr = _coordinate_array(coord["values"])
            shape = list(arr.shape)
            # No fill value for labels: xarray would mask the labels equal to it.
            fill: Any = "NaN" if arr.dtype.kind == "f" else None
            consolidated[f"{name}/.zarray"] = {
                "zarr_format": 2,
                "shape": shape,
                "chunks": [max(1, n) for n in shape],
                "dtype": arr.dtype.str,
                "compressor": None,
                "fill_value": fill,
                "order": "C",
                "filters": None,
                "dimension_separator": ".",
            }
            attrs: dict[str, Any] = {"_ARRAY_DIMENSIONS": coord["dims"]}
            if "units" in coord:
                attrs["units"] = coord["units"]
            consolidated[f"{name}/.zattrs"] = attrs
            self._coord_chunks[f"{name}/" + ".".join("0" * len(shape) or "0")] = arr.tobytes()
        docs[".zgroup"] = {"zarr_format": 2}
        docs[".zmetadata"] = {"zarr_consolidated_format": 1, "metadata": consolidated}
        out = {k: _json_bytes(v) for k, v in docs.items()}
        out.update({k: _json_bytes(v) for k, v in consolidated.items() if "/" in k})
        return out

    @property
    def documents(self) -> dict[str, bytes]:
        """Metadata key -> JSON bytes, for both views."""
        if self._documents is None:
            self._documents = self._build()
        return self._documents

    def coordinate_chunk(self, key: str) -> bytes | None:
        """The bytes of a coordinate array's single chunk, or ``None``."""
        _ = self.documents
        return self._coord_chunks.get(key)

    # -- chunk keys -------------------------------------------------------

    def chunk_key(self, key: str) -> ChunkKey | None:
        """The chunk a key names (root or ``image/``), or ``None`` for any other key."""
        grouped = key.startswith(self.image_name + "/")
        bare = key[len(self.image_name) + 1 :] if grouped else key
        if not _CHUNK_KEY.fullmatch(bare):
            return None
        index = tuple(int(p) for p in bare.split("."))
        grid = self.manifest.chunk_grid
        if len(index) != len(grid) or any(i >= g for i, g in zip(index, grid, strict=True)):
            return None
        return ChunkKey(index, grouped)

    def has_data(self, index: tuple[int, ...]) -> bool:
        """Whether any file contributes to the chunk (missing files' chunks are absent)."""
        return self.manifest.chunk_has_data(index)

    def exists(self, key: str) -> bool:
        if key in self.documents or self.coordinate_chunk(key) is not None:
            return True
        chunk = self.chunk_key(key)
        return chunk is not None and (chunk.grouped or self.has_data(chunk.index))

    def chunk_nbytes(self) -> int:
        m = self.manifest
        return math.prod(m.chunks) * m.dtype.itemsize

    # -- listing ----------------------------------------------------------

    def root_chunk_keys(self) -> Iterator[str]:
        for index in np.ndindex(*self.manifest.chunk_grid):
            if self.has_data(index):
                yield ".".join(map(str, index))

    def array_keys(self) -> Iterator[str]:
        """The keys of the root array: its metadata and every chunk with data."""
        yield from ARRAY_METADATA
        yield from self.root_chunk_keys()

    def all_keys(self) -> Iterator[str]:
        """Every key, the root array's first, then the group view's."""
        yield from self.array_keys()
        docs = self.documents
        yield from GROUP_METADATA
        yield from (k for k in docs if "/" in k)
        yield from self._coord_chunks
        for index in np.ndindex(*self.manifest.chunk_grid):
            yield f"{self.image_name}/" + ".".join(map(str, index))

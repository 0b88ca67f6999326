"""The store's key space: which keys exist, and which chunk a key names.

Keys are the metadata documents of :mod:`tiffstore.manifest.documents`, the coordinate
arrays' chunks, and the chunk keys of the pixels: in Zarr format 2 ``"c.s.z.y.x"``
at the root and ``"image/c.s.z.y.x"`` in the group view; in format 3 zarr's default
encoding, ``"c/c/s/z/y/x"`` at the root and ``"group/image/c/c/s/z/y/x"``. Nothing here does I/O; a key that does
not parse is absent, whatever it holds (``..``, absolute paths, NUL bytes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tiffstore.manifest.documents import (
    ARRAY_METADATA,
    GROUP_METADATA,
    GROUP_V3,
    ZARR_JSON,
    Documents,
)
from tiffstore.manifest.model import Manifest

__all__ = ["ChunkKey", "KeySpace"]

_CHUNK_KEY = re.compile(r"\d{1,12}(?:\.\d{1,12})*")
_CHUNK_KEY_V3 = re.compile(r"c(?:/\d{1,12})+")


@dataclass(frozen=True)
class ChunkKey:
    """A key naming a chunk of the pixels: its index, and whether the group view asked."""

    index: tuple[int, ...]
    grouped: bool


class KeySpace:
    """Every key of a store over ``manifest``."""

    def __init__(self, manifest: Manifest, documents: Documents) -> None:
        self.manifest = manifest
        self.documents = documents

    def chunk_key(self, key: str) -> ChunkKey | None:
        """The chunk a key names (root or ``image/``), or ``None`` for any other key."""
        prefix = self.documents.image_prefix
        grouped = key.startswith(prefix)
        bare = key[len(prefix) :] if grouped else key
        if self.documents.zarr_format == 3:
            if not _CHUNK_KEY_V3.fullmatch(bare):
                return None
            index = tuple(int(p) for p in bare[2:].split("/"))
        elif not _CHUNK_KEY.fullmatch(bare):
            return None
        else:
            index = tuple(int(p) for p in bare.split("."))
        grid = self.manifest.chunk_grid
        if len(index) != len(grid) or any(i >= g for i, g in zip(index, grid, strict=True)):
            return None
        return ChunkKey(index, grouped)

    def exists(self, key: str) -> bool:
        docs = self.documents
        if key in docs.documents or key in docs.coordinate_chunks:
            return True
        chunk = self.chunk_key(key)
        # Missing files' chunks are absent at the root (readers use the fill value);
        # format 2's group view has no fill value and serves them filled.
        if chunk is None:
            return False
        filled = chunk.grouped and self.documents.zarr_format == 2
        return filled or self.manifest.chunk_has_data(chunk.index)

    def encode(self, index: tuple[int, ...]) -> str:
        """The root key of chunk ``index``."""
        if self.documents.zarr_format == 3:
            return "c/" + "/".join(map(str, index))
        return ".".join(map(str, index))

    def root_chunk_keys(self) -> Iterator[str]:
        for index in np.ndindex(*self.manifest.chunk_grid):
            if self.manifest.chunk_has_data(index):
                yield self.encode(index)

    def all_keys(self) -> Iterator[str]:
        """Every key, the root array's first, then the group view's."""
        docs = self.documents
        if docs.zarr_format == 3:
            yield ZARR_JSON
            yield from self.root_chunk_keys()
            yield f"{GROUP_V3}/{ZARR_JSON}"
            yield from (k for k in docs.documents if "/" in k and k != f"{GROUP_V3}/{ZARR_JSON}")
            yield from docs.coordinate_chunks
            for key in self.root_chunk_keys():
                yield docs.image_prefix + key
            return
        yield from ARRAY_METADATA
        yield from self.root_chunk_keys()
        yield from GROUP_METADATA
        yield from (k for k in docs.documents if "/" in k)
        yield from docs.coordinate_chunks
        for index in np.ndindex(*self.manifest.chunk_grid):
            yield f"{docs.image_name}/" + ".".join(map(str, index))

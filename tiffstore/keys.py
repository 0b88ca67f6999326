"""The store's key space: which keys exist, and which chunk a key names.

Keys are the metadata documents of :mod:`tiffstore.documents`, the coordinate
arrays' chunks, and the chunk keys of the pixels: ``"c.s.z.y.x"`` at the root and
``"image/c.s.z.y.x"`` in the group view. Nothing here does I/O; a key that does
not parse is absent, whatever it holds (``..``, absolute paths, NUL bytes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .documents import ARRAY_METADATA, GROUP_METADATA, Documents
from .manifest import Manifest

__all__ = ["ChunkKey", "KeySpace"]

_CHUNK_KEY = re.compile(r"\d{1,12}(?:\.\d{1,12})*")


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
        prefix = self.documents.image_name + "/"
        grouped = key.startswith(prefix)
        bare = key[len(prefix) :] if grouped else key
        if not _CHUNK_KEY.fullmatch(bare):
            return None
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
        # the group view has no fill value and serves them filled.
        return chunk is not None and (chunk.grouped or self.manifest.chunk_has_data(chunk.index))

    def root_chunk_keys(self) -> Iterator[str]:
        for index in np.ndindex(*self.manifest.chunk_grid):
            if self.manifest.chunk_has_data(index):
                yield ".".join(map(str, index))

    def all_keys(self) -> Iterator[str]:
        """Every key, the root array's first, then the group view's."""
        yield from ARRAY_METADATA
        yield from self.root_chunk_keys()
        docs = self.documents
        yield from GROUP_METADATA
        yield from (k for k in docs.documents if "/" in k)
        yield from docs.coordinate_chunks
        for index in np.ndindex(*self.manifest.chunk_grid):
            yield f"{docs.image_name}/" + ".".join(map(str, index))

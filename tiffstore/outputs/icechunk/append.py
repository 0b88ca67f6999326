"""Appending: the files new since the last commit, as one more commit.

The repository keeps the manifest it was written from
(:data:`~tiffstore.outputs.icechunk.contents.MANIFEST_PATH`). An append loads it,
takes the source as it is now (the caller's open), and asks
:func:`~tiffstore.manifest.growth.grow` what grew: new files at the end of an axis
(a stack, a time point), or cells that had no file. Anything else (a file changed
or removed, a value in the middle of an axis, another shape) is a
:class:`~tiffstore.errors.GrowthError`. Then only the chunks that changed get
references (:func:`~tiffstore.manifest.growth.changed_chunks`); the array and
the coordinates that grew are resized, the saved manifest replaced, and all of it
committed at once. Every existing reference stays as it was, and older snapshots
read the older, smaller array.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import zarr

from tiffstore.errors import OutputError
from tiffstore.manifest.chunking import rechunk
from tiffstore.manifest.growth import changed_chunks, grow
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.saved import load_manifest
from tiffstore.outputs.icechunk.contents import (
    MAX_NATIVE,
    check_native,
    describe_array,
    described_after,
    read_coordinates,
    read_saved_manifest,
    set_references,
    write_coordinates,
    write_native_chunks,
    write_saved_manifest,
)
from tiffstore.outputs.icechunk.repository import (
    add_containers,
    open_repository,
    source_container,
    tiffstore_attributes,
)
from tiffstore.outputs.virtual_chunks import virtual_chunks
from tiffstore.sources.checksums import ChecksummedSource
from tiffstore.sources.local import LocalSource
from tiffstore.sources.remote import FsspecSource

__all__ = ["append_to_icechunk"]

logger = logging.getLogger(__name__)


def _as_saved_for(data: bytes, m: Manifest) -> Manifest:
    """The saved manifest, reading from where ``m`` reads (so the two compare)."""
    source = m.source.inner if isinstance(m.source, ChecksummedSource) else m.source
    if isinstance(source, FsspecSource):
        old = load_manifest(data, source.storage_options, source.root, source.settings)
    else:
        root = source.root if isinstance(source, LocalSource) else None
        old = load_manifest(data, root=root)
    # The same files, compared by name, size and bytes: read alike (checksums or not).
    return old if old.source == m.source else dataclasses.replace(old, source=m.source)


def append_to_icechunk(
    m: Manifest,
    repo: str,
    *,
    url: str | None = None,
    storage_options: dict[str, Any] | None = None,
    message: str | None = None,
    branch: str = "main",
    max_native: int = MAX_NATIVE,
) -> str:
    """Commit the files of ``m`` that are new since the repository's last commit.

    See :func:`~tiffstore.outputs.icechunk.write.to_icechunk` (``append=True``) for
    the parameters; ``url`` defaults to the one the repository was written with.

    Returns
    -------
    str
        The new snapshot's id; the branch's current one when nothing is new (and
        nothing is committed).

    Raises
    ------
    GrowthError
        The source is not the repository's array grown (a file changed or removed,
        a value in the middle of an axis, another file shape...).
    OutputError
        There is no repository, or one tiffstore did not write.
    """
    repository = open_repository(repo, storage_options)
    if repository is None:
        raise OutputError(
            f"{repo}: no Icechunk repository here to append to. Write one first (without append)."
        )
    marker = tiffstore_attributes(repository, branch)
    saved = None
    if marker is not None:
        saved = read_saved_manifest(repository.readonly_session(branch=branch).store)
    if marker is None or saved is None:
        raise OutputError(
            f"{repo}: branch {branch!r} holds no array tiffstore wrote (no 'tiffstore' "
            "attribute or saved manifest), so there is nothing to append to."
        )
    if url is None:
        url = marker.get("url")
    old = _as_saved_for(saved, m)
    new = rechunk(m, old.chunks) if m.chunks != old.chunks else m
    growth = grow(old, new)
    if not growth.changed:
        snapshot: str = repository.lookup_branch(branch)
        logger.info("%s: nothing new in %s; no commit", repo, m.source.url(""))
        return snapshot
    vc = virtual_chunks(new, old.chunks, url)
    if vc.name != marker.get("image"):
        raise OutputError(
            f"{repo}: its array is {marker.get('image')!r}, but the source's would be "
            f"{vc.name!r} (a dim or coordinate now takes that name); it cannot grow."
        )
    changed = changed_chunks(old, vc.manifest)
    rows = np.flatnonzero(changed[tuple(vc.index.T)])
    native_rows = np.flatnonzero(changed[tuple(vc.native.T)])
    check_native(vc, len(native_rows), max_native)
    repository = add_containers(repository, [source_container(new, vc.prefix, url)])
    session = repository.writable_session(branch)
    store = session.store
    array = zarr.open_array(store, path=vc.name, mode="r+", zarr_format=3)
    array.resize(vc.shape)
    written = write_coordinates(store, vc, read_coordinates(store, vc))
    write_saved_manifest(store, vc, url)
    with described_after(array, vc):
        write_native_chunks(store, vc, native_rows)
        n = set_references(store, vc, rows)
    text = message or (
        f"tiffstore append: {growth.summary()}; now {describe_array(vc)}: {n:,} virtual "
        "chunks added"
    )
    snapshot = session.commit(
        text,
        metadata={
            "tiffstore": {
                "files": len(vc.manifest.files),
                "added_files": len(growth.added_files),
                "shape": list(vc.shape),
                "old_shape": list(growth.old_shape),
                "virtual_chunks": n,
                "native_chunks": len(native_rows),
                "coordinates": written,
            }
        },
    )
    logger.info("%s: committed %s (%s)", repo, snapshot, text)
    return snapshot

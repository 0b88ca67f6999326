"""``to_icechunk``: the virtual array as a commit of an Icechunk repository.

The steps: the chunks as virtual references
(:func:`~tiffstore.outputs.virtual_chunks.virtual_chunks`, which refuses codecs no
standard Zarr codec decodes), the repository (created, or checked to be
tiffstore's), its virtual chunk container for the TIFFs' location, then one
writable session: the group and the pixels' array metadata, the coordinates and
the saved manifest as native chunks, the references in batches, and one commit
whose message says what was added. A failure before the commit leaves the
repository as it was.
"""

from __future__ import annotations

import logging
from typing import Any

from tiffstore.errors import OutputError
from tiffstore.manifest.chunking import ChunkSpec
from tiffstore.manifest.model import Manifest
from tiffstore.outputs.icechunk.append import append_to_icechunk
from tiffstore.outputs.icechunk.contents import (
    MAX_NATIVE,
    check_native,
    describe_array,
    described_after,
    set_references,
    write_array,
    write_coordinates,
    write_native_chunks,
    write_saved_manifest,
)
from tiffstore.outputs.icechunk.repository import (
    add_containers,
    create_repository,
    open_repository,
    source_container,
    tiffstore_attributes,
)
from tiffstore.outputs.virtual_chunks import virtual_chunks

__all__ = ["MAX_NATIVE", "to_icechunk"]

logger = logging.getLogger(__name__)


def to_icechunk(
    store_or_manifest: Any,
    repo: str,
    *,
    url: str | None = None,
    storage_options: dict[str, Any] | None = None,
    message: str | None = None,
    append: bool = False,
    force: bool = False,
    chunks: ChunkSpec = None,
    branch: str = "main",
    max_native: int = MAX_NATIVE,
) -> str:
    """Commit the virtual array to an Icechunk repository, as virtual chunk references.

    Parameters
    ----------
    store_or_manifest
        A :class:`~tiffstore.TiffStore` (from :func:`tiffstore.open`) or its manifest.
    repo
        The repository: a local folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.
        Created when there is none.
    url
        Where the TIFFs will be read from (``s3://bucket/raw/``); by default where they
        are now. The repository gets a virtual chunk container for it.
    storage_options
        For the repository, as for fsspec (``key``, ``secret``, ``anon``,
        ``client_kwargs={"endpoint_url": ...}``).
    message
        The commit message; by default one saying what was added.
    append
        Add the files that are new since the last commit (see
        :func:`~tiffstore.outputs.icechunk.append.append_to_icechunk`).
    force
        Write into a repository tiffstore did not write, or replace the array of one
        it did with a new commit (older snapshots keep what they held).
    chunks
        The chunks to reference; by default the reference files' (whole pages, runs
        of them, or the files' own strips or tiles).
    branch
        The branch to commit to.
    max_native
        Bytes of pixels the repository may store for chunks that are no byte range
        of a TIFF (last strips stored short); past it the write is refused.

    Returns
    -------
    str
        The new snapshot's id.

    Raises
    ------
    ReferenceError
        The files' codec has no standard Zarr codec (a predictor, LZW, JPEG...):
        ``tiffstore materialize`` writes a real copy instead.
    OutputError
        The repository is not tiffstore's, or already holds an array (without
        ``force``), or cannot be written.

    Examples
    --------
    >>> store = tiffstore.open("raw/")  # doctest: +SKIP
    >>> store.to_icechunk("raw.icechunk")  # doctest: +SKIP
    'GFEF3Q6Z8TBMA8P0YPQG'
    """
    m: Manifest = getattr(store_or_manifest, "manifest", store_or_manifest)
    if append:
        return append_to_icechunk(
            m,
            repo,
            url=url,
            storage_options=storage_options,
            message=message,
            branch=branch,
            max_native=max_native,
        )
    vc = virtual_chunks(m, chunks, url)
    check_native(vc, len(vc.native), max_native)
    container = source_container(m, vc.prefix, url)
    repository = open_repository(repo, storage_options)
    if repository is None:
        repository = create_repository(repo, storage_options, [container])
    else:
        marker = tiffstore_attributes(repository, branch)
        if marker is None and not force:
            raise OutputError(
                f"{repo}: an Icechunk repository tiffstore did not write (its root group has "
                "no 'tiffstore' attribute); tiffstore adds nothing to it. Pass force=True "
                "(--force) to commit the array into it anyway (older snapshots keep what it "
                "held), or give another location."
            )
        if marker is not None and not force:
            raise OutputError(
                f"{repo}: already holds an acquisition tiffstore wrote. Pass append=True "
                "(--append) to add the files that are new since, or force=True (--force) to "
                "replace it with a new commit (older snapshots keep it)."
            )
        repository = add_containers(repository, [container])
    session = repository.writable_session(branch)
    store = session.store
    array = write_array(store, vc, url)
    write_coordinates(store, vc)
    write_saved_manifest(store, vc, url)
    with described_after(array, vc):
        write_native_chunks(store, vc)
        set_references(store, vc)
    n = len(vc.manifest.files)
    text = message or (
        f"tiffstore: {n:,} TIFF file{'' if n == 1 else 's'} as {describe_array(vc)}: "
        f"{len(vc):,} virtual chunks" + (f", {len(vc.native):,} native" if len(vc.native) else "")
    )
    snapshot: str = session.commit(
        text,
        metadata={
            "tiffstore": {
                "files": n,
                "added_files": n,
                "shape": list(vc.shape),
                "virtual_chunks": len(vc),
                "native_chunks": len(vc.native),
            }
        },
    )
    logger.info("%s: committed %s (%s)", repo, snapshot, text)
    return snapshot

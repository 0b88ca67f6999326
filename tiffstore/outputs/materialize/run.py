"""``materialize``: the virtual array re-encoded into a real Zarr store, resumable and verified.

:func:`materialize` reads the source through the store's own reader and writes a
Zarr group with zarr-python 3:

* ``image`` (``0``, ``1``... with ``ome=True``): the pixels, Blosc-compressed
  (zstd, level 3, bit-shuffle by default), with the dims as ``_ARRAY_DIMENSIONS``
  (format 2) or ``dimension_names`` (format 3);
* one small array per coordinate (wavelength per channel, timestamps per file), as
  in the live store's group view, so ``xarray.open_zarr(out)`` shows them.

The steps are modules of their own: :mod:`~tiffstore.outputs.materialize.plan` (the
arrays and tasks), :mod:`~tiffstore.outputs.materialize.job` (one task's read,
encode and write), :mod:`~tiffstore.outputs.materialize.runner` (threads or a
cluster), :mod:`~tiffstore.outputs.materialize.journal` (what is done, resume),
:mod:`~tiffstore.outputs.materialize.metadata` and
:mod:`~tiffstore.outputs.materialize.ome`, and
:mod:`~tiffstore.outputs.materialize.verify`.

**Bounded memory.** The work is cut into tasks, each one whole output chunk (or one
whole shard) or a few of them, grown dim by dim to cover whole source chunks while
it stays under ``TASK_BYTES``, so peak memory is about ``workers x (task region + a
source chunk)`` whatever the size of the array.

**Nothing half-made.** The first write is a setup record saying that tiffstore is
writing the output; each finished task writes a journal record after its chunks; a
task without one is redone whole on ``resume=True``. Local files are written to a
temporary name and renamed (zarr's ``LocalStore``), and a resume removes the
temporary files of a killed run; object stores (S3) put whole objects. No
half-written chunk is ever taken as done (:mod:`~tiffstore.outputs.materialize.journal`
has the protocol).

**Default format.** Zarr format 2: the seed recipe's ``to_zarr`` wrote it, and every
Zarr reader (zarr-python 2 and 3, tensorstore, Fiji/BigDataViewer N5-Zarr, napari
with OME-NGFF 0.4) reads it. Format 3 (``zarr_format=3``) is for sharding: with
``shards=`` many chunks share one file, which keeps the file count of a 189 GB copy
small.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import zarr

from tiffstore.errors import MaterializeError, OptionError, OutputError, TiffStoreError
from tiffstore.opening import open as open_store
from tiffstore.options import OpenOptions
from tiffstore.outputs.materialize.job import Job
from tiffstore.outputs.materialize.journal import (
    done_tasks,
    finish,
    metadata_written,
    prepare_output,
    stored_bytes,
)
from tiffstore.outputs.materialize.metadata import coordinates, image_name, write_metadata
from tiffstore.outputs.materialize.ome import ome_axes
from tiffstore.outputs.materialize.plan import (
    Codec,
    Output,
    check_memory,
    machine_memory,
    plan_arrays,
)
from tiffstore.outputs.materialize.runner import ProgressCallback, Runner, write_all
from tiffstore.outputs.materialize.verify import reopen_mismatched, verify_all
from tiffstore.read.store import TiffStore

__all__ = ["SOURCE_REFUSES", "MaterializeSummary", "materialize"]

#: Open options that do not apply to materialize's source, and what to do instead.
SOURCE_REFUSES = {
    "zarr_format": "it sets the format the source is served in; the output's format is "
    "materialize(zarr_format=...)",
    "sharded": "it sets how the source is served; the output's shards are materialize(shards=...)",
    "kvikio": "materialize reads on the CPU",
}


@dataclass(frozen=True)
class MaterializeSummary:
    """What a :func:`materialize` run did.

    Attributes
    ----------
    path
        The output (folder or URL).
    zarr_format
        2 or 3.
    shape, chunks, shards
        Of the image (level 0).
    bytes
        Uncompressed bytes written in this run (every level).
    write_seconds
        Of ``seconds``, the time spent writing (not opening, verifying or finishing).
    stored_bytes
        Compressed bytes of the image's chunks, where the store can list sizes (else ``None``).
    seconds
        Wall time of the run.
    chunks_written, chunks_skipped
        Output chunks written in this run, and found done by an earlier run (``resume``).
    complete
        Whether the output is finished (marked complete).
    verified
        ``True``/``False`` after ``verify=True``; ``None`` when not verified.
    mismatched
        Keys of chunks that differ from the source.
    """

    path: str
    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    bytes: int
    stored_bytes: int | None
    seconds: float
    write_seconds: float
    chunks_written: int
    chunks_skipped: int
    complete: bool
    verified: bool | None = None
    mismatched: tuple[str, ...] = field(default=())

    @property
    def throughput(self) -> float:
        """Uncompressed bytes per second written."""
        return self.bytes / self.write_seconds if self.write_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-able data (for ``--json``)."""
        out = asdict(self)
        out["throughput"] = self.throughput
        return out


def materialize(
    source_or_store: Any,
    out: str | os.PathLike[str],
    *,
    chunks: Sequence[int | None] | None = None,
    zarr_format: int = 2,
    shards: Sequence[int | None] | str | int | None = None,
    cname: str = "zstd",
    clevel: int = 3,
    shuffle: str = "bitshuffle",
    ome: bool = False,
    levels: int = 1,
    scheduler: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    verify: bool = False,
    progress: ProgressCallback | None = None,
    storage_options: Mapping[str, Any] | None = None,
    open_options: OpenOptions | Mapping[str, Any] | None = None,
) -> MaterializeSummary:
    """Write the virtual array as a real, compressed Zarr store, resumably.

    Parameters
    ----------
    source_or_store
        A :class:`~tiffstore.TiffStore`, or anything :func:`tiffstore.open` takes
        (folder, glob, list of files, URL).
    out
        A local folder or an fsspec URL (``s3://bucket/data.zarr``).
    chunks
        Output chunk shape, one entry per dim of the source, in its order (``None``/-1:
        a whole dim). Default :func:`default_chunks`: ``(1, 1, 64, 256, 256)`` for
        ``(ch, stack, z, y, x)``.
    zarr_format
        2 (default: the recipe's format, read everywhere) or 3.
    shards
        Format 3 only: a shard shape (whole multiples of ``chunks``, in the source's dim
        order) or a target shard size (``"1GB"``, ``"256MiB"``, bytes).
    cname, clevel, shuffle
        Blosc compressor, level, and ``"noshuffle"``, ``"shuffle"`` or ``"bitshuffle"``.
    ome
        Write OME-NGFF metadata (0.4 for format 2, 0.5 for format 3): dims in
        time, channel, z, y, x order, pixels under ``0``, ``1``...
    levels
        With ``ome=True``: pyramid levels, each half the last along y and x (mean of 2 x 2).
    scheduler
        A ``dask.distributed`` scheduler address or ``Client``: run the tasks there.
        By default, ``workers`` threads on this machine.
    workers
        Threads when running locally (default: one per CPU).
    overwrite
        Replace an earlier materialize output at ``out``; only what it wrote is removed.
    resume
        Finish an interrupted run with the same settings: finished tasks are kept,
        unfinished ones redone whole, temporary files of killed writes removed.
    verify
        Read the output back and compare it with the source chunk by chunk. On a
        finished output (with the same settings), only that: nothing is written unless a
        chunk differs, and then the output is marked unfinished for ``resume=True``.
    progress
        Called as ``progress(phase, done_bytes, total_bytes)`` as tasks finish.
    storage_options
        fsspec options for ``out``.
    open_options
        How to open ``source_or_store`` when it is not a store: an
        :class:`~tiffstore.options.OpenOptions` or a mapping of its fields (the source
        is read page by page unless ``chunks`` says otherwise).

    Returns
    -------
    MaterializeSummary
        Bytes, seconds, chunks written and skipped, whether complete and verified.

    Raises
    ------
    MaterializeError
        ``out`` is not empty and not a materialize output; is an unfinished one without
        ``resume`` or ``overwrite``, or a finished one without ``verify``, ``resume`` or
        ``overwrite``; or was started with other settings.

    Examples
    --------
    >>> summary = tiffstore.materialize("raw/", "mydata.zarr")  # doctest: +SKIP
    >>> summary.complete, f"{summary.throughput / 1e6:.0f} MB/s"  # doctest: +SKIP
    (True, '640 MB/s')
    """
    started = time.perf_counter()
    source = _source(source_or_store, open_options)
    if zarr_format not in (2, 3):
        raise MaterializeError(f"zarr_format={zarr_format}: choose 2 or 3")
    if shards is not None and zarr_format != 3:
        raise MaterializeError("shards need zarr_format=3 (Zarr format 2 has no sharding)")
    if levels < 1 or (levels > 1 and not ome):
        raise MaterializeError(f"levels={levels}: a pyramid (levels > 1) needs ome=True")
    if overwrite and resume:
        raise MaterializeError("choose overwrite or resume, not both")
    codec = Codec(cname, clevel, shuffle)

    order, axes = ome_axes(source.dims) if ome else (tuple(range(len(source.dims))), [])
    dims = tuple(source.dims[d] for d in order)
    image = "0" if ome else image_name(source)
    arrays, spatial = plan_arrays(
        image, dims, source.shape, source.dtype.itemsize, order, chunks, shards, levels
    )
    shape, out_chunks, out_shards = arrays[0].shape, arrays[0].chunks, arrays[0].shards

    output = Output(os.fspath(out), storage_options)
    job = Job(source, output, tuple(arrays), order, spatial, codec)
    if scheduler is None:  # threads here: this machine's memory bounds them
        check_memory(
            arrays,
            source.manifest.chunk_nbytes,
            source.dtype.itemsize,
            output.local is not None,
            workers or os.cpu_count() or 1,
            machine_memory(),
        )
    settings = {
        "source": source.attrs["tiffstore"]["source"],
        "zarr_format": zarr_format,
        "dtype": job.dtype.str,
        "dims": list(dims),
        "order": list(order),
        "arrays": [
            {
                "path": a.path,
                "shape": list(a.shape),
                "chunks": list(a.chunks),
                "shards": None if a.shards is None else list(a.shards),
            }
            for a in arrays
        ],
        "codec": asdict(codec),
        "ome": ome,
    }
    coords = [] if ome else coordinates(source)
    members = [a.path for a in arrays] + [c[0] for c in coords]
    marker = {"complete": False, "settings": settings, "members": members}

    try:
        store = output.store()
        found = prepare_output(
            store, output, marker, overwrite=overwrite, resume=resume, verify=verify
        )
        recorded = set() if found is None else done_tasks(store)
        # Finished: marked complete with no journal left (a journal is a finish cut short).
        finished = found is not None and bool(found.get("complete")) and not recorded
        if finished:
            root = zarr.open_group(store, mode="r+", use_consolidated=False)
            done = {t.record_key for a in arrays for t in job.tasks(a)}
        else:
            root = write_metadata(
                store, source, job, marker, codec, zarr_format, coords, axes, found
            )
            if found is None:
                metadata_written(store)
            done = recorded
        runner = Runner(job, workers, scheduler)
        try:
            write_started = time.perf_counter()
            written, skipped, nbytes = write_all(job, runner, done, progress)
            write_seconds = time.perf_counter() - write_started
            verified: bool | None = None
            mismatched: list[str] = []
            if verify:
                mismatched = verify_all(job, runner, progress)
                verified = not mismatched
        finally:
            runner.close()
        if mismatched:
            reopen_mismatched(job, store, root, marker, mismatched)
        elif not finished:  # a finished output only checked is left as it was
            finish(store, output, root, marker, arrays)
    except OSError as exc:
        if isinstance(exc, TiffStoreError):
            raise  # a source file's problem, named already
        # The output's side: no such folder, no permission, a full disk, a refused PUT.
        raise OutputError(f"{output.url}: cannot write the output ({exc}).") from exc
    local = output.local
    return MaterializeSummary(
        path=output.url,
        zarr_format=zarr_format,
        shape=shape,
        chunks=out_chunks,
        shards=out_shards,
        bytes=nbytes,
        stored_bytes=None if local is None else stored_bytes(local / image),
        seconds=time.perf_counter() - started,
        write_seconds=write_seconds,
        chunks_written=written,
        chunks_skipped=skipped,
        complete=not mismatched,
        verified=verified,
        mismatched=tuple(sorted(mismatched)),
    )


def _source(
    source_or_store: Any, open_options: OpenOptions | Mapping[str, Any] | None
) -> TiffStore:
    """The store to read: the one given, or the source opened with ``open_options``."""
    if isinstance(source_or_store, TiffStore):
        given = (
            open_options.given()
            if isinstance(open_options, OpenOptions)
            else tuple(open_options or {})
        )
        if given:
            raise OptionError(
                f"open_options= ({', '.join(given)}) does not apply to a store that is open "
                "already: pass the source itself (a folder, glob or URL), or open it with "
                "these options."
            )
        return source_or_store
    if isinstance(open_options, OpenOptions):
        options = open_options
    else:
        options = OpenOptions.of(**dict(open_options or {}))
    options.refuse(SOURCE_REFUSES, "materialize's source", SOURCE_REFUSES)
    if options.chunks is None:
        # Pages: a task reads just the planes its output chunks cover, whatever the
        # store's default chunks (which group small files) would be.
        options = options.replace(chunks="page")
    return open_store(source_or_store, options)

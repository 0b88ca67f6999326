"""The state of a materialize output: who is writing it, what is done, whether it is finished.

A run writes, in this order, each write whole (a local file under a temporary name,
then renamed; an object PUT whole):

1. ``.tiffstore-journal/setup.json``, the marker that says "tiffstore is setting this
   output up" (the settings and the members). While it is there, nothing else in the
   output is trusted: a resume removes what the members name and begins again.
2. The metadata, with ``attrs["tiffstore"]["materialize"]["complete"] = False`` on the
   group and the images; then ``setup.json`` is removed.
3. Each task's chunks, then its record under ``.tiffstore-journal/``; a task without
   one is redone whole on ``resume=True``. This journal, rather than
   ``write_empty_chunks=True``, tells "not done" from "all fill value": zarr still skips
   chunks that are all fill value, and a resume needs no chunk to be read back.
4. Temporary files swept, ``complete: True``, metadata consolidated; the journal removed.

A process killed mid-write leaves zarr's temporary files (``.zgroup.<32 hex>.partial``,
``image/0.0.<32 hex>.partial``). They are never data: an output holding nothing else
counts as empty, a resume removes them, a finished output holds none, and they are not
counted as stored bytes. An output is *finished* when its group says ``complete: True``
and it has no journal left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import zarr
from zarr.buffer import default_buffer_prototype

from tiffstore._compat import zarr_sync
from tiffstore.errors import MaterializeError
from tiffstore.outputs.materialize.plan import JOURNAL, ArrayPlan, Output

__all__ = [
    "SETUP",
    "check_no_symlinks",
    "done_tasks",
    "finish",
    "flat_settings",
    "is_temporary",
    "mark",
    "marker_of",
    "materialize_status",
    "metadata_written",
    "prepare_output",
    "root_attrs",
    "stored_bytes",
    "sweep_temporary",
]

#: Written first and removed once the metadata is all written (see the module's steps).
SETUP = f"{JOURNAL}/setup.json"
#: The name zarr's ``LocalStore`` writes a file under before renaming it into place.
_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$")
_ROOT_KEYS = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a key or a file name) is a temporary file of an unfinished write.

    Examples
    --------
    >>> is_temporary("image/0.0.0c3f2a4b5d6e7f8091a2b3c4d5e6f708.partial")
    True
    >>> is_temporary("image/0.0.0")
    False
    """
    return _TEMPORARY.search(name.rsplit("/", 1)[-1]) is not None


def marker_of(root_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    ours = root_attrs.get("tiffstore", {})
    marker = ours.get("materialize") if isinstance(ours, dict) else None
    return marker if isinstance(marker, dict) else None


def root_attrs(store: Any) -> dict[str, Any] | None:
    """The root group's attributes, or ``None`` when the root is not a Zarr group."""
    try:
        return dict(zarr.open_group(store, mode="r", use_consolidated=False).attrs)
    except Exception:  # not a group (absent, an array, foreign files): the caller decides
        return None


def check_no_symlinks(local: Path) -> None:
    """Refuse an output that is, or holds, a symbolic link: writes must stay inside it."""
    if local.is_symlink():
        raise MaterializeError(
            f"{local} is a symbolic link; materialize writes only inside a real folder. "
            "Give the link's target instead."
        )
    if local.is_dir():
        for root, dirs, files in os.walk(local):
            for name in dirs + files:
                if (Path(root) / name).is_symlink():
                    raise MaterializeError(
                        f"{Path(root) / name} is a symbolic link inside the output; "
                        "materialize never writes through links. Remove it first."
                    )


def materialize_status(
    out: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The materialize marker of an output (``{"complete": ..., ...}``), or ``None``.

    Examples
    --------
    >>> tiffstore.materialize_status("mydata.zarr")["complete"]  # doctest: +SKIP
    True
    """
    output = Output(os.fspath(out), storage_options)
    attrs = root_attrs(output.store())
    return None if attrs is None else marker_of(attrs)


def _only_temporary(store: Any, output: Output) -> list[str] | None:
    """The output's keys when every one is a temporary file (``[]``: nothing), else ``None``.

    A local output may also hold the journal's folder, which the first write makes before
    its file; any other folder, or any other file, makes the output not empty.
    """
    local = output.local
    if local is not None:
        if not local.exists():
            return []
        if not local.is_dir():
            return None
        keys = []
        for root, dirs, files in os.walk(local):
            inside = Path(root).relative_to(local)
            if any((inside / d).parts[0] != JOURNAL for d in dirs):
                return None
            for name in files:
                if not is_temporary(name):
                    return None
                keys.append((inside / name).as_posix())
        return keys

    async def listed() -> list[str] | None:
        keys = []
        async for key in store.list():
            if not is_temporary(key):
                return None
            keys.append(key)
        return keys

    return zarr_sync(listed())


def sweep_temporary(output: Output) -> int:
    """Remove the temporary files an interrupted write left; how many there were.

    Only zarr's ``LocalStore`` writes under a temporary name (object stores put whole
    objects), so only a local output is walked.
    """
    local = output.local
    if local is None or not local.is_dir():
        return 0
    found = [
        Path(root) / name
        for root, _, files in os.walk(local)
        for name in files
        if is_temporary(name)
    ]
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def _any_key(store: Any, prefix: str) -> bool:
    async def first() -> bool:
        async for _ in store.list_prefix(prefix):
            return True
        return False

    return bool(zarr_sync(first()))


def _found(store: Any, output: Output) -> tuple[dict[str, Any] | None, bool]:
    """The marker of the run that wrote ``output`` (its setup record's, else its group's),
    and whether that run was still setting the output up."""
    local = output.local
    if local is not None and not local.is_dir():
        return None, False  # a file: no output of ours
    setup = zarr_sync(store.get(SETUP, prototype=default_buffer_prototype()))
    if setup is not None:
        return dict(json.loads(setup.to_bytes())), True
    attrs = root_attrs(store)
    return (None if attrs is None else marker_of(attrs)), False


def prepare_output(
    store: Any,
    output: Output,
    marker: dict[str, Any],
    *,
    overwrite: bool,
    resume: bool,
    verify: bool = False,
) -> dict[str, Any] | None:
    """Check that ``output`` may be written; the marker of the run to go on with, if any.

    ``None``: the output is begun afresh, and its setup record is written already. An
    empty output, or one holding only temporary files, is begun afresh whatever the
    flags. Otherwise it must be materialize's: an unfinished one is finished
    (``resume``), a finished one checked (``verify`` or ``resume``), either replaced
    (``overwrite``: only what materialize wrote is removed); a resume needs the same
    settings. An output whose setup was cut short is begun again.
    """
    local = output.local
    if local is not None:
        check_no_symlinks(local)
    stale = _only_temporary(store, output)
    if stale is not None:
        _begin(store, output, marker, None, stale)
        return None
    found, setting_up = _found(store, output)
    if found is None:
        raise MaterializeError(
            f"{output.url} exists and is not empty, and was not written by tiffstore "
            "materialize; refusing to touch it. Choose another output or empty it yourself."
        )
    finished = bool(found.get("complete")) and not setting_up and not _any_key(store, JOURNAL + "/")
    if not overwrite:
        if finished and not (resume or verify):
            raise MaterializeError(
                f"{output.url} exists and is not empty: it is a finished materialize output. "
                "Pass overwrite=True to replace it, or verify=True to compare it with the "
                "source."
            )
        if not finished and not resume:
            raise MaterializeError(
                f"{output.url} exists and is not empty: it is an unfinished materialize "
                "output. Pass resume=True to finish it, or overwrite=True to start again."
            )
        before = flat_settings(found.get("settings", {}))
        now = flat_settings(marker["settings"])
        diff = [
            f"{k}: {before.get(k)} then, {now.get(k)} now" for k in now if before.get(k) != now[k]
        ]
        if diff:
            raise MaterializeError(
                f"{output.url} was started with other settings ({'; '.join(diff)}). Use the "
                "same options, or pass overwrite=True to start again."
            )
    if overwrite or setting_up:
        _begin(store, output, marker, found)
        return None
    sweep_temporary(output)
    return found


def _begin(
    store: Any,
    output: Output,
    marker: dict[str, Any],
    earlier: Mapping[str, Any] | None,
    stale: Sequence[str] = (),
) -> None:
    """Write the setup record, then remove what an earlier run wrote and any temporary file.

    The record goes first, naming the earlier run's members too: a run killed while
    removing them leaves an output that the next one begins again.
    """
    members = list(dict.fromkeys([*marker["members"], *(earlier or {}).get("members", [])]))
    record = json.dumps({**marker, "members": members}).encode()

    async def begin() -> None:
        await store.set(SETUP, default_buffer_prototype().buffer.from_bytes(record))
        for key in stale:
            with contextlib.suppress(FileNotFoundError):
                await store.delete(key)
        if earlier is None:
            return
        # Records first, so that no task counts as done once any chunk is gone.
        # Only plain names an array or coordinate of ours can have: never "." or "..",
        # which would name the whole output (or above it).
        safe = [m for m in members if isinstance(m, str) and m and "/" not in m and m[0] != "."]
        for member in safe:
            await store.delete_dir(f"{JOURNAL}/{member}")
        for member in safe:
            await store.delete_dir(member)
        for key in _ROOT_KEYS:
            with contextlib.suppress(FileNotFoundError):
                await store.delete(key)

    zarr_sync(begin())
    sweep_temporary(output)


def metadata_written(store: Any) -> None:
    """Drop the setup record: the metadata is all there, and a resume keeps it."""
    with contextlib.suppress(FileNotFoundError):
        zarr_sync(store.delete(SETUP))


def flat_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as ``name -> value``, one entry per array field (``image chunks``)."""
    flat = {k: v for k, v in settings.items() if k != "arrays"}
    for array in settings.get("arrays", []):
        flat.update({f"{array['path']} {k}": v for k, v in array.items() if k != "path"})
    flat["levels"] = len(settings.get("arrays", []))
    return flat


def done_tasks(store: Any) -> set[str]:
    """The keys of task records already written."""

    async def keys() -> set[str]:
        return {k async for k in store.list_prefix(JOURNAL + "/") if not is_temporary(k)}

    return zarr_sync(keys())


def stored_bytes(path: Path) -> int | None:
    """Bytes of the chunk (or shard) files under ``path``: no metadata, no temporary file."""
    if not path.is_dir():
        return None
    return sum(
        f.stat().st_size
        for f in path.rglob("*")
        if f.is_file()
        and not f.name.startswith(".")
        and f.name != "zarr.json"
        and not is_temporary(f.name)
    )


def mark(
    store: Any,
    root: Any,
    marker: dict[str, Any],
    arrays: Sequence[ArrayPlan],
    *,
    complete: bool,
) -> None:
    """Set the completion marker on the images, then the group, then consolidate."""
    for plan in arrays:
        arr = root[plan.path]
        ours = dict(arr.attrs["tiffstore"])
        ours["materialize"] = {"complete": complete}
        arr.attrs.update({"tiffstore": ours})
    root.attrs.update({"tiffstore": {"materialize": {**marker, "complete": complete}}})
    with warnings.catch_warnings():
        # Consolidated metadata is not yet in the format 3 spec; xarray still reads it.
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store, zarr_format=root.metadata.zarr_format)


def finish(
    store: Any, output: Output, root: Any, marker: dict[str, Any], arrays: Sequence[ArrayPlan]
) -> None:
    """Sweep temporary files, mark the output complete (consolidated), drop the journal."""
    sweep_temporary(output)
    mark(store, root, marker, arrays, complete=True)
    zarr_sync(store.delete_dir(JOURNAL))

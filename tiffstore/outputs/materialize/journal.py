"""The state of a materialize output: its completion marker and the journal of done tasks.

Metadata is written first, with ``attrs["tiffstore"]["materialize"]["complete"] =
False`` on the group and the images. Each finished task then writes a small record
under ``.tiffstore-journal/``, after its chunks, so a task without one is redone
whole on ``resume=True``. When every task is done the marker becomes ``complete:
True``, metadata is consolidated, and the journal removed. This journal, rather than
``write_empty_chunks=True``, tells "not done" from "all fill value": zarr still
skips chunks that are all fill value, and a resume needs no chunk to be read back.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import zarr

from tiffstore._compat import zarr_sync
from tiffstore.errors import MaterializeError
from tiffstore.outputs.materialize.plan import JOURNAL, ArrayPlan, Output

__all__ = [
    "check_no_symlinks",
    "done_tasks",
    "finish",
    "flat_settings",
    "is_empty",
    "mark",
    "marker_of",
    "materialize_status",
    "prepare_output",
    "remove_ours",
    "root_attrs",
    "stored_bytes",
]


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


def is_empty(store: Any, output: Output) -> bool:
    local = output.local
    if local is not None:
        return not local.exists() or (local.is_dir() and not any(local.iterdir()))

    async def first() -> bool:
        async for _ in store.list():
            return False
        return True

    return bool(zarr_sync(first()))


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


def prepare_output(
    store: Any, output: Output, settings: dict[str, Any], *, overwrite: bool, resume: bool
) -> dict[str, Any] | None:
    """Check that ``output`` may be written; the marker of the run to resume, if any.

    An empty or absent output is fine. A non-empty one must be an earlier
    materialize output, and then is removed (``overwrite``) or resumed with the
    same settings (``resume``).
    """
    local = output.local
    if local is not None:
        check_no_symlinks(local)
    if is_empty(store, output):
        return None
    attrs = root_attrs(store)
    found = None if attrs is None else marker_of(attrs)
    if not (overwrite or resume):
        raise MaterializeError(
            f"{output.url} exists and is not empty. Pass overwrite=True (--overwrite) to "
            "replace an earlier materialize output, or resume=True (--resume) to finish one."
        )
    if found is None:
        raise MaterializeError(
            f"{output.url} is not empty and was not written by tiffstore materialize; "
            "refusing to touch it. Choose another output or empty it yourself."
        )
    if overwrite:
        remove_ours(store, found)
        return None
    before = flat_settings(found.get("settings", {}))
    now = flat_settings(settings)
    diff = [f"{k}: {before.get(k)} then, {now.get(k)} now" for k in now if before.get(k) != now[k]]
    if diff:
        raise MaterializeError(
            f"{output.url} was started with other settings ({'; '.join(diff)}). Resume with "
            "the same options, or pass overwrite=True (--overwrite) to start again."
        )
    return found


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
        return {k async for k in store.list_prefix(JOURNAL + "/")}

    return zarr_sync(keys())


def stored_bytes(path: Path) -> int | None:
    if not path.is_dir():
        return None
    return sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")
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


def finish(store: Any, root: Any, marker: dict[str, Any], arrays: Sequence[ArrayPlan]) -> None:
    """Mark the output complete (metadata consolidated), then drop the journal."""
    mark(store, root, marker, arrays, complete=True)
    zarr_sync(store.delete_dir(JOURNAL))


def remove_ours(store: Any, marker: Mapping[str, Any]) -> None:
    """Remove what an earlier materialize wrote: its arrays, root metadata and journal."""

    async def remove() -> None:
        for member in [*marker.get("members", []), JOURNAL]:
            if member and "/" not in member and not member.startswith(".."):
                await store.delete_dir(member)
        for key in ("zarr.json", ".zgroup", ".zattrs", ".zmetadata"):
            with contextlib.suppress(FileNotFoundError):
                await store.delete(key)

    zarr_sync(remove())

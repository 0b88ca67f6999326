"""``tiffstore inspect``: what tiffstore understood of an acquisition, before any computing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tiffstore.cli.arguments import open_options
from tiffstore.cli.console import EXIT_OK, count, make_console, size
from tiffstore.manifest.chunking import describe_chunks
from tiffstore.manifest.documents import array_attributes
from tiffstore.manifest.model import Manifest
from tiffstore.opening import open as open_store
from tiffstore.outputs.materialize.journal import materialize_status
from tiffstore.outputs.references import describe_reference_chunks
from tiffstore.read.store import TiffStore
from tiffstore.sources.checksums import ChecksummedSource

__all__ = ["inspect_command", "inspect_report", "open_with_status", "print_inspect"]


def _values_text(values: Sequence[Any], limit: int = 6) -> str:
    values = list(values)
    present = [v for v in values if v is not None]
    if len(values) <= limit:
        return ", ".join("-" if v is None else str(v) for v in values)
    if present and all(isinstance(v, (int, float)) for v in present):
        return f"{min(present)} .. {max(present)}"
    head = ", ".join(str(v) for v in values[:3])
    return f"{head}, ... {values[-1]}"


def _flat(values: Any) -> list[Any]:
    if isinstance(values, list):
        out: list[Any] = []
        for v in values:
            out.extend(_flat(v))
        return out
    return [values]


def inspect_report(store: TiffStore) -> dict[str, Any]:
    """What ``inspect --json`` prints: the array, axes, coordinates, files and missing cells."""
    m: Manifest = store.manifest
    attrs = store.attrs["tiffstore"]
    n_chunks = 1
    for g in m.chunk_grid:
        n_chunks *= g
    return {
        "source": attrs["source"],
        "files": len(m.files),
        "bytes_on_disk": int(m.file_sizes.sum()),
        "shape": list(m.shape),
        "dims": list(m.dims),
        "dtype": str(m.dtype),
        "nbytes": m.nbytes,
        "chunks": list(m.chunks),
        "chunk_bytes": store.manifest.chunk_nbytes,
        "chunk_count": n_chunks,
        "chunks_why": describe_chunks(store.manifest),
        "reference_chunks": describe_reference_chunks(store.manifest),
        "axes": attrs["axes"],
        "coords": attrs["coords"],
        "template": m.template,
        "missing": m.missing(),
        "fill_value": m.fill_value,
        "left_out": list(store.left_out),
        "truncated": store.truncated,
        "incomplete": list(store.incomplete),
        "scale": {d: {"size": v, "units": u} for d, (v, u) in store.scale.items()},
        "layouts": [
            {"storage": lay.storage, "shape": list(lay.shape), "dtype": lay.dtype}
            for lay in m.layouts
        ],
        "checksums": None
        if not isinstance(m.source, ChecksummedSource)
        else {"block_bytes": m.source.block, "blocks": len(m.source.crcs)},
        "zarr_format": store.zarr_format,
        "shards": None
        if store.shards is None
        else {"inner_chunks": list(store.shards.inner), "per_shard": store.shards.count},
    }


def print_inspect(console: Console, store: TiffStore, show_files: bool = False) -> None:
    """Print the human-readable inspect report."""
    r = inspect_report(store)
    m = store.manifest
    console.print(
        f"[bold]Source[/bold]  {r['source']}  "
        f"({count(r['files'], 'file')}, {size(r['bytes_on_disk'])})",
        highlight=False,
    )
    shape = " x ".join(f"{d}={n}" for d, n in zip(r["dims"], r["shape"], strict=True))
    console.print(f"[bold]Array[/bold]   {shape}  {r['dtype']}  ({size(r['nbytes'])})")
    console.print(
        f"[bold]Chunks[/bold]  {tuple(r['chunks'])}  {size(r['chunk_bytes'])} each, "
        f"{r['chunk_count']:,} in all"
    )
    console.print(f"          {r['chunks_why']}", highlight=False)
    console.print(f"[bold]Refs[/bold]    chunks {r['reference_chunks']}", highlight=False)
    served = f"Zarr format {r['zarr_format']}"
    if r["shards"]:
        served += (
            f", each chunk a shard of {r['shards']['per_shard']} inner chunks "
            f"{tuple(r['shards']['inner_chunks'])}"
        )
    console.print(f"[bold]Served[/bold]  {served}", highlight=False)
    if r["checksums"]:
        console.print(
            f"[bold]Checksums[/bold] {r['checksums']['blocks']:,} blocks of "
            f"{size(r['checksums']['block_bytes'])}: every read is checked against them",
            highlight=False,
        )
    if r["scale"]:
        scale = ", ".join(f"{d}={v['size']:g} {v['units']}" for d, v in r["scale"].items())
        console.print(f"[bold]Pixel[/bold]   {scale}")
    axes = Table(title="Axes", title_justify="left")
    for col in ("axis", "size", "kind", "from", "values"):
        axes.add_column(col)
    for a in r["axes"]:
        values = _values_text(a["values"]) if "values" in a else f"0 .. {a['size'] - 1}"
        axes.add_row(a["name"], str(a["size"]), a["kind"], a["source"], values)
    console.print(axes)
    name_axes = {a.name for a in m.name_axes}
    extra = {k: v for k, v in r["coords"].items() if k not in name_axes}
    if extra:
        coords = Table(title="Coordinates", title_justify="left")
        for col in ("name", "over", "units", "values"):
            coords.add_column(col)
        for name, c in extra.items():
            coords.add_row(
                name, ", ".join(c["dims"]), c.get("units", ""), _values_text(_flat(c["values"]))
            )
        console.print(coords)
    missing = r["missing"]
    if missing:
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in cell.items()) for cell in missing[:8])
        more = f" ... and {len(missing) - 8} more" if len(missing) > 8 else ""
        console.print(
            f"[bold yellow]Missing[/bold yellow] {count(len(missing), 'file')}, served as "
            f"fill value {m.fill_value}: {shown}{more}"
        )
    else:
        console.print("[bold]Missing[/bold] none: every grid cell has a file")
    for key, title, why in (
        (
            "incomplete",
            "Still being written",
            "left out at the open (empty, cut short or changing), their cells served as "
            "the fill value among the missing; open again once they are complete",
        ),
        (
            "truncated",
            "Truncated",
            "the header points past the end of the file (still being written?); "
            "reading it fails: replace or exclude it",
        ),
        (
            "left_out",
            "Left out",
            "a name with a part the others lack; pass --exclude to drop it silently",
        ),
    ):
        if r[key]:
            console.print(
                f"[bold yellow]{title}[/bold yellow] {count(len(r[key]), 'file')}: {why}:",
                highlight=False,
            )
            for name in r[key][:20]:
                console.print(f"  {name}", markup=False, highlight=False)
            if len(r[key]) > 20:
                console.print(f"  ... and {len(r[key]) - 20} more (--json lists them all)")
    console.print("[bold]Template[/bold] " + r["template"].replace("[", "\\["), highlight=False)
    console.print("          (pass it as pattern= / --pattern to fix or adjust how names are read)")
    if show_files:
        files = Table(title="Files", title_justify="left")
        for d in (a.name for a in m.name_axes):
            files.add_column(d)
        files.add_column("file")
        for cell in np.ndindex(*m.file_index.shape):
            i = int(m.file_index[cell])
            labels = [str(a.values[k]) for a, k in zip(m.name_axes, cell, strict=True)]
            files.add_row(
                *labels, Text(m.files[i]) if i >= 0 else Text("(missing)", style="yellow")
            )
        console.print(files)


def _print_materialized(console: Console, path: str, status: dict[str, Any], as_json: bool) -> int:
    """``inspect`` of a materialize output: whether it is complete, and what it holds."""
    if as_json:
        print(json.dumps({"materialized": path, **status}, indent=1))
        return 0
    settings = status.get("settings", {})
    state = (
        "[bold green]complete[/bold green]"
        if status.get("complete")
        else "[bold red]INCOMPLETE[/bold red] (interrupted or failed verification: "
        "finish it with `tiffstore materialize SOURCE OUT --resume`)"
    )
    console.print(f"[bold]Materialized[/bold] {path}: {state}")
    console.print(f"  from {settings.get('source')}, Zarr format {settings.get('zarr_format')}")
    for array in settings.get("arrays", []):
        shape = " x ".join(
            f"{d}={n}" for d, n in zip(settings.get("dims", []), array["shape"], strict=False)
        )
        console.print(
            f"  {array['path']}: {shape} {settings.get('dtype')}, chunks {array['chunks']}"
        )
    return 0


#: What each step of an open is called on the terminal.
_STEP_TEXT = {
    "listing": "Listing the files",
    "names": "Reading the file names",
    "headers": "Reading the TIFF headers",
    "checksums": "Reading every byte for checksums",
}


def open_with_status(source: Any, options: Any, quiet: bool = False, **changes: Any) -> TiffStore:
    """``tiffstore.open(source, options)`` with a status line on a terminal's stderr
    saying which step of the open is running (listing, names, headers, checksums)."""
    errors = make_console(stderr=True)
    show = not quiet and errors.is_terminal
    with errors.status("Opening", spinner="dots") if show else nullcontext() as status:

        def progress(step: str, done: int, total: int | None) -> None:
            if status is None:
                return
            text = _STEP_TEXT.get(step, step)
            if total is not None:
                so_far = f"{done:,} of {total:,}" if done else f"{total:,}"
                text = f"{text} ({so_far} {'file' if total == 1 else 'files'})"
            status.update(text + " ...")

        return open_store(source, options, progress=progress, **changes)


def inspect_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore inspect``: the report of what was understood (or of a materialize output)."""
    sources = [args.source] if isinstance(args.source, str) else list(args.source)
    if len(sources) == 1:
        made = materialize_status(sources[0])
        if made is not None:
            return _print_materialized(console, sources[0], made, args.json)
    store = open_with_status(args.source, open_options(args), args.quiet)
    if args.json:
        report = inspect_report(store)
        if args.files:
            report["file_table"] = array_attributes(store.manifest, max_files=sys.maxsize)[
                "tiffstore"
            ]["files"]
        print(json.dumps(report, indent=1))
    else:
        print_inspect(console, store, show_files=args.files)
    return EXIT_OK

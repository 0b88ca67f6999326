"""The ``tiffstore`` command: argument parsing and printing only.

``tiffstore inspect SOURCE`` shows what tiffstore understood of an acquisition;
``tiffstore demo`` writes sample data and walks through opening and reading it;
``tiffstore materialize SOURCE OUT`` writes a real, compressed Zarr copy.


``tiffstore preview SOURCE out.png`` draws a contact sheet of what was understood.
``tiffstore serve SOURCE`` serves the array over HTTP with a viewer page.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import __version__
from .build import ChunkSpec, describe_chunks
from .checksums import ChecksummedSource
from .documents import array_attributes
from .errors import ServeError, TiffStoreError
from .manifest import Manifest
from .store import TiffStore

__all__ = ["main", "parse_chunks"]

#: Chunk requests by name, as ``tiffstore.open(chunks=...)`` takes them.
CHUNK_WORDS = ("page", "file", "native", "auto")

#: Exit statuses: 0 success, 1 the data or the files (a clear message on stderr),
#: 2 the command line itself (usage, from argparse).
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

_DEMO_CODE = """\
import dask.array as da
import tiffstore

store = tiffstore.open("{path}")    # a folder, a glob or a list of files
print(store.dims, store.shape)
stack = da.from_zarr(store)             # no copy: chunks are read from the TIFFs
mip = stack.max(axis=2).compute()       # max projection along z, per channel and stack
"""


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} B"


def parse_chunks(text: str | None) -> ChunkSpec:
    """A ``--chunks`` value as ``tiffstore.open(chunks=...)`` takes it.

    ``page``, ``file``, ``native``, ``auto``, an int (pages per chunk), or a
    comma-separated shape with ``-1`` (or nothing) for a whole dim.

    Examples
    --------
    >>> parse_chunks("native"), parse_chunks("10"), parse_chunks("1,1,10,-1,-1")
    ('native', 10, (1, 1, 10, None, None))
    """
    if text is None:
        return None
    text = text.strip()
    if text.lower() in CHUNK_WORDS:
        return text.lower()
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        shape = tuple(None if p.strip() in ("-1", "", ":") else int(p) for p in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(c is not None and c <= 0 for c in shape):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a chunk request: use {', '.join(CHUNK_WORDS)}, a number of "
            "pages, or a comma-separated shape like 1,1,10,-1,-1 (-1 for a whole dim)"
        )
    return shape


def parse_scale(text: str) -> dict[str, float | tuple[float, str]]:
    """A ``--scale`` value: ``z=2,y=0.1,x=0.1``, each size optionally with a unit (``x=250nm``).

    Examples
    --------
    >>> parse_scale("z=2,x=250nm")
    {'z': 2.0, 'x': (250.0, 'nm')}
    """
    out: dict[str, float | tuple[float, str]] = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*([zyx])\s*=\s*([0-9.eE+-]+)\s*([^\W\d]\w*)?\s*", part)
        if m is None:
            raise argparse.ArgumentTypeError(
                f"{text!r}: write sizes per dim like z=2,y=0.1,x=0.1 or x=250nm"
            )
        try:
            size = float(m[2])
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--scale {text!r}: {m[2]!r} is not a number"
            ) from None
        out[m[1]] = (size, m[3]) if m[3] else size
    return out


#: What a library message says, as the command line says it.
_CLI_WORDS = (
    (re.compile(r"(?:include|exclude)=\[[^\]]*\] \((--[^)]*)\)"), r"\1"),
    (re.compile(r"recursive=False \((--no-recursive)\)"), r"\1"),
    (re.compile(r"\bvalidate=True\b"), "--validate"),
    (re.compile(r"\bchecksum=True\b"), "--checksum"),
    (re.compile(r"\btiles='(keep|stitch)'"), r"--tiles \1"),
    (re.compile(r"\bpattern=(?= |$|;|,|\.)"), "--pattern"),
    (re.compile(r"\bchunks=(?=[(\[\'\d])"), "--chunks "),
    (re.compile(r"\bfill_value="), "--fill-value "),
    (re.compile(r"\b(include|exclude)=(?=[\s.,;)]|$)"), r"--\1"),
)


def for_the_shell(message: str) -> str:
    """A library error message with its options spelled as the command's options."""
    for regex, repl in _CLI_WORDS:
        message = regex.sub(repl, message)
    return message


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


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
        "axes": attrs["axes"],
        "coords": attrs["coords"],
        "template": m.template,
        "missing": m.missing(),
        "left_out": list(store.left_out),
        "truncated": store.truncated,
        "scale": {d: {"size": v, "units": u} for d, (v, u) in store.scale.items()},
        "layouts": [
            {"storage": lay.storage, "shape": list(lay.shape), "dtype": lay.dtype}
            for lay in m.layouts
        ],
        "checksums": None
        if not isinstance(m.source, ChecksummedSource)
        else {"block_bytes": m.source.block, "blocks": len(m.source.crcs)},
    }


def print_inspect(console: Console, store: TiffStore, show_files: bool = False) -> None:
    """Print the human-readable inspect report."""
    r = inspect_report(store)
    m = store.manifest
    console.print(
        f"[bold]Source[/bold]  {r['source']}  "
        f"({_count(r['files'], 'file')}, {_size(r['bytes_on_disk'])})",
        highlight=False,
    )
    shape = " x ".join(f"{d}={n}" for d, n in zip(r["dims"], r["shape"], strict=True))
    console.print(f"[bold]Array[/bold]   {shape}  {r['dtype']}  ({_size(r['nbytes'])})")
    console.print(
        f"[bold]Chunks[/bold]  {tuple(r['chunks'])}  {_size(r['chunk_bytes'])} each, "
        f"{r['chunk_count']:,} in all"
    )
    console.print(f"          {r['chunks_why']}", highlight=False)
    if r["checksums"]:
        console.print(
            f"[bold]Checksums[/bold] {r['checksums']['blocks']:,} blocks of "
            f"{_size(r['checksums']['block_bytes'])}: every read is checked against them",
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
            f"[bold yellow]Missing[/bold yellow] {_count(len(missing), 'file')}, served as "
            f"fill value {m.fill_value}: {shown}{more}"
        )
    else:
        console.print("[bold]Missing[/bold] none: every grid cell has a file")
    for key, title, why in (
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
                f"[bold yellow]{title}[/bold yellow] {_count(len(r[key]), 'file')}: {why}:",
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
        import numpy as np

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


def _cmd_inspect(args: argparse.Namespace, console: Console) -> int:
    from .api import open as open_store
    from .materialize import materialize_status

    sources = [args.source] if isinstance(args.source, str) else list(args.source)
    if len(sources) == 1:
        made = materialize_status(sources[0])
        if made is not None:
            return _print_materialized(console, sources[0], made, args.json)

    errors = _console(stderr=True)
    show = not args.quiet and errors.is_terminal
    with errors.status("Opening", spinner="dots") if show else nullcontext() as status:

        def progress(step: str, done: int, total: int | None) -> None:
            if status is None:
                return
            text = _STEP_TEXT.get(step, step)
            if total is not None:
                count = f"{done:,} of {total:,}" if done else f"{total:,}"
                text = f"{text} ({count} {'file' if total == 1 else 'files'})"
            status.update(text + " ...")

        store = open_store(
            args.source,
            pattern=args.pattern,
            chunks=args.chunks,
            fill_value=args.fill_value,
            validate=args.validate,
            checksum=args.checksum,
            tiles=args.tiles,
            recursive=args.recursive,
            include=args.include,
            exclude=args.exclude,
            scale=args.scale,
            progress=progress,
        )
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


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    import dask.array as da
    import numpy as np
    import tifffile
    import zarr

    from .api import open as open_store
    from .sample import sample_name, write_sample

    keep = args.dir is not None
    root = Path(args.dir) if keep else Path(tempfile.mkdtemp(prefix="tiffstore-demo-"))
    try:
        shape = (args.z, 256, 192)
        _rule(
            console, "[bold]1. A light-sheet acquisition: one TIFF stack per channel and time point"
        )
        t0 = time.perf_counter()
        paths = write_sample(
            root, channels=3, stacks=args.stacks, shape=shape, missing=[(2, args.stacks - 1)]
        )
        console.print(
            f"Wrote {len(paths)} files of {shape} uint16 to {root} in "
            f"{time.perf_counter() - t0:.1f} s. The names say where each file belongs:"
        )
        for p in sorted(paths)[:3]:
            console.print(f"  {p.name}")
        console.print("  ... (channel 2's last stack is missing on purpose)")

        _rule(console, "[bold]2. tiffstore.open: the names are understood, no template needed")
        t0 = time.perf_counter()
        store = open_store(root)
        console.print(
            f"Opened in {1000 * (time.perf_counter() - t0):.0f} ms (headers parsed, nothing copied)."
        )
        print_inspect(console, store)

        _rule(console, "[bold]3. One dask array over every file, read lazily chunk by chunk")
        stack = da.from_zarr(store)
        console.print(stack)
        t0 = time.perf_counter()
        mean = stack.mean(axis=(2, 3, 4)).compute()
        dt = time.perf_counter() - t0
        console.print(
            f"Mean intensity per channel and stack ({_size(stack.nbytes)} read and reduced in "
            f"{dt:.2f} s, dask's start-up included); the missing file reads as 0:"
        )
        table = Table("ch", "wavelength", *[f"stack {s}" for s in range(args.stacks)])
        waves = store.coords["wavelength"]["values"]
        for c in range(mean.shape[0]):
            table.add_row(str(c), f"{waves[c]} nm", *[f"{v:.1f}" for v in mean[c]])
        console.print(table)

        _rule(console, "[bold]4. Exactly what tifffile reads, file by file")
        ref = tifffile.imread(root / sample_name(1, 2))
        same = np.array_equal(stack[1, 2].compute(), ref)
        z = zarr.open_array(store, mode="r")
        same_zarr = np.array_equal(z[1, 2], ref)
        console.print(
            f"stack[1, 2] equals tifffile.imread of ch1 stack0002: [bold]{same}[/bold]; "
            f"through zarr.open_array too: [bold]{same_zarr}[/bold]"
        )

        _rule(console, '[bold]5. chunks="page": one z-plane reads one plane of bytes')
        pages = open_store(root, chunks="page")
        t0 = time.perf_counter()
        plane = da.from_zarr(pages)[0, 1, args.z // 2].compute()
        console.print(
            f"One plane {plane.shape} read in {1000 * (time.perf_counter() - t0):.1f} ms, "
            f"chunks {pages.chunks} ({_size(pages.manifest.chunk_nbytes)} each)"
        )

        _rule(console, "[bold]Your turn")
        path = root if keep else "raw/"
        console.print(_DEMO_CODE.format(path=path), markup=False, highlight=False)
        if not keep:
            console.print("(run `tiffstore demo --dir raw/` to keep the sample data and try this)")
        if not (same and same_zarr):
            console.print("[bold red]The data did not match: please report this.[/bold red]")
            return 1
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            console.print(f"The sample data stays in {root}.")
    return 0


EPILOG = """\
exit status:
  0  success
  1  the files or the data: no TIFF files, names that do not form a grid, files
     that do not match, a truncated file... (one clear message on stderr)
  2  the command line itself: an unknown option or a value it does not take

examples:
  tiffstore inspect raw/                        axes, coordinates, chunks, a template
  tiffstore inspect raw/ --exclude 'MIPs/*'     leave a folder of derived files out
  tiffstore inspect raw/ --chunks native --json
"""


def _rule(console: Console, title: str) -> None:
    """A section heading: a rule across a terminal, a plain line elsewhere."""
    if console.is_terminal:
        console.rule(title)
    else:
        console.print(f"\n{title}", highlight=False)


def _number(text: str) -> int | float:
    """An int where the text is one (so it fits integer pixels), else a float."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _console(stderr: bool = False) -> Console:
    """A console that wraps and cuts nothing when its output is not a terminal, so
    that templates, paths and file names stay whole and copyable."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, soft_wrap=True, width=100_000, color_system=None)


def _shape_arg(text: str) -> tuple[int | None, ...]:
    try:
        return tuple(None if p.strip() in ("-1", "", ":") else int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a comma-separated shape like 1,1,64,256,256 (-1: whole dim)"
        ) from None


def _shards_arg(text: str) -> tuple[int | None, ...] | str:
    return _shape_arg(text) if "," in text else text


def _json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: give a JSON object, like '{{\"anon\": true}}'")
    return value


def _cmd_materialize(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from .materialize import materialize

    show = console.is_terminal and not (args.quiet or args.json)
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    )
    phases: dict[str, TaskID] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in phases:
            phases[phase] = bars.add_task(phase, total=total)
        bars.update(phases[phase], completed=done)

    try:
        with bars:
            summary = materialize(
                args.source,
                args.out,
                chunks=args.chunks,
                zarr_format=args.zarr_format,
                shards=args.shards,
                cname=args.cname,
                clevel=args.clevel,
                shuffle=args.shuffle,
                ome=args.ome,
                levels=args.levels,
                scheduler=args.scheduler,
                workers=args.workers,
                overwrite=args.overwrite,
                resume=args.resume,
                verify=args.verify,
                progress=progress if show else None,
                storage_options=args.storage_options,
                open_options={
                    "pattern": args.pattern,
                    "tiles": args.tiles,
                    "include": args.include,
                    "exclude": args.exclude,
                    "validate": args.validate,
                    "checksum": args.checksum,
                },
            )
    except KeyboardInterrupt:
        Console(stderr=True).print(
            f"[bold yellow]interrupted[/bold yellow]: {args.out} is marked incomplete; "
            "run the same command with --resume to finish it"
        )
        return 130
    if args.json:
        print(json.dumps(summary.to_dict(), indent=1))
    elif not args.quiet:
        stored = (
            f", {_size(summary.stored_bytes)} stored" if summary.stored_bytes is not None else ""
        )
        console.print(
            f"[bold]Wrote[/bold] {summary.path}: {_size(summary.bytes)} in "
            f"{summary.write_seconds:.1f} s ({_size(summary.throughput)}/s{stored}); "
            f"{summary.chunks_written} chunks written, {summary.chunks_skipped} already done"
        )
        if summary.verified:
            console.print("[bold green]Verified[/bold green]: every chunk equals the source")
    if summary.verified is False and not args.json:
        # An error: shown even with --quiet.
        Console(stderr=True).print(
            f"[bold red]{len(summary.mismatched)} chunk(s) differ from the source:[/bold red] "
            f"{', '.join(summary.mismatched)}. Run again with --resume to rewrite them."
        )
    return 0 if summary.verified is not False else 1


def _cmd_refs(args: argparse.Namespace, console: Console) -> int:
    from .api import open as open_store
    from .references import write_references

    opened = time.perf_counter()
    store = open_store(
        args.source,
        pattern=args.pattern,
        storage_options=json.loads(args.storage_options) if args.storage_options else None,
        include=args.include,
        exclude=args.exclude,
        checksum=args.checksum,
    )
    target = write_references(
        store,
        args.target,
        url=args.url,
        format=args.format,
        version=args.version,
        chunks=args.chunks,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - opened
    if args.json:
        print(
            json.dumps({"target": target, "files": len(store.manifest.files), "seconds": seconds})
        )
    elif not args.quiet:
        console.print(
            f"Wrote {args.format} references for {len(store.manifest.files):,} files to "
            f"{target} in {seconds:.1f} s",
            highlight=False,
        )
    return 0


def _cmd_preview(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .api import open as open_store
    from .preview import write_preview

    # One page per chunk: each sampled plane reads that plane's bytes and no more.
    store = open_store(args.source, pattern=args.pattern, chunks="page", tiles=args.tiles)
    options = {
        "max_columns": args.stacks,
        "max_planes": args.planes,
        "tile": args.tile,
    }
    if console.is_terminal and not args.json:
        columns = (*Progress.get_default_columns()[:2], MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, BarColumn(), console=console, transient=True) as bar:
            task = bar.add_task("reading planes", total=None)
            preview = write_preview(
                store,
                args.out,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                **options,
            )
    else:
        preview = write_preview(store, args.out, **options)
    if args.json:
        print(json.dumps(preview.to_json(), indent=1))
        return 0
    summary = preview.to_json()
    console.print(
        f"Wrote {preview.path} ({preview.size[0]} x {preview.size[1]} px): "
        f"{len(preview.row_labels)} row(s) x {len(preview.column_labels)} of "
        f"{preview.columns_total} column(s), max projection of {len(preview.planes)} of "
        f"{preview.planes_total} plane(s) per cell, in {preview.seconds:.1f} s."
    )
    if summary["missing"]:
        console.print(f"[yellow]Missing[/yellow] (marked): {'; '.join(summary['missing'])}")
    return 0


def _cmd_check(args: argparse.Namespace, console: Console) -> int:
    from .check import check

    options = json.loads(args.storage_options) if args.storage_options else None
    kind, n, problems = check(args.target, options, checksum=args.checksum)
    if args.json:
        print(
            json.dumps(
                {
                    "target": args.target,
                    "kind": kind,
                    "files": n,
                    "problems": [{"file": p.file, "problem": p.problem} for p in problems],
                },
                indent=1,
            )
        )
    elif problems:
        what = "no longer match" if kind == "references" else "have problems"
        console.print(f"{len(problems)} of {n} files {what}:", highlight=False)
        for p in problems:
            console.print(f"  {escape(p.file)}: {escape(p.problem)}", highlight=False)
    else:
        what = "match the references" if kind == "references" else "read and agree"
        console.print(f"All {n} files {what}.", highlight=False)
    return EXIT_ERROR if problems else EXIT_OK


def _cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from .api import open as open_store

    try:
        from .serve import VIEWER_PATH, is_loopback, open_socket, serve
    except ImportError as exc:
        raise ServeError(
            f'tiffstore serve needs Starlette and uvicorn ({exc}): pip install "tiffstore[serve]"'
        ) from exc

    store = open_store(
        args.source, pattern=args.pattern, chunks=args.chunks, checksum=args.checksum
    )
    sock = open_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    # Plain print, flushed: scripts and tests read the URL from the first line.
    print(f"Serving {store!r} at {url}", flush=True)
    print(f"Viewer: {url}{VIEWER_PATH.lstrip('/')}  (Ctrl-C to stop)", flush=True)
    if not is_loopback(host):
        Console(stderr=True).print(
            f"[bold yellow]warning:[/bold yellow] listening on {host}: anyone who can reach "
            "this address can read the data."
        )
    try:
        serve(store, sock, log_level="info" if args.verbose else "warning")
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises Ctrl-C
        print("Stopped.", flush=True)
    return 0


#: The help of ``--checksum`` where it opens a store.
CHECKSUM_HELP = (
    "read every byte now and keep block checksums; each read is then checked, and bytes "
    "changed since are an error (catches same-size rewrites the size+time check misses)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiffstore",
        description="Open folders of microscope TIFF files as one virtual Zarr array.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tiffstore {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display, errors only"
    )
    # The same switches after the command (``tiffstore inspect raw/ -q``); SUPPRESS
    # keeps a subcommand's default from overwriting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output"
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress display, errors only",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "inspect",
        help="show what tiffstore understood of an acquisition",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    p.add_argument("source", nargs="+", help="folder, glob, or files")
    p.add_argument("--pattern", help="template or regex for the file names (default: inferred)")
    p.add_argument(
        "--chunks",
        type=parse_chunks,
        help="page, file, native, auto, a number of pages per chunk, or a shape like "
        "1,1,10,-1,-1 (default: whole pages up to about 16 MiB)",
    )
    p.add_argument(
        "--fill-value",
        type=_number,
        default=None,
        help="value of missing files' pixels (default 0)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--files", action="store_true", help="list every file with its place in the grid"
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="parse every file's header now and check each holds all its pixel data",
    )
    p.add_argument("--checksum", action="store_true", help=CHECKSUM_HELP)
    p.add_argument(
        "--tiles",
        choices=("keep", "stitch"),
        default="keep",
        help="keep tile fields (000x_001y) as axes, or stitch a non-overlapping grid",
    )
    p.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="take only the folder's own files, not its subfolders'",
    )
    p.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="keep only files matching GLOB (relative name, e.g. 'raw/*'; repeatable)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="leave out files matching GLOB (e.g. 'MIPs/*' or '*_thumb.tif'; repeatable)",
    )
    p.add_argument(
        "--scale",
        type=parse_scale,
        metavar="z=2,y=0.1,x=0.1",
        help="pixel size per dim, overriding the files' metadata (units: x=250nm; "
        "default micrometer)",
    )
    p.set_defaults(func=_cmd_inspect)

    d = sub.add_parser(
        "demo", help="write sample data and show tiffstore at work", parents=[common]
    )
    d.add_argument("--dir", help="write the sample data here and keep it (default: temporary)")
    d.add_argument("--stacks", type=int, default=6, help="time points (default 6)")
    d.add_argument("--z", type=int, default=64, help="planes per stack (default 64)")
    d.set_defaults(func=_cmd_demo)

    w = sub.add_parser(
        "materialize", help="write a real, compressed Zarr copy (resumable, verifiable)"
    )
    w.add_argument("source", help="folder, glob, URL or reference file (as for inspect)")
    w.add_argument("out", help="output folder or fsspec URL (s3://bucket/data.zarr)")
    w.add_argument(
        "--chunks",
        type=_shape_arg,
        help="output chunks in the source's dim order (default 64 z x 256 y x 256 x, 1 elsewhere)",
    )
    w.add_argument("--zarr-format", type=int, choices=(2, 3), default=2, help="default 2")
    w.add_argument(
        "--shards", type=_shards_arg, help="format 3: shard shape (1,1,64,1024,1024) or size (1GB)"
    )
    w.add_argument("--cname", default="zstd", help="Blosc compressor (zstd)")
    w.add_argument("--clevel", type=int, default=3, help="Blosc level (3)")
    w.add_argument(
        "--shuffle", choices=("noshuffle", "shuffle", "bitshuffle"), default="bitshuffle"
    )
    w.add_argument("--ome", action="store_true", help="write OME-NGFF metadata (0.4 / 0.5)")
    w.add_argument("--levels", type=int, default=1, help="with --ome: pyramid levels (1)")
    w.add_argument("--scheduler", help="dask.distributed scheduler address to run on")
    w.add_argument("--workers", type=int, help="local threads (default: one per CPU)")
    w.add_argument("--overwrite", action="store_true", help="replace an earlier materialize output")
    w.add_argument("--resume", action="store_true", help="finish an interrupted run")
    w.add_argument("--verify", action="store_true", help="compare the output with the source")
    w.add_argument("--storage-options", type=_json_arg, help="fsspec options for OUT, as JSON")
    w.add_argument("--pattern", help="template or regex for the file names (default: inferred)")
    w.add_argument("--tiles", choices=("keep", "stitch"), default="keep")
    w.add_argument("--include", action="append", help="keep only names matching this glob")
    w.add_argument("--exclude", action="append", help="leave out names matching this glob")
    w.add_argument(
        "--validate",
        action="store_true",
        help="parse every file's header first and check each holds all its pixel data",
    )
    w.add_argument("--checksum", action="store_true", help=CHECKSUM_HELP)
    w.add_argument("--quiet", action="store_true", help="print nothing but errors")
    w.add_argument("--json", action="store_true", help="print the summary as JSON")
    w.set_defaults(func=_cmd_materialize)

    r = sub.add_parser(
        "refs",
        parents=[common],
        help="write fsspec reference files (kerchunk JSON or Parquet) for the TIFFs",
        description=(
            "Write a reference file that maps every Zarr key of the array to the TIFF bytes "
            "holding it, so any fsspec + zarr client reads the acquisition, from where the "
            "files are now or from --url, with no tiffstore installed."
        ),
        epilog=(
            "examples:\n"
            "  tiffstore refs raw/ raw.json\n"
            "  tiffstore refs raw/ raw.json --url s3://bucket/raw/\n"
            "  tiffstore refs raw/ raw.parq --format parquet --chunks native\n"
            "read them back (compressed files also need imagecodecs):\n"
            '  fs = fsspec.filesystem("reference", fo="raw.json", remote_protocol="s3")\n'
            '  zarr.open_group(fs.get_mapper(), mode="r")["image"]'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("source", help="folder, glob, or URL of the TIFF files")
    r.add_argument("target", help="reference file to write (local path or fsspec URL)")
    r.add_argument(
        "--url", help="where the files will be read from (s3://bucket/raw/, https://...)"
    )
    r.add_argument("--format", choices=("json", "parquet"), default="json", help="default json")
    r.add_argument(
        "--version", type=int, choices=(0, 1), default=1, help="JSON: 1 templates the URL (default)"
    )
    r.add_argument(
        "--chunks",
        type=parse_chunks,
        help="page, file, native, or a shape; each chunk must be one byte range (default: "
        "the store's when they are, else pages or the files' strips/tiles)",
    )
    r.add_argument("--pattern", help="template or regex for the file names (default: inferred)")
    r.add_argument("--include", action="append", help="keep only names matching this glob")
    r.add_argument("--exclude", action="append", help="leave out names matching this glob")
    r.add_argument("--storage-options", help="fsspec options for SOURCE, as JSON")
    r.add_argument("--overwrite", action="store_true", help="replace an existing TARGET")
    r.add_argument(
        "--checksum",
        action="store_true",
        help="read every byte now and save block checksums in TARGET: opening it checks "
        "every read, and `tiffstore check --checksum` compares the files' contents",
    )
    r.add_argument("--json", action="store_true", help="print a summary as JSON")
    r.set_defaults(func=_cmd_refs)

    v = sub.add_parser(
        "preview",
        help="draw a contact sheet: a max projection per channel and stack",
        description=(
            "Write a picture with one row per channel and one column per stack (or other "
            "name axis), each cell the maximum-intensity projection of its file, labelled "
            "with the parsed coordinates; missing files are marked. Reads only the planes "
            "it draws: at most --stacks columns and --planes planes per cell."
        ),
        epilog=(
            "examples:\n"
            "  tiffstore preview raw/ preview.png\n"
            "  tiffstore preview raw/ preview.png --stacks 12 --planes 32 --tile 384\n"
            "  tiffstore preview 'raw/*_ch0_*.tif' ch0.png --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("source", nargs="+", help="folder, glob, or files")
    v.add_argument("out", help="picture to write (.png)")
    v.add_argument("--pattern", help="template or regex for the file names (default: inferred)")
    v.add_argument(
        "--stacks",
        type=int,
        default=8,
        metavar="N",
        help="most columns, evenly spaced, first and last included; 0 for all (default 8)",
    )
    v.add_argument(
        "--planes",
        type=int,
        default=16,
        metavar="N",
        help="most planes per projection, evenly spaced; 0 for all (default 16)",
    )
    v.add_argument(
        "--tile", type=int, default=256, metavar="PX", help="long side of a cell (default 256)"
    )
    v.add_argument(
        "--tiles",
        choices=("keep", "stitch"),
        default="keep",
        help="keep tile fields (000x_001y) as axes, or stitch a non-overlapping grid",
    )
    v.add_argument("--json", action="store_true", help="print what was drawn as JSON")
    v.set_defaults(func=_cmd_preview)

    c = sub.add_parser(
        "check",
        help="say which files no longer match a reference file, or are broken in a source",
        description="For a reference file written by tiffstore (JSON, or a Parquet folder): "
        "which of the files it was made from are missing, of another size or modified since. "
        "For a source folder, glob or URL: which files cannot be read, are cut short, or hold "
        "another array than the rest. Exit status 1 when any file is listed.",
        epilog="examples:\n  tiffstore check raw.json\n  tiffstore check raw.json --checksum"
        "\n  tiffstore check raw/ --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    c.add_argument("target", help="reference file (.json or Parquet folder), or source")
    c.add_argument("--storage-options", help="fsspec options, as JSON")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.add_argument(
        "--checksum",
        action="store_true",
        help="reference file written with --checksum: also read every file and compare its "
        "content with the checksums it carries (reads all the data)",
    )
    c.set_defaults(func=_cmd_check)

    v = sub.add_parser(
        "serve",
        help="serve the array read-only over HTTP, with a viewer page",
        description="Serve the virtual array read-only over HTTP (Zarr keys at the root, a "
        "viewer page at /_viewer/) until Ctrl-C. Any fsspec HTTP client + zarr reads it.",
        epilog="example:\n  tiffstore serve raw/ --port 8000\n"
        "then open http://127.0.0.1:8000/_viewer/ in a browser, or read it in Python:\n"
        '  zarr.open_array(fsspec.get_mapper("http://127.0.0.1:8000/"), mode="r")',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("source", nargs="+", help="folder, glob, or files")
    v.add_argument("--pattern", help="template or regex for the file names (default: inferred)")
    v.add_argument(
        "--chunks",
        type=parse_chunks,
        help="page, file, an int (pages per chunk) or a shape like 1,1,10,-1,-1",
    )
    v.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    v.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    v.add_argument("--checksum", action="store_true", help=CHECKSUM_HELP)
    v.set_defaults(func=_cmd_serve)
    return parser


class _ShellFormatter(logging.Formatter):
    """Log messages with the library's option names spelled as the command's."""

    def format(self, record: logging.LogRecord) -> str:
        return for_the_shell(super().format(record))


def _log_handler(verbose: int) -> logging.Handler:
    errors = _console(stderr=True)
    handler: logging.Handler
    if errors.is_terminal:
        handler = RichHandler(console=errors, show_time=False, show_path=verbose > 1)
        handler.setFormatter(_ShellFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_ShellFormatter("%(levelname)s: %(message)s"))
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tiffstore`` command; returns the exit status (see ``EPILOG``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = _console()
    level = logging.ERROR if args.quiet else logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(message)s", handlers=[_log_handler(args.verbose)])
    if not args.verbose:
        # tifffile logs what it cannot parse without naming the file; tiffstore
        # names the file itself (truncated files, unreadable headers).
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    if args.command in ("inspect", "preview", "serve") and len(args.source) == 1:
        args.source = args.source[0]
    try:
        return int(args.func(args, console))
    except (TiffStoreError, ValueError, OSError) as exc:
        _console(stderr=True).print(
            "[bold red]error:[/bold red] " + escape(for_the_shell(str(exc))),
            highlight=False,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

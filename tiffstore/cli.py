"""The ``tiffstore`` command: argument parsing and printing only.

``tiffstore inspect SOURCE`` shows what tiffstore understood of an acquisition;
``tiffstore demo`` writes sample data and walks through opening and reading it;
``tiffstore materialize SOURCE OUT`` writes a real, compressed Zarr copy.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from . import __version__
from .errors import TiffStoreError
from .manifest import ChunkSpec, Manifest
from .store import TiffStore

__all__ = ["main"]

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


def _parse_chunks(text: str | None) -> ChunkSpec:
    if text is None or text in ("page", "file", "auto"):
        return text
    if text.isdigit():
        return int(text)
    try:
        return tuple(None if p.strip() in ("-1", "", ":") else int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--chunks {text!r}: use page, file, an int, or a comma-separated shape like 1,1,10,-1,-1"
        ) from None


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
        "bytes_on_disk": sum(m.file_sizes),
        "shape": list(m.shape),
        "dims": list(m.dims),
        "dtype": str(m.dtype),
        "nbytes": m.nbytes,
        "chunks": list(m.chunks),
        "chunk_bytes": store._keys.chunk_nbytes(),
        "chunk_count": n_chunks,
        "axes": attrs["axes"],
        "coords": attrs["coords"],
        "template": m.template,
        "missing": m.missing(),
        "layouts": [
            {"storage": lay.storage, "shape": list(lay.shape), "dtype": lay.dtype}
            for lay in m.layouts
        ],
    }


def print_inspect(console: Console, store: TiffStore, show_files: bool = False) -> None:
    """Print the human-readable inspect report."""
    r = inspect_report(store)
    m = store.manifest
    console.print(
        f"[bold]Source[/bold]  {r['source']}  ({r['files']} files, {_size(r['bytes_on_disk'])})"
    )
    shape = " x ".join(f"{d}={n}" for d, n in zip(r["dims"], r["shape"], strict=True))
    console.print(f"[bold]Array[/bold]   {shape}  {r['dtype']}  ({_size(r['nbytes'])})")
    console.print(
        f"[bold]Chunks[/bold]  {tuple(r['chunks'])}  {_size(r['chunk_bytes'])} each, "
        f"{r['chunk_count']} in all"
    )
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
            f"[bold yellow]Missing[/bold yellow] {len(missing)} file(s), served as "
            f"fill value {m.fill_value}: {shown}{more}"
        )
    else:
        console.print("[bold]Missing[/bold] none: every grid cell has a file")
    console.print(f"[bold]Template[/bold] {r['template']}")
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
            files.add_row(*labels, m.files[i] if i >= 0 else "[yellow](missing)[/yellow]")
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


def _cmd_inspect(args: argparse.Namespace, console: Console) -> int:
    from .api import open as open_store
    from .materialize import materialize_status

    if isinstance(args.source, str):
        status = materialize_status(args.source)
        if status is not None:
            return _print_materialized(console, args.source, status, args.json)

    store = open_store(
        args.source,
        pattern=args.pattern,
        chunks=_parse_chunks(args.chunks),
        validate=args.validate,
        tiles=args.tiles,
    )
    if args.json:
        report = inspect_report(store)
        if args.files:
            report["file_table"] = store.manifest.zattrs(max_files=sys.maxsize)["tiffstore"][
                "files"
            ]
        print(json.dumps(report, indent=1))
    else:
        print_inspect(console, store, show_files=args.files)
    return 0


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
        console.rule(
            "[bold]1. A light-sheet acquisition: one TIFF stack per channel and time point"
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

        console.rule("[bold]2. tiffstore.open: the names are understood, no template needed")
        t0 = time.perf_counter()
        store = open_store(root)
        console.print(
            f"Opened in {1000 * (time.perf_counter() - t0):.0f} ms (headers parsed, nothing copied)."
        )
        print_inspect(console, store)

        console.rule("[bold]3. One dask array over every file, read lazily chunk by chunk")
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

        console.rule("[bold]4. Exactly what tifffile reads, file by file")
        ref = tifffile.imread(root / sample_name(1, 2))
        same = np.array_equal(stack[1, 2].compute(), ref)
        z = zarr.open_array(store, mode="r")
        same_zarr = np.array_equal(z[1, 2], ref)
        console.print(
            f"stack[1, 2] equals tifffile.imread of ch1 stack0002: [bold]{same}[/bold]; "
            f"through zarr.open_array too: [bold]{same_zarr}[/bold]"
        )

        console.rule('[bold]5. chunks="page": one z-plane reads one plane of bytes')
        pages = open_store(root, chunks="page")
        t0 = time.perf_counter()
        plane = da.from_zarr(pages)[0, 1, args.z // 2].compute()
        console.print(
            f"One plane {plane.shape} read in {1000 * (time.perf_counter() - t0):.1f} ms, "
            f"chunks {pages.chunks} ({_size(pages._keys.chunk_nbytes())} each)"
        )

        console.rule("[bold]Your turn")
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
                open_options={"pattern": args.pattern, "tiles": args.tiles},
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiffstore",
        description="Open folders of microscope TIFF files as one virtual Zarr array.",
    )
    parser.add_argument("--version", action="version", version=f"tiffstore {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show what tiffstore understood of an acquisition")
    p.add_argument("source", nargs="+", help="folder, glob, or files")
    p.add_argument("--pattern", help="template or regex for the file names (default: inferred)")
    p.add_argument(
        "--chunks", help="page, file, an int (pages per chunk) or a shape like 1,1,10,-1,-1"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--files", action="store_true", help="list every file with its place in the grid"
    )
    p.add_argument("--validate", action="store_true", help="parse every file's header now")
    p.add_argument(
        "--tiles",
        choices=("keep", "stitch"),
        default="keep",
        help="keep tile fields (000x_001y) as axes, or stitch a non-overlapping grid",
    )
    p.set_defaults(func=_cmd_inspect)

    d = sub.add_parser("demo", help="write sample data and show tiffstore at work")
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
    w.add_argument("--quiet", action="store_true", help="print nothing but errors")
    w.add_argument("--json", action="store_true", help="print the summary as JSON")
    w.set_defaults(func=_cmd_materialize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tiffstore`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=Console(stderr=True))]
    )
    if args.command == "inspect" and len(args.source) == 1:
        args.source = args.source[0]
    try:
        return int(args.func(args, console))
    except TiffStoreError as exc:
        Console(stderr=True).print(
            f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False
        )
        return 2
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())

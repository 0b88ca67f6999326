"""The ``tiffstore`` command: argument parsing and printing only.

``tiffstore inspect SOURCE`` shows what tiffstore understood of an acquisition;
``tiffstore demo`` writes sample data and walks through opening and reading it;
``tiffstore serve SOURCE`` serves the array over HTTP with a viewer page.
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
from rich.markup import escape
from rich.table import Table

from . import __version__
from .errors import ServeError, TiffStoreError
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


def _cmd_inspect(args: argparse.Namespace, console: Console) -> int:
    from .api import open as open_store

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


def _cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from .api import open as open_store

    try:
        from .serve import VIEWER_PATH, is_loopback, open_socket, serve
    except ImportError as exc:
        raise ServeError(
            f'tiffstore serve needs Starlette and uvicorn ({exc}): pip install "tiffstore[serve]"'
        ) from exc

    store = open_store(args.source, pattern=args.pattern, chunks=_parse_chunks(args.chunks))
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
        "--chunks", help="page, file, an int (pages per chunk) or a shape like 1,1,10,-1,-1"
    )
    v.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    v.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    v.set_defaults(func=_cmd_serve)
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
    if args.command in ("inspect", "serve") and len(args.source) == 1:
        args.source = args.source[0]
    try:
        return int(args.func(args, console))
    except TiffStoreError as exc:
        Console(stderr=True).print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, highlight=False
        )
        return 2
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())

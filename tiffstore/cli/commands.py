"""The subcommands that write or serve: ``materialize``, ``refs``, ``icechunk``, ``preview``,
``check``, ``serve``.

Each parses nothing itself (see :mod:`tiffstore.cli.parser`) and prints only what
it is asked to: the work is the library's.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tiffstore.apps.check import check
from tiffstore.apps.preview import write_preview
from tiffstore.cli.arguments import open_options
from tiffstore.cli.console import EXIT_ERROR, EXIT_OK, make_console, size
from tiffstore.cli.inspect import open_with_status
from tiffstore.errors import ServeError
from tiffstore.outputs.materialize.run import materialize
from tiffstore.outputs.references import describe_reference_chunks, write_references

__all__ = [
    "check_command",
    "icechunk_command",
    "materialize_command",
    "preview_command",
    "refs_command",
    "serve_command",
]


def materialize_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore materialize SOURCE OUT``: a real, compressed Zarr copy, with progress bars."""
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
                chunks=args.output_chunks,
                zarr_format=args.output_format,
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
                storage_options=args.output_storage_options,
                open_options=open_options(args),
            )
    except KeyboardInterrupt:
        make_console(stderr=True).print(
            f"[bold yellow]interrupted[/bold yellow]: {args.out} is marked incomplete; "
            "run the same command with --resume to finish it"
        )
        return 130
    if args.json:
        print(json.dumps(summary.to_dict(), indent=1))
    elif not args.quiet:
        stored = (
            f", {size(summary.stored_bytes)} stored" if summary.stored_bytes is not None else ""
        )
        if summary.chunks_written == 0 and summary.verified is not None:
            # --verify on a finished output: nothing written, only read back.
            console.print(
                f"[bold]Checked[/bold] {summary.path}: {summary.chunks_skipped} chunks{stored}"
            )
        else:
            console.print(
                f"[bold]Wrote[/bold] {summary.path}: {size(summary.bytes)} in "
                f"{summary.write_seconds:.1f} s ({size(summary.throughput)}/s{stored}); "
                f"{summary.chunks_written} chunks written, {summary.chunks_skipped} already done"
            )
        if summary.verified:
            console.print("[bold green]Verified[/bold green]: every chunk equals the source")
    if summary.verified is False and not args.json:
        # An error: shown even with --quiet.
        make_console(stderr=True).print(
            f"[bold red]{len(summary.mismatched)} chunk(s) differ from the source:[/bold red] "
            f"{', '.join(summary.mismatched)}. Run again with --resume to rewrite them."
        )
    return EXIT_OK if summary.verified is not False else EXIT_ERROR


def refs_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore refs SOURCE TARGET``: fsspec reference files for the TIFFs."""
    opened = time.perf_counter()
    options = open_options(args)
    # --chunks are the references' chunks, checked to be one byte range each.
    chunks, options = options.chunks, options.replace(chunks=None)
    store = open_with_status(args.source, options, args.quiet)
    if not args.quiet and not args.json:
        chosen = describe_reference_chunks(store.manifest, chunks)
        console.print(f"Chunks {chosen}", highlight=False)
    target = write_references(
        store,
        args.target,
        url=args.url,
        format=args.format,
        version=args.version,
        chunks=chunks,
        overwrite=args.overwrite,
        max_inline=args.max_inline,
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
    return EXIT_OK


def icechunk_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore icechunk SOURCE REPO``: a commit of virtual references; prints its id."""
    # Imported here: the icechunk extra is needed by this command only.
    from tiffstore.outputs.icechunk.write import to_icechunk

    opened = time.perf_counter()
    options = open_options(args)
    # --chunks are the references' chunks, checked to be one byte range each.
    chunks, options = options.chunks, options.replace(chunks=None)
    store = open_with_status(args.source, options, args.quiet)
    snapshot = to_icechunk(
        store,
        args.repo,
        url=args.url,
        storage_options=args.repo_storage_options,
        message=args.message,
        append=args.append,
        force=args.force,
        chunks=chunks,
        branch=args.branch,
        **({} if args.max_native is None else {"max_native": args.max_native}),
    )
    seconds = time.perf_counter() - opened
    if args.json:
        files = len(store.manifest.files)
        summary = {"snapshot": snapshot, "repo": args.repo, "files": files, "seconds": seconds}
        print(json.dumps(summary))
    else:
        print(snapshot)  # the one line on stdout: snapshot=$(tiffstore icechunk ...)
        if not args.quiet:
            make_console(stderr=True).print(
                f"Committed {len(store.manifest.files):,} files to {args.repo} "
                f"({args.branch}) in {seconds:.1f} s",
                highlight=False,
            )
    return EXIT_OK


def preview_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore preview SOURCE OUT``: a contact sheet of max projections."""
    options = open_options(args)
    if options.chunks is None:
        # One page per chunk: each sampled plane reads that plane's bytes and no more.
        options = options.replace(chunks="page")
    store = open_with_status(args.source, options, args.quiet)
    drawing = {"max_columns": args.stacks, "max_planes": args.planes, "tile": args.tile}
    if console.is_terminal and not args.json and not args.quiet:
        columns = (*Progress.get_default_columns()[:2], MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, BarColumn(), console=console, transient=True) as bar:
            task = bar.add_task("reading planes", total=None)
            preview = write_preview(
                store,
                args.out,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                **drawing,
            )
    else:
        preview = write_preview(store, args.out, **drawing)
    if args.json:
        print(json.dumps(preview.to_json(), indent=1))
        return EXIT_OK
    summary = preview.to_json()
    console.print(
        f"Wrote {preview.path} ({preview.size[0]} x {preview.size[1]} px): "
        f"{len(preview.row_labels)} row(s) x {len(preview.column_labels)} of "
        f"{preview.columns_total} column(s), max projection of {len(preview.planes)} of "
        f"{preview.planes_total} plane(s) per cell, in {preview.seconds:.1f} s."
    )
    if summary["missing"]:
        console.print(f"[yellow]Missing[/yellow] (marked): {'; '.join(summary['missing'])}")
    return EXIT_OK


def check_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore check TARGET``: which files no longer match, or are broken."""
    kind, n, problems = check(args.target, open_options(args))
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


def serve_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore serve SOURCE``: the array over HTTP, with a viewer page, until Ctrl-C."""
    try:
        # Starlette and uvicorn are the [serve] extra: imported only to serve.
        from tiffstore.apps.serve import VIEWER_PATH, is_loopback, open_socket, serve
    except ImportError as exc:
        raise ServeError(
            f'tiffstore serve needs Starlette and uvicorn ({exc}): pip install "tiffstore[serve]"'
        ) from exc
    store = open_with_status(args.source, open_options(args), args.quiet)
    sock = open_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    # Plain print, flushed: scripts and tests read the URL from the first line.
    print(f"Serving {store!r} at {url}", flush=True)
    print(f"Viewer: {url}{VIEWER_PATH.lstrip('/')}  (Ctrl-C to stop)", flush=True)
    if not is_loopback(host):
        make_console(stderr=True).print(
            f"[bold yellow]warning:[/bold yellow] listening on {host}: anyone who can reach "
            "this address can read the data."
        )

    def grew(new: Any) -> None:
        print(f"Grew: {new.growth.summary()} -> {new!r}", flush=True)

    watch = args.interval if args.watch else None
    level = "info" if args.verbose else "warning"
    try:
        serve(store, sock, log_level=level, watch=watch, on_change=grew)
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises Ctrl-C
        print("Stopped.", flush=True)
    return EXIT_OK

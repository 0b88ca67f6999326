"""The ``tiffstore`` command line: its subcommands and which option groups each takes."""

from __future__ import annotations

import argparse

from tiffstore._version import __version__
from tiffstore.cli.arguments import (
    chunks_parent,
    format_parent,
    json_object,
    listing_parent,
    parse_size,
    reading_parent,
    shape,
    shards,
    values_parent,
    verbosity_parent,
)
from tiffstore.cli.commands import (
    check_command,
    icechunk_command,
    materialize_command,
    preview_command,
    refs_command,
    serve_command,
)
from tiffstore.cli.demo import demo_command
from tiffstore.cli.watch import DEFAULT_INTERVAL, inspect_or_watch
from tiffstore.outputs.references import MAX_INLINE

__all__ = ["EPILOG", "build_parser"]

EPILOG = """\
exit status:
  0  success
  1  the files or the data: no TIFF files, names that do not form a grid, files
     that do not match, a truncated file... (one clear message on stderr; -v shows
     the traceback)
  2  the command line itself: an unknown option or a value it does not take

examples:
  tiffstore inspect raw/                        axes, coordinates, chunks, a template
  tiffstore inspect raw/ --exclude 'MIPs/*'     leave a folder of derived files out
  tiffstore inspect raw/ --chunks native --json
  tiffstore inspect raw/ --watch                print what arrives until Ctrl-C
"""

_RAW = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: every subcommand, each with the option groups it applies."""
    parser = argparse.ArgumentParser(
        prog="tiffstore",
        description="Open folders of microscope TIFF files as one virtual Zarr array.",
        epilog=EPILOG,
        formatter_class=_RAW,
    )
    parser.add_argument("--version", action="version", version=f"tiffstore {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v: tracebacks)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display, errors only"
    )
    verbosity = verbosity_parent()
    listing, reading, chunks, values, served = (
        listing_parent(),
        reading_parent(),
        chunks_parent(),
        values_parent(),
        format_parent(),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "inspect",
        help="show what tiffstore understood of an acquisition",
        description="Show what tiffstore understood of an acquisition: axes, coordinates, "
        "chunks, missing files and a template. Every option of tiffstore.open is here.",
        epilog=EPILOG,
        formatter_class=_RAW,
        parents=[verbosity, listing, reading, chunks, values, served],
    )
    p.add_argument("source", nargs="+", help="folder, glob, files, URL or reference file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--files", action="store_true", help="list every file with its place in the grid"
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep watching: print what arrives until Ctrl-C (--json: a JSON line per change)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"with --watch: seconds between looks (default {DEFAULT_INTERVAL:g})",
    )
    p.set_defaults(func=inspect_or_watch)

    d = sub.add_parser(
        "demo", help="write sample data and show tiffstore at work", parents=[verbosity]
    )
    d.add_argument("--dir", help="write the sample data here and keep it (default: temporary)")
    d.add_argument("--stacks", type=int, default=6, help="time points (default 6)")
    d.add_argument("--z", type=int, default=64, help="planes per stack (default 64)")
    d.set_defaults(func=demo_command)

    w = sub.add_parser(
        "materialize",
        help="write a real, compressed Zarr copy (resumable, verifiable)",
        parents=[verbosity, listing_parent("--source-storage-options"), reading, values],
    )
    w.add_argument("source", help="folder, glob, URL or reference file (as for inspect)")
    w.add_argument("out", help="output folder or fsspec URL (s3://bucket/data.zarr)")
    w.add_argument(
        "--chunks",
        dest="output_chunks",
        type=shape,
        help="output chunks in the source's dim order (default 64 z x 256 y x 256 x, 1 elsewhere)",
    )
    w.add_argument(
        "--zarr-format",
        dest="output_format",
        type=int,
        choices=(2, 3),
        default=2,
        help="the output's Zarr format (default 2)",
    )
    w.add_argument(
        "--shards", type=shards, help="format 3: shard shape (1,1,64,1024,1024) or size (1GB)"
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
    w.add_argument(
        "--storage-options",
        dest="output_storage_options",
        type=json_object,
        metavar="JSON",
        help="fsspec options for OUT, as JSON",
    )
    w.add_argument("--json", action="store_true", help="print the summary as JSON")
    w.set_defaults(func=materialize_command)

    r = sub.add_parser(
        "refs",
        parents=[
            verbosity,
            listing,
            reading,
            chunks_parent(
                "page, file, native, or a shape; each chunk must be one byte range (default: "
                "the store's when they are and none is padded, else equal runs of pages that "
                "divide each file's pages, or the files' strips/tiles: no pixel inlined)"
            ),
            values,
        ],
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
        formatter_class=_RAW,
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
    r.add_argument("--overwrite", action="store_true", help="replace an existing TARGET")
    r.add_argument(
        "--max-inline",
        type=parse_size,
        default=MAX_INLINE,
        metavar="SIZE",
        help="pixels the file may inline in all: last strips a TIFF stores short (default 1MiB)",
    )
    r.add_argument("--json", action="store_true", help="print a summary as JSON")
    r.set_defaults(func=refs_command)

    i = sub.add_parser(
        "icechunk",
        parents=[
            verbosity,
            listing_parent("--source-storage-options"),
            reading,
            chunks_parent(
                "page, file, native, or a shape; each chunk must be one byte range (default: "
                "as for refs)"
            ),
            values,
        ],
        help="commit the TIFFs to an Icechunk repository as virtual chunk references",
        description=(
            "Commit the array to an Icechunk repository (created if needed): Zarr format 3 "
            "metadata, coordinates, and one virtual reference per chunk into the TIFFs, read "
            "from where they are now or from --url. Prints the snapshot id. With --append, "
            "commits only the files that are new since the last commit."
        ),
        epilog=(
            "examples:\n"
            "  tiffstore icechunk raw/ raw.icechunk\n"
            "  tiffstore icechunk s3://bucket/raw/ s3://bucket/raw.icechunk\n"
            "  tiffstore icechunk raw/ raw.icechunk --append     (after new files arrived)\n"
            "read it back with icechunk + zarr alone: see docs/icechunk.md"
        ),
        formatter_class=_RAW,
    )
    i.add_argument("source", help="folder, glob, or URL of the TIFF files")
    i.add_argument("repo", help="the repository: a local folder or s3://bucket/prefix")
    i.add_argument(
        "--append", action="store_true", help="commit the files new since the last commit"
    )
    i.add_argument(
        "--url", help="where the files will be read from (s3://bucket/raw/); default: here"
    )
    i.add_argument("--message", "-m", help="the commit message (default: what was added)")
    i.add_argument(
        "--force",
        action="store_true",
        help="write into a repository tiffstore did not write, or replace its array",
    )
    i.add_argument("--branch", default="main", help="the branch to commit to (default main)")
    i.add_argument(
        "--storage-options",
        dest="repo_storage_options",
        type=json_object,
        metavar="JSON",
        help="fsspec-style options for REPO, as JSON ('{\"anon\": false}')",
    )
    i.add_argument(
        "--max-native",
        type=parse_size,
        metavar="SIZE",
        help="pixels the repository may store for chunks no TIFF byte range is (default 1MiB)",
    )
    i.add_argument("--json", action="store_true", help="print a summary as JSON")
    i.set_defaults(func=icechunk_command)

    v = sub.add_parser(
        "preview",
        parents=[verbosity, listing, reading, chunks, values],
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
        formatter_class=_RAW,
    )
    v.add_argument("source", nargs="+", help="folder, glob, or files")
    v.add_argument("out", help="picture to write (.png)")
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
    v.add_argument("--json", action="store_true", help="print what was drawn as JSON")
    v.set_defaults(func=preview_command)

    c = sub.add_parser(
        "check",
        help="say which files no longer match a reference file, or are broken in a source",
        description="For a reference file written by tiffstore (JSON, or a Parquet folder): "
        "which of the files it was made from are missing, of another size or modified since. "
        "For a source folder, glob or URL: which files cannot be read, are cut short, or hold "
        "another array than the rest. Exit status 1 when any file is listed.",
        epilog="examples:\n  tiffstore check raw.json\n  tiffstore check raw.json --checksum"
        "\n  tiffstore check raw/ --json",
        formatter_class=_RAW,
        parents=[verbosity, listing],
    )
    c.add_argument("target", help="reference file (.json or Parquet folder), or source")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.add_argument(
        "--checksum",
        action="store_true",
        default=argparse.SUPPRESS,
        help="reference file written with --checksum: also read every file and compare its "
        "content with the checksums it carries (reads all the data)",
    )
    c.set_defaults(func=check_command)

    s = sub.add_parser(
        "serve",
        parents=[verbosity, listing, reading, chunks, values, served],
        help="serve the array read-only over HTTP, with a viewer page",
        description="Serve the virtual array read-only over HTTP (Zarr keys at the root, a "
        "viewer page at /_viewer/) until Ctrl-C. Any fsspec HTTP client + zarr reads it.",
        epilog="example:\n  tiffstore serve raw/ --port 8000\n"
        "then open http://127.0.0.1:8000/_viewer/ in a browser, or read it in Python:\n"
        '  zarr.open_array(fsspec.get_mapper("http://127.0.0.1:8000/"), mode="r")',
        formatter_class=_RAW,
    )
    s.add_argument("source", nargs="+", help="folder, glob, files, URL or reference file")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    s.add_argument(
        "--watch",
        action="store_true",
        help="grow the served array as files arrive; the viewer's sliders follow",
    )
    s.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"with --watch: seconds between looks (default {DEFAULT_INTERVAL:g})",
    )
    s.set_defaults(func=serve_command)
    return parser

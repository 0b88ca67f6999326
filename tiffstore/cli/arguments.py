"""The command's arguments: every open option defined once, and mapped to :class:`OpenOptions`.

Each group of open options is one argparse parent parser, shared by the subcommands
that take it (``inspect``, ``serve``, ``preview``, ``refs``, ``materialize``,
``check``); :func:`open_options` is the one function that turns parsed arguments
into an :class:`~tiffstore.options.OpenOptions`. Options a subcommand cannot apply
are not offered by it, so argparse refuses them by name.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from tiffstore.manifest.chunking import ChunkSpec
from tiffstore.options import OPTION_NAMES, OpenOptions

__all__ = [
    "CHECKSUM_HELP",
    "CHUNK_WORDS",
    "chunks_parent",
    "format_parent",
    "json_object",
    "listing_parent",
    "number",
    "open_options",
    "parse_chunks",
    "parse_scale",
    "parse_size",
    "reading_parent",
    "shape",
    "shards",
    "values_parent",
    "verbosity_parent",
]

#: Chunk requests by name, as ``tiffstore.open(chunks=...)`` takes them.
CHUNK_WORDS = ("page", "file", "native", "auto")

#: The help of ``--checksum`` where it opens a store.
CHECKSUM_HELP = (
    "read every byte now and keep block checksums; each read is then checked, and bytes "
    "changed since are an error (catches same-size rewrites the size+time check misses)"
)


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
        spec = tuple(None if p.strip() in ("-1", "", ":") else int(p) for p in text.split(","))
    except ValueError:
        spec = ()
    if len(spec) < 2 or any(c is not None and c <= 0 for c in spec):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a chunk request: use {', '.join(CHUNK_WORDS)}, a number of "
            "pages, or a comma-separated shape like 1,1,10,-1,-1 (-1 for a whole dim)"
        )
    return spec


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
            raise argparse.ArgumentTypeError(f"{text!r}: {m[2]!r} is not a number") from None
        out[m[1]] = (size, m[3]) if m[3] else size
    return out


def parse_size(text: str) -> int:
    """A size in bytes: ``1000000``, ``1MB``, ``2 MiB``, ``0``.

    Examples
    --------
    >>> parse_size("1MiB"), parse_size("500kB"), parse_size("0")
    (1048576, 500000, 0)
    """
    from dask.utils import parse_bytes

    try:
        value = int(parse_bytes(text))
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r}: write a size like 1MB, 512kB or 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size is 0 or more")
    return value


def number(text: str) -> int | float:
    """An int where the text is one (so it fits integer pixels), else a float."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def shape(text: str) -> tuple[int | None, ...]:
    """A comma-separated shape (``1,1,64,256,256``; ``-1`` for a whole dim)."""
    try:
        return tuple(None if p.strip() in ("-1", "", ":") else int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a comma-separated shape like 1,1,64,256,256 (-1: whole dim)"
        ) from None


def shards(text: str) -> tuple[int | None, ...] | str:
    """A shard shape (``1,1,64,1024,1024``) or size (``1GB``)."""
    return shape(text) if "," in text else text


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (``'{"anon": true}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: give a JSON object, like '{{\"anon\": true}}'")
    return value


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number >= 0")
        return value

    return parse


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)


def verbosity_parent() -> argparse.ArgumentParser:
    """``-v``/``-q`` after the command too (``tiffstore inspect raw/ -q``)."""
    p = _parent()
    p.add_argument("-v", "--verbose", action="count", help="more log output (-v: tracebacks)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display, errors only")
    return p


def listing_parent(storage_flag: str = "--storage-options") -> argparse.ArgumentParser:
    """How the files are found and reached: include/exclude, subfolders, fsspec, remote."""
    p = _parent()
    g = p.add_argument_group("which files")
    g.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="keep only files matching GLOB (relative name, e.g. 'raw/*'; repeatable)",
    )
    g.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="leave out files matching GLOB (e.g. 'MIPs/*' or '*_thumb.tif'; repeatable)",
    )
    g.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="take only the folder's own files, not its subfolders'",
    )
    g.add_argument(
        storage_flag,
        dest="storage_options",
        type=json_object,
        metavar="JSON",
        help="fsspec options for the source's URLs, as JSON ('{\"anon\": true}')",
    )
    g.add_argument(
        "--timeout",
        dest="remote_timeout",
        type=_positive(float),
        metavar="SECONDS",
        help="remote files: seconds a silent connection is waited for (default 30)",
    )
    g.add_argument(
        "--retries",
        dest="remote_retries",
        type=_positive(int),
        metavar="N",
        help="remote files: tries after a transient failure (default 4)",
    )
    return p


def reading_parent() -> argparse.ArgumentParser:
    """How the files are read: names, tiles, headers, checksums."""
    p = _parent()
    g = p.add_argument_group("how the files are read")
    g.add_argument("--pattern", help="template or regex for the file names (default: inferred)")
    g.add_argument(
        "--tiles",
        choices=("keep", "stitch"),
        help="keep tile fields (000x_001y) as axes (default), or stitch a non-overlapping grid",
    )
    g.add_argument(
        "--validate",
        action="store_true",
        help="parse every file's header now and check each holds all its pixel data",
    )
    g.add_argument("--checksum", action="store_true", help=CHECKSUM_HELP)
    return p


def chunks_parent(help_text: str | None = None) -> argparse.ArgumentParser:
    """The store's chunks."""
    p = _parent()
    p.add_argument(
        "--chunks",
        type=parse_chunks,
        help=help_text
        or "page, file, native, auto, a number of pages per chunk, or a shape like "
        "1,1,10,-1,-1 (default: whole pages up to about 16 MiB)",
    )
    return p


def values_parent() -> argparse.ArgumentParser:
    """What the array's values and pixels mean: fill value and pixel size."""
    p = _parent()
    g = p.add_argument_group("values")
    g.add_argument("--fill-value", type=number, help="value of missing files' pixels (default 0)")
    g.add_argument(
        "--scale",
        type=parse_scale,
        metavar="z=2,y=0.1,x=0.1",
        help="pixel size per dim, overriding the files' metadata (units: x=250nm; "
        "default micrometer)",
    )
    return p


def format_parent() -> argparse.ArgumentParser:
    """The Zarr format served."""
    p = _parent()
    g = p.add_argument_group("Zarr format")
    g.add_argument("--zarr-format", type=int, choices=(2, 3), help="Zarr format served (default 2)")
    g.add_argument(
        "--no-sharded",
        dest="sharded",
        action="store_false",
        help="format 3: plain chunks, not shards of pages",
    )
    return p


def open_options(args: argparse.Namespace) -> OpenOptions:
    """The open options given on the command line (the parents' arguments) as one value.

    Only what was given is set (the parents' defaults are suppressed), so every
    default is :class:`~tiffstore.options.OpenOptions`'s own.
    """
    given = vars(args)
    values = {name: given[name] for name in OPTION_NAMES if name in given}
    remote = {
        name.removeprefix("remote_"): value
        for name, value in given.items()
        if name.startswith("remote_")
    }
    if remote:
        values["remote"] = remote
    return OpenOptions.of(**values)

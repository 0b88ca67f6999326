"""What the command prints: consoles that never cut text when piped, sizes, messages.

Library messages spell options as Python does (``exclude=['MIPs/*']``); here they
are spelled as the command's options (``--exclude 'MIPs/*'``). Logging becomes
readable output on stderr.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from dask.utils import format_bytes
from rich.console import Console
from rich.logging import RichHandler

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "count",
    "for_the_shell",
    "log_handler",
    "make_console",
    "rule",
    "size",
]

#: Exit statuses: 0 success, 1 the data or the files (a clear message on stderr),
#: 2 the command line itself (usage, from argparse).
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def size(nbytes: float) -> str:
    """Bytes in words (``16.00 MiB``), as dask writes them."""
    return str(format_bytes(int(nbytes)))


#: Open options as the command spells them.
_FLAGS: dict[str, str] = {
    "pattern": "--pattern",
    "chunks": "--chunks",
    "fill_value": "--fill-value",
    "storage_options": "--storage-options",
    "validate": "--validate",
    "tiles": "--tiles",
    "recursive": "--no-recursive",
    "include": "--include",
    "exclude": "--exclude",
    "scale": "--scale",
    "zarr_format": "--zarr-format",
    "sharded": "--no-sharded",
    "checksum": "--checksum",
    "remote": "--timeout/--retries",
}


#: What a library message says, as the command line says it.
_CLI_WORDS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # An option refused by name: "chunks= (the store's chunks) does not apply ...".
    (re.compile(r"\b([a-z_]+)= (?=\()"), lambda m: _FLAGS.get(m[1], m[1] + "=") + " "),
    (re.compile(r"(?:include|exclude)=\[[^\]]*\] \((--[^)]*)\)"), r"\1"),
    (re.compile(r"recursive=False \((--no-recursive)\)"), r"\1"),
    (re.compile(r"\b(validate|checksum|overwrite|resume|verify|ome)=True\b"), r"--\1"),
    (re.compile(r"\btiles='(keep|stitch)'"), r"--tiles \1"),
    (re.compile(r"\bpattern=(?= |$|;|,|\.)"), "--pattern"),
    (re.compile(r"\b(chunks|shards|cname|clevel|shuffle)=(?=[(\[\'\d])"), r"--\1 "),
    (re.compile(r"\bmax_inline=(?= |\(|\d)"), "--max-inline "),
    (re.compile(r"\bfill_value="), "--fill-value "),
    (re.compile(r"\bzarr_format=(?=\d)"), "--zarr-format "),
    (re.compile(r"\bremote=\{'timeout': seconds\}"), "--timeout SECONDS"),
    (re.compile(r"\b(include|exclude)=(?=[\s.,;)]|$)"), r"--\1"),
)


def for_the_shell(message: str) -> str:
    """A library error message with its options spelled as the command's options."""
    for regex, repl in _CLI_WORDS:
        message = regex.sub(repl, message)
    return message


def count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


def rule(console: Console, title: str) -> None:
    """A section heading: a rule across a terminal, a plain line elsewhere."""
    if console.is_terminal:
        console.rule(title)
    else:
        console.print(f"\n{title}", highlight=False)


def make_console(stderr: bool = False) -> Console:
    """A console that wraps and cuts nothing when its output is not a terminal, so
    that templates, paths and file names stay whole and copyable."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, soft_wrap=True, width=100_000, color_system=None)


class _ShellFormatter(logging.Formatter):
    """Log messages with the library's option names spelled as the command's."""

    def format(self, record: logging.LogRecord) -> str:
        return for_the_shell(super().format(record))


def log_handler(verbose: int) -> logging.Handler:
    errors = make_console(stderr=True)
    handler: logging.Handler
    if errors.is_terminal:
        handler = RichHandler(console=errors, show_time=False, show_path=verbose > 1)
        handler.setFormatter(_ShellFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_ShellFormatter("%(levelname)s: %(message)s"))
    return handler

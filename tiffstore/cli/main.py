"""``tiffstore``'s entry point: parse, run the subcommand, turn tiffstore's errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from rich.markup import escape

from tiffstore.cli.console import EXIT_ERROR, for_the_shell, log_handler, make_console
from tiffstore.cli.parser import build_parser
from tiffstore.errors import TiffStoreError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tiffstore`` command; returns the exit status.

    0 on success; 1 when the files or the data are the problem: a
    :class:`~tiffstore.errors.TiffStoreError`, printed as one line naming the file
    (with its traceback under ``-v``); 2 for a usage error. Any other exception is a
    bug, and shows its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    console = make_console()
    level = logging.ERROR if args.quiet else logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(message)s", handlers=[log_handler(args.verbose)])
    if not args.verbose:
        # tifffile logs what it cannot parse without naming the file; tiffstore
        # names the file itself (truncated files, unreadable headers).
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    if args.command in ("inspect", "preview", "serve") and len(args.source) == 1:
        args.source = args.source[0]
    try:
        return int(args.func(args, console))
    except TiffStoreError as exc:
        errors = make_console(stderr=True)
        if args.verbose:
            errors.print_exception()
        errors.print(
            "[bold red]error:[/bold red] " + escape(for_the_shell(str(exc))),
            highlight=False,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""``tiffstore inspect --watch``: what arrives in an acquisition still being written.

The source is opened (or waited for, while it holds no TIFF file yet), then refreshed
at an interval until Ctrl-C (:meth:`~tiffstore.read.store.TiffStore.refresh`: only
new files' headers are read). On a terminal a status line says what the array is and
when it last grew, and each change is printed as a line; with ``--json`` each change
is one JSON object on a line of its own (``"event"``: ``"opened"``, then ``"grew"``),
for a script to follow. A change that is not growth (the second stack of a
time-lapse gives the names a new axis; a file rewritten) is said, with why, and the
source opened again (``"reopened"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from tiffstore.cli.arguments import open_options
from tiffstore.cli.console import EXIT_OK, count, make_console
from tiffstore.cli.inspect import inspect_command, open_with_status, print_inspect
from tiffstore.errors import GrowthError, SourceError
from tiffstore.manifest.growth import Growth
from tiffstore.read.store import TiffStore

__all__ = ["change_event", "inspect_or_watch", "watch_command"]

#: Seconds between refreshes unless ``--interval`` says.
DEFAULT_INTERVAL = 2.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def change_event(store: TiffStore, growth: Growth | None = None) -> dict[str, Any]:
    """One ``--json`` line: the array now, and what changed (``growth``; none at the open)."""
    m = store.manifest
    event: dict[str, Any] = {
        "event": "opened" if growth is None else "grew",
        "time": _now(),
        "source": m.source.url(""),
        "files": len(m.files),
        "shape": list(m.shape),
        "dims": list(m.dims),
        "missing": int((m.file_index < 0).sum()),
        "incomplete": list(store.incomplete),
    }
    if growth is not None:
        event.update(
            old_shape=list(growth.old_shape),
            grown=list(growth.axes),
            added=list(growth.added_files),
            filled=list(growth.filled_files),
        )
    return event


def _shape_text(store: TiffStore) -> str:
    return " x ".join(f"{d}={n}" for d, n in zip(store.dims, store.shape, strict=True))


class _Once(logging.Filter):
    """Lets each log message through once: a refresh repeats the open's warnings (a
    file still being written is named at every refresh until it is whole)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _open_when_there(
    args: argparse.Namespace, wait: Callable[[str], None], quiet: bool
) -> TiffStore:
    """The store, once the source holds TIFF files (an acquisition may not have begun)."""
    while True:
        try:
            return open_with_status(args.source, open_options(args), quiet)
        except SourceError as exc:
            wait(str(exc))


def watch_command(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore inspect --watch``: refresh at ``--interval`` seconds until Ctrl-C."""
    interval = float(args.interval)
    once = _Once()
    for handler in logging.getLogger().handlers:
        handler.addFilter(once)
    errors = make_console(stderr=True)
    show = not args.quiet and errors.is_terminal
    try:
        with errors.status("Watching", spinner="dots") if show else nullcontext() as status:

            def say(text: str) -> None:
                if status is not None:
                    status.update(text)

            def wait(why: str) -> None:
                say(f"Waiting for TIFF files ({why.splitlines()[0]}) ...")
                time.sleep(interval)

            store = _open_when_there(args, wait, quiet=args.quiet or args.json)
            if args.json:
                _json_line(change_event(store))
            else:
                print_inspect(console, store)
            last = "no change yet"
            while True:
                say(
                    f"Watching {count(len(store.manifest.files), 'file')}, {_shape_text(store)}"
                    f" ({last}); every {interval:g} s, Ctrl-C to stop"
                )
                time.sleep(interval)
                try:
                    refreshed = store.refresh()
                except GrowthError as exc:
                    if store.opened_from is None:
                        raise  # a reference file: nothing to list again
                    # Not growth (a second stack gave the names a new axis, a file was
                    # rewritten): say why, and watch the array as it is now.
                    store = open_with_status(args.source, open_options(args), quiet=True)
                    last = f"opened again {datetime.now().strftime('%H:%M:%S')}"
                    if args.json:
                        _json_line({**change_event(store), "event": "reopened", "why": str(exc)})
                    else:
                        console.print(
                            f"[bold yellow]{datetime.now().strftime('%H:%M:%S')} opened again"
                            f"[/bold yellow] ({escape(str(exc))}) -> {_shape_text(store)}",
                            highlight=False,
                        )
                    continue
                growth = refreshed.growth
                if growth is None or (
                    not growth.changed and refreshed.incomplete == store.incomplete
                ):
                    continue
                store = refreshed
                last = f"last change {datetime.now().strftime('%H:%M:%S')}"
                if args.json:
                    _json_line(change_event(store, growth))
                else:
                    console.print(
                        f"[bold]{datetime.now().strftime('%H:%M:%S')}[/bold] "
                        f"{growth.summary()} -> {_shape_text(store)}",
                        highlight=False,
                    )
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(once)


def _json_line(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def inspect_or_watch(args: argparse.Namespace, console: Console) -> int:
    """``tiffstore inspect``, or with ``--watch`` its watch."""
    if args.watch:
        return watch_command(args, console)
    return inspect_command(args, console)

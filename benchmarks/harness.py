"""The shared harness: timing, result rows, targets, and the table and JSON they become.

Every measurement is a :class:`Row`: one tool's figure for one case (``"full read"``,
``"one plane, chunks='page'"``...), with the case's limit (what the machine can do)
and its peers (other tools) in the same run, so ratios never compare runs.
A :class:`Target` states a goal as a ratio between two rows.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Role = Literal["limit", "tiffstore", "peer"]
ROLE_ORDER: dict[str, int] = {"limit": 0, "tiffstore": 1, "peer": 2}


# -- timing ------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Seconds per run of one measurement: the best and the median of the runs."""

    best: float
    median: float
    runs: tuple[float, ...]


def time_best(
    fn: Callable[[], object],
    repeats: int,
    *,
    warmup: int = 1,
    budget_s: float = 20.0,
    setup: Callable[[], object] | None = None,
) -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed runs.

    Stops repeating once the timed runs have taken ``budget_s`` (at least one
    timed run always happens), so a slow peer costs one or two runs, not ten.
    ``setup`` runs untimed before every run.
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    runs: list[float] = []
    spent = 0.0
    while len(runs) < max(repeats, 1) and (not runs or spent < budget_s):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        runs.append(dt)
        spent += dt
    return Timing(min(runs), statistics.median(runs), tuple(runs))


def time_each(
    fn: Callable[[Any], object], items: Sequence[Any], repeats: int, *, budget_s: float = 20.0
) -> Timing:
    """Seconds per item of ``fn(item)`` over ``items`` (best and median over repeats)."""

    def all_items() -> None:
        for item in items:
            fn(item)

    t = time_best(all_items, repeats, warmup=1, budget_s=budget_s)
    n = max(len(items), 1)
    return Timing(t.best / n, t.median / n, tuple(r / n for r in t.runs))


# -- rows ----------------------------------------------------------------------


def higher_is_better(unit: str) -> bool:
    """Throughputs (``GB/s``) are better high; times (``s``, ``ms``, ``us``) low."""
    return unit.endswith("/s")


@dataclass
class Row:
    """One tool's figure for one case.

    Attributes
    ----------
    key
        Stable identifier, ``"<case key>/<tool key>"``, for JSON readers and tests.
    case
        What is measured, as a reader sees it.
    tool
        Who is measured: a limit, tiffstore, or a peer, and how it was called.
    role
        ``"limit"``, ``"tiffstore"`` or ``"peer"``.
    unit
        ``"GB/s"`` (higher is better) or a time unit (``"ms"``, ``"s"``; lower is better).
    figure
        The best run's figure; ``None`` when the tool failed (see ``error``).
    median
        The median run's figure.
    limit
        Key of the row this one is compared with as its limit.
    error
        Why there is no figure: the exception's type and message.
    note
        Context for a reader (per-GB or per-file figures, how it failed, memory).
    extra
        Anything else worth keeping in the JSON.
    """

    key: str
    case: str
    tool: str
    role: Role
    unit: str
    figure: float | None = None
    median: float | None = None
    limit: str | None = None
    error: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    ratio_to_limit: float | None = None
    vs_best_peer: float | None = None
    best_peer: str | None = None


SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6}


def timed_row(
    key: str,
    case: str,
    tool: str,
    role: Role,
    timing: Timing,
    *,
    nbytes: int | None = None,
    unit: str = "ms",
    limit: str | None = None,
    note: str = "",
    **extra: Any,
) -> Row:
    """A row from a :class:`Timing`: ``GB/s`` when ``nbytes`` is given, else a time in ``unit``."""
    if nbytes is not None:
        figure, median, unit = nbytes / timing.best / 1e9, nbytes / timing.median / 1e9, "GB/s"
    else:
        figure, median = timing.best * SCALE[unit], timing.median * SCALE[unit]
    extra.setdefault("runs_s", [round(r, 6) for r in timing.runs])
    if nbytes is not None:
        extra.setdefault("nbytes", nbytes)
    return Row(key, case, tool, role, unit, figure, median, limit, note=note, extra=extra)


def error_text(exc: BaseException) -> str:
    """The exception as one short line: type, message, and where it was raised."""
    message = " ".join(str(exc).split()) or "(no message)"
    if len(message) > 160:
        message = message[:157] + "..."
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" [{Path(last.filename).name}:{last.lineno}]"
    return f"{type(exc).__name__}: {message}{where}"


def attempt(
    key: str,
    case: str,
    tool: str,
    role: Role,
    measure: Callable[[], Row],
    *,
    unit: str = "ms",
    limit: str | None = None,
) -> Row:
    """Run ``measure``; a tool that is not installed or raises becomes a row with the error.

    A peer must never crash the suite: whatever it raises (``ImportError`` when it
    is not installed included) is recorded in the row, and the suite goes on.
    """
    try:
        return measure()
    except Exception as exc:  # not KeyboardInterrupt or SystemExit (SIGTERM): those stop the run
        return Row(key, case, tool, role, unit, limit=limit, error=error_text(exc))


def failed_row(row: Row, key: str, case: str, unit: str, limit: str | None) -> Row:
    """The same failure for another case (a peer that could not open fails every case)."""
    return Row(key, case, row.tool, row.role, unit, limit=limit, error=row.error)


# -- targets -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal stated as a ratio between two rows.

    ``measure="ratio"`` compares ``row / versus`` of the figures (a fraction of a
    throughput limit, or a multiple of a limit's time); ``measure="speedup"`` is how
    many times faster ``row`` is than ``versus`` (whatever the unit);
    ``measure="value"`` is ``row``'s own figure (``versus`` is not used).
    """

    name: str
    row: str
    versus: str
    measure: Literal["ratio", "speedup", "value"]
    at_least: float | None = None
    at_most: float | None = None

    def evaluate(self, rows: dict[str, Row]) -> dict[str, Any]:
        """The measured value and whether the target is met (``None``: rows missing)."""
        a, b = rows.get(self.row), rows.get(self.versus)
        value: float | None = None
        if self.measure == "value":
            value = a.figure if a else None
        elif a and b and a.figure and b.figure:
            if self.measure == "ratio" or higher_is_better(a.unit):
                value = a.figure / b.figure
            else:
                value = b.figure / a.figure
        met: bool | None = None
        if value is not None:
            met = (self.at_least is None or value >= self.at_least) and (
                self.at_most is None or value <= self.at_most
            )
        goal = (
            f">= {self.at_least:g}"
            if self.at_least is not None
            else f"<= {self.at_most:g}"
            if self.at_most is not None
            else ""
        )
        return {**asdict(self), "goal": goal, "value": value, "met": met}


# -- ratios, table, JSON ------------------------------------------------------


def finalize(rows: list[Row]) -> list[Row]:
    """Fill in the ratios to each row's limit and to the best peer of its case."""
    by_key = {r.key: r for r in rows}
    for row in rows:
        lim = by_key.get(row.limit or "")
        if row.figure and lim and lim.figure and lim.unit == row.unit:
            row.ratio_to_limit = row.figure / lim.figure
        if row.role != "tiffstore" or not row.figure:
            continue
        peers = [p for p in rows if p.case == row.case and p.role == "peer" and p.figure]
        peers = [p for p in peers if p.unit == row.unit]
        if not peers:
            continue
        if higher_is_better(row.unit):
            best = max(peers, key=lambda p: p.figure or 0.0)
            row.vs_best_peer = row.figure / (best.figure or 1.0)
        else:
            best = min(peers, key=lambda p: p.figure or float("inf"))
            row.vs_best_peer = (best.figure or 0.0) / row.figure
        row.best_peer = best.tool
    return rows


def ordered(rows: Iterable[Row]) -> list[Row]:
    """Rows grouped by case (in order of first appearance): limit, tiffstore, peers."""
    rows = list(rows)
    first: dict[str, int] = {}
    for i, r in enumerate(rows):
        first.setdefault(r.case, i)
    return sorted(rows, key=lambda r: (first[r.case], ROLE_ORDER[r.role]))


def _fmt_figure(row: Row) -> str:
    if row.figure is None:
        return "failed" if row.error else "skipped"
    v = row.figure
    return f"{v:.3g}" if v < 100 else f"{v:,.0f}"


def _fmt_limit_ratio(row: Row) -> str:
    if row.ratio_to_limit is None:
        return ""
    r = row.ratio_to_limit
    # Throughput: the fraction of the limit reached; time: how many times the limit's time.
    return f"{r:.2f}" if higher_is_better(row.unit) else f"{r:.3g}x"


def _fmt_peer_ratio(row: Row) -> str:
    return "" if row.vs_best_peer is None else f"{row.vs_best_peer:.3g}x"


def table_lines(rows: list[Row]) -> list[tuple[str, ...]]:
    """The table as cells: case, tool, figure, unit, vs limit, vs best peer, note."""
    out: list[tuple[str, ...]] = []
    for r in ordered(rows):
        note = r.error or r.note
        out.append(
            (r.case, r.tool, _fmt_figure(r), r.unit, _fmt_limit_ratio(r), _fmt_peer_ratio(r), note)
        )
    return out


HEADERS = ("case", "tool", "figure", "unit", "vs limit", "vs best peer", "note")


def print_table(rows: list[Row], targets: list[dict[str, Any]], title: str) -> None:
    """Print the results and the targets with rich."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    table = Table(title=title, show_lines=False)
    for h in HEADERS:
        table.add_column(h, overflow="fold", justify="right" if h in {"figure"} else "left")
    last_case = None
    for cells in table_lines(rows):
        if last_case is not None and cells[0] != last_case:
            table.add_section()
        case = cells[0] if cells[0] != last_case else ""
        last_case = cells[0]
        table.add_row(*(escape(c) for c in (case, *cells[1:])))
    console.print(table)
    console.print(
        "vs limit: for GB/s the fraction of the limit reached; for times, how many times the "
        "limit's time.  vs best peer: how many times faster than the fastest peer that worked."
    )
    if targets:
        t = Table(title="Targets")
        for h in ("target", "goal", "measured", "met"):
            t.add_column(h)
        for tg in targets:
            value = "" if tg["value"] is None else f"{tg['value']:.3g}"
            met = {True: "[green]met", False: "[red]missed", None: "[yellow]not measured"}
            t.add_row(escape(tg["name"]), tg["goal"], value, met[tg["met"]])
        console.print(t)


def markdown(rows: list[Row], targets: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The results as Markdown: the machine, the table, the targets."""
    lines = [
        f"Ran `{machine.get('command', 'python benchmarks/run.py')}` on {machine['when']}: "
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']:.0f} GB memory, "
        f"{machine['system']}, Python {machine['python']}; load average "
        f"{machine['load_before']} before, {machine['load_after']} after.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    last_case = None
    for cells in table_lines(rows):
        case = f"**{cells[0]}**" if cells[0] != last_case else ""
        last_case = cells[0]
        lines.append("| " + " | ".join([case, *(c.replace("|", "\\|") for c in cells[1:])]) + " |")
    if targets:
        lines += ["", "| target | goal | measured | met |", "|---|---|---|---|"]
        for tg in targets:
            value = "" if tg["value"] is None else f"{tg['value']:.3g}"
            met = {True: "met", False: "**missed**", None: "not measured"}[tg["met"]]
            lines.append(f"| {tg['name']} | {tg['goal']} | {value} | {met} |")
    return "\n".join(lines) + "\n"


def machine_info() -> dict[str, Any]:
    """What the figures ran on."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "when": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": psutil.virtual_memory().total / 1e9,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def write_json(
    path: Path,
    rows: list[Row],
    targets: list[dict[str, Any]],
    machine: dict[str, Any],
    params: dict[str, Any],
) -> None:
    """Write everything a later reader needs to redo the table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": machine,
        "params": params,
        "rows": [asdict(r) for r in ordered(rows)],
        "targets": targets,
    }
    path.write_text(json.dumps(doc, indent=1, default=str))

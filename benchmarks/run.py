"""Run the benchmarks: tiffstore beside the machine's limits and its peers, in one run.

Usage::

    python benchmarks/run.py                      # default size (about 1 GB), all groups
    python benchmarks/run.py --quick              # a tiny smoke run (seconds)
    python benchmarks/run.py --only limits,tiffstore --size 0.5
    python benchmarks/run.py --many 1000,10000 --docs docs/benchmarks.md
    python benchmarks/run.py --only materialize   # optional: writes Zarr copies (minutes)
    python benchmarks/run.py --only checksum --size 0.5   # what checksum=True costs
    python benchmarks/run.py --only refsize       # reference-file kB per file, default vs page
    python benchmarks/run.py --only refresh --many 10000,100000   # refresh after 1% new files
    python benchmarks/run.py --only icechunk --many 1000,10000   # optional: Icechunk builds

Prints one table (figure, ratio to the limit, ratio to the best peer) and the
targets, and writes everything as JSON (``--out``). Data are written into a
temporary folder and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make ``benchmarks`` importable as a package from the repository root
    # (appended, so an installed or PYTHONPATH tiffstore is the one measured).
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    checksum,
    compressed,
    icechunk_repository,
    limits,
    open_many,
    peers,
    references,
    refresh,
    scaling,
    small_files,
    tiffstore_read,
    virtualizarr_parser,
)
from benchmarks import materialize as materialize_bench
from benchmarks import reference_size as refsize
from benchmarks.data import Context
from benchmarks.harness import (
    Row,
    Target,
    finalize,
    machine_info,
    markdown,
    print_table,
    write_json,
)

#: Measurement groups in the order they run (``--only`` picks some).
GROUPS: dict[str, ModuleType] = {
    "limits": limits,
    "tiffstore": tiffstore_read,
    "peers": peers,
    "compressed": compressed,
    "open": open_many,
    "refresh": refresh,
    "scaling": scaling,
    "small": small_files,
    "references": references,
    "refsize": refsize,
    "checksum": checksum,
    "materialize": materialize_bench,
    # (Not benchmarks/icechunk.py: run as a script, it would shadow the icechunk package.)
    "icechunk": icechunk_repository,
    # (Not benchmarks/virtualizarr.py either: it would shadow the virtualizarr package.)
    "virtualizarr": virtualizarr_parser,
}
#: Groups that run only when asked for with ``--only``.
OPTIONAL = {"materialize", "icechunk", "virtualizarr"}

DOCS_BEGIN = "<!-- results: begin -->"
DOCS_END = "<!-- results: end -->"


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=float, default=1.0, help="GB of uncompressed stacks (1.0)")
    p.add_argument("--shape", type=_ints, default=(64, 512, 512), help="Z,Y,X of each file")
    p.add_argument("--channels", type=int, default=3, help="channels (3)")
    p.add_argument("--compression", default="zlib", help="compression of the variant (zlib)")
    p.add_argument("--compressed-size", type=float, default=0.4, help="GB of compressed variant")
    p.add_argument("--scales", type=_floats, default=(0.25, 0.5, 1.0), help="fractions of --size")
    p.add_argument(
        "--many",
        type=_ints,
        default=(1_000, 10_000, 100_000),
        help="file counts to open (1000,10000,100000)",
    )
    p.add_argument("--planes", type=int, default=32, help="planes read per one-plane figure")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure (best is kept)")
    p.add_argument(
        "--small-files", type=int, default=10_000, help="files of the small-files case (10,000)"
    )
    p.add_argument("--only", default="", help=f"comma-separated groups: {','.join(GROUPS)}")
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/latest.json"), help="JSON results"
    )
    p.add_argument("--docs", type=Path, help="replace the results section of this Markdown file")
    p.add_argument("--workdir", type=Path, help="where to write the data (a temporary folder)")
    p.add_argument("--quick", action="store_true", help="tiny data, few repeats: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.compressed_size, args.shape = 0.0004, 0.0004, (8, 64, 64)
        args.channels, args.scales, args.many = 2, (0.5, 1.0), (20, 40)
        args.planes, args.repeats, args.small_files = 4, 2, 200
    unknown = set(filter(None, args.only.split(","))) - set(GROUPS)
    if unknown:
        p.error(f"--only: unknown groups {sorted(unknown)}; choose from {','.join(GROUPS)}")
    return args


def _logger(start: float) -> Any:
    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    return log


def update_docs(path: Path, text: str) -> None:
    """Put ``text`` between the results markers of a Markdown file."""
    doc = path.read_text()
    pattern = re.compile(re.escape(DOCS_BEGIN) + ".*?" + re.escape(DOCS_END), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{path}: no {DOCS_BEGIN} ... {DOCS_END} section to replace")
    path.write_text(pattern.sub(lambda _: f"{DOCS_BEGIN}\n{text}{DOCS_END}", doc))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # unwinds, so the temporary data are removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    start = time.perf_counter()
    log = _logger(start)
    machine = machine_info()
    machine["command"] = " ".join(["python benchmarks/run.py", *(argv or sys.argv[1:])])
    only = args.only.split(",") if args.only else []
    chosen = [g for g in GROUPS if g in only or (not only and g not in OPTIONAL)]
    rows: list[Row] = []
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="tiffstore-bench-", dir=args.workdir) as tmp:
        ctx = Context(
            workdir=Path(tmp),
            size_gb=args.size,
            channels=args.channels,
            shape=tuple(args.shape),
            compression=args.compression,
            compressed_gb=args.compressed_size,
            scales=tuple(args.scales),
            many=tuple(args.many),
            small_files=args.small_files,
            planes=args.planes,
            repeats=args.repeats,
            quick=args.quick,
            log=log,
        )
        try:
            for name in chosen:
                module = GROUPS[name]
                log(f"{name} ...")
                rows += module.run(ctx)
                targets += getattr(module, "TARGETS", [])
                if hasattr(module, "targets"):
                    targets += module.targets(ctx)
            datasets = {k: d.describe() for k, d in ctx._datasets.items()}
        finally:
            log("removing the data ...")
    machine["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine["elapsed_s"] = round(time.perf_counter() - start, 1)
    finalize(rows)
    by_key = {r.key: r for r in rows}
    evaluated = [t.evaluate(by_key) for t in targets]
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    params["datasets"] = datasets
    title = (
        f"tiffstore benchmarks: {machine['cores']} cores, {machine['cpu']}; "
        f"load {machine['load_before']} -> {machine['load_after']}; {machine['elapsed_s']} s"
    )
    print_table(rows, evaluated, title)
    write_json(args.out, rows, evaluated, machine, params)
    log(f"wrote {args.out}")
    if args.docs:
        update_docs(args.docs, markdown(rows, evaluated, machine))
        log(f"updated {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

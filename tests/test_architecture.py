"""The package's shape: no import cycle, small modules, other libraries' internals in one place.

import-linter (``lint-imports``, run in CI) checks the layers; these tests check what
its contracts cannot say: that the whole graph, lazy and type-only imports included,
has no cycle at all, that no module grows past the size a reader takes in, and that
only ``tiffstore/_compat.py`` reaches into zarr's, fsspec's, s3fs's and tifffile's
private API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tiffstore"
#: A module longer than this is doing several jobs (docs/architecture.md).
MAX_LINES = 600
#: Third-party packages whose private API only ``_compat.py`` may use.
GUARDED = ("zarr", "fsspec", "s3fs", "tifffile", "numcodecs", "imagecodecs")
#: Private attributes of theirs that tiffstore needs, by name: only in ``_compat.py``.
PRIVATE_ATTRIBUTES = {
    "_strip_protocol",
    "_info",
    "_cat_file",
    "_cat_ranges",
    "_call_s3",
    "_find",
    "_run_coros_in_chunks",
}
#: Private keywords of theirs (tifffile's ``TiffFile(..., _multifile=False)``).
PRIVATE_KEYWORDS = {"_multifile", "_useframes", "_parent"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    """Lazy imports (inside functions) and type-only imports count: grimp sees both."""
    graph = grimp.build_graph("tiffstore", exclude_type_checking_imports=False)
    edges = {
        module: {m for m in graph.find_modules_directly_imported_by(module)}
        for module in graph.modules
    }
    # A package's __init__ re-exporting its children is not a cycle of the code.
    for module, imported in edges.items():
        edges[module] = {m for m in imported if not m.startswith(module + ".")}
    assert _strongly_connected(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_is_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)}: {lines} lines"


def _private_uses(source: str) -> list[str]:
    """Uses of a guarded library's private API in ``source``."""
    found: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in GUARDED:
                parts = node.module.split(".")
                if any(p.startswith("_") for p in parts) or parts[:2] == ["zarr", "core"]:
                    found.append(f"from {node.module} import ...")
                found += [
                    f"from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] in GUARDED and (
                    any(p.startswith("_") for p in parts) or parts[:2] == ["zarr", "core"]
                ):
                    found.append(f"import {a.name}")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            # tiffstore's own methods may share a name (``self._cat_ranges``).
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f".{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr == "core":
            if isinstance(node.value, ast.Name) and node.value.id == "zarr":
                found.append("zarr.core")
        elif isinstance(node, ast.Call):
            found += [f"{k.arg}= keyword" for k in node.keywords if k.arg in PRIVATE_KEYWORDS]
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in _modules() if p.name != "_compat.py"],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_private_internals_only_in_compat(path: Path) -> None:
    uses = _private_uses(path.read_text(encoding="utf-8"))
    assert uses == [], f"{path.relative_to(PACKAGE)} uses {uses}: move it to _compat.py"


def test_the_private_use_finder_finds_each_kind() -> None:
    source = """
from zarr.core.sync import sync
from zarr.codecs._v2 import V2Codec
from fsspec.asyn import _run_coros_in_chunks
import zarr.core.buffer
fs._strip_protocol(url)
tifffile.TiffFile(fh, _multifile=False)
zarr.core.buffer.default_buffer_prototype()
"""
    uses = _private_uses(source)
    assert len(uses) >= 7, uses
    assert _private_uses("from zarr.abc.store import Store\nself._find(1)\ndict(_a=1)\n") == []


def test_compat_holds_what_it_says() -> None:
    compat = (PACKAGE / "_compat.py").read_text(encoding="utf-8")
    assert _private_uses(compat), "_compat.py uses no private API: remove it"

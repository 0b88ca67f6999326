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


@pytest.mark.parametrize(
    "path",
    [p for p in _modules() if p.name == "__init__.py" and p.parent != PACKAGE],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_a_folder_imports_nothing(path: Path) -> None:
    """Importing ``tiffstore.names.axes`` loads no other module of ``names/``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports == [], f"{path.relative_to(PACKAGE)} imports: import modules by their path"


def _own_private_names() -> set[str]:
    """Every ``_name`` tiffstore defines itself: functions, classes, attributes, parameters.

    An access to ``._name`` or a keyword ``_name=`` that is none of these reaches into
    another library's private API.
    """
    own: set[str] = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                own.update(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.alias):
                own.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
                # object.__setattr__(self, "_cache", ...) on frozen dataclasses
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if name in ("__setattr__", "setattr") and len(node.args) >= 2:
                    arg = node.args[1]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        own.add(arg.value)
    # ``_ARRAY_DIMENSIONS`` is xarray's attribute in Zarr metadata: a format's word, not an API.
    return {n for n in own if n.startswith("_")} | {"_ARRAY_DIMENSIONS"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(source: str, own: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Uses of another library's private API in ``source``.

    Imports of a guarded library's private modules or names, ``zarr.core``, and any
    ``._name`` attribute or ``_name=`` keyword that tiffstore does not define itself
    (``own``).
    """
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
                    f"from {node.module} import {a.name}" for a in node.names if _private(a.name)
                ]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] in GUARDED and (
                    any(p.startswith("_") for p in parts) or parts[:2] == ["zarr", "core"]
                ):
                    found.append(f"import {a.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            found.append(f".{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr == "core":
            if isinstance(node.value, ast.Name) and node.value.id == "zarr":
                found.append("zarr.core")
        elif isinstance(node, ast.Call):
            found += [
                f"{k.arg}= keyword"
                for k in node.keywords
                if k.arg and _private(k.arg) and k.arg not in own
            ]
    return found


_OWN = _own_private_names()


@pytest.mark.parametrize(
    "path",
    [p for p in _modules() if p.name != "_compat.py"],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_private_internals_only_in_compat(path: Path) -> None:
    uses = _private_uses(path.read_text(encoding="utf-8"), _OWN)
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
    own = {"_find", "_a"}
    assert _private_uses("from zarr.abc.store import Store\nself._find(1)\ndict(_a=1)\n", own) == []
    # a private name tiffstore does not define is somebody else's, whoever holds it
    assert _private_uses("store.fs._pipe_file(path, data)\n", _OWN) == ["._pipe_file"]


def test_compat_holds_what_it_says() -> None:
    compat = (PACKAGE / "_compat.py").read_text(encoding="utf-8")
    assert _private_uses(compat), "_compat.py uses no private API: remove it"

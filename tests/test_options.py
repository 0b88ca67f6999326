"""Every open option reaches every entry point, or is refused there by name.

Two halves. ``test_open_applies_each_option``: ``tiffstore.open`` applies every field
of ``OpenOptions`` (each checked on the store it gives). The table tests: every
entry point (``open`` of a folder or a reference file, the xarray backend,
``materialize``, ``check``, and the ``inspect``, ``serve``, ``preview``, ``refs``,
``materialize`` and ``check`` commands) hands each option, unchanged, to the stage
that applies it, or refuses it naming it (an ``OptionError``, or argparse's exit 2
for an option a subcommand does not offer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import tifffile
import xarray as xr

import tiffstore
from tiffstore import opening
from tiffstore.apps import check as check_module
from tiffstore.cli.main import main
from tiffstore.errors import OptionError
from tiffstore.options import OPTION_NAMES, OpenOptions
from tiffstore.sources.checksums import ChecksummedSource
from tiffstore.sources.settings import RemoteSettings

PATTERN = "tile_x{x}_t{t}.tif"

#: A value of each option other than its default, and how the command line gives it.
VALUES: dict[str, tuple[Any, str | None]] = {
    "pattern": (PATTERN, f"--pattern {PATTERN}"),
    "chunks": ("page", "--chunks page"),
    "fill_value": (7, "--fill-value 7"),
    "storage_options": (
        {"skip_instance_cache": True},
        "--storage-options '{\"skip_instance_cache\": true}'",
    ),
    "validate": (True, "--validate"),
    "tiles": ("stitch", "--tiles stitch"),
    "recursive": (False, "--no-recursive"),
    "include": (("tile_*",), "--include 'tile_*'"),
    "exclude": (("nothing_*",), "--exclude 'nothing_*'"),
    "scale": ({"z": 2.0}, "--scale z=2"),
    "zarr_format": (3, "--zarr-format 3"),
    "sharded": (False, "--no-sharded"),
    "checksum": (True, "--checksum"),
    "remote": ({"timeout": 12.0}, "--timeout 12"),
    # No command reads into GPU memory: no command offers it, and each refuses it.
    "kvikio": (False, "--kvikio"),
}


def test_the_table_names_every_option() -> None:
    assert set(VALUES) == set(OPTION_NAMES)
    defaults = OpenOptions()
    for name, (value, _) in VALUES.items():
        assert OpenOptions.of(**{name: value}).given() == (name,)
        assert getattr(OpenOptions.of(**{name: value}), name) != getattr(defaults, name)


def _expected(name: str) -> Any:
    """The option's value as OpenOptions holds it."""
    return getattr(OpenOptions.of(**{name: VALUES[name][0]}), name)


@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    """2 x-tiles x 3 time points of (4, 8, 8) uint16, named ``tile_x{x}_t{t}.tif``."""
    folder = tmp_path / "tiles"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for x in range(2):
        for t in range(3):
            data = rng.integers(0, 1000, (4, 8, 8), dtype=np.uint16)
            tifffile.imwrite(folder / f"tile_x{x}_t{t}.tif", data, photometric="minisblack")
    return folder


@pytest.fixture
def refs(tiles: Path, tmp_path: Path) -> str:
    target = str(tmp_path / "tiles.json")
    tiffstore.write_references(tiffstore.open(tiles), target)
    return target


# -- open applies each option ----------------------------------------------------


def _memory_copy(folder: Path) -> str:
    fs = fsspec.filesystem("memory")
    root = f"/options-{folder.parent.name}"
    for path in folder.iterdir():
        fs.pipe(f"{root}/{path.name}", path.read_bytes())
    return f"memory://{root}/"


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_open_applies_each_option(name: str, tiles: Path) -> None:
    value = VALUES[name][0]
    source: Any = tiles
    if name in ("storage_options", "remote"):
        source = _memory_copy(tiles)  # what fsspec sources carry
    if name == "recursive":
        (tiles / "sub").mkdir()
        tifffile.imwrite(tiles / "sub" / "other.tif", np.zeros((2, 2), np.uint8))
    if name == "include":
        tifffile.imwrite(tiles / "other.tif", np.zeros((2, 2), np.uint8))
    if name == "sharded":
        store = tiffstore.open(source, zarr_format=3, sharded=value)
    else:
        store = tiffstore.open(source, **{name: value})
    m = store.manifest
    applied = {
        "pattern": lambda: m.template == PATTERN,
        "chunks": lambda: store.chunks[-3:] == (1, 8, 8),
        "fill_value": lambda: m.fill_value == 7,
        "storage_options": lambda: m.source.storage_options == value,  # type: ignore[attr-defined]
        "validate": lambda: m.fully_verified,
        "tiles": lambda: store.shape == (3, 4, 8, 16),
        "recursive": lambda: len(m.files) == 6,
        "include": lambda: len(m.files) == 6,
        "exclude": lambda: len(m.files) == 6 and m.files[0].startswith("tile_"),
        "scale": lambda: store.scale["z"] == (2.0, "micrometer"),
        "zarr_format": lambda: store.zarr_format == 3,
        "sharded": lambda: store.zarr_format == 3 and store.shards is None,
        "checksum": lambda: isinstance(m.source, ChecksummedSource),
        "remote": lambda: m.source.settings == RemoteSettings(timeout=12.0),  # type: ignore[attr-defined]
        "kvikio": lambda: store.kvikio is False,
    }[name]
    assert applied(), name
    if name in ("recursive", "include"):  # without the option, the odd file is there
        with pytest.raises(tiffstore.TiffStoreError):
            tiffstore.open(tiles)


# -- what reaches the stages -----------------------------------------------------


@dataclasses.dataclass
class Reached:
    """What the open's stages were given."""

    options: list[OpenOptions] = dataclasses.field(default_factory=list)


@pytest.fixture
def reached(monkeypatch: pytest.MonkeyPatch) -> Reached:
    """Record the options every open hands its stages (folders and reference files)."""
    seen = Reached()
    real_list, real_refs = opening.list_files, opening.open_references

    def list_files(source: Any, options: OpenOptions, progress: Any = None) -> Any:
        seen.options.append(options)
        return real_list(source, options, progress)

    def open_references(source: Any, options: OpenOptions, progress: Any = None) -> Any:
        seen.options.append(options)
        return real_refs(source, options, progress)

    monkeypatch.setattr(opening, "list_files", list_files)
    monkeypatch.setattr(opening, "open_references", open_references)
    return seen


def _given(name: str, value: Any) -> dict[str, Any]:
    if name == "sharded":  # only format 3 shards
        return {"zarr_format": 3, "sharded": value}
    return {name: value}


#: What a reference file refuses (its names and headers were read when it was written).
REFERENCE_REFUSES = {"pattern", "tiles", "recursive", "include", "exclude", "validate"}


@contextlib.contextmanager
def _refused_or_reached(name: str, refused: bool, reached: Reached) -> Iterator[None]:
    if refused:
        with pytest.raises(OptionError, match=rf"\b{name}= \("):
            yield
        return
    yield
    assert reached.options, f"{name}: no open happened"
    assert getattr(reached.options[-1], name) == _expected(name), name


@pytest.mark.parametrize("name", OPTION_NAMES)
@pytest.mark.parametrize("kind", ["folder", "references"])
def test_open(name: str, kind: str, tiles: Path, refs: str, reached: Reached) -> None:
    source = tiles if kind == "folder" else refs
    if name == "storage_options" and kind == "folder":
        source = _memory_copy(tiles)
    refused = kind == "references" and name in REFERENCE_REFUSES
    with _refused_or_reached(name, refused, reached):
        tiffstore.open(source, **_given(name, VALUES[name][0]))


@pytest.mark.parametrize("name", OPTION_NAMES)
@pytest.mark.parametrize("kind", ["folder", "references"])
def test_xarray_backend(name: str, kind: str, tiles: Path, refs: str, reached: Reached) -> None:
    source = tiles if kind == "folder" else refs
    if name == "storage_options" and kind == "folder":
        source = _memory_copy(tiles)
    given = {
        ("store_chunks" if k == "chunks" else k): v
        for k, v in _given(name, VALUES[name][0]).items()
    }
    refused = kind == "references" and name in REFERENCE_REFUSES
    with _refused_or_reached(name, refused, reached):
        xr.open_dataset(source, engine="tiffstore", chunks={}, **given)


def test_xarray_backend_takes_an_options_object(tiles: Path, reached: Reached) -> None:
    options = OpenOptions(pattern=PATTERN, scale={"z": 2.0})
    ds = xr.open_dataset(tiles, engine="tiffstore", options=options, fill_value=3)
    assert reached.options[-1] == options.replace(fill_value=3)
    assert float(ds["z"][1]) == 2.0


#: What materialize's source cannot take (the output's own options say it).
MATERIALIZE_REFUSES = {"zarr_format", "sharded", "kvikio"}


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_materialize(name: str, tiles: Path, tmp_path: Path, reached: Reached) -> None:
    source: Any = _memory_copy(tiles) if name == "storage_options" else tiles
    with _refused_or_reached(name, name in MATERIALIZE_REFUSES, reached):
        tiffstore.materialize(
            source, tmp_path / "out.zarr", open_options=_given(name, VALUES[name][0])
        )


#: What ``check`` applies to a source, and to a reference file.
CHECK_SOURCE_APPLIES = {"storage_options", "recursive", "include", "exclude", "remote", "validate"}
CHECK_REFERENCES_APPLIES = {"storage_options", "remote", "checksum"}


@pytest.mark.parametrize("name", OPTION_NAMES)
@pytest.mark.parametrize("kind", ["folder", "references"])
def test_check(
    name: str,
    kind: str,
    tiles: Path,
    refs: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    real_source, real_refs = check_module.check_source, check_module.check_references

    def check_source(source: Any, storage_options: Any = None, workers: int = 16, **kw: Any) -> Any:
        calls.append({"storage_options": storage_options, **kw})
        return real_source(source, storage_options, workers, **kw)

    def check_references(
        target: str, storage_options: Any = None, checksum: bool = False, **kw: Any
    ) -> Any:
        calls.append({"storage_options": storage_options, "checksum": checksum, **kw})
        return real_refs(target, storage_options, checksum, **kw)

    monkeypatch.setattr(check_module, "check_source", check_source)
    monkeypatch.setattr(check_module, "check_references", check_references)
    applies = CHECK_SOURCE_APPLIES if kind == "folder" else CHECK_REFERENCES_APPLIES
    target = str(tiles) if kind == "folder" else refs
    if name == "checksum" and kind == "references":
        target = str(tmp_path / "checked.json")
        tiffstore.write_references(tiffstore.open(tiles, checksum=True), target)
    if name == "storage_options" and kind == "folder":
        target = _memory_copy(tiles)
    if name not in applies:
        with pytest.raises(OptionError, match=rf"\b{name}= \("):
            check_module.check(target, **_given(name, VALUES[name][0]))
        return
    check_module.check(target, **_given(name, VALUES[name][0]))
    (call,) = calls
    if name == "validate":
        return  # check reads every header: what validate asks for
    if name == "remote":
        assert call["remote"] == RemoteSettings(timeout=12.0)
    elif name in ("include", "exclude"):
        assert tuple(call[name]) == _expected(name)
    else:
        assert call[name] == _expected(name)


# -- the command line ---------------------------------------------------------------

#: Per subcommand: the options it does not offer (argparse refuses them by name), and
#: those whose flag means the output's own setting there.
COMMANDS: dict[str, tuple[set[str], set[str]]] = {
    "inspect": ({"kvikio"}, set()),
    "serve": ({"kvikio"}, set()),
    "preview": ({"zarr_format", "sharded", "kvikio"}, set()),
    "refs": ({"zarr_format", "sharded", "kvikio"}, {"chunks"}),
    "icechunk": ({"zarr_format", "sharded", "kvikio"}, {"chunks"}),
    "materialize": ({"sharded", "kvikio"}, {"chunks", "zarr_format"}),
    "check": (
        {
            "pattern",
            "chunks",
            "fill_value",
            "validate",
            "tiles",
            "scale",
            "zarr_format",
            "sharded",
            "kvikio",
        },
        set(),
    ),
}


def _argv(command: str, tiles: Path, tmp_path: Path) -> list[str]:
    return {
        "inspect": ["inspect", str(tiles), "--json"],
        "serve": ["serve", str(tiles), "--port", "0"],
        "preview": ["preview", str(tiles), str(tmp_path / "p.png"), "--json"],
        "refs": ["refs", str(tiles), str(tmp_path / "r.json")],
        "icechunk": ["icechunk", str(tiles), str(tmp_path / "r.icechunk")],
        "materialize": ["materialize", str(tiles), str(tmp_path / "m.zarr"), "--quiet"],
        "check": ["check", str(tiles), "--json"],
    }[command]


#: Every (command, option) whose flag is the option's own (``test_command_own_flags``
#: covers the flags that mean the output's setting).
COMMAND_CASES = [
    (command, name)
    for command, (_, own) in COMMANDS.items()
    for name in OPTION_NAMES
    if name not in own
]


@pytest.mark.parametrize(("command", "name"), COMMAND_CASES)
def test_command(
    command: str,
    name: str,
    tiles: Path,
    tmp_path: Path,
    reached: Reached,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    offered_not, _ = COMMANDS[command]
    flag = VALUES[name][1]
    assert flag is not None
    argv = _argv(command, tiles, tmp_path)
    if command in ("materialize", "icechunk") and name == "storage_options":
        # There --storage-options are the output's; the source's have a flag of their own.
        flag = flag.replace("--storage-options", "--source-storage-options")
    if name == "sharded":
        argv += ["--zarr-format", "3"]
    argv += shlex.split(flag)
    if name == "storage_options" and command != "check":
        argv[1] = _memory_copy(tiles)
        if command == "icechunk":  # a repository reads its chunks from a real location
            argv += ["--url", tiles.as_uri() + "/"]
    if name in offered_not:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert shlex.split(flag)[0] in capsys.readouterr().err
        return
    if command == "serve":
        monkeypatch.setattr("tiffstore.apps.serve.serve", _serve_once)
    if command == "check":
        calls: list[OpenOptions] = []
        real = check_module.check

        def spy(target: str, options: OpenOptions | None = None, **kw: Any) -> Any:
            calls.append(OpenOptions.of(options, **kw))
            return real(target, options, **kw)

        monkeypatch.setattr("tiffstore.cli.commands.check", spy)
        main(argv)
        assert getattr(calls[-1], name) == _expected(name)
        return
    assert main(argv) == 0, capsys.readouterr().err
    assert getattr(reached.options[-1], name) == _expected(name), name


def _serve_once(store: Any, sock: Any, **kwargs: Any) -> None:
    sock.close()


def test_command_own_flags(tiles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a flag means the output's setting: refs' --chunks are the references', and
    materialize's --chunks and --zarr-format the output's."""
    seen: dict[str, Any] = {}
    real = tiffstore.write_references

    def spy(store: Any, target: str, **kw: Any) -> str:
        seen.update(kw)
        return real(store, target, **kw)

    monkeypatch.setattr("tiffstore.cli.commands.write_references", spy)
    assert main(["refs", str(tiles), str(tmp_path / "r.json"), "--chunks", "page"]) == 0
    assert seen["chunks"] == "page"
    out = tmp_path / "m.zarr"
    argv = ["materialize", str(tiles), str(out), "--quiet", "--json"]
    argv += ["--chunks", "1,1,2,8,8", "--zarr-format", "3"]
    assert main(argv) == 0
    meta = json.loads((out / "image" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 1, 2, 8, 8]


def test_a_misspelled_option_is_named_with_the_closest(tiles: Path) -> None:
    with pytest.raises(OptionError, match=r"fill_valu= is not an option.*Did you mean fill_value="):
        tiffstore.open(tiles, fill_valu=3)


def test_the_command_spells_refusals_as_flags(
    refs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", refs, "--pattern", PATTERN, "--include", "x*"]) == 1
    err = capsys.readouterr().err
    assert "--pattern (how the file names are read) does not apply to a reference file" in err
    assert "--include (which files are kept)" in err

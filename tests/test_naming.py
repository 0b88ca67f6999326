"""File names -> axes: a corpus of real instruments' naming, properties, errors, end to end.

Every corpus scheme builds its names from known axis values, lists them shuffled,
and checks that inference (no template) finds the axes, their values and kinds,
the coordinates, and each file's place; then that the inferred template, given
back as ``pattern=``, places every file the same way.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tiffstore
from tiffstore.errors import NamingError
from tiffstore.names.axes import axis_kind
from tiffstore.names.fields import GENERIC_WORDS, UNIT_LABELS
from tiffstore.names.grid import NameGrid, understand_names
from tiffstore.names.strays import find_strays
from tiffstore.names.tokens import natural_key, split_tokens
from tiffstore.sample import sample_name


@dataclass(frozen=True)
class Scheme:
    """Names from one instrument: the axes they should give and the name of each cell."""

    id: str
    dims: tuple[str, ...]
    kinds: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    name: Callable[..., str]
    coords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    coord_values: dict[str, list[Any]] = field(default_factory=dict)
    missing: frozenset[tuple[int, ...]] = frozenset()

    def cells(self) -> list[tuple[tuple[int, ...], str]]:
        """(index, name) of every file, shuffled as a listing might be."""
        out = [
            (idx, self.name(*(v[i] for v, i in zip(self.values, idx, strict=True))))
            for idx in np.ndindex(*(len(v) for v in self.values))
            if idx not in self.missing
        ]
        random.Random(self.id).shuffle(out)
        return out


def _guid(*parts: object) -> str:
    """A per-file GUID as MetaXpress appends it, reproducible from the file's place."""
    return str(uuid.UUID(int=random.Random(repr(parts)).getrandbits(128))).upper()


def _acquifer(well: str, po: int, co: int, sl: int) -> str:
    """ACQUIFER IM03: positions (X, Y, Z) and the timestamp (T) are measurements."""
    wells = ["B005", "C007", "D006"]
    jitter = random.Random(f"{well}{po}{co}{sl}").randint(0, 9)
    x = 50_299 + 9_000 * int(well[1:]) + 1_000 * po + jitter
    y = 19_906 + 100 * ord(well[0]) + jitter
    z = 212_275 + 50 * sl + po
    t = 1_375_574_652 + 60 * (wells.index(well) * 12 + po * 6 + co * 2 + sl)
    return (
        f"WE{20 + wells.index(well):05d}---{well}--PO{po:02d}--LO001--CO{co}--SL{sl:03d}"
        f"--PX16250--PW{20 * co:04d}--IN0020--TM246--X{x:06d}--Y{y:06d}--Z{z:06d}--T{t}.tif"
    )


CORPUS = [
    Scheme(
        "light-sheet",
        ("ch", "stack"),
        ("channel", "other"),
        ((0, 1, 2), (0, 1, 2, 3)),
        sample_name,
        coords={"wavelength": ("ch",), "msec": ("ch", "stack"), "msecabs": ("ch", "stack")},
        coord_values={"wavelength": [488, 560, 642]},
        missing=frozenset({(1, 2)}),
    ),
    Scheme(
        "light-sheet tiles, camera tied to channel",
        ("ch", "stack", "x", "y"),
        ("channel", "other", "space", "space"),
        ((0, 1), (0, 1), (0, 1, 2), (0, 1)),
        lambda c, s, x, y: (
            f"Scan_Iter_0000_Cam{'AB'[c]}_ch{c}_CAM1_stack{s:04d}_{(488, 642)[c]}nm"
            f"_{s * 9000 + c * 40 + x * 10 + y:07d}msec_{x:03d}x_{y:03d}y_000z_0000t.tif"
        ),
        coords={"cam": ("ch",), "wavelength": ("ch",), "msec": ("ch", "stack", "x", "y")},
        coord_values={"cam": ["A", "B"]},
    ),
    Scheme(
        "Micro-Manager 2 (image per file, Pos folders)",
        ("pos", "channel", "time", "z"),
        ("other", "channel", "time", "space"),
        ((0, 1), (0, 1), (0, 1, 2), (0, 1, 2, 3)),
        lambda p, c, t, z: f"Pos{p}/img_channel{c:03d}_position{p:03d}_time{t:09d}_z{z:03d}.tif",
        coords={"position": ("pos",)},
    ),
    Scheme(
        "Micro-Manager 1.4, sparse positions, channel names",
        ("pos", "time", "channel", "z"),
        ("other", "time", "channel", "space"),
        ((0, 3, 7), (0, 1), ("Cy5", "DAPI", "FITC"), (0, 1, 2)),
        lambda p, t, c, z: f"Pos{p}/img_{t:09d}_{c}_{z:03d}.tif",
    ),
    Scheme(
        "MetaXpress, TimePoint folders, full rows of wells, GUIDs",
        ("timepoint", "row", "col", "s", "w"),
        ("time", "other", "other", "other", "channel"),
        ((1, 2), ("B", "C"), (3, 4, 5), (1, 2), (1, 2)),
        lambda t, r, c, s, w: (
            f"TimePoint_{t}/Plate1_{r}{c:02d}_s{s}_w{w}{_guid(t, r, c, s, w)}.tif"
        ),
        coords={"well": ("row", "col"), "uuid": ("timepoint", "row", "col", "s", "w")},
        coord_values={"well": [["B03", "B04", "B05"], ["C03", "C04", "C05"]]},
    ),
    Scheme(
        "MetaXpress, scattered wells",
        ("well", "s", "w"),
        ("other", "other", "channel"),
        (("B03", "C05", "D07", "E02"), (1, 2), (1, 2)),
        lambda well, s, w: f"Plate1_{well}_s{s}_w{w}{_guid(well, s, w)}.tif",
        coords={"row": ("well",), "col": ("well",), "uuid": ("well", "s", "w")},
        coord_values={"col": [3, 5, 7, 2]},
    ),
    Scheme(
        "Opera Phenix / Operetta (Harmony)",
        ("row", "col", "field", "z", "ch"),
        ("other", "other", "other", "space", "channel"),
        ((2, 3), (3, 4, 5), (1, 2), (1, 2, 3), (1, 2)),
        lambda r, c, f, p, ch: f"r{r:02d}c{c:02d}f{f:02d}p{p:02d}-ch{ch}sk1fk1fl1.tiff",
    ),
    Scheme(
        "Nikon NIS-Elements export",
        ("xy", "c", "t", "z"),
        ("other", "channel", "time", "space"),
        ((1, 2), (1, 2), (1, 2, 3), (1, 2)),
        lambda xy, c, t, z: f"embryo_xy{xy:03d}c{c}t{t:03d}z{z:02d}.tif",
    ),
    Scheme(
        "Leica LAS X export",
        ("s", "t", "z", "ch"),
        ("other", "time", "space", "channel"),
        ((1, 2), (0, 1, 2), (0, 1), (0, 1)),
        lambda s, t, z, c: f"Experiment_Series012_s{s:02d}_t{t:03d}_z{z:03d}_ch{c:02d}.tif",
    ),
    Scheme(
        "Leica Matrix Screener",
        ("u", "v", "x", "y", "z", "c"),
        ("other", "other", "space", "space", "space", "channel"),
        ((0, 1), (0, 1), (0, 1), (0, 1, 2), (0, 1), (0, 1)),
        lambda u, v, x, y, z, c: (
            f"image--L0000--S00--U{u:02d}--V{v:02d}--J08--E00--O00--X{x:02d}--Y{y:02d}"
            f"--T0000--Z{z:02d}--C{c:02d}.ome.tif"
        ),
    ),
    Scheme(
        "Zeiss ZEN export, unpadded",
        ("s", "t", "z", "c"),
        ("other", "time", "space", "channel"),
        ((1, 2), tuple(range(1, 13)), (1, 2), (1, 2)),
        lambda s, t, z, c: f"Experiment-01_s{s}t{t}z{z}c{c}_ORG.tif",
    ),
    Scheme(
        "ImageJ image sequence",
        ("img",),
        ("other",),
        (tuple(range(1, 21)),),
        lambda i: f"img{i:04d}.tif",
    ),
    Scheme(
        "unpadded frame numbers",
        ("frame",),
        ("time",),
        (tuple(range(1, 13)),),
        lambda i: f"cell3_frame_{i}.tif",
    ),
    Scheme(
        "categorical conditions",
        ("field1", "rep", "t"),
        ("other", "other", "time"),
        (("DMSO", "nocodazole", "taxol"), (1, 2), (0, 1, 2)),
        lambda c, r, t: f"HeLa_{c}_rep{r}_t{t:02d}.tif",
    ),
    Scheme(
        "Cytation (plate reader), channel names with spaces",
        ("row", "col", "sp", "z", "c", "t"),
        ("other", "other", "other", "space", "channel", "time"),
        (("B", "C"), (2, 3), (1, 2), (1, 2), (1, 2), (1, 2)),
        lambda r, col, sp, z, c, t: (
            f"{r}{col}_02_SP{sp}Z{z}_C{c}_{('Bright Field', 'GFP')[c - 1]}_T{t:03d}.tif"
        ),
        coords={"channel": ("c",), "well": ("row", "col")},
        coord_values={"channel": ["Bright Field", "GFP"]},
    ),
    Scheme(
        "Yokogawa CellVoyager, action tied to channel",
        ("row", "col", "t", "f", "z", "c"),
        ("other", "other", "time", "other", "space", "channel"),
        (("B", "C"), (3, 4), (1, 2), (1, 2, 3), (1, 2), (1, 2)),
        lambda r, col, t, f, z, c: (
            f"AssayPlate_Greiner_#655090_{r}{col:02d}_T{t:04d}F{f:03d}L01A{c:02d}Z{z:02d}C{c:02d}.tif"
        ),
        coords={"a": ("c",), "well": ("row", "col")},
    ),
    Scheme(
        "Incucyte, date-time stamps",
        ("row", "col", "field3", "datetime"),
        ("other", "other", "other", "time"),
        (
            ("A", "B"),
            (1, 2),
            (1, 2),
            tuple(f"2023y05m{1 + h // 24:02d}d_{h % 24:02d}h00m" for h in range(0, 48, 4)),
        ),
        lambda r, c, f, dt: f"VID1234_{r}{c}_{f}_{dt}.tif",
    ),
    Scheme(
        "ACQUIFER IM03, stage positions and timestamps",
        ("well", "po", "co", "sl"),
        ("other", "other", "other", "other"),
        (("B005", "C007", "D006"), (1, 2), (1, 3), (1, 2, 3)),
        _acquifer,
        coords={
            "we": ("well",),
            "pw": ("co",),
            "x": ("well", "po", "co", "sl"),
            "z": ("po", "sl"),
            "t": ("well", "po", "co", "sl"),
        },
        coord_values={"we": [20, 21, 22], "pw": [20, 60]},
        missing=frozenset({(2, 1, 1, 2)}),
    ),
    Scheme(
        "stage positions in microns as tiles",
        ("x", "y", "c"),
        ("space", "space", "channel"),
        ((0, 1800, 3600), (0, 1800), (1, 2)),
        lambda x, y, c: f"Region1_x{x:05d}_y{y:05d}_c{c}.tif",
        missing=frozenset({(2, 1, 0), (2, 1, 1)}),
    ),
]


def check_grid(
    grid: NameGrid, scheme: Scheme, cells: Sequence[tuple[tuple[int, ...], str]]
) -> None:
    assert grid.dims == scheme.dims
    assert tuple(a.kind for a in grid.axes) == scheme.kinds
    assert [a.values for a in grid.axes] == [tuple(v) for v in scheme.values]
    for pos, (idx, _name) in zip(grid.positions, cells, strict=True):
        assert pos == idx
    assert len(grid.missing()) == len(scheme.missing)


@pytest.mark.parametrize("scheme", CORPUS, ids=[s.id for s in CORPUS])
def test_corpus_inferred_without_template(scheme: Scheme) -> None:
    cells = scheme.cells()
    grid = understand_names([name for _, name in cells])
    check_grid(grid, scheme, cells)
    coords = {c.name: c for c in grid.coords}
    for name, dims in scheme.coords.items():
        assert coords[name].dims == dims
    for name, values in scheme.coord_values.items():
        shape = tuple(grid.shape[grid.dims.index(d)] for d in coords[name].dims)
        assert coords[name].as_array(shape).tolist() == values


@pytest.mark.parametrize("scheme", CORPUS, ids=[s.id for s in CORPUS])
def test_corpus_inferred_template_places_files_the_same(scheme: Scheme) -> None:
    cells = scheme.cells()
    names = [name for _, name in cells]
    grid = understand_names(names)
    again = understand_names(names, pattern=grid.template)
    check_grid(again, scheme, cells)
    assert again.template == grid.template


def test_light_sheet_template_and_units() -> None:
    names = [sample_name(c, s) for c in range(2) for s in range(3)]
    grid = understand_names(names)
    assert grid.template == (
        "ex6-2_CamA_ch{ch}_CAM1_stack{stack}_{wavelength:coord}nm_{msec:coord}msec"
        "_{msecabs:coord}msecAbs_000x_000y_000z_0000t.tif"
    )
    units = {c.name: c.units for c in grid.coords}
    assert units == {"wavelength": "nm", "msec": "ms", "msecabs": "ms"}
    again = {c.name: c.units for c in understand_names(names, pattern=grid.template).coords}
    assert again == units


def test_guid_right_after_a_number_is_kept_apart_from_it() -> None:
    # MetaXpress writes the GUID against the wavelength number: w1 + 9E1F6A8C-...
    guids = {1: "9E1F6A8C-4C8A-4A3B-A6D1-8B0D8E2F3A4C", 2: "1A2B3C4D-0000-4000-8000-0123456789AB"}
    guids[12] = "0F1E2D3C-4B5A-4968-8776-655443322110"
    names = [f"P_B03_s1_w{w}{guid}.tif" for w, guid in guids.items()]
    grid = understand_names(names)
    assert grid.dims == ("w",) and grid.axes[0].values == (1, 2, 12)
    assert grid.template == "P_B03_s1_w{w}{uuid:coord}.tif"
    assert understand_names(names, pattern=grid.template).positions == grid.positions


# ---------------------------------------------------------------------------
# templates and small rules


def test_template_roles_ignore_and_rename() -> None:
    names = [f"exp_ch{c}_{(488, 561)[c]}nm_t{t}.tif" for c in range(2) for t in range(3)]
    assert understand_names(names).dims == ("ch", "t")
    grid = understand_names([n for n in names if "_t0" in n], pattern="exp_ch{c}_{_}nm_t{_}.tif")
    assert grid.dims == ("c",) and grid.coords == ()  # the wavelength ignored
    grid = understand_names(names, pattern="exp_ch{channel}_{wave:axis}nm_t{time}.tif")
    assert grid.dims == ("wave", "time")  # wave forced over the tied channel number
    assert grid.axes[0].units == "nm" and grid.axes[0].kind == "channel"
    assert [c.name for c in grid.coords] == ["channel"]
    grid = understand_names(names, pattern="exp_ch{channel}_{wave:coord}nm_t{time}.tif")
    assert grid.dims == ("channel", "time")
    assert grid.axes[0].kind == "channel" and grid.axes[1].kind == "time"


def test_template_forced_axis_keeps_a_constant_part() -> None:
    names = [f"a_ch1_t{t}.tif" for t in range(3)]
    assert understand_names(names).dims == ("t",)
    grid = understand_names(names, pattern="a_ch{ch:axis}_t{t}.tif")
    assert grid.dims == ("ch", "t") and grid.shape == (1, 3)


def test_regex_with_named_groups() -> None:
    names = [f"s{s}_ch{c}.tif" for s in range(3) for c in (1, 2)]
    grid = understand_names(names, pattern=r"s(?P<site>\d+)_ch(?P<ch>\d+)")
    assert grid.dims == ("site", "ch") and grid.shape == (3, 2)
    assert grid.positions[names.index("s2_ch1.tif")] == (2, 0)


def test_split_tokens_keeps_guids_and_datetimes_whole() -> None:
    guid = "9E1F6A8C-4C8A-4A3B-A6D1-8B0D8E2F3A4C"
    assert split_tokens(f"w1{guid}") == ["w", "1", guid]
    assert split_tokens("a_2023-05-01_12-30-05_t1") == [
        "a",
        "_",
        "2023-05-01_12-30-05",
        "_",
        "t",
        "1",
    ]
    assert split_tokens("VID1_2023y05m01d_12h00m") == ["VID", "1", "_", "2023y05m01d_12h00m"]


def test_natural_key_puts_numbers_first_then_text_naturally() -> None:
    values: list[int | str] = ["B10", "b9", 3, "A01", 10]
    assert sorted(values, key=natural_key) == [3, 10, "A01", "b9", "B10"]


def test_axis_kinds_follow_ome_ngff() -> None:
    assert [axis_kind(x) for x in ("c", "CH", "channel", "w", "wavelength")] == ["channel"] * 5
    assert [axis_kind(x) for x in ("t", "time", "tp")] == ["time"] * 3
    assert [axis_kind(x) for x in ("x", "y", "Z", "tile")] == ["space"] * 4
    assert axis_kind("stack") == "other"


def test_tile_label_is_space_and_stays_an_axis() -> None:
    names = [f"scan_tile{k:02d}_ch{c}.tif" for k in range(4) for c in range(2)]
    grid = understand_names(names)
    assert grid.dims == ("tile", "ch")
    assert grid.axes[0].kind == "space"


def test_wells_of_a_1536_plate_in_plate_order() -> None:
    names = [f"plate_{r}{c:02d}_s1.tif" for r in ("AA", "Z", "AB", "Y") for c in (1, 2)]
    grid = understand_names(names)
    assert grid.dims == ("row", "col")
    assert grid.axes[0].values == ("Y", "Z", "AA", "AB")
    assert grid.template == "plate_{row}{col}_s1.tif"
    assert understand_names(names, pattern=grid.template).positions == grid.positions
    scattered = understand_names(["plate_AB02_s1.tif", "plate_Z01_s1.tif", "plate_AA03_s1.tif"])
    assert scattered.dims == ("well",) and scattered.axes[0].values == ("Z01", "AA03", "AB02")


def test_regular_counter_beats_irregular_number() -> None:
    # Unlabelled and tied one to one: 1, 2, 3 counts; 1, 5, 3 does not.
    names = [f"scan_{i}_{v}.tif" for i, v in ((1, 1), (2, 5), (3, 3))]
    grid = understand_names(names)
    assert grid.dims == ("scan",) and grid.axes[0].values == (1, 2, 3)
    assert grid.coords[0].name == "field2" and grid.coords[0].values == (1, 5, 3)


def test_a_date_cut_differently_in_some_names_is_no_structure() -> None:
    guids = ["9E1F6A8C-4C8A-4A3B-A6D1-8B0D8E2F3A4C", "1A2B3C4D-0000-4000-8000-0123456789AB"]
    names = [f"a_1-02-03_{guids[0]}.tif", f"a_2023-05-01_{guids[1]}.tif"]
    with pytest.raises(NamingError, match="do not share one structure"):
        understand_names(names)


def test_per_file_stage_positions_are_coordinates_not_an_ambiguity() -> None:
    # X and Y are unique per file, so tied to each other, and order the files differently.
    rng = random.Random(3)
    xs, ys = rng.sample(range(10_000, 99_999), 6), rng.sample(range(10_000, 99_999), 6)
    names = [
        f"c{c}_t{t}_X{xs[3 * c + t]:06d}_Y{ys[3 * c + t]:06d}.tif"
        for c in range(2)
        for t in range(3)
    ]
    grid = understand_names(names)
    assert grid.dims == ("c", "t")
    coords = {c.name: c for c in grid.coords}
    assert coords["x"].dims == coords["y"].dims == ("c", "t")
    assert coords["x"].values == tuple(xs)


# ---------------------------------------------------------------------------
# errors


def test_ambiguous_keys_show_fields_and_template() -> None:
    # Each pair of the three fields indexes the four files equally well.
    cells = [(1, 1, 1), (1, 2, 2), (2, 1, 2), (2, 2, 1)]
    names = [f"alpha{a}_beta{b}_gamma{g}.tif" for a, b, g in cells]
    with pytest.raises(NamingError, match="ambiguous") as info:
        understand_names(names)
    message = str(info.value)
    for part in (
        "alpha: 2 (1, 2)",
        "beta: 2",
        "gamma: 2",
        "alpha{alpha}_beta{beta}_gamma{gamma}.tif",
    ):
        assert part in message


def test_tied_fields_ordering_files_differently_are_ambiguous() -> None:
    names = [f"run{r}_seq{s}.tif" for r, s in ((1, 3), (2, 1), (3, 2))]
    with pytest.raises(NamingError, match="run and seq go together") as info:
        understand_names(names)
    assert "run{run}_seq{seq}.tif" in str(info.value)
    assert "{run:axis}" in str(info.value)
    assert understand_names(names, pattern="run{run:axis}_seq{seq}.tif").dims == ("run",)


def test_mostly_empty_grid_fails_with_template() -> None:
    names = ["a1_b1.tif", "a2_b2.tif", "a3_b3.tif", "a1_b2.tif"]
    with pytest.raises(NamingError, match="mostly empty") as info:
        understand_names(names)
    message = str(info.value)
    assert "4 files in 9 cells" in message and "a: 3 (1, 2, 3)" in message
    assert "a{a}_b{b}.tif" in message
    grid = understand_names(names, pattern="a{a:axis}_b{b:axis}.tif")
    assert grid.shape == (3, 3) and len(grid.missing()) == 5


def test_unmatched_template_lists_files_fields_and_template() -> None:
    names = [f"ex_ch{c}_stack{s:04d}.tif" for c in range(2) for s in range(2)]
    with pytest.raises(NamingError, match="1 of 5 files do not match") as info:
        understand_names([*names, "ex_ch1_z0001.tif"], pattern="ex_ch{ch}_stack{stack}.tif")
    message = str(info.value)
    assert "  ex_ch1_z0001.tif" in message
    assert "ch: 2 (0, 1)" in message and "ex_ch{ch}_{field2}{field3}.tif" in message


def test_duplicate_and_indistinguishable_files() -> None:
    with pytest.raises(NamingError, match="listed twice"):
        understand_names(["a_t1.tif", "a_t2.tif", "a_t1.tif"])
    with pytest.raises(NamingError, match="cannot be told apart") as info:
        understand_names(["a_c1_t1.tif", "a_c2_t1.tif"], pattern="a_c{_}_t{t}.tif")
    assert "t: 1 (1)" in str(info.value) and "a_c{c}_t1.tif" in str(info.value)


def test_different_structures_fail_with_template_for_the_main_kind() -> None:
    names = [f"img_{i:03d}.tif" for i in range(4)] + ["summary.tif"]
    with pytest.raises(NamingError, match="do not share one structure") as info:
        understand_names(names)
    assert "'img_000.tif' (and 3 more like it)" in str(info.value)
    assert "img_{field1}.tif" in str(info.value)
    assert "exclude=['summary.tif'] (--exclude 'summary.tif')" in str(info.value)


def test_a_stray_name_is_left_out_and_invents_no_axis(caplog) -> None:
    names = [sample_name(c, s) for c in range(3) for s in range(4)]
    thumb = names[5].replace("_0000t", "_0000t_thumb")
    with caplog.at_level(logging.WARNING, logger="tiffstore.names.grid"):
        grid = understand_names([*names[:6], thumb, *names[6:]])
    assert grid.dims == ("ch", "stack") and grid.shape == (3, 4)
    assert grid.left_out == (thumb,)
    assert grid.positions[6] is None
    index = grid.file_index()
    assert 6 not in index and sorted(index.ravel().tolist()) == [*range(6), *range(7, 13)]
    assert "Left out 1 file " in caplog.text and thumb in caplog.text
    assert find_strays([*names, thumb]) == (thumb,)


def test_strays_need_an_extra_part_at_a_separator() -> None:
    # Channel names of different structure are values of one part, not strays.
    names = [f"t{t}_{c}.tif" for t in range(20) for c in ("DAPI", "Cy5", "Bright Field")]
    assert find_strays(names) == ()
    assert understand_names(names).dims == ("t", "channel")
    # A copy's " (1)" is a stray when the name without it is another file's.
    assert find_strays(["a_t1.tif", "a_t2.tif", "a_t3.tif", "a_t2 (1).tif"]) == ("a_t2 (1).tif",)
    # Half the names or more are never strays: that is another acquisition.
    assert find_strays(["a_t1.tif", "a_t2.tif", "a_t1_x.tif", "a_t2_x.tif"]) == ()


def test_a_subfolder_of_derived_files_suggests_the_glob_for_the_acquisition() -> None:
    names = [sample_name(c, s) for c in range(3) for s in range(4)]
    mips = [f"MIPs/{n[:-4]}_MIP_z.tif" for n in names]
    with pytest.raises(NamingError, match="do not share one structure") as info:
        understand_names(names + mips)
    message = str(info.value)
    assert "To open the 12 files like the first" in message
    assert "exclude=['MIPs/*'] (--exclude 'MIPs/*')" in message
    assert "--no-recursive" in message
    start = message.split("start from:\n  ")[1]
    assert start.startswith("ex6-2_CamA_ch{") and "MIP" not in start


def test_a_common_ending_of_the_other_files_is_suggested() -> None:
    names = [f"img_t{t}.tif" for t in range(5)] + [f"img_t{t}_MIP_001.tif" for t in range(10, 13)]
    with pytest.raises(NamingError) as info:
        understand_names(names)
    assert "exclude=['*_MIP_001.tif']" in str(info.value)


def test_two_camera_fields_make_one_axis_named_cam() -> None:
    names = [
        sample_name(c, s).replace("CamA", f"Cam{cam}").replace("CAM1", f"CAM{k}")
        for k, cam in ((1, "A"), (2, "B"))
        for c in range(2)
        for s in range(3)
    ]
    grid = understand_names(names)
    assert grid.dims == ("ch", "cam", "stack")
    assert grid.axes[1].values == (1, 2)
    coords = {c.name: c for c in grid.coords}
    assert coords["cam_letter"].dims == ("cam",) and coords["cam_letter"].values == ("A", "B")
    assert "Cam{cam_letter:coord}" in grid.template and "CAM{cam}" in grid.template
    assert understand_names(names, pattern=grid.template).dims == grid.dims


# ---------------------------------------------------------------------------
# properties

LABELS = st.text("abdeghjklmnoqruvyzACDEGHKLMNRTUVYZ", min_size=1, max_size=5).filter(
    lambda s: s.lower() not in UNIT_LABELS and s.lower() not in GENERIC_WORDS
)
CONDITIONS = ["DMSO", "taxol", "control", "treated", "mock", "siRNA", "wildtype", "vehicle"]
#: How a field is written: ``t3`` (prefix), ``3x`` (suffix), ``pos_3`` (spaced), ``DMSO`` (text).
STYLES = st.sampled_from(["prefix", "prefix", "suffix", "spaced", "text"])
SEPARATORS = st.sampled_from(["_", "-", ".", " ", "__", "--", ""])


@st.composite
def schemes(draw: st.DrawFn) -> dict[str, Any]:
    """A random naming scheme: its axes (label, style, values, padding) and the files kept."""
    n_fields = draw(st.integers(1, 4))
    labels = draw(st.lists(LABELS, min_size=n_fields, max_size=n_fields, unique_by=str.lower))
    axes = []
    for label in labels:
        style, size = draw(STYLES), draw(st.integers(1, 4))
        if style == "text":
            values: list[Any] = draw(st.permutations(CONDITIONS))[:size]
        else:
            start, step = draw(st.integers(0, 20)), draw(st.integers(1, 15))
            values = [start + step * k for k in range(size)]
        axes.append(
            {"label": label, "style": style, "values": values, "pad": draw(st.integers(1, 4))}
        )
    sizes = [len(cast(list[Any], a["values"])) for a in axes]
    cells = list(np.ndindex(*sizes))
    missing = draw(st.sets(st.sampled_from(cells), max_size=len(cells) // 4))
    return {
        "axes": axes,
        "seps": draw(st.lists(SEPARATORS, min_size=n_fields + 2, max_size=n_fields + 2)),
        # A wavelength tied to the first axis, when that counts.
        "waves": sorted(draw(st.sets(st.integers(300, 900), min_size=sizes[0], max_size=sizes[0])))
        if draw(st.booleans()) and axes[0]["style"] != "text"
        else None,
        "stamped": draw(st.booleans()),
        "cells": [c for c in cells if c not in missing],
        "prefix": draw(st.sampled_from(["", "exp_2024-01-05_", "ex6-2_CAM1", "Position 1/"])),
    }


def scheme_name(s: dict[str, Any], cell: tuple[int, ...]) -> str:
    # (text, whether it may touch the next part with no separator)
    parts = [(s["prefix"] + "acq", False)]
    for axis, i in zip(s["axes"], cell, strict=True):
        label, value, style = axis["label"], axis["values"][i], axis["style"]
        number = "" if style == "text" else f"{value:0{axis['pad']}d}"
        if style == "text":
            parts.append((value, False))
        elif style == "prefix":
            # Only a number against a word reads apart without a separator.
            parts.append((label + number, True))
        elif style == "suffix":
            parts.append((number + label, False))
        else:
            # ``pos_3t4`` would read 3 as labelled by t: a separator must follow.
            parts.append((f"{label}_{number}", False))
    if s["waves"] is not None:
        parts.append((f"{s['waves'][cell[0]]}nm", False))
    if s["stamped"]:
        parts.append((f"{1000 + 37 * s['cells'].index(cell):07d}ms", False))
    out, may_touch = parts[0]
    for sep, (part, touches) in zip(s["seps"], parts[1:], strict=False):
        out += (sep if may_touch and part[0].isalpha() else sep or "_") + part
        may_touch = touches
    return out + ".tif"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(schemes())
def test_random_schemes_round_trip(s: dict[str, Any]) -> None:
    axes, cells = s["axes"], s["cells"]
    present = [sorted({c[k] for c in cells}) for k in range(len(axes))]
    varying = [k for k, p in enumerate(present) if len(p) > 1]
    assume(varying and len(cells) > 1)
    # A lone text axis tied to the per-file stamp gives way to it (numbers beat text).
    assume(not (s["stamped"] and len(varying) == 1 and axes[varying[0]]["style"] == "text"))
    # Each varying axis must be needed: some two files differ in it alone.
    for k in varying:
        others = {tuple(c[j] for j in varying if j != k) for c in cells}
        assume(len(others) < len(cells))
    names = [scheme_name(s, c) for c in cells]
    grid = understand_names(names)

    dims = [
        f"field{varying.index(k) + 1}" if axes[k]["style"] == "text" else axes[k]["label"].lower()
        for k in varying
    ]
    assert grid.dims == tuple(dims)
    assert [a.kind for a in grid.axes] == [axis_kind(d) for d in dims]
    for k, axis in zip(varying, grid.axes, strict=True):
        expected = sorted((axes[k]["values"][i] for i in present[k]), key=natural_key)
        assert list(axis.values) == expected
    for pos, cell in zip(grid.positions, cells, strict=True):
        assert pos is not None  # every generated name is placed
        assert tuple(grid.axes[j].values[p] for j, p in enumerate(pos)) == tuple(
            axes[k]["values"][cell[k]] for k in varying
        )
    assert len(grid.missing()) == np.prod(grid.shape) - len(cells)
    coords = {c.name: c for c in grid.coords}
    if s["waves"] is not None and 0 in varying:
        assert coords["wavelength"].dims == (grid.dims[0],)
        assert coords["wavelength"].units == "nm"
    if s["stamped"]:
        assert coords["ms"].dims == grid.dims

    again = understand_names(names, pattern=grid.template)
    assert again.dims == grid.dims and again.positions == grid.positions


# ---------------------------------------------------------------------------
# end to end: real TIFF files


def write_files(
    root: Path, scheme: Scheme, shape: tuple[int, ...]
) -> dict[tuple[int, ...], np.ndarray]:
    """Write each file of a scheme holding its own pixels; return them by grid index."""
    pixels = {}
    for k, (idx, name) in enumerate(sorted(scheme.cells())):
        data = (np.arange(np.prod(shape), dtype=np.uint16).reshape(shape) + 100 * (k + 1)).astype(
            np.uint16
        )
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, data, photometric="minisblack")
        pixels[idx] = data
    return pixels


def check_store(
    store: tiffstore.TiffStore, scheme: Scheme, pixels: dict[tuple[int, ...], Any]
) -> None:
    arr = zarr.open_array(store, mode="r")
    grid_shape = tuple(len(v) for v in scheme.values)
    assert arr.shape[: len(grid_shape)] == grid_shape
    for idx in np.ndindex(*grid_shape):
        expected = pixels.get(idx)
        if expected is None:
            assert not np.asarray(arr[idx]).any()
        else:
            np.testing.assert_array_equal(arr[idx], expected)


E2E = ["Micro-Manager 1.4", "Opera Phenix", "MetaXpress, scattered", "Cytation", "Nikon"]


@pytest.mark.parametrize("prefix", E2E)
def test_corpus_end_to_end_planes(tmp_path: Path, prefix: str) -> None:
    scheme = next(s for s in CORPUS if s.id.startswith(prefix))
    pixels = write_files(tmp_path, scheme, (6, 5))
    store = tiffstore.open(tmp_path)
    assert store.dims == (*scheme.dims, "y", "x")
    kinds = [a["kind"] for a in store.attrs["tiffstore"]["axes"]]
    assert kinds == [*scheme.kinds, "space", "space"]
    check_store(store, scheme, pixels)


def test_planes_named_by_z_stack_into_a_z_axis(tmp_path: Path) -> None:
    scheme = next(s for s in CORPUS if s.id.startswith("Micro-Manager 2"))
    pixels = write_files(tmp_path, scheme, (4, 3))
    store = tiffstore.open(tmp_path)
    assert store.dims == ("pos", "channel", "time", "z", "y", "x")
    assert store.attrs["tiffstore"]["axes"][3]["kind"] == "space"
    assert store.chunks[3] == 4  # a stack's planes, across files, in one chunk
    check_store(store, scheme, pixels)


def test_stacks_with_tile_fields_keep_their_own_z(tmp_path: Path) -> None:
    scheme = Scheme(
        "light-sheet tiles",
        ("ch", "x", "y", "z"),
        ("channel", "space", "space", "space"),
        ((0, 1), (0, 1), (0, 1, 2), (0, 1)),
        lambda c, x, y, z: (
            f"ex6-2_CamA_ch{c}_CAM1_stack0000_{(488, 642)[c]}nm_{x:03d}x_{y:03d}y_{z:03d}z_0000t.tif"
        ),
        missing=frozenset({(1, 1, 2, 1)}),
    )
    pixels = write_files(tmp_path, scheme, (3, 6, 5))
    store = tiffstore.open(tmp_path)
    assert store.dims == ("ch", "tile_x", "tile_y", "tile_z", "z", "y", "x")
    axes = {a["name"]: a["kind"] for a in store.attrs["tiffstore"]["axes"]}
    assert axes["tile_x"] == axes["tile_z"] == axes["z"] == "space"
    assert store.coords["wavelength"]["dims"] == ["ch"]
    assert store.attrs["tiffstore"]["missing"] == [{"ch": 1, "tile_x": 1, "tile_y": 2, "tile_z": 1}]
    check_store(store, scheme, pixels)

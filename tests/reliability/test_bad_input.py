"""A corpus of bad input, generated here: each case ends in a tiffstore error that names
the file and the problem, or in data equal to what tifffile reads, within a time
bound. Never a foreign exception, a crash or a hang."""

from __future__ import annotations

import logging
import os
import re
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

import tiffstore
from tiffstore.errors import (
    LayoutMismatchError,
    NamingError,
    SourceError,
    TiffReadError,
    TiffStoreError,
)
from tiffstore.manifest.build import build_with_incomplete
from tiffstore.names.grid import understand_names
from tiffstore.sources.listing import resolve_source
from tiffstore.tiff.header import read_layout

from .corpus import outcome, page_offsets, patch_tag, png_bytes, stacks, write_stack

#: A header pointing past the file's end: refused at open with validate=True, else left
#: out as still being written.
PAST_END = "past the end of the file|truncated"


@dataclass
class Case:
    """A folder with one bad file: the error it must give (and words in it), or data.

    ``incomplete``: the file looks still being written, so without validate=True it is
    left out (``store.incomplete``) and its cell reads as the fill value; ``error`` and
    ``words`` then say what validate=True raises.
    """

    folder: Path
    bad: str | None
    error: type[TiffStoreError] | None = None
    words: str = ""
    data: np.ndarray | None = None
    incomplete: bool = False


def _zero_bytes(tmp: Path) -> Case:
    stacks(tmp)
    (tmp / "img_t1.tif").write_bytes(b"")
    return Case(tmp, "img_t1.tif", TiffReadError, "empty", incomplete=True)


def _only_zero_bytes(tmp: Path) -> Case:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "a.tif").write_bytes(b"")
    return Case(tmp, "a.tif", TiffReadError, "empty")


def _text(tmp: Path) -> Case:
    stacks(tmp)
    (tmp / "img_t1.tif").write_text("acquisition notes\n" * 20)
    return Case(tmp, "img_t1.tif", TiffReadError, "not a TIFF")


def _png(tmp: Path) -> Case:
    stacks(tmp)
    (tmp / "img_t1.tif").write_bytes(png_bytes())
    return Case(tmp, "img_t1.tif", TiffReadError, "not a TIFF")


def _data_cut(tmp: Path) -> Case:
    # One page: tifffile writes the header first, so the cut falls in the pixels.
    stacks(tmp, shape=(16, 16))
    bad = tmp / "img_t1.tif"
    bad.write_bytes(bad.read_bytes()[:-100])
    return Case(tmp, "img_t1.tif", TiffReadError, PAST_END, incomplete=True)


def _header_cut(tmp: Path) -> Case:
    stacks(tmp)
    bad = tmp / "img_t1.tif"
    bad.write_bytes(bad.read_bytes()[:6])
    return Case(tmp, "img_t1.tif", TiffReadError, "cut short", incomplete=True)


def _header_cut_in_ifd(tmp: Path) -> Case:
    stacks(tmp)
    bad = tmp / "img_t1.tif"
    bad.write_bytes(bad.read_bytes()[: page_offsets(bad)[0] + 10])
    return Case(tmp, "img_t1.tif", TiffReadError, "", incomplete=True)


def _ifd_past_end(tmp: Path) -> Case:
    stacks(tmp)
    bad = tmp / "img_t1.tif"
    data = bytearray(bad.read_bytes())
    data[4:8] = (10**9).to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    return Case(tmp, "img_t1.tif", TiffReadError, "no image", incomplete=True)


def _ifd_loop(tmp: Path) -> Case:
    ref = stacks(tmp, shape=(3, 8, 8))
    bad = tmp / "img_t1.tif"
    first, _, last = page_offsets(bad)
    data = bytearray(bad.read_bytes())
    n = int.from_bytes(data[last : last + 2], "little")
    at = last + 2 + 12 * n  # the last IFD's "next IFD" pointer: back to the first
    data[at : at + 4] = first.to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    return Case(tmp, "img_t1.tif", data=ref)  # tifffile stops at the loop: same pages


def _strip_offset_outside(tmp: Path) -> Case:
    stacks(tmp, shape=(8, 8))
    patch_tag(tmp / "img_t1.tif", "StripOffsets", 10**8)
    return Case(tmp, "img_t1.tif", TiffReadError, PAST_END, incomplete=True)


def _strip_bytecount_outside_uncompressed(tmp: Path) -> Case:
    # Uncompressed: the image size says how many bytes; tifffile reads them too.
    ref = stacks(tmp, shape=(8, 8))
    patch_tag(tmp / "img_t1.tif", "StripByteCounts", 10**8)
    return Case(tmp, "img_t1.tif", data=ref)


def _compressed_offset_outside(tmp: Path) -> Case:
    stacks(tmp, shape=(64, 64), compression="zlib")
    patch_tag(tmp / "img_t1.tif", "StripOffsets", 10**8)
    return Case(tmp, "img_t1.tif", TiffReadError, PAST_END, incomplete=True)


def _compressed_bytecount_outside(tmp: Path) -> Case:
    stacks(tmp, shape=(64, 64), compression="zlib")
    patch_tag(tmp / "img_t1.tif", "StripByteCounts", 10**8)
    return Case(tmp, "img_t1.tif", TiffReadError, PAST_END, incomplete=True)


def _bomb_uncompressed(tmp: Path) -> Case:
    stacks(tmp, n=1, shape=(8, 8))
    for tag in ("ImageWidth", "ImageLength"):
        patch_tag(tmp / "img_t0.tif", tag, 100_000)  # 20 GB of uint16 in a 400-byte file
    return Case(tmp, "img_t0.tif", TiffReadError, "declares an image")


def _bomb_compressed(tmp: Path) -> Case:
    stacks(tmp, n=1, shape=(8, 8), compression="zlib")
    for tag in ("ImageWidth", "ImageLength"):
        patch_tag(tmp / "img_t0.tif", tag, 100_000)
    return Case(tmp, "img_t0.tif", TiffReadError, "declares an image")


def _decodes_short(tmp: Path) -> Case:
    stacks(tmp, shape=(64, 64), compression="zlib")
    bad = tmp / "img_t1.tif"
    with tifffile.TiffFile(bad) as tif:
        offset = int(tif.pages[0].dataoffsets[0])
    short = zlib.compress(b"\x01" * 100)
    data = bytearray(bad.read_bytes())
    data[offset : offset + len(short)] = short
    bad.write_bytes(bytes(data))
    return Case(tmp, "img_t1.tif", TiffReadError, "do not fill")


def _decodes_garbage(tmp: Path) -> Case:
    stacks(tmp, shape=(64, 64), compression="zlib")
    bad = tmp / "img_t1.tif"
    with tifffile.TiffFile(bad) as tif:
        page = tif.pages[0]
        offset, count = int(page.dataoffsets[0]), int(page.databytecounts[0])
    data = bytearray(bad.read_bytes())
    data[offset : offset + count] = np.random.default_rng(3).bytes(count)
    bad.write_bytes(bytes(data))
    return Case(tmp, "img_t1.tif", TiffReadError, "could not be decoded")


def _other_shape(tmp: Path) -> Case:
    stacks(tmp)
    write_stack(tmp / "img_t1.tif", np.zeros((2, 8, 9), np.uint16))
    return Case(tmp, "img_t1.tif", LayoutMismatchError, "shape")


def _other_dtype(tmp: Path) -> Case:
    stacks(tmp)
    write_stack(tmp / "img_t1.tif", np.zeros((2, 8, 8), np.float32))
    return Case(tmp, "img_t1.tif", LayoutMismatchError, "dtype")


def _other_byte_order(tmp: Path) -> Case:
    ref = stacks(tmp)
    write_stack(tmp / "img_t1.tif", ref[1], byteorder=">")
    return Case(tmp, "img_t1.tif", LayoutMismatchError, "byte order")


def _other_compression(tmp: Path) -> Case:
    # Same array, stored another way: each file is read by its own header.
    ref = stacks(tmp)
    write_stack(tmp / "img_t1.tif", ref[1], compression="zlib")
    return Case(tmp, None, data=ref)


def _same_grid_index(tmp: Path) -> Case:
    rng = np.random.default_rng(1)
    for name in ("img_stack1.tif", "img_stack01.tif", "img_stack2.tif"):
        write_stack(tmp / name, rng.integers(0, 9, (4, 4), dtype=np.uint16))
    return Case(tmp, "img_stack01.tif", NamingError, "")


CASES: dict[str, Callable[[Path], Case]] = {
    "zero-byte file": _zero_bytes,
    "only a zero-byte file": _only_zero_bytes,
    "text named .tif": _text,
    "PNG named .tif": _png,
    "pixel data cut": _data_cut,
    "header cut": _header_cut,
    "header cut inside the IFD": _header_cut_in_ifd,
    "IFD offset past the end": _ifd_past_end,
    "IFD loop": _ifd_loop,
    "strip offset outside the file": _strip_offset_outside,
    "strip byte count outside (uncompressed)": _strip_bytecount_outside_uncompressed,
    "compressed strip offset outside the file": _compressed_offset_outside,
    "compressed strip byte count outside the file": _compressed_bytecount_outside,
    "declared size far beyond the file": _bomb_uncompressed,
    "decompression bomb": _bomb_compressed,
    "strip decodes to the wrong size": _decodes_short,
    "strip decodes to garbage": _decodes_garbage,
    "neighbour of another shape": _other_shape,
    "neighbour of another dtype": _other_dtype,
    "neighbour of another byte order": _other_byte_order,
    "neighbour of another compression": _other_compression,
    "stack1 and stack01": _same_grid_index,
}


@pytest.mark.parametrize("validate", [False, True], ids=["lazy", "validate"])
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, validate: bool, tmp_path: Path) -> None:
    case = CASES[name](tmp_path / "raw")
    result = outcome(case.folder, validate=validate)
    if case.incomplete and not validate:
        # Left out as still being written: the open succeeds, the file is named, its
        # cell reads as the fill value and the other files as tifffile reads them.
        assert result.error is None, f"{name}: {result.error}"
        assert result.data is not None
        assert tiffstore.open(case.folder).incomplete == (case.bad,)
        for k, path in enumerate(sorted(case.folder.glob("*.tif"))):
            if path.name == case.bad:
                assert not result.data[k].any(), f"{name}: the incomplete file's cell has data"
            else:
                np.testing.assert_array_equal(result.data[k], tifffile.imread(path))
        return
    if case.error is None:
        assert result.error is None, f"{name}: {result.error}"
        assert result.data is not None
        np.testing.assert_array_equal(result.data, case.data)
        return
    assert result.error is not None, f"{name}: read data instead of failing"
    assert isinstance(result.error, case.error), f"{name}: {result.error!r}"
    assert case.bad is not None and case.bad in str(result.error)
    assert re.search(case.words, str(result.error)), f"{name}: {result.error}"


def test_data_read_equals_tifffile_where_tifffile_reads(tmp_path: Path) -> None:
    """The cases read as data agree with tifffile file by file (not just with the writer)."""
    for name in ("IFD loop", "strip byte count outside (uncompressed)"):
        case = CASES[name](tmp_path / name.replace(" ", "_"))
        files = sorted(case.folder.glob("*.tif"))
        expected = np.stack([tifffile.imread(f) for f in files])
        result = outcome(case.folder)
        assert result.data is not None
        np.testing.assert_array_equal(result.data, expected)


# -- folders and names -----------------------------------------------------------


def test_empty_folder(tmp_path: Path) -> None:
    result = outcome(tmp_path)
    assert isinstance(result.error, SourceError)
    assert str(tmp_path) in str(result.error)


def test_one_file_folder(tmp_path: Path) -> None:
    ref = stacks(tmp_path, n=1)
    result = outcome(tmp_path)
    assert result.data is not None
    np.testing.assert_array_equal(result.data, ref[0])


@pytest.mark.parametrize(
    "stem",
    [
        "run 1 of 3",
        "célula_δ_細胞",
        "$(touch pwned);`id`;'\"&|<>",
        "-rf --no-preserve-root",
    ],
)
def test_names_with_spaces_unicode_and_shell_characters(stem: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 999, (3, 4, 6), dtype=np.uint16)
    for t in range(3):
        write_stack(tmp_path / f"{stem}_t{t}.tif", ref[t])
    result = outcome(tmp_path)
    assert result.error is None, result.error
    np.testing.assert_array_equal(result.data, ref)
    assert not (tmp_path / "pwned").exists()


def test_names_that_are_not_utf8(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    ref = rng.integers(0, 999, (3, 4, 6), dtype=np.uint16)
    folder = os.fsencode(tmp_path)
    for t in range(3):
        path = os.path.join(folder, b"caf\xe9_\xff_t%d.tif" % t)
        tifffile.imwrite(os.fsdecode(path), ref[t], photometric="minisblack")
    result = outcome(tmp_path)
    assert result.error is None, result.error
    np.testing.assert_array_equal(result.data, ref)


# -- links and permissions -----------------------------------------------------


def test_symlinked_file_is_read_through(tmp_path: Path) -> None:
    ref = stacks(tmp_path / "elsewhere")
    folder = tmp_path / "raw"
    folder.mkdir()
    for t in range(3):
        (folder / f"img_t{t}.tif").symlink_to(tmp_path / "elsewhere" / f"img_t{t}.tif")
    result = outcome(folder)
    np.testing.assert_array_equal(result.data, ref)


def test_broken_links_and_link_loops_are_not_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A link loop or a dangling link named .tif is no file: left out, with a log line."""
    ref = stacks(tmp_path)
    (tmp_path / "loop_a.tif").symlink_to(tmp_path / "loop_b.tif")
    (tmp_path / "loop_b.tif").symlink_to(tmp_path / "loop_a.tif")
    (tmp_path / "img_t9.tif").symlink_to(tmp_path / "gone.tif")
    with caplog.at_level(logging.WARNING, logger="tiffstore.sources.local"):
        result = outcome(tmp_path)
    np.testing.assert_array_equal(result.data, ref)
    said = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("loop_a.tif", "loop_b.tif", "img_t9.tif"):
        assert f"{name}: left out" in said, said


def test_folder_link_loop_ends(tmp_path: Path) -> None:
    """A folder that links to itself (or a parent) is walked once, not forever."""
    ref = stacks(tmp_path / "raw")
    (tmp_path / "raw" / "again").symlink_to(tmp_path / "raw")
    (tmp_path / "raw" / "up").symlink_to(tmp_path)
    result = outcome(tmp_path / "raw", seconds=20)
    np.testing.assert_array_equal(result.data, ref)


def test_unreadable_file(tmp_path: Path) -> None:
    """An unreadable file is a TiffReadError naming it.

    As root (CI containers), permission bits do not stop reads: the file is then
    read, and its data must be right. Both outcomes are checked honestly.
    """
    ref = stacks(tmp_path)
    bad = tmp_path / "img_t1.tif"
    bad.chmod(0)
    try:
        readable = os.access(bad, os.R_OK)
        result = outcome(tmp_path)
    finally:
        bad.chmod(0o644)
    if readable:
        assert os.geteuid() == 0
        np.testing.assert_array_equal(result.data, ref)
    else:
        assert isinstance(result.error, TiffReadError)
        assert "img_t1.tif" in str(result.error)
        assert "ermission" in str(result.error)


def test_listed_file_that_is_a_folder(tmp_path: Path) -> None:
    stacks(tmp_path)
    (tmp_path / "sub.tif").mkdir()
    result = outcome(tmp_path / "sub.tif")
    assert isinstance(result.error, SourceError)
    assert "sub.tif" in str(result.error)


def test_every_case_also_fails_cleanly_through_dask(tmp_path: Path) -> None:
    """The dask path (to_dask) gives the same tiffstore error, not a wrapped one."""
    case = _decodes_garbage(tmp_path / "raw")
    store = tiffstore.open(case.folder)
    with pytest.raises(TiffReadError, match=r"img_t1\.tif"):
        store.to_dask().compute(scheduler="threads")


@pytest.mark.parametrize("name", ["declared size far beyond the file", "decompression bomb"])
def test_huge_declared_images_are_refused_before_allocating(name: str, tmp_path: Path) -> None:
    case = CASES[name](tmp_path / "raw")
    tracemalloc.start()
    try:
        with pytest.raises(TiffReadError, match=r"img_t0\.tif.*decompression bomb"):
            tiffstore.open(case.folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak:,} bytes allocated for a refused file"


def test_a_chunk_past_the_listed_size_is_refused_before_allocating(tmp_path: Path) -> None:
    """A plan reading past a file's listed end is refused before its chunk is
    allocated (here 128 MiB of pixels declared, 8 MiB held). An open leaves such a
    file out as still being written; a manifest given its header as read before (a
    refresh does so) keeps it, and its read must still be refused."""
    write_stack(tmp_path / "img_t1.tif", np.zeros((2048, 2048), np.uint16))
    for tag in ("ImageWidth", "ImageLength"):
        patch_tag(tmp_path / "img_t1.tif", tag, 8192)
    source, files = resolve_source(tmp_path)
    with source.open("img_t1.tif") as fh:
        known = {"img_t1.tif": read_layout(fh, "img_t1.tif")}
    grid = understand_names([f.name for f in files])
    manifest, incomplete = build_with_incomplete(source, files, grid, chunks="file", known=known)
    assert not incomplete
    store = tiffstore.TiffStore(manifest)
    tracemalloc.start()
    try:
        with pytest.raises(TiffReadError, match=r"img_t1\.tif.*past the end"):
            store.get_bytes_sync("0.0")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak:,} bytes allocated for a refused chunk"


def test_special_files_named_tif_are_never_opened(tmp_path: Path) -> None:
    """A FIFO (opening it would block) or a link to a device named .tif is no file."""
    ref = stacks(tmp_path)
    os.mkfifo(tmp_path / "img_t7.tif")
    (tmp_path / "img_t8.tif").symlink_to("/dev/zero")
    result = outcome(tmp_path, seconds=20)
    assert result.error is None, result.error
    np.testing.assert_array_equal(result.data, ref)
    # Named explicitly, they are refused rather than read.
    for name in ("img_t7.tif", "img_t8.tif"):
        result = outcome([tmp_path / "img_t0.tif", tmp_path / name], seconds=20)
        assert isinstance(result.error, SourceError), result.error
        assert f"{name}: not a regular file" in str(result.error)

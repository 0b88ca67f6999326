"""Fuzzing the header path: real small TIFFs with bytes mutated by hypothesis.

Opening and reading a mutated file may end only in a tiffstore error or in data
equal to what tifffile reads (when tifffile reads it), within a few seconds.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from functools import cache, partial
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from .corpus import bounded, outcome

#: Seconds one mutated file may take to open and read.
SECONDS = 10
#: Examples per run: CI runs the same few hundred every time (derandomized); set
#: TIFFSTORE_FUZZ_EXAMPLES to search longer, with fresh random examples.
EXAMPLES = int(os.environ.get("TIFFSTORE_FUZZ_EXAMPLES", "0")) or 300
FRESH = "TIFFSTORE_FUZZ_EXAMPLES" in os.environ


@cache
def seeds() -> dict[str, bytes]:
    """Small real TIFFs of the kinds tiffstore reads differently."""
    rng = np.random.default_rng(11)
    data = rng.integers(0, 4000, (3, 24, 20), dtype=np.uint16)
    kinds: dict[str, dict[str, object]] = {
        "contiguous": {},
        "big-endian": {"byteorder": ">"},
        "bigtiff": {"bigtiff": True},
        "zlib-strips": {"compression": "zlib", "rowsperstrip": 8},
        "zstd-tiles": {"compression": "zstd", "tile": (16, 16)},
        "imagej": {"imagej": True},
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in kinds.items():
            path = Path(tmp) / f"{name}.tif"
            photometric = None if options.get("imagej") else "minisblack"
            tifffile.imwrite(path, data, photometric=photometric, **options)  # type: ignore[arg-type]
            out[name] = path.read_bytes()
    return out


#: Kinds stored whole and uncompressed: same-size files of these share one parsed
#: header at open, the others' header bytes being compared with it.
GROUPED = ("contiguous", "big-endian", "bigtiff", "imagej")
GROUP_OPTIONS: dict[str, dict[str, object]] = {
    "contiguous": {},
    "big-endian": {"byteorder": ">"},
    "bigtiff": {"bigtiff": True},
    "imagej": {"imagej": True},
}


@cache
def group_seeds() -> dict[str, tuple[list[bytes], int]]:
    """Per kind: three files of one size with other pixels, and where pixel data start."""
    rng = np.random.default_rng(12)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in GROUPED:
            files = []
            for i in range(3):
                data = rng.integers(0, 4000, (3, 24, 20), dtype=np.uint16)
                path = Path(tmp) / f"{kind}{i}.tif"
                options = GROUP_OPTIONS[kind]
                photometric = None if kind == "imagej" else "minisblack"
                tifffile.imwrite(path, data, photometric=photometric, **options)  # type: ignore[arg-type]
                files.append(path.read_bytes())
            with tifffile.TiffFile(Path(tmp) / f"{kind}0.tif") as tif:
                start = int(tif.series[0].dataoffset or 0)
            assert len({len(f) for f in files}) == 1 and start > 0
            out[kind] = (files, start)
    return out


def tifffile_reads(path: Path) -> np.ndarray | None:
    """What tifffile reads from the file, or ``None`` if it cannot (or it is huge)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                if series.nbytes > 2**26:
                    return None
                return np.asarray(series.asarray())
        except Exception:
            return None


def tifffile_pages(path: Path, page_shape: tuple[int, ...]) -> dict[int, np.ndarray]:
    """The pages tifffile decodes one by one, where the whole series defeats it."""
    pages: dict[int, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with tifffile.TiffFile(path) as tif:
                for i, page in enumerate(tif.pages):
                    if i > 64:
                        break
                    try:
                        data = np.asarray(page.asarray())
                    except Exception:
                        continue
                    if data.size == int(np.prod(page_shape)):
                        pages[i] = data.reshape(page_shape)
        except Exception:
            return {}
    return pages


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(seeds())))
    data = bytearray(seeds()[kind])
    # Most mutations hit the header and the first IFD, where the structure is.
    near = st.integers(0, min(len(data), 600) - 1)
    anywhere = st.integers(0, len(data) - 1)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.one_of(near, near, anywhere))
        how = draw(st.sampled_from(["byte", "flip", "max", "zero"]))
        if how == "byte":
            data[at] = draw(st.integers(0, 255))
        elif how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at] = 0xFF if how == "max" else 0
    if draw(st.booleans()) and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return kind, bytes(data)


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not FRESH,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=mutated())
def test_mutated_headers_give_a_tiffstore_error_or_tifffiles_data(case: tuple[str, bytes]) -> None:
    kind, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.tif"
        path.write_bytes(data)
        if os.environ.get("TIFFSTORE_FUZZ_SAVE"):
            Path(os.environ["TIFFSTORE_FUZZ_SAVE"], f"{kind}.tif").write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = outcome(path, seconds=SECONDS)
        if result.error is not None:
            assert "mutant.tif" in str(result.error), f"{kind}: {result.error}"
            return
        assert result.data is not None
        expected = bounded(lambda: tifffile_reads(path), SECONDS)
        if expected is not None:
            assert result.data.size == expected.size, (
                f"{kind}: {result.data.shape} vs {expected.shape}"
            )
            np.testing.assert_array_equal(
                result.data.reshape(-1), expected.reshape(-1), err_msg=kind
            )
            return
        # tifffile cannot read the series whole: compare the pages it does decode.
        page_shape = result.data.shape[-2:]
        pages = bounded(lambda: tifffile_pages(path, page_shape), SECONDS)
        ours = result.data.reshape(-1, *page_shape)
        comparable = {i: p for i, p in pages.items() if i < len(ours)}
        # Nothing tifffile reads to compare with: not a pass, an example hypothesis drops.
        event("compared page by page" if comparable else "nothing tifffile reads")
        assume(bool(comparable))
        for i, page in comparable.items():
            np.testing.assert_array_equal(ours[i], page, err_msg=f"{kind}: page {i}")


def test_seeds_read_as_written() -> None:
    """The unmutated seeds read right (so the fuzzing starts from working files)."""
    with tempfile.TemporaryDirectory() as tmp:
        for kind, data in seeds().items():
            path = Path(tmp) / f"{kind}.tif"
            path.write_bytes(data)
            result = outcome(path)
            assert result.data is not None, f"{kind}: {result.error}"
            np.testing.assert_array_equal(result.data, tifffile.imread(path))


@st.composite
def group_mutant(draw: st.DrawFn) -> tuple[str, int, bytes]:
    """One file of a same-size group with header bytes mutated (its size kept)."""
    kind = draw(st.sampled_from(GROUPED))
    files, start = group_seeds()[kind]
    which = draw(st.integers(0, 2))
    data = bytearray(files[which])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, start - 1))
        data[at] = draw(st.integers(0, 255))
    return kind, which, bytes(data)


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES // 2,
    deadline=None,
    derandomize=not FRESH,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=group_mutant())
def test_a_mutated_member_of_a_same_size_group_is_never_read_as_its_group(
    case: tuple[str, int, bytes],
) -> None:
    """Same-size files share one parsed header at open; a member whose header bytes
    differ is read by its own header, or named in an error, never read as the others."""
    kind, which, data = case
    files, _ = group_seeds()[kind]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, original in enumerate(files):
            (folder / f"img_t{i}.tif").write_bytes(data if i == which else original)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = outcome(folder, seconds=SECONDS)
        mutant = folder / f"img_t{which}.tif"
        if result.error is not None:
            assert mutant.name in str(result.error), f"{kind}: {result.error}"
            return
        assert result.data is not None
        for i in range(3):
            path = folder / f"img_t{i}.tif"
            expected = bounded(partial(tifffile_reads, path), SECONDS)
            if expected is None:
                assert i == which
                continue
            np.testing.assert_array_equal(
                result.data[i].reshape(-1), expected.reshape(-1), err_msg=f"{kind} file {i}"
            )

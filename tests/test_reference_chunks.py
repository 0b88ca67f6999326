"""Reference files that stay small and never inline what a byte range can describe.

The default chunks of a reference file are byte ranges of the TIFFs: equal runs of
pages that divide each file's pages, whole files, single pages, or the files' own
strips and tiles (edge tiles included). Only a last strip a TIFF stores short is
inlined, up to ``max_inline``; past it the writer refuses and names what works.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
import tifffile

import tiffstore
from tests.conftest import write_positions
from tests.test_references import _read_elsewhere, _read_here
from tiffstore.cli.main import main
from tiffstore.outputs.references import (
    MAX_INLINE,
    ReferenceError,
    describe_reference_chunks,
    reference_chunks,
    write_references,
)


def _image_refs(target: str) -> dict[str, Any]:
    doc = json.loads(Path(target).read_text())
    refs = doc.get("refs", doc)
    return {
        k: v
        for k, v in refs.items()
        if k.startswith("image/") and not k.endswith((".zarray", ".zattrs"))
    }


def _inlined(target: str) -> list[str]:
    return [k for k, v in _image_refs(target).items() if isinstance(v, str)]


def _sparse_stacks(folder: Path, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """``stackNNNN.tif`` files of ``shape`` uint16, uncompressed and mostly never written
    (sparse on disk): a few marked planes each. Returns them as tifffile reads them."""
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        path = folder / f"stack{i:04d}.tif"
        data = tifffile.memmap(path, shape=shape, dtype="uint16", photometric="minisblack")
        for z in (0, shape[0] // 2, shape[0] - 1):
            data[z, : 4 + i, :7] = 1000 * i + z + 1
        data.flush()
        del data
        out.append(tifffile.imread(path))
    return np.stack(out)


def test_default_references_of_50_page_stacks_are_ranges_of_a_few_kb_per_file(tmp_path):
    """The newcomer's (50, 512, 512) stacks: 32-page chunks would leave an 18-page
    chunk per file, padded and inlined; references take runs of 25 instead."""
    ref = _sparse_stacks(tmp_path / "raw", 3, (50, 512, 512))
    store = tiffstore.open(tmp_path / "raw", chunks=32)  # 32 + 18
    target = str(tmp_path / "refs.json")
    write_references(store, target)
    assert reference_chunks(store.manifest).chunks == (1, 25, 512, 512)
    # The store's own default chunks are balanced already: the references keep them.
    default = tiffstore.open(tmp_path / "raw")
    assert default.chunks == (1, 25, 512, 512)
    assert reference_chunks(default.manifest) == default.manifest
    refs = _image_refs(target)
    assert not _inlined(target)
    assert all(isinstance(v, list) and v[2] == 25 * 512 * 512 * 2 for v in refs.values())
    assert Path(target).stat().st_size / 3 < 4000  # a few kB per file, metadata included
    # Read by fsspec + zarr alone, in a process that never imports tiffstore.
    np.testing.assert_array_equal(_read_elsewhere(tmp_path, target, "file", {}), ref)


def test_the_blog_shape_takes_runs_that_divide_201_pages(tmp_path):
    """(201, 1024, 768): 201 = 3 x 67, so runs of 3 pages, not 10 + a padded 1."""
    _sparse_stacks(tmp_path / "raw", 2, (201, 1024, 768))
    store = tiffstore.open(tmp_path / "raw")
    assert store.chunks[1] == 10
    target = str(tmp_path / "refs.json")
    write_references(store, target)
    assert not _inlined(target)
    assert len(_image_refs(target)) == 2 * 67
    assert "equal runs that divide each file's 201 pages" in describe_reference_chunks(
        store.manifest
    )


def test_whole_small_files_are_one_reference_each(tmp_path):
    ref = write_positions(tmp_path / "raw", shape=(7, 16, 12))
    store = tiffstore.open(tmp_path / "raw", chunks=(2, 4, 16, 12))  # across files
    target = str(tmp_path / "refs.json")
    write_references(store, target)
    assert len(_image_refs(target)) == 3
    np.testing.assert_array_equal(_read_here(target)["image"][...], ref)


def test_padded_chunks_asked_for_are_inlined_up_to_the_cap(tmp_path, caplog):
    ref = write_positions(tmp_path / "raw", n=2, shape=(50, 16, 16))
    store = tiffstore.open(tmp_path / "raw")
    target = str(tmp_path / "refs.json")
    with pytest.raises(ReferenceError, match=r"more than 1,000 bytes.*chunks='page'") as err:
        write_references(store, target, chunks=32, max_inline=1000)
    assert str(tmp_path / "raw") in str(err.value)
    assert not Path(target).exists()
    # Under the cap: inlined, with a warning that gives the total.
    with caplog.at_level(logging.WARNING, logger="tiffstore"):
        write_references(store, target, chunks=32)
    assert len(_inlined(target)) == 2
    assert f"{2 * 32 * 16 * 16 * 2} bytes in all" in caplog.text
    np.testing.assert_array_equal(_read_here(target)["image"][...], ref)


def test_short_compressed_strips_past_the_cap_are_refused_naming_max_inline(tmp_path, caplog):
    """Strips of 16 rows over 40: each page's last strip holds 8 rows and is inlined."""
    ref = write_positions(tmp_path / "raw", shape=(4, 40, 50), compression="zlib", rowsperstrip=16)
    store = tiffstore.open(tmp_path / "raw")
    target = str(tmp_path / "refs.json")
    with pytest.raises(ReferenceError, match="max_inline="):
        write_references(store, target, max_inline=100)
    assert not Path(target).exists()
    code = main(["refs", str(tmp_path / "raw"), target, "--max-inline", "100B", "-q"])
    assert code == 1
    with caplog.at_level(logging.WARNING, logger="tiffstore"):
        write_references(store, target)
    assert len(_inlined(target)) == 3 * 4
    assert "12 chunks stored short" in caplog.text
    np.testing.assert_array_equal(_read_here(target)["image"][...], ref)


TILED = {
    "jpeg": {"compression": "jpeg", "tile": (16, 16), "dtype": "uint8"},
    "deflate-predictor": {"compression": "zlib", "predictor": True, "tile": (16, 16)},
    "zstd": {"compression": "zstd", "tile": (16, 32)},
    "lzw-rgb": {"compression": "lzw", "tile": (16, 16), "photometric": "rgb", "dtype": "uint8"},
}


@pytest.mark.parametrize("kind", list(TILED))
def test_edge_tiles_are_referenced_not_inlined(tmp_path, kind):
    """Odd sizes (37 x 45): a third of the tiles are edge tiles, stored padded."""
    options = dict(TILED[kind])
    dtype = options.pop("dtype", "uint16")
    rgb = options.get("photometric") == "rgb"
    rng = np.random.default_rng(1)
    folder = tmp_path / "raw"
    folder.mkdir()
    for i in range(2):
        shape = (2, 37, 45, 3) if rgb else (2, 37, 45)
        data = rng.integers(0, 200, shape).astype(dtype)
        tifffile.imwrite(folder / f"pos{i}.tif", data, **{"photometric": "minisblack", **options})
    ref = np.stack([tifffile.imread(folder / f"pos{i}.tif") for i in range(2)])
    store = tiffstore.open(folder)
    target = str(tmp_path / "refs.json")
    write_references(store, target)
    assert not _inlined(target)
    columns = -(-45 // options["tile"][1])
    assert len(_image_refs(target)) == 2 * 2 * 3 * columns  # files x pages x tiles
    got = _read_elsewhere(tmp_path, target, "file", {}, "imagecodecs")
    np.testing.assert_array_equal(got, ref)  # lossy JPEG included: the same decoder


def test_plain_zstd_and_deflate_read_without_imagecodecs(tmp_path):
    """numcodecs' own ``zstd`` and ``zlib`` decode these bytes: no imagecodecs needed."""
    for compression in ("zstd", "zlib"):
        folder = tmp_path / compression
        ref = write_positions(folder, shape=(3, 40, 30), compression=compression, tile=(16, 16))
        target = str(tmp_path / f"{compression}.json")
        write_references(tiffstore.open(folder), target)
        zarray = json.loads(json.loads(Path(target).read_text())["refs"]["image/.zarray"])
        assert zarray["compressor"] == {"id": compression} and zarray["filters"] is None
        got = _read_elsewhere(tmp_path, target, "file", {}, "no-imagecodecs")
        np.testing.assert_array_equal(got, ref)


@pytest.mark.skipif(not imagecodecs.LERC.available, reason="imagecodecs built without LERC")
def test_a_lerc_file_is_refused_naming_its_codec(tmp_path):
    for i in range(2):
        tifffile.imwrite(tmp_path / f"pos{i}.tif", np.zeros((2, 8, 8), "f4"), compression="lerc")
    with pytest.raises(ReferenceError, match=r"LERC \(34887\) compression"):
        write_references(tiffstore.open(tmp_path), str(tmp_path / "r.json"))


def test_packed_bits_are_refused_as_packed_bits(tmp_path):
    for i in range(2):
        tifffile.imwrite(tmp_path / f"pos{i}.tif", np.zeros((2, 8, 8), bool))
    store = tiffstore.open(tmp_path)
    with pytest.raises(ReferenceError, match=r"1-bit samples \(packed bits\)"):
        write_references(store, str(tmp_path / "r.json"))
    assert describe_reference_chunks(store.manifest).startswith("none: ")


def _saved_manifest_text(target: str) -> str:
    """Everything the saved manifest holds, as text: its JSON and its string arrays."""
    attrs = json.loads(json.loads(Path(target).read_text())["refs"][".zattrs"])
    npz = np.load(io.BytesIO(base64.b64decode(attrs["tiffstore"]["manifest"])))
    parts = [npz["manifest"].tobytes().decode()]
    parts += [str(npz[k].tolist()) for k in npz.files if npz[k].dtype.kind in "US"]
    return "\n".join(parts)


def test_url_files_hold_no_path_of_the_writing_machine(tmp_path):
    write_positions(tmp_path / "raw")
    target = str(tmp_path / "refs.json")
    write_references(tiffstore.open(tmp_path / "raw"), target, url="s3://bucket/raw/")
    text = Path(target).read_text()
    assert str(tmp_path) not in text
    assert str(tmp_path) not in _saved_manifest_text(target)
    attrs = json.loads(json.loads(text)["refs"][".zattrs"])["tiffstore"]
    assert attrs["made_from"]["root"] == "s3://bucket/raw/"
    assert attrs["made_from"]["files"] == ["pos0.tif", "pos1.tif", "pos2.tif"]
    # Times of the local files say nothing of the copies: they are left out.
    assert "mtimes_ns" not in attrs["made_from"]
    # Without url= the file names where the files are now, as it should.
    write_references(tiffstore.open(tmp_path / "raw"), target, overwrite=True)
    assert str(tmp_path) in Path(target).read_text()


def test_refs_and_inspect_say_the_chunks_they_chose(tmp_path, capsys):
    _sparse_stacks(tmp_path / "raw", 2, (50, 64, 64))
    assert main(["refs", str(tmp_path / "raw"), str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "Chunks (1, 50, 64, 64): 50 pages of one file per chunk" in out
    assert main(["inspect", str(tmp_path / "raw")]) == 0
    assert "Refs    chunks (1, 50, 64, 64)" in capsys.readouterr().out


def test_max_inline_is_checked():
    with pytest.raises(tiffstore.OptionError, match="max_inline=-1"):
        write_references(None, "x.json", max_inline=-1)
    assert MAX_INLINE == 2**20


def test_uncompressed_tiles_are_referenced_not_inlined(tmp_path):
    ref = write_positions(tmp_path / "raw", n=2, shape=(2, 100, 90), tile=(32, 32))
    target = str(tmp_path / "refs.json")
    write_references(tiffstore.open(tmp_path / "raw"), target)
    assert not _inlined(target)
    assert len(_image_refs(target)) == 2 * 2 * 4 * 3
    np.testing.assert_array_equal(_read_elsewhere(tmp_path, target, "file", {}), ref)


def test_edge_tiles_encoded_at_their_valid_size_are_inlined_padded(tmp_path, caplog):
    """A writer may encode an edge tile at its valid size only: zarr cannot read such a
    tile as a chunk, so it is decoded, padded and inlined, as a short last strip is."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (100, 100), dtype=np.uint8)

    def tiles() -> Any:
        for r in range(0, 100, 64):
            for c in range(0, 100, 64):
                yield imagecodecs.zlib_encode(image[r : r + 64, c : c + 64].tobytes())

    folder = tmp_path / "raw"
    folder.mkdir()
    for i in range(2):
        tifffile.imwrite(
            folder / f"pos{i}.tif", tiles(), shape=(100, 100), dtype="uint8", tile=(64, 64),
            compression="zlib", photometric="minisblack",
        )  # fmt: skip
    target = str(tmp_path / "refs.json")
    with caplog.at_level(logging.WARNING, logger="tiffstore"):
        write_references(tiffstore.open(folder), target)
    assert len(_inlined(target)) == 2 * 3  # the three edge tiles of each file
    assert "edge tiles" in caplog.text
    got = _read_elsewhere(tmp_path, target, "file", {})
    np.testing.assert_array_equal(got, np.stack([image, image]))

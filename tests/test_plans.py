"""Chunk plans as plain data, header verification, and the read paths behind them."""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path

import dask.array as da
import fsspec
import numpy as np
import pytest
import tifffile
import zarr

import tiffstore
from tests.conftest import write_positions
from tiffstore.errors import OptionError, TiffReadError
from tiffstore.manifest.plans import ChunkPlan, Piece
from tiffstore.read.assemble import ChunkReader
from tiffstore.sample import sample_name


def test_uncompressed_chunk_is_one_copy_piece(make_sample):
    directory, ref = make_sample(channels=1, stacks=2, shape=(4, 16, 8))
    store = tiffstore.open(directory, chunks=2)
    plan = tiffstore.plan_chunk(store.manifest, (1, 1, 0, 0))
    assert isinstance(plan, ChunkPlan) and plan.complete
    piece = plan.one_range()
    assert piece is not None and piece.kind == "copy"
    assert piece.nbytes == 2 * 16 * 8 * 2 == plan.nbytes
    # The piece is exactly where the pixels are: read those bytes by hand.
    with open(directory / store.manifest.files[piece.file], "rb") as fh:
        fh.seek(piece.offset)
        raw = fh.read(piece.nbytes)
    np.testing.assert_array_equal(np.frombuffer(raw, "<u2").reshape(2, 16, 8), ref[0, 1, 2:4])
    assert pickle.loads(pickle.dumps(plan)) == plan


def test_compressed_chunk_is_decode_pieces_with_codecs(tmp_path):
    ref = write_positions(
        tmp_path, 2, (3, 40, 24), compression="zlib", predictor=True, rowsperstrip=16
    )
    store = tiffstore.open(tmp_path, chunks=(1, 1, 40, 24))
    m = store.manifest
    plan = tiffstore.plan_chunk(m, (1, 2, 0, 0))
    assert plan.one_range() is None
    assert [p.kind for p in plan.pieces] == ["decode"] * 3  # strips of 16, 16 and 8 rows
    assert {p.codec.compressor_config()["id"] for p in plan.pieces} == {"zlib"}
    assert {p.codec.predictor for p in plan.pieces} == {"imagecodecs_delta"}
    assert [p.valid[0] for p in plan.pieces] == [16, 16, 8]
    sizes = m.file_sizes
    assert all(p.offset + p.nbytes <= sizes[p.file] for p in plan.pieces)
    assert pickle.loads(pickle.dumps(plan)) == plan
    out = ChunkReader(m).execute(plan)
    np.testing.assert_array_equal(out[0, 0], ref[1, 2])


def test_pages_apart_plan_several_ranges(tmp_path):
    with tifffile.TiffWriter(tmp_path / "a.tif") as tif:
        for k in range(3):
            tif.write(np.full((4, 6), k, np.uint8), metadata=None, description="d" * (k + 1))
    store = tiffstore.open(tmp_path / "a.tif", chunks=3)
    plan = tiffstore.plan_chunk(store.manifest, (0, 0, 0))
    assert [p.kind for p in plan.pieces] == ["copy"] * 3
    assert plan.one_range() is None
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:, 0, 0], [0, 1, 2])


def test_plan_outside_the_grid_is_an_index_error(sample_dir):
    store = tiffstore.open(sample_dir[0])
    with pytest.raises(IndexError, match="outside the chunk grid"):
        tiffstore.plan_chunk(store.manifest, (9, 0, 0, 0, 0))


def test_missing_file_plan_is_incomplete_or_empty(sample_dir):
    m = tiffstore.open(sample_dir[0], chunks=(3, 4, 6, 32, 24)).manifest
    plan = tiffstore.plan_chunk(m, (0, 0, 0, 0, 0))
    assert not plan.complete and len(plan.files) == 11
    single = tiffstore.open(sample_dir[0], chunks="file").manifest
    assert tiffstore.plan_chunk(single, (1, 2, 0, 0, 0)).empty


# -- header verification -----------------------------------------------------


def _pad_to(path: Path, size: int) -> None:
    data = path.read_bytes()
    assert len(data) <= size
    path.write_bytes(data + b"\0" * (size - len(data)))


@pytest.fixture
def written_apart(make_sample):
    """Six same-size files, one of them written with a shorter header and padded to size.

    Its pixels start elsewhere than its neighbours', which the size alone does not show.
    """
    directory, ref = make_sample(channels=1, stacks=6, shape=(3, 8, 8))
    size = (directory / sample_name(0, 0)).stat().st_size
    victim = directory / sample_name(0, 1)  # neither the middle nor the last: not sampled
    other = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    tifffile.imwrite(victim, other, metadata=None, photometric="minisblack")
    _pad_to(victim, size)
    ref = ref.copy()
    ref[0, 1] = other
    return directory, ref


def test_differing_header_is_read_with_its_own_layout(written_apart):
    directory, ref = written_apart
    store = tiffstore.open(directory)
    m = store.manifest
    victim = m.files.index(sample_name(0, 1))
    assert not m.verified[victim]  # trusted at open on its size
    np.testing.assert_array_equal(da.from_zarr(store).compute(), ref[0])


def test_verify_parses_every_unchecked_header(written_apart):
    directory, ref = written_apart
    m = tiffstore.open(directory).manifest
    checked = tiffstore.verify_manifest(m)
    assert checked.fully_verified and not m.fully_verified
    victim = m.files.index(sample_name(0, 1))
    assert checked.file_layout_of(victim).data_offset != m.file_layout_of(victim).data_offset
    assert checked.file_layout_of(0) == m.file_layout_of(0)
    # A store over the verified manifest reads right with no check left to do.
    store = tiffstore.TiffStore(checked)
    np.testing.assert_array_equal(da.from_zarr(store).compute(), ref[0])
    assert tiffstore.verify_manifest(checked) == checked


def test_header_pointing_past_the_end_is_named_at_open(tmp_path, caplog):
    write_positions(tmp_path, 3, (3, 40, 24), compression="zlib", rowsperstrip=8)
    victim = tmp_path / "pos1.tif"
    victim.write_bytes(victim.read_bytes()[:-200])  # the last strips now point past the end
    with caplog.at_level(logging.WARNING):
        store = tiffstore.open(tmp_path)
    # Left out as still being written (named once), its cell read as the fill value.
    assert "pos1.tif" in caplog.text and "still being written" in caplog.text
    assert store.incomplete == ("pos1.tif",) and store.truncated == []
    m = store.manifest
    assert "pos1.tif" not in m.files and m.truncated_files() == []
    assert not da.from_zarr(store)[1].compute().any()
    with pytest.raises(TiffReadError, match=r"pos1\.tif: its header points past the end"):
        tiffstore.open(tmp_path, validate=True)
    assert tiffstore.verify_manifest(m).fully_verified


def test_truncated_uncompressed_file_is_named_at_open(make_sample):
    directory, _ = make_sample(channels=1, stacks=3, shape=(4, 16, 16))
    victim = directory / sample_name(0, 2)
    victim.write_bytes(victim.read_bytes()[: 256 + 3 * 16 * 16 * 2])  # header + 3 of 4 pages
    store = tiffstore.open(directory)
    assert store.incomplete == (victim.name,) and store.manifest.truncated_files() == []
    with pytest.raises(TiffReadError, match=r"stack0002.*truncated|truncated.*stack0002"):
        tiffstore.open(directory, validate=True)


# -- read paths --------------------------------------------------------------


def test_large_chunks_are_read_off_the_event_loop(tmp_path, monkeypatch):
    """Chunks over the inline limit are read in a worker thread, and read right."""
    ref = write_positions(tmp_path, 2, (5, 256, 512))  # one file: 1.25 MiB, over the 1 MiB limit
    store = tiffstore.open(tmp_path, chunks="file")
    assert store.manifest.chunk_nbytes > store.inline_read_bytes
    threads: list[int] = []
    original = ChunkReader.read_chunk_bytes

    def spy(self, index, part=None):
        threads.append(threading.get_ident())
        return original(self, index, part)

    monkeypatch.setattr(ChunkReader, "read_chunk_bytes", spy)
    # The Store protocol's path (zarr's own pipeline asks store.get for the bytes).
    was_on = tiffstore.use_codec_pipeline(False)
    try:
        np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], ref)
    finally:
        tiffstore.use_codec_pipeline(was_on)
    assert len(threads) == 2
    assert threading.get_ident() not in threads


def test_segment_never_written_reads_as_zeros(tmp_path):
    ref = write_positions(tmp_path, 1, (2, 32, 32), compression="zlib", tile=(16, 16))
    path = tmp_path / "pos0.tif"
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[1]
        # A writer that never wrote a tile leaves its offset and byte count 0.
        for name in ("TileOffsets", "TileByteCounts"):
            tag = page.tags[name]
            size = {"SHORT": 2, "LONG": 4, "LONG8": 8}[tag.dtype_name]
            data[tag.valueoffset + size : tag.valueoffset + 2 * size] = bytes(size)
    path.write_bytes(bytes(data))
    expected = tifffile.imread(path)
    assert (expected[1, :16, 16:] == 0).all() and not np.array_equal(expected, ref[0])
    store = tiffstore.open(path)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], expected)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"chunks": "pages"}, "chunks='pages' is not understood"),
        ({"chunks": (1, 2)}, "has 2 entries"),
        ({"chunks": (1, 0, 8, 8)}, "positive int"),
        ({"fill_value": -1}, "does not fit"),
        ({"fill_value": 70000}, "fill_value=70000 does not fit"),  # past uint16's range
        ({"fill_value": 1.5}, "does not fit"),
        ({"fill_value": 2.0}, "does not fit"),  # a float for integer pixels
        ({"tiles": "mosaic"}, "tiles='mosaic'"),
    ],
)
def test_bad_options_are_option_errors(make_sample, options, match):
    directory, _ = make_sample(channels=1, stacks=2, shape=(2, 8, 8))
    with pytest.raises(OptionError, match=match):
        tiffstore.open(directory, **options)


def test_fsspec_read_errors_name_the_url(sample_dir):
    directory, _ = sample_dir
    fs = fsspec.filesystem("memory")
    for path in directory.iterdir():
        fs.pipe(f"/gone/{path.name}", path.read_bytes())
    try:
        store = tiffstore.open("memory://gone/")
        fs.rm(f"/gone/{sample_name(0, 0)}")
        with pytest.raises(TiffReadError, match=f"memory://.*gone/{sample_name(0, 0)}"):
            store.mapping["0.0.0.0.0"]
    finally:
        fs.rm("/gone", recursive=True)


def test_list_of_urls_roots_at_their_common_folder(sample_dir):
    directory, ref = sample_dir
    fs = fsspec.filesystem("memory")
    urls = []
    for c in range(3):
        for s in range(4):
            name = sample_name(c, s)
            if (directory / name).exists():
                fs.pipe(f"/acq/ch{c}/{name}", (directory / name).read_bytes())
                urls.append(f"memory://acq/ch{c}/{name}")
    try:
        store = tiffstore.open(urls)
        assert store.manifest.source.url("").rstrip("/").endswith("/acq")
        assert store.manifest.files[0] == f"ch0/{sample_name(0, 0)}"
        got = da.from_zarr(store).compute()
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1, :2], ref[1, :2])
    finally:
        fs.rm("/acq", recursive=True)


def test_list_of_file_urls(sample_dir):
    directory, ref = sample_dir
    urls = [f"file://{p}" for p in sorted(directory.glob("*_ch0_*.tif"))]
    store = tiffstore.open(urls)
    np.testing.assert_array_equal(da.from_zarr(store).compute(), ref[0])


def test_pieces_are_frozen_values():
    a = Piece("copy", 0, 10, 4, (slice(0, 4),))
    assert a == Piece("copy", 0, 10, 4, (slice(0, 4),))
    with pytest.raises(AttributeError):
        a.offset = 3


# -- chunks for many small files ---------------------------------------------------


def test_small_files_are_grouped_along_the_name_axes(tmp_path, capsys):
    from tiffstore.cli.main import main
    from tiffstore.manifest.chunking import DEFAULT_CHUNK_BYTES

    rng = np.random.default_rng(5)
    ref = rng.integers(0, 1000, (4, 30, 2, 32, 32), dtype=np.uint16)
    for c in range(4):
        for t in range(30):
            tifffile.imwrite(
                tmp_path / f"img_c{c}_t{t:03d}.tif", ref[c, t], photometric="minisblack"
            )
    store = tiffstore.open(tmp_path)
    # 4 KiB files: whole files grouped, innermost name axis first, then the next.
    assert store.chunks == (4, 30, 2, 32, 32)
    assert store.manifest.chunk_nbytes <= DEFAULT_CHUNK_BYTES
    np.testing.assert_array_equal(store.to_dask().compute(), ref)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], ref)
    assert main(["inspect", str(tmp_path)]) == 0
    assert "120 whole files per chunk" in capsys.readouterr().out
    # Asked-for chunks are kept as asked.
    assert tiffstore.open(tmp_path, chunks="file").chunks == (1, 1, 2, 32, 32)


def test_files_near_the_chunk_size_are_not_grouped(tmp_path):
    from tiffstore.manifest.chunking import DEFAULT_CHUNK_BYTES, resolve_chunks
    from tiffstore.names.axes import Axis
    from tiffstore.tiff.layout import FileLayout

    axes = (Axis("t", "time", tuple(range(50))),)
    big = FileLayout((64, 256, 256), "<u2", ("z", "y", "x"), 2, "contiguous")  # 8 MiB
    assert resolve_chunks(None, axes, big) == (1, 64, 256, 256)
    small = FileLayout((4, 256, 256), "<u2", ("z", "y", "x"), 2, "contiguous")  # 512 KiB
    assert resolve_chunks(None, axes, small)[0] == DEFAULT_CHUNK_BYTES // (4 * 256 * 256 * 2)


def test_open_reports_progress_per_header(make_sample):
    directory, _ = make_sample(channels=3, stacks=4, shape=(2, 8, 8))
    seen: list[tuple[str, int, int | None]] = []
    tiffstore.open(directory, validate=True, progress=lambda *a: seen.append(a))
    headers = [done for step, done, total in seen if step == "headers" and total == 12]
    assert headers[0] == 0 and headers[-1] == 12 and headers == sorted(headers)
    assert len(headers) == 13  # the start, then one per file


@pytest.mark.parametrize(
    ("pages", "default"),
    [(50, 25), (64, 32), (201, 10), (96, 32), (40, 40), (33, 33), (3, 3)],
)
def test_default_chunks_are_equal_runs_near_the_target(tmp_path, pages, default):
    """16 MiB of 512 KiB pages is 32: the divisor nearest it within 2x gives equal runs (40
    pages: one run of 40), else 32
    (201's divisors 3 and 67 are both too far from 10, its 1.5 MiB pages' target)."""
    from tiffstore.manifest.chunking import resolve_chunks
    from tiffstore.tiff.layout import FileLayout

    page = (1024, 768) if pages == 201 else (512, 512)
    lay = FileLayout((pages, *page), "<u2", ("z", "y", "x"), 2, "contiguous", data_offset=8)
    assert resolve_chunks(None, (), lay)[0] == default

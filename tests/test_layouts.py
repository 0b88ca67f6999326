"""Every TIFF layout x every chunk geometry: each chunk equals tifffile.imread of its region.

Each layout writes a small acquisition with tifffile (two files named ``pos0``,
``pos1`` unless said otherwise) and returns the reference array, read file by
file with ``tifffile.imread``. Bytes read and open file handles are measured
through a real :class:`LocalSource` that counts.
"""

from __future__ import annotations

import itertools
import math
import pickle
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import fsspec
import imagecodecs
import numpy as np
import psutil
import pytest
import tifffile
import zarr

import tiffstore
from tiffstore.errors import LayoutMismatchError, TiffReadError
from tiffstore.manifest.build import build_manifest
from tiffstore.names.grid import understand_names
from tiffstore.read.store import TiffStore
from tiffstore.sources.listing import resolve_source
from tiffstore.sources.local import LocalSource

SHAPE = (5, 40, 50)  # pages, rows, columns: 40 % 7, 40 % 16 and 50 % 16 leave ragged edges


def _pixels(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    """Smooth gradients plus noise, spanning the dtype (so byte order and sign matter)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).sum(axis=0).astype(np.float64)
    values = grid / max(grid.max(), 1) + rng.random(shape) * 0.2
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return values > 0.6
    if dt.kind == "f":
        return (values * 1000 - 300).astype(dt)
    info = np.iinfo(dt)
    span = min(float(info.max) - float(info.min), 2.0**31)
    return (values / 1.2 * span + max(float(info.min), -(2.0**30))).astype(dt)


def _write_pos(directory: Path, n: int = 2, shape=SHAPE, dtype="uint16", **options) -> np.ndarray:
    options.setdefault("photometric", "minisblack")
    for i in range(n):
        tifffile.imwrite(directory / f"pos{i}.tif", _pixels(shape, dtype, i), **options)
    return np.stack([tifffile.imread(directory / f"pos{i}.tif") for i in range(n)])


def _split_jpeg_tables(jpeg: bytes) -> tuple[bytes, bytes]:
    """Split a JPEG stream into its tables (DQT, DHT) and the abbreviated rest."""
    tables, rest = [b"\xff\xd8"], [b"\xff\xd8"]
    i = 2
    while jpeg[i : i + 2] != b"\xff\xda":
        n = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        (tables if jpeg[i : i + 2] in (b"\xff\xdb", b"\xff\xc4") else rest).append(
            jpeg[i : i + 2 + n]
        )
        i += 2 + n
    rest.append(jpeg[i:])
    return b"".join(tables) + b"\xff\xd9", b"".join(rest)


def _write_jpeg_tables(directory: Path) -> np.ndarray:
    """Tiled JPEG whose tiles share one JPEGTables tag, as slide scanners write them."""
    tile = (16, 16)
    for i in range(2):
        data = _pixels(SHAPE, "uint8", i)
        tiles, heads = [], set()
        for page in data:
            for r, c in itertools.product(range(0, SHAPE[1], 16), range(0, SHAPE[2], 16)):
                padded = np.zeros(tile, np.uint8)
                part = page[r : r + 16, c : c + 16]
                padded[: part.shape[0], : part.shape[1]] = part
                head, rest = _split_jpeg_tables(bytes(imagecodecs.jpeg8_encode(padded, level=85)))
                heads.add(head)
                tiles.append(rest)
        assert len(heads) == 1
        tables = heads.pop()
        tifffile.imwrite(
            directory / f"pos{i}.tif",
            iter(tiles),
            shape=SHAPE,
            dtype="uint8",
            tile=tile,
            compression="jpeg",
            photometric="minisblack",
            extratags=[(347, 7, len(tables), tables, False)],
        )
    return np.stack([tifffile.imread(directory / f"pos{i}.tif") for i in range(2)])


def _write_imagej_one_ifd(directory: Path) -> np.ndarray:
    """An ImageJ hyperstack > 4 GB in miniature: one IFD, then every frame back to back."""
    shape = (2, 3, 20, 30)
    for i in range(2):
        data = _pixels(shape, "uint16", i)
        path = directory / f"pos{i}.tif"
        description = tifffile.imagej_description(shape, axes="TZYX")
        tifffile.imwrite(path, data[0, 0], description=description, metadata=None)
        with open(path, "ab") as fh:
            fh.write(data.reshape(-1)[20 * 30 :].tobytes())
    return np.stack([tifffile.imread(directory / f"pos{i}.tif") for i in range(2)])


def _write_ome_set(directory: Path) -> np.ndarray:
    """A multi-file OME-TIFF set: one file per channel, each holding its z-stack."""
    channels, z, y, x = 3, 4, 20, 30
    data = _pixels((channels, z, y, x), "uint16", 7)
    ids = [f"urn:uuid:{uuid.uuid4()}" for _ in range(channels)]
    names = [f"set_c{c}.ome.tif" for c in range(channels)]
    tiffdata = "".join(
        f'<TiffData FirstC="{c}" FirstZ="0" FirstT="0" IFD="0" PlaneCount="{z}">'
        f'<UUID FileName="{names[c]}">{ids[c]}</UUID></TiffData>'
        for c in range(channels)
    )
    for c in range(channels):
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="{ids[c]}">'
            '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" '
            f'SizeX="{x}" SizeY="{y}" SizeZ="{z}" SizeC="{channels}" SizeT="1">'
            + "".join(f'<Channel ID="Channel:0:{k}" SamplesPerPixel="1"/>' for k in range(channels))
            + tiffdata
            + "</Pixels></Image></OME>"
        )
        tifffile.imwrite(
            directory / names[c],
            data[c],
            description=xml,
            metadata=None,
            photometric="minisblack",
            compression="zlib",
            rowsperstrip=7,
        )
    # tifffile joins the set from any one of its files: the reference for all of them.
    return tifffile.imread(directory / names[0])


def _write_planes(directory: Path) -> np.ndarray:
    """2-D files named by z, compressed in tiles: chunks group planes across files."""
    planes = [_pixels(SHAPE[1:], "uint16", k) for k in range(7)]
    for k, plane in enumerate(planes):
        tifffile.imwrite(
            directory / f"plane_z{k:03d}.tif",
            plane,
            tile=(16, 16),
            compression="zstd",
            photometric="minisblack",
        )
    return np.stack([tifffile.imread(directory / f"plane_z{k:03d}.tif") for k in range(7)])


def _write_pages_apart(directory: Path) -> np.ndarray:
    """Uncompressed pages written one by one, each IFD between them: not back to back."""
    for i in range(2):
        data = _pixels(SHAPE, "uint16", i)
        with tifffile.TiffWriter(directory / f"pos{i}.tif") as tif:
            for k, page in enumerate(data):
                # A description of its own per page keeps tifffile from writing the pages
                # as one block; metadata=None keeps them one series.
                tif.write(page, contiguous=False, metadata=None, description="p" * (k + 1))
    return np.stack([tifffile.imread(directory / f"pos{i}.tif") for i in range(2)])


RGB = (3, 40, 50, 3)
PLANAR = (3, 3, 40, 50)
HYPERSTACK = (2, 3, 2, 20, 30)


@dataclass(frozen=True)
class Layout:
    write: Callable[[Path], np.ndarray]
    storage: str
    dims: tuple[str, ...] = ("pos", "z", "y", "x")


LAYOUTS: dict[str, Layout] = {
    "uncompressed": Layout(lambda d: _write_pos(d), "contiguous"),
    "uncompressed-pages-apart": Layout(_write_pages_apart, "pages"),
    "zlib-strips": Layout(lambda d: _write_pos(d, compression="zlib", rowsperstrip=7), "segments"),
    "lzw-predictor": Layout(
        lambda d: _write_pos(d, compression="lzw", predictor=True, rowsperstrip=16), "segments"
    ),
    "zstd-tiles": Layout(lambda d: _write_pos(d, compression="zstd", tile=(16, 32)), "segments"),
    "packbits-uint8": Layout(
        lambda d: _write_pos(d, dtype="uint8", compression="packbits", rowsperstrip=8), "segments"
    ),
    "lzma-int16": Layout(lambda d: _write_pos(d, dtype="int16", compression="lzma"), "segments"),
    "float32-floatpred": Layout(
        lambda d: _write_pos(d, dtype="float32", compression="zlib", predictor=3, rowsperstrip=16),
        "segments",
    ),
    "float64-deflate-tiles": Layout(
        lambda d: _write_pos(d, dtype="float64", compression="deflate", tile=(16, 16)), "segments"
    ),
    "uint32-raw-tiles": Layout(lambda d: _write_pos(d, dtype="uint32", tile=(16, 16)), "segments"),
    "bigendian-zlib-predictor-tiles": Layout(
        lambda d: _write_pos(d, byteorder=">", compression="zlib", predictor=True, tile=(16, 16)),
        "segments",
    ),
    "bigendian-float-predictor": Layout(
        lambda d: _write_pos(
            d, dtype="float32", byteorder=">", compression="zlib", predictor=3, rowsperstrip=9
        ),
        "segments",
    ),
    "bigendian-float32": Layout(
        lambda d: _write_pos(d, dtype="float32", byteorder=">"), "contiguous"
    ),
    "bigtiff-zlib": Layout(
        lambda d: _write_pos(d, bigtiff=True, compression="zlib", rowsperstrip=9), "segments"
    ),
    "rgb-contig": Layout(
        lambda d: _write_pos(d, shape=RGB, dtype="uint8", photometric="rgb"),
        "contiguous",
        ("pos", "z", "y", "x", "c"),
    ),
    "rgb-contig-zlib-predictor": Layout(
        lambda d: _write_pos(
            d,
            shape=RGB,
            dtype="uint8",
            photometric="rgb",
            compression="zlib",
            predictor=True,
            rowsperstrip=7,
        ),
        "segments",
        ("pos", "z", "y", "x", "c"),
    ),
    "rgb-planar": Layout(
        lambda d: _write_pos(d, shape=PLANAR, photometric="rgb", planarconfig="separate"),
        "contiguous",
        ("pos", "z", "c", "y", "x"),
    ),
    "rgb-planar-zlib-strips": Layout(
        lambda d: _write_pos(
            d,
            shape=PLANAR,
            photometric="rgb",
            planarconfig="separate",
            compression="zlib",
            rowsperstrip=7,
        ),
        "segments",
        ("pos", "z", "c", "y", "x"),
    ),
    "rgb-jpeg-tiles": Layout(
        lambda d: _write_pos(
            d, shape=RGB, dtype="uint8", photometric="rgb", compression="jpeg", tile=(16, 16)
        ),
        "segments",
        ("pos", "z", "y", "x", "c"),
    ),
    "ycbcr-jpeg-subsampled-strips": Layout(
        lambda d: _write_pos(
            d,
            shape=RGB,
            dtype="uint8",
            photometric="ycbcr",
            compression="jpeg",
            subsampling=(2, 2),
            rowsperstrip=7,
        ),
        "segments",
        ("pos", "z", "y", "x", "c"),
    ),
    "jpeg-shared-tables": Layout(_write_jpeg_tables, "segments"),
    "png-tiles": Layout(
        lambda d: _write_pos(d, dtype="uint8", compression="png", tile=(16, 16)), "segments"
    ),
    "webp-rgb": Layout(
        lambda d: _write_pos(d, shape=RGB, dtype="uint8", photometric="rgb", compression="webp"),
        "segments",
        ("pos", "z", "y", "x", "c"),
    ),
    "bilevel": Layout(lambda d: _write_pos(d, dtype="bool"), "tifffile"),
    "one-row-pages": Layout(
        lambda d: _write_pos(d, shape=(5, 1, 50), compression="zlib"), "segments"
    ),
    # tifffile reads (40, 50, 1) as one page plus a trailing axis: decoded whole by tifffile.
    "trailing-singleton": Layout(
        lambda d: _write_pos(d, shape=(40, 50, 1), compression="zlib"),
        "tifffile",
        ("pos", "y", "x", "z"),
    ),
    "imagej-hyperstack": Layout(
        lambda d: _write_pos(d, shape=HYPERSTACK, imagej=True, metadata={"axes": "TZCYX"}),
        "contiguous",
        ("pos", "t", "z", "c", "y", "x"),
    ),
    "imagej-rgb": Layout(
        lambda d: _write_pos(
            d,
            shape=(2, 3, 20, 30, 3),
            dtype="uint8",
            imagej=True,
            photometric="rgb",
            metadata={"axes": "TZYXS"},
        ),
        "contiguous",
        ("pos", "t", "z", "y", "x", "c"),
    ),
    "imagej-one-ifd": Layout(_write_imagej_one_ifd, "contiguous", ("pos", "t", "z", "y", "x")),
    "ome-zlib": Layout(
        lambda d: _write_pos(
            d, shape=HYPERSTACK, ome=True, compression="zlib", metadata={"axes": "TCZYX"}
        ),
        "segments",
        ("pos", "t", "c", "z", "y", "x"),
    ),
    "ome-rgb-channels": Layout(
        lambda d: _write_pos(
            d,
            shape=(2, 20, 30, 3),
            dtype="uint8",
            ome=True,
            photometric="rgb",
            metadata={"axes": "CYXS"},
        ),
        "contiguous",
        ("pos", "c", "y", "x", "s"),
    ),
    "ome-multifile": Layout(_write_ome_set, "segments", ("c", "z", "y", "x")),
    "planes-named-z": Layout(_write_planes, "segments", ("z", "y", "x")),
}

GEOMETRIES = ["default", "page", "file", "native", "int", "ragged"]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, np.ndarray]]:
    cache: dict[str, tuple[Path, np.ndarray]] = {}

    def get(name: str) -> tuple[Path, np.ndarray]:
        if name not in cache:
            directory = tmp_path_factory.mktemp(name)
            cache[name] = directory, LAYOUTS[name].write(directory)
        return cache[name]

    return get


def _chunks(geometry: str, directory: Path) -> object:
    if geometry == "default":
        return None
    if geometry == "int":
        return 2
    if geometry != "ragged":
        return geometry
    store = tiffstore.open(directory)
    nn = store.manifest.n_name_dims
    page_ndim = store.manifest.layout.page_ndim
    lead = len(store.shape) - nn - page_ndim
    page = {"y": 13, "x": 17}
    return (
        (1,) * nn
        + (2,) * lead
        + tuple(page.get(d, 2) for d in store.dims[len(store.dims) - page_ndim :])
    )


def _chunk_regions(store: tiffstore.TiffStore):
    for index in np.ndindex(*store.manifest.chunk_grid):
        starts = [i * c for i, c in zip(index, store.chunks, strict=True)]
        yield (
            index,
            tuple(
                slice(s, min(s + c, n))
                for s, c, n in zip(starts, store.chunks, store.shape, strict=True)
            ),
        )


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_chunk_equals_tifffile(written, layout, geometry):
    directory, ref = written(layout)
    store = tiffstore.open(directory, chunks=_chunks(geometry, directory))
    assert store.dims == LAYOUTS[layout].dims
    assert store.shape == ref.shape
    assert store.dtype == ref.dtype.newbyteorder(store.dtype.byteorder)
    assert {lay.storage for lay in store.manifest.layouts} == {LAYOUTS[layout].storage}
    for index, region in _chunk_regions(store):
        key = ".".join(map(str, index))
        chunk = np.frombuffer(store.mapping[key], store.dtype).reshape(store.chunks)
        inside = tuple(slice(0, s.stop - s.start) for s in region)
        np.testing.assert_array_equal(chunk[inside], ref[region], err_msg=f"chunk {key}")
    np.testing.assert_array_equal(da.from_zarr(store).compute(), ref)


#: A representative subset for Zarr format 3: raw pages, pages apart, strips, tiles,
#: big-endian, samples, ImageJ, OME (the full table runs in format 2).
FORMAT3_LAYOUTS = [
    "uncompressed",
    "uncompressed-pages-apart",
    "zlib-strips",
    "zstd-tiles",
    "bigendian-float-predictor",
    "rgb-contig",
    "rgb-planar-zlib-strips",
    "imagej-hyperstack",
    "ome-multifile",
]


@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "plain"])
@pytest.mark.parametrize("geometry", ["default", "page", "int", "ragged"])
@pytest.mark.parametrize("layout", FORMAT3_LAYOUTS)
def test_format3_equals_tifffile(written, layout, geometry, sharded):
    directory, ref = written(layout)
    chunks = _chunks(geometry, directory)
    store = tiffstore.open(directory, chunks=chunks, zarr_format=3, sharded=sharded)
    arr = zarr.open_array(store, mode="r")
    assert arr.metadata.zarr_format == 3
    assert arr.metadata.dimension_names == store.dims
    assert (arr.shards is not None) == (store.shards is not None)
    np.testing.assert_array_equal(arr[...], ref)
    # One plane of each file (an inner chunk of a shard when sharded).
    lead = (0,) * (len(store.shape) - store.manifest.layout.page_ndim)
    np.testing.assert_array_equal(arr[lead], ref[lead])
    np.testing.assert_array_equal(da.from_zarr(store, chunks=store.chunks).compute(), ref)


def test_native_chunks_follow_strips_and_tiles(written):
    assert tiffstore.open(written("zlib-strips")[0], chunks="native").chunks == (1, 1, 7, 50)
    assert tiffstore.open(written("zstd-tiles")[0], chunks="native").chunks == (1, 1, 16, 32)
    planar = tiffstore.open(written("rgb-planar-zlib-strips")[0], chunks="native")
    assert planar.chunks == (1, 1, 1, 7, 50)
    rgb = tiffstore.open(written("rgb-jpeg-tiles")[0], chunks="native")
    assert rgb.chunks == (1, 1, 16, 16, 3)
    # Uncompressed whole pages are read as byte ranges: "native" is one page.
    assert tiffstore.open(written("uncompressed")[0], chunks="native").chunks == (1, 1, 40, 50)


def test_compressed_tiles_through_fsspec(written):
    """Segments are read through any fsspec file system, not only local files."""
    directory, ref = written("zstd-tiles")
    fs = fsspec.filesystem("memory")
    for path in directory.iterdir():
        fs.pipe(f"/tiles/{path.name}", path.read_bytes())
    try:
        store = tiffstore.open("memory://tiles/", chunks=(1, 2, 13, 17))
        np.testing.assert_array_equal(da.from_zarr(store).compute(), ref)
    finally:
        fs.rm("/tiles", recursive=True)


def test_layouts_dedupe_and_pickle_small(tmp_path):
    """Files written alike share one layout; compressed files keep compact offset arrays."""
    for i in range(40):
        tifffile.imwrite(
            tmp_path / f"pos{i}.tif",
            _pixels(SHAPE, "uint16", 0) if i % 2 else np.zeros(SHAPE, "uint16"),
            compression="zlib",
            rowsperstrip=4,
            photometric="minisblack",
        )
    store = tiffstore.open(tmp_path)
    # One geometry; where each file's strips lie is columnar, one row per strip.
    assert len(store.manifest.layouts) == 1
    assert len(store.manifest.tables.offsets) == 40 * SHAPE[0] * -(-SHAPE[1] // 4)
    blob = pickle.dumps(store)
    assert pickle.loads(blob) == store
    # Per file: its name, a few numbers, and 16 bytes per strip; no per-file objects.
    per_file = (len(blob) - len(pickle.dumps(tiffstore.open(tmp_path / "pos0.tif")))) / 39
    assert per_file < 100 + 16 * SHAPE[0] * -(-SHAPE[1] // 4)


# -- bytes read -------------------------------------------------------------


@dataclass(frozen=True)
class CountingSource(LocalSource):
    """A real local source that records every read, and the open handles at each."""

    calls: list[tuple[str, int, int]] = field(default_factory=list, compare=False)
    fds: list[int] = field(default_factory=list, compare=False)

    def read_many_into(self, name: str, requests) -> None:
        self.fds.append(psutil.Process().num_fds())
        super().read_many_into(name, requests)
        self.calls.extend((name, offset, out.nbytes) for offset, out in requests)

    def read_bytes(self, name: str, offset: int, length: int) -> bytes:
        self.fds.append(psutil.Process().num_fds())
        data = super().read_bytes(name, offset, length)
        self.calls.append((name, offset, length))
        return data


def _counting(directory: Path, **options) -> tuple[tiffstore.TiffStore, CountingSource]:
    """Open a folder as tiffstore.open does, reading through a counting source."""
    source, files = resolve_source(directory)
    counting = CountingSource(source.root)  # type: ignore[attr-defined]
    grid = understand_names([f.name for f in files])
    return TiffStore(build_manifest(counting, files, grid, **options)), counting


def _segment_bytes(path: Path, page: int) -> list[tuple[int, int]]:
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        return list(zip(p.dataoffsets, p.databytecounts, strict=True))


@pytest.mark.parametrize("layout", ["zlib-strips", "zstd-tiles", "rgb-planar-zlib-strips"])
def test_compressed_native_chunk_reads_exactly_its_segment(written, layout):
    directory, _ref = written(layout)
    store, source = _counting(directory, chunks="native")
    seg = store.manifest.layouts[0].segments
    for index, _region in _chunk_regions(store):
        if index[0] != 0:
            continue
        source.calls.clear()
        store.mapping[".".join(map(str, index))]
        plane = index[2] if seg.planar else 0
        segment = (plane * seg.grid[0] + index[-2]) * seg.grid[1] + index[-1]
        offset, count = _segment_bytes(directory / "pos0.tif", index[1])[segment]
        assert source.calls == [("pos0.tif", offset, count)], index


def test_region_chunk_of_compressed_tiles_reads_the_tiles_it_overlaps(written):
    directory, _ref = written("zstd-tiles")  # tiles of 16 x 32 over 40 x 50
    store, source = _counting(directory, chunks=(1, 1, 13, 17))
    source.calls.clear()
    store.mapping["1.2.1.1"]  # rows 13-26, columns 17-34: tile rows 0-1, tile columns 0-1
    tiles = _segment_bytes(directory / "pos1.tif", 2)
    assert sum(n for _, _, n in source.calls) == sum(tiles[i][1] for i in (0, 1, 2, 3))
    assert {name for name, _, _ in source.calls} == {"pos1.tif"}
    assert len(source.calls) <= 2  # tiles written back to back are read together


@pytest.mark.parametrize(
    ("layout", "chunks"),
    [
        ("uncompressed", "page"),
        ("uncompressed", None),
        ("uint32-raw-tiles", "native"),
        ("uint32-raw-tiles", (1, 1, 13, 50)),
        ("uint32-raw-tiles", (1, 2, 13, 17)),
        ("uncompressed", (1, 2, 13, 17)),
        ("rgb-contig", "page"),
        ("rgb-planar", (1, 1, 2, 9, 50)),
        ("imagej-one-ifd", "page"),
    ],
)
def test_uncompressed_chunk_reads_at_most_its_own_bytes(written, layout, chunks):
    directory, _ref = written(layout)
    store, source = _counting(directory, chunks=chunks)
    for index, _region in _chunk_regions(store):
        store.mapping[".".join(map(str, index))]  # first reads check headers
    chunk_bytes = math.prod(store.chunks) * store.dtype.itemsize
    for index, region in _chunk_regions(store):
        source.calls.clear()
        store.mapping[".".join(map(str, index))]
        inside = math.prod(s.stop - s.start for s in region) * store.dtype.itemsize
        assert sum(n for _, _, n in source.calls) == inside <= chunk_bytes, index


@pytest.mark.parametrize("layout", ["uncompressed", "zlib-strips", "zstd-tiles"])
def test_format3_one_plane_of_a_shard_reads_only_that_pages_bytes(written, layout):
    directory, ref = written(layout)
    source, files = resolve_source(directory)
    counting = CountingSource(source.root)
    grid = understand_names([f.name for f in files])
    store = TiffStore(build_manifest(counting, files, grid), zarr_format=3)
    assert store.shards is not None  # a default chunk is several pages: sharded
    arr = zarr.open_array(store, mode="r")
    arr[(1,) * (len(store.shape) - 2)]  # first reads check headers
    counting.calls.clear()
    np.testing.assert_array_equal(arr[1, 3], ref[1, 3])
    page = sum(n for _, n in _segment_bytes(directory / "pos1.tif", 3))
    assert {name for name, _, _ in counting.calls} == {"pos1.tif"}
    assert sum(n for _, _, n in counting.calls) == page


# -- handles and headers ----------------------------------------------------


def test_reading_many_files_keeps_open_handles_bounded_and_leaks_none(tmp_path):
    n = 150
    for i in range(n):
        tifffile.imwrite(
            tmp_path / f"pos{i:03d}.tif",
            _pixels((2, 16, 16), "uint16", i),
            photometric="minisblack",
            compression="zlib" if i % 3 else None,
        )
    process = psutil.Process()
    before = process.num_fds()
    store, source = _counting(tmp_path, chunks="page")
    workers = 4
    with dask.config.set(scheduler="threads", num_workers=workers):
        total = da.from_zarr(store).sum(dtype="u8").compute()
    expected = sum(int(tifffile.imread(tmp_path / f"pos{i:03d}.tif").sum()) for i in range(n))
    assert total == expected
    assert len(source.fds) >= n
    # Each reading thread holds at most one file open at a time.
    assert max(source.fds) <= before + workers + 4
    assert process.num_fds() == before


def test_open_of_uniform_files_reads_few_headers(tmp_path, monkeypatch):
    """Same-size files written alike: one parse and a few header comparisons at open."""
    for i in range(200):
        tifffile.imwrite(
            tmp_path / f"pos{i:03d}.tif",
            _pixels((3, 16, 16), "uint16", i % 5),
            photometric="minisblack",
        )
    opened: list[str] = []
    reads: list[str] = []
    real_open, real_read = LocalSource.open, LocalSource.read_into

    def counting_open(self, name):
        opened.append(name)
        return real_open(self, name)

    def counting_read(self, name, offset, out):
        reads.append(name)
        return real_read(self, name, offset, out)

    monkeypatch.setattr(LocalSource, "open", counting_open)
    monkeypatch.setattr(LocalSource, "read_into", counting_read)
    store = tiffstore.open(tmp_path)
    assert store.shape == (200, 3, 16, 16)
    assert len(opened) == 1
    assert len(reads) <= 3


# -- errors -----------------------------------------------------------------


def test_files_differing_in_byte_order_are_named(tmp_path):
    tifffile.imwrite(tmp_path / "pos0.tif", np.zeros((2, 8, 8), "<u2"), photometric="minisblack")
    tifffile.imwrite(tmp_path / "pos1.tif", np.zeros((2, 8, 8), ">u2"), photometric="minisblack")
    tifffile.imwrite(tmp_path / "pos2.tif", np.zeros((2, 8, 8), "<u2"), compression="zlib")
    with pytest.raises(LayoutMismatchError) as info:
        tiffstore.open(tmp_path, validate=True)
    msg = str(info.value)
    assert "pos0.tif" in msg and "pos1.tif" in msg
    assert "byte order little-endian vs big-endian" in msg


def test_files_differing_in_samples_are_named(tmp_path):
    tifffile.imwrite(tmp_path / "pos0.tif", np.zeros((8, 8, 3), "u1"), photometric="rgb")
    tifffile.imwrite(tmp_path / "pos1.tif", np.zeros((8, 8), "u1"), photometric="minisblack")
    with pytest.raises(LayoutMismatchError, match="samples per pixel 3 vs 1") as info:
        tiffstore.open(tmp_path)
    assert "pos1.tif" in str(info.value)


def test_truncated_compressed_file_is_named_when_its_chunk_is_read(written, tmp_path):
    source_dir, _ref = written("zlib-strips")
    for path in source_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    store = tiffstore.open(tmp_path, chunks="native")
    victim = tmp_path / "pos1.tif"
    offset, count = _segment_bytes(victim, 4)[2]
    victim.write_bytes(victim.read_bytes()[: offset + count // 2])
    arr = da.from_zarr(store)
    arr[0].compute()  # the other file is intact
    with pytest.raises(TiffReadError, match="truncated") as info:
        arr[1, 4, 14:].compute()
    assert "pos1.tif" in str(info.value)


def test_corrupt_segment_is_named_with_its_page(written, tmp_path):
    source_dir, _ref = written("zstd-tiles")
    for path in source_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    victim = tmp_path / "pos0.tif"
    offset, count = _segment_bytes(victim, 3)[1]
    data = bytearray(victim.read_bytes())
    data[offset : offset + count] = b"\x00" * count
    victim.write_bytes(bytes(data))
    # Corrupt before the open: a file changed after it is refused as changed.
    store = tiffstore.open(tmp_path, chunks="native")
    with pytest.raises(TiffReadError, match="page 3, tile 1") as info:
        store.mapping["0.3.0.1"]
    assert "pos0.tif" in str(info.value)
    store.mapping["0.3.0.0"]  # its neighbours still read


def test_validate_names_a_truncated_file_at_open(written, tmp_path):
    source_dir, ref = written("zlib-strips")
    for path in source_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    victim = tmp_path / "pos1.tif"
    victim.write_bytes(victim.read_bytes()[:-10])  # the last strip loses its end
    with pytest.raises(TiffReadError, match="truncated") as info:
        tiffstore.open(tmp_path, validate=True)
    assert "pos1.tif" in str(info.value)
    store = tiffstore.open(tmp_path, chunks="page")  # opens, leaving it out
    assert store.incomplete == ("pos1.tif",)
    np.testing.assert_array_equal(da.from_zarr(store)[0].compute(), ref[0])
    assert not da.from_zarr(store)[1].compute().any()


def test_one_file_opens_with_its_own_axes(tmp_path):
    data = _pixels(HYPERSTACK, "uint16", 3)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, data, ome=True, compression="zlib", metadata={"axes": "TCZYX"})
    store = tiffstore.open(path, chunks="native")
    assert store.dims == ("t", "c", "z", "y", "x")
    assert store.attrs["tiffstore"]["missing"] == []
    np.testing.assert_array_equal(da.from_zarr(store).compute(), tifffile.imread(path))

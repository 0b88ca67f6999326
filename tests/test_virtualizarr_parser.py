"""VirtualiZarr's parser: ``open_virtual_dataset(url, parser=TiffStoreParser(), registry=...)``
gives tiffstore.open's array, coordinates and chunk references; VirtualiZarr's own
``to_kerchunk`` and ``to_icechunk`` outputs read back equal to tifffile's values with
no tiffstore, locally and over a moto S3 server."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import tifffile

pytest.importorskip("virtualizarr")
icechunk = pytest.importorskip("icechunk")

from obspec_utils.registry import ObjectStoreRegistry  # noqa: E402
from obstore.store import LocalStore, S3Store  # noqa: E402
from virtualizarr import open_virtual_dataset  # noqa: E402
from virtualizarr.manifests import ManifestArray  # noqa: E402

import tiffstore  # noqa: E402
from tests.conftest import S3Server, read_icechunk_elsewhere, upload_folder  # noqa: E402
from tests.test_references import _read_elsewhere  # noqa: E402
from tiffstore.outputs.virtual_chunks import virtual_chunks  # noqa: E402
from tiffstore.outputs.virtualizarr import TiffStoreParser  # noqa: E402

#: How the files store their pixels: each is a standard Zarr codec chain.
LAYOUTS: dict[str, dict[str, Any]] = {
    "raw": {},
    "zlib-strips": {"compression": "zlib", "rowsperstrip": 8},
    "zstd-tiles": {"compression": "zstd", "tile": (16, 16)},
}

WAVELENGTHS = (488, 561)

#: What a reader of the Icechunk repository runs: icechunk and zarr, never tiffstore.


def write_acquisition(directory: Path, **options: Any) -> np.ndarray:
    """2 channels x 3 stacks of (3, 40, 32) uint16, named ``cells_ch{c}_{nm}nm_stack{t}.tif``;
    returns (ch, stack, z, y, x) as tifffile reads them back."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(7)
    out = np.empty((2, 3, 3, 40, 32), np.uint16)
    for c, nm in enumerate(WAVELENGTHS):
        for t in range(3):
            path = directory / f"cells_ch{c}_{nm}nm_stack{t}.tif"
            data = rng.integers(0, 4000, (3, 40, 32), dtype=np.uint16)
            tifffile.imwrite(path, data, photometric="minisblack", **options)
            out[c, t] = tifffile.imread(path)
    return out


def local_registry(root: str = "/") -> ObjectStoreRegistry:
    return ObjectStoreRegistry({f"file://{root}": LocalStore(root)})


def references(manifest: Any) -> dict[tuple[int, ...], tuple[str, int, int]]:
    """VirtualiZarr's chunk manifest as ``index -> (url, offset, length)``."""
    return {
        index: (str(e["path"]), int(e["offset"]), int(e["length"]))
        for index, e in manifest.iter_refs()
    }


def expected_references(store: tiffstore.TiffStore) -> dict[tuple[int, ...], tuple[str, int, int]]:
    """``virtual_chunks``'s references of the store, at the files' URLs as written (not
    percent-encoded: VirtualiZarr's store and fsspec read them so)."""
    vc = virtual_chunks(store.manifest)
    return {
        tuple(i): (unquote(str(url)), int(o), int(n))
        for i, url, o, n in zip(
            vc.index.tolist(), vc.locations, vc.offset.tolist(), vc.length.tolist(), strict=True
        )
    }


def assert_same_as_open(vds: Any, store: tiffstore.TiffStore) -> None:
    assert vds.image.dims == store.dims
    assert vds.image.shape == store.shape
    assert vds.image.dtype == store.dtype
    assert set(vds.coords) == set(store.coords)
    for name, coord in store.coords.items():
        assert vds[name].dims == tuple(coord["dims"])
        np.testing.assert_array_equal(vds[name].values, np.asarray(coord["values"]))
    assert references(vds.image.data.manifest) == expected_references(store)


def read_icechunk(tmp_path: Path, how: dict[str, Any]) -> tuple[dict[str, np.ndarray], Any]:
    """The repository's arrays read by icechunk + zarr alone, and each array's dims."""
    arrays, info = read_icechunk_elsewhere(tmp_path, how)
    return arrays, {name: v["dims"] for name, v in info.items()}


def write_icechunk(vds: Any, storage: Any, container: Any) -> None:
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(container)
    repo = icechunk.Repository.create(storage, config)
    session = repo.writable_session("main")
    vds.vz.to_icechunk(session.store)
    session.commit("tiffstore's parser, through VirtualiZarr")


def assert_read_back(values: dict[str, np.ndarray], dims: Any, ref: np.ndarray) -> None:
    np.testing.assert_array_equal(values["image"], ref)
    assert dims["image"] == ["ch", "stack", "z", "y", "x"]
    np.testing.assert_array_equal(values["wavelength"], WAVELENGTHS)
    np.testing.assert_array_equal(values["stack"], [0, 1, 2])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_local_folder_equals_open_and_round_trips(tmp_path, layout):
    folder = tmp_path / "run 1"  # a space: locations are URLs as the registry names them
    ref = write_acquisition(folder, **LAYOUTS[layout])
    vds = open_virtual_dataset(
        f"file://{folder}/", registry=local_registry(), parser=TiffStoreParser()
    )
    store = tiffstore.open(folder)
    assert_same_as_open(vds, store)

    refs = tmp_path / "refs.json"
    vds.vz.to_kerchunk(str(refs), format="json")
    np.testing.assert_array_equal(_read_elsewhere(tmp_path, str(refs), "file", {}), ref)

    repo = tmp_path / "repo"
    container = icechunk.VirtualChunkContainer(
        f"file://{tmp_path}/", icechunk.local_filesystem_store(str(tmp_path))
    )
    write_icechunk(vds, icechunk.local_filesystem_storage(str(repo)), container)
    values, dims = read_icechunk(tmp_path, {"path": str(repo)})
    assert_read_back(values, dims, ref)


def test_a_store_registered_for_the_folder_itself(tmp_path):
    """The registry's store may have a prefix: names and reads are below it."""
    folder = tmp_path / "raw"
    ref = write_acquisition(folder, **LAYOUTS["zstd-tiles"])
    registry = local_registry(str(folder))
    vds = open_virtual_dataset(f"file://{folder}", registry=registry, parser=TiffStoreParser())
    assert_same_as_open(vds, tiffstore.open(folder))
    # The ManifestStore reads the chunks through the same registry.
    import zarr

    store = TiffStoreParser()(f"file://{folder}", registry)
    np.testing.assert_array_equal(zarr.open_array(store, path="image", mode="r")[...], ref)


def test_coordinates_are_loaded_whatever_loadable_variables_says(tmp_path):
    folder = tmp_path / "raw"
    write_acquisition(folder)
    vds = open_virtual_dataset(
        f"file://{folder}",
        registry=local_registry(),
        parser=TiffStoreParser(),
        loadable_variables=[],
    )
    for name in ("ch", "stack", "wavelength"):
        assert not isinstance(vds[name].data, ManifestArray), name
    np.testing.assert_array_equal(vds.wavelength.values, WAVELENGTHS)
    assert isinstance(vds.image.data, ManifestArray)  # the pixels stay virtual


def test_open_options_apply(tmp_path):
    folder = tmp_path / "raw"
    write_acquisition(folder, **LAYOUTS["raw"])
    parser = TiffStoreParser(include="*_ch1_*", chunks="page")
    vds = open_virtual_dataset(f"file://{folder}", registry=local_registry(), parser=parser)
    store = tiffstore.open(folder, include="*_ch1_*")
    assert vds.image.shape == store.shape == (3, 3, 40, 32)
    assert vds.image.data.chunks == (1, 1, 40, 32)  # chunks= sets the references' chunks
    assert set(vds.coords) == set(store.coords)
    one = open_virtual_dataset(
        f"file://{folder}/cells_ch1_561nm_stack1.tif", registry=local_registry(), parser=parser
    )
    assert one.image.shape == (3, 40, 32)  # one file: its pages
    assert pickle.loads(pickle.dumps(parser)) == parser


def test_predictor_files_are_refused_with_the_reason(tmp_path):
    folder = tmp_path / "raw"
    write_acquisition(folder, compression="zlib", predictor=True, rowsperstrip=8)
    with pytest.raises(tiffstore.ReferenceError, match=r"cells_ch0_488nm_stack0\.tif.*predictor"):
        open_virtual_dataset(
            f"file://{folder}", registry=local_registry(), parser=TiffStoreParser()
        )


def test_strips_stored_short_are_refused(tmp_path):
    """A last strip stored short is no byte range: a ManifestArray holds references only."""
    folder = tmp_path / "raw"
    write_acquisition(folder, compression="zlib", rowsperstrip=16)  # 40 rows: 16, 16, 8
    with pytest.raises(tiffstore.ReferenceError, match=r"no byte range.*tiffstore icechunk"):
        open_virtual_dataset(
            f"file://{folder}", registry=local_registry(), parser=TiffStoreParser()
        )


def test_importing_tiffstore_does_not_import_virtualizarr(tmp_path):
    code = (
        "import sys, tiffstore, tiffstore.outputs.virtual_chunks\n"
        "assert not {'virtualizarr', 'obstore'} & set(sys.modules), 'imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_refusals(tmp_path):
    with pytest.raises(tiffstore.OptionError, match=r"storage_options= .*registry"):
        TiffStoreParser(storage_options={"anon": True})
    with pytest.raises(tiffstore.OptionError, match="Did you mean pattern"):
        TiffStoreParser(patern="{_}.tif")
    folder = tmp_path / "raw"
    write_acquisition(folder)
    with pytest.raises(tiffstore.SourceError, match="no store for it"):
        TiffStoreParser()(f"s3://nowhere/{folder.name}", local_registry())
    with pytest.raises(tiffstore.SourceError, match="no TIFF files"):
        TiffStoreParser()(f"file://{tmp_path}/empty", local_registry())


@pytest.mark.network
def test_s3_tiffs_and_repository(tmp_path, s3_bucket, s3_server: S3Server):
    bucket_url, options = s3_bucket
    bucket = bucket_url.removeprefix("s3://")
    ref = write_acquisition(tmp_path / "raw", **LAYOUTS["zlib-strips"])
    upload_folder(tmp_path / "raw", f"{bucket_url}/raw", options)
    keys = {"key": options["key"], "secret": options["secret"]}
    registry = ObjectStoreRegistry(
        {
            bucket_url: S3Store(
                bucket,
                endpoint=s3_server.endpoint,
                access_key_id=keys["key"],
                secret_access_key=keys["secret"],
                region="us-east-1",
                client_options={"allow_http": True},
            )
        }
    )
    vds = open_virtual_dataset(f"{bucket_url}/raw/", registry=registry, parser=TiffStoreParser())
    store = tiffstore.open(f"{bucket_url}/raw", storage_options=options)
    assert_same_as_open(vds, store)
    assert next(iter(references(vds.image.data.manifest).values()))[0].startswith(
        f"{bucket_url}/raw/cells_ch0_488nm_stack0.tif"
    )

    refs = tmp_path / "refs.json"
    vds.vz.to_kerchunk(str(refs), format="json")
    np.testing.assert_array_equal(_read_elsewhere(tmp_path, str(refs), "s3", options), ref)

    s3 = {**keys, "bucket": bucket, "prefix": "repo", "endpoint": s3_server.endpoint}
    place = {"region": "us-east-1", "endpoint_url": s3_server.endpoint, "allow_http": True}
    credentials = {"access_key_id": keys["key"], "secret_access_key": keys["secret"]}
    storage = icechunk.s3_storage(
        bucket=bucket, prefix="repo", force_path_style=True, **place, **credentials
    )
    container = icechunk.VirtualChunkContainer(
        f"{bucket_url}/raw/",
        icechunk.s3_store(**place, s3_compatible=True, force_path_style=True),
    )
    write_icechunk(vds, storage, container)
    values, dims = read_icechunk(tmp_path, {"s3": s3})
    assert_read_back(values, dims, ref)

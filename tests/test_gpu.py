"""Chunks through zarr's buffer prototypes: the wiring that puts them in GPU memory.

Without a GPU this is proven with a test-only prototype: a NumPy-backed
``Buffer``/``NDBuffer`` pair whose arrays are a marked ``ndarray`` subclass, and a
staging whose "device" is a second NumPy array. Every read path must hand back
that prototype's buffers, built from one staging buffer and one copy. The tests
marked ``gpu`` run the same checks through CuPy on a real device, and skip (with
the reason) where there is no CuPy or no device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, cpu
from zarr.core.sync import sync
from zarr.registry import register_buffer, register_ndbuffer
from zarr.storage import WrapperStore

import tiffstore
from tiffstore.errors import GpuError, OptionError
from tiffstore.read import gpu

REPO = Path(__file__).resolve().parents[1]
#: Subprocesses import this checkout's tiffstore, and whatever else the tests can.
SUBPROCESS_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
}

# -- a test-only prototype --------------------------------------------------------


class Marked(np.ndarray):
    """An ndarray that says it was made by the test prototype."""


class MarkedBuffer(cpu.Buffer):
    """A NumPy-backed zarr ``Buffer`` whose array is :class:`Marked`."""

    def __init__(self, array_like: Any) -> None:
        marked: Any = np.asarray(array_like).view(Marked)
        super().__init__(marked)


class MarkedNDBuffer(cpu.NDBuffer):
    """A NumPy-backed zarr ``NDBuffer`` whose array is :class:`Marked`."""

    def __init__(self, array: Any) -> None:
        marked: Any = np.asarray(array).view(Marked)
        super().__init__(marked)


MARKED = BufferPrototype(buffer=MarkedBuffer, nd_buffer=MarkedNDBuffer)
register_buffer(MarkedBuffer, qualname="tests.test_gpu.MarkedBuffer")
register_ndbuffer(MarkedNDBuffer, qualname="tests.test_gpu.MarkedNDBuffer")


class HostStaging:
    """A staging whose "device" is a second NumPy array; counts what it is asked."""

    def __init__(self) -> None:
        self.host: list[tuple[tuple[int, ...], np.dtype[Any]]] = []
        self.copies: list[int] = []

    def host_empty(self, shape: Sequence[int], dtype: np.dtype[Any]) -> np.ndarray:
        self.host.append((tuple(shape), np.dtype(dtype)))
        return np.empty(tuple(shape), dtype)

    def to_device(self, host: np.ndarray) -> Any:
        self.copies.append(host.nbytes)
        return np.array(host).view(Marked)

    def read_file(self, path: str, offset: int, nbytes: int, kvikio: bool | None) -> Any | None:
        return None


class DirectStaging(HostStaging):
    """Reads uncompressed ranges "straight into the device", as KvikIO does."""

    def __init__(self) -> None:
        super().__init__()
        self.direct: list[tuple[int, int]] = []

    def read_file(self, path: str, offset: int, nbytes: int, kvikio: bool | None) -> Any | None:
        self.direct.append((offset, nbytes))
        with open(path, "rb") as fh:
            fh.seek(offset)
            return np.frombuffer(fh.read(nbytes), np.uint8).copy().view(Marked)


@pytest.fixture
def staging() -> Iterator[HostStaging]:
    s = HostStaging()
    gpu.register_staging(MarkedBuffer, s)
    yield s
    gpu.unregister_staging(MarkedBuffer)


@pytest.fixture
def marked_config() -> Iterator[None]:
    """zarr makes every buffer with the test prototype (as ``enable_gpu`` does with CuPy's)."""
    with zarr.config.set(
        {"buffer": "tests.test_gpu.MarkedBuffer", "ndbuffer": "tests.test_gpu.MarkedNDBuffer"}
    ):
        yield


class Recording(WrapperStore[Any]):
    """Records the prototype each value was asked with and the buffer the store gave."""

    served: ClassVar[list[tuple[str, type, Buffer | None]]] = []

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        self.served.append((key, prototype.buffer, value))
        return value

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        self.served += [
            (k, prototype.buffer, v) for (k, _), v in zip(key_ranges, values, strict=True)
        ]
        return values


def _is_chunk(store: tiffstore.TiffStore, key: str) -> bool:
    return store.keys.chunk_key(key) is not None


def _host(store: tiffstore.TiffStore, key: str, byte_range: ByteRequest | None = None) -> bytes:
    data = store.get_bytes_sync(key, byte_range)
    assert data is not None
    return data


REQUESTS: list[ByteRequest | None] = [
    None,
    RangeByteRequest(10, 400),
    OffsetByteRequest(100),
    SuffixByteRequest(64),
]


def _read_paths(store: tiffstore.TiffStore, key: str, prototype: BufferPrototype) -> list[Any]:
    """``key`` read by every path of the store, with each kind of byte request."""
    got: list[Any] = []
    for request in REQUESTS:
        got.append((request, sync(store.get(key, prototype, request))))
        got.append((request, store.get_sync(key, prototype=prototype, byte_range=request)))
    partial = sync(store.get_partial_values(prototype, [(key, r) for r in REQUESTS]))
    got += zip(REQUESTS, partial, strict=True)
    return got


# -- the store honours the prototype ------------------------------------------------


@pytest.mark.parametrize("staged", [False, True], ids=["host", "staged"])
@pytest.mark.parametrize("chunks", ["file", "page", (1, 1, 4, 20, 24)])
def test_every_read_path_builds_chunks_with_the_given_prototype(
    sample_dir, chunks, staged, request
):
    store = tiffstore.open(sample_dir[0], chunks=chunks)
    if staged:  # read as for a device prototype: through a staging buffer, copied once
        request.getfixturevalue("staging")
    keys = ["0.0.0.0.0", "image/0.0.0.0.0", "2.3.0.0.0", ".zarray", "image/.zarray"]
    keys += [k for k in store.documents.coordinate_chunks][:1]
    # A chunk of the group view where no file is: its filled pixels.
    keys.append("image/1.2.0.0.0")
    for key in keys:
        for asked, value in _read_paths(store, key, MARKED):
            assert type(value) is MarkedBuffer, (key, asked)
            assert type(value.as_array_like()) is Marked
            assert value.to_bytes() == _host(store, key, asked), (key, asked)


def test_chunk_values_are_the_pixels(sample_dir):
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks="file")
    value = store.get_sync("2.1.0.0.0", prototype=MARKED)
    assert value is not None
    pixels = value.as_array_like().view(ref.dtype).reshape(ref.shape[2:])
    np.testing.assert_array_equal(pixels, ref[2, 1])
    # The root's chunk where no file is stays absent, whatever the prototype.
    assert store.get_sync("1.2.0.0.0", prototype=MARKED) is None


@pytest.mark.parametrize("chunks", ["file", (1, 1, 4, 20, 24)])
def test_staged_reads_read_once_into_a_host_buffer_and_copy_once(sample_dir, staging, chunks):
    store = tiffstore.open(sample_dir[0], chunks=chunks)
    one_range = store.reader.plan((0, 0, 0, 0, 0)).one_range() is not None
    for key in ["0.0.0.0.0", "image/0.0.0.0.0"]:
        for request in REQUESTS:
            staging.host.clear()
            staging.copies.clear()
            value = store.get_sync(key, prototype=MARKED, byte_range=request)
            assert type(value) is MarkedBuffer
            expected = _host(store, key, request)
            assert value.to_bytes() == expected
            # One host buffer, one copy to the device: of only the bytes asked for
            # when the chunk is one range of one file; else the chunk is assembled.
            assert staging.copies == [len(expected)]
            if one_range:
                assert staging.host == [((len(expected),), np.dtype(np.uint8))]
            else:
                assert staging.host == [(store.chunks, store.dtype)]
    assert one_range == (chunks == "file")


def test_staged_reads_of_compressed_chunks_decode_into_the_host_buffer(make_sample, staging):
    directory, ref = make_sample(channels=2, stacks=2, compression="zlib", missing=[(1, 0)])
    store = tiffstore.open(directory, chunks="file")
    for c, s in np.ndindex(2, 2):
        staging.host.clear()
        staging.copies.clear()
        value = sync(store.get(f"image/{c}.{s}.0.0.0", MARKED))
        assert type(value) is MarkedBuffer
        pixels = value.as_array_like().view(ref.dtype).reshape(ref.shape[2:])
        np.testing.assert_array_equal(pixels, ref[c, s])
        assert staging.copies == [ref[c, s].nbytes]
        # Decoded straight into the one host buffer (none for the empty cell, whose
        # fill is copied from the host once).
        assert staging.host == ([] if (c, s) == (1, 0) else [(store.chunks, store.dtype)])


def test_direct_reads_skip_the_host_buffer(sample_dir):
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks="file")
    direct = DirectStaging()
    gpu.register_staging(MarkedBuffer, direct)
    try:
        value = store.get_sync("0.1.0.0.0", prototype=MARKED, byte_range=RangeByteRequest(6, 70))
        assert value is not None and type(value) is MarkedBuffer
        assert value.to_bytes() == ref[0, 1].tobytes()[6:70]
        assert len(direct.direct) == 1 and direct.direct[0][1] == 64
        assert direct.host == [] and direct.copies == []
    finally:
        gpu.unregister_staging(MarkedBuffer)


def test_zarr_reads_through_the_configured_prototype(sample_dir, marked_config, staging):
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks=(1, 1, 4, 20, 24))
    Recording.served.clear()
    recorded = Recording(store)
    whole = zarr.open_array(recorded, mode="r")[...]
    assert type(whole) is Marked
    np.testing.assert_array_equal(whole, ref)
    # The group view, as xarray reads it.
    image = zarr.open_group(recorded, mode="r", zarr_format=2)["image"]
    assert isinstance(image, zarr.Array)
    np.testing.assert_array_equal(image[:, 1, 2:5, 3:30], ref[:, 1, 2:5, 3:30])
    chunks = [(k, p, v) for k, p, v in Recording.served if _is_chunk(store, k)]
    assert len(chunks) > 10
    for key, buffer, value in chunks:
        assert buffer is MarkedBuffer
        assert value is None or type(value) is MarkedBuffer, key
    assert staging.copies


def test_dask_from_zarr_gives_chunks_of_the_configured_kind(sample_dir, marked_config):
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks="page")
    arr = da.from_zarr(store)
    blocks = dask.compute(*arr.to_delayed().ravel()[:5], scheduler="threads")
    assert all(type(b) is Marked for b in blocks)
    np.testing.assert_array_equal(arr.compute(), ref)


@pytest.mark.parametrize("chunks", ["file", (1, 1, 4, 20, 24)])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_to_dask_through_a_prototype(make_sample, byteorder, chunks):
    directory, ref = make_sample(missing=[(1, 2)], byteorder=byteorder)
    store = tiffstore.open(directory, chunks=chunks, fill_value=7)
    assert store.dtype == np.dtype(f"{byteorder}u2")
    ref = ref.copy()
    ref[1, 2] = 7
    arr = store.to_dask(prototype=MARKED)
    assert type(arr._meta) is Marked
    assert arr.dtype == ref.dtype.newbyteorder("=")
    assert arr.chunks == da.from_zarr(store).chunks
    blocks = dask.compute(*arr.to_delayed().ravel(), scheduler="sync")
    assert all(type(b) is Marked for b in blocks)
    np.testing.assert_array_equal(arr.compute(), ref)
    # Without a prototype: NumPy chunks in the files' byte order, as before.
    assert store.to_dask().dtype == store.dtype
    assert store.to_dask(meta=np.empty(0)).name == store.to_dask().name != arr.name


def test_to_dask_options_say_what_is_wrong(sample_dir):
    store = tiffstore.open(sample_dir[0])
    with pytest.raises(OptionError, match="NumPy or CuPy array, not list"):
        store.to_dask(meta=[])


def test_gpu_without_cupy_says_what_to_install(sample_dir):
    # A fresh interpreter where CuPy cannot be imported, as on a machine without the extra.
    code = f"""
import sys
sys.modules["cupy"] = None
import tiffstore
assert "kvikio" not in sys.modules
store = tiffstore.open({str(sample_dir[0])!r})
try:
    store.to_dask(gpu=True)
except tiffstore.errors.GpuError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "tiffstore[gpu]"' in out.stdout


def test_gpu_error_is_a_tiffstore_error():
    assert issubclass(GpuError, tiffstore.TiffStoreError)


def test_missing_cupy_and_kvikio_are_named(monkeypatch, sample_dir):
    # As on a machine without the extra: the modules cannot be imported.
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setitem(sys.modules, "kvikio", None)
    monkeypatch.setattr(gpu, "_cupy", None)  # forget a CuPy found by an earlier test
    with pytest.raises(GpuError, match=r'pip install "tiffstore\[gpu\]"'):
        gpu.require_cupy()
    with pytest.raises(GpuError, match="CuPy"):
        tiffstore.open(sample_dir[0]).to_dask(gpu=True)
    assert gpu._kvikio(None) is None
    assert gpu._kvikio(False) is None
    with pytest.raises(GpuError, match="kvikio=True, but KvikIO is not installed"):
        gpu._kvikio(True)


def test_gpu_and_a_prototype_are_not_both_taken(sample_dir):
    with pytest.raises(OptionError, match="not both"):
        tiffstore.open(sample_dir[0]).to_dask(gpu=True, prototype=MARKED)


def test_staging_is_found_by_buffer_class_latest_first():
    first, second = HostStaging(), HostStaging()
    assert gpu.staging_for(MARKED) is None
    gpu.register_staging(MarkedBuffer, first)
    gpu.register_staging(cpu.Buffer, second)
    try:
        assert gpu.staging_for(MARKED) is second  # MarkedBuffer is a cpu.Buffer
        gpu.unregister_staging(cpu.Buffer)
        assert gpu.staging_for(MARKED) is first
    finally:
        gpu.unregister_staging(MarkedBuffer)
        gpu.unregister_staging(cpu.Buffer)
    assert gpu.staging_for(MARKED) is None
    assert gpu.staging_for(BufferPrototype(cpu.Buffer, cpu.NDBuffer)) is None


def test_staged_read_of_a_truncated_file_names_it(make_sample, staging):
    directory, _ = make_sample(channels=1, stacks=2)
    store = tiffstore.open(directory, chunks="file")
    assert store.dims == ("stack", "z", "y", "x")
    victim = sorted(directory.glob("*.tif"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(tiffstore.TiffReadError, match=victim.name):
        store.get_sync("1.0.0.0", prototype=MARKED)


@pytest.mark.parametrize(
    "script", ["benchmarks/gpu.py", "examples/gpu_max_projection.py"], ids=["bench", "example"]
)
def test_gpu_scripts_without_a_gpu_say_why_and_fail(script):
    reason = _no_gpu()
    if reason is None:
        pytest.skip("there is a GPU here: the example and the benchmark run in their own tests")
    env = SUBPROCESS_ENV
    proc = subprocess.run(
        [sys.executable, str(REPO / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0 and "GPU" in proc.stdout
    proc = subprocess.run(
        [sys.executable, str(REPO / script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "CuPy" in proc.stderr or "CUDA device" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_benchmark_quick_run_prints_ratios(cp, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/gpu.py"),
            "--quick",
            "--json",
            str(tmp_path / "g.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=SUBPROCESS_ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "of H2D limit" in proc.stdout
    rows = json.loads((tmp_path / "g.json").read_text())["cases"]["uncompressed"]["rows"]
    for key in ("h2d_limit", "tiffstore_gpu", "recipe", "tiffstore_zarr_gpu"):
        assert rows[key]["gb_per_s"] > 0, key


def test_sharded_reads_build_chunks_with_the_given_prototype(sample_dir, staging):
    """Zarr format 3 with shards: every inner chunk and shard index through the prototype."""
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks="page", zarr_format=3)
    Recording.served.clear()
    recorded = Recording(store)
    with zarr.config.set(
        {"buffer": "tests.test_gpu.MarkedBuffer", "ndbuffer": "tests.test_gpu.MarkedNDBuffer"}
    ):
        arr = zarr.open_array(recorded, mode="r")
        whole = arr[...]
        part = arr[:, 1, 2:5]
    assert type(whole) is Marked
    np.testing.assert_array_equal(whole, ref)
    np.testing.assert_array_equal(part, ref[:, 1, 2:5])
    values = [
        v for k, _, v in Recording.served if k != "zarr.json" and not k.endswith("/zarr.json")
    ]
    assert values
    assert all(v is None or type(v) is MarkedBuffer for v in values)
    for request in REQUESTS:
        for key in [k for k, _, v in Recording.served if v is not None][:3]:
            value = sync(store.get(key, MARKED, request))
            assert type(value) is MarkedBuffer
            assert value.to_bytes() == _host(store, key, request)


# -- on a GPU -------------------------------------------------------------------------


def _no_gpu() -> str | None:
    """Why there is no GPU to test on (``None`` when there is one)."""
    try:
        gpu.require_cupy()
    except GpuError as exc:
        return str(exc)
    return None


@pytest.fixture
def cp() -> Any:
    cupy = pytest.importorskip("cupy", reason='no CuPy: pip install "tiffstore[gpu]"')
    reason = _no_gpu()
    if reason:
        pytest.skip(reason)
    return cupy


@pytest.fixture(params=[False, True], ids=["pinned", "kvikio"])
def kvikio_mode(request) -> bool:
    """Open stores with this ``kvikio=`` (KvikIO on, or reads through pinned memory)."""
    if request.param:
        pytest.importorskip("kvikio", reason="KvikIO is not installed")
    return bool(request.param)


@pytest.mark.gpu
@pytest.mark.parametrize("chunks", ["file", (1, 1, 4, 20, 24)])
def test_gpu_every_read_path_gives_device_buffers(cp, kvikio_mode, sample_dir, chunks):
    store = tiffstore.open(sample_dir[0], chunks=chunks, kvikio=kvikio_mode)
    proto = gpu.device_prototype()
    for key in ["0.0.0.0.0", "image/0.1.0.0.0", "image/1.2.0.0.0", ".zarray"]:
        for request, value in _read_paths(store, key, proto):
            assert isinstance(value, proto.buffer), (key, request)
            assert isinstance(value.as_array_like(), cp.ndarray)
            assert value.to_bytes() == _host(store, key, request), (key, request)


@pytest.mark.gpu
def test_gpu_zarr_and_dask_give_cupy_arrays(cp, kvikio_mode, sample_dir):
    directory, ref = sample_dir
    store = tiffstore.open(directory, chunks=(1, 1, 4, 20, 24), kvikio=kvikio_mode)
    with zarr.config.enable_gpu():
        whole = zarr.open_array(store, mode="r")[...]
        assert isinstance(whole, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(whole), ref)
        arr = da.from_zarr(store)
        block = arr.blocks[0, 0, 0, 0, 0].compute()
        assert isinstance(block, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(arr.max(axis=2).compute()), ref.max(axis=2))


@pytest.mark.gpu
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_gpu_to_dask_gives_cupy_chunks(cp, kvikio_mode, make_sample, compression):
    directory, ref = make_sample(missing=[(1, 2)], compression=compression)
    store = tiffstore.open(directory, chunks=(1, 1, 4, 20, 24), kvikio=kvikio_mode)
    for arr in (store.to_dask(gpu=True), store.to_dask(meta=cp.empty(0, cp.uint16))):
        assert isinstance(arr._meta, cp.ndarray)
        assert isinstance(arr.blocks[0, 0, 0, 0, 0].compute(), cp.ndarray)
        mip = arr.max(axis=2).compute()
        assert isinstance(mip, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(mip), ref.max(axis=2))

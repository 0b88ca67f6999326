"""Chunks straight into device memory: zarr's buffer prototypes, CuPy and KvikIO.

zarr-python 3 asks a store for every value through a *buffer prototype*; with
``zarr.config.enable_gpu()`` that is zarr's GPU buffer, backed by CuPy. For such a
prototype a :class:`~tiffstore.read.store.TiffStore` reads a chunk's bytes into
page-locked (pinned) host memory (straight from the file for uncompressed pages,
decoded there for compressed ones) and copies them to the device once, on a CUDA
stream of the reading thread, so that reads in several threads overlap their
copies. With KvikIO installed, an uncompressed chunk of a local file is read by
KvikIO straight into device memory (GPUDirect Storage where the system has it, its
own pinned bounce buffers otherwise).

Nothing here imports CuPy or KvikIO until a device read asks for them: tiffstore
installs and imports the same on machines with no GPU.

Examples
--------
>>> import zarr, tiffstore
>>> store = tiffstore.open("raw/")  # doctest: +SKIP
>>> with zarr.config.enable_gpu():  # doctest: +SKIP
...     plane = zarr.open_array(store, mode="r")[0, 0, 10]  # a cupy.ndarray
>>> stack = store.to_dask(gpu=True)  # doctest: +SKIP
>>> mip = stack.max(axis=2).compute()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from zarr.abc.buffer import BufferPrototype
from zarr.buffer import gpu

from tiffstore.errors import GpuError, TiffReadError
from tiffstore.read.assemble import ChunkReader
from tiffstore.sources.local import LocalSource

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CupyStaging",
    "Staging",
    "device_prototype",
    "read_chunk_staged",
    "register_staging",
    "require_cupy",
    "staging_for",
    "unregister_staging",
]

_INSTALL_HINT = 'Install the GPU extra: pip install "tiffstore[gpu]" (CuPy for CUDA 12).'

#: CuPy, once a device was found (asked for on every chunk read): a cache of the
#: import and the device check, not a setting.
_cupy: Any = None


def require_cupy() -> Any:
    """The ``cupy`` module, with a device to use.

    Raises
    ------
    GpuError
        When CuPy is not installed or sees no CUDA device; the message says what to do.
    """
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        cp = importlib.import_module("cupy")
    except ImportError as exc:
        raise GpuError(
            f"Reading into GPU memory needs CuPy, which is not installed. {_INSTALL_HINT}"
        ) from exc
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError with no driver
        raise GpuError(
            f"CuPy is installed but no CUDA device can be used ({type(exc).__name__}: {exc}). "
            "Check the NVIDIA driver (nvidia-smi) and that CuPy matches its CUDA version."
        ) from exc
    if count == 0:
        raise GpuError(
            "CuPy is installed but sees no CUDA device; check CUDA_VISIBLE_DEVICES and nvidia-smi."
        )
    _cupy = cp
    return cp


def device_prototype() -> BufferPrototype:
    """zarr's GPU buffer prototype (CuPy-backed), after checking that a device is there.

    Examples
    --------
    >>> store.get_sync("0.0.0.0.0", prototype=device_prototype())  # doctest: +SKIP
    """
    require_cupy()
    return gpu.buffer_prototype


class Staging(Protocol):
    """How chunk bytes reach one kind of device memory.

    A store reads into :meth:`host_empty`'s arrays and hands them to
    :meth:`to_device` once filled; :meth:`read_file` may instead read a file's
    bytes straight into device memory.
    """

    def host_empty(self, shape: Sequence[int], dtype: np.dtype[Any]) -> np.ndarray:
        """A C-contiguous host array to read into (pinned memory, for a GPU)."""

    def to_device(self, host: np.ndarray) -> Any:
        """A new device array holding a copy of ``host`` (its shape and dtype)."""

    def read_file(self, path: str, offset: int, nbytes: int, kvikio: bool | None) -> Any | None:
        """``nbytes`` of a local file from ``offset`` as a 1-D ``uint8`` device array, or
        ``None`` to read through :meth:`host_empty` (``kvikio``: the store's setting)."""


class CupyStaging:
    """Pinned host buffers from CuPy's pool, one copy to the device per read; KvikIO reads.

    Each reading thread copies on its own CUDA stream and waits only for its own
    copy, so the copies of chunks read by dask's threads overlap each other and
    the reads. Pinned buffers come from CuPy's pinned memory pool and go back to
    it once their copy is done.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _stream(self) -> Any:
        stream = getattr(self._local, "stream", None)
        if stream is None:
            cp = require_cupy()
            # A blocking stream: it waits for work on the legacy default stream, where
            # the caller's kernels (and the frees of arrays they used) run.
            stream = self._local.stream = cp.cuda.Stream(non_blocking=False)
        return stream

    def host_empty(self, shape: Sequence[int], dtype: np.dtype[Any]) -> np.ndarray:
        require_cupy()
        import cupyx

        return cupyx.empty_pinned(tuple(shape), dtype)

    def to_device(self, host: np.ndarray) -> Any:
        cp = require_cupy()
        out = cp.empty(host.shape, host.dtype)
        if host.size:
            stream = self._stream()
            out.set(host, stream=stream)
            # The pinned buffer goes back to the pool when ``host`` is dropped: wait
            # for the copy first.
            stream.synchronize()
        return out

    def read_file(self, path: str, offset: int, nbytes: int, kvikio: bool | None) -> Any | None:
        module = _kvikio(kvikio)
        if module is None:
            return None
        cp = require_cupy()
        out = cp.empty(nbytes, np.uint8)
        try:
            with module.CuFile(path, "r") as fh:
                got = fh.pread(out, nbytes, offset).get()
        except Exception as exc:
            raise TiffReadError(
                f"{path}: KvikIO could not read bytes {offset}-{offset + nbytes} "
                f"({type(exc).__name__}: {exc}). Open with kvikio=False to read through "
                "pinned host memory instead."
            ) from exc
        if got < nbytes:
            raise TiffReadError(
                f"{path}: file is truncated: wanted bytes {offset}-{offset + nbytes} "
                f"but it ends at {offset + got}. Was it still being written?"
            )
        return out


#: The staging of zarr's GPU buffers (it imports CuPy only when first used).
_cupy_staging = CupyStaging()


def _kvikio(wanted: bool | None) -> Any | None:
    """The ``kvikio`` module when it is to be used, else ``None``.

    ``wanted``: ``None`` uses it when it is installed, ``False`` never, ``True`` always
    (a :class:`GpuError` when it is missing).
    """
    if wanted is False:
        return None
    try:
        return importlib.import_module("kvikio")
    except ImportError as exc:
        if wanted:
            raise GpuError(
                "kvikio=True, but KvikIO is not installed. "
                'Install it with: pip install "tiffstore[gpu]" (kvikio-cu12).'
            ) from exc
        return None


@dataclass(frozen=True)
class _Registered:
    buffer: type
    staging: Staging


_registered: list[_Registered] = []
#: Buffer class -> its staging (``None``: a host buffer); asked once per chunk read.
_known: dict[type, Staging | None] = {}


def register_staging(buffer: type, staging: Staging) -> None:
    """Read chunks asked for with ``buffer`` (a zarr ``Buffer`` class) through ``staging``.

    zarr's GPU buffer is known already; this is for other device buffers (or a
    test's). The latest registration of a class wins.

    Examples
    --------
    >>> register_staging(MyDeviceBuffer, MyStaging())  # doctest: +SKIP
    """
    _registered.insert(0, _Registered(buffer, staging))
    _known.clear()


def unregister_staging(buffer: type) -> None:
    """Forget what :func:`register_staging` said about ``buffer``."""
    _registered[:] = [r for r in _registered if r.buffer is not buffer]
    _known.clear()


def staging_for(prototype: BufferPrototype) -> Staging | None:
    """How to stage reads for ``prototype``: ``None`` for host buffers (read as bytes)."""
    buffer = prototype.buffer
    try:
        return _known[buffer]
    except KeyError:
        pass
    staging = next((r.staging for r in _registered if issubclass(buffer, r.buffer)), None)
    if staging is None and issubclass(buffer, gpu.Buffer):
        staging = _cupy_staging
    _known[buffer] = staging
    return staging


def read_chunk_staged(
    reader: ChunkReader,
    index: Sequence[int],
    part: tuple[int, int] | None,
    staging: Staging,
    kvikio: bool | None = None,
) -> Any | None:
    """Chunk ``index``'s bytes (C order), or ``part`` of them, as a 1-D ``uint8`` device array.

    ``None`` when no file contributes to the chunk. A chunk that is one raw byte
    range of one file is read straight into a pinned buffer (or by KvikIO straight
    into device memory, as ``kvikio`` says: see :class:`~tiffstore.read.store.TiffStore`);
    any other chunk is assembled (decoded) into a pinned buffer. Either way the device
    gets one copy.
    """
    m = reader.manifest
    plan = reader.plan(index)
    if plan.empty:
        return None
    start, stop = (0, m.chunk_nbytes) if part is None else part
    piece = plan.one_range()
    if piece is not None:
        start, stop = min(start, piece.nbytes), min(stop, piece.nbytes)
        nbytes = max(stop - start, 0)
        name = m.files[piece.file]
        if nbytes and isinstance(m.source, LocalSource):
            direct = staging.read_file(m.source.url(name), piece.offset + start, nbytes, kvikio)
            if direct is not None:
                return direct
        host = staging.host_empty((nbytes,), np.dtype(np.uint8))
        if nbytes:
            m.source.read_into(name, piece.offset + start, host.data)
        return staging.to_device(host)
    chunk = staging.host_empty(m.chunks, m.dtype)
    reader.execute(plan, chunk)
    flat = chunk.reshape(-1).view(np.uint8)
    return staging.to_device(flat if part is None else flat[start:stop])

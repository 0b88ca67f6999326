"""The peers: other ways to read a folder of TIFF stacks as one array.

Each peer is a small adapter that opens a :class:`~benchmarks.data.Dataset` the
way that tool's documentation does and hands back a dask array, a one-plane
reader and, where the tool makes one, a zarr array. A peer that is not installed
or fails is recorded as a row with its error; the suite goes on.

To add a peer, subclass :class:`Peer` and append it to :data:`PEERS`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import tifffile

from . import cases
from .data import NAME_REGEX, Context, Dataset, warm
from .harness import Row, attempt, failed_row, time_best, timed_row
from .limits import COPY_LIMIT, FULL, PLANE, SUM

ZARR_READ = "zarr_array[...] (whole array)"


@dataclass
class Opened:
    """What a peer hands back: a dask array, a one-plane reader, maybe a zarr array."""

    array: da.Array
    plane: Callable[[int, int, int], Any]
    zarr: Any = None


class Peer:
    """A way to read the dataset; subclasses implement :meth:`open`."""

    key: str = ""
    name: str = ""
    #: Modules the peer needs, imported before anything is timed.
    modules: tuple[str, ...] = ()

    def prepare(self) -> None:
        """Import the peer's modules (raises ``ImportError`` when it is not installed)."""
        for module in self.modules:
            importlib.import_module(module)

    def open(self, ds: Dataset) -> Opened:
        raise NotImplementedError


def _dask_plane(arr: da.Array) -> Callable[[int, int, int], Any]:
    return lambda c, s, z: arr[c, s, z].compute()


def _grid(ds: Dataset) -> list[list[str]]:
    """The folder's files placed by channel and stack, parsed from the names."""
    rx = re.compile(NAME_REGEX)
    cells: dict[tuple[int, int], str] = {}
    for path in sorted(ds.path.glob("*.tif")):
        m = rx.search(path.name)
        if m:
            cells[int(m["C"]), int(m["T"])] = str(path)
    chans = sorted({c for c, _ in cells})
    stacks = sorted({s for _, s in cells})
    return [[cells[c, s] for s in stacks] for c in chans]


class SeedRecipe(Peer):
    """The recipe tiffstore replaces: ``dask.delayed(tifffile.imread)`` per file + ``da.block``."""

    key = "recipe"
    name = "seed recipe: delayed(imread) + da.block"
    modules = ("dask.delayed",)

    def open(self, ds: Dataset) -> Opened:
        from dask import delayed

        grid = _grid(ds)
        with tifffile.TiffFile(grid[0][0]) as tif:
            shape, dtype = tif.series[0].shape, tif.series[0].dtype
        read = delayed(tifffile.imread, pure=True)
        # da.block nests one list per dim: channels, stacks, then z, y, x of one block each.
        blocks = [
            [[[[da.from_delayed(read(path), shape, dtype)[None, None]]]] for path in row]
            for row in grid
        ]
        arr = da.block(blocks)
        return Opened(arr, _dask_plane(arr))


class TifffileSequence(Peer):
    """tifffile's ``TiffSequence(..., pattern=regex).aszarr()`` + ``da.from_zarr``."""

    key = "tifffile"
    name = "tifffile TiffSequence.aszarr"
    modules = ("zarr", "tifffile.zarr")

    def open(self, ds: Dataset) -> Opened:
        import zarr

        seq = tifffile.TiffSequence(str(ds.path / "*.tif"), pattern=NAME_REGEX)
        store = seq.aszarr()
        z = zarr.open_array(store, mode="r")
        return Opened(da.from_zarr(z), lambda c, s, p: z[c, s, p], z)


class DaskImage(Peer):
    """dask-image's ``imread`` of a glob (pims underneath)."""

    key = "dask_image"
    name = "dask-image imread"
    modules = ("dask_image.imread",)

    def open(self, ds: Dataset) -> Opened:
        from dask_image.imread import imread

        arr = imread(str(ds.path / "*.tif")).reshape(ds.array_shape)
        return Opened(arr, _dask_plane(arr))


class Kerchunk(Peer):
    """kerchunk: ``tiff_to_zarr`` per file, ``MultiZarrToZarr``, read back through fsspec."""

    key = "kerchunk"
    name = "kerchunk tiff_to_zarr + MultiZarrToZarr"
    modules = ("fsspec.implementations.reference", "kerchunk.combine", "kerchunk.tiff")

    def references(self, ds: Dataset) -> dict[str, Any]:
        """The folder's combined references (kerchunk's JSON document, as a dict)."""
        from kerchunk.combine import MultiZarrToZarr
        from kerchunk.tiff import tiff_to_zarr

        refs = [tiff_to_zarr(str(f)) for f in ds.files]
        n = ds.stacks
        combined: dict[str, Any] = MultiZarrToZarr(
            refs,
            remote_protocol="file",
            concat_dims=["ch", "stack"],
            coo_map={
                "ch": lambda index, fs, var, fn: index // n,
                "stack": lambda index, fs, var, fn: index % n,
            },
        ).translate()
        return combined

    def open(self, ds: Dataset) -> Opened:
        import fsspec
        import zarr

        combined = self.references(ds)
        fs = fsspec.filesystem("reference", fo=combined, remote_protocol="file", asynchronous=True)
        z = zarr.open_array(zarr.storage.FsspecStore(fs, read_only=True), mode="r")
        return Opened(da.from_zarr(z), lambda c, s, p: z[c, s, p], z)


class VirtualiZarr(Peer):
    """VirtualiZarr with the virtual-tiff parser: pages concatenated with xarray, read by zarr."""

    key = "virtualizarr"
    name = "VirtualiZarr + virtual-tiff"
    modules = ("xarray", "obstore.store", "virtual_tiff", "virtualizarr.manifests")

    def combine(self, ds: Dataset) -> tuple[Any, Any]:
        """The folder as one virtual ``xarray.DataArray`` (ch, stack, z, y, x), and its registry."""
        import xarray as xr
        from obspec_utils.registry import ObjectStoreRegistry
        from obstore.store import LocalStore
        from virtual_tiff import VirtualTIFF
        from virtualizarr import open_virtual_dataset

        registry = ObjectStoreRegistry({"file://": LocalStore()})
        parser = VirtualTIFF(ifd_layout="flat")

        def one(path: str) -> Any:
            # virtual-tiff makes one variable per page; stack them along z.
            v = open_virtual_dataset(f"file://{path}", registry=registry, parser=parser)
            pages: list[Any] = [v[k] for k in sorted(v.data_vars, key=lambda k: int(str(k)))]
            return xr.concat(pages, dim="z")

        grid = _grid(ds)
        rows = [xr.concat([one(p) for p in row], dim="stack") for row in grid]
        return xr.concat(rows, dim="ch"), registry

    def open(self, ds: Dataset) -> Opened:
        import zarr
        from virtualizarr.manifests import ManifestGroup, ManifestStore

        combined, registry = self.combine(ds)
        store = ManifestStore(ManifestGroup(arrays={"data": combined.data}), registry=registry)
        z = zarr.open_array(store, path="data", mode="r")
        return Opened(da.from_zarr(z), lambda c, s, p: z[c, s, p], z)


PEERS: list[Peer] = [SeedRecipe(), TifffileSequence(), DaskImage(), Kerchunk(), VirtualiZarr()]


def open_peer(peer: Peer, ds: Dataset, case: str, key: str) -> tuple[Opened | None, Row]:
    """Open ``ds`` with ``peer``, timed once; on failure, a row with the error."""
    opened: list[Opened] = []

    def measure() -> Row:
        peer.prepare()
        t = time_best(lambda: opened.append(peer.open(ds)), 1, warmup=0)
        return timed_row(key, case, peer.name, "peer", t, unit="ms")

    row = attempt(key, case, peer.name, "peer", measure, unit="ms")
    return (opened[-1] if opened else None), row


def measure_peer(ctx: Context, ds: Dataset, peer: Peer, out: np.ndarray) -> list[Row]:
    """One peer's rows: full read, sum, one plane and, where it makes a zarr array, zarr[...]."""
    keys = {
        "full": (f"full/{peer.key}", FULL, "GB/s", COPY_LIMIT),
        "sum": (f"sum/{peer.key}", SUM, "GB/s", cases.SUM_LIMIT),
        "plane": (f"plane/{peer.key}", PLANE, "ms", cases.PLANE_LIMIT),
    }
    warm(ds.files)
    opened, opened_row = open_peer(peer, ds, "open", f"open/{peer.key}")
    if opened is None:
        return [failed_row(opened_row, *k) for k in keys.values()]
    arr, plane, z = opened.array, opened.plane, opened.zarr
    name = peer.name
    rows = [
        cases.full_read(ctx, ds, keys["full"][0], name, "peer", lambda: arr, out),
        cases.total(ctx, ds, keys["sum"][0], name, "peer", lambda: arr),
        cases.one_plane(ctx, ds, keys["plane"][0], name, "peer", lambda: plane),
    ]
    if z is not None:
        zkey = f"zarr/{peer.key}"
        read = lambda: z[...]  # noqa: E731
        rows.append(cases.into_array(ctx, ds, zkey, name, "peer", read, case=ZARR_READ))
    return rows


def run(ctx: Context) -> list[Row]:
    """Every peer on the uncompressed dataset."""
    ds = ctx.dataset()
    out = np.zeros(ds.array_shape, dtype=ds.dtype)
    rows: list[Row] = []
    for peer in PEERS:
        ctx.log(f"  peer: {peer.name}")
        rows += measure_peer(ctx, ds, peer, out)
    return rows

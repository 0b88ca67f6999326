"""The napari reader: ``napari raw/`` opens the acquisition lazily, one layer per channel.

Declared in ``napari.yaml`` (npe2, registered under the ``napari.manifest`` entry
point). The data is one lazy dask array (:meth:`TiffStore.to_dask`) split into layers
along the channel dim (``channel_axis``), each named by its wavelength (``"488 nm"``)
or channel name. Contrast limits are given up front from a small sample, the middle
plane of the first and last stack of each channel, so napari never scans the whole
array to find them. When the store knows its voxel size (``store.scale``), the layers
get it as their ``scale``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tiffstore.apps.grid import AcquisitionGrid
from tiffstore.detect import is_tiff_source, is_tiffstore_reference
from tiffstore.opening import open as open_store
from tiffstore.options import OpenOptions
from tiffstore.read.store import TiffStore

__all__ = ["contrast_limits", "get_reader", "layer_data", "read_acquisition"]

logger = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | Sequence[str]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """napari's reader hook: :func:`read_acquisition` if tiffstore opens ``path``, else ``None``.

    ``path`` is a folder of TIFFs, a TIFF file, a list of TIFF files (opened together as
    one acquisition) or a reference file tiffstore wrote.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    if len(paths) == 1 and is_tiffstore_reference(paths[0]):
        return read_acquisition
    if all(is_tiff_source(p) for p in paths):
        return read_acquisition
    return None


def read_acquisition(path: PathOrPaths) -> list[LayerData]:
    """Open ``path`` with :func:`tiffstore.open` (the default options: napari gives a
    path and nothing else) and return its napari layer data."""
    source: Any = path if isinstance(path, (str, os.PathLike)) else list(path)
    if isinstance(source, list) and len(source) == 1:
        source = source[0]
    return layer_data(open_store(source, OpenOptions()))


def _scale(store: TiffStore, dims: Sequence[str]) -> tuple[float, ...] | None:
    """Voxel size along ``dims`` from ``store.scale``, if the store has one.

    ``store.scale`` may map dim names to a number, to ``(number, unit)``, or to an object
    or dict with a ``value``; or be a sequence aligned with ``store.dims``. Dims it does
    not name get 1. Stores without ``scale`` give ``None`` (napari's default, 1).
    """
    scale = getattr(store, "scale", None)
    if not scale:
        return None
    if not isinstance(scale, Mapping):
        scale = dict(zip(store.dims, scale, strict=False))

    def number(v: Any) -> float:
        if isinstance(v, (tuple, list)):
            v = v[0]
        v = v.get("value") if isinstance(v, Mapping) else getattr(v, "value", v)
        return float(v) if v is not None else 1.0

    out = tuple(number(scale[d]) if d in scale else 1.0 for d in dims)
    return None if all(v == 1.0 for v in out) else out


def contrast_limits(
    store: TiffStore, grid: AcquisitionGrid | None = None
) -> list[tuple[float, float]]:
    """``(min, max)`` per channel over a few planes: never the whole array.

    The sample is the middle plane (of every dim other than the image plane) of the
    first and last cell with a file in each channel: at most two planes per channel.
    """
    import dask

    grid = grid or AcquisitionGrid.of(store)
    array = store.to_dask()
    middle = {
        d: n // 2
        for d, n in enumerate(grid.shape)
        if d not in grid.name_dims and d != grid.channel_dim and d not in grid.plane_dims
    }
    planes = []
    channels = [None] if grid.channel_dim is None else list(range(grid.n_channels))
    for c in channels:
        cells = [cell for cell in grid.cells(c) if grid.present[cell]]
        picks = [cells[0], cells[-1]] if cells else []
        planes.append([array[grid.index(cell, c, middle)] for cell in dict.fromkeys(picks)])
    computed = dask.compute(*(p for per in planes for p in per))
    limits: list[tuple[float, float]] = []
    k = 0
    for per in planes:
        values = computed[k : k + len(per)]
        k += len(per)
        if not values:
            limits.append((0.0, 1.0))
            continue
        lo = float(min(v.min() for v in values))
        hi = float(max(v.max() for v in values))
        limits.append((lo, hi if hi > lo else lo + 1))
    return limits


def layer_data(store: TiffStore) -> list[LayerData]:
    """napari layer data for ``store``: one image, split by channel.

    Examples
    --------
    >>> [(data, kwargs, kind)] = layer_data(tiffstore.open("raw/"))  # doctest: +SKIP
    >>> kwargs["name"], kwargs["channel_axis"]  # doctest: +SKIP
    (['488 nm', '560 nm', '642 nm'], 0)
    """
    grid = AcquisitionGrid.of(store)
    limits = contrast_limits(store, grid)
    layer_dims = [d for i, d in enumerate(store.dims) if i != grid.channel_dim]
    kwargs: dict[str, Any] = {
        "rgb": False,
        "metadata": {
            "tiffstore": {"dims": list(store.dims), "source": store.attrs["tiffstore"]["source"]}
        },
    }
    scale = _scale(store, layer_dims)
    if scale is not None:
        kwargs["scale"] = scale
    if grid.channel_dim is None:
        kwargs["name"] = os.path.basename(str(store.attrs["tiffstore"]["source"]).rstrip("/"))
        kwargs["contrast_limits"] = limits[0]
    else:
        kwargs["channel_axis"] = grid.channel_dim
        kwargs["name"] = list(grid.channel_labels)
        kwargs["contrast_limits"] = limits
    logger.info("napari layers for %r: %s", store, kwargs["name"])
    return [(store.to_dask(), kwargs, "image")]

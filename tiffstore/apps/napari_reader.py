"""The napari reader: ``napari raw/`` opens the acquisition lazily, one layer per channel.

Declared in ``napari.yaml`` (npe2, registered under the ``napari.manifest`` entry
point). The data is one lazy dask array (:meth:`TiffStore.to_dask`) split into layers
along the channel dim (``channel_axis``), each named by its wavelength (``"488 nm"``)
or channel name, and coloured by it (:func:`tiffstore.colors.wavelength_colormap`:
405 blue, 488 green, 561 red, 642 magenta; napari's own cycle without wavelengths).
Each layer knows its dims (``axis_labels``: ``stack, z, y, x``), and, where the files
say, its voxel size and unit (``scale``, ``units``: ``micrometer``), so napari's
sliders, 3D axes and scale bar read in them.

Contrast limits are given up front from a bounded sample (:func:`contrast_limits`: a
few planes spread over the stacks and over ``z``, 0.1 and 99.9 percentiles), so napari
never scans the whole array; the contrast slider spans the dtype's range
(``contrast_limits_range`` is no ``Image`` argument in napari 0.9, so it travels in the
layer's metadata and is set on the layer as napari adds it). Channels blend additively
and render as maximum intensity projections in 3D. Per-stack timestamps (``msec``...)
are in each layer's ``metadata["tiffstore"]["coords"]``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tiffstore.apps.grid import AcquisitionGrid
from tiffstore.colors import wavelength_colormap
from tiffstore.detect import is_tiff_source, is_tiffstore_reference
from tiffstore.errors import TiffStoreError
from tiffstore.opening import open as open_store
from tiffstore.options import OpenOptions
from tiffstore.read.store import TiffStore

__all__ = [
    "PERCENTILES",
    "SAMPLE_PLANES",
    "contrast_limits",
    "get_reader",
    "layer_data",
    "read_acquisition",
    "sample_indices",
]

logger = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | Sequence[str]

#: Planes sampled per channel for the contrast limits: at most this many chunks read.
SAMPLE_PLANES = 8
#: The contrast limits: these percentiles of each sampled plane (the lowest low, the
#: highest high), so that a few hot pixels do not set them, and bright objects in any
#: sampled plane are not flat-topped.
PERCENTILES = (0.1, 99.9)


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """napari's reader hook: :func:`read_acquisition` if ``path`` is tiffstore's, else ``None``.

    ``path`` is a folder of TIFFs, a TIFF file, a list of TIFF files (opened together as
    one acquisition) or a reference file tiffstore wrote. Only paths that are clearly
    not tiffstore's (no TIFF in the folder, another format, a reference file another
    tool wrote) give ``None``, which napari reports as a bare refusal; a path that is
    tiffstore's but fails to open raises tiffstore's error from the reader instead,
    naming the file and what to do, which napari shows.
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
    path and nothing else) and return its napari layer data.

    A failure raises tiffstore's error with the path on its first line (napari's
    notification shows one line), the library's whole message after it.
    """
    source: Any = path if isinstance(path, (str, os.PathLike)) else list(path)
    if isinstance(source, list) and len(source) == 1:
        source = source[0]
    try:
        layers = layer_data(open_store(source, OpenOptions()))
    except TiffStoreError as error:
        first, _, rest = str(error).partition("\n")
        where = source if not isinstance(source, list) else f"{len(source)} files"
        message = f"tiffstore cannot open {where}: {first}"
        raise type(error)(f"{message}\n{rest}".rstrip()) from error
    _widen_contrast_ranges_in_viewer()
    return layers


# -- what napari's Image layer is given ---------------------------------------------


def _scale(store: TiffStore, dims: Sequence[str]) -> tuple[float, ...] | None:
    """Voxel size along ``dims`` from ``store.scale``, if the store has one.

    ``store.scale`` may map dim names to a number, to ``(number, unit)``, or to an object
    or dict with a ``value``; or be a sequence aligned with ``store.dims``. Dims it does
    not name get 1. Stores without ``scale`` give ``None`` (napari's default, 1).
    """
    scale = _scale_mapping(store)
    if not scale:
        return None

    def number(v: Any) -> float:
        if isinstance(v, (tuple, list)):
            v = v[0]
        v = v.get("value") if isinstance(v, Mapping) else getattr(v, "value", v)
        return float(v) if v is not None else 1.0

    out = tuple(number(scale[d]) if d in scale else 1.0 for d in dims)
    return None if all(v == 1.0 for v in out) else out


def _scale_mapping(store: TiffStore) -> Mapping[str, Any]:
    scale = getattr(store, "scale", None)
    if not scale:
        return {}
    if not isinstance(scale, Mapping):
        scale = dict(zip(store.dims, scale, strict=False))
    return scale


def _units(store: TiffStore, dims: Sequence[str]) -> tuple[str, ...] | None:
    """The unit of each of ``dims``: the store's (``micrometer``) where it has one,
    ``pixel`` elsewhere; ``None`` when no dim has one (napari's default, pixel)."""
    scale = _scale_mapping(store)

    def unit(v: Any) -> str | None:
        if isinstance(v, (tuple, list)) and len(v) > 1:
            return str(v[1]) if v[1] else None
        u = v.get("unit") if isinstance(v, Mapping) else getattr(v, "unit", None)
        return str(u) if u else None

    units = [unit(scale[d]) if d in scale else None for d in dims]
    if all(u is None for u in units):
        return None
    return tuple(u or "pixel" for u in units)


def _data_range(dtype: np.dtype[Any], limits: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The contrast slider's span: the dtype's range for integers, else the sampled one."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return min(lo for lo, _ in limits), max(hi for _, hi in limits)


def sample_indices(grid: AcquisitionGrid, channel: int | None) -> list[tuple[Any, ...]]:
    """Indices of the planes :func:`contrast_limits` reads for one channel.

    :data:`SAMPLE_PLANES` planes on a diagonal through the channel's cells that hold
    a file (the stacks, first to last) and every dim in the files other than the
    image plane (``z``, first to last): each plane from another stack and another
    ``z``. Planes in one chunk are read once, so at most that many chunks are read.
    """
    cells = [cell for cell in grid.cells(channel) if grid.present[cell]]
    if not cells:
        return []
    others = [
        d
        for d in range(len(grid.shape))
        if d not in grid.name_dims and d != grid.channel_dim and d not in grid.plane_dims
    ]
    k = SAMPLE_PLANES

    def spread(n: int, i: int) -> int:
        return round(i * (n - 1) / (k - 1)) if k > 1 else n // 2

    picks: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for i in range(k):
        fill = {d: spread(grid.shape[d], i) for d in others}
        index = grid.index(cells[spread(len(cells), i)], channel, fill)
        picks.setdefault(tuple(None if isinstance(j, slice) else j for j in index), index)
    return list(picks.values())


def contrast_limits(
    store: TiffStore, grid: AcquisitionGrid | None = None
) -> list[tuple[float, float]]:
    """``(low, high)`` per channel from a bounded sample: never the whole array.

    The sample is :func:`sample_indices`' planes; the limits are the lowest 0.1 and the
    highest 99.9 percentile of those planes (:data:`PERCENTILES`), NaN left out.
    """
    import dask

    grid = grid or AcquisitionGrid.of(store)
    array = store.to_dask()
    channels = [None] if grid.channel_dim is None else list(range(grid.n_channels))
    planes = [[array[i] for i in sample_indices(grid, c)] for c in channels]
    computed = dask.compute(*(p for per in planes for p in per))
    limits: list[tuple[float, float]] = []
    k = 0
    for per in planes:
        values = [np.asarray(v, dtype=np.float64) for v in computed[k : k + len(per)]]
        k += len(per)
        values = [v[np.isfinite(v)] for v in values]
        values = [v for v in values if v.size]
        if not values:
            limits.append((0.0, 1.0))
            continue
        lo = min(float(np.percentile(v, PERCENTILES[0])) for v in values)
        hi = max(float(np.percentile(v, PERCENTILES[1])) for v in values)
        limits.append((lo, hi if hi > lo else lo + 1))
    return limits


def layer_data(store: TiffStore) -> list[LayerData]:
    """napari layer data for ``store``: one image, split by channel.

    Examples
    --------
    >>> [(data, kwargs, kind)] = layer_data(tiffstore.open("raw/"))  # doctest: +SKIP
    >>> kwargs["name"], kwargs["colormap"], kwargs["axis_labels"][0]  # doctest: +SKIP
    (['488 nm', '560 nm', '642 nm'], ['green', 'red', 'magenta'], ('stack', 'z', 'y', 'x'))
    """
    grid = AcquisitionGrid.of(store)
    limits = contrast_limits(store, grid)
    data = store.to_dask()
    layer_dims = tuple(d for i, d in enumerate(store.dims) if i != grid.channel_dim)
    n = grid.n_channels
    data_range = _data_range(np.dtype(store.dtype), limits)
    metadata = [
        {
            "tiffstore": {
                "dims": list(store.dims),
                "source": store.attrs["tiffstore"]["source"],
                "channel": c,
                "wavelength": grid.channel_wavelengths[c] if grid.channel_wavelengths else None,
                "coords": {k: dict(v) for k, v in grid.cell_coords.items()},
                "contrast_limits_range": data_range,
            }
        }
        for c in range(n)
    ]
    # Per-layer lists, even where every layer gets the same value: napari splits a
    # sequence as long as the channel count into one item per layer.
    kwargs: dict[str, Any] = {
        "rgb": False,
        "axis_labels": [layer_dims] * n,
        "metadata": metadata,
        "rendering": "mip",
    }
    scale = _scale(store, layer_dims)
    if scale is not None:
        kwargs["scale"] = [scale] * n
    units = _units(store, layer_dims)
    if units is not None:
        kwargs["units"] = [units] * n
    if grid.channel_wavelengths:
        kwargs["colormap"] = [wavelength_colormap(nm) for nm in grid.channel_wavelengths]
    if grid.channel_dim is None:
        kwargs = {k: v[0] if isinstance(v, list) else v for k, v in kwargs.items()}
        kwargs["name"] = os.path.basename(str(store.attrs["tiffstore"]["source"]).rstrip("/"))
        kwargs["contrast_limits"] = limits[0]
    else:
        kwargs["channel_axis"] = grid.channel_dim
        kwargs["name"] = list(grid.channel_labels)
        kwargs["contrast_limits"] = limits
        kwargs["blending"] = ["additive"] * n
    logger.info("napari layers for %r: %s", store, kwargs["name"])
    return [(data, kwargs, "image")]


# -- the contrast slider's span, set as napari adds the layers ------------------------


def _widen_contrast_ranges_in_viewer() -> None:
    """Have napari's current viewer set each tiffstore layer's ``contrast_limits_range``
    from its metadata as the layer is added (napari sets it to the contrast limits)."""
    napari = sys.modules.get("napari")
    viewer = napari.current_viewer() if napari is not None else None
    if viewer is None:
        return
    emitter = viewer.layers.events.inserted
    if _set_contrast_range not in [getattr(cb, "__func__", cb) for cb in emitter.callbacks]:
        emitter.connect(_set_contrast_range)


def _set_contrast_range(event: Any) -> None:
    layer = event.value
    span = getattr(layer, "metadata", {}).get("tiffstore", {}).get("contrast_limits_range")
    if span is not None and hasattr(layer, "contrast_limits_range"):
        lo, hi = layer.contrast_limits
        layer.contrast_limits_range = (min(span[0], lo), max(span[1], hi))

"""The metadata of a materialize output: the group, the pixel arrays, the coordinates.

Written first, and kept on ``resume``: the group (marked incomplete), each pixel
array with the source's attributes and dims, the coordinate arrays of the live
store's group view (so ``xarray.open_zarr(out)`` shows them) and, with ``ome=True``,
OME-NGFF multiscales.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from tiffstore.outputs.materialize.job import Job
from tiffstore.outputs.materialize.ome import multiscales
from tiffstore.outputs.materialize.plan import Codec
from tiffstore.read.store import TiffStore

__all__ = ["Coordinates", "coordinates", "image_name", "write_metadata"]

#: Each coordinate array: name, values, attributes, fill value.
Coordinates = list[tuple[str, np.ndarray, dict[str, Any], Any]]


def coordinates(source: TiffStore) -> Coordinates:
    """The coordinate arrays of the source's group view: name, values, attributes, fill."""
    # The format 2 group view of the same files: its coordinates are what the copy holds,
    # whatever the source store's own format.
    view = source if source.zarr_format == 2 else TiffStore(source.manifest)
    group = zarr.open_group(view, mode="r")
    out = []
    for name in source.coords:
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        out.append((name, np.asarray(arr[...]), dict(arr.attrs), arr.metadata.fill_value))
    return out


def image_name(source: TiffStore) -> str:
    taken = set(source.dims) | set(source.coords)
    return "image" if "image" not in taken else "image_data"


def write_metadata(
    store: Any,
    source: TiffStore,
    job: Job,
    marker: dict[str, Any],
    codec: Codec,
    zarr_format: int,
    coords: Coordinates,
    axes: list[dict[str, str]],
    found: dict[str, Any] | None,
) -> Any:
    """The group (marked incomplete), the pixel arrays and the coordinates; kept on resume."""
    if found is None:
        attrs: dict[str, Any] = {"tiffstore": {"materialize": marker}}
        zarr.create_group(
            store,
            zarr_format=zarr_format,  # type: ignore[arg-type]
            attributes=attrs,
            overwrite=False,
        )
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    dims = marker["settings"]["dims"]
    dtype = job.dtype
    coord_names = [c[0] for c in coords if c[0] not in dims]
    fill = source.manifest.fill_value
    for plan in job.arrays:
        if plan.path in root:
            continue
        attributes: dict[str, Any] = {
            "tiffstore": {**source.attrs["tiffstore"], "materialize": {"complete": False}}
        }
        if coord_names:
            attributes["coordinates"] = " ".join(coord_names)
        if zarr_format == 2:
            attributes["_ARRAY_DIMENSIONS"] = list(dims)
        root.create_array(
            plan.path,
            shape=plan.shape,
            chunks=plan.chunks,
            shards=plan.shards,
            dtype=dtype,
            compressors=[codec.for_format(zarr_format, dtype.itemsize)],
            # Format 2: no fill value, so xarray does not mask real pixels equal to it
            # (chunks never written still read as 0).
            fill_value=None if zarr_format == 2 and fill == 0 else fill,
            dimension_names=dims if zarr_format == 3 else None,
            attributes=attributes,
        )
    for name, values, cattrs, cfill in coords:
        if name in root:
            continue
        if zarr_format == 3 and values.dtype.kind == "U":
            values = values.astype(object)  # format 3 stores text as variable-length strings
        carr = root.create_array(
            name,
            shape=values.shape,
            dtype=str if values.dtype == object else values.dtype,
            chunks=tuple(max(1, n) for n in values.shape),
            compressors=None,
            fill_value=cfill,
            dimension_names=tuple(cattrs.get("_ARRAY_DIMENSIONS", ()))
            if zarr_format == 3
            else None,
            attributes=(
                cattrs
                if zarr_format == 2
                else {k: v for k, v in cattrs.items() if k != "_ARRAY_DIMENSIONS"}
            ),
        )
        carr[...] = values
    if axes:
        factors = [2 if d in job.downsample_axes else 1 for d in range(len(dims))]
        # The voxel size from the files (or open(scale=...)) as the base scale, in units.
        scale = source.scale
        sizes = [scale[a["name"]][0] if a["name"] in scale else 1.0 for a in axes]
        axes = [dict(a, unit=scale[a["name"]][1]) if a["name"] in scale else a for a in axes]
        if zarr_format == 2:
            ms = multiscales("image", axes, job.arrays, factors, "0.4", sizes)
            root.attrs.update({"multiscales": [ms]})
        else:
            ms = multiscales("image", axes, job.arrays, factors, None, sizes)
            root.attrs.update({"ome": {"version": "0.5", "multiscales": [ms]}})
    return root

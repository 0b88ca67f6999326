"""The metadata of a materialize output: the group, the pixel arrays, the coordinates.

Written first, and kept on ``resume``: the group (marked incomplete), each pixel
array with the source's attributes and dims, the coordinate arrays of the live
store's group view (so ``xarray.open_zarr(out)`` shows them) and, with ``ome=True``,
OME-NGFF metadata (:func:`ome_attributes`): multiscales, a label, colour and window
per channel, and under :data:`OME_RECORD` how the source's dims became the image's
axes, the pixel size (or that it is unknown) and the coordinates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from tiffstore.outputs.materialize.job import Job, read_source
from tiffstore.outputs.materialize.ome import (
    OmeAxis,
    describe_axes,
    multiscales,
    omero,
    plan_axes,
)
from tiffstore.outputs.materialize.plan import Codec
from tiffstore.read.store import TiffStore

__all__ = [
    "OME_RECORD",
    "Coordinates",
    "coordinates",
    "image_name",
    "ome_attributes",
    "write_metadata",
]

logger = logging.getLogger(__name__)

#: The group attribute that records what ``ome=True`` did: the axes and why, the pixel
#: size, the coordinates. (``tiffstore`` itself is the materialize marker, which is
#: rewritten whole when the output is marked complete.)
OME_RECORD = "tiffstore_ome"
#: The display window of a channel is taken from at most this many pixels across
#: (a centred crop of one plane).
_WINDOW_PLANE = 2048

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
    """The group (marked incomplete), the pixel arrays and the coordinates; kept on resume.

    With ``axes`` (``ome=True``), the OME-NGFF attributes too (:func:`ome_attributes`).
    """
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
    ome = bool(axes)
    # OME-NGFF 0.4 stores chunks nested (``0/1/0/0/0``); zarr's format 2 default is flat.
    chunk_keys: dict[str, Any] | None = None
    if ome and zarr_format == 2:
        chunk_keys = {"name": "v2", "separator": "/"}
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
            chunk_key_encoding=chunk_keys,
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
    if ome:
        root.attrs.update(ome_attributes(source, job, zarr_format))
    return root


def ome_attributes(source: TiffStore, job: Job, zarr_format: int) -> dict[str, Any]:
    """The group's OME-NGFF attributes (0.4 for format 2, 0.5 for 3) and :data:`OME_RECORD`.

    Says what it does (logged, and kept in the record): the axis order and why, and
    where the files carry no pixel size, that the scales are per pixel with no unit.
    """
    axes = plan_axes(source.dims)
    notes = [describe_axes(source.dims, axes)]
    logger.info("%s", notes[0])
    scale = source.scale
    entries: list[dict[str, str]] = []
    sizes: list[float] = []
    pixel_size: dict[str, dict[str, Any] | None] = {}
    for a in axes:
        entry = a.entry()
        size, unit = scale.get(a.name, (1.0, "")) if a.type == "space" else (1.0, "")
        if a.type == "space":
            pixel_size[a.name] = {"size": size, "unit": unit} if a.name in scale else None
        if unit:
            entry["unit"] = unit
        entries.append(entry)
        sizes.append(size)
    unknown = [name for name, size in pixel_size.items() if size is None]
    if unknown:
        notes.append(
            f"The files carry no pixel size along {', '.join(unknown)}: the scale there is "
            "1 per pixel (times the downsampling), with no unit. Give the size with --scale "
            "(open(scale=...)), e.g. z=2,y=0.1,x=0.1 in micrometres."
        )
        logger.warning("%s", notes[-1])
    coords = _coords_in_order([a.name for a in axes], source.coords)
    for a in axes:
        if a.type == "time":
            stamps = [n for n, c in coords.items() if a.name in c["dims"] and n != a.name]
            notes.append(
                f"{a.name} is indexed 1 per time point, with no unit"
                + (f"; its time stamps are the coords {', '.join(stamps)}" if stamps else "")
                + "."
            )
    labels, wavelengths = _channels(source, axes, coords)
    windows = [_window(job, axes, c) for c in range(len(labels))]
    z = next((d for d, a in enumerate(axes) if a.name.lower() == "z"), None)
    factors = [2 if d in job.downsample_axes else 1 for d in range(len(axes))]
    version = "0.4" if zarr_format == 2 else None
    ms = multiscales("image", entries, job.arrays, factors, version, sizes)
    om = omero(
        labels, wavelengths, windows, version, 0 if z is None else job.arrays[0].shape[z] // 2
    )
    record = {
        "dims": [a.name for a in axes],
        "source_dims": list(source.dims),
        "axes": [
            {"name": a.name, "type": a.type, "source_index": a.source, "why": a.why} for a in axes
        ],
        "pixel_size": pixel_size,
        "coords": coords,
        "notes": notes,
    }
    if zarr_format == 2:
        return {"multiscales": [ms], "omero": om, OME_RECORD: record}
    return {"ome": {"version": "0.5", "multiscales": [ms], "omero": om}, OME_RECORD: record}


def _coords_in_order(dims: Sequence[str], coords: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The source's coordinates with their dims (and values) in the image's order."""
    out: dict[str, Any] = {}
    for name, c in coords.items():
        cdims = list(c["dims"])
        ordered = [d for d in dims if d in cdims]
        entry = dict(c)
        if ordered != cdims and len(ordered) == len(cdims):
            values = np.empty(np.shape(c["values"]), dtype=object)
            values[...] = c["values"]
            entry["dims"] = ordered
            entry["values"] = values.transpose([cdims.index(d) for d in ordered]).tolist()
        out[name] = entry
    return out


def _channels(
    source: TiffStore, axes: Sequence[OmeAxis], coords: dict[str, Any]
) -> tuple[list[str], list[float | None]]:
    """Each channel's label and wavelength (nm), from the coordinates along the channel.

    A wavelength is a numeric coordinate over the channel alone in ``nm``; the label
    is then ``"488 nm"``, else the channel's own value (``"ch 0"``, or its text).
    """
    channel = next((a for a in axes if a.type == "channel"), None)
    if channel is None:
        return ["image"], [None]
    n = source.shape[channel.source]
    own = coords.get(channel.name, {}).get("values")
    values = list(own) if own is not None and len(own) == n else list(range(n))
    wavelengths: list[float | None] = [None] * n
    for c in coords.values():
        found = c["values"]
        if (
            c["dims"] == [channel.name]
            and c.get("units") == "nm"
            and len(found) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in found)
        ):
            wavelengths = [float(v) for v in found]
            break
    labels = [
        f"{nm:g} nm" if nm is not None else (v if isinstance(v, str) else f"{channel.name} {v}")
        for v, nm in zip(values, wavelengths, strict=True)
    ]
    if len(set(labels)) < len(labels):  # two channels of one wavelength (two cameras, say)
        labels = [f"{label} ({channel.name} {v})" for label, v in zip(labels, values, strict=True)]
    return labels, wavelengths


def _window(job: Job, axes: Sequence[OmeAxis], channel: int) -> dict[str, float]:
    """A display window for one channel: the pixel range of the dtype (``min``/``max``)
    and the 0.1-99.9 percentiles of one plane (``start``/``end``).

    The plane is the channel's middle z of the first time point (a centred crop of
    at most ``_WINDOW_PLANE`` pixels across): one page read per channel.
    """
    shape = job.arrays[0].shape
    space = [d for d, a in enumerate(axes) if a.type == "space"]
    start, stop = [], []
    for d, (a, n) in enumerate(zip(axes, shape, strict=True)):
        if d in space[-2:]:
            lo = max(0, (n - _WINDOW_PLANE) // 2)
            start.append(lo)
            stop.append(min(n, lo + _WINDOW_PLANE))
        else:
            index = channel if a.type == "channel" else (n // 2 if a.type == "space" else 0)
            start.append(index)
            stop.append(index + 1)
    dtype = job.dtype
    if dtype.kind not in "iubf":  # complex pixels: no one range to show
        return {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}
    plane, _ = read_source(job.source, start, stop, job.order)
    if dtype.kind == "f":
        values = plane[np.isfinite(plane)]
        lo_value, hi_value = (values.min(), values.max()) if values.size else (0.0, 1.0)
    elif dtype.kind == "b":
        values, lo_value, hi_value = plane.astype(np.uint8), 0.0, 1.0
    else:
        values, lo_value, hi_value = plane, np.iinfo(dtype).min, np.iinfo(dtype).max
    first, last = 0.0, 0.0
    if values.size:
        first, last = (float(v) for v in np.percentile(values, (0.1, 99.9)))
    if dtype.kind in "iub":
        first, last = float(np.floor(first)), float(np.ceil(last))
    if not last > first:  # one value throughout (a missing file, a blank plane)
        first, last = float(lo_value), float(hi_value)
    return {"min": float(lo_value), "max": float(hi_value), "start": first, "end": last}

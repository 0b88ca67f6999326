"""OME-NGFF metadata of a materialize output: the axes' order and types, and multiscales."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tiffstore.errors import MaterializeError
from tiffstore.outputs.materialize.plan import ArrayPlan

__all__ = ["multiscales", "ome_axes"]

_OME_TYPES = {
    "t": "time",
    "time": "time",
    "stack": "time",
    "tp": "time",
    "timepoint": "time",
    "frame": "time",
    "c": "channel",
    "ch": "channel",
    "channel": "channel",
    "wavelength": "channel",
    "z": "space",
    "y": "space",
    "x": "space",
}
_OME_ORDER = {"time": 0, "channel": 1, "space": 2}


def ome_axes(dims: Sequence[str]) -> tuple[tuple[int, ...], list[dict[str, str]]]:
    """The OME-NGFF order of the dims (time, channel, space) and their axes entries."""
    types = [_OME_TYPES.get(d.lower()) for d in dims]
    unknown = [d for d, t in zip(dims, types, strict=True) if t is None]
    if unknown or len(dims) > 5 or types.count("time") > 1 or types.count("channel") > 1:
        raise MaterializeError(
            f"ome=True needs at most 5 dims, one time (t, stack), one channel (c, ch) and "
            f"z/y/x; the array's dims are {tuple(dims)}"
            + (f" ({', '.join(unknown)} fit none)" if unknown else "")
            + ". Write it without --ome, or open the source with a pattern that names them so."
        )
    order = tuple(sorted(range(len(dims)), key=lambda d: (_OME_ORDER[types[d] or ""], d)))
    return order, [{"name": dims[d], "type": types[d] or ""} for d in order]


def multiscales(
    name: str,
    axes: list[dict[str, str]],
    arrays: Sequence[ArrayPlan],
    factors: Sequence[int],
    version: str | None,
    sizes: Sequence[float] | None = None,
) -> dict[str, Any]:
    sizes = sizes or [1.0] * len(factors)
    datasets = [
        {
            "path": a.path,
            "coordinateTransformations": [
                {
                    "type": "scale",
                    "scale": [float(s * f**a.level) for s, f in zip(sizes, factors, strict=True)],
                }
            ],
        }
        for a in arrays
    ]
    doc: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if version:
        doc["version"] = version
    return doc

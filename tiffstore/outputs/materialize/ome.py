"""OME-NGFF metadata of a materialize output: the axes' order and types, multiscales, channels.

OME-NGFF 0.4 and 0.5 hold an image of 2 to 5 dims: at most one ``time`` axis, first;
then at most one ``channel`` axis *or* one axis of another (custom) type; then 2 or 3
``space`` axes. :func:`plan_axes` fits the source's dims into that, saying why for each,
or refuses; the rest is plain JSON: :func:`multiscales`, :func:`omero` (a label, a
colour and a display window per channel; the colour from
:func:`tiffstore.colors.wavelength_color`, re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tiffstore.colors import wavelength_color
from tiffstore.errors import MaterializeError
from tiffstore.names.axes import axis_kind
from tiffstore.outputs.materialize.plan import ArrayPlan

__all__ = [
    "OmeAxis",
    "describe_axes",
    "multiscales",
    "ome_axes",
    "omero",
    "plan_axes",
    "wavelength_color",
]

_SPACE = ("z", "y", "x")
#: Light-sheet microscopes name each volume of a time series ``stack0000``,
#: ``stack0001``...: with no time axis of its own, ``stack`` is the time axis.
_TIME_BY_CONVENTION = ("stack",)


@dataclass(frozen=True)
class OmeAxis:
    """One axis of the OME-NGFF image: its name, type (``None``: custom), source dim, why."""

    name: str
    type: str | None
    source: int
    why: str

    def entry(self) -> dict[str, str]:
        """The ``axes`` entry (a custom axis has no ``type``: the spec's null type)."""
        return {"name": self.name} if self.type is None else {"name": self.name, "type": self.type}


def plan_axes(dims: Sequence[str]) -> list[OmeAxis]:
    """The source's dims as OME-NGFF axes, in the order the output holds them.

    ``z``/``y``/``x`` are space (in the source's order); an axis the names call time
    (``t``, ``time``, ``tp``, ``frame``...) is time, or else ``stack`` (a light-sheet
    time point); an axis they call a channel (``c``, ``ch``, ``wavelength``...) is
    the channel. One axis left over takes the channel's place with no type, where
    there is no channel; more cannot be written as OME-NGFF and are refused.

    Examples
    --------
    >>> [(a.name, a.type) for a in plan_axes(("ch", "stack", "z", "y", "x"))]
    [('stack', 'time'), ('ch', 'channel'), ('z', 'space'), ('y', 'space'), ('x', 'space')]
    >>> [(a.name, a.type) for a in plan_axes(("tile", "y", "x"))]
    [('tile', None), ('y', 'space'), ('x', 'space')]
    """
    space = [d for d, name in enumerate(dims) if name.lower() in _SPACE]
    rest = [d for d in range(len(dims)) if d not in space]
    kinds = {d: axis_kind(dims[d]) for d in rest}
    times = [d for d in rest if kinds[d] == "time"][:1]
    time_why = "its name says time"
    if not times:
        times = [d for d in rest if dims[d].lower() in _TIME_BY_CONVENTION][:1]
        time_why = "a light-sheet stack is one volume of a time series, and nothing else is time"
    channels = [d for d in rest if kinds[d] == "channel"][:1]
    channel_why = "its name says channel"
    if not channels:
        others = [d for d in rest if d not in times]
        channels = others[:1] if len(others) == 1 else []
        channel_why = "no channel: the one axis of another type NGFF allows besides time and space"
    left = [d for d in rest if d not in times + channels]
    if left or len(dims) > 5 or not 2 <= len(space) <= 3:
        raise MaterializeError(
            f"ome=True needs 2 to 5 dims: z/y/x (2 or 3 of them) and at most one time "
            f"(t, stack), one channel (c, ch) or one other axis; the array's dims are "
            f"{tuple(dims)}"
            + (f" ({', '.join(dims[d] for d in left)} fit no place)" if left else "")
            + ". Write it without ome=True, or open only part of it, with include=, so "
            "that the extra axes take one value."
        )
    out = [OmeAxis(dims[d], "time", d, time_why) for d in times]
    out += [
        OmeAxis(dims[d], "channel" if kinds[d] == "channel" else None, d, channel_why)
        for d in channels
    ]
    out += [OmeAxis(dims[d], "space", d, "a pixel axis") for d in space]
    return out


def ome_axes(dims: Sequence[str]) -> tuple[tuple[int, ...], list[dict[str, str]]]:
    """The OME-NGFF order of the dims (as source dims) and their ``axes`` entries."""
    axes = plan_axes(dims)
    return tuple(a.source for a in axes), [a.entry() for a in axes]


def describe_axes(dims: Sequence[str], axes: Sequence[OmeAxis]) -> str:
    """One sentence: the order written, and each axis' type and why."""
    written = tuple(a.name for a in axes)
    moved = "" if written == tuple(dims) else f", transposed from the source's {tuple(dims)}"
    why = "; ".join(
        f"{a.name}: {a.type or 'custom (no type)'}, {a.why}" for a in axes if a.type != "space"
    )
    return (
        f"OME-NGFF orders axes time, channel, space: the image's dims are {written}{moved}"
        + (f" ({why})" if why else "")
        + "."
    )


def multiscales(
    name: str,
    axes: list[dict[str, str]],
    arrays: Sequence[ArrayPlan],
    factors: Sequence[int],
    version: str | None,
    sizes: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The ``multiscales`` entry: one scale per level, pixel size x downsampling.

    Where the pixel size is unknown it is 1: the scale is then, as the spec asks,
    the factor between a level and the first.
    """
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


def omero(
    labels: Sequence[str],
    wavelengths: Sequence[float | None],
    windows: Sequence[Mapping[str, float]],
    version: str | None,
    default_z: int = 0,
) -> dict[str, Any]:
    """The ``omero`` block: per channel its label, colour (white without a wavelength)
    and display window (``min``/``max``: the pixel range; ``start``/``end``: shown)."""
    channels = [
        {
            "label": label,
            "color": "FFFFFF" if nm is None else wavelength_color(nm),
            "active": True,
            "coefficient": 1,
            "family": "linear",
            "inverted": False,
            "window": dict(window),
        }
        for label, nm, window in zip(labels, wavelengths, windows, strict=True)
    ]
    doc: dict[str, Any] = {
        "channels": channels,
        "rdefs": {"defaultT": 0, "defaultZ": default_z, "model": "color"},
    }
    if version:
        doc["version"] = version
    return doc

"""The axes of the virtual array: name axes, coordinates, and what kind each axis is.

These are values of the array model (:mod:`tiffstore.manifest.model`); the naming
stage (:func:`tiffstore.names.grid.understand_names`) makes them from file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "CHANNEL_LABELS",
    "SPACE_LABELS",
    "TIME_LABELS",
    "Axis",
    "AxisKind",
    "Coordinate",
    "Value",
    "axis_kind",
]

AxisKind = Literal["channel", "time", "space", "other"]
Value = int | str

CHANNEL_LABELS = frozenset({"c", "ch", "chan", "channel", "w", "wl", "wave", "wavelength"})
TIME_LABELS = frozenset({"t", "tp", "time", "timepoint", "frame", "datetime"})
#: Spatial labels; ``tile`` is a position in space too, so tiles stay their own axes
#: (renamed ``tile_x``... where a file has the same dim) rather than being mixed
#: into the pixel axes.
SPACE_LABELS = frozenset({"x", "y", "z", "tile"})


def axis_kind(label: str) -> AxisKind:
    """The OME-NGFF axis type a label implies: ``channel``, ``time``, ``space`` or ``other``.

    Examples
    --------
    >>> axis_kind("ch"), axis_kind("T"), axis_kind("z"), axis_kind("stack")
    ('channel', 'time', 'space', 'other')
    """
    low = label.lower()
    if low in CHANNEL_LABELS:
        return "channel"
    if low in TIME_LABELS:
        return "time"
    if low in SPACE_LABELS:
        return "space"
    return "other"


@dataclass(frozen=True)
class Axis:
    """An axis of the array that comes from the file names."""

    name: str
    kind: AxisKind
    values: tuple[Value, ...]
    label: str | None = None
    units: str | None = None

    @property
    def size(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Coordinate:
    """Values of a name field over some of the name axes (``None`` where no file)."""

    name: str
    dims: tuple[str, ...]
    values: tuple[Any, ...]
    units: str | None = None

    def as_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """The values as an object array of ``shape`` (the sizes of ``dims``)."""
        arr = np.empty(len(self.values), dtype=object)
        arr[:] = list(self.values)
        return arr.reshape(shape)

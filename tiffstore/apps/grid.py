"""The acquisition's grid as a viewer sees it: channels, cells with data, labels, planes.

The napari reader and ``tiffstore preview`` show the same things: one channel per
layer or row, a label per channel from its wavelength or name, which cells of the
file grid hold a file, and where the image plane is. This module reads all of it
from a store's attributes (``attrs["tiffstore"]``), so it works on any store
:func:`tiffstore.open` returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiffstore.errors import TiffStoreError
from tiffstore.read.store import TiffStore

__all__ = ["AcquisitionGrid", "evenly_spaced"]


def evenly_spaced(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included (all if fewer).

    Examples
    --------
    >>> evenly_spaced(199, 5)
    [0, 50, 99, 148, 198]
    >>> evenly_spaced(3, 8)
    [0, 1, 2]
    """
    if k is None or k <= 0 or n <= k:
        return list(range(n))
    if k == 1:
        return [n // 2]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _label_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class AcquisitionGrid:
    """What a viewer needs to know about a store's dims.

    Attributes
    ----------
    dims, shape
        The array's dims and shape.
    name_dims
        Indices of the dims that come from the file names (one file per cell).
    channel_dim
        Index of the channel dim (from the names or inside the files), or ``None``.
    plane_dims
        Indices of the two dims of an image plane (``y``, ``x``).
    present
        Over ``name_dims``: ``True`` where the cell has a file.
    channel_labels
        One label per channel: ``"488 nm"`` from a wavelength, the channel name, or
        ``"ch 0"``.
    channel_wavelengths
        One wavelength (nm) per channel where a coordinate over the channel gives them,
        else empty.
    cell_coords
        The coordinates with one value per cell (timestamps over ``ch``/``stack``...):
        name -> ``{"dims", "values", "units"}``, as in ``attrs["tiffstore"]["coords"]``.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    name_dims: tuple[int, ...]
    channel_dim: int | None
    plane_dims: tuple[int, int]
    present: np.ndarray
    channel_labels: tuple[str, ...]
    axis_values: Mapping[str, Sequence[Any]]
    cell_coords: Mapping[str, Mapping[str, Any]]
    channel_wavelengths: tuple[float, ...] = ()

    @classmethod
    def of(cls, store: TiffStore) -> AcquisitionGrid:
        """The grid of ``store``, from its attributes."""
        desc = store.attrs["tiffstore"]
        dims = tuple(store.dims)
        axes = {a["name"]: a for a in desc["axes"]}
        name_dims = tuple(i for i, d in enumerate(dims) if axes[d]["source"] == "name")
        kinds = [axes[d]["kind"] for d in dims]
        channel_dim = next((i for i, k in enumerate(kinds) if k == "channel"), None)
        spatial = [i for i in range(len(dims)) if i not in name_dims and i != channel_dim]
        if len(spatial) < 2:
            spatial = [i for i in range(len(dims)) if i not in name_dims]
        if len(spatial) < 2:
            shape = dict(zip(dims, store.shape, strict=True))
            raise TiffStoreError(f"{store!r}: the array {shape} has no 2-d image plane to show")
        named = [i for i in spatial if dims[i].lower() in ("y", "x")]
        # y and x by name, so that a samples dim after them (y, x, s) is not taken.
        plane = (named[0], named[1]) if len(named) == 2 else (spatial[-2], spatial[-1])
        values = {d: a["values"] for d, a in axes.items() if "values" in a}
        if channel_dim is not None:
            values.setdefault(dims[channel_dim], list(range(store.shape[channel_dim])))
        present = np.ones(tuple(store.shape[i] for i in name_dims), dtype=bool)
        lookup = {
            dims[i]: {_label_value(v): k for k, v in enumerate(values[dims[i]])} for i in name_dims
        }
        for cell in store.manifest.missing():
            if set(cell) != set(lookup):
                continue  # a stitched tile axis: the cell is part of a larger one
            where = tuple(lookup[dims[i]].get(_label_value(cell[dims[i]])) for i in name_dims)
            if None not in where:
                present[where] = False
        labels: tuple[str, ...] = ()
        wavelengths: tuple[float, ...] = ()
        if channel_dim is not None:
            labels = _channel_labels(dims[channel_dim], values[dims[channel_dim]], desc["coords"])
            wave = _wavelength_coord(dims[channel_dim], desc["coords"])
            if wave is not None and all(isinstance(v, (int, float)) for v in wave["values"]):
                wavelengths = tuple(float(v) for v in wave["values"])
        name_dim_names = {dims[i] for i in name_dims}
        channel_only = [dims[channel_dim]] if channel_dim is not None else None
        cell_coords = {
            name: c
            for name, c in desc["coords"].items()
            if name not in dims and set(c["dims"]) <= name_dim_names and c["dims"] != channel_only
        }
        return cls(
            dims,
            tuple(store.shape),
            name_dims,
            channel_dim,
            plane,
            present,
            labels,
            values,
            cell_coords,
            wavelengths,
        )

    @property
    def n_channels(self) -> int:
        return 1 if self.channel_dim is None else self.shape[self.channel_dim]

    def cells(self, channel: int | None) -> list[tuple[int, ...]]:
        """Cells (indices over ``name_dims``) of one channel, in grid order."""
        ranges = [
            [channel] if d == self.channel_dim and channel is not None else range(self.shape[d])
            for d in self.name_dims
        ]
        return [tuple(cell) for cell in itertools.product(*ranges)]

    def index(
        self, cell: Sequence[int], channel: int | None, fill: Mapping[int, Any]
    ) -> tuple[Any, ...]:
        """A full index into the array: the cell, the channel, ``fill[dim]`` elsewhere."""
        out: list[Any] = []
        for d in range(len(self.dims)):
            if d in self.name_dims:
                out.append(cell[self.name_dims.index(d)])
            elif d == self.channel_dim:
                out.append(channel)
            else:
                out.append(fill.get(d, slice(None)))
        return tuple(out)

    def cell_label(self, cell: Sequence[int], skip: int | None = None) -> str:
        """``"stack=3, x=1"``: the axis values of a cell, the channel dim left out."""
        parts = []
        for d, k in zip(self.name_dims, cell, strict=True):
            if d == skip:
                continue
            parts.append(f"{self.dims[d]}={_label_value(self.axis_values[self.dims[d]][k])}")
        return ", ".join(parts)

    def cell_coordinates(self, cell: Sequence[int]) -> str:
        """``"msec=10123 ms"``: the values of :attr:`cell_coords` at a cell (none if missing)."""
        at = {self.dims[d]: k for d, k in zip(self.name_dims, cell, strict=True)}
        parts = []
        for name, coord in self.cell_coords.items():
            value: Any = coord["values"]
            for d in coord["dims"]:
                value = value[at[d]]
            if value is not None and value == value:  # None or NaN: no file there
                parts.append(f"{name}={_label_value(value)} {coord.get('units', '')}".rstrip())
        return ", ".join(parts)


def _per_channel(
    channel_name: str, coords: Mapping[str, Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    return {
        name: c
        for name, c in coords.items()
        if c["dims"] == [channel_name] and name != channel_name
    }


def _wavelength_coord(
    channel_name: str, coords: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The coordinate over the channel alone that holds wavelengths (by name or ``nm``)."""
    return next(
        (
            c
            for name, c in _per_channel(channel_name, coords).items()
            if "wave" in name.lower() or c.get("units") == "nm"
        ),
        None,
    )


def _channel_labels(
    channel_name: str, values: Sequence[Any], coords: Mapping[str, Mapping[str, Any]]
) -> tuple[str, ...]:
    """A label per channel: its wavelength, its name, or ``ch 0``."""
    per_channel = _per_channel(channel_name, coords)
    wave = _wavelength_coord(channel_name, coords)
    if wave is not None:
        units = wave.get("units", "")
        return tuple(f"{_label_value(v)} {units}".strip() for v in wave["values"])
    named = next(
        (c for c in per_channel.values() if all(isinstance(v, str) for v in c["values"])), None
    )
    if named is not None:
        return tuple(str(v) for v in named["values"])
    if all(isinstance(v, str) for v in values):
        return tuple(str(v) for v in values)
    return tuple(f"{channel_name} {_label_value(v)}" for v in values)

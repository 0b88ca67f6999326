"""Physical pixel size: what a TIFF's metadata says one voxel measures.

Read, in this order of trust, from OME-XML (``PhysicalSizeX/Y/Z`` and their units),
ImageJ metadata (``XResolution``/``YResolution`` in pixels per ``unit``, and
``spacing`` between planes) and the TIFF resolution tags (``XResolution``,
``YResolution`` with a ``ResolutionUnit`` of inch or centimetre). tifffile does the
parsing; units are written as OME-NGFF names them (``micrometer``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import tifffile

__all__ = ["VoxelSize", "read_voxel_size"]

#: Unit spellings found in TIFF metadata -> OME-NGFF unit names.
UNIT_NAMES: dict[str, str] = {
    "µm": "micrometer",
    "\u03bcm": "micrometer",
    "um": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometer": "micrometer",
    "micrometre": "micrometer",
    "\\u00b5m": "micrometer",
    "nm": "nanometer",
    "nanometer": "nanometer",
    "mm": "millimeter",
    "millimeter": "millimeter",
    "cm": "centimeter",
    "centimeter": "centimeter",
    "m": "meter",
    "meter": "meter",
    "inch": "inch",
    "in": "inch",
    "å": "angstrom",
    "angstrom": "angstrom",
}


def unit_name(text: str | None) -> str | None:
    """The OME-NGFF name of a length unit as metadata spell it, or ``None`` if unknown.

    Examples
    --------
    >>> unit_name("micron"), unit_name("µm"), unit_name("pixel")
    ('micrometer', 'micrometer', None)
    """
    if not text:
        return None
    return UNIT_NAMES.get(text.strip().lower())


@dataclass(frozen=True)
class VoxelSize:
    """The size of one voxel along ``z``, ``y``, ``x``: ``(value, unit)`` or ``None``.

    Examples
    --------
    >>> v = VoxelSize(z=(2.0, "micrometer"), x=(0.1, "micrometer"))
    >>> v.as_dict()
    {'z': (2.0, 'micrometer'), 'x': (0.1, 'micrometer')}
    """

    z: tuple[float, str] | None = None
    y: tuple[float, str] | None = None
    x: tuple[float, str] | None = None

    def as_dict(self) -> dict[str, tuple[float, str]]:
        """The known sizes, ``dim -> (value, unit)``."""
        return {d: v for d in ("z", "y", "x") if (v := getattr(self, d)) is not None}

    def __bool__(self) -> bool:
        return bool(self.as_dict())


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _from_ome(xml: str) -> VoxelSize:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return VoxelSize()
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return VoxelSize()
    sizes: dict[str, tuple[float, str]] = {}
    for dim in ("z", "y", "x"):
        value = _positive(pixels.get(f"PhysicalSize{dim.upper()}"))
        # OME's default unit is the micrometre.
        unit = unit_name(pixels.get(f"PhysicalSize{dim.upper()}Unit") or "µm")
        if value is not None and unit is not None:
            sizes[dim] = (value, unit)
    return VoxelSize(**sizes)


def _resolution(page: tifffile.TiffPage, tag: str) -> float | None:
    """Pixels per unit from a resolution tag (a rational)."""
    found = page.tags.get(tag)
    if found is None:
        return None
    value = found.value
    if isinstance(value, tuple) and len(value) == 2:
        return _positive(value[0] / value[1]) if value[1] else None
    return _positive(value)


def _from_resolution(page: tifffile.TiffPage, imagej: dict[str, Any] | None) -> VoxelSize:
    sizes: dict[str, tuple[float, str]] = {}
    resunit = page.tags.get("ResolutionUnit")
    code = int(resunit.value) if resunit is not None else 2  # the TIFF default is inch
    unit = {2: "inch", 3: "centimeter", 4: "millimeter", 5: "micrometer"}.get(code)
    if imagej is not None and code == 1:
        # ImageJ writes no resolution unit and names it in its own metadata.
        unit = unit_name(imagej.get("unit"))
    if unit is not None:
        for dim, tag in (("y", "YResolution"), ("x", "XResolution")):
            per_unit = _resolution(page, tag)
            if per_unit is not None:
                sizes[dim] = _micrometers(1 / per_unit, unit)
    if imagej is not None:
        spacing = _positive(imagej.get("spacing"))
        z_unit = unit_name(imagej.get("unit"))
        if spacing is not None and z_unit is not None:
            sizes["z"] = (spacing, z_unit)
    return VoxelSize(**sizes)


def _micrometers(value: float, unit: str) -> tuple[float, str]:
    """Inches and centimetres (TIFF's own resolution units) in micrometres."""
    factor = {"inch": 25_400.0, "centimeter": 10_000.0, "millimeter": 1_000.0}.get(unit)
    return (value * factor, "micrometer") if factor else (value, unit)


def read_voxel_size(tif: tifffile.TiffFile) -> VoxelSize:
    """What one voxel of the file's first series measures, as far as its metadata says.

    OME-XML wins over ImageJ metadata, which wins over the bare resolution tags; a
    dim that one source leaves out is taken from the next. Resolution tags without
    a unit (``ResolutionUnit`` none and no ImageJ ``unit``) say nothing physical and
    are ignored.

    Examples
    --------
    >>> with tifffile.TiffFile("stack.tif") as tif:  # doctest: +SKIP
    ...     read_voxel_size(tif)
    VoxelSize(z=(2.0, 'micrometer'), y=(0.1, 'micrometer'), x=(0.1, 'micrometer'))
    """
    sources: list[VoxelSize] = []
    if tif.is_ome and tif.ome_metadata:
        sources.append(_from_ome(tif.ome_metadata))
    if tif.pages:
        page = tif.pages.first
        imagej = tif.imagej_metadata if tif.is_imagej else None
        sources.append(_from_resolution(page, imagej))
    merged: dict[str, tuple[float, str]] = {}
    for source in reversed(sources):
        merged.update(source.as_dict())
    return VoxelSize(**merged)

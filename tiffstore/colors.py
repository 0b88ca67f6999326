"""The colour a channel shows in, from its wavelength: one place for every viewer and writer.

Two mappings, both by wavelength in nanometres (shorter is bluer):

* :func:`wavelength_color`: the hue of the light itself, as ``RRGGBB``; the OME-NGFF
  ``omero`` channel colour that ``materialize`` writes.
* :func:`wavelength_colormap`: a napari colormap name by band, the way Fiji's channel
  LUTs and most microscope software colour fluorescence: blue (DAPI, 405), cyan (CFP,
  445), green (GFP, 488), yellow (YFP, 514/532), red (RFP, 561/594), magenta (far red,
  640/642 and beyond). Bands, rather than the hue, keep 560 nm apart from 488 nm and
  642 nm apart from 560 nm, as an overlay of the usual three or four channels needs.
"""

from __future__ import annotations

__all__ = ["WAVELENGTH_BANDS", "wavelength_color", "wavelength_colormap"]

#: ``(upper bound in nm, napari colormap)``, in order: a wavelength below the first
#: bound that it is under takes that band's colormap; at or above the last: magenta.
WAVELENGTH_BANDS: tuple[tuple[float, str], ...] = (
    (430.0, "blue"),
    (470.0, "cyan"),
    (505.0, "green"),
    (550.0, "yellow"),
    (620.0, "red"),
)


def wavelength_colormap(nm: float) -> str:
    """The napari colormap of a fluorescence channel at ``nm`` (see :data:`WAVELENGTH_BANDS`).

    Examples
    --------
    >>> [wavelength_colormap(nm) for nm in (405, 445, 488, 514, 561, 642)]
    ['blue', 'cyan', 'green', 'yellow', 'red', 'magenta']
    """
    w = float(nm)
    return next((name for bound, name in WAVELENGTH_BANDS if w < bound), "magenta")


def wavelength_color(nm: float) -> str:
    """The colour of light of a wavelength, as ``RRGGBB``: the hue of the spectrum.

    Dan Bruton's piecewise-linear approximation of the visible spectrum (380-780 nm,
    gamma 0.8), without its dimming toward either end, so that a channel shows bright:
    wavelengths below 380 nm show as violet, above 780 nm as red.

    Examples
    --------
    >>> [wavelength_color(nm) for nm in (405, 488, 560, 642, 730)]
    ['A600FF', '00F7FF', 'C3FF00', 'FF1600', 'FF0000']
    """
    w = min(max(float(nm), 380.0), 780.0)
    if w < 440:
        rgb = ((440 - w) / 60, 0.0, 1.0)
    elif w < 490:
        rgb = (0.0, (w - 440) / 50, 1.0)
    elif w < 510:
        rgb = (0.0, 1.0, (510 - w) / 20)
    elif w < 580:
        rgb = ((w - 510) / 70, 1.0, 0.0)
    elif w < 645:
        rgb = (1.0, (645 - w) / 65, 0.0)
    else:
        rgb = (1.0, 0.0, 0.0)
    return "".join(f"{round(255 * c**0.8):02X}" for c in rgb)

"""A contact sheet of what was understood: one maximum projection per channel and stack.

``tiffstore preview SOURCE out.png`` (or :func:`write_preview`) draws one row per
channel and one column per cell of the other name axes (stacks, time points, tiles),
each cell the maximum-intensity projection of its file's planes, labelled with the
parsed coordinates, so a wrong reading of the names shows at a glance. Missing files
are marked. Cost is bounded whatever the acquisition's size: at most ``max_columns``
columns (evenly spaced) and ``max_planes`` planes per projection (evenly spaced) are
read, and only those planes; each projection is shrunk by block maximum to ``tile``
pixels on its long side. Each row gets its own contrast (0.5-99.5 percentiles of its
projections).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from PIL import Image, ImageDraw, ImageFont

from tiffstore.apps.grid import AcquisitionGrid, evenly_spaced
from tiffstore.errors import OutputError
from tiffstore.read.store import TiffStore

__all__ = ["Preview", "PreviewCell", "block_max", "to_gray", "write_preview"]

logger = logging.getLogger(__name__)

MISSING_FILL = (70, 0, 0)
MISSING_MARK = (230, 40, 40)
BACKGROUND = (24, 24, 24)
TEXT = (230, 230, 230)
DIM_TEXT = (150, 150, 150)


def block_max(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink a 2-d image by ``factor`` taking the maximum of each block (edge blocks padded).

    Examples
    --------
    >>> block_max(np.arange(9).reshape(3, 3), 2).tolist()
    [[4, 5], [7, 8]]
    """
    if factor <= 1:
        return image
    h, w = image.shape
    hp, wp = -h % factor, -w % factor
    if hp or wp:
        image = np.pad(image, ((0, hp), (0, wp)), mode="edge")
    return image.reshape(image.shape[0] // factor, factor, image.shape[1] // factor, factor).max(
        axis=(1, 3)
    )


def to_gray(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` mapped linearly from ``[lo, hi]`` onto 0-255 (clipped), as ``uint8``."""
    scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PreviewCell:
    """One drawn cell: its place in the grid, its box in the picture, what it shows."""

    row: int
    column: int
    index: tuple[int, ...]
    box: tuple[int, int, int, int]
    missing: bool
    label: str


@dataclass(frozen=True)
class Preview:
    """What :func:`write_preview` drew, for tests and ``--json``."""

    path: Path
    size: tuple[int, int]
    row_labels: tuple[str, ...]
    column_labels: tuple[str, ...]
    columns_total: int
    cells: tuple[PreviewCell, ...]
    projected_dims: tuple[str, ...]
    planes: tuple[tuple[int, ...], ...]
    planes_total: int
    downsample: int
    contrast: tuple[tuple[float, float], ...]
    seconds: float = field(default=0.0, compare=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "path": str(self.path),
            "size": list(self.size),
            "rows": list(self.row_labels),
            "columns": list(self.column_labels),
            "columns_total": self.columns_total,
            "projected_dims": list(self.projected_dims),
            "planes": [list(p) for p in self.planes],
            "planes_total": self.planes_total,
            "downsample": self.downsample,
            "contrast": [list(c) for c in self.contrast],
            "missing": [c.label for c in self.cells if c.missing],
            "seconds": round(self.seconds, 3),
        }


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: a fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` cut (with an ellipsis) to ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


Job = tuple[int, int, tuple[int, ...], int | None]  # row, column, cell, channel


def _read_projections(
    store: TiffStore,
    grid: AcquisitionGrid,
    jobs: list[Job],
    depth: list[int],
    planes: list[tuple[int, ...]],
    factor: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> dict[tuple[int, int], np.ndarray]:
    """(row, column) -> the cell's max projection over ``planes``, shrunk by ``factor``.

    Each worker holds one plane and one running maximum at a time.
    """
    array = zarr.open_array(store, mode="r")
    total = len(jobs) * len(planes)
    done = 0
    lock = threading.Lock()

    def project(job: Job) -> np.ndarray:
        nonlocal done
        _, _, cell, channel = job
        result: np.ndarray | None = None
        for plane in planes:
            index = grid.index(cell, channel, dict(zip(depth, plane, strict=True)))
            data = np.asarray(array[index])
            result = data if result is None else np.maximum(result, data, out=result)
            with lock:
                done += 1
                if progress is not None:
                    progress(done, total)
        assert result is not None
        return block_max(result, factor)

    if progress is not None:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(((r, k) for r, k, _, _ in jobs), pool.map(project, jobs), strict=True))


def _row_contrast(projections: Sequence[np.ndarray]) -> tuple[float, float]:
    """0.5 and 99.5 percentiles of a row's projections (``hi > lo`` always)."""
    values = np.concatenate([v.ravel() for v in projections]) if projections else np.zeros(1)
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        values = np.zeros(1)
    lo, hi = (float(p) for p in np.percentile(values, [0.5, 99.5]))
    return lo, hi if hi > lo else lo + 1.0


def _caption(
    dims: Sequence[str],
    depth: Sequence[int],
    n_planes: int,
    planes_total: int,
    n_columns: int,
    columns_total: int,
    factor: int,
) -> str:
    """What the picture leaves out, said in the picture."""
    if not depth:
        projected = "one plane per cell (nothing to project)"
    elif n_planes < planes_total:
        projected = f"{n_planes} of {planes_total} planes, evenly spaced"
    else:
        projected = f"all {planes_total} planes"
    if depth:
        projected = f"max projection over {', '.join(dims[d] for d in depth)}: {projected}"
    shown = (
        f"{n_columns} of {columns_total} columns shown, evenly spaced"
        if n_columns < columns_total
        else f"all {n_columns} columns"
    )
    shrunk = f"shrunk {factor}x by block max" if factor > 1 else "full resolution"
    return f"{projected}; {shown}; {shrunk}"


def write_preview(
    store: TiffStore,
    out: str | Path,
    *,
    max_columns: int = 8,
    max_planes: int = 16,
    tile: int = 256,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> Preview:
    """Draw a contact sheet of ``store``: one maximum projection per channel and stack.

    Parameters
    ----------
    store
        The acquisition (:func:`tiffstore.open`; ``chunks="page"`` makes each plane read
        read only that plane).
    out
        The picture to write (PNG, or any format Pillow writes by its suffix).
    max_columns
        Most columns: cells of the name axes other than the channel (stacks, time
        points...), evenly spaced, first and last included. ``0`` for all.
    max_planes
        Most planes read per projection, evenly spaced along the dims projected
        (``z``...); the caption says how many. ``0`` for all.
    tile
        Long side of each cell in pixels; projections are shrunk by block maximum.
    workers
        Threads reading planes.
    progress
        Called with ``(planes read, planes to read)`` as reading goes on.

    Returns
    -------
    Preview
        The picture's size, each cell's box, the planes read and the contrast per row.

    Examples
    --------
    >>> store = tiffstore.open("raw/", chunks="page")  # doctest: +SKIP
    >>> write_preview(store, "preview.png").size  # doctest: +SKIP
    (2196, 858)
    """
    t0 = time.perf_counter()
    out = Path(out)
    grid = AcquisitionGrid.of(store)
    dims, shape = grid.dims, grid.shape

    # -- what to read: sampled columns, sampled planes ------------------------
    other = [d for d in grid.name_dims if d != grid.channel_dim]
    other_shape = tuple(shape[d] for d in other)
    columns_total = math.prod(other_shape)
    columns = [
        tuple(int(i) for i in np.unravel_index(k, other_shape)) if other else ()
        for k in evenly_spaced(columns_total, max_columns)
    ]
    depth = [
        d
        for d in range(len(dims))
        if d not in grid.name_dims and d != grid.channel_dim and d not in grid.plane_dims
    ]
    depth_shape = tuple(shape[d] for d in depth)
    planes_total = math.prod(depth_shape)
    planes = [
        tuple(int(i) for i in np.unravel_index(k, depth_shape)) if depth else ()
        for k in evenly_spaced(planes_total, max_planes)
    ]
    channels: list[int | None] = (
        [None] if grid.channel_dim is None else list(range(grid.n_channels))
    )

    def full_cell(channel: int | None, column: tuple[int, ...]) -> tuple[int, ...]:
        by_dim = dict(zip(other, column, strict=True))
        if grid.channel_dim in grid.name_dims and channel is not None:
            by_dim[grid.channel_dim] = channel
        return tuple(by_dim[d] for d in grid.name_dims)

    jobs: list[Job] = [
        (r, k, full_cell(c, col), c)
        for r, c in enumerate(channels)
        for k, col in enumerate(columns)
    ]
    h, w = (shape[d] for d in grid.plane_dims)
    factor = max(1, math.ceil(max(h, w) / max(1, tile)))
    present = [j for j in jobs if not grid.name_dims or grid.present[j[2]]]
    shrunk = _read_projections(store, grid, present, depth, planes, factor, workers, progress)
    contrast = [
        _row_contrast([v for (row, _), v in shrunk.items() if row == r])
        for r in range(len(channels))
    ]

    # -- layout ----------------------------------------------------------------
    th, tw = math.ceil(h / factor), math.ceil(w / factor)
    pad, gap = 10, 6
    font, small = _font(14), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_labels = tuple(grid.channel_labels) if grid.channel_dim is not None else ("",)
    column_labels = tuple(
        grid.cell_label(full_cell(channels[0], col), skip=grid.channel_dim) for col in columns
    )
    label_w = max(
        [int(probe.textlength(t, font=font)) for t in row_labels]
        + [int(probe.textlength(f"{lo:.5g}-{hi:.5g}", font=small)) for lo, hi in contrast]
        + [0]
    )
    left = pad + label_w + (gap * 2 if label_w else 0)
    top = pad + 2 * 20 + 18
    under = 14 if grid.cell_coords else 0  # a line under each cell for its timestamps
    pitch = th + under + gap
    width = max(left + len(columns) * (tw + gap) - gap + pad, 480)
    height = top + len(channels) * pitch - gap + pad + 2 * 18
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    # -- drawing ---------------------------------------------------------------
    source = store.attrs["tiffstore"]["source"]
    title = f"{source}  " + " x ".join(f"{d}={n}" for d, n in zip(dims, shape, strict=True))
    caption = _caption(dims, depth, len(planes), planes_total, len(columns), columns_total, factor)
    draw.text((pad, pad), _fit(draw, title, font, width - 2 * pad), fill=TEXT, font=font)
    draw.text(
        (pad, pad + 20), _fit(draw, caption, small, width - 2 * pad), fill=DIM_TEXT, font=small
    )
    for k, label in enumerate(column_labels):
        x0 = left + k * (tw + gap)
        draw.text((x0, top - 18), _fit(draw, label, small, tw), fill=TEXT, font=small)
    cells: list[PreviewCell] = []
    for r, k, cell, _ in jobs:
        x0, y0 = left + k * (tw + gap), top + r * pitch
        lo, hi = contrast[r]
        if k == 0:
            draw.text((pad, y0), row_labels[r], fill=TEXT, font=font)
            draw.text((pad, y0 + 20), f"{lo:.5g}-{hi:.5g}", fill=DIM_TEXT, font=small)
        box = (x0, y0, x0 + tw, y0 + th)
        projection = shrunk.get((r, k))
        if projection is None:
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=MISSING_FILL)
            draw.line((box[0], box[1], box[2] - 1, box[3] - 1), fill=MISSING_MARK, width=3)
            draw.line((box[0], box[3] - 1, box[2] - 1, box[1]), fill=MISSING_MARK, width=3)
            draw.text((x0 + 4, y0 + 4), "missing", fill=TEXT, font=small)
        else:
            gray = to_gray(projection, lo, hi)
            sheet.paste(Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB"), box[:2])
        coordinates = grid.cell_coordinates(cell)
        if under and coordinates:
            draw.text(
                (x0, y0 + th + 1), _fit(draw, coordinates, small, tw), fill=DIM_TEXT, font=small
            )
        parts = (row_labels[r], grid.cell_label(cell, skip=grid.channel_dim), coordinates)
        label = ", ".join(p for p in parts if p)
        cells.append(PreviewCell(r, k, cell, box, projection is None, label))
    n_missing = int((~grid.present).sum()) if grid.name_dims else 0
    footer = (
        f"{n_missing} missing file(s) in the whole grid (drawn cells marked in red)"
        if n_missing
        else "no missing files"
    )
    draw.text(
        (pad, height - pad - 16),
        _fit(draw, footer, small, width - 2 * pad),
        fill=MISSING_MARK if n_missing else DIM_TEXT,
        font=small,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        sheet.save(out)
    except (OSError, ValueError) as exc:  # no such folder, no permission, unknown suffix
        raise OutputError(f"{out}: cannot write the picture ({exc}).") from exc
    seconds = time.perf_counter() - t0
    logger.info("preview of %r written to %s in %.1f s", store, out, seconds)
    return Preview(
        path=out,
        size=sheet.size,
        row_labels=row_labels,
        column_labels=column_labels,
        columns_total=columns_total,
        cells=tuple(cells),
        projected_dims=tuple(dims[d] for d in depth),
        planes=tuple(planes),
        planes_total=planes_total,
        downsample=factor,
        contrast=tuple(contrast),
        seconds=seconds,
    )

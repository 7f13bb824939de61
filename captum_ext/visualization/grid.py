"""A comparison grid: images (rows) x methods (columns)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from captum_ext.visualization._convert import ImageLike, MapLike, map_to_tensor, split_batch
from captum_ext.visualization._display import (
    COLORBAR_LABELS,
    Display,
    check_axes,
    new_figure,
    resolve_sign,
    root_figure,
)
from captum_ext.visualization.overlay import draw_overlay

__all__ = ["comparison_grid"]

_RESERVED = ("ax", "title", "colorbar")
_RELATIVE = {  # colour limits and tick labels of a shared colorbar, per sign rule
    "all": ((-1.0, 1.0), [-1.0, 0.0, 1.0], ["\u2212max", "0", "+max"]),
    "positive": ((0.0, 1.0), [0.0, 1.0], ["0", "max"]),
    "absolute": ((0.0, 1.0), [0.0, 1.0], ["0", "max"]),
    "negative": ((-1.0, 0.0), [-1.0, 0.0], ["\u2212max", "0"]),
}


def _method_columns(maps: Mapping[str, Any], count: int) -> dict[str, list[MapLike | None]]:
    if not isinstance(maps, Mapping) or len(maps) == 0:
        raise TypeError("maps must be a non-empty mapping {method name: maps (N, 1, *S) or a sequence of N maps}.")
    columns = {}
    for name, column in maps.items():
        entries = split_batch(column, f"maps[{name!r}]")
        if len(entries) != count:
            raise ValueError(f"maps[{name!r}] has {len(entries)} maps for {count} images: the batch sizes must match.")
        columns[str(name)] = entries
    return columns


def _column_sign(entries: list[MapLike | None], name: str) -> str:
    """``sign="auto"`` for a whole column: one colour scheme per method, decided on all its maps."""
    raws = []
    for row, entry in enumerate(entries):
        if entry is not None:
            try:
                raws.append(map_to_tensor(entry, 2).flatten().numpy())
            except ValueError as error:
                raise ValueError(f"method {name!r}, image {row}: {error}") from error
    return resolve_sign(np.concatenate(raws), "auto") if raws else "positive"


def _given_axes(fig: Figure | None, axes: Any, rows: int, cols: int) -> np.ndarray | None:
    """The caller's Axes (``axes=``, or a grid made in ``fig=``), or None to make a new figure."""
    if axes is not None:
        grid = np.asarray(axes, dtype=object)
        if grid.size != rows * cols:
            raise ValueError(f"axes has {grid.size} Axes; this grid needs {rows} x {cols} (images x (methods + 1)).")
        grid = grid.reshape(rows, cols)
        for panel in grid.ravel():
            check_axes(panel, "axes[i, j]")
        return grid
    if fig is not None:
        return np.asarray(fig.subplots(rows, cols, squeeze=False), dtype=object)
    return None


def _fixed_layout(fig: Figure, grid: np.ndarray, cell: float, font: float, title_lines: int,
                  labelled: bool, colorbars: int) -> list[Axes]:
    """Size a new figure to the grid (inches per cell fixed) and return the colorbar Axes.

    A fixed layout instead of constrained layout: it is deterministic and several times faster
    for a 6 x 9 grid (constrained layout measures every Axes' tight bbox).
    """
    rows, cols = grid.shape
    gap, bar_width, bar_step = 0.08, 0.14, 0.95
    left, right, bottom = (0.4 if labelled else 0.1), 0.15 + colorbars * bar_step, 0.1
    top = title_lines * font * 1.35 / 72.0 + 0.15
    grid_width, grid_height = cols * cell + (cols - 1) * gap, rows * cell + (rows - 1) * gap
    width, height = left + grid_width + right, bottom + grid_height + top
    fig.set_size_inches(width, height)
    fig.subplots_adjust(  # our own new figure: its subplot parameters are ours to set
        left=left / width, right=(left + grid_width) / width, bottom=bottom / height,
        top=(bottom + grid_height) / height, wspace=gap / cell, hspace=gap / cell,
    )
    bar_height = min(grid_height, max(2.0, 0.6 * grid_height))
    y0 = bottom + (grid_height - bar_height) / 2
    return [fig.add_axes(((left + grid_width + 0.15 + index * bar_step) / width, y0 / height,
                          bar_width / width, bar_height / height)) for index in range(colorbars)]


def comparison_grid(
    images: ImageLike | Sequence[ImageLike],
    maps: Mapping[str, Any],
    *,
    row_labels: Sequence[str] | None = None,
    method_titles: Mapping[str, str] | None = None,
    image_title: str = "image",
    colorbar: bool | str = "shared",
    cell_size: float = 1.8,
    fig: Figure | None = None,
    axes: Any = None,
    **overlay_kwargs: Any,
) -> Figure:
    """Images (rows) x methods (columns), the first column the plain image; returns the Figure.

    Example (what ``captum-ext demo`` does)::

        fig = comparison_grid(images, {"Grad-CAM": cams (N, 1, 7, 7), ...},
                              row_labels=["cat", ...],
                              method_titles={"Grad-CAM": "Grad-CAM\\n12 ms/img"})
        fig.savefig("grid.png", dpi=150)

    Args:
        images: a batch ``(N, C, H, W)`` or a sequence of N images (see :func:`overlay_heatmap`).
        maps: ``{method name: maps}`` where maps is a tensor ``(N, 1, *S)`` / ``(N, C, H, W)``, an
            array, or a sequence of N single maps; a ``None`` entry draws the image with "no map"
            (e.g. a method that failed on that image). Columns follow the mapping's order.
        row_labels: one label per image, written left of the row.
        method_titles: column titles, e.g. ``{"Grad-CAM": "Grad-CAM\\n12 ms/img\\ndel 0.12"}``
            (times and metrics are formatted by the caller); a method without an entry is titled
            by its name. A key that is not in ``maps`` raises ``ValueError``.
        image_title: title of the first column.
        colorbar: ``"shared"``/``True`` (default): one colorbar per colour scheme used, in relative
            units (each map is scaled to its own max |value|); ``"each"``: one per cell; ``False``:
            none.
        cell_size: inches per cell of a new figure, which grows with the grid (6 images x 8 methods:
            about 18 x 12 in with the default 1.8).
        fig: draw into this (empty) Figure instead of a new one (its size and layout are kept).
        axes: or into this array of ``N x (M + 1)`` Axes.
        **overlay_kwargs: ``interpolation``, ``sign``, ``cmap``, ``alpha``, ``contour_top_percent``,
            ``contour_color``, ``outlier_perc``, ``rescale_image`` of :func:`overlay_heatmap`.
            ``sign="auto"`` (the default) is decided per method on all of its maps, so that a
            column uses one colour scheme (diverging if any of its maps is signed).
    """
    for name in _RESERVED:
        if name in overlay_kwargs:
            raise TypeError(f"comparison_grid does not take {name!r}; use axes=/fig=, method_titles= and colorbar=.")
    if colorbar not in (True, False, None, "shared", "each"):
        raise ValueError(f"colorbar must be 'shared', 'each' or False, got {colorbar!r}.")
    shared = colorbar in (True, "shared")
    image_list = split_batch(images, "images")
    rows = len(image_list)
    if rows == 0:
        raise ValueError("images is empty.")
    columns = _method_columns(maps, rows)
    titles = dict(method_titles or {})
    unknown = sorted(set(titles) - set(columns))
    if unknown:
        raise ValueError(f"method_titles names method(s) {unknown} that are not in maps ({list(columns)}).")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{rows} images but {len(row_labels)} row labels.")
    if cell_size <= 0:
        raise ValueError(f"cell_size must be positive, got {cell_size}.")

    col_titles = [image_title] + [titles.get(name, name) for name in columns]
    title_lines = max(str(text).count("\n") + 1 for text in col_titles)
    font = 10 if len(columns) <= 4 else 8
    grid = _given_axes(fig, axes, rows, len(columns) + 1)
    created = grid is None
    if grid is None:
        grid = np.asarray(new_figure((1.0, 1.0)).subplots(rows, len(columns) + 1, squeeze=False), dtype=object)

    sign = overlay_kwargs.pop("sign", "auto")
    cell_kwargs = {
        name: {**overlay_kwargs, "sign": _column_sign(entries, name) if sign == "auto" else sign}
        for name, entries in columns.items()
    }
    drawn: dict[tuple[str, str], Display] = {}
    for row, image in enumerate(image_list):
        try:
            draw_overlay(grid[row, 0], image, None, colorbar=False, missing_note=None,
                         rescale_image=overlay_kwargs.get("rescale_image", False))
        except ValueError as error:
            raise ValueError(f"image {row}: {error}") from error
        for col, (name, entries) in enumerate(columns.items(), start=1):
            try:
                display = draw_overlay(grid[row, col], image, entries[row], colorbar=colorbar == "each",
                                       note_fontsize=font - 1, **cell_kwargs[name])
            except ValueError as error:
                raise ValueError(f"method {name!r}, image {row}: {error}") from error
            if display is not None and display.norm is not None:
                drawn.setdefault((display.sign, display.cmap.name), display)
    for col, text in enumerate(col_titles):
        grid[0, col].set_title(text, fontsize=font)
    if row_labels is not None:
        for row, label in enumerate(row_labels):
            grid[row, 0].set_ylabel(str(label), fontsize=font + 1)

    figure = root_figure(grid[0, 0])
    schemes = list(drawn.items()) if shared else []
    if created:
        bar_axes = _fixed_layout(figure, grid, cell_size, font, title_lines, row_labels is not None, len(schemes))
    for index, ((sign, _), display) in enumerate(schemes):
        limits, ticks, labels = _RELATIVE[sign]
        mappable = ScalarMappable(norm=Normalize(*limits), cmap=display.cmap)
        if created:
            bar = figure.colorbar(mappable, cax=bar_axes[index])
        else:
            bar = figure.colorbar(mappable, ax=list(grid[:, 1:].ravel()), shrink=0.8, aspect=30, pad=0.01)
        bar.set_ticks(ticks, labels=labels, fontsize=font)
        bar.set_label(f"{COLORBAR_LABELS[sign]}, per-map scale", fontsize=font)
    return figure

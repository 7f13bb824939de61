"""Heatmap overlays of layer-resolution attribution maps on images."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from captum_ext.visualization._convert import (
    ImageLike,
    MapLike,
    image_to_hwc,
    map_to_tensor,
    split_batch,
    upsample_map,
)
from captum_ext.visualization._display import (
    Display,
    check_axes,
    clear_ticks,
    draw_contour,
    draw_note,
    new_figure,
    prepare_display,
    root_figure,
    top_region,
)

__all__ = ["overlay_batch", "overlay_heatmap"]

_CELL_INCHES = 4.0


def draw_overlay(
    ax: Axes,
    image: ImageLike,
    attribution: MapLike | None,
    *,
    interpolation: str = "bilinear",
    sign: str = "auto",
    cmap: str | Colormap | None = None,
    alpha: float = 0.5,
    colorbar: bool = True,
    contour_top_percent: float | None = None,
    contour_color: str = "white",
    outlier_perc: float = 0.0,
    title: str | None = None,
    rescale_image: bool = False,
    note_fontsize: float = 9,
    missing_note: str | None = "no map",
) -> Display | None:
    """Draw one overlay into ``ax`` and return what was drawn (None when ``attribution`` is None)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    picture = image_to_hwc(image, rescale=rescale_image)
    display = None
    if attribution is not None:
        raw = map_to_tensor(attribution, 2)
        upsampled = upsample_map(raw, picture.shape[:2], interpolation)
        display = prepare_display(raw.numpy(), upsampled, sign, cmap, outlier_perc)
    if picture.shape[-1] == 1:
        ax.imshow(picture[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(picture)
    clear_ticks(ax)
    if title is not None:
        ax.set_title(title)
    if display is None:
        if missing_note:
            draw_note(ax, missing_note, note_fontsize)
        return None
    if display.norm is None:
        draw_note(ax, display.note or "nothing to show", note_fontsize)
        return display
    heat = ax.imshow(display.values, cmap=display.cmap, norm=display.norm, alpha=alpha)
    if contour_top_percent is not None:
        draw_contour(ax, top_region(display, contour_top_percent), contour_color)
    if colorbar:
        bar = root_figure(ax).colorbar(heat, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label(display.label)
        bar.solids.set_alpha(1.0)
    return display


def overlay_heatmap(
    image: ImageLike,
    attribution: MapLike,
    ax: Axes | None = None,
    *,
    interpolation: str = "bilinear",
    sign: str = "auto",
    cmap: str | Colormap | None = None,
    alpha: float = 0.5,
    colorbar: bool = True,
    contour_top_percent: float | None = None,
    contour_color: str = "white",
    outlier_perc: float = 0.0,
    title: str | None = None,
    rescale_image: bool = False,
) -> Figure:
    """Overlay one attribution map on its image and return the Figure.

    Args:
        image: a torch tensor ``(C, H, W)`` / ``(1, C, H, W)`` / ``(H, W)``, or a NumPy array
            ``(H, W, C)`` / ``(H, W)`` (Captum's channels-last convention); floats in [0, 1] (or
            [0, 255]), integers in [0, 255].
        attribution: one map at any resolution: a Captum layer map ``(1, 1, h, w)``, ``(1, h, w)``,
            ``(h, w)``, an input attribution ``(1, C, H, W)``, or a NumPy ``(H, W)`` / ``(H, W, C)``
            array. Channels are summed (as in ``visualize_image_attr``).
        ax: draw into this Axes (a colorbar steals space from it); a new Figure otherwise.
        interpolation: how the map is resized to the image (``torch.nn.functional.interpolate``):
            ``"bilinear"`` (default; ``align_corners=False``), ``"bicubic"``, ``"nearest"``, ``"area"``.
        sign: ``"auto"`` (signed maps as ``"all"``, one-signed maps as their sign), ``"positive"``,
            ``"negative"``, ``"absolute"`` (Captum's ``"absolute_value"`` is accepted) or ``"all"``.
            ``"auto"`` decides on the raw map, so bicubic overshoot does not make a CAM signed.
        cmap: colormap; default diverging ``RdBu_r`` centred at 0 for ``"all"``, sequential
            ``inferno`` for one-signed maps (``inferno_r`` for negative maps: brightest = most negative).
        alpha: opacity of the heatmap over the image.
        colorbar: add a colorbar (in the map's own units).
        contour_top_percent: outline the region holding the top ``k`` % of |values| (e.g. 20).
        contour_color: colour of that outline.
        outlier_perc: clip the colour scale so that this percentage of the attribution mass saturates
            (Captum's ``outlier_perc``; default 0: full colour at max |value|).
        title: Axes title.
        rescale_image: min-max rescale an image outside [0, 1] (e.g. mean/std-normalised) instead
            of raising.

    An all-zero map (or no value of the chosen sign) is drawn as the plain image with a note, where
    Captum's ``visualize_image_attr`` raises ``AssertionError``. NaN/Inf maps raise ``ValueError``.
    """
    if ax is None:
        height, width = image_to_hwc(image, rescale=rescale_image).shape[:2]
        size = (_CELL_INCHES * width / height + (1.0 if colorbar else 0.2), _CELL_INCHES + 0.4)
        ax = new_figure(size, layout="constrained").add_subplot()
    check_axes(ax)
    draw_overlay(
        ax, image, attribution, interpolation=interpolation, sign=sign, cmap=cmap, alpha=alpha,
        colorbar=colorbar, contour_top_percent=contour_top_percent, contour_color=contour_color,
        outlier_perc=outlier_perc, title=title, rescale_image=rescale_image,
    )
    return root_figure(ax)


def overlay_batch(
    images: ImageLike | Sequence[ImageLike],
    attributions: MapLike | Sequence[MapLike],
    ax: Sequence[Axes] | np.ndarray | None = None,
    *,
    ncols: int | None = None,
    titles: Sequence[str] | None = None,
    **overlay_kwargs: Any,
) -> Figure:
    """Overlay a batch: ``images`` ``(N, C, H, W)`` (or a sequence of images) with ``attributions``
    ``(N, 1, h, w)`` (or a sequence of maps), one panel each, ``ncols`` per row (default up to 4).

    ``ax`` may be a sequence (or array) of exactly N Axes. Other keywords go to
    :func:`overlay_heatmap`. Raises ``ValueError`` when the batch sizes differ.
    """
    image_list = split_batch(images, "images")
    map_list = split_batch(attributions, "attributions")
    count = len(image_list)
    if count == 0:
        raise ValueError("images is empty.")
    if len(map_list) != count:
        raise ValueError(f"{count} images but {len(map_list)} attribution maps: the batch sizes must match.")
    if titles is not None and len(titles) != count:
        raise ValueError(f"{count} images but {len(titles)} titles.")
    for forbidden in ("title", "ax"):
        if forbidden in overlay_kwargs:
            raise TypeError(f"overlay_batch got {forbidden!r}: use titles= (one per image) and ax= (N Axes).")
    if ax is None:
        columns = min(count, 4) if ncols is None else int(ncols)
        if columns < 1:
            raise ValueError(f"ncols must be >= 1, got {ncols}.")
        rows = math.ceil(count / columns)
        extra = 1.0 if overlay_kwargs.get("colorbar", True) else 0.2
        fig = new_figure(((_CELL_INCHES * 0.75 + extra) * columns, (_CELL_INCHES * 0.75 + 0.4) * rows),
                         layout="constrained")
        grid = np.asarray(fig.subplots(rows, columns, squeeze=False), dtype=object).ravel()
        for unused in grid[count:]:
            unused.set_axis_off()
        panels = list(grid[:count])
    else:
        panels = list(np.asarray(ax, dtype=object).ravel())
        if len(panels) != count:
            raise ValueError(f"ax has {len(panels)} Axes for {count} images; pass exactly one Axes per image.")
    for index, (panel, image, attribution) in enumerate(zip(panels, image_list, map_list)):
        try:
            overlay_heatmap(image, attribution, check_axes(panel, "ax[i]"),
                            title=None if titles is None else titles[index], **overlay_kwargs)
        except ValueError as error:
            raise ValueError(f"example {index}: {error}") from error
    return root_figure(panels[0])

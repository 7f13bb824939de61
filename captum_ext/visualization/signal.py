"""1D data: a signal with its attribution shaded behind it and plotted under it."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from captum_ext.visualization._convert import MapLike, as_array, check_finite, map_to_tensor, upsample_map
from captum_ext.visualization._display import draw_note, panel_axes, prepare_display

__all__ = ["plot_signal_attribution"]


def _signal_channels(signal: MapLike) -> np.ndarray:
    array, _ = as_array(signal, "signal")
    shape = tuple(array.shape)
    if array.ndim == 3:
        if shape[0] != 1:
            raise ValueError(f"signal has shape {shape}, a batch of {shape[0]}: pass one signal (C, L).")
        array = array[0]
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"signal has shape {shape}; expected (L,), (C, L) or (1, C, L) (channels first).")
    array = array.astype(np.float64)
    check_finite(array, "signal")
    return array


def plot_signal_attribution(
    signal: MapLike,
    attribution: MapLike,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    interpolation: str = "linear",
    sign: str = "auto",
    cmap: str | Colormap | None = None,
    alpha: float = 0.4,
    colorbar: bool = True,
    channel_names: Sequence[str] | None = None,
    outlier_perc: float = 0.0,
    title: str | None = None,
) -> Figure:
    """Plot a 1D signal with its attribution shaded behind it, and the attribution curve under it.

    Args:
        signal: ``(L,)``, ``(C, L)`` or ``(1, C, L)`` (torch or NumPy, channels first as for
            ``Conv1d``); one line per channel.
        attribution: a layer map ``(1, 1, L')``, ``(1, L')`` or ``(L',)``, or an input attribution
            ``(C, L)`` (channels are summed); resized to ``L`` with ``interpolation`` (``"linear"``,
            ``"nearest"`` or ``"area"``).
        ax: one Axes (split into the two panels) or a pair of Axes (signal, attribution); a new
            Figure otherwise.
        sign, cmap, outlier_perc: as in :func:`overlay_heatmap` (the shading's colours).
        alpha: opacity of the shading behind the signal.
        colorbar: add a colorbar for the shading.
        channel_names: legend names, one per channel.
        title: title above the signal panel.

    An all-zero attribution draws the signal unshaded with a note; NaN/Inf raise ``ValueError``.
    """
    channels = _signal_channels(signal)
    length = channels.shape[1]
    if channel_names is not None and len(channel_names) != channels.shape[0]:
        raise ValueError(f"signal has {channels.shape[0]} channels but {len(channel_names)} channel_names.")
    raw = map_to_tensor(attribution, 1)
    display = prepare_display(raw.numpy(), upsample_map(raw, (length,), interpolation), sign, cmap, outlier_perc)

    fig, parent, (top, bottom), _ = panel_axes(ax, 2, (8.0, 4.0), vertical=True, ratios=[2.4, 1.0])
    steps = np.arange(length)
    low, high = float(channels.min()), float(channels.max())
    margin = 0.05 * (high - low) if high > low else 0.5
    if display.norm is not None:
        shading = top.imshow(display.values[None, :], aspect="auto", cmap=display.cmap, norm=display.norm,
                             alpha=alpha, extent=(-0.5, length - 0.5, low - margin, high + margin),
                             interpolation="nearest", zorder=0)
    palette = colormaps["tab10"]
    for index, channel in enumerate(channels):
        name = channel_names[index] if channel_names is not None else f"channel {index}"
        top.plot(steps, channel, color=palette(index % 10) if channels.shape[0] > 1 else "black",
                 linewidth=1.2, label=name, zorder=2)
    top.set_xlim(-0.5, length - 0.5)
    top.set_ylim(low - margin, high + margin)
    top.set_ylabel("signal")
    top.tick_params(labelbottom=False)
    if channels.shape[0] > 1 or channel_names is not None:
        top.legend(fontsize=8, loc="upper right")
    if title is not None:
        top.set_title(title)

    values = display.values
    bottom.axhline(0.0, color="grey", linewidth=0.8)
    bottom.fill_between(steps, 0.0, values, where=values >= 0, color="tab:red", alpha=0.6, linewidth=0,
                        interpolate=True)
    bottom.fill_between(steps, 0.0, values, where=values <= 0, color="tab:blue", alpha=0.6, linewidth=0,
                        interpolate=True)
    bottom.plot(steps, values, color="black", linewidth=0.8)
    bottom.set_xlim(-0.5, length - 0.5)
    bottom.set_xlabel("position")
    bottom.set_ylabel("attribution", fontsize=8)
    if display.norm is None:
        draw_note(bottom, display.note or "nothing to show")
    elif colorbar:
        bar = fig.colorbar(shading, ax=parent if parent is not None else [top, bottom], fraction=0.04, pad=0.02)
        bar.set_label(display.label, fontsize=8)
        bar.solids.set_alpha(1.0)
    return fig

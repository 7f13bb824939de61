"""Deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018) with their areas.

The curves are passed as plain arrays (a score per fraction of pixels removed or inserted, per
example), so this module does not depend on how a metric computed them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from captum_ext.visualization._display import check_axes, new_figure, root_figure

__all__ = ["curve_area", "plot_deletion_insertion"]

CurveLike = Union[Tensor, np.ndarray, Sequence[float], Sequence[Sequence[float]]]


def _as_curves(scores: CurveLike, name: str) -> np.ndarray:
    """``(T,)`` or ``(N, T)`` scores as a float ``(N, T)`` array, checked."""
    array = scores.detach().cpu().numpy() if isinstance(scores, Tensor) else np.asarray(scores)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be numeric (T,) or (N, T) scores, got dtype {array.dtype}.")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] < 2 or array.shape[0] < 1:
        raise ValueError(
            f"{name} has shape {tuple(np.shape(scores))}; expected (T,) or (N, T) scores: one per "
            "fraction (T >= 2), per example."
        )
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or Inf scores.")
    return array


def _fractions(fractions: CurveLike | None, steps: int, name: str) -> np.ndarray:
    if fractions is None:
        return np.linspace(0.0, 1.0, steps)
    grid = fractions.detach().cpu().numpy() if isinstance(fractions, Tensor) else np.asarray(fractions)
    grid = grid.astype(np.float64).ravel()
    if grid.size != steps:
        raise ValueError(f"fractions has {grid.size} values but {name} has {steps} scores per curve.")
    if not np.isfinite(grid).all() or np.any(np.diff(grid) < 0):
        raise ValueError("fractions must be finite and non-decreasing.")
    return grid


def curve_area(scores: CurveLike, fractions: CurveLike | None = None) -> float:
    """Area under the mean curve by the trapezoid rule over ``fractions`` (default: T steps evenly
    spaced on [0, 1]), the deletion/insertion AUC of Petsiuk et al. (2018)."""
    curves = _as_curves(scores, "scores")
    grid = _fractions(fractions, curves.shape[1], "scores")
    mean = curves.mean(axis=0)
    return float(np.sum((mean[1:] + mean[:-1]) * np.diff(grid)) / 2.0)


def _named(scores: CurveLike | Mapping[str, CurveLike] | None, label: str | None) -> dict[str, Any]:
    if scores is None:
        return {}
    if isinstance(scores, Mapping):
        return {str(key): value for key, value in scores.items()}
    return {label or "": scores}


def plot_deletion_insertion(
    deletion_scores: CurveLike | Mapping[str, CurveLike] | None,
    insertion_scores: CurveLike | Mapping[str, CurveLike] | None = None,
    fractions: CurveLike | None = None,
    ax: Axes | None = None,
    *,
    label: str | None = None,
    title: str | None = None,
    show_examples: bool = False,
    spread: bool = True,
    ylabel: str = "class score",
) -> Figure:
    """Plot deletion (solid) and insertion (dashed) curves with their areas in the legend.

    Args:
        deletion_scores: scores after removing the top fraction of pixels, ``(T,)`` or ``(N, T)``
            (N examples), or ``{method name: scores}`` to compare methods (one colour per method).
            ``None`` to plot insertion only.
        insertion_scores: the same for insertion (pixels of the top fraction inserted into a
            baseline); ``None`` to plot deletion only.
        fractions: the ``T`` fractions of pixels (x axis); default ``linspace(0, 1, T)``.
        ax: draw into this Axes; a new Figure otherwise.
        label: legend prefix for a single (non-mapping) curve, e.g. a method name.
        title: Axes title.
        show_examples: also draw each example's curve (thin lines).
        spread: shade +-1 standard deviation across examples when N > 1.
        ylabel: y-axis label.

    The legend gives each curve's area (:func:`curve_area`, the mean curve's AUC; lower is better
    for deletion, higher for insertion).
    """
    deletion = _named(deletion_scores, label)
    insertion = _named(insertion_scores, label)
    if not deletion and not insertion:
        raise ValueError("pass deletion_scores, insertion_scores, or both.")
    if ax is None:
        ax = new_figure((6.0, 4.2), layout="constrained").add_subplot()
    check_axes(ax)
    methods = list(dict.fromkeys([*deletion, *insertion]))
    palette = colormaps["tab10"]
    colours = {name: palette(index % 10) for index, name in enumerate(methods)}
    for kind, curves_by_method, style in (("deletion", deletion, "-"), ("insertion", insertion, "--")):
        for name, scores in curves_by_method.items():
            field = f"{kind}_scores" + (f"[{name!r}]" if name else "")
            curves = _as_curves(scores, field)
            grid = _fractions(fractions, curves.shape[1], field)
            mean = curves.mean(axis=0)
            colour = colours[name] if len(methods) > 1 else palette(0 if kind == "deletion" else 1)
            if show_examples:
                for curve in curves:
                    ax.plot(grid, curve, style, color=colour, linewidth=0.6, alpha=0.3)
            if spread and curves.shape[0] > 1:
                std = curves.std(axis=0)
                ax.fill_between(grid, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
            area = curve_area(curves, grid)
            text = f"{name} {kind}" if name else kind
            ax.plot(grid, mean, style, color=colour, linewidth=2.0, label=f"{text} (AUC {area:.3f})")
    ax.set_xlabel("fraction of pixels deleted / inserted")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title is not None:
        ax.set_title(title)
    return root_figure(ax)

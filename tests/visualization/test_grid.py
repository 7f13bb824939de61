"""The comparison grid: images x methods, in the form ``captum-ext demo`` calls it."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from captum_ext.visualization import comparison_grid
from tests.visualization._render import axes_pixels, half_map


def _images(count: int, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, size, size, generator=generator)


def _cell_axes(fig: Figure, rows: int, cols: int) -> np.ndarray:
    """The grid's Axes (colorbars excluded), rows x cols, in drawing order."""
    cells = [ax for ax in fig.axes if ax.images or ax.texts or ax.get_title()]
    return np.asarray(cells[: rows * cols], dtype=object).reshape(rows, cols)


def test_demo_call_six_images_by_eight_methods(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    names = [f"Method {k}" for k in range(8)]
    maps = {name: torch.rand(6, 1, 7, 7, generator=generator) for name in names}
    maps["Method 2"] = maps["Method 2"] - 0.5  # a signed method
    titles = {name: f"{name}\n{12 + k} ms/img" for k, name in enumerate(names)}
    fig = comparison_grid(_images(6), maps, row_labels=[f"photo {i}" for i in range(6)], method_titles=titles)
    path = tmp_path / "grid.png"
    fig.savefig(path, dpi=40)
    png = mpimg.imread(path)
    width, height = fig.get_size_inches()
    assert abs(png.shape[0] - height * 40) <= 1 and abs(png.shape[1] - width * 40) <= 1
    assert width >= 9 * 1.5 and height >= 6 * 1.5  # the figure grows with the grid: legible cells
    assert png[..., :3].std() > 0.1
    cells = _cell_axes(fig, 6, 9)
    assert [ax.get_title() for ax in cells[0]] == ["image"] + [titles[name] for name in names]
    assert [ax.get_ylabel() for ax in cells[:, 0]] == [f"photo {i}" for i in range(6)]
    assert all(len(ax.images) == 1 for ax in cells[:, 0]) and all(len(ax.images) == 2 for ax in cells[:, 1:].ravel())
    colorbars = [ax for ax in fig.axes if ax not in set(cells.ravel())]
    assert len(colorbars) == 2  # shared: one sequential (positive maps), one diverging (the signed one)


def test_figure_size_scales_with_the_grid() -> None:
    small = comparison_grid(_images(2), {k: torch.rand(2, 1, 4, 4) for k in "abcde"})
    large = comparison_grid(_images(4), {k: torch.rand(4, 1, 4, 4) for k in "abcdefgh"}, cell_size=1.8)
    (small_w, small_h), (large_w, large_h) = small.get_size_inches(), large.get_size_inches()
    per_cell = 1.8 + 0.08  # cell + gap
    assert large_w - small_w == pytest.approx(3 * per_cell) and large_h - small_h == pytest.approx(2 * per_cell)
    bigger = comparison_grid(_images(2), {k: torch.rand(2, 1, 4, 4) for k in "abcde"}, cell_size=3.0)
    assert bigger.get_size_inches()[0] - small_w == pytest.approx(6 * 1.2)


def test_cells_show_where_each_map_is_high() -> None:
    image = torch.full((3, 32, 32), 0.5)
    fig = comparison_grid([image], {"left": half_map(8, "left"), "right": half_map(8, "right")},
                          interpolation="nearest", colorbar=False)
    cells = _cell_axes(fig, 1, 3)
    plain = axes_pixels(fig, cells[0, 0])
    np.testing.assert_allclose(plain.mean(axis=(0, 1)), [0.5, 0.5, 0.5], atol=0.01)
    for ax, brighter_left in ((cells[0, 1], True), (cells[0, 2], False)):
        pixels = axes_pixels(fig, ax)
        quarter = pixels.shape[1] // 4
        left, right = pixels[:, :quarter].mean(), pixels[:, -quarter:].mean()
        assert (left > right + 0.15) if brighter_left else (right > left + 0.15)


def test_one_colour_scheme_per_method_column() -> None:
    positive, signed = half_map(4), half_map(4, low=-1.0)
    fig = comparison_grid(_images(2, 16), {"mixed": [positive, signed], "positive": [positive, positive]},
                          colorbar=False)
    cells = _cell_axes(fig, 2, 3)
    assert [cells[row, 1].images[1].get_cmap().name for row in range(2)] == ["RdBu_r", "RdBu_r"]
    assert [cells[row, 2].images[1].get_cmap().name for row in range(2)] == ["inferno", "inferno"]
    fig = comparison_grid(_images(2, 16), {"mixed": [positive, signed]}, sign="positive", colorbar=False)
    assert _cell_axes(fig, 2, 2)[1, 1].images[1].get_cmap().name == "inferno"


def test_sequences_missing_maps_and_all_zero_maps() -> None:
    images = [torch.rand(3, 16, 16), np.random.default_rng(0).random((16, 16, 3))]  # torch CHW and NumPy HWC
    maps = {"ok": [half_map(4), half_map(4, "right")], "failed": [None, half_map(4)],
            "zero": torch.zeros(2, 1, 4, 4)}
    fig = comparison_grid(images, maps, colorbar="each")
    cells = _cell_axes(fig, 2, 4)
    assert [t.get_text() for t in cells[0, 2].texts] == ["no map"]
    assert [t.get_text() for t in cells[1, 3].texts] == ["all-zero attribution"]
    colorbars = [ax for ax in fig.axes if ax not in set(cells.ravel())]
    assert len(colorbars) == 3  # "each": one per drawn heatmap (ok x 2, failed x 1)


def test_draws_into_given_axes_or_figure() -> None:
    fig = Figure()
    axes = fig.subplots(2, 3)
    assert comparison_grid(_images(2), {"a": torch.rand(2, 1, 4, 4), "b": torch.rand(2, 1, 4, 4)},
                           axes=axes, colorbar=False) is fig
    assert all(len(ax.images) >= 1 for ax in axes.ravel())
    target = Figure()
    assert comparison_grid(_images(1), {"a": torch.rand(1, 1, 4, 4)}, fig=target) is target
    assert len(target.axes) == 3  # image, method, shared colorbar


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: comparison_grid(_images(2), {"a": torch.rand(3, 1, 4, 4)}), ValueError, r"maps\['a'\] has 3 maps for 2"),
        (lambda: comparison_grid(_images(1), {}), TypeError, "non-empty mapping"),
        (lambda: comparison_grid(_images(1), [torch.rand(1, 1, 4, 4)]), TypeError, "mapping"),
        (lambda: comparison_grid(_images(1), {"a": torch.rand(1, 1, 4, 4)}, method_titles={"b": "x"}),
         ValueError, r"method_titles names method\(s\) \['b'\]"),
        (lambda: comparison_grid(_images(2), {"a": torch.rand(2, 1, 4, 4)}, row_labels=["x"]), ValueError, "row labels"),
        (lambda: comparison_grid(_images(1), {"a": torch.rand(1, 1, 4, 4)}, title="x"), TypeError, "'title'"),
        (lambda: comparison_grid(_images(1), {"a": torch.rand(1, 1, 4, 4)}, colorbar="some"), ValueError, "colorbar"),
        (lambda: comparison_grid(_images(1), {"a": torch.full((1, 1, 4, 4), float("nan"))}),
         ValueError, "method 'a', image 0: .*NaN"),
        (lambda: comparison_grid(_images(1), {"a": torch.rand(1, 1, 4, 4)}, axes=Figure().subplots(1, 3)),
         ValueError, "needs 1 x 2"),
        (lambda: comparison_grid([], {"a": []}), ValueError, "empty"),
    ],
)
def test_errors_are_clear(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()

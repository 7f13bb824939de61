"""1D signals and 3D volumes: shapes, upsampling oracles, peak slices and rendered colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure

from captum_ext.visualization import plot_signal_attribution, plot_volume_attribution
from tests.visualization._render import axes_pixels, new_axes


def _blend(position: float, under: float, alpha: float) -> np.ndarray:
    return alpha * np.asarray(colormaps["inferno"](position)[:3]) + (1 - alpha) * under


# --- 1D ------------------------------------------------------------------------------------------


def test_signal_plot_has_the_signal_the_shading_and_the_curve(tmp_path: Path) -> None:
    signal = torch.stack([torch.sin(torch.linspace(0, 6, 50)), torch.cos(torch.linspace(0, 6, 50))])
    attribution = torch.randn(1, 1, 7, generator=torch.Generator().manual_seed(0))
    fig = plot_signal_attribution(signal, attribution, channel_names=["x", "y"], title="ecg")
    top, bottom, colorbar = fig.axes
    assert top.get_title() == "ecg" and [line.get_label() for line in top.get_lines()] == ["x", "y"]
    np.testing.assert_allclose(top.get_lines()[1].get_ydata(), signal[1].numpy(), rtol=1e-6)
    expected = F.interpolate(attribution.double(), size=50, mode="linear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(np.asarray(top.images[0].get_array())[0], expected, rtol=1e-6)  # shading
    np.testing.assert_allclose(bottom.get_lines()[-1].get_ydata(), expected, rtol=1e-6)  # curve under it
    assert top.images[0].get_cmap().name == "RdBu_r"  # signed attribution: diverging
    fig.savefig(tmp_path / "signal.png", dpi=40)


def test_signal_shading_colours_follow_the_attribution() -> None:
    attribution = torch.zeros(1, 1, 8)
    attribution[..., :4] = 1.0  # high on the first half
    fig = plot_signal_attribution(torch.zeros(1, 64), attribution, interpolation="nearest", alpha=0.5)
    pixels = axes_pixels(fig, fig.axes[0])
    band = pixels[: pixels.shape[0] // 3]  # above the flat signal's line
    quarter = band.shape[1] // 4
    left, right = band[:, :quarter].mean(axis=(0, 1)), band[:, -quarter:].mean(axis=(0, 1))
    np.testing.assert_allclose(left, _blend(1.0, 1.0, 0.5), atol=0.03)  # over the white background
    np.testing.assert_allclose(right, _blend(0.0, 1.0, 0.5), atol=0.03)


def test_signal_into_one_axes_or_two() -> None:
    fig, (ax,) = new_axes()
    assert plot_signal_attribution(torch.rand(30), torch.rand(5), ax=ax) is fig
    assert len(ax.child_axes) == 2 and not ax.axison  # split into two inset panels
    fig, axes = new_axes(2)
    assert plot_signal_attribution(torch.rand(1, 30), torch.rand(1, 5), ax=axes, colorbar=False) is fig
    assert len(axes[0].images) == 1 and len(axes[0].get_lines()) == 1


def test_signal_all_zero_attribution_is_noted() -> None:
    fig = plot_signal_attribution(torch.rand(2, 30), torch.zeros(1, 1, 6))
    top, bottom = fig.axes  # no colorbar
    assert len(top.images) == 0 and [t.get_text() for t in bottom.texts] == ["all-zero attribution"]


@pytest.mark.parametrize(
    ("signal", "attribution", "kwargs", "match"),
    [
        (torch.rand(2, 3, 10), torch.rand(1, 1, 5), {}, "batch of 2"),
        (torch.rand(2, 3, 4, 10), torch.rand(1, 1, 5), {}, r"expected \(L,\)"),
        (torch.rand(3, 10), torch.rand(1, 1, 4, 4), {}, "not a 1D signal map"),
        (torch.rand(3, 10), torch.rand(2, 1, 5), {}, "batch of 2"),
        (torch.full((3, 10), float("nan")), torch.rand(1, 1, 5), {}, "NaN"),
        (torch.rand(3, 10), torch.rand(1, 1, 5), {"channel_names": ["a"]}, "3 channels but 1"),
        (torch.rand(3, 10), torch.rand(1, 1, 5), {"interpolation": "bicubic"}, "not available for a 1D"),
        (torch.rand(3, 10), torch.rand(1, 1, 5), {"ax": Figure().subplots(1, 3)}, "needs 2"),
    ],
)
def test_signal_errors(signal, attribution, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plot_signal_attribution(signal, attribution, **kwargs)


# --- 3D ------------------------------------------------------------------------------------------


def _hot_voxel() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    volume = torch.rand(1, 8, 10, 12, generator=torch.Generator().manual_seed(0))
    attribution = torch.zeros(1, 1, 4, 5, 6)
    attribution[0, 0, 1, 3, 2] = 1.0
    upsampled = F.interpolate(attribution.double(), size=(8, 10, 12), mode="nearest")[0, 0].numpy()
    return volume, attribution, upsampled


def test_orthogonal_slices_go_through_the_peak(tmp_path: Path) -> None:
    volume, attribution, upsampled = _hot_voxel()
    fig = plot_volume_attribution(volume, attribution, interpolation="nearest", title="ct")
    panels = fig.axes[:3]
    assert [ax.get_title() for ax in panels] == ["d = 2", "h = 6", "w = 4"]  # first voxel of the 2x2x2 block
    for ax, expected in zip(panels, (upsampled[2], upsampled[:, 6, :], upsampled[:, :, 4])):
        np.testing.assert_array_equal(np.asarray(ax.images[1].get_array()), expected)
    axial = panels[0]
    assert [line.get_ydata()[0] for line in axial.get_lines()][0] == 6  # crosshair row h
    assert [line.get_xdata()[0] for line in axial.get_lines()][1] == 4  # crosshair column w
    assert fig._suptitle.get_text() == "ct" and len(fig.axes) == 4  # 3 slices + colorbar
    fig.savefig(tmp_path / "volume.png", dpi=40)


def test_volume_colours_follow_the_attribution() -> None:
    attribution = torch.zeros(1, 1, 4, 4, 4)
    attribution[..., :2] = 1.0  # high on the low-w half
    fig = plot_volume_attribution(torch.full((16, 16, 16), 3.0), attribution, interpolation="nearest",
                                  colorbar=False, crosshair=False, alpha=0.5)
    pixels = axes_pixels(fig, fig.axes[0])  # the d slice: rows h, columns w
    quarter = pixels.shape[1] // 4
    left, right = pixels[:, :quarter].mean(axis=(0, 1)), pixels[:, -quarter:].mean(axis=(0, 1))
    np.testing.assert_allclose(left, _blend(1.0, 0.0, 0.5), atol=0.03)  # a constant volume shows black
    np.testing.assert_allclose(right, _blend(0.0, 0.0, 0.5), atol=0.03)


def test_strip_of_slices_includes_the_peak() -> None:
    volume, attribution, upsampled = _hot_voxel()
    fig = plot_volume_attribution(volume, attribution, mode="strip", n_slices=4, axis=2, interpolation="nearest",
                                  contour_top_percent=5)
    panels = fig.axes[:4]
    titles = [ax.get_title() for ax in panels]
    assert titles == ["w = 1", "w = 4 (peak)", "w = 7", "w = 10"]  # step 12 // 4 = 3, centred on w = 4
    np.testing.assert_array_equal(np.asarray(panels[1].images[1].get_array()), upsampled[:, :, 4])
    assert len(panels[1].collections) == 1  # the top-5 % contour crosses the peak slice
    fig = plot_volume_attribution(volume[0], attribution, mode="strip", n_slices=3, slice_step=1)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["d = 1", "d = 2 (peak)", "d = 3"]  # trilinear: d = 2 and 3 tie, argmax takes 2


def test_volume_into_one_axes_or_a_sequence() -> None:
    volume, attribution, _ = _hot_voxel()
    fig, (ax,) = new_axes()
    assert plot_volume_attribution(volume, attribution, ax=ax, title="mine") is fig
    assert len(ax.child_axes) == 3 and ax.get_title() == "mine"
    fig, axes = new_axes(3)
    assert plot_volume_attribution(volume, attribution, ax=axes) is fig
    assert all(len(panel.images) == 2 for panel in axes)


def test_volume_all_zero_attribution_is_drawn_through_the_centre() -> None:
    volume, _, _ = _hot_voxel()
    fig = plot_volume_attribution(volume, torch.zeros(1, 1, 4, 5, 6))
    panels = fig.axes
    assert len(panels) == 3 and [ax.get_title() for ax in panels] == ["d = 4", "h = 5", "w = 6"]
    assert all(len(ax.images) == 1 for ax in panels)
    assert [t.get_text() for t in panels[0].texts] == ["all-zero attribution"]


@pytest.mark.parametrize(
    ("volume", "attribution", "kwargs", "match"),
    [
        (torch.rand(8, 8, 8), torch.rand(1, 1, 4, 4, 4), {"mode": "mosaic"}, "mode"),
        (torch.rand(8, 8, 8), torch.rand(1, 1, 4, 4, 4), {"axis": 3}, "axis"),
        (torch.rand(8, 8, 8), torch.rand(1, 1, 4, 4, 4), {"n_slices": 0}, "n_slices"),
        (torch.rand(2, 1, 8, 8, 8), torch.rand(1, 1, 4, 4, 4), {}, "batch of 2"),
        (torch.rand(8, 8), torch.rand(1, 1, 4, 4, 4), {}, r"expected \(D, H, W\)"),
        (torch.rand(8, 8, 8), torch.rand(4, 4), {}, "not a 3D volume map"),
        (torch.rand(8, 8, 8), torch.full((1, 1, 4, 4, 4), float("nan")), {}, "NaN"),
        (torch.rand(8, 8, 8), torch.rand(1, 1, 4, 4, 4), {"interpolation": "bicubic"}, "not available for a 3D"),
        (torch.rand(8, 8, 8), torch.rand(1, 1, 4, 4, 4), {"ax": Figure().subplots(1, 2)}, "needs 3"),
    ],
)
def test_volume_errors(volume, attribution, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plot_volume_attribution(volume, attribution, **kwargs)

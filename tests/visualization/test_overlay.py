"""Overlays: rendered headless, checked pixel by pixel against the colormap they should show."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure

from captum_ext.visualization import overlay_batch, overlay_heatmap
from tests.visualization._render import axes_pixels, half_map, new_axes, render

ALPHA = 0.5


def _halves(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean RGB of the outer quarter on each side (away from the boundary)."""
    quarter = pixels.shape[1] // 4
    return pixels[:, :quarter].mean(axis=(0, 1)), pixels[:, -quarter:].mean(axis=(0, 1))


def _blend(cmap: str, position: float, under: float = 0.5) -> np.ndarray:
    return ALPHA * np.asarray(colormaps[cmap](position)[:3]) + (1 - ALPHA) * under


def test_png_has_the_figure_size_and_is_not_blank(photo_like: torch.Tensor, tmp_path: Path) -> None:
    fig = overlay_heatmap(photo_like, torch.rand(1, 1, 6, 8, generator=torch.Generator().manual_seed(0)))
    path = tmp_path / "overlay.png"
    fig.savefig(path, dpi=40)
    png = mpimg.imread(path)
    width, height = fig.get_size_inches() * 40
    assert abs(png.shape[0] - height) <= 1 and abs(png.shape[1] - width) <= 1
    assert png[..., :3].std() > 0.1  # a picture, not a blank canvas
    assert isinstance(fig, Figure)


@pytest.mark.parametrize("high_side", ["left", "right"])
def test_positive_map_colours_follow_the_map(grey_image: torch.Tensor, high_side: str) -> None:
    fig = overlay_heatmap(grey_image, half_map(8, high_side), interpolation="nearest", colorbar=False,
                          alpha=ALPHA)
    left, right = _halves(axes_pixels(fig, fig.axes[0]))
    hot, cold = _blend("inferno", 1.0), _blend("inferno", 0.0)
    expected_left, expected_right = (hot, cold) if high_side == "left" else (cold, hot)
    np.testing.assert_allclose(left, expected_left, atol=0.03)
    np.testing.assert_allclose(right, expected_right, atol=0.03)
    assert np.abs(left - right).sum() > 0.5


def test_signed_map_uses_a_diverging_colormap_centred_at_zero(grey_image: torch.Tensor) -> None:
    cam = half_map(8, "left", low=-2.0, high=2.0)
    cam[..., 0, 0] = 1.0  # asymmetric values: the limits stay symmetric, +-2
    fig = overlay_heatmap(grey_image, cam, interpolation="nearest", colorbar=False, alpha=ALPHA)
    heat = fig.axes[0].images[1]
    assert heat.get_cmap().name == "RdBu_r" and heat.norm.vmin == -2.0 and heat.norm.vmax == 2.0
    left, right = _halves(axes_pixels(fig, fig.axes[0])[4:])  # skip the top row holding the 1.0
    np.testing.assert_allclose(left, _blend("RdBu_r", 1.0), atol=0.03)
    np.testing.assert_allclose(right, _blend("RdBu_r", 0.0), atol=0.03)
    assert left[0] > left[2] and right[2] > right[0]  # red positive, blue negative


def test_negative_map_is_brightest_where_most_negative(grey_image: torch.Tensor) -> None:
    fig = overlay_heatmap(grey_image, -half_map(8, "left"), interpolation="nearest", colorbar=False)
    heat = fig.axes[0].images[1]
    assert (heat.norm.vmin, heat.norm.vmax) == (-1.0, 0.0)
    left, right = _halves(axes_pixels(fig, fig.axes[0]))
    np.testing.assert_allclose(left, _blend("inferno_r", 0.0), atol=0.03)
    np.testing.assert_allclose(right, _blend("inferno_r", 1.0), atol=0.03)


def test_absolute_sign_shows_both_signs_alike(grey_image: torch.Tensor) -> None:
    cam = half_map(8, "left", low=-1.0, high=1.0)
    fig = overlay_heatmap(grey_image, cam, sign="absolute", interpolation="nearest", colorbar=False)
    left, right = _halves(axes_pixels(fig, fig.axes[0]))
    np.testing.assert_allclose(left, right, atol=0.02)
    np.testing.assert_allclose(left, _blend("inferno", 1.0), atol=0.03)


def test_captum_sign_name_is_accepted(grey_image: torch.Tensor) -> None:
    fig = overlay_heatmap(grey_image, half_map(), sign="absolute_value")
    assert fig.axes[0].images[1].get_cmap().name == "inferno"


def test_map_is_upsampled_with_the_chosen_interpolation(photo_like: torch.Tensor) -> None:
    cam = torch.rand(1, 1, 3, 4, generator=torch.Generator().manual_seed(1))
    for mode in ("bilinear", "bicubic", "nearest"):
        fig = overlay_heatmap(photo_like, cam, interpolation=mode, sign="all")
        shown = np.asarray(fig.axes[0].images[1].get_array())
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        expected = F.interpolate(cam.double(), size=(48, 64), mode=mode, **kwargs)[0, 0].numpy()
        np.testing.assert_allclose(shown, expected, rtol=1e-6, atol=1e-9)


def test_auto_sign_is_decided_on_the_raw_map_not_on_bicubic_overshoot(photo_like: torch.Tensor) -> None:
    cam = torch.zeros(1, 1, 4, 4)
    cam[..., 1, 1] = 1.0  # bicubic rings below zero around the peak
    fig = overlay_heatmap(photo_like, cam, interpolation="bicubic")
    heat = fig.axes[0].images[1]
    assert heat.get_cmap().name == "inferno" and heat.norm.vmin == 0.0
    assert np.asarray(heat.get_array()).min() >= 0.0


def test_colorbar_is_added_in_map_units(photo_like: torch.Tensor) -> None:
    fig = overlay_heatmap(photo_like, 3.0 * half_map())
    assert len(fig.axes) == 2  # the image and its colorbar
    colorbar_axes = fig.axes[1]
    assert colorbar_axes.get_ylim() == pytest.approx((0.0, 3.0))


def test_contour_outlines_the_top_region(grey_image: torch.Tensor) -> None:
    cam = torch.zeros(1, 1, 4, 4)
    cam[..., :2, :2] = 1.0  # the top-left quarter holds the top 25 %
    fig = overlay_heatmap(grey_image, cam, interpolation="nearest", contour_top_percent=25, colorbar=False)
    ax = fig.axes[0]
    assert len(ax.collections) == 1
    vertices = np.concatenate([path.vertices for path in ax.collections[0].get_paths()])
    assert vertices[:, 0].max() <= 20.5 and vertices[:, 1].max() <= 20.5  # inside the top-left quarter
    assert vertices[:, 0].max() >= 18.5 and vertices[:, 1].max() >= 18.5  # ... and around it


@pytest.mark.parametrize("sign", ["auto", "positive", "all"])
def test_all_zero_map_draws_the_plain_image_with_a_note(grey_image: torch.Tensor, sign: str) -> None:
    fig = overlay_heatmap(grey_image, torch.zeros(1, 1, 7, 7), sign=sign)
    ax = fig.axes[0]
    assert len(ax.images) == 1 and len(fig.axes) == 1  # no heatmap, no colorbar
    assert [text.get_text() for text in ax.texts] == ["all-zero attribution"]
    pixels = axes_pixels(fig, ax)
    np.testing.assert_allclose(pixels[:4].mean(axis=(0, 1)), [0.5, 0.5, 0.5], atol=0.01)


def test_no_value_of_the_chosen_sign_is_noted(grey_image: torch.Tensor) -> None:
    fig = overlay_heatmap(grey_image, -half_map(), sign="positive")
    assert [text.get_text() for text in fig.axes[0].texts] == ["no positive attribution"]


def test_draws_into_an_existing_axes(photo_like: torch.Tensor) -> None:
    fig, axes = new_axes(2, (6.0, 3.0))
    returned = overlay_heatmap(photo_like, half_map(), ax=axes[1], colorbar=False, title="mine")
    assert returned is fig
    assert len(axes[0].images) == 0 and len(axes[1].images) == 2
    assert axes[1].get_title() == "mine"


def test_an_axes_in_a_subfigure_returns_the_root_figure(photo_like: torch.Tensor) -> None:
    fig = Figure()
    sub = fig.subfigures(1, 2)[1]
    assert overlay_heatmap(photo_like, half_map(), ax=sub.subplots()) is fig


def test_inputs_are_not_changed(photo_like: torch.Tensor) -> None:
    cam = torch.randn(1, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    image_copy, cam_copy = photo_like.clone(), cam.clone()
    overlay_heatmap(photo_like, cam, sign="positive")
    assert torch.equal(photo_like, image_copy) and torch.equal(cam, cam_copy)


@pytest.mark.parametrize("image_form", ["chw", "1chw", "hw_grey", "uint8_hwc", "float255_hwc", "rgba_hwc"])
def test_image_forms(photo_like: torch.Tensor, image_form: str) -> None:
    hwc = photo_like.permute(1, 2, 0).numpy()
    image = {
        "chw": photo_like,
        "1chw": photo_like[None],
        "hw_grey": photo_like[0],
        "uint8_hwc": (hwc * 255).round().astype(np.uint8),
        "float255_hwc": hwc * 255.0,
        "rgba_hwc": np.concatenate([hwc, np.ones_like(hwc[..., :1])], axis=-1),
    }[image_form]
    fig = overlay_heatmap(image, half_map())
    assert fig.axes[0].images[0].get_array().shape[:2] == (48, 64)
    assert render(fig)[..., :3].std() > 0.05


@pytest.mark.parametrize("map_form", ["11hw", "1hw", "hw", "numpy_hw", "numpy_hwc", "input_1chw"])
def test_map_forms_give_the_same_heatmap(photo_like: torch.Tensor, map_form: str) -> None:
    cam = torch.rand(1, 1, 6, 8, generator=torch.Generator().manual_seed(3))
    attribution = {
        "11hw": cam,
        "1hw": cam[0],
        "hw": cam[0, 0],
        "numpy_hw": cam[0, 0].numpy(),
        "numpy_hwc": cam[0].permute(1, 2, 0).numpy(),
        "input_1chw": torch.cat([cam, 2 * cam, -cam], dim=1) / 2,  # channels are summed: = cam
    }[map_form]
    shown = overlay_heatmap(photo_like, attribution).axes[0].images[1].get_array()
    reference = overlay_heatmap(photo_like, cam).axes[0].images[1].get_array()
    np.testing.assert_allclose(np.asarray(shown), np.asarray(reference), rtol=1e-6)


def test_half_precision_gpu_style_inputs(photo_like: torch.Tensor) -> None:
    cam = torch.rand(1, 1, 6, 8, generator=torch.Generator().manual_seed(4), requires_grad=True)
    fig = overlay_heatmap(photo_like.half(), cam.bfloat16(), interpolation="nearest")
    expected = F.interpolate(cam.detach().bfloat16().double(), size=(48, 64), mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(np.asarray(fig.axes[0].images[1].get_array()), expected)


def test_no_pyplot_figures_are_created(photo_like: torch.Tensor) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    overlay_heatmap(photo_like, half_map())
    overlay_batch(photo_like[None].repeat(2, 1, 1, 1), half_map().repeat(2, 1, 1, 1))
    assert plt.get_fignums() == before


def test_library_modules_never_import_pyplot() -> None:
    import captum_ext.visualization as package

    for path in Path(package.__file__).parent.glob("*.py"):
        imported = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported += [f"{node.module}.{alias.name}" for alias in node.names]
        assert not [name for name in imported if "pyplot" in name or name.startswith("captum.")], path.name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attribution": torch.full((1, 1, 4, 4), float("nan"))}, ValueError, "NaN"),
        ({"attribution": torch.full((1, 1, 4, 4), float("inf"))}, ValueError, "NaN or Inf"),
        ({"attribution": torch.zeros(2, 1, 4, 4)}, ValueError, "batch of 2.*overlay_batch"),
        ({"attribution": torch.zeros(1, 1, 1, 4, 4)}, ValueError, "not a 2D image map"),
        ({"attribution": torch.zeros(4)}, ValueError, "not a 2D image map"),
        ({"attribution": np.zeros((3, 5, 6))}, ValueError, "channels-first"),
        ({"attribution": torch.zeros(1, 1, 4, 4, dtype=torch.bool)}, TypeError, "real-valued"),
        ({"image": torch.zeros(3, 8, 8) - 2.0}, ValueError, "normalised.*rescale_image"),
        ({"image": np.zeros((3, 8, 8))}, ValueError, "channels-first"),
        ({"image": torch.zeros(8, 8, 3)}, ValueError, "channels-last"),
        ({"image": torch.zeros(2, 8, 8)}, ValueError, "2 channels"),
        ({"image": torch.zeros(2, 3, 8, 8)}, ValueError, "batch of 2"),
        ({"image": torch.full((3, 8, 8), float("nan"))}, ValueError, "NaN"),
        ({"image": np.full((8, 8, 3), 300, dtype=np.int32)}, ValueError, r"\[0, 255\]"),
        ({"image": None}, TypeError, "None"),
        ({"sign": "pos"}, ValueError, "sign='pos'"),
        ({"interpolation": "trilinear_x"}, ValueError, "interpolation"),
        ({"interpolation": "linear"}, None, None),  # the smooth mode of the rank: bilinear
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"contour_top_percent": 0}, ValueError, "contour_top_percent"),
        ({"outlier_perc": 100}, ValueError, "outlier_perc"),
        ({"ax": "not an axes"}, TypeError, "Axes"),
    ],
)
def test_errors_are_clear(kwargs: dict, error: type[Exception] | None, match: str | None) -> None:
    arguments = {"image": torch.full((3, 8, 8), 0.5), "attribution": half_map(4)} | kwargs
    if error is None:
        overlay_heatmap(**arguments)
        return
    with pytest.raises(error, match=match):
        overlay_heatmap(**arguments)


def test_rescale_image_displays_a_normalised_image(photo_like: torch.Tensor) -> None:
    normalised = (photo_like - 0.45) / 0.22
    fig = overlay_heatmap(normalised, half_map(), rescale_image=True)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    assert shown.min() == pytest.approx(0.0) and shown.max() == pytest.approx(1.0)


def test_outlier_perc_saturates_the_top_values(grey_image: torch.Tensor) -> None:
    cam = torch.ones(1, 1, 10, 10)
    cam[..., 0, 0] = 100.0  # one outlier holding half of the mass
    assert overlay_heatmap(grey_image, cam).axes[0].images[1].norm.vmax == 100.0
    assert overlay_heatmap(grey_image, cam, outlier_perc=60).axes[0].images[1].norm.vmax == 1.0


def test_batch_overlays_one_panel_per_example(photo_like: torch.Tensor, tmp_path: Path) -> None:
    images = torch.stack([photo_like, photo_like.flip(-1), photo_like * 0.5])
    cams = torch.stack([half_map(4, "left")[0], half_map(4, "right")[0], torch.zeros(1, 4, 4)])
    fig = overlay_batch(images, cams, titles=["a", "b", "c"], colorbar=False, ncols=2)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["a", "b", "c"]
    assert [len(ax.images) for ax in panels] == [2, 2, 1]  # the all-zero map has no heatmap
    fig.savefig(tmp_path / "batch.png", dpi=30)
    left_a, right_a = _halves(axes_pixels(fig, panels[0]))
    left_b, right_b = _halves(axes_pixels(fig, panels[1]))
    assert np.abs(left_a - right_a).sum() > 0.3 and np.abs(left_b - right_b).sum() > 0.3


def test_batch_draws_into_given_axes_and_checks_sizes(photo_like: torch.Tensor) -> None:
    fig, axes = new_axes(2, (6.0, 3.0))
    assert overlay_batch([photo_like, photo_like], [half_map(), half_map()], ax=axes, colorbar=False) is fig
    with pytest.raises(ValueError, match="2 images but 3 attribution maps"):
        overlay_batch([photo_like, photo_like], torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="ax has 2 Axes for 3 images"):
        overlay_batch(photo_like[None].repeat(3, 1, 1, 1), torch.zeros(3, 1, 4, 4), ax=axes)
    with pytest.raises(ValueError, match="example 1: .*NaN"):
        overlay_batch([photo_like] * 2, [half_map(), torch.full((4, 4), float("nan"))])
    with pytest.raises(TypeError, match="titles="):
        overlay_batch([photo_like], [half_map()], title="x")

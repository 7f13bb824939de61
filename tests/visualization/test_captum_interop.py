"""Interop with ``captum.attr.visualization``: the same NumPy conventions, in both directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from captum.attr import visualization as captum_viz
from torch import nn

from captum_ext.visualization import overlay_heatmap, to_captum_hwc, to_captum_image
from tests.visualization._render import axes_pixels, render


@pytest.fixture
def cam_and_image(photo_like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A real LayerGradCam map (1, 1, 12, 16) of a tiny conv net on the 48 x 64 image."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).eval()
    cam = LayerGradCam(model, model[4]).attribute(photo_like[None], target=1)
    assert cam.shape == (1, 1, 12, 16) and cam.requires_grad  # Captum does not detach: we must
    return cam, photo_like


def test_to_captum_hwc_is_the_upsampled_map_channels_last(cam_and_image) -> None:
    cam, image = cam_and_image
    hwc = to_captum_hwc(cam, image.shape[-2:])
    assert hwc.shape == (48, 64, 1) and isinstance(hwc, np.ndarray)
    expected = F.interpolate(cam.detach().double(), size=(48, 64), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(hwc[..., 0], expected[0, 0].numpy(), rtol=1e-6, atol=1e-12)
    nearest = to_captum_hwc(cam, (48, 64), interpolation="nearest")
    np.testing.assert_allclose(nearest[..., 0], LayerAttribution.interpolate(cam.detach(), (48, 64))[0, 0].numpy(),
                               rtol=1e-6)
    assert to_captum_hwc(cam).shape == (12, 16, 1)


@pytest.mark.parametrize("method", ["blended_heat_map", "heat_map", "alpha_scaling", "masked_image"])
def test_captum_visualize_image_attr_accepts_the_upsampled_map(cam_and_image, method: str) -> None:
    cam, image = cam_and_image
    fig, ax = captum_viz.visualize_image_attr(
        to_captum_hwc(cam, image.shape[-2:]) + 1e-3,  # + eps: Captum asserts on an all-zero map
        to_captum_image(image), method=method, sign="positive" if method != "heat_map" else "all",
        use_pyplot=False, show_colorbar=True,
    )
    assert render(fig)[..., :3].std() > 0.05


def test_captum_image_layout(cam_and_image) -> None:
    _, image = cam_and_image
    hwc = to_captum_image(image)
    assert hwc.shape == (48, 64, 3)
    np.testing.assert_allclose(hwc, image.permute(1, 2, 0).numpy(), rtol=1e-6)


def test_overlay_accepts_what_captum_accepts(cam_and_image) -> None:
    """The HWC NumPy pair given to Captum draws exactly the same overlay as the torch tensors."""
    cam, image = cam_and_image
    captum_attr, captum_image = to_captum_hwc(cam, image.shape[-2:]), to_captum_image(image)
    captum_viz.visualize_image_attr(captum_attr, captum_image, method="blended_heat_map", use_pyplot=False)
    from_numpy = overlay_heatmap(captum_image, captum_attr, colorbar=False)
    from_torch = overlay_heatmap(image, cam, colorbar=False)
    np.testing.assert_array_equal(render(from_numpy), render(from_torch))
    # Captum's (H, W) form of 0.9 and its uint8 images too
    hw_uint8 = overlay_heatmap((captum_image * 255).round().astype(np.uint8), captum_attr[..., 0], colorbar=False)
    np.testing.assert_allclose(axes_pixels(hw_uint8, hw_uint8.axes[0]),
                               axes_pixels(from_torch, from_torch.axes[0]), atol=2 / 255)


def test_all_zero_map_is_drawn_where_captum_asserts(cam_and_image) -> None:
    _, image = cam_and_image
    zeros = torch.zeros(1, 1, 12, 16)
    fig = overlay_heatmap(to_captum_image(image), to_captum_hwc(zeros, (48, 64)))
    assert [text.get_text() for text in fig.axes[0].texts] == ["all-zero attribution"]
    with pytest.raises(AssertionError):  # the Captum pitfall this package works around
        captum_viz.visualize_image_attr(to_captum_hwc(zeros, (48, 64)), to_captum_image(image),
                             method="blended_heat_map", use_pyplot=False)


def test_to_captum_hwc_errors() -> None:
    with pytest.raises(ValueError, match="batch of 2"):
        to_captum_hwc(torch.zeros(2, 1, 4, 4), (8, 8))
    with pytest.raises(ValueError, match=r"size must be \(H, W\)"):
        to_captum_hwc(torch.zeros(1, 1, 4, 4), (8, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        to_captum_hwc(torch.full((1, 1, 4, 4), float("nan")), (8, 8))

"""plot_sag: 3 explanations with 2 levels of expansion render to a non-blank PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from captum_ext.structures import StructuredAttentionGraph
from captum_ext.visualization import plot_sag
from tests.structures._toys import PatchRule, ones_image
from tests.structures.test_sag import saliency_for
from tests.visualization._render import new_axes, render

GROUPS = [(3, 10, 17), (22, 29, 36), (40, 41, 42)]


def three_group_result():
    """Any full group of three patches suffices; two of a group keep 88 %, one keeps 12 %."""
    flat = [p for g in GROUPS for p in g]
    rule = lambda m: m.reshape(m.shape[0], 3, 3).sum(2).max(1).values  # noqa: E731
    model = PatchRule(flat, rule, scale=4.0, bias=6.0)
    return StructuredAttentionGraph(model).search(
        ones_image(), target=1, upsample="nearest", ranking=saliency_for(flat), beam_width=10, dedupe_beam=True,
        max_root_size=4)


def test_three_roots_two_levels_render_and_png():
    result = three_group_result()
    assert sorted(e.patches for e in result.explanations) == sorted(GROUPS)
    assert max(n.depth for n in result.nodes) == 2
    image = torch.linspace(0, 1, 28).repeat(3, 28, 1)
    fig = plot_sag(result, image)
    pixels = render(fig)[..., :3]
    assert pixels.std() > 0.05
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    assert red.sum() > 50  # the removed-patch outlines
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"


def test_tensor_images_keep_their_colours():
    """A (C, H, W) tensor is drawn in colour (it was once summed over channels into grey)."""
    result = three_group_result()
    image = torch.zeros(3, 28, 28)
    image[0] = 1.0  # pure red, with a ramp in green so that min-max scaling keeps red at 1
    image[1] = torch.linspace(0, 0.2, 28)
    pixels = render(plot_sag(result, image, max_depth=0))[..., :3]
    reddish = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.4) & (pixels[..., 2] < 0.3)
    assert reddish.sum() > 200  # roots only (max_depth=0): no red outlines, so this is the image


def test_existing_axes_depth_cap_and_errors():
    result = three_group_result()
    fig, axes = new_axes(1, (6, 3))
    assert plot_sag(result, np.ones((28, 28)), ax=axes[0], max_depth=0) is fig
    assert len(axes[0].images) == 3  # the roots only
    result.grid_shape = (7,)
    with pytest.raises(ValueError, match="2D"):
        plot_sag(result, np.ones((28, 28)))

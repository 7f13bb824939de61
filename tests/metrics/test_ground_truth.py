"""On the synthetic task, Grad-CAM localises the cue far above a random map (fast version of
benchmarks/ground_truth_benchmark.py)."""

from __future__ import annotations

import torch
from captum.attr import LayerGradCam

from captum_ext.datasets import make_synthetic_cue_data
from captum_ext.metrics import pointing_game, relevance_mass_accuracy
from captum_ext.models import load_synthetic_model


def test_grad_cam_beats_a_random_map():
    model = load_synthetic_model(2)
    data = make_synthetic_cue_data(48, 2, seed=5)
    maps = LayerGradCam(model, model.features[-1]).attribute(data.images, target=data.labels)
    noise = torch.rand(data.images.shape, generator=torch.Generator().manual_seed(0))
    hits = pointing_game(maps, data.masks, tolerance=2).mean().item()
    chance = pointing_game(noise, data.masks, tolerance=2).mean().item()
    mass = relevance_mass_accuracy(maps, data.masks).mean().item()
    random_mass = relevance_mass_accuracy(noise, data.masks).mean().item()
    # Chance: the 7x7 cue box grown by 2 px covers 101 of 1024 pixels (about 0.10).
    assert chance < 0.3 and hits > 0.8
    assert abs(random_mass - 49 / 1024) < 0.01 and mass > 3 * random_mass

"""The shipped synthetic-task models: small, loadable with weights_only, accurate on held-out data."""

from __future__ import annotations

import pytest
import torch

from captum_ext.datasets import make_synthetic_cue_data
from captum_ext.models import CueClassifier, load_synthetic_model
from captum_ext.models.synthetic import WEIGHTS_DIR


@pytest.mark.parametrize("rank, count", [(2, 300), (3, 200)])
def test_held_out_accuracy_above_95_percent(rank, count):
    model = load_synthetic_model(rank)
    assert isinstance(model, CueClassifier) and not model.training
    data = make_synthetic_cue_data(count, rank, seed=2)  # training used seed 0, validation 1
    with torch.no_grad():
        accuracy = (model(data.images).argmax(1) == data.labels).float().mean().item()
    assert accuracy > 0.95


@pytest.mark.parametrize("rank", [2, 3])
def test_weights_are_small_state_dicts(rank):
    path = WEIGHTS_DIR / f"synthetic_{rank}d.pt"
    assert path.stat().st_size < 300_000
    state = torch.load(path, weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())


def test_unknown_rank():
    with pytest.raises(ValueError, match="spatial_dims 2 and 3"):
        load_synthetic_model(1)

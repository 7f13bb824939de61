"""Run by tests/metrics/test_distributed.py under torchrun (and in-process for the reference).

Evaluates Grad-CAM on the shipped synthetic 2D model over a small synthetic dataset: pointing
game, relevance mass accuracy and Average Drop per example.
"""

from __future__ import annotations

import sys

import torch
from captum.attr import LayerGradCam
from torch.utils.data import DataLoader

from captum_ext.datasets import SyntheticCueDataset
from captum_ext.metrics import (
    average_drop,
    distributed_session,
    evaluate_dataset,
    pointing_game,
    relevance_mass_accuracy,
)
from captum_ext.models import load_synthetic_model


def make_loader() -> DataLoader:
    # 23 examples in batches of 5: uneven shards (rank 0 gets 3 batches, rank 1 gets 2).
    return DataLoader(SyntheticCueDataset(23, spatial_dims=2, seed=7), batch_size=5)


def make_metric():
    model = load_synthetic_model(2)
    cam = LayerGradCam(model, model.features[-1])

    def metric(batch):
        images, labels, masks = batch
        maps = cam.attribute(images, target=labels)
        return {
            "pointing_game": pointing_game(maps, masks, tolerance=2),
            "relevance_mass": relevance_mass_accuracy(maps, masks),
            "average_drop": average_drop(model, images, maps, labels),
        }

    return metric


def main(path: str) -> None:
    torch.set_num_threads(1)
    with distributed_session("gloo"):
        results = evaluate_dataset(make_loader(), make_metric())
        if results is not None:
            torch.save(results, path)


if __name__ == "__main__":
    main(sys.argv[1])

"""Run by tests/structures/test_counting.py under torchrun (and in-process for the reference)."""

from __future__ import annotations

import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from captum_ext.metrics import distributed_session
from captum_ext.structures import count_sub_explanations_dataset, cross_test_dataset
from tests.structures._toys import additive_model, multiplicative_model, or_model


def make_loader() -> DataLoader:
    generator = torch.Generator().manual_seed(3)
    cells = (torch.rand(7, 1, 7, 7, generator=generator) > 0.3).float()
    cells[:, :, 0, 3] = 1.0  # patches 3, 10 and 24 present in every image
    cells[:, :, 1, 3] = 1.0
    cells[:, :, 3, 3] = 1.0
    images = torch.nn.functional.interpolate(cells, size=(28, 28), mode="nearest")
    images = images * (0.6 + 0.4 * torch.rand(7, 1, 1, 1, generator=generator))
    return DataLoader(TensorDataset(images, torch.ones(7, dtype=torch.long)), batch_size=2)


def brightness(x: torch.Tensor, _target) -> torch.Tensor:
    """The image, with the three decisive patches ranked first."""
    bump = torch.zeros(1, 1, 7, 7)
    bump[0, 0, 0, 3], bump[0, 0, 1, 3], bump[0, 0, 3, 3] = 3.0, 2.0, 1.0
    return x + torch.nn.functional.interpolate(bump, size=x.shape[2:], mode="nearest")


def run() -> dict[str, torch.Tensor] | None:
    counts = count_sub_explanations_dataset(
        additive_model(), make_loader(), target="label", ranking=brightness,
        upsample="nearest", max_root_size=4, tau_sub=(0.3, 0.5, 0.8))
    models = {"additive": additive_model(), "multiplicative": multiplicative_model(),
              "or": or_model()}
    crossed = cross_test_dataset(models, make_loader(), explain=lambda m, x, c: x,
                                 budgets=(0.1, 0.3, 0.6))
    if counts is None or crossed is None:
        return None
    return {"counts": counts["counts"], "num_explanations": counts["num_explanations"],
            "cross": crossed.per_example}


def main(path: str) -> None:
    torch.set_num_threads(1)
    with distributed_session("gloo"):
        results = run()
        if results is not None:
            torch.save(results, path)


if __name__ == "__main__":
    main(sys.argv[1])

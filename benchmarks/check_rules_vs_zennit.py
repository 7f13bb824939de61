"""Side-by-side check of captum_ext.rules against zennit 0.5 (LGPL, test-time oracle only).

zennit is imported here only, from the anchors venv; the package never imports it. On a
bias-free-convolution CNN with a dense head, our rules (the ``epsilon_plus`` preset: (ε on the Linear, z⁺
on the convolutions, plain gradient for ReLU and average pooling), with tiny stabilisers, must give the same input
relevance as zennit's ``EpsilonPlus`` (which uses z⁺ with the positive bias; the convolutions
here have none, so the two definitions coincide). 1D, 2D and 3D. Prints the max relative error.

Run::

    PYTHONPATH=. /work/venv-anchors/bin/python benchmarks/check_rules_vs_zennit.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from captum_ext.rules import Composite, Epsilon, ZPlus

EPS = 1e-12  # tiny stabilisers on both sides, so that only the rule definitions differ


def _model(rank: int) -> nn.Sequential:
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
    pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[rank]
    torch.manual_seed(rank)
    return nn.Sequential(
        conv(3, 6, 3, padding=1, bias=False), nn.ReLU(), conv(6, 8, 3, padding=1, bias=False),
        nn.ReLU(), pool(1), nn.Flatten(), nn.Linear(8, 5),
    ).eval().double()


def main() -> None:
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlus
    except ImportError:
        raise SystemExit("zennit is not importable here; run with the anchors venv.")
    rows = ["| rank | max relative error (ours vs zennit) |", "|---|---|"]
    for rank in (1, 2, 3):
        model = _model(rank)
        x = torch.randn((2, 3) + (6,) * rank, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        target = torch.tensor([1, 3])
        onehot = torch.nn.functional.one_hot(target, 5).double()
        with Gradient(model=model, composite=EpsilonPlus(epsilon=EPS, stabilizer=EPS)) as attributor:
            _, theirs = attributor(x, onehot)  # seed = output relevance (one-hot)
        xg = x.clone().requires_grad_(True)
        ours_rules = Composite([(nn.Linear, Epsilon(EPS)), ((nn.Conv1d, nn.Conv2d, nn.Conv3d), ZPlus(EPS))])
        with ours_rules.context(model):
            logits = model(xg)
            seed = onehot / logits.detach()  # c = R_out / y so that R_out is the one-hot
            (grad,) = torch.autograd.grad(logits, xg, seed)
        ours = (xg * grad).detach()
        error = ((ours - theirs).abs().max() / theirs.abs().max()).item()
        rows.append(f"| {rank}D | {error:.2e} |")
    table = "# captum_ext.rules vs zennit 0.5 (EpsilonPlus, bias-free convolutions, float64)\n\n" + "\n".join(rows) + "\n"
    print(table)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "rules_vs_zennit.md").write_text(table)


if __name__ == "__main__":
    main()

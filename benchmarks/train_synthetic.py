"""Train the small classifiers of the synthetic cue task and save them as package data.

Run (under a minute per model on a 2-core CPU)::

    PYTHONPATH=. python benchmarks/train_synthetic.py            # both ranks
    PYTHONPATH=. python benchmarks/train_synthetic.py --dims 2   # one rank

It writes ``captum_ext/models/weights/synthetic_{2,3}d.pt`` (state dicts only), prints the
held-out accuracy and writes ``benchmarks/results/train_synthetic.md``. Training data uses data
seed 0, the held-out check seed 1 (independent draws: every example has its own generator);
tests use seed 2 and the benchmarks seed 11. Training is deterministic given ``--seed`` on one
machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from captum_ext.datasets.synthetic import make_synthetic_cue_data
from captum_ext.models.synthetic import WEIGHTS_DIR, build_synthetic_model

logger = logging.getLogger("train_synthetic")
RESULTS = Path(__file__).parent / "results"

#: (training examples, epochs) per rank.
PLAN = {2: (2000, 5), 3: (1600, 5)}


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def train(spatial_dims: int, seed: int = 0, batch_size: int = 64) -> tuple[float, float, float]:
    """Train one model; returns (held-out accuracy, wall seconds, CPU seconds)."""
    num_train, epochs = PLAN[spatial_dims]
    start = time.perf_counter()
    cpu_start = time.process_time()
    torch.manual_seed(seed)
    train_data = make_synthetic_cue_data(num_train, spatial_dims, seed=0)
    held_out = make_synthetic_cue_data(500, spatial_dims, seed=1)
    model = build_synthetic_model(spatial_dims)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = epochs * ((num_train + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-2, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(num_train, generator=generator)
        for first in range(0, num_train, batch_size):
            batch = order[first : first + batch_size]
            loss = F.cross_entropy(model(train_data.images[batch]), train_data.labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        model.eval()
        logger.info(
            "%dD epoch %d: loss %.3f, held-out accuracy %.3f", spatial_dims, epoch, loss.item(),
            accuracy(model, held_out.images, held_out.labels),
        )
        model.train()
    model.eval()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), WEIGHTS_DIR / f"synthetic_{spatial_dims}d.pt")
    return accuracy(model, held_out.images, held_out.labels), seconds, cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="*", default=[2, 3])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        "(a shared machine: wall time includes other users' load; CPU time sums all threads).",
        "",
        "| model | held-out accuracy (500) | wall time (s) | CPU time (s) |",
        "|---|---:|---:|---:|",
    ]
    for dims in args.dims:
        acc, seconds, cpu_seconds = train(dims, args.seed)
        lines.append(f"| synthetic_{dims}d | {acc:.3f} | {seconds:.1f} | {cpu_seconds:.1f} |")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_synthetic.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

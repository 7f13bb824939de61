"""NormGrad over four EfficientNet-Lite0 layers versus one Captum LayerGradCam call.

Run from the repository root:

    PYTHONPATH=. python benchmarks/bench_normgrad.py

Both methods run on the same batch (8 real photos, 224x224, ImageNet-normalised) in the same
process; each timing is the median of ``--repeats`` calls after ``--warmup`` calls. The speed is
reported as a ratio to the anchor, one Captum ``LayerGradCam`` call on ``model._bn1``, and a
forward pass under ``no_grad`` is timed as the lower bound of any gradient method. Both methods
need one forward pass; NormGrad's single backward pass runs down to the shallowest layer
(``_blocks[5]``) instead of stopping at ``_bn1``, which is where the extra time goes, while its
forward pass records the autograd graph only from ``_blocks[5]`` on. The table is printed and
written to ``benchmarks/results/normgrad.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from captum.attr import LayerGradCam

from captum_ext._captum import compute_layer_gradients_and_eval
from captum_ext.attr import LayerNormGrad
from captum_ext.datasets import load_sample_photos
from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet

RESULTS = Path(__file__).resolve().parent / "results" / "normgrad.md"


def _seconds(call: Callable[[], object]) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def _batch(size: int) -> torch.Tensor:
    photos = list(load_sample_photos().values())
    images = [preprocess_imagenet(photos[i % len(photos)])[0] for i in range(size)]
    return torch.stack(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: steadier ratios on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = load_efficientnet_lite0()
    x = _batch(args.batch)
    with torch.no_grad():
        target = model(x).argmax(1)
    layers = [model._blocks[5], model._blocks[10], model._blocks[15], model._bn1]
    names = ["_blocks[5]", "_blocks[10]", "_blocks[15]", "_bn1"]

    grad_cam = LayerGradCam(model, model._bn1)
    normgrad = LayerNormGrad(model, layers)

    def forward_only() -> object:
        with torch.no_grad():
            return model(x)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("Captum LayerGradCam, _bn1 (anchor)", lambda: grad_cam.attribute(x, target=target)),
        ("one forward pass under no_grad (lower bound)", forward_only),
        (
            "Captum compute_layer_gradients_and_eval, 4 layers, full graph, no maps",
            lambda: compute_layer_gradients_and_eval(model, layers, x, target),
        ),
        ("LayerNormGrad, 4 layers, per-layer maps", lambda: normgrad.attribute(x, target=target)),
        (
            "LayerNormGrad, 4 layers, combine='product'",
            lambda: normgrad.attribute(x, target=target, combine="product"),
        ),
        (
            "LayerNormGrad, 4 layers, variant='conv3x3'",
            lambda: normgrad.attribute(x, target=target, variant="conv3x3"),
        ),
        (
            "LayerNormGrad, 4 layers, variant='selective'",
            lambda: normgrad.attribute(x, target=target, variant="selective"),
        ),
    ]
    # Interleave the cases round by round so that load changes on the shared machine hit
    # every case alike; each case still gets its own warm-up.
    for _, call in cases:
        for _ in range(args.warmup):
            call()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cases}
    for _ in range(args.repeats):
        for name, call in cases:
            samples[name].append(_seconds(call))
    wall = {name: statistics.median(t[0] for t in times) for name, times in samples.items()}
    cpu = {name: statistics.median(t[1] for t in times) for name, times in samples.items()}
    anchor = cases[0][0]

    lines = [
        "# NormGrad benchmark",
        "",
        f"EfficientNet-Lite0, batch {args.batch}, 224x224, layers {', '.join(names)}; "
        f"median of {args.repeats} interleaved repeats after {args.warmup} warm-up calls each.",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}. The CPU is shared with other jobs, so "
        "absolute times are noisy: read the ratios. Process CPU time is less affected by other "
        "jobs than wall-clock time, so both are given.",
        "",
        "| Method | median wall s | wall ratio | median CPU s | CPU ratio |",
        "|---|---|---|---|---|",
    ]
    for name, _ in cases:
        lines.append(
            f"| {name} | {wall[name]:.3f} | {wall[name] / wall[anchor]:.2f}x "
            f"| {cpu[name]:.3f} | {cpu[name] / cpu[anchor]:.2f}x |"
        )
    lines += ["", "Ratios are to the first row. Target: LayerNormGrad over 4 layers <= 1.5x one "
              "LayerGradCam call."]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()

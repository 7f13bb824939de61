"""I-GOS and iGOS++ on EfficientNet-Lite0: quality (I-GOS-protocol deletion/insertion) against
Grad-CAM, Grad-CAM++ and Integrated Gradients, and speed against the official code.

Setting (issue 5): the bundled photos (chelsea, coffee, astronaut, rocket, motorcycle,
grace_hopper), 224x224, targets = the model's top-1 classes, default hyperparameters.

* **Quality**: ``deletion_insertion(protocol="igos")`` at 28x28 with the blur baseline; I-GOS
  masks are scored by their own cells (``1 - M``), the other maps are upsampled to 224 and
  average-pooled to 28x28. Grad-CAM is Captum's ``LayerGradCam`` on ``_bn1`` with ReLU,
  Grad-CAM++ is ``captum_ext.attr.LayerGradCamPlusPlus`` (ReLU), Integrated Gradients is
  Captum's (zero baseline, 50 steps, logits), channel-summed.
* **Speed**: seconds per image at batch 1 (chelsea and coffee, one at a time) and batch 8 (the
  six photos plus two flipped copies), with the forward/backward image counts. The official
  code cannot run here; its cost is given by the issue's anchor (I-GOS ~64 s/img, ~2,600
  forward + 300 backward images; iGOS++ ~280 s/img, ~9,400 + 1,200), and is also *replayed* in
  this run: the official image counts times the per-image cost of a 20-image forward and
  forward+backward pass of this model measured now, so that load from other processes hits
  both sides alike.

Masks at batch 8 use one generator per example; the batch-1 runs reuse the same generators, so
they reproduce the batch-8 masks of those photos (the path noise is per example).

Run::

    PYTHONPATH=. /work/venv/bin/python benchmarks/bench_igos.py [--quick]

``--quick`` skips the iGOS++ batch-8 run (its quality then comes from batch-1 runs of chelsea
and coffee only). The full run takes about 10-15 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from captum.attr import IntegratedGradients, LayerGradCam

from captum_ext._tensor_ops import upsample
from captum_ext.attr import IGOS, IGOSPlusPlus, LayerGradCamPlusPlus
from captum_ext.datasets import load_sample_photos
from captum_ext.metrics import deletion_insertion
from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet

RESULTS = Path(__file__).parent / "results"
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle", "grace_hopper"]
OFFICIAL = {  # the measured anchor: s/img, forward images, backward images, cat, coffee
    "I-GOS": (64.0, 2600, 300, 0.33, 0.62),
    "iGOS++": (280.0, 9400, 1200, None, None),
}
INTERNAL_BATCH = 40  # path images per pass: ~3.7 GB at 224 (iGOS++ at batch 8 has 640 per pass)


def _generators(count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(63 + i) for i in range(count)]


def _per_image_costs(model: torch.nn.Module, x: torch.Tensor, target: int) -> tuple[float, float]:
    """Seconds per image of a 20-image forward and of a 20-image forward+backward pass (the
    minimum over 2 rounds)."""
    batch = x[:1].expand(20, -1, -1, -1).contiguous()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    forward, backward = [], []
    try:
        for _ in range(2):
            start = time.perf_counter()
            with torch.no_grad():
                model(batch)
            forward.append((time.perf_counter() - start) / 20)
            leaf = batch.clone().requires_grad_(True)
            start = time.perf_counter()
            torch.autograd.grad(model(leaf).softmax(1)[:, target].sum(), leaf)
            backward.append((time.perf_counter() - start) / 20)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    return min(forward), min(backward)


def _run_mask(method_class: type, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
              generators: list[torch.Generator], overrides: dict[str, Any]) -> dict[str, Any]:
    """One timed run, bracketed by measurements of the model's per-image costs (load from
    other processes changes during the run; the replayed official cost uses the mean)."""
    before = _per_image_costs(model, x, int(target[0]))
    method = method_class(model)
    start = time.perf_counter()
    _, masks = method.attribute(x, target=target, generator=generators, return_masks=True,
                                internal_batch_size=INTERNAL_BATCH, **overrides)
    seconds = time.perf_counter() - start
    after = _per_image_costs(model, x, int(target[0]))
    print(f"  {method_class.__name__} batch {x.shape[0]}: {seconds:.1f} s", file=sys.stderr,
          flush=True)
    trace = method.last_trace
    count = x.shape[0]
    return {
        "masks": masks, "seconds": seconds / count,
        "costs": ((before[0] + after[0]) / 2, (before[1] + after[1]) / 2),
        "forward": trace.forward_images / count, "backward": trace.backward_images / count,
        "iterations": trace.iterations_run.float().mean().item(),
        "trials": trace.line_search_trials.float().mean().item(),
    }


def _saliency_baselines(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
                        ) -> dict[str, torch.Tensor]:
    maps = {}
    cam = LayerGradCam(model, model._bn1).attribute(x, target=target, relu_attributions=True)
    maps["Grad-CAM"] = upsample(cam.detach(), x.shape[2:])
    campp = LayerGradCamPlusPlus(model, model._bn1).attribute(x, target=target,
                                                               relu_attributions=True)
    maps["Grad-CAM++"] = upsample(campp.detach(), x.shape[2:])
    ig = IntegratedGradients(model).attribute(x, target=target, n_steps=50,
                                              internal_batch_size=50)
    maps["Integrated Gradients"] = ig.detach().sum(1, keepdim=True)
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the iGOS++ batch-8 run")
    parser.add_argument("--dry-run", action="store_true",
                        help="1 iteration, 2 path steps: checks the script, not the method")
    args = parser.parse_args()
    overrides = {"iterations": 1, "ig_steps": 2} if args.dry_run else {}
    torch.manual_seed(0)
    model = load_efficientnet_lite0()
    photos = load_sample_photos(PHOTOS)
    x6 = torch.cat([preprocess_imagenet(photos[name]) for name in PHOTOS])
    x8 = torch.cat([x6, x6[:2].flip(-1)])
    with torch.no_grad():
        target8 = model(x8).argmax(1)
    target6 = target8[:6]
    gens = lambda: _generators(8)  # noqa: E731  fresh, identically seeded streams per run

    lines = ["# I-GOS and iGOS++ on EfficientNet-Lite0", ""]
    load_start = os.getloadavg()[0]
    lines.append("Timings on a 2-core virtual CPU (load average {load}; the host's steal time "
                 "varies, so the replayed official cost is measured around each run). The model "
                 "runs channels-last inside the methods (CPU). Protocol: I-GOS "
                 "deletion/insertion, 28x28, blur baseline, softmax probability, correct last "
                 "step.")
    lines.append("")
    quality: dict[str, torch.Tensor] = {}
    speed_rows = []
    for name, method_class in [("I-GOS", IGOS), ("iGOS++", IGOSPlusPlus)]:
        singles = [_run_mask(method_class, model, x8[i:i + 1], target8[i:i + 1], [gens()[i]],
                             overrides) for i in (0, 1)]
        batch1 = {key: statistics.mean(s[key] for s in singles)
                  for key in ("seconds", "forward", "backward", "iterations", "trials")}
        batch1["costs"] = tuple(statistics.mean(s["costs"][i] for s in singles) for i in (0, 1))
        anchor_s, anchor_f, anchor_b, _, _ = OFFICIAL[name]
        replay = lambda costs: (anchor_f - anchor_b) * costs[0] + anchor_b * costs[1]  # noqa: E731
        speed_rows.append((name, 1, batch1, anchor_s, replay(batch1["costs"])))
        if name == "iGOS++" and args.quick:
            masks = torch.cat([s["masks"] for s in singles])
            quality[name] = masks
            continue
        batch8 = _run_mask(method_class, model, x8, target8, gens(), overrides)
        speed_rows.append((name, 8, batch8, anchor_s, replay(batch8["costs"])))
        quality[name] = batch8["masks"][:6]
        same = torch.allclose(batch8["masks"][:2], torch.cat([s["masks"] for s in singles]),
                              atol=1e-4)
        lines.append(f"- {name}: batch-8 masks of chelsea/coffee equal the batch-1 masks: {same}")
    lines.append("")
    for key, value in _saliency_baselines(model, x6, target6).items():
        quality[key] = value

    lines += ["## Quality (I-GOS protocol; higher insertion - deletion is better)", ""]
    lines.append("| method | images | mean deletion | mean insertion | insertion - deletion | "
                 "cat (chelsea) | coffee |")
    lines.append("|---|---|---|---|---|---|---|")
    for key, saliency in quality.items():
        count = saliency.shape[0]
        if key in ("I-GOS", "iGOS++"):
            saliency = 1 - saliency
        result = deletion_insertion(model, x6[:count], saliency, target6[:count], protocol="igos",
                                    batch_size=64)
        diff = result.difference
        lines.append(
            f"| {key} | {count} | {result.deletion.mean():.3f} | {result.insertion.mean():.3f} | "
            f"{diff.mean():.3f} | {diff[0]:.3f} (del {result.deletion[0]:.3f}, ins "
            f"{result.insertion[0]:.3f}) | {diff[1]:.3f} (del {result.deletion[1]:.3f}, ins "
            f"{result.insertion[1]:.3f}) |"
        )
    lines.append("| official I-GOS (anchor) | - | - | - | - | 0.33 | 0.62 |")
    lines.append("")
    lines += ["## Speed (seconds per image at the defaults)", ""]
    lines.append("'replayed' = the official image counts times this model's per-image forward and "
                 "forward+backward cost measured just before and after each run (20-image passes); "
                 "ratio = official / ours. 'ms per model image' = seconds / (forward + backward "
                 "images), the work-normalised cost.")
    lines.append("")
    lines.append("| method | batch | s/img | forward img/img | backward img/img | iterations | "
                 "trials/img | ms per model image | model cost fwd / fwd+bwd ms | "
                 "official replayed s/img (ratio) | official anchor s/img (ratio) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, batch, row, anchor_s, replay in speed_rows:
        per_image = 1000 * row["seconds"] / (row["forward"] + row["backward"])
        lines.append(
            f"| {name} | {batch} | {row['seconds']:.1f} | {row['forward']:.0f} | "
            f"{row['backward']:.0f} | {row['iterations']:.1f} | {row['trials']:.1f} | "
            f"{per_image:.0f} | {row['costs'][0] * 1000:.0f} / {row['costs'][1] * 1000:.0f} | "
            f"{replay:.1f} ({replay / row['seconds']:.2f}x) | {anchor_s:.0f} "
            f"({anchor_s / row['seconds']:.2f}x) |"
        )
    by_method: dict[str, dict[int, dict[str, Any]]] = {}
    for name, batch, row, _, _ in speed_rows:
        by_method.setdefault(name, {})[batch] = row
    lines.append("")
    for name, rows in by_method.items():
        if 1 in rows and 8 in rows:
            work = [1000 * r["seconds"] / (r["forward"] + r["backward"]) for r in (rows[1], rows[8])]
            lines.append(f"- {name}: batch 8 costs {rows[8]['seconds'] / rows[1]['seconds']:.2f}x "
                         f"batch 1 per image ({work[1] / work[0]:.2f}x per model image).")
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    text = "\n".join(lines).replace("{load}", load) + "\n"
    print(text)
    if not args.dry_run:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "igos.md").write_text(text)


if __name__ == "__main__":
    main()

"""Ground-truth localisation benchmark on the synthetic cue task (issue 7), offline.

For every method of ``captum_ext.registry.METHODS`` (Captum's ``LayerGradCam`` included), plus
Captum's ``IntegratedGradients`` and ``Saliency``, ``LearnedPropagation`` fitted as in
``bench_learned_propagation.py`` (seed 0, 80 steps on the classifier's training split, about
10 s, not counted in its time per image; scored as |modified gradient|, like Saliency) and a
uniform random map, on held-out images of the 2D cue task and the shipped model
(``load_synthetic_model(2)``), with the true label as the target:

* pointing game, tolerance 2 px at 32×32 (TorchRay's 15 px at 224 scaled: 15 · 32/224 ≈ 2.1),
  and at tolerance 0 (the maximum inside the cue's box);
* relevance mass accuracy (positive relevance inside the cue's box);
* deletion and insertion with ``captum_ext.metrics.deletion_insertion`` under the RISE protocol
  (deletion to 0, insertion from the RISE blur, trapezoid areas of the softmax score of the
  label), on the first ``--del-ins-images`` images with ``--del-ins-steps`` steps (defaults 128
  images and 64 steps of 16 pixels at 32×32, to keep the run short);
* time per image of the attribution (shared machine: compare within this table only).

Chance levels are computed from the masks (the share of pixels within tolerance of the box, and
the box's share of the image). The script asserts that the random baseline is at chance (within
4 binomial standard errors) and that Grad-CAM is well above it.

Run::

    PYTHONPATH=. python benchmarks/ground_truth_benchmark.py [--images 512]
"""

from __future__ import annotations

import argparse
import inspect
import math
import time
from pathlib import Path
from typing import Callable

import torch
from captum.attr import IntegratedGradients, Saliency

from captum_ext.datasets import make_synthetic_cue_data
from captum_ext.metrics import (
    deletion_insertion,
    pointing_game,
    pointing_game_chance,
    relevance_mass_accuracy,
)
from captum_ext.models import load_synthetic_model
from captum_ext.registry import METHODS

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 2.0
CHUNK = 64


def _explainers(model) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    layer = model.features[-1]
    explainers = {}
    for name, info in METHODS.items():
        method = info.build(model, layer, model.fc)
        kwargs = dict(info.attribute_kwargs)
        if "generator" in inspect.signature(method.attribute).parameters:
            kwargs["generator"] = torch.Generator().manual_seed(0)
        label = f"{name} (Captum)" if info.is_captum_builtin else name
        explainers[label] = lambda x, t, m=method, k=kwargs: m.attribute(x, target=t, **k)
    integrated = IntegratedGradients(model)
    saliency = Saliency(model)
    explainers["IntegratedGradients (Captum)"] = lambda x, t: integrated.attribute(
        x, target=t, n_steps=32, internal_batch_size=512
    )
    explainers["Saliency (Captum)"] = lambda x, t: saliency.attribute(x, target=t)
    from bench_learned_propagation import fit_rule  # lazy: that script imports this one

    training = make_synthetic_cue_data(1280, 2, seed=0)  # the classifier's training split
    rule, _, _ = fit_rule(model, training.images, seed=0, epochs=2)
    explainers["LearnedPropagation (fitted, abs)"] = lambda x, t: rule.attribute(x, target=t).abs()
    generator = torch.Generator().manual_seed(0)
    explainers["random"] = lambda x, t: torch.rand(x.shape, generator=generator)
    return explainers


def _del_ins_columns(model, images, maps, labels, steps: int) -> tuple[float, float]:
    """Mean RISE-protocol deletion and insertion areas (softmax of the label)."""
    result = deletion_insertion(
        model, images, maps, labels.tolist(), protocol="rise", n_steps=steps, batch_size=512
    )
    return float(result.deletion.mean()), float(result.insertion.mean())


def score_maps(
    model, data, maps: torch.Tensor, del_ins_images: int = 128, del_ins_steps: int = 64
) -> dict[str, float]:
    """The columns of this table for one method's maps on ``data`` (a ``SyntheticCueData``).

    Shared with ``bench_learned_propagation.py`` so that its numbers are on the same footing.
    """
    del_ins_images = min(del_ins_images, maps.shape[0])
    deletion, insertion = _del_ins_columns(
        model, data.images[:del_ins_images], maps[:del_ins_images],
        data.labels[:del_ins_images], del_ins_steps,
    )
    return {
        "pointing": pointing_game(maps, data.masks, TOLERANCE).nanmean().item(),
        "inside": pointing_game(maps, data.masks, 0).nanmean().item(),
        "mass": relevance_mass_accuracy(maps, data.masks).nanmean().item(),
        "deletion": deletion,
        "insertion": insertion,
    }


def run(num_images: int, del_ins_images: int = 128, del_ins_steps: int = 64) -> str:
    torch.manual_seed(0)
    model = load_synthetic_model(2)
    data = make_synthetic_cue_data(num_images, 2, seed=11)  # training 0, validation 1
    with torch.no_grad():
        accuracy = float((model(data.images).argmax(1) == data.labels).float().mean())
    pixels = data.masks[0].numel()
    chance_pointing = float(pointing_game_chance(data.masks, TOLERANCE).mean())
    chance_inside = float(data.masks.flatten(1).float().mean(1).mean())
    del_ins_images = min(del_ins_images, num_images)
    rows, scores = [], {}
    for name, explain in _explainers(model).items():
        start = time.perf_counter()
        maps = torch.cat([
            explain(data.images[i : i + CHUNK], data.labels[i : i + CHUNK]).detach()
            for i in range(0, num_images, CHUNK)
        ])
        seconds = (time.perf_counter() - start) / num_images
        columns = score_maps(model, data, maps, del_ins_images, del_ins_steps)
        scores[name] = (columns["pointing"], columns["mass"])
        rows.append(
            f"| {name} | {columns['pointing']:.3f} | {columns['inside']:.3f} "
            f"| {columns['mass']:.3f} | {columns['deletion']:.3f} | {columns['insertion']:.3f} "
            f"| {1e3 * seconds:.2f} |"
        )
    error = math.sqrt(chance_pointing * (1 - chance_pointing) / num_images)
    random_pointing, random_mass = scores["random"]
    grad_cam_pointing, grad_cam_mass = scores["LayerGradCam (Captum)"]
    assert abs(random_pointing - chance_pointing) < 4 * error + 1e-9, (random_pointing, chance_pointing)
    assert abs(random_mass - chance_inside) < 0.01, (random_mass, chance_inside)
    assert grad_cam_pointing > chance_pointing + 0.5, grad_cam_pointing
    assert grad_cam_mass > 5 * chance_inside, grad_cam_mass
    header = [
        f"Synthetic 2D cue task: {num_images} held-out images (seed 11) of {pixels} pixels, the "
        f"shipped model (`load_synthetic_model(2)`, accuracy {accuracy:.3f} on them), target = "
        "the true label, layer `model.features[-1]` (8x8). Ground truth: the cue's 7x7 box. "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, shared machine (times "
        "compare within this table only).",
        "",
        f"Chance: pointing game (tol {TOLERANCE:g} px) {chance_pointing:.3f} ± {error:.3f} (1 SE); "
        f"tol 0 and relevance mass {chance_inside:.3f}. Checked by the script: the random map is "
        "at chance, Grad-CAM far above it.",
        "",
        f"| method | pointing game (tol {TOLERANCE:g} px) | pointing game (tol 0) | relevance mass "
        "| deletion (RISE) | insertion (RISE) | ms / image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = [
        "",
        "Reading the table: with a GAP + linear head the gradient at `features[-1]` is the "
        "constant `w_c / Z`, so Grad-CAM, XGrad-CAM, HiResCAM and CAM all reduce to "
        "`Σ_k w_ck A_k` up to a positive factor, and Grad-CAM++, Smooth Grad-CAM++ and Layer-CAM "
        "to `Σ_k relu(w_ck) A_k`; rows within each group agree up to float rounding between "
        "near-tied maxima (the tolerance-0 column). Input-gradient methods (IG, Saliency) are at "
        "pixel resolution: IG concentrates more mass on the cue, its maximum misses more often. "
        f"Deletion (lower is better) and insertion (higher is better): "
        f"`captum_ext.metrics.deletion_insertion`, RISE protocol (deletion to 0, insertion from "
        f"the RISE blur, trapezoid area of the label's softmax), on the first {del_ins_images} "
        f"images, {del_ins_steps} steps of {math.ceil(pixels / del_ins_steps)} pixels.",
    ]
    return "\n".join(header + rows + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--del-ins-images", type=int, default=128,
                        help="images scored by deletion/insertion (the first ones)")
    parser.add_argument("--del-ins-steps", type=int, default=64,
                        help="RISE-protocol steps of the deletion/insertion curves")
    args = parser.parse_args()
    table = run(args.images, args.del_ins_images, args.del_ins_steps)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ground_truth.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

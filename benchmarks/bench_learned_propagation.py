"""LearnedPropagation against Grad-CAM, Integrated Gradients, Guided Backprop and Saliency (Captum).

Synthetic ground-truth task (issue 11, on the footing of issue 7's ``ground_truth_benchmark.py``):
the 2D cue task of :func:`captum_ext.datasets.make_synthetic_cue_data` and the shipped classifier
``load_synthetic_model(2)``. Evaluation on the same 512 held-out images (data seed 11), with the
true label as the target, and the same columns, computed by the same function
(``ground_truth_benchmark.score_maps``, i.e. the shared ``captum_ext.metrics``):

* pointing game at tolerance 2 px and 0 (``pointing_game``), relevance mass accuracy
  (``relevance_mass_accuracy``) against the cue's 7x7 box;
* deletion and insertion (``deletion_insertion``, RISE protocol: deletion to 0, insertion from
  the RISE blur, trapezoid area of the label's softmax) on the first 128 images, 64 steps.

So the Grad-CAM, IG and Saliency rows reproduce ``benchmarks/results/ground_truth.md``.

Maps: Grad-CAM is Captum's ``LayerGradCam`` at ``model.features[-1]`` (8x8, upsampled by the
metrics); IG is Captum's signed ``IntegratedGradients`` (32 steps, zero baseline), as in the
ground-truth table; Saliency is Captum's ``Saliency`` (|gradient|, its default). Guided Backprop
and LearnedPropagation return a (modified) gradient, so they are scored as |attribution| like
Saliency (LearnedPropagation's own training mask is |modified gradient| too). A second table
gives the other sign convention for IG, Guided Backprop and the fitted rule.

The rule is fitted on the first 1280 images of the classifier's own training split (data seed 0),
batch 32, 2 epochs (80 steps), Adam lr 1e-2, the default objective and predicted-class targets,
once per seed (the seed sets the rule's initialisation and the order of the images). Nothing was
tuned on the evaluation images: these are ``fit``'s defaults and the settings of the first
version of this benchmark.

Times: median over round-robin rounds, as ratios to Captum's ``Saliency`` (one forward + one
backward) and to a plain training step of the classifier (train mode, same batch), in the same
run, on one thread of a shared 2-core CPU, niced.

``--real`` adds the EfficientNet-Lite0 part (``real_learned_propagation.py``). The synthetic part
takes about 1.5 minutes on this machine; ``--real`` adds about 5 more when the machine is not
saturated (the previous version's did; the fit alone took 2), hence an option.

Run::

    PYTHONPATH=. python benchmarks/bench_learned_propagation.py [--seeds 0 1 2] [--real]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, IntegratedGradients, LayerGradCam, Saliency

from captum_ext.attr import LearnedPropagation
from captum_ext.datasets import make_synthetic_cue_data
from captum_ext.models import load_synthetic_model
from ground_truth_benchmark import TOLERANCE, score_maps

RESULTS = Path(__file__).parent / "results"
Explain = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
COLUMNS = ("pointing", "inside", "mass", "deletion", "insertion")
CHUNK = 64


def fit_rule(model, train_images: torch.Tensor, seed: int, epochs: int) -> tuple[LearnedPropagation, float, list[float]]:
    torch.manual_seed(seed)
    rule = LearnedPropagation(model)
    order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))
    loader = [(train_images[index],) for index in order.split(32)]
    start = time.perf_counter()
    history = rule.fit(loader, epochs=epochs, lr=1e-2)
    return rule, time.perf_counter() - start, history


def maps_of(explain: Explain, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.cat([
        explain(images[i : i + CHUNK], labels[i : i + CHUNK]).detach()
        for i in range(0, len(images), CHUNK)
    ])


def timings(model, train_images, train_labels, x, y, rule, rounds):
    saliency, guided = Saliency(model), GuidedBackprop(model)
    calls = {
        "Saliency": lambda: saliency.attribute(x, target=y),
        "LearnedPropagation.attribute": lambda: rule.attribute(x, target=y),
        "Guided Backprop": lambda: guided.attribute(x, target=y),
    }
    batch = [(train_images[:32],)]
    probe = LearnedPropagation(model)
    calls["LearnedPropagation.fit (1 step)"] = lambda: probe.fit(batch, max_steps=1)
    copy = load_synthetic_model(2).train()
    optimizer = torch.optim.SGD(copy.parameters(), lr=0.0)

    def plain_step():
        loss = F.cross_entropy(copy(train_images[:32]), train_labels[:32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    calls["plain training step"] = plain_step
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _span(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def _rows(results: dict[str, list[dict[str, float]]]) -> list[str]:
    return [
        f"| {name} | " + " | ".join(_span([s[c] for s in scores]) for c in COLUMNS) + " |"
        for name, scores in results.items()
    ]


def synthetic(seeds: list[int], rounds: int, num_images: int, fit_images: int, epochs: int) -> str:
    model = load_synthetic_model(2)
    train = make_synthetic_cue_data(fit_images, 2, seed=0)  # the classifier's training split
    test = make_synthetic_cue_data(num_images, 2, seed=11)  # ground_truth_benchmark's images
    x, y = test.images, test.labels
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()

    fitted, fit_seconds, losses = [], [], []
    for seed in seeds:
        rule, seconds, history = fit_rule(model, train.images, seed, epochs)
        fitted.append(rule)
        fit_seconds.append(seconds)
        losses.append((history[0], statistics.mean(history[-5:])))

    grad_cam = LayerGradCam(model, model.features[-1])
    integrated = IntegratedGradients(model)
    guided = GuidedBackprop(model)
    saliency = Saliency(model)
    untrained = LearnedPropagation(model)
    signed: dict[str, torch.Tensor] = {
        "ig": maps_of(lambda a, t: integrated.attribute(
            a, target=t, n_steps=32, internal_batch_size=512), x, y),
        "guided": maps_of(lambda a, t: guided.attribute(a, target=t), x, y),
    }
    fitted_maps = [maps_of(lambda a, t, r=r: r.attribute(a, target=t), x, y) for r in fitted]

    def score(maps: torch.Tensor) -> dict[str, float]:
        return score_maps(model, test, maps)

    main = {
        "Grad-CAM (Captum LayerGradCam)": [score(maps_of(
            lambda a, t: grad_cam.attribute(a, target=t), x, y))],
        "Integrated Gradients (Captum, 32 steps)": [score(signed["ig"])],
        "Guided Backprop (Captum), abs": [score(signed["guided"].abs())],
        "Saliency (Captum, abs gradient)": [score(maps_of(
            lambda a, t: saliency.attribute(a, target=t), x, y))],
        "LearnedPropagation, untrained (0.982^3 x gradient), abs": [score(maps_of(
            lambda a, t: untrained.attribute(a, target=t), x, y).abs())],
        "LearnedPropagation, fitted, abs": [score(m.abs()) for m in fitted_maps],
    }
    other = {
        "Integrated Gradients (Captum), abs": [score(signed["ig"].abs())],
        "Guided Backprop (Captum), signed": [score(signed["guided"])],
        "LearnedPropagation, fitted, signed": [score(m) for m in fitted_maps],
    }
    cost = timings(model, train.images, train.labels, x[:128], y[:128], fitted[0], rounds)

    header = (
        f"| method | pointing game (tol {TOLERANCE:g} px) | pointing game (tol 0) | relevance mass "
        "| deletion (RISE, lower is better) | insertion (RISE, higher is better) |"
    )
    lines = [
        f"Shipped model `load_synthetic_model(2)` (accuracy {accuracy:.3f} on the {num_images} "
        "held-out images, data seed 11), target = the true label; the metrics and images of "
        "`benchmarks/results/ground_truth.md` (deletion/insertion on the first 128 images, 64 "
        "steps). Fitted rules: seeds "
        f"{seeds}, mean [min, max]; each fitted on {fit_images} training images (data seed 0), "
        f"batch 32, {epochs} epochs ({epochs * fit_images // 32} steps), in "
        f"{statistics.mean(fit_seconds):.1f} s on average (loss "
        f"{statistics.mean(a for a, _ in losses):.3f} -> mean of the last 5 steps "
        f"{statistics.mean(b for _, b in losses):.3f}).",
        "",
        header,
        "|---|---:|---:|---:|---:|---:|",
        *_rows(main),
        "",
        "The other sign convention (same metrics):",
        "",
        header,
        "|---|---:|---:|---:|---:|---:|",
        *_rows(other),
        "",
        f"Cost (128 images for attributions, 32 for training steps; median of {rounds} "
        "round-robin rounds, one thread):",
        "",
        "| call | time | ratio |",
        "|---|---:|---|",
        f"| LearnedPropagation.attribute | {cost['LearnedPropagation.attribute'] * 1e3:.1f} ms | "
        f"{cost['LearnedPropagation.attribute'] / cost['Saliency']:.2f}x Captum Saliency |",
        f"| Guided Backprop (Captum) | {cost['Guided Backprop'] * 1e3:.1f} ms | "
        f"{cost['Guided Backprop'] / cost['Saliency']:.2f}x Captum Saliency |",
        f"| LearnedPropagation.fit, one step | "
        f"{cost['LearnedPropagation.fit (1 step)'] * 1e3:.1f} ms | "
        f"{cost['LearnedPropagation.fit (1 step)'] / cost['plain training step']:.2f}x a plain "
        "training step of the classifier |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--images", type=int, default=512, help="held-out images scored")
    parser.add_argument("--fit-images", type=int, default=1280)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--real", action="store_true",
                        help="also fit and evaluate on EfficientNet-Lite0 (slow on a CPU)")
    parser.add_argument("--real-steps", type=int, default=40)
    parser.add_argument("--real-del-ins-steps", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: steadier timings on a shared machine
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    start = time.perf_counter()
    sections = [
        "# LearnedPropagation (benchmarks/bench_learned_propagation.py)", "",
        "Timings on a shared 2-core CPU (other jobs may run; the timed calls use one thread): "
        "the ratios, measured in the same run, are indicative.", "",
        "## Synthetic cue task (ground truth)", "",
        synthetic(args.seeds, args.rounds, args.images, args.fit_images, args.epochs),
    ]
    if args.real:
        from real_learned_propagation import real_model_section

        sections += ["", "## EfficientNet-Lite0", "", real_model_section(args.real_steps, args.real_del_ins_steps)]
    sections += ["", f"Whole run: {time.perf_counter() - start:.0f} s."]
    text = "\n".join(sections)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "learned_propagation.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

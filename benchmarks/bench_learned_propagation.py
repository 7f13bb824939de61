"""LearnedPropagation against Grad-CAM, Integrated Gradients and Guided Backprop (Captum).

Synthetic ground-truth task (issue 11): ``ConfoundedShapes`` with 4 classes (horizontal,
vertical, diagonal, anti-diagonal bar) and the corner square's colour drawn independently of the
class, so the bar is the only cue; ``ConvClassifier(8, 16, 16)`` trained for 6 epochs on 2000
images; 200 test images. The rule is fitted on 1280 training images (batch 32, 2 epochs, Adam
lr 1e-2, the default objective), once per seed.

Metrics (private helpers here, stand-ins for the shared metrics):

* **deletion AUC**: zero (the background mean) the pixels in the order of the saliency, 4 at a
  time, up to 64 pixels (11% of the image, 9 times the bar), and average the softmax probability
  of the true class over the 17 steps (trapezoid); lower is better. Over the whole image the
  curve is flat after the bar is gone, and every method scores alike;
* **insertion AUC**: the same, inserting the pixels into a zero image; higher is better;
* **pointing game**: the maximum of the saliency lies on the bar dilated by one pixel.

Saliency of an input method = |attribution| summed over channels; Grad-CAM is Captum's
``LayerGradCam`` at the last ReLU with ``relu_attributions=True``, upsampled bilinearly. Times:
median over round-robin rounds, as ratios to Captum's ``Saliency`` (one forward + one backward)
and to a plain training step of the classifier, in the same run. On a shared 2-core CPU.

``--real`` adds a small run on the pretrained EfficientNet-Lite0 (augmented crops of the bundled
photos, ``real_learned_propagation.py``). The synthetic part takes about 1-1.5 minutes on this
machine; ``--real`` adds about 5 more (the whole run took 6.5 minutes under load), which is over
the usual 5-minute budget, hence an option.

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

from captum_ext._tensor_ops import upsample
from captum_ext.attr import LearnedPropagation
from captum_ext.datasets import ConfoundedShapes
from captum_ext.models import ConvClassifier

RESULTS = Path(__file__).parent / "results"
Saliency_ = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_classifier(train: ConfoundedShapes, epochs: int = 6) -> ConvClassifier:
    torch.manual_seed(0)
    model = ConvClassifier(channels=(8, 16, 16), num_classes=train.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for index in torch.randperm(len(train), generator=order).split(50):
            loss = F.cross_entropy(model(train.images[index]), train.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def removal_auc(model, saliency, x, y, *, insert: bool, per_step: int = 4, steps: int = 16):
    """Mean target probability while the top pixels are removed (or inserted), trapezoid."""
    n = x.shape[0]
    order = saliency.reshape(n, -1).argsort(1, descending=True)
    probabilities = []
    for step in range(steps + 1):
        chosen = torch.zeros(n, order.shape[1])
        chosen.scatter_(1, order[:, : step * per_step], 1.0)
        chosen = chosen.view(n, 1, *x.shape[2:])
        masked = x * chosen if insert else x * (1 - chosen)
        with torch.no_grad():
            probabilities.append(F.softmax(model(masked), 1).gather(1, y[:, None])[:, 0])
    curve = torch.stack(probabilities, 1)
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(1).mean().item()


def pointing_game(saliency, cue_masks):
    n = saliency.shape[0]
    peak = saliency.reshape(n, -1).argmax(1)
    hits = F.max_pool2d(cue_masks, 3, stride=1, padding=1).reshape(n, -1)
    return hits.gather(1, peak[:, None]).mean().item()


def channel_saliency(attribution: torch.Tensor) -> torch.Tensor:
    return attribution.detach().abs().sum(1, keepdim=True)


def methods(model: ConvClassifier, rules: dict[str, LearnedPropagation]) -> dict[str, Saliency_]:
    layer = model.features[-1]

    def grad_cam(x, y):
        cam = LayerGradCam(model, layer).attribute(x, target=y, relu_attributions=True)
        return upsample(cam, x.shape[2:]).detach()

    table: dict[str, Saliency_] = {
        "Grad-CAM (Captum)": grad_cam,
        "Integrated Gradients (Captum, 32 steps)": lambda x, y: channel_saliency(
            IntegratedGradients(model).attribute(x, target=y, n_steps=32)),
        "Guided Backprop (Captum)": lambda x, y: channel_saliency(
            GuidedBackprop(model).attribute(x, target=y)),
        "gradient (Captum Saliency)": lambda x, y: channel_saliency(
            Saliency(model).attribute(x, target=y, abs=False)),
    }
    for name, rule in rules.items():
        table[name] = lambda x, y, rule=rule: channel_saliency(rule.attribute(x, target=y))
    return table


def timings(model, train, x, y, rule, rounds):
    calls = {
        "Saliency": lambda: Saliency(model).attribute(x, target=y),
        "LearnedPropagation.attribute": lambda: rule.attribute(x, target=y),
        "Guided Backprop": lambda: GuidedBackprop(model).attribute(x, target=y),
    }
    batch = [(train.images[:32],)]
    probe = LearnedPropagation(model)
    calls["LearnedPropagation.fit (1 step)"] = lambda: probe.fit(batch, max_steps=1)
    copy = ConvClassifier(channels=(8, 16, 16), num_classes=train.num_classes)
    copy.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(copy.parameters(), lr=0.0)

    def plain_step():
        loss = F.cross_entropy(copy(train.images[:32]), train.labels[:32])
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


def _span(values):
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def synthetic(seeds: list[int], rounds: int) -> str:
    train = ConfoundedShapes(2000, num_classes=4, confounder_agreement=None, seed=10)
    test = ConfoundedShapes(200, num_classes=4, confounder_agreement=None, seed=11)
    model = train_classifier(train)
    with torch.no_grad():
        accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    loader = [(train.images[i : i + 32],) for i in range(0, 1280, 32)]
    rules = {"LearnedPropagation, untrained (0.98² x gradient)": [LearnedPropagation(model)]}
    fitted, fit_seconds = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        rule = LearnedPropagation(model)
        start = time.perf_counter()
        rule.fit(loader, epochs=2, lr=1e-2)
        fit_seconds.append(time.perf_counter() - start)
        fitted.append(rule)
    rules["LearnedPropagation, fitted"] = fitted
    x, y = test.images, test.labels
    rows = []
    for name in list(methods(model, {})) + list(rules):
        scores = []
        for rule in rules.get(name, [None]):
            saliency = methods(model, {name: rule} if rule else {})[name](x, y)
            scores.append((
                removal_auc(model, saliency, x, y, insert=False),
                removal_auc(model, saliency, x, y, insert=True),
                pointing_game(saliency, test.cue_masks),
            ))
        rows.append((name, scores))
    cost = timings(model, train, x, y, fitted[0], rounds)
    lines = [
        f"Synthetic cue task, 4 classes, classifier test accuracy {accuracy:.3f}. Fitted rules: "
        f"seeds {seeds}, mean [min, max]; fit time {statistics.mean(fit_seconds):.1f} s per rule "
        f"(80 steps of 32 images).",
        "",
        "| method | deletion AUC (lower is better) | insertion AUC (higher) | pointing game |",
        "|---|---|---|---|",
    ]
    for name, scores in rows:
        lines.append(
            f"| {name} | {_span([s[0] for s in scores])} | {_span([s[1] for s in scores])} | "
            f"{_span([s[2] for s in scores])} |"
        )
    lines += [
        "",
        f"Cost (200 images for attributions, 32 for training steps; median of {rounds} "
        "round-robin rounds):",
        "",
        "| call | time | ratio |",
        "|---|---|---|",
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
    parser.add_argument("--real", action="store_true",
                        help="also fit and evaluate on EfficientNet-Lite0 (slow on a CPU)")
    parser.add_argument("--real-steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: steadier timings on a shared machine
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    sections = ["# LearnedPropagation (benchmarks/bench_learned_propagation.py)", "",
                "Timings on a shared 2-core CPU (other jobs running): ratios are indicative.", "",
                "## Synthetic cue task", "", synthetic(args.seeds, args.rounds)]
    if args.real:
        from real_learned_propagation import real_model_section

        sections += ["", "## EfficientNet-Lite0", "", real_model_section(args.real_steps)]
    text = "\n".join(sections)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "learned_propagation.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

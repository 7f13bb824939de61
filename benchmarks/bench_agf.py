"""AGF vs Grad-CAM on the cat photo: do the maps of two co-occurring classes differ? (issue 10)

Setting: EfficientNet-Lite0 (offline weights), ``preprocess_imagenet(load_photo("chelsea"))``;
top-1 is 285 (Egyptian cat, p = 0.80), followed by 281 (tabby) and 282 (tiger cat), about 0.08
each. For the top-1 class and each co-occurring class we compute:

* AGF (:class:`captum_ext.attr.AttributionGuidedFactorization`, official defaults; also with the
  ``|a| : |b|`` residual split), the paper's heatmap (relevance / max, summed over channels),
  at 224x224 and average-pooled to 7x7;
* Grad-CAM: Captum ``LayerGradCam`` on the input of ``model._avg_pooling``
  (``attribute_to_layer_input=True``), 7x7, raw and with ``relu_attributions=True``.

Reported: the Pearson correlation between the top-1 map and the second class's map for each
method (the paper's "saliency bias": Grad-CAM's class maps are expected to be near-identical), and
AGF's time as a ratio to one forward + backward pass and to Grad-CAM, measured in the same run
(median of round-robin repeats). Deletion/insertion is not reported: ``captum_ext.metrics`` is not
available on this branch.

Run::

    PYTHONPATH=. python benchmarks/bench_agf.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam

from captum_ext.attr import AttributionGuidedFactorization
from captum_ext.datasets import load_photo
from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet

RESULTS = Path(__file__).parent / "results"
TOP1, SECOND = 285, (281, 282)
NAMES = {285: "Egyptian cat", 281: "tabby", 282: "tiger cat"}


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = load_efficientnet_lite0()
    x = preprocess_imagenet(load_photo("chelsea"))
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    agf = AttributionGuidedFactorization(model)
    agf_abs = AttributionGuidedFactorization(model, residual_rule="abs")
    gradcam = LayerGradCam(model, model._avg_pooling)

    def grad_cam(target: int, relu: bool = False) -> torch.Tensor:
        return gradcam.attribute(x, target=target, attribute_to_layer_input=True, relu_attributions=relu)

    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg)[0, TOP1], xg)

    maps: dict[str, dict[int, torch.Tensor]] = {
        "AGF (official LRP-0 residual split)": {},
        "AGF (abs residual split)": {},
        "AGF pooled to 7x7": {},
        "Grad-CAM (raw)": {},
        "Grad-CAM (ReLU)": {},
    }
    for target in (TOP1,) + SECOND:
        official = AttributionGuidedFactorization.heatmap(agf.attribute(x, target=target))
        maps["AGF (official LRP-0 residual split)"][target] = official
        maps["AGF (abs residual split)"][target] = AttributionGuidedFactorization.heatmap(
            agf_abs.attribute(x, target=target)
        )
        maps["AGF pooled to 7x7"][target] = F.adaptive_avg_pool2d(official, 7)
        maps["Grad-CAM (raw)"][target] = grad_cam(target)
        maps["Grad-CAM (ReLU)"][target] = grad_cam(target, relu=True)

    calls = {
        "forward + backward": forward_backward,
        "Grad-CAM": lambda: grad_cam(TOP1),
        "AGF": lambda: agf.attribute(x, target=TOP1),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(v) for name, v in times.items()}

    lines = [
        "# AGF vs Grad-CAM: class-specificity on the cat photo (EfficientNet-Lite0)",
        "",
        "Pearson correlation between the map for the top-1 class "
        f"{TOP1} ({NAMES[TOP1]}, p = {probs[TOP1]:.3f}) and the map for a co-occurring class. "
        "Lower = the two classes' explanations differ more.",
        "",
        "| method | resolution | "
        + " | ".join(f"corr({TOP1}, {c} {NAMES[c]}, p = {probs[c]:.3f})" for c in SECOND)
        + " |",
        "|---|---|" + "---|" * len(SECOND),
    ]
    for name, per_class in maps.items():
        size = "x".join(str(s) for s in per_class[TOP1].shape[-2:])
        cells = " | ".join(f"{_corr(per_class[TOP1], per_class[c]):.3f}" for c in SECOND)
        lines.append(f"| {name} | {size} | {cells} |")
    lines += [
        "",
        f"Time (median of {args.repeats} round-robin repeats, one image, shared 2-core CPU machine, "
        f"{torch.get_num_threads()} intra-op thread(s), torch {torch.__version__}):",
        "",
        "| method | time (s) | / forward+backward | / Grad-CAM |",
        "|---|---|---|---|",
    ]
    for name, value in median.items():
        lines.append(
            f"| {name} | {value:.3f} | {value / median['forward + backward']:.1f}x | "
            f"{value / median['Grad-CAM']:.1f}x |"
        )
    lines += [
        "",
        "Observed when this benchmark was written (look at the maps before relying on it): AGF's "
        "maps are smooth and low-frequency; for 285 the positive relevance lies on the upper head "
        "(forehead, ears) and the negative on the lower image; for 281 and 282 the positive "
        "relevance lies on the right side of the image (right cheek, the edge and the background) "
        "and the negative on the left. The maps of the classes differ, as the paper claims, but "
        "whether they are faithful needs a metric such as deletion/insertion.",
        "",
        "Deletion/insertion: not reported (`captum_ext.metrics.deletion_insertion` is not "
        "available on this branch).",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agf.md").write_text(table)


if __name__ == "__main__":
    main()

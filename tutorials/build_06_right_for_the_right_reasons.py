"""Build ``06_right_for_the_right_reasons.ipynb`` with nbformat (see ``_build.py``).

Run from the repository root: ``python tutorials/build_06_right_for_the_right_reasons.py``
(``--execute`` also runs it and stores the outputs).
"""

from __future__ import annotations

from _build import main

CELLS = [
    ("md", """# Right for the right reasons: training a model through its explanations

A classifier that finds a shortcut in its training data looks perfect until the shortcut goes away. This tutorial builds such a shortcut on purpose, shows it with Captum's `LayerGradCam`, and then removes it by adding a loss on the explanation itself: `captum_ext.losses.AttributionRegionLoss` penalises the share of the Grad-CAM mass that falls on the shortcut. The Grad-CAM map is differentiable because Captum's layer methods accept `grad_kwargs={"create_graph": True}`, so the penalty trains the model like any other loss term (the idea of Ross et al., *Right for the Right Reasons*, IJCAI 2017, applied to a CAM instead of input gradients).

Everything runs on a CPU in well under two minutes: the data are synthetic and the model is tiny."""),
    ("code", """import time

import numpy as np
import torch
import torch.nn.functional as F
import matplotlib
matplotlib.use("Agg")
from matplotlib.figure import Figure

from captum.attr import LayerGradCam

from captum_ext.datasets import ConfoundedShapes, confounded_splits
from captum_ext.losses import (
    AttributionRegionLoss, LogProbabilities, RightForTheRightReasonsLoss, region_mass_fraction,
)
from captum_ext.models import ConvClassifier

torch.manual_seed(0)
torch.set_num_threads(1)  # the model is tiny: one thread is fastest, and steadier on a busy CPU"""),
    ("md", """## A task with a shortcut

`ConfoundedShapes` draws a gray bar on a noisy background: a horizontal bar is class 0, a vertical bar class 1. In a random corner it adds a small coloured square, the **confounder**. In the training split the square is red for every class-0 image and green for every class-1 image, a perfect shortcut. In the test split its colour is drawn independently of the class (decorrelated), so only the bar tells the classes apart. Each example comes with two ground-truth masks: the bar (`cue_masks`) and the square (`confounder_masks`)."""),
    ("code", """train_set, test_set = confounded_splits(1500, 1000, num_classes=2, seed=0)
print("training split: square colour agrees with the class in", train_set.agreement_rate, "of the images")
print("test split:     square colour agrees with the class in", round(test_set.agreement_rate, 3), "of the images")

figure = Figure(figsize=(10, 2.4))
axes = figure.subplots(1, 6)
for axis, index in zip(axes, range(6)):
    axis.imshow(train_set.images[index].permute(1, 2, 0).clamp(0, 1).numpy())
    axis.set_title(f"class {int(train_set.labels[index])}")
    axis.axis("off")
figure"""),
    ("md", """## Training with and without the explanation loss

One training function serves both runs. The only difference is one line: the loss adds `AttributionRegionLoss` on the Grad-CAM of the true class at the last ReLU, with the square as the *forbidden* region. The loss calls `LayerGradCam(...).attribute(x, target=y, grad_kwargs={"create_graph": True})`, upsamples the map to the mask with `captum_ext._tensor_ops.upsample` (a no-op here: the last feature map is already 24×24) and returns λ × the share of |map| inside the square.

The Grad-CAM is built on `LogProbabilities(model)`, so it explains log p_y rather than the logit. The gradient of log p_y is the logit's gradient minus the probability-weighted average over all classes: it keeps what separates the classes and drops what they share. A shortcut lives exactly in the separating part. On logit maps, the shared part dilutes the shortcut's share, and some training seeds kept using the square while its share looked small (see `benchmarks/results/losses.md`)."""),
    ("code", """def train(explanation_weight, epochs=6, batch_size=50, seed=0):
    torch.manual_seed(seed)
    model = ConvClassifier(channels=(8, 16), num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    region_loss = AttributionRegionLoss(
        LayerGradCam(LogProbabilities(model), model.features[-1]),
        lambda_explanation=explanation_weight,
    )
    order = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        for index in torch.randperm(len(train_set), generator=order).split(batch_size):
            x, y = train_set.images[index], train_set.labels[index]
            loss = F.cross_entropy(model(x), y)
            if explanation_weight:
                loss = loss + region_loss(x, y, train_set.confounder_masks[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), time.perf_counter() - start


baseline, baseline_seconds = train(explanation_weight=0.0)
guided, guided_seconds = train(explanation_weight=5.0)
print(f"training time: plain {baseline_seconds:.1f} s, with the explanation loss {guided_seconds:.1f} s")"""),
    ("md", """## Evaluation on the decorrelated test split

Two numbers per model: the accuracy when the square no longer predicts the class, and the share of the attribution mass (absolute values) that sits on the square. The square covers 16 of the 576 pixels (2.8%). The mass share is computed with `region_mass_fraction`, the same function the loss uses, here on the test images, without a graph, and on the plain Grad-CAM of the logit (the map a user would look at, not the one the loss trained)."""),
    ("code", """def evaluate(model):
    with torch.no_grad():
        accuracy = (model(test_set.images).argmax(1) == test_set.labels).float().mean().item()
    maps = LayerGradCam(model, model.features[-1]).attribute(test_set.images, target=test_set.labels)
    mass = region_mass_fraction(maps, test_set.confounder_masks).mean().item()
    return accuracy, mass, maps


base_accuracy, base_mass, base_maps = evaluate(baseline)
guided_accuracy, guided_mass, guided_maps = evaluate(guided)
print("| model | decorrelated test accuracy | Grad-CAM mass on the confounder |")
print("|---|---|---|")
print(f"| cross-entropy only | {base_accuracy:.3f} | {base_mass:.3f} |")
print(f"| + AttributionRegionLoss | {guided_accuracy:.3f} | {guided_mass:.3f} |")
assert guided_accuracy > base_accuracy + 0.2 and guided_mass < 0.5 * base_mass"""),
    ("md", """The plain model is at chance once the shortcut is gone, and about a quarter of its Grad-CAM mass sits on a square that covers under 3% of the image. The model trained with the explanation loss reads the bar. The maps show it. Rows 2 and 3 are the plain model's Grad-CAM of the logit and of log p_y; rows 4 and 5 the same for the model trained with the loss:"""),
    ("code", """def log_p_maps(model):
    return LayerGradCam(LogProbabilities(model), model.features[-1]).attribute(
        test_set.images[:6], target=test_set.labels[:6])


rows = [
    ("plain: logit", base_maps), ("plain: log p", log_p_maps(baseline)),
    ("with the loss: logit", guided_maps), ("with the loss: log p", log_p_maps(guided)),
]
figure = Figure(figsize=(12, 10))
axes = figure.subplots(5, 6)
for column in range(6):
    axes[0, column].imshow(test_set.images[column].permute(1, 2, 0).clamp(0, 1).numpy())
    axes[0, column].set_title(f"class {int(test_set.labels[column])}")
    for row, (name, maps) in enumerate(rows, start=1):
        axes[row, column].imshow(maps[column, 0].abs().detach().numpy(), cmap="magma")
        if column == 0:
            axes[row, column].set_title(name, loc="left")
    for row in range(5):
        axes[row, column].axis("off")
figure.savefig("right_reasons_maps.png", dpi=60)
figure"""),
    ("md", """With the loss, the maps sit on the bar, and the square itself is dark. Some maps still light up *next to* the square. A square has straight 4-pixel edges, and to the bar detectors the model has learned, an edge looks like a short bar, whatever the square's colour. That is a response to the square's shape, not to its colour (the shortcut), and the decorrelated accuracy shows that the colour no longer decides anything. It also shows the limit of a mask penalty: it keeps attribution off the masked pixels only. A feature seen through the receptive field can still show up around the mask, so when you measure, count a margin around the mask too (`benchmarks/bench_losses.py` reports both)."""),
    ("md", """## The other losses, and what they cost

* `RightForTheRightReasonsLoss(model, lambda_grads=...)` is Ross et al.'s original: cross-entropy plus λ·Σ(A ⊙ ∂Σₖ log pₖ/∂x)², input gradients of the summed log-probabilities inside the forbidden mask `A`. It replaces the forward pass and the cross-entropy: `loss = criterion(x, y, forbidden)`.
* `HeatmapSegmentationLoss` trains heatmaps against pixel labels (a TW-autoencoder-style pixel cross-entropy over class heatmaps, or BCE / soft Dice on max-normalised heatmaps).

Each of them needs a backward pass with a graph and then differentiates through it (double backpropagation), so a training step costs a few plain steps. A quick measurement on one batch (`benchmarks/bench_losses.py` does it properly, with every loss and several seeds):"""),
    ("code", """model = ConvClassifier(channels=(8, 16), num_classes=2)
x, y = train_set.images[:50], train_set.labels[:50]
forbidden = train_set.confounder_masks[:50]
region_loss = AttributionRegionLoss(
    LayerGradCam(LogProbabilities(model), model.features[-1]), lambda_explanation=5.0
)
rrr_loss = RightForTheRightReasonsLoss(model, lambda_grads=1.0)
steps = {
    "cross-entropy": lambda: F.cross_entropy(model(x), y),
    "+ AttributionRegionLoss": lambda: F.cross_entropy(model(x), y) + region_loss(x, y, forbidden),
    "RightForTheRightReasonsLoss": lambda: rrr_loss(x, y, forbidden),
}
seconds = {name: [] for name in steps}
for _ in range(5):
    for name, step in steps.items():
        start = time.perf_counter()
        step().backward()
        seconds[name].append(time.perf_counter() - start)
        model.zero_grad()
plain = np.median(seconds["cross-entropy"])
for name, values in seconds.items():
    print(f"{name:28s} {np.median(values) / plain:.2f} x a plain step")"""),
]



if __name__ == "__main__":
    main(CELLS, "06_right_for_the_right_reasons.ipynb", "rrr")

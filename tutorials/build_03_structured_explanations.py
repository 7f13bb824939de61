"""Build ``03_structured_explanations.ipynb`` with nbformat.

Run from the repository root: ``python tutorials/build_03_structured_explanations.py`` (add
``--execute`` to store the outputs, as the committed notebook has them).
"""

from __future__ import annotations

from _build import TIMER_END, TIMER_START, main

CELLS = [
    ("md", """# Structured explanations: one explanation is not enough

A saliency map gives one answer to "why this class?". Often there are several: a cat can be recognised from its face *or* from its ears and fur, and a heatmap blends those answers into one blob. **Structured Attention Graphs** (SAGs; Shitole, Li, Kahng, Tadepalli, Fern, *One Explanation is Not Enough: Structured Attention Graphs for Image Classification*, NeurIPS 2021) make the alternatives explicit:

* the image is cut into a 7×7 grid of patches; a set of patches `S` is shown on a black image (the patches are revealed with bilinear tents), and `p(S)` is the model's probability for the class;
* a **minimal sufficient explanation** (MSE) is a set with `p(S) ≥ τ · p_full` (τ = 0.9: 90 % of the full image's confidence) from which no single patch can be removed;
* a beam search, guided by a coarse I-GOS ranking, collects MSEs; a diverse subset (pairwise overlap ≤ 1 patch) becomes the roots of a graph, and each root is expanded by removing one patch at a time to show how fragile it is.

`captum_ext.structures.StructuredAttentionGraph(model).search(x, target)` runs all of it, batched and memoised (no patch set is scored twice), and returns a `SAGResult`; `captum_ext.visualization.plot_sag` draws it. The second half of the tutorial uses two dataset-level tools built on the search, `count_sub_explanations` and `cross_test`, on the synthetic task."""),
    ("code", TIMER_START + """

import numpy as np
import torch
import torch.nn.functional as F
import matplotlib
matplotlib.use("Agg")
from matplotlib.figure import Figure

from captum.attr import LayerGradCam

from captum_ext.datasets import load_photo, make_synthetic_cue_data
from captum_ext.models import (
    IMAGENET_MEAN, IMAGENET_STD, CueClassifier, load_efficientnet_lite0, load_synthetic_model,
    preprocess_imagenet,
)
from captum_ext.structures import StructuredAttentionGraph, count_sub_explanations, cross_test
from captum_ext.visualization import overlay_heatmap, plot_sag

torch.manual_seed(0)
model = load_efficientnet_lite0()
photo = load_photo("chelsea")
x = preprocess_imagenet(photo)
image = F.interpolate(photo[None], size=(224, 224), mode="bilinear", antialias=True)[0].clamp(0, 1)
# black in pixel space is -mean/std after ImageNet normalisation
black = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1)
with torch.no_grad():
    target = int(model(x).argmax())
print("target class", target)"""),
    ("md", """## The search, at the paper's defaults

The defaults reproduce the official code's beam search: 7×7 grid, beam width 3, 15 successors per state, a stop once more than 10 MSEs are found (the depth in progress is finished, so there can be a few more), τ = 0.9 relative to `p_full`, at most 1 shared patch between the roots drawn, 3 roots, and a 40 % threshold for expanding a node. We pass the black baseline explicitly, because the input is normalised (the default baseline is zeros). `generator` seeds the path noise of the coarse I-GOS ranking, which orders the successors: the search, and its cost, depend on it."""),
    ("code", """sag = StructuredAttentionGraph(model)
start = time.perf_counter()
result = sag.search(x, target=target, baselines=black, generator=torch.Generator().manual_seed(1))
search_seconds = time.perf_counter() - start
print(f"p_full = {result.p_full:.3f}, threshold = {result.threshold:.3f}")
print(f"{len(result.roots)} minimal sufficient explanations found, {len(result.explanations)} drawn as roots")
print(f"images through the model: {result.forward_images} (search and graph) + "
      f"{result.ranking_forward_images} for the I-GOS ranking ({result.ranking_backward_images} with a backward pass)")
print(f"distinct patch sets scored: {result.states_scored} of {result.score_requests} requests; {search_seconds:.1f} s")
print("DNF of the roots:", result.dnf)"""),
    ("md", """The official code pushes each patch set through the model one at a time, about 14,700 images for this photo; the memoised, batched search needs 889 with this seed. Over ranking seeds 0-4, `benchmarks/results/sag.md` finds this same search (889 images, 11 MSEs) for four seeds, and for seed 0 a longer one (2,807 images, 15 MSEs); each ends with 1 root after overlap pruning, as the official run does.

## Every minimal sufficient explanation

Each root is a different set of patches that, on its own, keeps at least 90 % of the model's confidence. Patches are numbered row by row (`P0` top left, `P48` bottom right)."""),
    ("code", """def revealed(patches, grid=result.grid_shape):
    cells = torch.zeros(grid[0] * grid[1])
    cells[list(patches)] = 1.0
    up = F.interpolate(cells.view(1, 1, *grid), size=(224, 224), mode="nearest")[0]
    return (image * up.clamp(min=0.12)).permute(1, 2, 0).numpy()


shown = result.roots[:8]
figure = Figure(figsize=(2.6 * len(shown), 3.0), layout="constrained")
for axis, explanation in zip(np.atleast_1d(figure.subplots(1, len(shown))), shown):
    axis.imshow(revealed(explanation.patches))
    axis.set_title(f"{len(explanation.patches)} patches: {100 * explanation.relative_confidence:.0f} %", fontsize=9)
    axis.axis("off")
figure"""),
    ("md", """How often each patch appears among the MSEs shows what they share (the core) and where they differ (the alternatives); next to it, Grad-CAM's single map for comparison."""),
    ("code", """grid = result.grid_shape
frequency = torch.zeros(grid)
for explanation in result.roots:
    frequency += explanation.mask.reshape(grid).float()
frequency /= len(result.roots)
grad_cam = LayerGradCam(model, model._avg_pooling).attribute(
    x, target=target, attribute_to_layer_input=True, relu_attributions=True).detach()

figure = Figure(figsize=(11, 4.4), layout="constrained")
left, right = figure.subplots(1, 2)
overlay_heatmap(image, frequency[None, None], ax=left, interpolation="nearest",
                title="share of the MSEs that use each patch")
overlay_heatmap(image, grad_cam, ax=right, title="Grad-CAM (one map)")
figure"""),
    ("md", """## The graph

`plot_sag` draws each root (thick frame) with its confidence relative to `p_full`, and below it the sets obtained by removing one of its patches (outlined in red; the thicker the outline, the larger the drop in confidence). Nodes below 40 % are not expanded further. Here two levels are drawn."""),
    ("code", """figure = plot_sag(result, image, max_depth=2)
figure.savefig("sag_chelsea.png", dpi=60, facecolor="black")
figure"""),
    ("md", """The same information is in `result.nodes` and `result.edges`, for your own analysis:"""),
    ("code", """by_id = {node.id: node for node in result.nodes}
for node in result.nodes:
    if node.depth > 1:
        continue
    removed = ", ".join(f"without P{patch}: {by_id[child].percent} %" for child, patch, _ in node.children)
    print(f"{'  ' * node.depth}node {node.id} ({len(node.patches)} patches, {node.percent} %)"
          + (f" -> {removed}" if removed else ""))
print("edges:", [(edge.parent, edge.child, f"-P{edge.removed_patch}", edge.drop) for edge in result.edges[:4]], "...")"""),
    ("md", """## Counting sub-explanations and cross-testing models (synthetic task)

Two tools use the search to compare *models* rather than explain one image (Jiang, Khorram, Li, *Comparing the Decision-Making Mechanisms by Transformers and CNNs via Explanation Methods*, CVPR 2024). Both repeat the search or an explanation per image, so we run them on the synthetic cue task (32×32 images, one cue shape among distractors decides the class), where the models are tiny:

* `count_sub_explanations(model, x, target, ...)` runs the search and counts, for each MSE, its proper subsets that still keep `τ_sub` of the confidence. Many high-confidence sub-explanations mean the model's evidence is redundant: it can recognise the class from fragments.
* `cross_test(models, inputs, ...)` takes the top regions that one model's explanation finds and shows them to every other model. `C[A, B]` is model B's probability for the class from model A's regions.

The models: the shipped classifier of the task (`load_synthetic_model(2)`, channels 8-16-32), a smaller one trained here in a few seconds (channels 8-16, 6 epochs on 1000 images), and an untrained one."""),
    ("code", """torch.set_num_threads(1)  # tiny models from here on: one thread is fastest
shipped = load_synthetic_model(2)
data = make_synthetic_cue_data(1000, spatial_dims=2, seed=0)
torch.manual_seed(0)
small = CueClassifier(spatial_dims=2, in_channels=1, channels=(8, 16), num_classes=4)
optimiser = torch.optim.Adam(small.parameters(), lr=1e-2)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-2, total_steps=6 * 20)
start = time.perf_counter()
small.train()
for epoch in range(6):
    for index in torch.randperm(1000).split(50):
        loss = F.cross_entropy(small(data.images[index]), data.labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
small.eval()
untrained = CueClassifier(spatial_dims=2, in_channels=1, channels=(8, 16), num_classes=4).eval()
test = make_synthetic_cue_data(64, spatial_dims=2, seed=11)
models = {"shipped": shipped, "small": small, "untrained": untrained}
with torch.no_grad():
    for name, net in models.items():
        accuracy = (net(test.images).argmax(1) == test.labels).float().mean().item()
        print(f"{name:10s} accuracy {accuracy:.3f}")
print(f"(the small model trained in {time.perf_counter() - start:.1f} s)")"""),
    ("md", """Sub-explanation counts for three test images (8×8 grid of 4×4-pixel patches, black baseline, τ = 0.9, thresholds τ_sub = 0.5 … 0.8). Two search settings keep it quick: `max_num_roots=5`, and `max_depth=0`, because counting does not need the removal graph. (Without a depth limit the graph is a tree expanded while a node keeps 40 % of the confidence: for a model that stays confident on a few patches of a large MSE it grows as 3^depth, which exhausts memory. Limit `max_depth` whenever only the MSEs are needed.)"""),
    ("code", """print("| model | image | MSEs | MSE sizes | sub-explanations at τ_sub = 0.5 / 0.6 / 0.7 / 0.8 |")
print("|---|---:|---:|---|---|")
for name in ("shipped", "small"):
    for i in range(3):
        counts = count_sub_explanations(models[name], test.images[i:i + 1], int(test.labels[i]), grid=8,
                                        baselines=0.0, max_num_roots=5, max_depth=0,
                                        generator=torch.Generator().manual_seed(0))
        sizes = ", ".join(str(len(e)) for e in counts.explanations)
        print(f"| {name} | {i} | {len(counts.explanations)} | {sizes} | "
              f"{' / '.join(str(int(c)) for c in counts.counts)} |")"""),
    ("md", """The cross-test below uses Grad-CAM as the explainer (the default is iGOS++, which is slower), the true label as the class (`class_source="label"`), and the mean over budgets of 5 % to 50 % of the 8×8 cells:"""),
    ("code", """def grad_cam_explainer(net, inputs, classes):
    return LayerGradCam(net, net.features[-1]).attribute(inputs, target=classes, relu_attributions=True)


crossed = cross_test(models, test.images, test.labels, explain=grad_cam_explainer, grid=8,
                     class_source="label")
names = crossed.names
for title, matrix in [("C[A, B]: model B's probability of the label from model A's top regions", crossed.matrix),
                      ("C[A, B] / C[B, B]: relative to B's own regions", crossed.normalised())]:
    print(title)
    print(" " * 20 + "".join(f"{'B = ' + b:>16s}" for b in names))
    for a, row in zip(names, matrix):
        print(f"{'A = ' + a:20s}" + "".join(f"{value:16.3f}" for value in row.tolist()))
    print()"""),
    ("md", """Read the columns (one target model each). Regions chosen by either trained model carry the class to the other trained model about as well as its own regions do (the normalised entries between the two trained models are close to 1), so the two rely on the same evidence, the cue. Regions chosen by the untrained model's map carry much less. The untrained model's column stays at chance (0.25) whatever it is shown, so its normalised entries say nothing. `crossed.normalised()`, `crossed.distance()` and `crossed.embedding()` turn the matrix into a distance between models and a 2D map of them, the paper's way of comparing architectures; `cross_test_dataset` and `count_sub_explanations_dataset` run the same over a `DataLoader`, sharded over processes with `torchrun`."""),
    ("code", TIMER_END),
]


if __name__ == "__main__":
    main(CELLS, "03_structured_explanations.ipynb", "sag")

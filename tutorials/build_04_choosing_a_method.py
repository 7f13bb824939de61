"""Build ``04_choosing_a_method.ipynb`` with nbformat.

Run from the repository root: ``python tutorials/build_04_choosing_a_method.py`` (add
``--execute`` to store the outputs, as the committed notebook has them).
"""

from __future__ import annotations

from _build import TIMER_END, TIMER_START, main

CELLS = [
    ("md", """# Choosing a method: metrics with and without a ground truth

Explanation methods disagree, and looking at heatmaps does not tell you which one to trust. `captum_ext.metrics` gives two kinds of evidence, and this tutorial computes both, live and at a small scale, then puts them next to the full benchmark tables committed in `benchmarks/results/`:

1. **Where the ground truth is known** (a synthetic task in which one shape decides the class): does the map point at that shape? `pointing_game`, `relevance_mass_accuracy`, with their chance levels.
2. **Where it is not** (a real photo and a real model): is the map *faithful*, i.e. does removing what it highlights change the prediction? `deletion_insertion`, `average_drop`, `average_increase`; and is it *sensitive to the model* at all? `model_parameter_randomisation` (Adebayo et al.'s sanity check).

Every metric takes precomputed maps (or an `explain(model, inputs, target)` callable) and returns one number per example; none of them imports a specific method."""),
    ("code", TIMER_START + """

import json
from pathlib import Path

import numpy as np
import torch
import matplotlib
matplotlib.use("Agg")
from IPython.display import Markdown, display

from captum.attr import IntegratedGradients, LayerGradCam, Saliency

from captum_ext.attr import LayerGradCamPlusPlus, LayerLayerCam, LayerScoreCam
from captum_ext.datasets import load_photo, make_synthetic_cue_data
from captum_ext.metrics import (
    average_drop, average_increase, deletion_insertion, model_parameter_randomisation,
    pointing_game, pointing_game_chance, relevance_mass_accuracy,
)
from captum_ext.models import load_efficientnet_lite0, load_synthetic_model, preprocess_imagenet
from captum_ext.visualization import comparison_grid

torch.manual_seed(0)
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    display(Markdown("\\n".join(lines)))"""),
    ("md", """## Part 1: the ground-truth benchmark

The synthetic cue task (`captum_ext.datasets.make_synthetic_cue_data`): 32×32 images of noise with one **cue** (a plus, a diagonal cross, a frame or a disc) that decides the class, and three **distractors** (boxes, bars) that never do. `masks` marks the cue's 7×7 box. The classifier shipped with the package (`load_synthetic_model(2)`) is 100 % accurate on held-out data, so it must use the cue, and a good explanation must point at it.

We explain 128 held-out images (the benchmark script uses 512) for the true label, with six methods and a random map: three CAMs at the last ReLU (8×8), Score-CAM (gradient-free) and two input-gradient methods from Captum."""),
    ("code", """synthetic_model = load_synthetic_model(2)
data = make_synthetic_cue_data(128, spatial_dims=2, seed=11)
images, labels, masks = data.images, data.labels, data.masks
with torch.no_grad():
    print("accuracy on these images:", (synthetic_model(images).argmax(1) == labels).float().mean().item())

layer = synthetic_model.features[-1]
noise = torch.Generator().manual_seed(0)
explainers = {
    "Grad-CAM (Captum)": lambda m, x, t: LayerGradCam(m, m.features[-1]).attribute(x, target=t),
    "Grad-CAM++": lambda m, x, t: LayerGradCamPlusPlus(m, m.features[-1]).attribute(x, target=t),
    "Layer-CAM": lambda m, x, t: LayerLayerCam(m, m.features[-1]).attribute(x, target=t),
    "Score-CAM": lambda m, x, t: LayerScoreCam(m, m.features[-1]).attribute(x, target=t),
    "Integrated Gradients (Captum)": lambda m, x, t: IntegratedGradients(m).attribute(
        x, target=t, n_steps=16, internal_batch_size=512),
    "Saliency (Captum)": lambda m, x, t: Saliency(m).attribute(x, target=t),
    "random": lambda m, x, t: torch.rand(x.shape, generator=noise),  # redrawn at every call
}
synthetic_maps, synthetic_seconds = {}, {}
for name, explain in explainers.items():
    start = time.perf_counter()
    synthetic_maps[name] = explain(synthetic_model, images, labels).detach()
    synthetic_seconds[name] = (time.perf_counter() - start) / len(images)"""),
    ("md", """The four numbers per method:

* **pointing game** (Zhang et al. 2016): a hit when the map's maximum lies within 2 px of the cue's box (TorchRay's 15 px at 224², scaled to 32²); chance is the share of the image within 2 px of the box;
* **relevance mass** (Arras et al. 2022): the share of the positive map inside the box (the box covers about 5 % of the image);
* **deletion / insertion** (RISE protocol, Petsiuk et al. 2018): pixels removed (set to 0) or inserted into a blurred image in the map's order, 32 steps; the area under the label's softmax probability. Lower deletion and higher insertion are better; on the first 64 images."""),
    ("code", """chance = pointing_game_chance(masks, tolerance=2).nanmean().item()
rows = []
for name, maps in synthetic_maps.items():
    hits = pointing_game(maps, masks, tolerance=2).nanmean().item()
    mass = relevance_mass_accuracy(maps, masks).nanmean().item()
    causal = deletion_insertion(synthetic_model, images[:64], maps[:64], labels[:64].tolist(),
                                protocol="rise", n_steps=32, batch_size=512)
    rows.append([name, f"{hits:.3f}", f"{mass:.3f}", f"{causal.deletion.mean():.3f}",
                 f"{causal.insertion.mean():.3f}", f"{1000 * synthetic_seconds[name]:.2f}"])
print(f"pointing-game chance level: {chance:.3f}; the box's share of the image: {masks.float().mean():.3f}")
markdown_table(["method", "pointing game ↑", "relevance mass ↑", "deletion ↓", "insertion ↑", "ms / image"], rows)"""),
    ("md", """The CAMs point at the cue almost every time; the input-gradient methods less often, although Integrated Gradients puts more of its mass on the cue (it is at pixel resolution, the CAMs at 8×8), and it has the best deletion score. The random map is at chance, which checks the metrics themselves. No single number ranks the methods: choose the property your use needs (localisation, or faithfulness at pixel level).

A few of the maps, with the cue's box in the first column (`comparison_grid` draws images × methods):"""),
    ("code", """shown = ["Grad-CAM (Captum)", "Score-CAM", "Integrated Gradients (Captum)", "Saliency (Captum)", "random"]
figure = comparison_grid(
    images[:4].clamp(0, 1).expand(-1, 3, -1, -1),
    {"cue box": masks[:4].float(), **{name: synthetic_maps[name][:4] for name in shown}},
    row_labels=[f"label {int(label)}" for label in labels[:4]], sign="absolute", cell_size=1.7)
figure"""),
    ("md", """### The sanity check

A map that does not change when the model's weights are destroyed cannot be explaining the model. `model_parameter_randomisation` re-initialises the layers of a copy of the model from the output down (cascading) and reports the Spearman correlation between the original and the new maps after each layer; it should fall towards 0."""),
    ("code", """rows = []
for name in ["Grad-CAM (Captum)", "Grad-CAM++", "Saliency (Captum)"]:
    sanity = model_parameter_randomisation(synthetic_model, images[:32], labels[:32], explainers[name],
                                           generator=torch.Generator().manual_seed(0))
    rows.append([name] + [f"{value:.2f}" for value in sanity.mean().tolist()])
markdown_table(["method"] + [f"ρ after `{layer}`" for layer in sanity.layers], rows)"""),
    ("md", """## Part 2: the real model, live on one photo

Without a ground truth, faithfulness metrics are what is left. On EfficientNet-Lite0 and the cat photo, for four fast methods and a random map (the CAMs at the input of the pooling layer, 7×7; the random map is 7×7 too, redrawn at every call):

* deletion and insertion, **I-GOS protocol** (28×28 cells, blur baseline; here 25 steps instead of 50 to save time);
* **Average Drop** (Chattopadhyay et al.: how much confidence is lost when the image is multiplied by the min-max-normalised map; lower is better) and **Average Increase** (the share of images whose confidence *rises*; higher is better; with one image it is 0 or 100);
* the sanity check, randomising `_fc` then `_conv_head`."""),
    ("code", """model = load_efficientnet_lite0()
x = preprocess_imagenet(load_photo("chelsea"))
with torch.no_grad():
    target = int(model(x).argmax())
pool = model._avg_pooling
real_explainers = {
    "Grad-CAM (Captum)": lambda m, x, t: LayerGradCam(m, m._avg_pooling).attribute(
        x, target=t, attribute_to_layer_input=True, relu_attributions=True),
    "Grad-CAM++": lambda m, x, t: LayerGradCamPlusPlus(m, m._avg_pooling).attribute(
        x, target=t, attribute_to_layer_input=True, relu_attributions=True),
    "Layer-CAM": lambda m, x, t: LayerLayerCam(m, m._avg_pooling).attribute(
        x, target=t, attribute_to_layer_input=True, relu_attributions=True),
    "Saliency (Captum)": lambda m, x, t: Saliency(m).attribute(x, target=t),
    "random": lambda m, x, t: torch.rand((1, 1, 7, 7), generator=noise),
}
rows = []
for name, explain in real_explainers.items():
    maps = explain(model, x, target).detach()
    causal = deletion_insertion(model, x, maps, target, protocol="igos", n_steps=25)
    drop = average_drop(model, x, maps, target).item()
    increase = average_increase(model, x, maps, target).item()
    sanity = model_parameter_randomisation(model, x, target, explain, layers=["_fc", "_conv_head"],
                                           generator=torch.Generator().manual_seed(0)).mean()
    rows.append([name, f"{causal.deletion.item():.3f}", f"{causal.insertion.item():.3f}", f"{drop:.1f}",
                 f"{increase:.0f}", f"{sanity[0]:.2f}", f"{sanity[1]:.2f}"])
markdown_table(["method", "del. I-GOS ↓", "ins. I-GOS ↑", "Avg Drop % ↓", "Avg Increase % ↑",
                "ρ `_fc`", "ρ cascade"], rows)"""),
    ("md", """Reading it: Grad-CAM and Grad-CAM++ are about equally faithful here, but only Grad-CAM passes the sanity check on `_fc` (its map changes completely when the classifier is randomised, ρ near 0), while Grad-CAM++ and Layer-CAM keep only positive gradients and barely change: on this architecture they are close to class-agnostic maps of the features (tutorial 01 shows the same with the espresso class). Saliency is fine-grained and noisy, and loses the deletion game to every CAM, and even to the random map. Average Drop has a known blind spot: it multiplies the image by the min-max-normalised map, so a map that keeps most of the image at mid weights (the random 7×7 map, upsampled) loses almost no confidence and scores best. Never read it alone. One photo is an anecdote: the leaderboard below averages more photos.

## The committed leaderboard

`benchmarks/leaderboard.py` runs every method of the package (plus Captum's baselines, I-GOS and a random map) through these metrics on the bundled photos; its tables are in `benchmarks/results/`. `leaderboard.md` is a complete run at reduced settings (2 photos, 8 metric steps); `leaderboard_defaults.md` a larger, partial one. We load the JSON of the first:"""),
    ("code", """results = Path("benchmarks/results")
if not results.exists():  # executed from another directory (e.g. by the test suite)
    import captum_ext
    results = Path(captum_ext.__file__).resolve().parent.parent / "benchmarks" / "results"
board_path = results / "leaderboard.json"
if board_path.exists():
    board = json.loads(board_path.read_text())
    meta = board["meta"]
    print(f"photos {meta['photos']}, targets {meta['targets']}, torch {meta['torch']}, "
          f"{meta['total_seconds'] / 60:.1f} min")
    columns = [("deletion_igos", "del. I-GOS ↓", 3), ("insertion_igos", "ins. I-GOS ↑", 3),
               ("deletion_rise", "del. RISE ↓", 3), ("insertion_rise", "ins. RISE ↑", 3),
               ("average_drop", "Avg Drop % ↓", 1), ("sanity_first", "ρ `_fc`", 2),
               ("seconds_per_image", "s / image", 2)]
    rows = []
    for name, row in board["methods"].items():
        if row.get("deletion_igos") is None:
            continue  # skipped in that run
        rows.append([name] + [f"{row[key]:.{digits}f}" for key, _, digits in columns])
    rows.sort(key=lambda r: float(r[2]) - float(r[1]), reverse=True)  # by insertion - deletion
    markdown_table(["method"] + [title for _, title, _ in columns], rows)
else:
    print("benchmarks/results/leaderboard.json is not in this checkout; run benchmarks/leaderboard.py")"""),
    ("md", """## How to choose

* **Localisation** of a known object or lesion (pointing game, relevance mass): CAMs of the last convolutional layer are reliable and cheap; check the chance level of your masks.
* **Faithfulness** to the model (deletion/insertion): mask optimisation (I-GOS, iGOS++, tutorial 02) optimises these games directly, and AGF has the best insertion scores of the leaderboard, but both cost far more; among one-pass methods Grad-CAM is a good default.
* **Class sensitivity and sanity**: prefer methods whose maps change with the class and with the weights (Grad-CAM, HiResCAM, XGrad-CAM). Positive-gradient variants (Grad-CAM++, Layer-CAM, NormGrad) can look sharper yet explain the features rather than the class.
* Two protocols of deletion/insertion exist (I-GOS and RISE); their numbers are not comparable, so compare methods within one protocol, as the tables do.

To rerun the full benchmarks: `PYTHONPATH=. python benchmarks/ground_truth_benchmark.py` and `PYTHONPATH=. python benchmarks/leaderboard.py`."""),
    ("code", TIMER_END),
]


if __name__ == "__main__":
    main(CELLS, "04_choosing_a_method.ipynb", "choose")

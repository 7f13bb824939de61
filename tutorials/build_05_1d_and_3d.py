"""Build ``05_1d_and_3d.ipynb`` with nbformat.

Run from the repository root: ``python tutorials/build_05_1d_and_3d.py`` (add ``--execute`` to
store the outputs, as the committed notebook has them).
"""

from __future__ import annotations

from _build import TIMER_END, TIMER_START, main

CELLS = [
    ("md", """# CAMs beyond images: 1D signals and 3D volumes

Class activation maps are not specific to photos. Any network that ends in convolutions, a global average pooling and a linear head has a last feature map with the same number of spatial axes as its input: a 1D map for an ECG or a vibration sensor (`Conv1d`), a 3D map for a CT or MRI volume (`Conv3d`). Every layer method of `captum_ext.attr` is written rank-agnostically (the weights are reduced over `A.flatten(2)`, and broadcast back with as many trailing axes as the map has), so the *same* classes and the *same* `attribute` call work on all three ranks. Captum's own `LayerGradCam` already does too, and we use it next to ours.

This tutorial trains two tiny classifiers in the notebook, on synthetic data whose ground truth is known (where the evidence for the class sits), and checks that the maps point at it:

1. a `Conv1d` classifier of signals, on a task generated here;
2. a `Conv3d` classifier of volumes, on `captum_ext.datasets`' 3D cue task (the CT use case: find the lesion that decides the diagnosis).

Both train on the CPU in seconds. The plots come from `captum_ext.visualization` (`plot_signal_attribution`, `plot_volume_attribution`)."""),
    ("code", TIMER_START + """

import math

import numpy as np
import torch
import torch.nn.functional as F
import matplotlib
matplotlib.use("Agg")
from matplotlib.figure import Figure

from captum.attr import LayerAttribution, LayerGradCam

from captum_ext.attr import LayerGradCamPlusPlus, LayerHiResCam, LayerScoreCam
from captum_ext.datasets import CUE_SHAPES, make_synthetic_cue_data
from captum_ext.metrics import pointing_game, pointing_game_chance, relevance_mass_accuracy
from captum_ext.models import CueClassifier
from captum_ext.visualization import plot_signal_attribution, plot_volume_attribution

torch.manual_seed(0)
torch.set_num_threads(1)  # the models are tiny: one thread is fastest, and steadier on a busy CPU"""),
    ("md", """## Part 1: a Conv1d signal classifier

### The task

Each signal has 128 samples of Gaussian noise, one **cue** of 16 samples that decides the class, and a **distractor** that every signal has, whatever its class:

* class 0: the cue is a *slow burst* (two periods of a sine under a Hann window);
* class 1: the cue is a *fast burst* (four periods);
* class 2: the cue is a *dip* (an upside-down Hann window);
* the distractor is a *box*, a flat pulse of height 0.8 and the cue's width, at a random place that never overlaps the cue. (A first version of this task had a triangular bump as a cue: the box shares its features, and the maps of that class peaked on the box.)

The cue's window is the ground-truth mask."""),
    ("code", """LENGTH, WIDTH = 128, 16
t = torch.arange(WIDTH, dtype=torch.float32)
window = torch.hann_window(WIDTH, periodic=False)
CUES = {
    "slow burst": torch.sin(2 * math.pi * 2 * t / WIDTH) * window,
    "fast burst": torch.sin(2 * math.pi * 4 * t / WIDTH) * window,
    "dip": -window,
}


def make_signals(count, seed):
    generator = torch.Generator().manual_seed(seed)
    signals = 0.2 * torch.randn(count, 1, LENGTH, generator=generator)
    labels = torch.randint(len(CUES), (count,), generator=generator)
    masks = torch.zeros(count, 1, LENGTH, dtype=torch.bool)
    shapes = list(CUES.values())
    for i in range(count):
        while True:  # a cue and a distractor that do not overlap
            cue, box = torch.randint(LENGTH - WIDTH + 1, (2,), generator=generator).tolist()
            if abs(cue - box) > WIDTH:
                break
        gain = 0.8 + 0.4 * torch.rand((), generator=generator)
        signals[i, 0, cue:cue + WIDTH] += gain * shapes[labels[i]]
        signals[i, 0, box:box + WIDTH] += 0.8
        masks[i, 0, cue:cue + WIDTH] = True
    return signals, labels, masks


train_signals, train_labels, _ = make_signals(1000, seed=0)
test_signals, test_labels, test_masks = make_signals(300, seed=1)

figure = Figure(figsize=(12, 2.8), layout="constrained")
for axis, index in zip(figure.subplots(1, 3), range(3)):
    axis.plot(test_signals[index, 0].numpy(), color="black", linewidth=1)
    where = test_masks[index, 0].nonzero().flatten()
    axis.axvspan(int(where[0]), int(where[-1]), color="tab:green", alpha=0.2, label="cue")
    axis.set_title(f"class {int(test_labels[index])} ({list(CUES)[test_labels[index]]})")
    axis.legend(loc="upper right", fontsize=8)
figure"""),
    ("md", """### A tiny Conv1d classifier

`captum_ext.models.CueClassifier` is a small CAM-friendly network for any rank: `[conv → BN → ReLU]` blocks with 2× max pooling between them, global average pooling and a linear head. With `spatial_dims=1` it is built from `Conv1d` layers; `model.features[-1]` (the last ReLU, at 1/4 of the input length) is the layer to explain."""),
    ("code", """def train(model, inputs, labels, epochs, batch_size=50, lr=1e-2, seed=0):
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(inputs) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(inputs)).split(batch_size):
            loss = F.cross_entropy(model(inputs[index]), labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def accuracy(model, inputs, labels):
    with torch.no_grad():
        return (model(inputs).argmax(1) == labels).float().mean().item()


start = time.perf_counter()
signal_model = train(CueClassifier(spatial_dims=1, in_channels=1, channels=(8, 16, 32), num_classes=len(CUES)),
                     train_signals, train_labels, epochs=5)
print(f"trained in {time.perf_counter() - start:.1f} s; held-out accuracy "
      f"{accuracy(signal_model, test_signals, test_labels):.3f}")
print(signal_model.features)"""),
    ("md", """### Maps, exactly as for images

The calls are the ones of tutorial 01: build the method from the model and the layer, call `attribute(inputs, target=...)`. The maps come back at layer resolution, `(N, 1, 32)`; Captum's `LayerAttribution.interpolate` resizes them to the signal (`"linear"` is the 1D mode)."""),
    ("code", """layer = signal_model.features[-1]
signal_methods = {
    "Grad-CAM (Captum)": LayerGradCam(signal_model, layer),
    "Grad-CAM++": LayerGradCamPlusPlus(signal_model, layer),
    "HiResCAM": LayerHiResCam(signal_model, layer),
    "Score-CAM": LayerScoreCam(signal_model, layer),
}
signal_maps = {name: method.attribute(test_signals, target=test_labels, relu_attributions=True).detach()
               for name, method in signal_methods.items()}
print("layer map:", tuple(signal_maps["Grad-CAM (Captum)"].shape))
upsampled = LayerAttribution.interpolate(signal_maps["Grad-CAM (Captum)"], (LENGTH,), interpolate_mode="linear")
print("upsampled:", tuple(upsampled.shape))"""),
    ("md", """### Do the maps point at the cue?

`captum_ext.metrics.pointing_game` works on any rank: a hit when the map's maximum (after upsampling to the mask) lies within `tolerance` samples of the cue. `pointing_game_chance` is the hit rate of a random point, and `relevance_mass_accuracy` the share of the positive map inside the cue's window (the window covers 16/128 = 12.5 % of the signal)."""),
    ("code", """chance = pointing_game_chance(test_masks, tolerance=2).mean().item()
print(f"pointing game chance level: {chance:.3f}")
print("| method | pointing game (2 samples) | relevance mass |")
print("|---|---:|---:|")
for name, maps in signal_maps.items():
    hits = pointing_game(maps, test_masks, tolerance=2).nanmean().item()
    mass = relevance_mass_accuracy(maps, test_masks).nanmean().item()
    print(f"| {name} | {hits:.3f} | {mass:.3f} |")
signal_hits = pointing_game(signal_maps["Grad-CAM (Captum)"], test_masks, tolerance=2).nanmean().item()
assert signal_hits > 0.8 and signal_hits > 3 * chance"""),
    ("md", """`plot_signal_attribution` draws the signal with the map shaded behind it, and the map itself underneath (upsampled linearly to the signal). Here Grad-CAM for one example of each class, with the true cue window marked:"""),
    ("code", """figure = Figure(figsize=(18, 4.2), layout="constrained")
for subfigure, label in zip(figure.subfigures(1, 3), (0, 1, 2)):
    index = int((test_labels == label).nonzero()[0])
    panels = subfigure.subplots(2, 1, sharex=True, height_ratios=[2.4, 1.0])  # signal, map
    plot_signal_attribution(test_signals[index], signal_maps["Grad-CAM (Captum)"][index:index + 1],
                            ax=panels, title=f"class {label} ({list(CUES)[label]}): Grad-CAM")
    where = test_masks[index, 0].nonzero().flatten()
    for axis in panels:
        axis.axvspan(int(where[0]), int(where[-1]), color="tab:green", alpha=0.15)
figure.savefig("signal_cam.png", dpi=60)
figure"""),
    ("md", """## Part 2: a Conv3d volume classifier (the CT use case)

A CT scan is a volume `(N, 1, D, H, W)` of Hounsfield units, and a 3D classifier (a nodule detector, a haemorrhage classifier) ends in `Conv3d` feature maps. The question a radiologist asks of it is the same as for a photo: *where* in the volume is the evidence?

`captum_ext.datasets.make_synthetic_cue_data(..., spatial_dims=3)` is a stand-in with a known answer: 14×14×14 volumes of noise with one **cue** shape that decides the class (a 3D plus, the four body diagonals, a hollow box or a ball) and two **distractor** shapes (a small solid box, a bar) that never decide anything. `masks` marks the cue's 5×5×5 cube."""),
    ("code", """volumes = make_synthetic_cue_data(1000, spatial_dims=3, seed=0)
held_out = make_synthetic_cue_data(200, spatial_dims=3, seed=1)
print("volumes", tuple(volumes.images.shape), "classes", CUE_SHAPES)
print("the cue's cube fills", f"{held_out.masks.float().mean().item():.1%}", "of a volume")"""),
    ("md", """The same `CueClassifier`, now with `spatial_dims=3` and two blocks, so the last feature map is 7×7×7. It trains in a few epochs."""),
    ("code", """start = time.perf_counter()
volume_model = train(CueClassifier(spatial_dims=3, in_channels=1, channels=(8, 16), num_classes=4),
                     volumes.images, volumes.labels, epochs=6)
volume_accuracy = accuracy(volume_model, held_out.images, held_out.labels)
print(f"trained in {time.perf_counter() - start:.1f} s; held-out accuracy {volume_accuracy:.3f}")"""),
    ("code", """layer = volume_model.features[-1]
volume_maps = {
    "Grad-CAM (Captum)": LayerGradCam(volume_model, layer),
    "Grad-CAM++": LayerGradCamPlusPlus(volume_model, layer),
    "HiResCAM": LayerHiResCam(volume_model, layer),
}
volume_maps = {name: method.attribute(held_out.images, target=held_out.labels, relu_attributions=True).detach()
               for name, method in volume_maps.items()}
print("layer map:", tuple(volume_maps["Grad-CAM (Captum)"].shape))
chance = pointing_game_chance(held_out.masks, tolerance=1).mean().item()
print(f"pointing game chance level (1 voxel): {chance:.3f}")
print("| method | pointing game (1 voxel) | relevance mass |")
print("|---|---:|---:|")
for name, maps in volume_maps.items():
    hits = pointing_game(maps, held_out.masks, tolerance=1).nanmean().item()
    mass = relevance_mass_accuracy(maps, held_out.masks).nanmean().item()
    print(f"| {name} | {hits:.3f} | {mass:.3f} |")
volume_hits = pointing_game(volume_maps["Grad-CAM (Captum)"], held_out.masks, tolerance=1).nanmean().item()
assert volume_hits > 3 * chance"""),
    ("md", """### Looking inside the volume

`plot_volume_attribution` upsamples the map to the volume (trilinear) and shows the three orthogonal slices through its peak, with a crosshair on the peak; `contour_top_percent` outlines the top 10 % of the map. The volume is min-max rescaled for display, as a CT window would be."""),
    ("code", """index = int((held_out.labels == CUE_SHAPES.index("ball")).nonzero()[0])
hit = bool(pointing_game(volume_maps["Grad-CAM (Captum)"][index:index + 1], held_out.masks[index:index + 1],
                         tolerance=1))
print(f"example {index}: the peak is {'on' if hit else 'off'} the cue's cube")
figure = plot_volume_attribution(held_out.images[index], volume_maps["Grad-CAM (Captum)"][index:index + 1],
                                 contour_top_percent=10, title=f"Grad-CAM, class 'ball', example {index}")
figure.savefig("volume_cam_orthogonal.png", dpi=60)
figure"""),
    ("md", """`mode="strip"` shows a run of slices along one axis instead (here depth), one of them through the peak. Below it, the same plot of the ground-truth cube: its strip is centred on the cube (the first voxel of a constant map counts as its peak), so compare the slice numbers in the titles."""),
    ("code", """figure = Figure(figsize=(14, 5.4), layout="constrained")
top, bottom = figure.subfigures(2, 1)
plot_volume_attribution(held_out.images[index], volume_maps["Grad-CAM (Captum)"][index:index + 1],
                        ax=top.subplots(), mode="strip", n_slices=6, axis=0, title="Grad-CAM, depth slices")
plot_volume_attribution(held_out.images[index], held_out.masks[index:index + 1].float(),
                        ax=bottom.subplots(), mode="strip", n_slices=6, axis=0, interpolation="nearest",
                        title="ground truth: the cue's cube")
figure.savefig("volume_cam_strip.png", dpi=60)
figure"""),
    ("md", """## Summary

* The same classes, the same `attribute(inputs, target=...)` and the same metrics work on `Conv1d`, `Conv2d` and `Conv3d` models; only the interpolation mode changes (`linear`, `bilinear`, `trilinear`).
* On both tasks the maps point at the cue far above chance: in 1D nearly always; in 3D, where the map is 7×7×7 for a 14³ volume, about three peaks in four land within a voxel of the cue's cube, against about one in ten by chance. A coarse map is the limit here: for a real CT (e.g. 128³ voxels) choose a layer whose feature map is fine enough for the structures you care about, or fuse several layers (`captum_ext.attr.fuse_layer_cams`).
* `captum_ext.models.load_synthetic_model(3)` is a larger model trained on the same 3D task (`benchmarks/train_synthetic.py`), shipped with the package for tests and benchmarks."""),
    ("code", TIMER_END),
]


if __name__ == "__main__":
    main(CELLS, "05_1d_and_3d.ipynb", "rank")

"""The EfficientNet-Lite0 part of ``bench_learned_propagation.py`` (run with ``--real``).

The rule is fitted on random resized crops (scale 0.35-1, random horizontal flips, 160x160,
batch 2) of the 8 bundled photos, predicted-class targets, and evaluated on the 8 full photos at
224x224 (so the evaluation images are not held out: the rule has ~60 parameters, but say so).
Deletion / insertion: 10 steps of 1/10 of the pixels in saliency order, replaced by 0 (the
ImageNet mean after normalisation) or inserted into a zero image; the mean softmax probability
of the top-1 class (trapezoid). No pointing game: the photos have no ground-truth masks.

Captum's ``GuidedBackprop`` hooks ``nn.ReLU`` modules only; EfficientNet-Lite0 uses ``ReLU6``,
so there it equals the plain gradient. A ReLU6-aware guided backprop is added for comparison:
``LearnedPropagation`` with a fixed sign rule ``f'(a)·1[g > 0]`` (the oracle of the tests).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, IntegratedGradients, LayerGradCam, Saliency

from captum_ext._tensor_ops import upsample
from captum_ext.attr import LearnedPropagation
from captum_ext.attr import PropagationRuleNet
from captum_ext.datasets import load_sample_photos
from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet


def random_crops(photos: list[torch.Tensor], count: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        _, height, width = photo.shape
        scale = 0.35 + 0.65 * torch.rand((), generator=generator).item()
        side = int(min(height, width) * scale**0.5)
        top = int(torch.randint(height - side + 1, (), generator=generator))
        left = int(torch.randint(width - side + 1, (), generator=generator))
        crop = photo[:, top : top + side, left : left + side]
        if torch.rand((), generator=generator).item() < 0.5:
            crop = crop.flip(-1)
        crops.append(preprocess_imagenet(crop, size=size))
    return torch.cat(crops)


def removal_auc(model, saliency, x, y, *, insert: bool, steps: int = 10) -> float:
    n = x.shape[0]
    order = saliency.reshape(n, -1).argsort(1, descending=True)
    pixels = order.shape[1]
    probabilities = []
    for step in range(steps + 1):
        chosen = torch.zeros(n, pixels)
        chosen.scatter_(1, order[:, : step * pixels // steps], 1.0)
        chosen = chosen.view(n, 1, *x.shape[2:])
        masked = x * chosen if insert else x * (1 - chosen)
        with torch.no_grad():
            probabilities.append(F.softmax(model(masked), 1).gather(1, y[:, None])[:, 0])
    curve = torch.stack(probabilities, 1)
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(1).mean().item()


def _sign_rule() -> PropagationRuleNet:
    rule = PropagationRuleNet()
    with torch.no_grad():
        rule.outer.bias.fill_(-30.0)
        rule.element_weights.copy_(torch.tensor([0.0, 0.0, 60.0]))
    return rule


def real_model_section(steps: int) -> str:
    model = load_efficientnet_lite0()
    photos = list(load_sample_photos().values())
    x = torch.cat([preprocess_imagenet(p) for p in photos])
    with torch.no_grad():
        y = model(x).argmax(1)
    crops = random_crops(photos, 2 * steps, 160, seed=0)
    loader = [(crops[i : i + 2],) for i in range(0, len(crops), 2)]
    fitted = LearnedPropagation(model)
    start = time.perf_counter()
    history = fitted.fit(loader, epochs=1, lr=1e-2)
    fit_seconds = time.perf_counter() - start

    def spatial(attribution):
        return attribution.detach().abs().sum(1, keepdim=True)

    def grad_cam(inputs, target):
        cam = LayerGradCam(model, model._avg_pooling).attribute(
            inputs, target=target, attribute_to_layer_input=True, relu_attributions=True)
        return upsample(cam, inputs.shape[2:]).detach()

    methods = {
        "Grad-CAM (Captum, pooling input)": grad_cam,
        "Integrated Gradients (Captum, 16 steps)": lambda a, t: spatial(
            IntegratedGradients(model).attribute(a, target=t, n_steps=16, internal_batch_size=8)),
        "Guided Backprop (Captum; = gradient here)": lambda a, t: spatial(
            GuidedBackprop(model).attribute(a, target=t)),
        "Guided Backprop through ReLU6 (fixed sign rule)": lambda a, t: spatial(
            LearnedPropagation(model, rule=_sign_rule()).attribute(a, target=t)),
        "gradient (Captum Saliency)": lambda a, t: spatial(
            Saliency(model).attribute(a, target=t, abs=False)),
        f"LearnedPropagation, fitted ({steps} steps)": lambda a, t: spatial(
            fitted.attribute(a, target=t)),
    }
    lines = [
        f"8 photos at 224x224 (top-1 targets); rule fitted for {steps} steps of 2 crops in "
        f"{fit_seconds:.0f} s (loss {history[0]:.3f} → mean of the last 5 steps "
        f"{sum(history[-5:]) / len(history[-5:]):.3f}).",
        "",
        "| method | deletion AUC (lower is better) | insertion AUC (higher) |",
        "|---|---|---|",
    ]
    for name, method in methods.items():
        saliency = method(x, y)
        lines.append(
            f"| {name} | {removal_auc(model, saliency, x, y, insert=False):.3f} | "
            f"{removal_auc(model, saliency, x, y, insert=True):.3f} |"
        )
    return "\n".join(lines)

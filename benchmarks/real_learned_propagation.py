"""The EfficientNet-Lite0 part of ``bench_learned_propagation.py`` (run with ``--real``).

The rule is fitted on random resized crops (scale 0.35-1, random horizontal flips, 160x160,
batch 2) of the 8 bundled photos, predicted-class targets, and evaluated on the 8 full photos at
224x224 (so the evaluation images are not held out: the rule has ~60 parameters, but say so).
Deletion / insertion: the shared ``captum_ext.metrics.deletion_insertion`` under the RISE
protocol (pixel order; deletion to 0, the ImageNet mean after normalisation; insertion from the
RISE blur; trapezoid area of the top-1 class's softmax), with ``--real-del-ins-steps`` steps
(default 16, coarser than the protocol's 224, to keep the run short on a CPU). No pointing game:
the photos have no ground-truth masks.

Captum's ``GuidedBackprop`` hooks ``nn.ReLU`` modules only; EfficientNet-Lite0 uses ``ReLU6``,
so there it equals the plain gradient. A ReLU6-aware guided backprop is added for comparison:
``LearnedPropagation`` with a fixed sign rule ``f'(a)·1[g > 0]`` (the oracle of the tests).
"""

from __future__ import annotations

import time

import torch
from captum.attr import GuidedBackprop, IntegratedGradients, LayerGradCam, Saliency

from captum_ext._tensor_ops import upsample
from captum_ext.attr import LearnedPropagation
from captum_ext.attr import PropagationRuleNet
from captum_ext.datasets import load_sample_photos
from captum_ext.metrics import deletion_insertion
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


def _sign_rule() -> PropagationRuleNet:
    rule = PropagationRuleNet()
    with torch.no_grad():
        rule.outer.bias.fill_(-30.0)
        rule.element_weights.copy_(torch.tensor([0.0, 0.0, 60.0]))
    return rule


def real_model_section(steps: int, del_ins_steps: int = 16) -> str:
    model = load_efficientnet_lite0()
    photos = list(load_sample_photos().values())
    x = torch.cat([preprocess_imagenet(p) for p in photos])
    with torch.no_grad():
        y = model(x).argmax(1)
    crops = random_crops(photos, 2 * steps, 160, seed=0)
    loader = [(crops[i : i + 2],) for i in range(0, len(crops), 2)]
    torch.manual_seed(0)
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
        f"Deletion and insertion: `captum_ext.metrics.deletion_insertion`, RISE protocol, "
        f"{del_ins_steps} steps. Input-space maps are |attribution| summed over the colour "
        "channels; Grad-CAM explains the input of the global pooling (7x7).",
        "",
        "| method | deletion (RISE, lower is better) | insertion (RISE, higher is better) |",
        "|---|---:|---:|",
    ]
    for name, method in methods.items():
        result = deletion_insertion(
            model, x, method(x, y), y.tolist(), protocol="rise", n_steps=del_ins_steps,
            batch_size=16,
        )
        lines.append(
            f"| {name} | {result.deletion.mean().item():.3f} | "
            f"{result.insertion.mean().item():.3f} |"
        )
    return "\n".join(lines)

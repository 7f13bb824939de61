"""Speed of the gradient CAMs against Captum, pytorch-grad-cam, torchcam and the physical limit.

Setting (issue 2): EfficientNet-Lite0, batch 8 at 224x224, on this CPU, layer ``_bn1`` (the
7x7x1280 map every library can hook). Every figure is a ratio measured in the same run:

* against Captum's ``LayerGradCam`` (target <= 1.2x for every gradient CAM);
* against the same method in pytorch-grad-cam 1.5.7 and torchcam 0.5.0 (target: faster than both);
* against the physical limit: one forward pass plus one backward pass to the layer.

Methods are timed round-robin (each round runs every method once), and the median over rounds
is reported, so that load from other processes hits every method alike.

Run (the anchors need torchvision, so they live in their own venv, see
``../shared/scripts/anchors-venv.sh``)::

    PYTHONPATH=. /path/to/venv-anchors/bin/python benchmarks/bench_gradient_cams.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from captum.attr import LayerGradCam
from captum_ext.attr import (
    LayerClassActivationMap,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerLayerCam,
    LayerSmoothGradCamPlusPlus,
    LayerXGradCam,
)
from captum_ext.datasets import load_sample_photos
from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet

RESULTS = Path(__file__).parent / "results"


def _batch(size: int) -> torch.Tensor:
    photos = list(load_sample_photos(["chelsea", "coffee", "astronaut", "rocket"]).values())
    images = torch.cat([preprocess_imagenet(p) for p in photos])
    return torch.cat([images, images.flip(-1)])[:size]


def _physical_limit(model, layer, x, target, record_from_layer: bool) -> Callable[[], object]:
    """One forward pass with a hook that keeps the layer output, and one backward to it.

    ``record_from_layer``: autograd records only from the layer on (the cheapest forward that
    still allows the backward to the layer); otherwise the whole forward graph is recorded.
    """

    def run():
        saved = {}

        def keep(module, args, output):
            torch.set_grad_enabled(True)
            output = output.detach().requires_grad_(True)
            saved["a"] = output
            return output

        handle = layer.register_forward_hook(keep)
        try:
            with torch.set_grad_enabled(not record_from_layer):
                scores = model(x)
                picked = scores.gather(1, target[:, None]).sum()
        finally:
            handle.remove()
        return torch.autograd.grad(picked, saved["a"])

    return run


def _anchors(model, layer, x, target, n_smooth):
    """The same methods in pytorch-grad-cam and torchcam, when they import."""
    calls: dict[str, dict[str, Callable[[], object]]] = {}
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(t)) for t in target]
        for ours, cls in [
            ("GradCam", pgc.GradCAM),
            ("GradCamPlusPlus", pgc.GradCAMPlusPlus),
            ("XGradCam", pgc.XGradCAM),
            ("HiResCam", pgc.HiResCAM),
            ("LayerCam", pgc.LayerCAM),
        ]:
            cam = cls(model=model, target_layers=[layer])
            calls.setdefault(ours, {})["pytorch-grad-cam"] = (
                lambda cam=cam: cam(input_tensor=x, targets=targets)
            )
    except ImportError as error:
        print(f"pytorch-grad-cam unavailable: {error}")
    try:
        from torchcam import methods as tc

        def torchcam_call(cls, **kwargs):
            def run():
                with cls(model, target_layer=layer, input_shape=tuple(x.shape[1:]), **kwargs) as ex:
                    scores = model(x)
                    return ex(class_idx=target.tolist(), scores=scores, normalized=False)

            return run

        for ours, cls, kwargs in [
            ("GradCam", tc.GradCAM, {}),
            ("GradCamPlusPlus", tc.GradCAMpp, {}),
            ("XGradCam", tc.XGradCAM, {}),
            ("LayerCam", tc.LayerCAM, {}),
            ("SmoothGradCamPlusPlus", tc.SmoothGradCAMpp, {"num_samples": n_smooth, "std": 0.3}),
        ]:
            calls.setdefault(ours, {})["torchcam"] = torchcam_call(cls, **kwargs)
        calls.setdefault("ClassActivationMap", {})["torchcam"] = torchcam_call(
            tc.CAM, fc_layer=model._fc
        )
    except ImportError as error:
        print(f"torchcam unavailable: {error}")
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-smooth", type=int, default=4, help="noise samples (torchcam's default)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_efficientnet_lite0()
    layer = model._bn1
    x = _batch(args.batch)
    with torch.no_grad():
        target = model(x).argmax(1)

    ours = {
        "GradCam": lambda: LayerGradCam(model, layer).attribute(x, target=target),
        "GradCamPlusPlus": lambda: LayerGradCamPlusPlus(model, layer).attribute(x, target=target),
        "SmoothGradCamPlusPlus": lambda: LayerSmoothGradCamPlusPlus(model, layer).attribute(
            x, target=target, n_samples=args.n_smooth, stdevs=0.3,
            generator=torch.Generator().manual_seed(0),
        ),
        "XGradCam": lambda: LayerXGradCam(model, layer).attribute(x, target=target),
        "HiResCam": lambda: LayerHiResCam(model, layer).attribute(x, target=target),
        "LayerCam": lambda: LayerLayerCam(model, layer).attribute(x, target=target),
        "ClassActivationMap": lambda: LayerClassActivationMap(model, layer, model._fc).attribute(
            x, target=target
        ),
    }
    anchors = _anchors(model, layer, x, target, args.n_smooth)
    jobs: dict[str, Callable[[], object]] = {
        "limit": _physical_limit(model, layer, x, target, record_from_layer=True),
        "full-graph": _physical_limit(model, layer, x, target, record_from_layer=False),
    }
    jobs.update({f"ours/{k}": v for k, v in ours.items()})
    for method, by_library in anchors.items():
        jobs.update({f"{lib}/{method}": call for lib, call in by_library.items()})

    for call in jobs.values():  # warm-up
        call()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.rounds):
        for name, call in jobs.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}

    captum = median["ours/GradCam"]
    limit = median["limit"]
    lines = [
        f"EfficientNet-Lite0, batch {args.batch} at 224x224, layer `_bn1`, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; median of {args.rounds} "
        "round-robin rounds. `limit` = one forward pass (autograd recording from the layer on) "
        "plus one backward pass to the layer; a forward pass that records the whole graph, plus "
        f"the same backward, took {median['full-graph'] / median['limit']:.2f}x the limit. "
        "Ratios below 1 are faster. Smooth Grad-CAM++ uses "
        f"{args.n_smooth} noise samples (torchcam's default), so its limit is "
        f"{args.n_smooth + 1}x the single-pass limit.",
        "",
        "| method | ours (s) | / Captum LayerGradCam | / physical limit | / pytorch-grad-cam | / torchcam |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method in ours:
        t = median[f"ours/{method}"]
        pgc = median.get(f"pytorch-grad-cam/{method}")
        tcm = median.get(f"torchcam/{method}")
        name = "GradCam (Captum's LayerGradCam)" if method == "GradCam" else method
        lines.append(
            f"| {name} | {t:.3f} | {t / captum:.2f} | {t / limit:.2f} | "
            f"{f'{t / pgc:.2f}' if pgc else 'n/a'} | {f'{t / tcm:.2f}' if tcm else 'n/a'} |"
        )
    lines += ["", "Anchor times (s): " + ", ".join(
        f"{name} {value:.3f}" for name, value in median.items() if "/" in name and not name.startswith("ours")
    ) + f"; limit {limit:.3f}."]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gradient_cams.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

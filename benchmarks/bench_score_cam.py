"""Speed and peak memory of Score-CAM against torchcam and pytorch-grad-cam; Eigen-CAM timing.

Setting (issue 3): EfficientNet-Lite0, one 224x224 photo (the cat, class 285), layer ``_bn1``
(7x7x1280), the same ``batch_size`` of masked inputs per forward pass in every library. Figures
are ratios measured in the same run:

* ours against torchcam 0.5.0's ``ScoreCAM`` and pytorch-grad-cam 1.5.7's ``ScoreCAM`` (target:
  <= 0.5x the faster anchor);
* against the physical limit: the forward passes alone (one clean pass plus ``ceil(K / b)``
  passes of ``b`` random images, no masks, no hooks), through the model as the anchors run
  it (``limit``) and through the fused inference copy that our masked passes use
  (``limit, fused copy``: channels-last images, convolution + batch norm + ReLU6 + padding
  fused, see ``captum_ext/_fused_inference.py``);
* the effect of that copy: ours with ``fused_inference_chunks = False`` (``ours, unfused``);
* how time grows with the number of channels ``K``: ``_blocks[15]`` (320 channels) for every
  library, and our method on the first 160 / 640 channels of ``_bn1`` (a ``reshape_transform``
  that slices channels);
* peak memory: one more run of each configuration in a fresh subprocess; we report its peak
  resident set (``ru_maxrss``) above the peak after loading the model and one warm-up forward
  pass of ``b`` images, i.e. what the method adds on top of one chunk's forward pass.

Times are taken in one process, round-robin over the configurations with the starting one
rotated each round (median over rounds), so that load from other processes hits every library
alike. Eigen-CAM against pytorch-grad-cam's ``EigenCAM`` (full
SVD) is timed in-process, batch 8.

Run (the anchors live in their own venv)::

    PYTHONPATH=. /work/venv-anchors/bin/python benchmarks/bench_score_cam.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS = Path(__file__).parent / "results"
TARGET = 285  # Egyptian cat, top-1 on the photo


def _model_and_image() -> tuple[torch.nn.Module, torch.Tensor]:
    from captum_ext.datasets import load_photo
    from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet

    return load_efficientnet_lite0(), preprocess_imagenet(load_photo("chelsea"))


def _layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    return model._bn1 if name == "_bn1" else model._blocks[int(name.split("[")[1].rstrip("]"))]


def _runner(config: dict[str, Any], model, x) -> Callable[[], object]:
    """The call to time for one configuration."""
    layer = _layer(model, config["layer"])
    batch_size, library = config["batch_size"], config["library"]
    if library == "ours":
        from captum_ext.attr import LayerScoreCam

        channels = config.get("channels")
        transform = (lambda a: a[:, :channels]) if channels else None
        method = LayerScoreCam(model, layer, reshape_transform=transform)
        if config.get("unfused"):  # the model itself for the masked passes
            method.fused_inference_chunks = False
        image = x
        if config.get("channels_last"):
            image = x.contiguous(memory_format=torch.channels_last)
        return lambda: method.attribute(image, target=TARGET, batch_size=batch_size)
    if library == "torchcam":
        from torchcam.methods import ScoreCAM

        def run_torchcam():
            with ScoreCAM(model, target_layer=layer, batch_size=batch_size,
                          input_shape=tuple(x.shape[1:])) as extractor:
                with torch.no_grad():
                    scores = model(x)
                return extractor(class_idx=TARGET, scores=scores, normalized=False)

        return run_torchcam
    if library == "pytorch-grad-cam":
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def run_pytorch_grad_cam():
            # its hooks live as long as the object: scoped to the call, as torchcam's are, so
            # that they are not left on the model while the other libraries run
            with ScoreCAM(model=model, target_layers=[layer]) as cam:
                cam.batch_size = batch_size
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(TARGET)])

        return run_pytorch_grad_cam
    if library == "limit":
        with torch.no_grad():
            channels = config.get("channels") or int(_layer_output(model, layer, x).shape[1])
        noise = torch.randn((batch_size,) + tuple(x.shape[1:]))
        forward = model
        if config.get("fused"):
            from captum_ext._fused_inference import fused_copy

            forward = fused_copy(model)
            noise = noise.contiguous(memory_format=torch.channels_last)

        def forwards_only():
            with torch.no_grad():
                model(x)
                for _ in range(math.ceil(channels / batch_size)):
                    forward(noise)

        return forwards_only
    raise ValueError(library)


def _layer_output(model, layer, x):
    saved = {}
    handle = layer.register_forward_hook(lambda m, i, o: saved.setdefault("a", o))
    try:
        model(x)
    finally:
        handle.remove()
    return saved["a"]


def worker(config: dict[str, Any]) -> None:
    """One timed run in this (fresh) process; prints a JSON line."""
    torch.manual_seed(0)
    model, x = _model_and_image()
    run = _runner(config, model, x)
    with torch.no_grad():  # warm-up: one forward pass of a full chunk
        model(torch.randn((config["batch_size"],) + tuple(x.shape[1:])))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {"time": elapsed, "extra_mb": (after - before) / 1024, "peak_mb": after / 1024}
    print(json.dumps(report))


def _spawn(config: dict[str, Any], threads: int) -> dict[str, float]:
    env = dict(os.environ, TQDM_DISABLE="1")
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(config), "--threads", str(threads)],
        capture_output=True, text=True, env=env, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _timings(
    configs: dict[str, dict[str, Any]], batch_size: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median time of each configuration, in this process, round-robin."""
    model, x = _model_and_image()
    runners = {
        name: _runner(dict(config, batch_size=batch_size), model, x)
        for name, config in configs.items()
    }
    with torch.no_grad():  # warm-up
        model(torch.randn((batch_size,) + tuple(x.shape[1:])))
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return {name: {"time": statistics.median(values)} for name, values in times.items()}


def _eigen_cam_rows(rounds: int) -> list[str]:
    from captum_ext.attr import LayerEigenCam

    model, x = _model_and_image()
    batch = x.expand(8, -1, -1, -1).contiguous()
    jobs: dict[str, Callable[[], object]] = {
        # class-agnostic, but the target is still validated, as for every layer method
        "ours": lambda: LayerEigenCam(model, model._bn1).attribute(
            batch, target=TARGET, center=True
        ),
    }
    try:
        from pytorch_grad_cam import EigenCAM

        cam = EigenCAM(model=model, target_layers=[model._bn1])
        jobs["pytorch-grad-cam"] = lambda: cam(input_tensor=batch, targets=None)
    except ImportError as error:
        return [f"Eigen-CAM: pytorch-grad-cam unavailable ({error})."]

    def forward_only():
        with torch.no_grad():
            model(batch)

    jobs["limit"] = forward_only
    for call in jobs.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, call in jobs.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(v) for name, v in times.items()}
    ours = median["ours"]
    return [
        "",
        f"Eigen-CAM, batch 8, `_bn1`, centred (as pytorch-grad-cam), median of {rounds} rounds: "
        f"ours {ours:.3f} s, pytorch-grad-cam `EigenCAM` {median['pytorch-grad-cam']:.3f} s "
        f"(ratio {ours / median['pytorch-grad-cam']:.2f}), "
        f"one forward pass {median['limit']:.3f} s "
        f"(ours / limit {ours / median['limit']:.2f}).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eigen-rounds", type=int, default=5, help="0 skips Eigen-CAM")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the per-run peak-memory subprocesses")
    parser.add_argument(
        "--only", default="",
        help="comma-separated substrings: run only the configurations whose name contains one",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(json.loads(args.worker))
        return

    b = args.batch_size
    configs = {
        "ours": dict(library="ours", layer="_bn1"),
        "ours, unfused": dict(library="ours", layer="_bn1", unfused=True),
        "torchcam": dict(library="torchcam", layer="_bn1"),
        "pytorch-grad-cam": dict(library="pytorch-grad-cam", layer="_bn1"),
        "limit": dict(library="limit", layer="_bn1"),
        "limit, fused copy": dict(library="limit", layer="_bn1", fused=True),
        "ours K=160": dict(library="ours", layer="_bn1", channels=160),
        "ours K=640": dict(library="ours", layer="_bn1", channels=640),
        "ours _blocks[15]": dict(library="ours", layer="_blocks[15]"),
        "torchcam _blocks[15]": dict(library="torchcam", layer="_blocks[15]"),
        "pytorch-grad-cam _blocks[15]": dict(library="pytorch-grad-cam", layer="_blocks[15]"),
        "limit _blocks[15]": dict(library="limit", layer="_blocks[15]"),
        "limit, fused copy _blocks[15]": dict(library="limit", layer="_blocks[15]", fused=True),
    }
    if args.only:
        keys = args.only.split(",")
        configs = {name: c for name, c in configs.items() if any(k in name for k in keys)}
    load_before = os.getloadavg()[0]
    median = _timings(configs, b, args.rounds)
    failures: dict[str, str] = {}
    if args.memory:
        for name, config in configs.items():
            if config["library"] == "limit" or name not in median:
                continue
            try:
                median[name]["extra_mb"] = _spawn(dict(config, batch_size=b), args.threads)[
                    "extra_mb"
                ]
            except RuntimeError as error:
                failures[name] = str(error).splitlines()[-1]

    def ratio(a: str, b_: str) -> str:
        if a not in median or b_ not in median:
            return "n/a"
        return f"{median[a]['time'] / median[b_]['time']:.2f}"

    lines = [
        f"EfficientNet-Lite0, one 224x224 photo (class {TARGET}), Score-CAM with batch_size {b} "
        f"masked inputs per forward pass in every library; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, a 2-core virtual CPU (load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end). "
        f"Times: in one process after a warm-up, median of {args.rounds} round-robin rounds "
        "(the starting configuration rotates each round). `limit` = the forward passes alone, "
        "through the model (`limit`) or through the fused inference copy that our masked "
        "passes use (`fused limit`). "
        "Extra peak: one more run of each configuration in a fresh process, its peak RSS above "
        f"the peak after loading the model and one warm-up forward pass of {b} images.",
        "",
        "| run | channels | time (s) | / torchcam | / pytorch-grad-cam | / limit "
        "| / fused limit | extra peak (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    big = ("torchcam", "pytorch-grad-cam", "limit", "limit, fused copy")
    small = tuple(f"{name} _blocks[15]" for name in big)
    rows = [
        ("ours", "1280", *big),
        ("ours, unfused", "1280", *big),
        ("torchcam", "1280", *big),
        ("pytorch-grad-cam", "1280", *big),
        ("limit", "1280", *big),
        ("limit, fused copy", "1280", *big),
        ("ours K=640", "640", None, None, None, None),
        ("ours K=160", "160", None, None, None, None),
        ("ours _blocks[15]", "320", *small),
        ("torchcam _blocks[15]", "320", *small),
        ("pytorch-grad-cam _blocks[15]", "320", *small),
        ("limit _blocks[15]", "320", *small),
        ("limit, fused copy _blocks[15]", "320", *small),
    ]
    for name, channels, *references in rows:
        if name not in median:
            continue
        m = median[name]
        memory = f"{m['extra_mb']:.0f}" if "extra_mb" in m else failures.get(name, "")
        cells = " | ".join(ratio(name, r) if r else "" for r in references)
        lines.append(f"| {name} | {channels} | {m['time']:.2f} | {cells} | {memory} |")
    anchors = [n for n in ("torchcam", "pytorch-grad-cam") if n in median]
    if "ours" in median and anchors:
        faster = min(anchors, key=lambda n: median[n]["time"])
        verdict = {
            variant: median[variant]["time"] / median[faster]["time"]
            for variant in ("ours", "ours, unfused") if variant in median
        }
        lines += ["", f"Target <= 0.5x the faster anchor ({faster}), `_bn1`: " + "; ".join(
            f"{variant} {value:.2f}x ({'met' if value <= 0.5 else 'not met'})"
            for variant, value in verdict.items()
        ) + "."]
    small_anchors = [n for n in small[:2] if n in median]
    if "ours _blocks[15]" in median and small_anchors:
        faster = min(small_anchors, key=lambda n: median[n]["time"])
        value = median["ours _blocks[15]"]["time"] / median[faster]["time"]
        lines += ["", f"Target <= 0.5x the faster anchor ({faster}): ours {value:.2f}x "
                  f"({'met' if value <= 0.5 else 'not met'})."]
    if "ours K=160" in median and "ours" in median:
        per_channel = {
            k: median[n]["time"] / k for k, n in ((160, "ours K=160"), (640, "ours K=640"),
                                                   (1280, "ours"))
            if n in median
        }
        growth = ", ".join(f"K={k}: {1000 * v:.1f} ms" for k, v in per_channel.items())
        lines += ["", f"Time per channel, ours on `_bn1` (constant = linear growth): {growth}."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "score_cam.md").write_text("\n".join(lines) + "\n")  # in case Eigen-CAM fails
    if args.eigen_rounds > 0:
        lines += _eigen_cam_rows(args.eigen_rounds)
    table = "\n".join(lines)
    print(table)
    (RESULTS / "score_cam.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

"""Real-model leaderboard (issue 7): every method on EfficientNet-Lite0 and the bundled photos.

Methods: every entry of ``captum_ext.registry.METHODS`` (new entries are picked up without code
changes), Captum's ``IntegratedGradients`` and ``Saliency``, ``IGOS`` and ``IGOSPlusPlus`` at
their defaults (when the registry does not list them), SS-CAM and IS-CAM (listed, run only with
``--include``: 35 and 10 forward passes per channel), and a uniform random map. Targets: the top-1 class of each
photo. Layer methods explain the *input* of ``model._avg_pooling`` (the 7x7x1280 map that is
pooled into ``model._fc``; ``attribute_to_layer_input=True``, ``relu_attributions=True`` for
CAMs); their maps are upsampled to 224x224 (bilinear, ``captum_ext._tensor_ops.upsample``) for the
input-space metrics.

Columns (``captum_ext.metrics``, softmax probability of the target):

* deletion (lower is better) and insertion (higher is better), I-GOS protocol (28x28 ordering
  grid, blur baselines) and RISE protocol (pixel order, 0 / RISE-blur baselines), with
  ``--igos-steps`` (default 50, the protocol's) and ``--rise-steps`` steps (default 112, half
  the protocol's 224 to fit the CPU budget: a coarser trapezoid sum of the same curve);
* Average Drop (lower is better) and Average Increase (higher is better), min-max masks, baseline 0;
* sanity: model-parameter randomisation, cascading, Spearman ρ between the maps of the trained
  model and of the model with ``--sanity-layers`` re-initialised top-down (default ``_fc`` then
  ``_conv_head``, so the last layer and the 1x1 conv that makes the explained features); ρ after
  ``_fc`` alone and after the whole cascade. Low |ρ| = the map depends on the weights (passes);
  a CAM of the pooled features keeps its activations when only ``_fc`` is randomised, so its map
  changes only through the weights;
* time per image: the attribution alone, one photo at a time (shared 2-core machine: compare
  within the table only).

Methods whose first photo takes longer than ``--slow-seconds`` are scored on the first
``--slow-photos`` photos only (the table says so); ``--skip NAME ...`` leaves methods out.

Run::

    PYTHONPATH=. python benchmarks/leaderboard.py [--photos 6] [--skip IGOSPlusPlus] [--include LayerSSCam]
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from captum.attr import IntegratedGradients, Saliency
from torch import Tensor, nn

from captum_ext import attr
from captum_ext._tensor_ops import upsample
from captum_ext.datasets import load_sample_photos
from captum_ext.metrics import (
    average_drop,
    deletion_insertion,
    increase_in_confidence,
    model_parameter_randomisation,
)
from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet
from captum_ext.registry import METHODS

RESULTS = Path(__file__).parent / "results"
logger = logging.getLogger("leaderboard")

# explain(model, inputs, target) -> maps (N, C, *S), input or layer resolution.
Explain = Callable[[nn.Module, Tensor, Any], Tensor]


@dataclass
class Entry:
    name: str
    explain: Explain
    note: str = ""
    #: left out unless named by ``--include``, with this reason in the table
    skip_reason: str = ""


def _with_generator(method: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(kwargs)
    if "generator" in inspect.signature(method.attribute).parameters:
        kwargs["generator"] = torch.Generator().manual_seed(0)
    return kwargs


def _registry_entry(name: str) -> Entry:
    info = METHODS[name]

    def explain(model: nn.Module, x: Tensor, target: Any) -> Tensor:
        method = info.build(model, model._avg_pooling, model._fc)
        if "generator" in inspect.signature(method.attribute).parameters:
            kwargs = _with_generator(method, info.attribute_kwargs)
            if info.uses_layer:
                kwargs["attribute_to_layer_input"] = True
                if info.kind == "layer CAM":
                    kwargs["relu_attributions"] = True
            out = method.attribute(x, target=target, **kwargs)
            return (out[0] if isinstance(out, tuple) else out).detach()
        return info.run(method, x, target, attribute_to_layer_input=True, relu_attributions=True)

    label = f"{name} (Captum)" if info.is_captum_builtin else name
    return Entry(label, explain, "layer map at `_avg_pooling` input" if info.uses_layer else "")


def _entries(ig_steps: int, igos_iterations: int | None,
             variant_samples: int | None = None) -> list[Entry]:
    entries = [_registry_entry(name) for name in METHODS]
    listed = set(METHODS)
    entries.append(Entry(
        "IntegratedGradients (Captum)",
        lambda m, x, t: IntegratedGradients(m).attribute(
            x, target=t, n_steps=ig_steps, internal_batch_size=ig_steps
        ).detach(),
        f"n_steps={ig_steps}, zero baseline",
    ))
    entries.append(Entry(
        "Saliency (Captum)", lambda m, x, t: Saliency(m).attribute(x, target=t).detach()
    ))
    reduced = {} if igos_iterations is None else {
        "iterations": igos_iterations, "ig_steps": igos_iterations}
    for cls in (attr.IGOS, attr.IGOSPlusPlus):
        if cls.__name__ not in listed:
            entries.append(Entry(
                cls.__name__,
                lambda m, x, t, c=cls: c(m).attribute(
                    x, target=t, generator=torch.Generator().manual_seed(0), **reduced
                ).detach(),
                f"iterations=ig_steps={igos_iterations}, other defaults" if reduced
                else "the method's defaults, seeded generator",
            ))
    # Score-CAM's noisy variants: n passes per channel of the 1280-channel pooled layer.
    for cls, count_kwarg, count in ((attr.LayerSSCam, "n_samples", 35),
                                    (attr.LayerISCam, "n_steps", 10)):
        entries.append(Entry(
            cls.__name__,
            lambda m, x, t, c=cls, k=count_kwarg: c(m, m._avg_pooling).attribute(
                x, target=t, attribute_to_layer_input=True, relu_attributions=True,
                batch_size=64, **({"generator": torch.Generator().manual_seed(0)}
                                  if c is attr.LayerSSCam else {}),
                **({k: variant_samples} if variant_samples else {})
            ).detach(),
            "layer map at `_avg_pooling` input" + (
                f"; {count_kwarg}={variant_samples} (default {count})" if variant_samples else ""),
            skip_reason=(
                f"not run by default: {count} x 1280 = {count * 1280:,} forward passes per "
                f"photo at this layer ({count_kwarg}={count}), about {count}x Score-CAM's "
                f"cost; `--include {cls.__name__}` runs it"
            ),
        ))
    generator = torch.Generator().manual_seed(0)
    entries.append(Entry(
        "random", lambda m, x, t: torch.rand((x.shape[0], 1) + x.shape[2:], generator=generator),
        "uniform noise, redrawn each call",
    ))
    return entries


def _to_input(maps: Tensor, x: Tensor) -> Tensor:
    maps = maps.float().mean(1, keepdim=True) if maps.shape[1] > 1 else maps.float()
    if maps.shape[2:] != x.shape[2:]:
        maps = upsample(maps, x.shape[2:])
    return maps


def _score(entry: Entry, model: nn.Module, x: Tensor, targets: list[int], args) -> dict[str, Any]:
    times, maps = [], []
    for i in range(x.shape[0]):
        start = time.perf_counter()
        maps.append(entry.explain(model, x[i : i + 1], targets[i]))
        times.append(time.perf_counter() - start)
        if i == 0 and times[0] > args.slow_seconds and x.shape[0] > args.slow_photos:
            x, targets = x[: args.slow_photos], targets[: args.slow_photos]
            entry.note = (entry.note + "; " if entry.note else "") + (
                f"slow: {x.shape[0]} photo(s) only"
            )
        if i + 1 >= x.shape[0]:
            break
    raw = torch.cat(maps)
    pixel = _to_input(raw, x)
    row: dict[str, Any] = {"photos": x.shape[0], "seconds_per_image": sum(times) / len(times)}
    with torch.no_grad():
        for protocol, steps in (("igos", args.igos_steps), ("rise", args.rise_steps)):
            result = deletion_insertion(
                model, x, pixel, targets, protocol=protocol, n_steps=steps,
                batch_size=args.batch_size,
            )
            row[f"deletion_{protocol}"] = float(result.deletion.mean())
            row[f"insertion_{protocol}"] = float(result.insertion.mean())
        row["average_drop"] = float(average_drop(model, x, pixel, targets).mean())
        row["average_increase"] = float(increase_in_confidence(model, x, pixel, targets).mean())
    sanity = model_parameter_randomisation(
        model, x, targets, entry.explain, mode="cascading", layers=args.sanity_layers,
        generator=torch.Generator().manual_seed(0),
    )
    means = sanity.mean()
    row["sanity_first"] = float(means[0])
    row["sanity_cascade"] = float(means[-1])
    return row


def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.{digits}f}"


Table = tuple[str, dict[str, Any]]


def run(args, on_update: Callable[[str, dict[str, Any]], None] | None = None) -> Table:
    torch.manual_seed(0)
    model = load_efficientnet_lite0().eval()
    photos = load_sample_photos()
    names = list(photos)[: args.photos]
    x = torch.cat([preprocess_imagenet(photos[name]) for name in names])
    with torch.no_grad():
        probabilities = model(x).softmax(1)
    targets = probabilities.argmax(1).tolist()
    total_start = time.perf_counter()
    results: dict[str, Any] = {}
    previous_total = 0.0
    if args.update:  # keep the rows of an earlier run, replace the ones run now
        earlier = json.loads((RESULTS / f"{args.output}.json").read_text())
        results = earlier["methods"]
        previous_total = earlier["meta"]["total_seconds"]
    skipped = {name.lower() for name in args.skip}
    only = {name.lower() for name in args.only}
    for entry in _entries(args.ig_steps, args.igos_iterations, args.variant_samples):
        base = entry.name.split(" ")[0].lower()
        if only and base not in only:
            continue
        if base in skipped:
            results[entry.name] = {"skipped": True, "note": "skipped (--skip)"}
            continue
        if entry.skip_reason and base not in {name.lower() for name in args.include}:
            results[entry.name] = {"skipped": True, "note": entry.skip_reason}
            continue
        logger.info("scoring %s", entry.name)
        start = time.perf_counter()
        try:
            row = _score(entry, model, x, targets, args)
        except Exception as error:  # noqa: BLE001 - a method that cannot run on this model
            logger.warning("%s failed: %s", entry.name, error)
            results[entry.name] = {"error": f"{type(error).__name__}: {error}"[:200]}
            continue
        row["note"] = entry.note
        row["wall_seconds"] = time.perf_counter() - start
        results[entry.name] = row
        logger.info("%s done in %.1f s", entry.name, row["wall_seconds"])
        if on_update is not None:  # partial results survive an interrupted run
            on_update(*_table(args, names, targets, probabilities, results,
                              previous_total + time.perf_counter() - total_start))
    return _table(args, names, targets, probabilities, results,
                  previous_total + time.perf_counter() - total_start)


def _table(args, names, targets, probabilities, results, total) -> Table:
    layers = " → ".join(f"`{name}`" for name in args.sanity_layers)
    described = ", ".join(
        f"{name} → {t} (p={float(probabilities[i, t]):.2f})"
        for i, (name, t) in enumerate(zip(names, targets))
    )
    header = [
        f"EfficientNet-Lite0 (`load_efficientnet_lite0()`), {len(names)} bundled photos "
        f"({described}), "
        "top-1 targets, scores = softmax of the target. Layer methods: input of "
        "`model._avg_pooling` (7x7), upsampled bilinearly to 224 for the metrics.",
        "",
        f"Settings: deletion/insertion I-GOS protocol with n_steps={args.igos_steps} (28x28 grid; "
        f"protocol default 50), RISE protocol with n_steps={args.rise_steps} (default 224); "
        f"IntegratedGradients n_steps={args.ig_steps}; IGOS/iGOS++ "
        + ("at their defaults" if args.igos_iterations is None else
           f"iterations = ig_steps = {args.igos_iterations} (defaults 15, 20)")
        + "; sanity = cascading model-parameter "
        f"randomisation of {layers}, "
        "Spearman ρ (mean over photos), after the first layer and after the whole cascade. "
        f"Methods slower than {args.slow_seconds:g} s on the first photo use "
        f"{args.slow_photos} photo(s). torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, shared 2-core CPU machine: times compare within this table only. Total "
        f"{total / 60:.1f} min for the rows below.",
        "",
        "| method | del. I-GOS ↓ | ins. I-GOS ↑ | del. RISE ↓ | ins. RISE ↑ | Avg Drop % ↓ "
        f"| Avg Increase % ↑ | sanity ρ `{args.sanity_layers[0]}` | sanity ρ cascade "
        "| s / image | photos | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = []
    for name, row in results.items():
        if "error" in row or "skipped" in row:
            note = row.get("note") or f"n/a: {row['error']}".replace("|", "/")
            rows.append(f"| {name} |" + " – |" * 10 + f" {note} |")
            continue
        note = row["note"]
        if math.isnan(row["sanity_first"]) or math.isnan(row["sanity_cascade"]):
            note = (note + "; " if note else "") + (
                "sanity nan: the randomised model's map is constant, so ρ is undefined")
        rows.append(
            f"| {name} | {_fmt(row['deletion_igos'])} | {_fmt(row['insertion_igos'])} "
            f"| {_fmt(row['deletion_rise'])} | {_fmt(row['insertion_rise'])} "
            f"| {_fmt(row['average_drop'], 1)} | {_fmt(row['average_increase'], 1)} "
            f"| {_fmt(row['sanity_first'], 2)} | {_fmt(row['sanity_cascade'], 2)} "
            f"| {_fmt(row['seconds_per_image'], 2)} | {row['photos']} | {note} |"
        )
    meta = {
        "photos": names, "targets": targets, "total_seconds": total,
        "settings": {key: value for key, value in vars(args).items()},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    return "\n".join(header + rows), {"meta": meta, "methods": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=6, help="first N bundled photos")
    parser.add_argument("--igos-steps", type=int, default=50)
    parser.add_argument("--rise-steps", type=int, default=112)
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--igos-iterations", type=int, default=None,
                        help="I-GOS/iGOS++ iterations and ig_steps (default: their defaults)")
    parser.add_argument("--sanity-layers", nargs="+", default=["_fc", "_conv_head"])
    parser.add_argument("--slow-seconds", type=float, default=20.0)
    parser.add_argument("--slow-photos", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip", nargs="*", default=[], help="method names to leave out")
    parser.add_argument("--include", nargs="*", default=[],
                        help="expensive methods left out by default to run as well")
    parser.add_argument("--only", nargs="*", default=[], help="run only these methods")
    parser.add_argument("--variant-samples", type=int, default=None,
                        help="n_samples of SS-CAM and n_steps of IS-CAM (default: theirs)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other rows of the existing --output table")
    parser.add_argument("--output", default="leaderboard")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    RESULTS.mkdir(exist_ok=True)

    def write(table: str, data: dict[str, Any]) -> None:
        (RESULTS / f"{args.output}.md").write_text(table + "\n")
        (RESULTS / f"{args.output}.json").write_text(json.dumps(data, indent=2) + "\n")

    table, data = run(args, on_update=write)
    write(table, data)
    print(table)


if __name__ == "__main__":
    main()

"""Cross-check ``captum_ext.metrics`` against Quantus 0.6.0 (and torchcam / pytorch-grad-cam where
Quantus lacks the metric), on the same inputs.

Setting: 64 held-out images of the synthetic 2D cue task (one channel, 32×32), the shipped model
``load_synthetic_model(2)``, target = the true label; Grad-CAM maps (Captum ``LayerGradCam`` at
``model.features[-1]``, 8×8, upsampled bilinearly to 32×32 by our metrics) and uniform random
maps; ground truth = the cue's box. Every metric is run with the settings that make the two
definitions coincide, then with each library's defaults, and the differences are explained.

Run with the anchors venv (Quantus, torchcam and pytorch-grad-cam live there)::

    PYTHONPATH=. /work/venv-anchors/bin/python benchmarks/crosscheck_quantus.py

Writes ``benchmarks/results/quantus_crosscheck.md``.
"""

from __future__ import annotations

import logging
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from captum.attr import LayerGradCam

from captum_ext._tensor_ops import upsample
from captum_ext.datasets import make_synthetic_cue_data
from captum_ext.metrics import (
    confidence_scores,
    energy_pointing_game,
    model_parameter_randomisation,
    noisy_linear_imputation,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    road,
    spearman_correlation,
)
from captum_ext.metrics import randomisation
from captum_ext.models import load_synthetic_model

RESULTS = Path(__file__).parent / "results"
N = 64

SUMMARY = """
## Where they agree, where they differ, and why

**Agree exactly (same inputs, settings that make the definitions coincide):**
- Pointing game at tolerance 0, relevance mass accuracy (signed), relevance rank accuracy (no
  ties in these maps), and energy pointing game vs Quantus `AttributionLocalisation` with
  `positive_attributions=True` (float rounding only).
- ROAD: Quantus's MoRF accuracy curve (share of examples still classified as the label) is
  reproduced exactly with `noise_std=0` (Quantus's `noise=0`).
- Spearman correlation: equal to Quantus's (scipy's) to 1e-16, ties included.
- MPRT (cascading): equal to Quantus's per-example correlations to 1e-16 once Quantus's seeding
  is emulated, so the layer order, copy, explanation and correlation pipeline are the same.
- Average Drop and Increase in Confidence: equal to torchcam's `ClassificationMetric` when given
  torchcam's own resized masks (`normalise="none"`). Quantus has no such metric.

**Agree to a tolerance:** the noisy linear imputation matches Quantus's and pytorch-grad-cam's
exact sparse solves (`spsolve`) to about 2e-5 (our conjugate gradient stops at a relative
residual of 1e-5; tests bound the error by 1e-4).

**Differ by design (documented conventions):**
- Relevance mass: ours zeroes negative relevance by default (`positive_only=True`, the CLEVR-XAI
  definition, score in [0, 1]); Quantus keeps signs (its default `normalise_by_max` scales both
  sums alike, so it cancels). Grad-CAM has negative values, hence the gap in the default row.
- Pointing game: ours adds TorchRay's Euclidean tolerance; Quantus has none. An all-zero map is
  a miss (and relevance mass 0) for us; Quantus refuses it with an AssertionError, and by its code
  a non-zero constant map would be a hit (every pixel is a maximum). For an empty mask both return
  NaN for relevance mass, but Quantus's pointing game writes NaN into a boolean array, which
  stores True (a hit); ours returns NaN — see the edge-case rows.
- Relevance rank: ties are broken by position (stable sort) here, by numpy's unstable quicksort
  in Quantus, so maps with ties (e.g. ReLU'd maps with many zeros) can differ.
- ROAD: ours also has LeRF, returns target probabilities as well as accuracy, seeds the noise
  with a `generator` (Quantus uses numpy's global RNG), works in 1D/2D/3D and on multi-channel
  inputs with one mask per pixel (Quantus's ROAD indexes attributions over `C·H·W` and fails for
  `C > 1`, as the anchor table warns; we pass 1-channel data). Defaults: percentages 10…90 (the
  paper) vs Quantus's 1…99 step 2.
- MPRT seeding: Quantus calls `torch.manual_seed(seed + 1)` before every layer (the same seed
  each time, and the caller's global RNG is changed); we draw one seed per layer from the
  `generator` and reset inside `torch.random.fork_rng`, so the random weights, hence the
  correlations, differ unless the seeding is emulated.
- Average Drop defaults: torchcam min-max normalises the CAM at layer resolution and then resizes;
  we resize then normalise (so the upsampled mask spans exactly [0, 1]), which changes Average Drop
  by under 1 percentage point here. torchcam also explains the softmax output when given a
  `logits_fn`, whereas Captum methods explain whatever the model returns (logits here).

**Not cross-checked (no implementation in the anchors):** ADCC, LeRF, Average Drop in Quantus,
pointing game with tolerance (TorchRay is non-commercial and not installed).
"""


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _row(name: str, ours, theirs, note: str) -> str:
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    both = ~(np.isnan(ours) | np.isnan(theirs))
    diff = float(np.abs(ours[both] - theirs[both]).max()) if both.any() else float("nan")
    return (
        f"| {name} | {np.nanmean(ours):.4f} | {np.nanmean(theirs):.4f} | {diff:.2e} | "
        f"{int((np.abs(ours - theirs) > 1e-6)[both].sum())}/{int(both.sum())} | {note} |"
    )


def localisation(quantus, model, data, maps, noise) -> list[str]:
    kwargs = dict(model=model, x_batch=_np(data.images), y_batch=_np(data.labels),
                  s_batch=_np(data.masks).astype(np.float32), device="cpu")
    silent = dict(disable_warnings=True, display_progressbar=False)
    rows = []
    for label, a in (("Grad-CAM", maps), ("random", noise)):
        a_np = _np(a)
        q = quantus.PointingGame(normalise=False, abs=False, **silent)(a_batch=a_np, **kwargs)
        rows.append(_row(f"pointing game, tol 0 ({label})", _np(pointing_game(a, data.masks, 0)), q,
                         "same rule: a hit if any maximiser is in the mask"))
        q = quantus.RelevanceMassAccuracy(normalise=False, abs=False, **silent)(a_batch=a_np, **kwargs)
        rows.append(_row(f"relevance mass, signed ({label})",
                         _np(relevance_mass_accuracy(a, data.masks, positive_only=False)), q,
                         "ours with positive_only=False"))
        q = quantus.RelevanceMassAccuracy(**silent)(a_batch=a_np, **kwargs)
        rows.append(_row(f"relevance mass, defaults ({label})",
                         _np(relevance_mass_accuracy(a, data.masks)), q,
                         "defaults differ: ours zeroes negative relevance (positive_only); "
                         "Quantus keeps signs (its default normalise_by_max cancels in the ratio)"))
        q = quantus.RelevanceRankAccuracy(normalise=False, abs=False, **silent)(a_batch=a_np, **kwargs)
        rows.append(_row(f"relevance rank ({label})", _np(relevance_rank_accuracy(a, data.masks)), q,
                         "ties: ours stable (position), Quantus np.argsort (quicksort)"))
        q = quantus.AttributionLocalisation(
            positive_attributions=True, normalise=False, abs=False, **silent
        )(a_batch=a_np, **kwargs)
        rows.append(_row(f"energy pointing game vs AttributionLocalisation ({label})",
                         _np(energy_pointing_game(a, data.masks)), q,
                         "positive share inside the box; Quantus adds 1e-9 to the denominator"))
    return rows


def edge_cases(quantus, model, data, maps) -> list[str]:
    """What each library returns for a constant map and for an empty mask."""
    silent = dict(disable_warnings=True, display_progressbar=False, normalise=False, abs=False)
    x, y = _np(data.images[:2]), _np(data.labels[:2])
    constant = torch.zeros_like(maps[:2])
    empty = torch.zeros_like(data.masks[:2])
    rows = []
    for label, a, s in (("all-zero map", constant, data.masks[:2]), ("empty mask", maps[:2], empty)):
        for name, ours_fn, metric in (
            ("pointing game", lambda a, s: pointing_game(a, s, 0), quantus.PointingGame),
            ("relevance mass", relevance_mass_accuracy, quantus.RelevanceMassAccuracy),
        ):
            try:
                theirs = metric(**silent)(model=model, x_batch=x, y_batch=y, a_batch=_np(a),
                                          s_batch=_np(s).astype(np.float32), device="cpu")
            except Exception as error:  # noqa: BLE001
                theirs = f"raised {type(error).__name__}"
            ours = _np(ours_fn(a, s)).tolist()
            rows.append(f"| {name}, {label} | {ours} | {theirs} | — | — | convention |")
    return rows


def imputation(quantus_perturb, pgc_imputer) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 24, 24, generator=generator)
    rows = []
    for label, removed in (
        ("random 60 %", torch.rand(24, 24, generator=generator) < 0.6),
        ("one 16x14 hole", torch.zeros(24, 24, dtype=torch.bool).index_fill_(0, torch.arange(4, 20), True)
         & torch.zeros(24, 24, dtype=torch.bool).index_fill_(1, torch.arange(5, 19), True)),
    ):
        ours = noisy_linear_imputation(x[None], removed[None, None], noise_std=0.0)[0]
        indices = np.flatnonzero(_np(removed).reshape(-1))
        q = quantus_perturb.noisy_linear_imputation(_np(x), indices, noise=0.0)
        rows.append(_row(f"noisy linear imputation vs Quantus ({label})", _np(ours).ravel(), q.ravel(),
                         "exact sparse solve vs our CG (tol 1e-5); noise 0"))
        if pgc_imputer is not None:
            g = pgc_imputer(noise=0.0)(x, (~removed).float())
            rows.append(_row(f"noisy linear imputation vs pytorch-grad-cam ({label})",
                             _np(ours).ravel(), _np(g).ravel(), "exact sparse solve vs our CG"))
    return rows


def road_rows(quantus, model, data, maps) -> list[str]:
    percentages = [10, 30, 50, 70, 90]
    try:
        q = quantus.ROAD(percentages=percentages, noise=0.0, normalise=False, abs=False,
                         disable_warnings=True, display_progressbar=False, return_aggregate=False)
        q(model=model, x_batch=_np(data.images), y_batch=_np(data.labels), a_batch=_np(maps),
          device="cpu")
        theirs = np.array([q.evaluation_scores[p] for p in percentages])
    except Exception as error:  # noqa: BLE001 - report whatever Quantus raises
        return [f"| ROAD MoRF accuracy | | | | | Quantus raised {type(error).__name__}: {error} |"]
    ours = road(model, data.images, maps, data.labels, percentages=percentages, noise_std=0.0)
    return [_row(f"ROAD MoRF accuracy at {p} %", [float(ours.accuracy()[i])], [theirs[i]],
                 "share still classified as the label; noise 0")
            for i, p in enumerate(percentages)]


def randomisation_rows(quantus, model, data, maps) -> list[str]:
    rows = []
    # 1. The correlation itself on the same pairs of maps (incl. the many ties of ReLU'd maps).
    relu = maps.clamp_min(0).flatten(1)
    shuffled = relu[torch.randperm(N, generator=torch.Generator().manual_seed(0))]
    theirs = quantus.similarity_func.correlation_spearman(_np(relu), _np(shuffled), batched=True)
    rows.append(_row("Spearman ρ (ReLU'd Grad-CAM pairs, with ties)",
                     _np(spearman_correlation(relu, shuffled)), theirs, "scipy.stats.spearmanr inside"))
    # 2. The whole test. Quantus reseeds the global RNG with seed+1 before every layer; we draw one
    #    seed per layer from a generator, so the random weights (and correlations) differ.
    def explain(m, x, t):
        return LayerGradCam(m, m.features[-1]).attribute(x, target=t)

    def quantus_explain(model, inputs, targets, **_):
        x = torch.as_tensor(inputs)
        return _np(upsample(explain(model, x, torch.as_tensor(targets)), x.shape[2:]))

    a = quantus_explain(model, _np(data.images[:16]), _np(data.labels[:16]))
    mprt = quantus.MPRT(abs=True, normalise=False, disable_warnings=True, display_progressbar=False,
                        return_average_correlation=False)
    scores = mprt(model=model, x_batch=_np(data.images[:16]), y_batch=_np(data.labels[:16]),
                  a_batch=a, explain_func=quantus_explain, device="cpu")
    layers = [n for n, mod in model.named_modules() if hasattr(mod, "reset_parameters")][::-1]

    def ours_with(generator):
        return model_parameter_randomisation(
            model, data.images[:16], data.labels[:16],
            lambda m, x, t: upsample(explain(m, x, t), x.shape[2:]), absolute=True,
            layers=layers, generator=generator,
        )

    state = torch.random.get_rng_state()
    shipped = ours_with(torch.Generator().manual_seed(42))
    # Emulate Quantus's seeding (global seed 43 before each reset) to check the pipeline exactly.
    original_randomise = randomisation._randomise

    def quantus_seeding(module, seed):
        torch.manual_seed(43)
        module.reset_parameters()

    randomisation._randomise = quantus_seeding
    try:
        emulated = ours_with(None)
    finally:
        randomisation._randomise = original_randomise
        torch.random.set_rng_state(state)
    for name, same_seeds, values in zip(layers, emulated.correlations, shipped.correlations):
        if name in scores:
            rows.append(_row(f"MPRT cascading, layer `{name}`, Quantus's seeding emulated",
                             _np(same_seeds), scores[name], "same weights, same maps: exact"))
    for name, values in zip(layers, shipped.correlations):
        if name in scores:
            rows.append(
                f"| MPRT cascading, layer `{name}`, our seeding | {float(values.nanmean()):.4f} | "
                f"{np.nanmean(scores[name]):.4f} | — | — | different random weights: Quantus "
                "reseeds the global RNG with seed+1 before every layer, we draw one seed per "
                "layer from a generator inside fork_rng |"
            )
    return rows


def confidence_rows(model, data) -> list[str]:
    try:
        from torchcam.methods import GradCAM
        from torchcam.metrics import ClassificationMetric
    except ImportError as error:
        return [f"| Average Drop vs torchcam | | | | | torchcam unavailable: {error} |"]
    extractor = GradCAM(model, target_layer=model.features[-1])
    metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
    metric.update(data.images, class_idx=data.labels.tolist())
    summary = metric.summary()
    # torchcam's metric explains the *softmax* output (logits_fn is applied before the CAM)
    scores = torch.softmax(model(data.images), dim=-1)
    cams = extractor(class_idx=data.labels.tolist(), scores=scores)[0].detach()
    extractor.remove_hooks()
    resized = upsample(cams[:, None], data.images.shape[2:])  # torchcam: normalise, then resize
    exact = confidence_scores(model, data.images, resized, data.labels, normalise="none")
    ours = confidence_scores(model, data.images, cams[:, None], data.labels)  # resize, then normalise
    return [
        _row("Average Drop, torchcam's own masks (%)", [float(exact.average_drop().mean())],
             [100 * summary["avg_drop"]], "normalise='none' on torchcam's resized map"),
        _row("Increase in Confidence, torchcam's own masks (%)",
             [float(exact.increase_in_confidence().mean())], [100 * summary["conf_increase"]],
             "idem"),
        _row("Average Drop, our defaults (%)", [float(ours.average_drop().mean())],
             [100 * summary["avg_drop"]],
             "ours upsamples then min-max normalises; torchcam normalises at 8x8 then resizes"),
    ]


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("quantus").setLevel(logging.ERROR)
    import quantus
    from quantus.functions import perturb_func

    try:
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    except ImportError:
        NoisyLinearImputer = None

    torch.manual_seed(0)
    model = load_synthetic_model(2)
    data = make_synthetic_cue_data(N, 2, seed=11)
    maps = LayerGradCam(model, model.features[-1]).attribute(data.images, target=data.labels)
    full = upsample(maps, data.images.shape[2:])
    noise = torch.rand(full.shape, generator=torch.Generator().manual_seed(0))
    rows = [
        f"Quantus {quantus.__version__}, torch {torch.__version__}; {N} images of the synthetic "
        "2D cue task (1x32x32), `load_synthetic_model(2)`, Grad-CAM at `features[-1]` (8x8, "
        "upsampled bilinearly) and uniform random maps, target = label. `differ` counts examples "
        "whose values differ by more than 1e-6.",
        "",
        "| check | ours (mean) | reference (mean) | max abs diff | differ | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    rows += localisation(quantus, model, data, full, noise)
    rows += edge_cases(quantus, model, data, full)
    rows += imputation(perturb_func, NoisyLinearImputer)
    rows += road_rows(quantus, model, data, full)
    rows += randomisation_rows(quantus, model, data, maps)
    rows += confidence_rows(model, data)
    text = "\n".join(rows) + "\n" + SUMMARY
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quantus_crosscheck.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

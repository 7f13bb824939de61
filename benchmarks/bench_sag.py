"""SAG search on EfficientNet-Lite0 for the cat photo (issue 6) at the spec's defaults.

Setting: ``preprocess_imagenet(load_photo("chelsea"))``, target 285, 7x7 grid, beam width 3,
15 successors, 10 roots, τ = 0.9 relative, black baseline (``-mean/std`` after normalisation),
bilinear ``align_corners=True`` tents, the 2-iteration coarse I-GOS ranking (AAAI line search,
seeded generator), ``batch_size=64``.

Reported: seconds, images pushed through the model (search + graph; I-GOS ranking separately),
the number of minimal sufficient explanations (roots), the diverse subset, against the official
code's measured anchor on this CPU (issue 6: about 400 s, 14,700 single-image calls, 18
sufficient explanations, 1 after its overlap pruning). The anchor is also *replayed*: 14,700
times the single-image forward cost of this model measured in the same run, so that load from
other processes hits both sides alike. Writes ``benchmarks/results/sag.md`` and the figure
``benchmarks/results/sag_chelsea.png``.

The search's cost depends on the successor order, which comes from a noisy I-GOS ranking: a
different noise seed (or float rounding) changes which sets are visited. ``--seeds N`` repeats
the default search with ranking seeds ``0..N-1`` and reports the spread (default 5).

Run::

    PYTHONPATH=. /work/venv/bin/python benchmarks/bench_sag.py [--seeds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401

from captum_ext.datasets import load_photo
from captum_ext.models import load_efficientnet_lite0
from captum_ext.models.efficientnet import IMAGENET_MEAN, IMAGENET_STD, preprocess_imagenet
from captum_ext.structures import StructuredAttentionGraph
from captum_ext.visualization import plot_sag

RESULTS = Path(__file__).resolve().parent / "results"
ANCHOR_SECONDS, ANCHOR_IMAGES, ANCHOR_ROOTS, ANCHOR_PRUNED = 400.0, 14_700, 18, 1


def single_image_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5,
                        help="ranking seeds of the spread table (1: seed 0 only)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_efficientnet_lite0().eval()
    photo = load_photo("chelsea")
    x = preprocess_imagenet(photo)
    black = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1)
    per_image = single_image_seconds(model, x)
    load_before = os.getloadavg()[0]
    sag = StructuredAttentionGraph(model)
    start = time.perf_counter()
    result = sag.search(x, target=285, baselines=black, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    # The official code's beam keeps beam_width + 1 states (spec section 3): the same search
    # with that off-by-one, to compare the explanations it finds with the anchor's.
    start = time.perf_counter()
    official = sag.search(x, target=285, baselines=black, exact_official=True,
                          generator=torch.Generator().manual_seed(0))
    official_seconds = time.perf_counter() - start
    spread = [(seconds, result.forward_images, len(result.roots), len(result.explanations))]
    for seed in range(1, args.seeds):
        start = time.perf_counter()
        other = sag.search(x, target=285, baselines=black,
                           generator=torch.Generator().manual_seed(seed))
        spread.append((time.perf_counter() - start, other.forward_images, len(other.roots),
                       len(other.explanations)))
    load_after = os.getloadavg()[0]
    replay = ANCHOR_IMAGES * per_image
    rows = [
        ("seconds", f"{seconds:.1f}", f"{ANCHOR_SECONDS:.0f} (measured by the issue); replayed "
         f"now: {replay:.1f}", f"{ANCHOR_SECONDS / seconds:.1f}x vs measured, "
         f"{replay / seconds:.1f}x vs replayed"),
        ("images through the model (search + graph)", f"{result.forward_images}",
         f"{ANCHOR_IMAGES} (one per call)", f"{ANCHOR_IMAGES / result.forward_images:.1f}x fewer"),
        ("  of which I-GOS ranking (fwd / bwd)",
         f"{result.ranking_forward_images} / {result.ranking_backward_images}", "n/a", ""),
        ("distinct patch sets scored / score requests",
         f"{result.states_scored} / {result.score_requests}", "", "no set scored twice"),
        ("minimal sufficient explanations (roots)", f"{len(result.roots)}", f"{ANCHOR_ROOTS}", ""),
        ("after overlap pruning (overlap <= 1, first 3)", f"{len(result.explanations)}",
         f"{ANCHOR_PRUNED}", ""),
        ("with `exact_official=True` (beam keeps beam_width + 1): seconds / images",
         f"{official_seconds:.1f} / {official.forward_images}", f"{ANCHOR_SECONDS:.0f} / "
         f"{ANCHOR_IMAGES}", f"{ANCHOR_SECONDS / official_seconds:.1f}x faster, "
         f"{ANCHOR_IMAGES / official.forward_images:.1f}x fewer images"),
        ("  roots / after overlap pruning", f"{len(official.roots)} / "
         f"{len(official.explanations)}", f"{ANCHOR_ROOTS} / {ANCHOR_PRUNED}", ""),
    ]
    table = ["| quantity | captum-ext | official anchor | ratio |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    roots = ", ".join(f"{{{' '.join(map(str, e.patches))}}}: {100 * e.relative_confidence:.0f}%"
                      for e in result.roots)
    text = "\n".join([
        "# SAG on EfficientNet-Lite0, chelsea (target 285), spec defaults", "",
        *table, "",
        f"p_full = {result.p_full:.3f}; DNF of the drawn roots: `{result.dnf}`", "",
        f"Roots (discovery order, relative confidence): {roots}", "",
        f"Graph: {len(result.nodes)} nodes, {len(result.edges)} edges. Single-image forward "
        f"measured in this run: {1000 * per_image:.1f} ms.", "",
        *_spread_lines(spread),
        f"Timings on a 2-core CPU, load average {load_before:.1f} before and "
        f"{load_after:.1f} after; the replayed anchor uses this run's single-image forward "
        "cost.", "",
    ])
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sag.md").write_text(text)
    fig = plot_sag(result, photo, max_depth=2)
    fig.savefig(RESULTS / "sag_chelsea.png", dpi=110, facecolor="black")


def _spread_lines(spread: list[tuple[float, int, int, int]]) -> list[str]:
    """The per-seed table and its median, or nothing for a single seed."""
    if len(spread) < 2:
        return []
    lines = [f"Spread over ranking seeds 0-{len(spread) - 1} (default search; seed 0 is the "
             "run above):", "", "| seed | seconds | images | roots | after pruning |",
             "|---|---|---|---|---|"]
    lines += [f"| {seed} | {t:.1f} | {images} | {roots} | {pruned} |"
              for seed, (t, images, roots, pruned) in enumerate(spread)]
    median_t = statistics.median(row[0] for row in spread)
    median_images = statistics.median(row[1] for row in spread)
    lines += [f"| median | {median_t:.1f} | {median_images:.0f} | "
              f"{statistics.median(row[2] for row in spread):.0f} | "
              f"{statistics.median(row[3] for row in spread):.0f} |", "",
              f"Median against the official 400 s: {ANCHOR_SECONDS / median_t:.1f}x faster, "
              f"{ANCHOR_IMAGES / median_images:.1f}x fewer images.", ""]
    return lines


if __name__ == "__main__":
    main()

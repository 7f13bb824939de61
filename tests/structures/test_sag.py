"""StructuredAttentionGraph: toy models with known minimal sufficient explanations (spec §9)."""

from __future__ import annotations

import itertools

import pytest
import torch

from captum_ext.structures import StructuredAttentionGraph
from captum_ext.structures._patches import PatchScorer, bits_of, patches_of
from captum_ext.structures._search import minimise, select_diverse
from tests.structures._toys import and_model, ones_image, or_model, patch_means

FAST = dict(upsample="nearest", max_root_size=4)


def saliency_for(patches, grid=7, spatial=(28, 28)):
    """A saliency that ranks ``patches`` first (in that order), then the rest in raster order."""
    cells = torch.zeros(grid ** len(spatial))
    for rank, patch in enumerate(patches):
        cells[patch] = 10.0 - rank
    up = cells.reshape((1, 1) + (grid,) * len(spatial))
    return torch.nn.functional.interpolate(up, size=spatial, mode="nearest")


def test_or_model_has_exactly_the_two_singleton_explanations_found_with_igos_ranking():
    model = or_model(3, 10)
    result = StructuredAttentionGraph(model).search(
        ones_image(), target=1, upsample="nearest", max_root_size=3,
        generator=torch.Generator().manual_seed(0))
    assert sorted(e.patches for e in result.roots) == [(3,), (10,)]
    assert sorted(e.patches for e in result.explanations) == [(3,), (10,)]
    assert result.p_full == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    for e in result.roots:
        assert e.probability == pytest.approx(result.p_full)
        assert e.relative_confidence == pytest.approx(1.0)
        assert e.mask.shape == (7, 7) and e.mask.sum() == 1 and e.mask.flatten()[e.patches[0]]
    assert result.dnf in ("P3 | P10", "P10 | P3")
    # the I-GOS ranking puts the two decisive patches first (lower = more promising)
    assert set(sorted(range(49), key=lambda p: float(result.ranking.flatten()[p]))[:2]) == {3, 10}
    assert result.ranking_backward_images > 0


def test_brute_force_oracle_all_minimal_sufficient_sets_of_or_and_and_models():
    """Every 1-minimal sufficient set among all subsets of the relevant patches plus one other."""
    for model, expected in ((or_model(3, 10), {(3,), (10,)}), (and_model(3, 10), {(3, 10)})):
        x = ones_image()
        scorer = PatchScorer(model, x, torch.zeros_like(x), 1, None, (7, 7), upsample="nearest")
        threshold = 0.9 * scorer.p_full
        universe = (3, 10, 20)
        sufficient = {s for k in range(4) for s in itertools.combinations(universe, k)
                      if scorer.score(bits_of(s)) > threshold}
        minimal = {s for s in sufficient
                   if all(tuple(p for p in s if p != q) not in sufficient for q in s)}
        assert minimal == expected
        result = StructuredAttentionGraph(model).search(
            x, target=1, ranking=saliency_for([3, 10, 20]), **FAST)
        assert {e.patches for e in result.roots} == expected


def test_and_model_graph_edges_and_drops():
    result = StructuredAttentionGraph(and_model(3, 10)).search(
        ones_image(), target=1, ranking=saliency_for([3, 10]), **FAST)
    (root,) = [n for n in result.nodes if n.is_root]
    assert root.patches == (3, 10) and root.percent == 100
    children = {result.nodes[c].patches: (removed, drop) for c, removed, drop in root.children}
    single = torch.sigmoid(torch.tensor(8.0 * 0.0 - 4.0)).item() / result.p_full
    assert children == {(10,): (3, 100 - int(100 * single)), (3,): (10, 100 - int(100 * single))}
    assert len(result.edges) == 2 and all(e.parent == root.id for e in result.edges)
    assert result.to_attribution_map().shape == (1, 1, 28, 28)


def test_minimise_is_one_minimal_and_matches_the_sequential_scan():
    model = or_model(3, 10)
    x = ones_image()
    scorer = PatchScorer(model, x, torch.zeros_like(x), 1, None, (7, 7), upsample="nearest")
    threshold = 0.9 * scorer.p_full
    start = bits_of([0, 3, 5, 10, 11, 30])
    # sequential reference: raster scan, drop whenever still sufficient, repeat passes
    current = set(patches_of(start))
    changed = True
    while changed:
        changed = False
        for p in sorted(current):
            if scorer.score(bits_of(current - {p})) > threshold:
                current -= {p}
                changed = True
    assert patches_of(minimise(scorer, start, threshold)) == tuple(sorted(current)) == (10,)


def test_select_diverse_matches_brute_force():
    generator = torch.Generator().manual_seed(1)
    for _ in range(30):
        n = int(torch.randint(1, 9, (1,), generator=generator))
        roots = [int(torch.randint(1, 2 ** 10, (1,), generator=generator)) for _ in range(n)]
        for thresh in (0, 1, 2):
            def ok(subset):
                return all(bin(roots[i] & roots[j]).count("1") <= thresh
                           for i, j in itertools.combinations(subset, 2))
            best = next(list(s) for k in range(n, 0, -1)
                        for s in itertools.combinations(range(n), k) if ok(s))
            assert select_diverse(roots, thresh) == best


def test_batching_cache_and_counts():
    model = or_model(3, 10)
    sag = StructuredAttentionGraph(model)
    kwargs = dict(target=1, ranking=saliency_for([7, 3, 10]), **FAST)
    model.calls.clear()
    small = sag.search(ones_image(), batch_size=2, **kwargs)
    calls_small = list(model.calls)
    model.calls.clear()
    big = sag.search(ones_image(), batch_size=64, **kwargs)
    assert [e.patches for e in small.roots] == [e.patches for e in big.roots]
    assert max(calls_small) <= 2 and max(model.calls) > 2
    # every image pushed through the model is counted; each distinct set is scored once
    assert big.forward_images == sum(model.calls) == big.states_scored + 1
    assert big.score_requests > big.states_scored


def test_deterministic_and_1d_3d():
    for spatial, grid in (((28,), 7), ((8, 8, 8), 4)):
        model = or_model(1, 2, grid=grid)
        x = ones_image(spatial)
        kwargs = dict(target=1, grid=grid, ranking=saliency_for([1, 2], grid, spatial), **FAST)
        first = StructuredAttentionGraph(model).search(x, **kwargs)
        second = StructuredAttentionGraph(model).search(x, **kwargs)
        assert sorted(e.patches for e in first.roots) == [(1,), (2,)]
        assert [e.patches for e in first.roots] == [e.patches for e in second.roots]
        assert first.roots[0].mask.shape == (grid,) * len(spatial)


def test_no_trace():
    model = and_model(3, 10)
    model.train()
    model.scale.grad = torch.ones(())
    x = ones_image().requires_grad_(False)
    before = x.clone()
    with torch.no_grad():
        StructuredAttentionGraph(model).search(x, target=1, upsample="nearest", max_root_size=2,
                                               generator=torch.Generator().manual_seed(0))
    assert model.training and model.scale.requires_grad
    assert torch.equal(model.scale.grad, torch.ones(()))
    assert torch.equal(x, before)
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_errors():
    sag = StructuredAttentionGraph(or_model())
    with pytest.raises(ValueError, match="one example"):
        sag.search(torch.ones(2, 1, 28, 28), target=1)
    with pytest.raises(ValueError, match="grid"):
        sag.search(ones_image(), target=1, grid=(7,))
    with pytest.raises(ValueError, match="num_successors"):
        sag.search(ones_image(), target=1, beam_width=5, num_successors=3)
    with pytest.raises(ValueError, match="upsample"):
        sag.search(ones_image(), target=1, upsample="cubic")
    with pytest.raises(ValueError, match="baselines"):
        sag.search(ones_image(), target=1, baselines="noise")
    with pytest.raises(ValueError, match="overlap_thresh"):
        sag.search(ones_image(), target=1, overlap_thresh=-1)
    with pytest.raises(NotImplementedError):
        sag.attribute_future(ones_image())
    assert sag.multiplies_by_inputs is False


def test_patch_means_helper():
    x = torch.zeros(1, 1, 28, 28)
    x[..., 0:4, 12:16] = 1.0  # patch 3
    assert patch_means(x, [3, 10], 7).tolist() == [[1.0, 0.0]]


def _full_tree_size(patches: int, max_children: int = 3) -> int:
    """Nodes of an always-confident one-patch-removal tree from a root of ``patches`` patches."""
    if patches <= 1:
        return 1
    return 1 + min(max_children, patches) * _full_tree_size(patches - 1, max_children)


def test_removal_tree_is_bounded_by_max_nodes_with_a_warning():
    """A model that stays confident whatever is removed grows the tree 3-fold per level: 283
    nodes from a 6-patch root (1 + 3 + 9 + 27 + 81 + 162); ``max_nodes`` stops it exactly there,
    breadth-first, and says so."""
    from captum_ext.structures._search import removal_tree
    from tests.structures._toys import PatchRule

    model = PatchRule([0], lambda m: torch.ones_like(m[:, 0]))  # p = sigmoid(4) everywhere
    x = ones_image()
    scorer = PatchScorer(model, x, torch.zeros_like(x), 1, None, (7, 7), upsample="nearest")
    root = bits_of((3, 10, 17, 24, 31, 38))
    options = dict(node_prob_thresh=40.0, max_children=3, max_depth=None, merge_identical=False)
    full = removal_tree(scorer, [root], **options)
    assert len(full) == _full_tree_size(6) == 283
    with pytest.warns(UserWarning, match="max_nodes=100 at depth 4"):
        capped = removal_tree(scorer, [root], max_nodes=100, **options)
    assert len(capped) == 100
    assert [n.bits for n in capped] == [n.bits for n in full[:100]]  # breadth-first prefix
    assert all(child < 100 for n in capped for child, _, _ in n.children)
    assert max(n.depth for n in capped) == 4  # 1 + 3 + 9 + 27 = 40 nodes, then 60 of depth 4
    with pytest.raises(ValueError, match="max_nodes"):
        StructuredAttentionGraph(model).search(x, target=1, max_nodes=0, **FAST)

"""RelevancePatching: oracles, the known circuit of a tiny trained transformer, no trace, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_ext.attr import Component, RelevancePatching
from tests._helpers import assert_unchanged, hook_count, snapshot
from tests.attr import _circuit_transformer as ct


class TwoLayer(nn.Module):
    def __init__(self, act: nn.Module | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), act or nn.Identity(), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _pair(batch: int = 3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 4, generator=g), torch.randn(batch, 4, generator=g)


def test_linear_model_all_three_modes_agree() -> None:
    """For a linear model the first-order expansion is exact: AtP = RelP = activation patching."""
    model = TwoLayer().eval()
    clean, corrupt = _pair()
    relp = RelevancePatching(model, Component(model.fc1, heads=3))
    scores = {m: relp.attribute(clean, corrupt, target=2, mode=m) for m in ("relp", "attribution_patching", "activation_patching")}
    assert scores["relp"].shape == (3, 3)
    torch.testing.assert_close(scores["attribution_patching"], scores["activation_patching"])
    torch.testing.assert_close(scores["relp"], scores["activation_patching"])
    # hand formula for head h: Σ_{j in head h} (a_patch − a_clean)_j · W2[2, j]
    delta = (model.fc1(corrupt) - model.fc1(clean)).detach()
    expected = (delta * model.fc2.weight[2].detach()).unflatten(-1, (3, 2)).sum(-1)
    torch.testing.assert_close(scores["relp"], expected)


def test_relp_uses_the_identity_rule_gradient() -> None:
    """Under the identity rule ∂̃m/∂a = (gelu(a)/a) ⊙ W2ᵀ e_t (R passes GELU unchanged)."""
    model = TwoLayer(nn.GELU()).eval()
    clean, corrupt = _pair()
    relp = RelevancePatching(model, model.fc1)
    per_element = relp.attribute(clean, corrupt, target=1, per_element=True)
    a = model.fc1(clean).detach()
    delta = model.fc1(corrupt).detach() - a
    expected = delta * (F.gelu(a) / (a + 1e-6 * torch.where(a >= 0, 1.0, -1.0))) * model.fc2.weight[1].detach()
    torch.testing.assert_close(per_element, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(relp.attribute(clean, corrupt, target=1), per_element.sum(1))
    plain = relp.attribute(clean, corrupt, target=1, mode="attribution_patching", per_element=True)
    gelu_grad = torch.autograd.functional.vjp(F.gelu, a, torch.ones_like(a))[1]
    torch.testing.assert_close(plain, delta * gelu_grad * model.fc2.weight[1].detach())


@pytest.fixture(scope="module")
def circuit():
    model = ct.trained_model(seed=0)
    tokens, labels = ct.dataset()
    g = torch.Generator().manual_seed(0)
    clean = tokens[torch.randperm(len(tokens), generator=g)[:24]]
    corrupt = clean.clone()
    for pos in (1, 3):
        corrupt[:, pos] = (clean[:, pos] + 1 + torch.randint(0, 3, (len(clean),), generator=g)) % ct.VOCAB
    y_clean = (clean[:, 1] + clean[:, 3]) % ct.VOCAB
    y_corrupt = (corrupt[:, 1] + corrupt[:, 3]) % ct.VOCAB
    keep = y_clean != y_corrupt
    clean, corrupt, y_clean, y_corrupt = clean[keep], corrupt[keep], y_clean[keep], y_corrupt[keep]

    def metric_for(rows_slice=slice(None)):
        good, bad = y_clean[rows_slice], y_corrupt[rows_slice]

        def logit_difference(out):  # row-wise, also on stacked copies of the batch
            rows = torch.arange(out.shape[0])
            return out[rows, good[rows % len(good)]] - out[rows, bad[rows % len(good)]]

        return logit_difference

    with torch.no_grad():
        accuracy = (model(tokens).argmax(1) == labels).float().mean().item()
    return model, clean, corrupt, metric_for, accuracy


def test_known_circuit_is_top_scored_and_relp_tracks_exact_patching_better(circuit) -> None:
    model, clean, corrupt, metric_for, accuracy = circuit
    metric = metric_for()
    assert accuracy == 1.0
    components = [Component(model.attn, heads=ct.HEADS), model.mlp]
    relp = RelevancePatching(model, components)
    scores = {
        mode: torch.cat([s.reshape(len(clean), -1) for s in relp.attribute(clean, corrupt, metric=metric, mode=mode, perturbations_per_eval=8)], 1)
        for mode in ("relp", "attribution_patching", "activation_patching")
    }  # columns: head 0..3, MLP
    exact = scores["activation_patching"]
    # heads 2 and 3 cannot see x1 or x3: exactly zero in every mode
    for s in scores.values():
        assert torch.equal(s[:, 2:4], torch.zeros_like(s[:, 2:4]))
    # the known circuit {head 0, head 1, MLP} is the top-3 by mean |score|, for exact and RelP
    for mode in ("activation_patching", "relp"):
        top = set(scores[mode].abs().mean(0).topk(3).indices.tolist())
        assert top == {0, 1, 4}, (mode, scores[mode].abs().mean(0))
    corr = {m: torch.corrcoef(torch.stack([scores[m].flatten(), exact.flatten()]))[0, 1].item() for m in ("relp", "attribution_patching")}
    assert corr["relp"] >= corr["attribution_patching"], corr
    assert corr["relp"] > 0.5, corr


def test_residual_positions_and_heads_per_position(circuit) -> None:
    model, clean, corrupt, metric_for, _ = circuit
    metric = metric_for(slice(0, 4))
    resid = Component(model.ln1, per_position=True, use_input=True)  # the residual stream before the block
    per_head_pos = Component(model.attn, heads=ct.HEADS, per_position=True)
    relp = RelevancePatching(model, [resid, per_head_pos])
    exact_resid, exact_hp = relp.attribute(clean[:4], corrupt[:4], metric=metric, mode="activation_patching", perturbations_per_eval=7)
    relp_resid, relp_hp = relp.attribute(clean[:4], corrupt[:4], metric=metric)
    assert exact_resid.shape == relp_resid.shape == (4, ct.LENGTH)
    assert exact_hp.shape == relp_hp.shape == (4, ct.LENGTH, ct.HEADS)
    # only the corrupted positions (1 and 3) differ between the runs
    for s in (exact_resid, relp_resid):
        assert torch.equal(s[:, [0, 2, 4]], torch.zeros(4, 3))
    # only the last position of heads 0/1 reaches the readout
    assert torch.equal(exact_hp[:, :-1], torch.zeros_like(exact_hp[:, :-1]))
    assert (exact_hp[:, -1, :2].abs() > 0).all()


def test_batch_is_stack_of_singles_and_chunking_does_not_matter(circuit) -> None:
    model, clean, corrupt, metric_for, _ = circuit
    metric = metric_for(slice(0, 3))
    relp = RelevancePatching(model, [Component(model.attn, heads=ct.HEADS), model.mlp])
    batch = relp.attribute(clean[:3], corrupt[:3], metric=metric)
    exact1 = relp.attribute(clean[:3], corrupt[:3], metric=metric, mode="activation_patching")
    exact5 = relp.attribute(clean[:3], corrupt[:3], metric=metric, mode="activation_patching", perturbations_per_eval=5)
    for a, b in zip(exact1, exact5):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for i in range(3):
        single = relp.attribute(clean[i : i + 1], corrupt[i : i + 1], metric=metric_for(slice(i, i + 1)))
        for a, b in zip(batch, single):
            torch.testing.assert_close(a[i : i + 1], b, rtol=1e-4, atol=1e-5)


def test_no_trace_under_no_grad_and_after_an_exception(circuit) -> None:
    model, clean, corrupt, metric_for, _ = circuit
    metric = metric_for(slice(0, 2))
    model.unembed.weight.grad = torch.ones_like(model.unembed.weight)
    before = snapshot(model, (clean, corrupt))
    relp = RelevancePatching(model, [Component(model.attn, heads=ct.HEADS), model.mlp])
    with torch.no_grad():
        scores = relp.attribute(clean[:2], corrupt[:2], metric=metric)
    assert all(not s.requires_grad for s in scores)
    assert_unchanged(model, (clean, corrupt), before)

    def failing(out):
        raise RuntimeError("boom")

    for mode in ("relp", "activation_patching"):
        with pytest.raises(RuntimeError, match="boom"):
            relp.attribute(clean[:2], corrupt[:2], metric=failing, mode=mode)
        assert_unchanged(model, (clean, corrupt), before)
        assert all("forward" not in vars(m) for m in model.modules())
    model.unembed.weight.grad = None


def test_clear_errors() -> None:
    model = TwoLayer().eval()
    clean, corrupt = _pair()
    relp = RelevancePatching(model, model.fc1)
    with pytest.raises(ValueError, match="mode must be one of"):
        relp.attribute(clean, corrupt, target=0, mode="exact")
    with pytest.raises(ValueError, match="same token length"):
        relp.attribute(clean, corrupt[:, :3], target=0)
    with pytest.raises(ValueError, match="one value per example"):
        relp.attribute(clean, corrupt, metric=lambda out: out.sum())
    with pytest.raises(ValueError, match="out of range"):
        relp.attribute(clean, corrupt, target=7)
    with pytest.raises(ValueError, match="cannot split"):
        RelevancePatching(model, Component(model.fc1, heads=4)).attribute(clean, corrupt, target=0)
    shared = nn.Linear(4, 4)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ValueError, match="ran 2 times"):
        RelevancePatching(twice, shared).attribute(clean, corrupt, metric=lambda o: o.sum(1))
    with pytest.raises(ValueError, match="not a submodule"):
        RelevancePatching(model, nn.Linear(2, 2)).attribute(clean, corrupt, target=0)
    spare = TwoLayer().eval()
    spare.unused = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="did not run"):
        RelevancePatching(spare, spare.unused).attribute(clean, corrupt, target=0)
    with pytest.raises(NotImplementedError):
        relp.attribute_future()
    assert hook_count(model) == 0 and hook_count(twice) == 0

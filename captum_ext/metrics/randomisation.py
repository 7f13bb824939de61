"""Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018).

An explanation that depends on what the model learned should change when the learned weights are
replaced by random ones. The test re-initialises layers from the output towards the input and
reports, per layer and example, the **Spearman rank correlation** between the map of the trained
model and the map of the randomised one (high correlation = the method ignores the weights).

* ``mode="cascading"``: layers are randomised cumulatively, top (logits) first;
* ``mode="independent"``: one layer at a time, all others trained.

The user's model is **never modified**: the test runs on a ``copy.deepcopy``, and restores the
copy's trained weights between independent steps.

Re-initialisation: a module with ``reset_parameters()`` (Linear, Conv, BatchNorm, LayerNorm, ...)
is reset with it (its default PyTorch initialisation, the choice of Adebayo et al. and Quantus),
inside ``torch.random.fork_rng`` seeded from ``generator``, so results are reproducible and the
global RNG is untouched. Other modules with parameters get each parameter redrawn from
``N(0, std(original)²)``.

Correlation conventions: maps are flattened per example (tuples concatenated); ties get average
ranks (as ``scipy.stats.spearmanr``); ``absolute=True`` compares absolute values (Adebayo et al.
report both); a map with no variation (e.g. all zeros) has an undefined correlation: **NaN**.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "RandomisationResult",
    "default_layers",
    "model_parameter_randomisation",
    "rank_with_ties",
    "spearman_correlation",
]

ExplainFn = Callable[[nn.Module, Tensor, Any], Any]


def rank_with_ties(values: Tensor) -> Tensor:
    """Ranks 1..P along the last dim of ``(N, P)``, ties sharing their average rank."""
    ordered = values.sort(dim=-1).values
    lower = torch.searchsorted(ordered, values, right=False)
    upper = torch.searchsorted(ordered, values, right=True)
    return (lower + upper + 1).to(torch.float64) / 2


def spearman_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's ρ between ``a[i]`` and ``b[i]`` (flattened), ``(N,)``; NaN without variation."""
    if a.shape[0] != b.shape[0] or a[0].numel() != b[0].numel():
        raise ValueError(f"cannot correlate shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    ra = rank_with_ties(a.detach().flatten(1).to(torch.float64).contiguous())
    rb = rank_with_ties(b.detach().flatten(1).to(torch.float64).contiguous())
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    denominator = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    rho = (ra * rb).sum(1) / denominator
    return torch.where(denominator > 0, rho, torch.nan)


@dataclass(frozen=True)
class RandomisationResult:
    """``correlations[l, i]``: Spearman ρ for example ``i`` after randomising ``layers[l]``
    (cascading: ``layers[: l + 1]``)."""

    mode: str
    layers: tuple[str, ...]
    correlations: Tensor
    original_maps: Tensor

    def mean(self) -> Tensor:
        """The mean correlation per layer, ``(L,)`` (NaNs left out)."""
        return self.correlations.nanmean(1)


def _flatten_maps(maps: Any, batch_size: int) -> Tensor:
    parts = maps if isinstance(maps, tuple) else (maps,)
    for part in parts:
        if not isinstance(part, Tensor) or part.shape[0] != batch_size:
            raise ValueError(
                "explain(model, inputs, target) must return a tensor (or tuple of tensors) with "
                f"{batch_size} rows."
            )
    return torch.cat([part.detach().reshape(batch_size, -1) for part in parts], 1)


def default_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, from the output towards the input.

    "Towards the input" is the reverse of registration order, which matches the forward order
    for sequential models; pass ``layers`` explicitly otherwise.
    """
    names = [
        name for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def _randomise(module: nn.Module, seed: int) -> None:
    devices = sorted(
        {p.device.index for p in module.parameters(recurse=False) if p.device.type == "cuda"}
    )
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        for parameter in module.parameters(recurse=False):
            scale = parameter.detach().float().std() if parameter.numel() > 1 else 1.0
            parameter.normal_(0.0, float(scale))


def model_parameter_randomisation(
    model: nn.Module,
    inputs: Tensor,
    target: Any,
    explain: ExplainFn,
    *,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
    absolute: bool = False,
    show_progress: bool = False,
) -> RandomisationResult:
    """Run the model-parameter randomisation test on a copy of ``model``.

    Args:
        model: the trained model; it is deep-copied and never modified.
        inputs, target: what to explain (passed to ``explain``).
        explain: ``explain(model, inputs, target)`` → maps ``(N, ...)`` (or a tuple of them),
            e.g. ``lambda m, x, t: LayerGradCam(m, m.features[-1]).attribute(x, target=t)``.
            It receives the copy, so it must look layers up on the model it is given.
        mode: ``"cascading"`` or ``"independent"`` (see the module docstring).
        layers: names (as in ``named_modules()``) of the layers to randomise, in order; default:
            every module that owns parameters, output first (:func:`default_layers`).
        generator: seeds the re-initialisations (one seed per layer, drawn from it).
        absolute: correlate absolute values of the maps.

    Returns:
        :class:`RandomisationResult` with ``correlations`` of shape ``(L, N)``.
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}.")
    work = copy.deepcopy(model)
    modules = dict(work.named_modules())
    names = list(default_layers(work) if layers is None else layers)
    unknown = [name for name in names if name not in modules or name == ""]
    if unknown:
        raise ValueError(f"unknown layer names {unknown}; use names from model.named_modules().")
    if not names:
        raise ValueError("the model has no layer with parameters to randomise.")
    batch_size = int(inputs.shape[0])

    def maps_of(current: nn.Module) -> Tensor:
        flat = _flatten_maps(explain(current, inputs, target), batch_size)
        return flat.abs() if absolute else flat

    original = maps_of(work)
    trained = copy.deepcopy(work.state_dict()) if mode == "independent" else None
    seeds = torch.randint(0, 2**62, (len(names),), generator=generator).tolist()
    correlations = []
    for name, seed in tqdm(
        list(zip(names, seeds)), desc=f"randomisation ({mode})", disable=not show_progress
    ):
        if trained is not None:
            work.load_state_dict(trained)
        _randomise(modules[name], int(seed))
        correlations.append(spearman_correlation(original, maps_of(work)))
    return RandomisationResult(
        mode=mode, layers=tuple(names), correlations=torch.stack(correlations),
        original_maps=original,
    )

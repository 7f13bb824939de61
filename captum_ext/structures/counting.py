"""Sub-explanation counting (Jiang, Khorram, Li, CVPR 2024), per example and
dataset-wide over a DataLoader, sharded with ``torch.distributed`` (``torchrun``).

The paper's method section could not be read: every definition below is the spec's
**[ASSUMPTION]** (``structured-explanations.md`` §6–§7) and every such choice is an argument.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from captum_ext._validation import training_mode_guard
from captum_ext.metrics.distributed import evaluate_dataset
from captum_ext.structures._patches import bits_of, patches_of
from captum_ext.structures.sag import StructuredAttentionGraph

__all__ = ["SubExplanationCounts", "count_sub_explanations", "count_sub_explanations_dataset"]


@dataclass
class SubExplanationCounts:
    tau_sub: tuple[float, ...]
    counts: Tensor  #: ``(T,)`` sub-explanations with ``p(S')/p_full >= τ_sub`` (per image)
    per_explanation: Tensor  #: ``(M, T)`` the same per minimal sufficient explanation
    explanations: list[tuple[int, ...]]  #: the MSEs (discovery order)
    forward_images: int


def _sub_sets(bits: int, max_enumerate_size: int, max_children: int) -> list[int]:
    ids = patches_of(bits)
    if len(ids) <= max_enumerate_size:
        return [bits_of(s) for k in range(1, len(ids)) for s in itertools.combinations(ids, k)]
    found: dict[int, None] = {}
    frontier = [bits]
    while frontier:  # the SAG tree's one-removal lattice: first ``max_children`` patches
        nxt = []
        for b in frontier:
            for p in patches_of(b)[:max_children]:
                child = b & ~(1 << p)
                if child and child not in found:
                    found[child] = None
                    nxt.append(child)
        frontier = nxt
    return list(found)


def count_sub_explanations(
    forward_func: Callable[..., Any],
    inputs: Tensor,
    target: Any = None,
    *,
    tau_sub: Union[float, Sequence[float]] = (0.5, 0.6, 0.7, 0.8),
    max_enumerate_size: int = 8,
    max_children: int = 3,
    distinct: bool = False,
    normalise: bool = False,
    **search_kwargs: Any,
) -> SubExplanationCounts:
    """Count the high-confidence proper sub-explanations of one image's MSEs ([ASSUMPTION] §6).

    MSEs come from :meth:`StructuredAttentionGraph.search` (``search_kwargs``: grid, tau,
    baselines, max_num_roots, ranking, ...). For each MSE ``S``, every proper non-empty subset
    ``S'`` (or, when ``|S| > max_enumerate_size``, the one-removal lattice over its first
    ``max_children`` patches) is scored; the count is ``#{S' : p(S')/p_full >= τ_sub}``.
    ``distinct`` counts a subset shared by several MSEs once; ``normalise`` divides by the
    number of MSEs. Scores share the search's cache. Counting needs only the MSEs, so the search
    builds no removal graph (``max_depth=0`` unless given): the graph is a tree expanded while a
    node keeps 40 % of the confidence, which grows as ``3^depth`` for a model that stays
    confident on a few patches of a large MSE.
    """
    search_kwargs.setdefault("max_depth", 0)
    taus = (tau_sub,) if isinstance(tau_sub, (int, float)) else tuple(tau_sub)
    if not taus:
        raise ValueError("tau_sub needs at least one threshold.")
    sag = StructuredAttentionGraph(forward_func)
    with training_mode_guard(forward_func, "count_sub_explanations"):
        result = sag.search(inputs, target, **search_kwargs)
        scorer = sag.last_scorer
        assert scorer is not None
        roots = [bits_of(e.patches) for e in result.roots]
        per: list[list[int]] = [_sub_sets(b, max_enumerate_size, max_children) for b in roots]
        flat = list(dict.fromkeys(s for subs in per for s in subs))
        relative = dict(zip(flat, (p / scorer.p_full if scorer.p_full > 0 else 0.0
                                   for p in scorer.scores(flat))))
    per_explanation = torch.tensor(
        [[sum(relative[s] >= t for s in subs) for t in taus] for subs in per],
        dtype=torch.float64).reshape(len(roots), len(taus))
    if distinct:
        counts = torch.tensor([sum(relative[s] >= t for s in flat) for t in taus], dtype=torch.float64)
    else:
        counts = per_explanation.sum(0)
    if normalise:
        counts = counts / max(len(roots), 1)
    return SubExplanationCounts(taus, counts, per_explanation, [e.patches for e in result.roots],
                                scorer.forward_images)


def _split_batch(batch: Any) -> tuple[Tensor, Optional[Tensor]]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], labels
    raise TypeError("the loader must yield a tensor of images or a tuple (images, labels, ...).")


def _targets(forward_func: Callable[..., Any], images: Tensor, labels: Optional[Tensor],
             target: str) -> Tensor:
    if target == "label":
        if labels is None:
            raise ValueError("target='label' needs a loader that yields (images, labels).")
        return labels
    if target == "predicted":
        with torch.no_grad():
            return forward_func(images).argmax(1)
    raise ValueError(f"target must be 'label' or 'predicted', got {target!r}.")


def count_sub_explanations_dataset(
    forward_func: Callable[..., Any],
    loader: DataLoader,
    *,
    target: str = "predicted",
    show_progress: bool = False,
    **kwargs: Any,
) -> Optional[dict[str, Tensor]]:
    """:func:`count_sub_explanations` for every image of ``loader``, sharded over the process
    group (see :mod:`captum_ext.metrics.distributed`). Returns on rank 0 ``{"counts": (N, T),
    "num_explanations": (N,)}`` in the loader's order; ``None`` on other ranks."""

    def metric(batch: Any) -> dict[str, Tensor]:
        images, labels = _split_batch(batch)
        targets = _targets(forward_func, images, labels, target)
        results = [count_sub_explanations(forward_func, images[i:i + 1], int(targets[i]), **kwargs)
                   for i in range(images.shape[0])]
        return {"counts": torch.stack([r.counts for r in results]),
                "num_explanations": torch.tensor([len(r.explanations) for r in results])}

    return evaluate_dataset(loader, metric, show_progress=show_progress)  # type: ignore[return-value]

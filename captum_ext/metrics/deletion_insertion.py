"""Deletion and insertion curves (causal metrics), under the I-GOS or the RISE protocol.

Cells (I-GOS) or pixels (RISE) are removed, or inserted, most salient first, and the class score
is read after each step. A good saliency map makes the deletion score fall fast (small area)
and the insertion score rise fast (large area). The two protocols differ in granularity,
baselines and area rule, so **their numbers are not comparable**; the protocol is recorded in
the result.

``protocol="igos"`` (IGOS_pp's evaluation):
    the saliency is ordered at mask resolution ``mask_size`` (average-pooled to it when it is
    finer); ``n`` cells, ``step = max(1, n // n_steps)`` cells per step (``n_steps=50``: 53
    steps at 28²). The cumulative removed set ``R_k`` is upsampled with ``align_corners=True``
    (``R̃_k``) and both games use the blur baseline ``b`` (kernel 51, σ = 50 at 224)::

        deletion_k  = p_c(x ⊙ (1 - R̃_k) + b ⊙ R̃_k)
        insertion_k = p_c(b ⊙ (1 - R̃_k) + x ⊙ R̃_k)
        area        = Σ_k p_k · |R_k \\ R_{k-1}| / n          (right Riemann sum; no start point)

    The official code adds ``n - k`` instead of ``p · (n - k)`` on the last step (an operator
    precedence bug that inflates both areas by up to 0.02 at 7²); ``emulate_official_bug=True``
    reproduces it for comparisons with published numbers only.

``protocol="rise"`` (``CausalMetric`` of eclique/RISE):
    pixel-level order over the full input; ``step = ceil(n / n_steps)`` pixels per step
    (``n_steps=224``: 224 pixels at 224²), ``n_steps + 1`` points *including* the start.
    Deletion replaces pixels with 0 (the mean colour of a normalised image); insertion starts
    from a blur of the input (RISE's ``gkern(11, 5)``, zero padding) and copies pixels in. The
    area is the trapezoid rule on a uniform grid over [0, 1].

Scores are ``softmax`` probabilities of the target (``output`` changes that), not normalised by
the clean score. Ties in the saliency are broken by position (a stable sort).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_ext._blur import igos_blur, rise_blur
from captum_ext._captum import TargetType
from captum_ext._scores import ExampleScorer, OutputKind
from captum_ext._tensor_ops import upsample
from captum_ext._validation import validate_inputs

__all__ = ["DeletionInsertionResult", "deletion_insertion"]

_POOL = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


@dataclass(frozen=True)
class DeletionInsertionResult:
    """Per-example areas and curves.

    Attributes:
        deletion: ``(N,)`` area under the deletion curve (lower is better).
        insertion: ``(N,)`` area under the insertion curve (higher is better).
        deletion_curve, insertion_curve: ``(N, P)`` scores at each point.
        fractions: ``(P,)`` fraction of cells/pixels removed (deletion) or inserted (insertion)
            at each point.
        protocol: ``"igos"`` or ``"rise"``.
    """

    deletion: Tensor
    insertion: Tensor
    deletion_curve: Tensor
    insertion_curve: Tensor
    fractions: Tensor
    protocol: str

    @property
    def difference(self) -> Tensor:
        """``insertion - deletion`` per example (higher is better)."""
        return self.insertion - self.deletion


def deletion_insertion(
    forward_func: Callable[..., Any],
    inputs: Union[Tensor, tuple[Tensor]],
    attributions: Union[Tensor, tuple[Tensor]],
    target: TargetType = None,
    protocol: str = "igos",
    *,
    deletion_baseline: Union[None, Tensor, float] = None,
    insertion_baseline: Union[None, Tensor, float] = None,
    mask_size: Union[int, tuple[int, ...]] = 28,
    n_steps: Optional[int] = None,
    output: OutputKind = "softmax",
    additional_forward_args: Any = None,
    batch_size: int = 64,
    emulate_official_bug: bool = False,
) -> DeletionInsertionResult:
    """Deletion and insertion areas of saliency maps (see the module docstring).

    Args:
        forward_func: the model.
        inputs: ``(N, C, *S)`` with 1 to 3 spatial dims (or a 1-tuple of it).
        attributions: saliency ``(N, C', *S')`` (higher = more important); channels are
            averaged and a coarser map is upsampled (linear/bilinear/trilinear) to the input.
            Under ``"igos"`` a map already at ``mask_size`` (e.g. ``1 - M`` of an I-GOS mask)
            orders its own cells.
        target: the class to score; ``None``: the top-1 class of the clean input.
        protocol: ``"igos"`` or ``"rise"``.
        deletion_baseline, insertion_baseline: what removed pixels become / where insertion
            starts (a number or a tensor of the input's shape, batch 1 or N); ``None``: the
            protocol's default (I-GOS: the blur for both; RISE: 0 and the RISE blur).
        mask_size: the ordering grid of the I-GOS protocol (per axis, clamped to the input).
        n_steps: I-GOS: ``n // n_steps`` cells per step (default 50); RISE: number of steps
            (default 224).
        output: ``"softmax"``, ``"logit"``, ``"sigmoid"`` or a callable on the model output.
        additional_forward_args: as in Captum.
        batch_size: perturbed images per forward pass.
        emulate_official_bug: I-GOS protocol only: reproduce the official last-step bug.
    """
    x = _single_tensor(inputs, "inputs")
    saliency = _single_tensor(attributions, "attributions")
    batch = validate_inputs((x,))
    validate_inputs((saliency,), name="attributions")
    if not 3 <= x.dim() <= 5:
        raise ValueError(f"inputs must be (N, C, *S) with 1 to 3 spatial dims, got {tuple(x.shape)}.")
    if saliency.dim() != x.dim() or saliency.shape[0] != batch:
        raise ValueError(
            f"attributions must be (N, C', *S') with N = {batch} and {x.dim() - 2} spatial dims "
            f"like the inputs, got {tuple(saliency.shape)}."
        )
    if protocol not in ("igos", "rise"):
        raise ValueError(f"protocol must be 'igos' or 'rise', got {protocol!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if emulate_official_bug and protocol != "igos":
        raise ValueError("emulate_official_bug applies to the I-GOS protocol only.")
    spatial = tuple(x.shape[2:])
    with torch.no_grad():
        x = x.detach()
        saliency = saliency.detach().to(dtype=x.dtype, device=x.device).mean(1, keepdim=True)
        grid = _grid(mask_size, spatial) if protocol == "igos" else spatial
        saliency = _to_grid(saliency, spatial, grid)
        n = math.prod(grid)
        if protocol == "igos":
            steps = 50 if n_steps is None else _positive(n_steps, "n_steps")
            step = max(1, n // steps)
            counts = torch.arange(step, n + step, step, device=x.device).clamp(max=n)
            counts = counts[: math.ceil(n / step)]
            default_del = default_ins = None
        else:
            steps = 224 if n_steps is None else _positive(n_steps, "n_steps")
            step = math.ceil(n / steps)
            counts = (torch.arange(0, math.ceil(n / step) + 1, device=x.device) * step).clamp(max=n)
            default_del, default_ins = torch.zeros_like(x), rise_blur(x)
        if protocol == "igos" and (deletion_baseline is None or insertion_baseline is None):
            blurred = igos_blur(x)
            default_del = default_ins = blurred
        b_del = _baseline(deletion_baseline, default_del, x, "deletion_baseline")
        b_ins = _baseline(insertion_baseline, default_ins, x, "insertion_baseline")
        flat = saliency.reshape(batch, -1)
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n, device=x.device).expand(batch, n))
        rank = rank.view((batch, 1) + grid)
        scorer = ExampleScorer(forward_func, (x,), target, additional_forward_args, output)
        points = counts.numel()
        curves = torch.empty(2, batch * points, dtype=x.dtype, device=x.device)
        total = batch * points
        per_pass = max(1, batch_size // 2)  # each item makes a deleted and an inserted image
        for start in range(0, total, per_pass):
            items = torch.arange(start, min(start + per_pass, total), device=x.device)
            ex, point = items // points, items % points
            threshold = counts[point].view((-1,) + (1,) * (len(grid) + 1))
            removed = (rank[ex] < threshold).to(x.dtype)
            if protocol == "igos":
                removed = upsample(removed, spatial, align_corners=True)
            deleted = x[ex] + (b_del[ex] - x[ex]) * removed
            inserted = b_ins[ex] + (x[ex] - b_ins[ex]) * removed
            scores = scorer((torch.cat([deleted, inserted]),), torch.cat([ex, ex]))
            curves[0, items] = scores[: items.numel()]
            curves[1, items] = scores[items.numel():]
        curves = curves.view(2, batch, points)
        fractions = counts.to(x.dtype) / n
        if protocol == "igos":
            widths = torch.diff(counts, prepend=counts.new_zeros(1)).to(x.dtype) / n
            areas = (curves * widths).sum(-1)
            if emulate_official_bug:
                areas = areas + widths[-1] * (1 - curves[..., -1])
        else:
            areas = (curves.sum(-1) - curves[..., 0] / 2 - curves[..., -1] / 2) / (points - 1)
    return DeletionInsertionResult(
        deletion=areas[0], insertion=areas[1], deletion_curve=curves[0],
        insertion_curve=curves[1], fractions=fractions, protocol=protocol,
    )


def _single_tensor(value: Union[Tensor, tuple[Tensor]], name: str) -> Tensor:
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ValueError(f"{name} must be one tensor (or a 1-tuple); got {len(value)} tensors.")
        value = value[0]
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    return value


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


def _grid(mask_size: Union[int, tuple[int, ...]], spatial: tuple[int, ...]) -> tuple[int, ...]:
    sizes = (mask_size,) * len(spatial) if isinstance(mask_size, int) else tuple(mask_size)
    if len(sizes) != len(spatial) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise ValueError(f"mask_size must be a positive int or {len(spatial)} ints, got {mask_size!r}.")
    return tuple(min(s, side) for s, side in zip(sizes, spatial))


def _to_grid(saliency: Tensor, spatial: tuple[int, ...], grid: tuple[int, ...]) -> Tensor:
    """A map at ``grid`` stays; otherwise resize to the input, then average-pool to ``grid``."""
    shape = tuple(saliency.shape[2:])
    if shape == grid:
        return saliency
    if shape != spatial:
        saliency = upsample(saliency, spatial)
    if grid == spatial:
        return saliency
    return _POOL[len(grid)](saliency, grid)


def _baseline(value: Union[None, Tensor, float], default: Optional[Tensor], x: Tensor,
              name: str) -> Tensor:
    if value is None:
        assert default is not None
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full_like(x, float(value))
    if isinstance(value, Tensor):
        if value.dim() != x.dim() or value.shape[1:] != x.shape[1:] or value.shape[0] not in (
                1, x.shape[0]):
            raise ValueError(f"{name} has shape {tuple(value.shape)}; expected {tuple(x.shape)} "
                             "(batch 1 or N).")
        return value.detach().to(dtype=x.dtype, device=x.device).expand_as(x)
    raise TypeError(f"{name} must be None, a number or a tensor, got {type(value).__name__}.")

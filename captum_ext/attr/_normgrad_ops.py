"""Closed forms of the two-phase backpropagation-saliency framework.

Rebuffi, Fong, Ji and Vedaldi, "There and Back Again: Revisiting Backpropagation Saliency
Methods", CVPR 2020 (arXiv 2004.02866); spec ``../shared/reference/normgrad.md``.

``A`` is a tensor ``(N, K, *S)`` (a layer output or input, or the model input) and
``G = ∂y^c/∂A`` its gradient for the target logit. Phase 1 inserts a *virtual* identity layer
after ``A``; its weight gradient is a sum over positions ``u`` of contributions ``c_u``:

=========== =================================== =================================================
phase1      virtual layer                       ``c_u``
=========== =================================== =================================================
conv1x1     1×1 conv, weights ``I_K``            ``G_u A_uᵀ`` (K×K)
scaling     per-channel scale γ = 1              ``G_u ⊙ A_u`` (K)
bias        bias β = 0                           ``G_u`` (K)
patch       k×k conv, identity centre tap        ``G_u ⊗ P_u``, ``P_u`` the zero-padded k×k patch
proper      the layer itself (a real conv)       ``G^out_u ⊗ unfold(A^in)_u`` per group
=========== =================================== =================================================

Phase 2 reduces ``c_u`` to ``s_u``: ``norm`` (Frobenius), ``sum``, ``max`` (largest entry) or
``filter_norm`` (``‖ReLU(c_u)‖``). No K×K or K·k² matrix is ever built: for a rank-1 outer
product ``g ⊗ v`` every aggregator factorises into per-vector statistics,

* ``‖g ⊗ v‖ = ‖g‖‖v‖``, ``Σ(g ⊗ v) = (Σg)(Σv)``,
* ``max(g ⊗ v) = max{g_max v_max, g_max v_min, g_min v_max, g_min v_min}``,
* ``‖ReLU(g ⊗ v)‖² = ‖g⁺‖²‖v⁺‖² + ‖g⁻‖²‖v⁻‖²``,

and the patch statistics are window reductions of per-position channel statistics (box filter
``conv(Σ_k A_k², ones)`` for sums, max pooling for extremes) with the conv's own kernel, stride,
padding (and padding mode) and dilation. A grouped conv's weight gradient is block-diagonal, so
its norms add over groups (``s_u² = Σ_g ‖G_g‖²‖P_g‖²``) and its maximum is the largest over
groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._tensor_ops import broadcast_channel_weights, spatial_mean

__all__ = [
    "PHASE1_CHOICES",
    "PHASE2_CHOICES",
    "VARIANTS",
    "SaliencyChoice",
    "WindowGeometry",
    "resolve_choice",
    "saliency_map",
]

PHASE1_CHOICES = ("conv1x1", "scaling", "bias", "patch", "proper")
PHASE2_CHOICES = ("norm", "sum", "max", "filter_norm")
GRADIENT_POOLING_CHOICES = ("none", "mean")


@dataclass(frozen=True)
class SaliencyChoice:
    """One point of the framework: the virtual layer, the aggregator, and whether the gradient
    is spatially averaged first (``"mean"``: Grad-CAM's pooled gradient)."""

    phase1: str
    phase2: str
    gradient_pooling: str = "none"


#: The named points of the grid (spec §1).
VARIANTS: dict[str, SaliencyChoice] = {
    "normgrad": SaliencyChoice("conv1x1", "norm"),
    "selective": SaliencyChoice("scaling", "filter_norm"),
    "linear": SaliencyChoice("scaling", "sum"),
    "gradient_norm": SaliencyChoice("bias", "norm"),
    "conv3x3": SaliencyChoice("patch", "norm"),
    "proper": SaliencyChoice("proper", "norm"),
    "grad_cam": SaliencyChoice("scaling", "sum", "mean"),
}


def resolve_choice(
    variant: Optional[str],
    phase1: Optional[str],
    phase2: Optional[str],
    gradient_pooling: Optional[str],
) -> SaliencyChoice:
    """A named ``variant`` or an explicit ``(phase1, phase2)`` pair, never both."""
    if phase1 is not None or phase2 is not None:
        if variant is not None:
            raise ValueError(
                f"pass either variant={variant!r} or phase1/phase2, not both (a variant is a "
                "named (phase1, phase2) pair)."
            )
        if phase1 is None or phase2 is None:
            raise ValueError(
                f"phase1 and phase2 must be given together, got phase1={phase1!r}, "
                f"phase2={phase2!r}."
            )
        if phase1 not in PHASE1_CHOICES:
            raise ValueError(f"unknown phase1 {phase1!r}; choose one of {PHASE1_CHOICES}.")
        if phase2 not in PHASE2_CHOICES:
            raise ValueError(f"unknown phase2 {phase2!r}; choose one of {PHASE2_CHOICES}.")
        choice = SaliencyChoice(phase1, phase2)
    else:
        name = "normgrad" if variant is None else variant
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose one of {tuple(VARIANTS)}.")
        choice = VARIANTS[name]
    if gradient_pooling is not None:
        if gradient_pooling not in GRADIENT_POOLING_CHOICES:
            raise ValueError(
                f"unknown gradient_pooling {gradient_pooling!r}; choose one of "
                f"{GRADIENT_POOLING_CHOICES}."
            )
        choice = SaliencyChoice(choice.phase1, choice.phase2, gradient_pooling)
    return choice


def _per_dim(value: Union[int, Sequence[int]], rank: int, what: str) -> tuple[int, ...]:
    values = (value,) * rank if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != rank:
        raise ValueError(
            f"{what} {value!r} must be an int or have one entry per spatial dim ({rank})."
        )
    return values


@dataclass(frozen=True)
class WindowGeometry:
    """Where the patch ``P_u`` of each output position ``u`` lies in the input grid.

    ``pad`` is in ``F.pad`` order (last dim first, ``(left, right)`` pairs); ``pad_mode`` is an
    ``F.pad`` mode (``"constant"`` pads with zeros).
    """

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad: tuple[int, ...]
    pad_mode: str = "constant"
    groups: int = 1

    @classmethod
    def centred(cls, kernel_size: Union[int, Sequence[int]], rank: int) -> "WindowGeometry":
        """The virtual k×k layer: stride 1, zero padding ``k // 2``, so ``S_out = S``."""
        kernel = _per_dim(kernel_size, rank, "kernel_size")
        if any(k < 1 or k % 2 == 0 for k in kernel):
            raise ValueError(
                f"kernel_size {kernel_size!r} must be odd and positive: the virtual layer is "
                "initialised to the identity at its centre tap."
            )
        pad: list[int] = []
        for k in reversed(kernel):
            pad += [k // 2, k // 2]
        return cls(kernel, (1,) * rank, (1,) * rank, tuple(pad))

    @classmethod
    def of_conv(cls, conv: nn.Module) -> "WindowGeometry":
        """The geometry of a real ``nn.Conv1d/2d/3d`` (kernel, stride, padding, padding mode,
        dilation, groups), for NormGrad "proper"."""
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            raise TypeError(
                f"NormGrad 'proper' needs an nn.Conv1d/2d/3d or nn.Linear layer, got "
                f"{type(conv).__name__}."
            )
        rank = len(conv.kernel_size)
        kernel, dilation = tuple(conv.kernel_size), tuple(conv.dilation)
        pad: list[int] = []
        for dim in reversed(range(rank)):
            if conv.padding == "same":
                total = dilation[dim] * (kernel[dim] - 1)
                pad += [total // 2, total - total // 2]
            elif conv.padding == "valid":
                pad += [0, 0]
            else:
                pad += [int(conv.padding[dim])] * 2
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        return cls(kernel, tuple(conv.stride), dilation, tuple(pad), mode, int(conv.groups))


def _safe_sqrt(t: Tensor) -> Tensor:
    """``sqrt(max(t, 0))`` with a zero (not infinite) derivative at 0."""
    positive = t > 0
    return torch.where(positive, torch.where(positive, t, torch.ones_like(t)).sqrt(), 0.0)


def _aggregate_entries(contribution: Tensor, phase2: str) -> Tensor:
    """Phase 2 on a contribution vector ``c_u`` stored along dim 1."""
    if phase2 == "norm":
        return torch.linalg.vector_norm(contribution, dim=1, keepdim=True)
    if phase2 == "sum":
        return contribution.sum(1, keepdim=True)
    if phase2 == "max":
        return contribution.amax(1, keepdim=True)
    return torch.linalg.vector_norm(F.relu(contribution), dim=1, keepdim=True)


def _channel_stats(t: Tensor, groups: int, phase2: str) -> dict[str, Tensor]:
    """Per-position, per-group statistics of ``t`` over its channels, ``(N, groups, *S)``."""
    grouped = t.reshape(t.shape[0], groups, t.shape[1] // groups, *t.shape[2:])
    if phase2 == "norm":
        return {"sq": (grouped * grouped).sum(2)}
    if phase2 == "sum":
        return {"sum": grouped.sum(2)}
    if phase2 == "max":
        return {"max": grouped.amax(2), "min": grouped.amin(2)}
    positive, negative = F.relu(grouped), F.relu(-grouped)
    return {"pos_sq": (positive * positive).sum(2), "neg_sq": (negative * negative).sum(2)}


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _window(stat: Tensor, name: str, geometry: WindowGeometry) -> Tensor:
    """Reduce a per-position statistic over each patch: a box-filter sum, or a max/min pool."""
    rank = stat.dim() - 2
    if rank not in _CONV or rank != len(geometry.kernel_size):
        raise ValueError(
            f"a patch needs a 1D, 2D or 3D grid matching the kernel {geometry.kernel_size}, got "
            f"a tensor of shape {tuple(stat.shape)}."
        )
    if any(geometry.pad):
        if geometry.pad_mode == "constant":
            stat = F.pad(stat, geometry.pad)
        else:
            stat = F.pad(stat, geometry.pad, mode=geometry.pad_mode)
    if name in ("max", "min"):
        sign = 1.0 if name == "max" else -1.0
        pooled = _MAX_POOL[rank](
            sign * stat, geometry.kernel_size, geometry.stride, 0, geometry.dilation
        )
        return sign * pooled
    channels = stat.shape[1]
    ones = stat.new_ones((channels, 1) + geometry.kernel_size)
    return _CONV[rank](
        stat, ones, None, geometry.stride, 0, geometry.dilation, groups=channels
    )


def _outer_aggregate(g: dict[str, Tensor], v: dict[str, Tensor], phase2: str) -> Tensor:
    """Phase 2 of the (block-diagonal) outer products ``g ⊗ v`` from their statistics."""
    if phase2 == "norm":
        return _safe_sqrt((g["sq"] * v["sq"]).sum(1, keepdim=True))
    if phase2 == "sum":
        return (g["sum"] * v["sum"]).sum(1, keepdim=True)
    if phase2 == "max":
        candidates = torch.stack(
            [g["max"] * v["max"], g["max"] * v["min"], g["min"] * v["max"], g["min"] * v["min"]]
        )
        return candidates.amax(0).amax(1, keepdim=True)
    squared = g["pos_sq"] * v["pos_sq"] + g["neg_sq"] * v["neg_sq"]
    return _safe_sqrt(squared.sum(1, keepdim=True))


def pool_gradient(gradient: Tensor) -> Tensor:
    """Replace ``G_u`` by its spatial mean (Grad-CAM's pooled gradient); rank-2 unchanged."""
    if gradient.dim() <= 2:
        return gradient
    return broadcast_channel_weights(spatial_mean(gradient), gradient).expand_as(gradient)


def saliency_map(
    activation: Tensor,
    gradient: Tensor,
    choice: SaliencyChoice,
    geometry: Optional[WindowGeometry] = None,
) -> Tensor:
    """The saliency map ``s`` of shape ``(N, 1, *S)`` (``(N, 1)`` for rank-2 tensors).

    Args:
        activation: ``A`` ``(N, K, *S)``; for ``proper``, the conv's *input* ``(N, K_in, *S_in)``.
        gradient: ``G = ∂y^c/∂A``; for ``proper``, the gradient at the conv's *output*.
        choice: the ``(phase1, phase2, gradient_pooling)`` point of the framework.
        geometry: the patch geometry for ``patch`` and ``proper`` (``None`` for a pointwise
            ``proper`` on ``nn.Linear``).
    """
    if choice.gradient_pooling == "mean":
        gradient = pool_gradient(gradient)
    if choice.phase1 == "scaling":
        return _aggregate_entries(gradient * activation, choice.phase2)
    if choice.phase1 == "bias":
        return _aggregate_entries(gradient, choice.phase2)
    groups = geometry.groups if geometry is not None else 1
    gradient_stats = _channel_stats(gradient, groups, choice.phase2)
    activation_stats = _channel_stats(activation, groups, choice.phase2)
    if geometry is not None:
        activation_stats = {
            name: _window(stat, name, geometry) for name, stat in activation_stats.items()
        }
    grids = {tuple(t.shape) for t in (*gradient_stats.values(), *activation_stats.values())}
    if len(grids) != 1:
        raise ValueError(
            f"the gradient grid {tuple(gradient.shape)} does not match the patch grid of the "
            f"activation {tuple(activation.shape)}; cannot pair G_u with P_u."
        )
    return _outer_aggregate(gradient_stats, activation_stats, choice.phase2)

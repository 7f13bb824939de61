"""Average Drop, Increase in Confidence (Chattopadhyay et al., WACV 2018) and ADCC (Poppi et al.).

The explanation map is used as a soft mask on the input, and the model's confidence in the target
class is compared before and after:

* ``Y_i`` = the target's score on the image ``x_i``;
* ``O_i`` = the target's score on ``b + m_i ⊙ (x_i − b)``, where ``m_i ∈ [0, 1]`` is the map
  upsampled to the input and broadcast over channels, and ``b`` the baseline (default 0, which
  gives the paper's ``x ⊙ m``).

Per example (in percent; the dataset-level figure is the ``.mean()`` of the returned tensor):

* Average Drop: ``100 · max(0, Y − O) / Y``;
* Increase in Confidence (a.k.a. Average Increase): ``100 · 1[Y < O]``;
* ADCC (Poppi et al., "Revisiting the Evaluation of Class Activation Mapping for Explainability",
  CVPR-W 2021): ``100 · 3 / (1/coherency + 1/(1 − complexity) + 1/(1 − drop))``, the harmonic
  mean of coherency ``(ρ(m(x), m(b + m ⊙ (x − b))) + 1) / 2`` (Pearson ρ between the map and the
  map recomputed on the masked input), ``1 − complexity`` (complexity = the mean of ``m``) and
  ``1 − drop`` (drop = Average Drop as a fraction).

Conventions:

* **Score:** the softmax probability of the target (``apply_softmax=True``, the Score-CAM and
  torchcam convention). With ``apply_softmax=False`` the raw output is used and must be positive
  (Average Drop divides by it); otherwise a ``ValueError`` is raised.
* **Normalisation** (``normalise="minmax"``, the pytorch-grad-cam / torchcam convention): the
  channel-summed map is upsampled to the input, ReLU'd and min-max scaled to [0, 1] per example.
  ``normalise="none"`` uses the map as is and requires values in [0, 1].
* **Empty map:** an all-zero (or constant) map becomes the all-zero mask, so the input is replaced
  by the baseline; ``Y = 0`` gives a drop of 0. In ADCC, a map with zero variance has ρ = 0
  (coherency 0.5), and a zero term of the harmonic mean gives ADCC = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from captum_ext._tensor_ops import safe_divide
from captum_ext.metrics._common import (
    as_single_channel,
    check_inputs_and_target,
    minmax_normalise,
    target_scores,
    to_resolution,
)

__all__ = [
    "ADCCResult",
    "ConfidenceScores",
    "adcc",
    "average_drop",
    "average_increase",
    "confidence_scores",
    "increase_in_confidence",
]

ExplainFn = Callable[[Callable[..., Tensor], Tensor, Any], Tensor]


@dataclass(frozen=True)
class ConfidenceScores:
    """Scores before (``original`` = Y) and after (``masked`` = O) masking, and the masks used."""

    original: Tensor
    masked: Tensor
    masks: Tensor

    def average_drop(self) -> Tensor:
        """``100 · max(0, Y − O) / Y`` per example."""
        return 100.0 * safe_divide((self.original - self.masked).clamp_min(0), self.original)

    def increase_in_confidence(self) -> Tensor:
        """``100 · 1[Y < O]`` per example."""
        return 100.0 * (self.original < self.masked).to(self.original.dtype)


def _masks(maps: Tensor, inputs: Tensor, normalise: str, name: str = "attributions") -> Tensor:
    maps = to_resolution(as_single_channel(maps, inputs.shape[0], name), inputs.shape[2:])
    if normalise == "minmax":
        return minmax_normalise(maps).to(inputs.dtype)
    if normalise == "none":
        if bool((maps < 0).any()) or bool((maps > 1).any()):
            raise ValueError(
                f"normalise='none' needs {name} in [0, 1], got values in "
                f"[{float(maps.min()):.3g}, {float(maps.max()):.3g}]; use normalise='minmax'."
            )
        return maps.to(inputs.dtype)
    raise ValueError(f"normalise must be 'minmax' or 'none', got {normalise!r}.")


def _apply(inputs: Tensor, masks: Tensor, baselines: Any) -> Tensor:
    base = torch.zeros((), dtype=inputs.dtype, device=inputs.device) if baselines is None else (
        torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    )
    return base + masks * (inputs - base)


def confidence_scores(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    *,
    baselines: Any = None,
    additional_forward_args: Any = None,
    normalise: str = "minmax",
    apply_softmax: bool = True,
) -> ConfidenceScores:
    """Y and O for every example (see the module docstring): two batched forward passes.

    Args:
        forward_func: the model, ``forward_func(inputs, *additional_forward_args)``.
        inputs: ``(N, C, *S)``.
        attributions: ``(N, C', *S')`` maps; channels are summed, ``S'`` is upsampled to ``S``.
        target: Captum target (int, list, tensor).
        baselines: what masked-out pixels become: None (0), a number, or a tensor broadcastable
            to ``inputs``.
    """
    check_inputs_and_target(inputs, target)
    masks = _masks(attributions, inputs, normalise)
    both = torch.cat([inputs.detach(), _apply(inputs.detach(), masks, baselines)])
    scores, _ = target_scores(
        forward_func, both, target, additional_forward_args, apply_softmax=apply_softmax,
        repeats=2,
    )
    original, masked = scores.chunk(2)
    if not apply_softmax and bool((original <= 0).any()):
        raise ValueError(
            "Average Drop divides by the original score, but some target scores are <= 0; use "
            "apply_softmax=True (probabilities) or a model that outputs positive scores."
        )
    return ConfidenceScores(original=original, masked=masked, masks=masks)


def average_drop(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    **kwargs: Any,
) -> Tensor:
    """Average Drop per example, ``100 · max(0, Y − O) / Y`` (lower is better).

    Keyword arguments are those of :func:`confidence_scores`. Take ``.mean()`` for the
    dataset-level figure of the Grad-CAM++ paper.
    """
    return confidence_scores(forward_func, inputs, attributions, target, **kwargs).average_drop()


def increase_in_confidence(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    **kwargs: Any,
) -> Tensor:
    """Increase in Confidence per example, ``100 · 1[Y < O]`` (higher is better).

    Keyword arguments are those of :func:`confidence_scores`.
    """
    scores = confidence_scores(forward_func, inputs, attributions, target, **kwargs)
    return scores.increase_in_confidence()


#: The name used by the Score-CAM paper and issue 7 for :func:`increase_in_confidence`.
average_increase = increase_in_confidence


@dataclass(frozen=True)
class ADCCResult:
    """ADCC and its three parts, per example, in percent."""

    adcc: Tensor
    average_drop: Tensor
    coherency: Tensor
    complexity: Tensor


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return safe_divide((a * b).sum(1), (a.square().sum(1) * b.square().sum(1)).sqrt())


def adcc(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    explain: ExplainFn,
    target: Any = None,
    *,
    baselines: Any = None,
    additional_forward_args: Any = None,
    apply_softmax: bool = True,
    return_components: bool = False,
) -> Tensor | ADCCResult:
    """ADCC per example in percent (higher is better); see the module docstring.

    ``explain(forward_func, inputs, target)`` returns the maps ``(N, C', *S')``; it is called
    twice, on the inputs and on the masked inputs (coherency), and the maps are min-max
    normalised after upsampling (Poppi et al. use ReLU'd, normalised CAMs).
    ``return_components=True`` returns an :class:`ADCCResult` with the parts.
    """
    check_inputs_and_target(inputs, target)
    masks = _masks(explain(forward_func, inputs, target), inputs, "minmax", "explain(...)")
    scores = confidence_scores(
        forward_func, inputs, masks, target, baselines=baselines,
        additional_forward_args=additional_forward_args, normalise="none",
        apply_softmax=apply_softmax,
    )
    masked_inputs = _apply(inputs.detach(), masks, baselines)
    again = _masks(explain(forward_func, masked_inputs, target), inputs, "minmax", "explain(...)")
    coherency = (_pearson(masks, again) + 1) / 2
    complexity = masks.flatten(1).mean(1)
    drop = scores.average_drop() / 100
    terms = torch.stack([coherency, 1 - complexity, 1 - drop])
    harmonic = torch.where(
        (terms > 0).all(0), 3 / safe_divide(torch.ones_like(terms), terms).sum(0), 0.0
    )
    if not return_components:
        return 100 * harmonic
    return ADCCResult(
        adcc=100 * harmonic, average_drop=100 * drop, coherency=100 * coherency,
        complexity=100 * complexity,
    )

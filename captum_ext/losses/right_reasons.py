"""Right for the Right Reasons: a penalty on input gradients inside annotated regions.

Ross, Hughes and Doshi-Velez, "Right for the Right Reasons: Training Differentiable Models by
Constraining their Explanations", IJCAI 2017, arXiv 1703.03717 (code: dtak/rrr, MIT).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._captum import _format_additional_forward_args
from captum_ext.losses._common import (
    ExplanationLossTerms,
    check_reduction,
    reduce_per_example,
)

__all__ = ["RightForTheRightReasonsLoss", "input_gradient_penalty", "right_for_the_right_reasons"]

#: λ of dtak/rrr's TensorFlow model (``l2_grads=1000`` on ``tf.nn.l2_loss``, which is ½Σ²),
#: written for our Σ² convention.
DEFAULT_LAMBDA_GRADS = 500.0


def _check_forbidden(forbidden: Tensor, inputs: Tensor) -> Tensor:
    if not isinstance(forbidden, Tensor):
        raise TypeError(f"forbidden must be a tensor, got {type(forbidden).__name__}.")
    try:
        shape = torch.broadcast_shapes(forbidden.shape, inputs.shape)
    except RuntimeError:
        shape = None
    if shape != inputs.shape:
        raise ValueError(
            f"forbidden has shape {tuple(forbidden.shape)}, which does not broadcast to the "
            f"inputs {tuple(inputs.shape)}; give it the input's shape or (N, 1, *S)."
        )
    return forbidden.to(device=inputs.device, dtype=inputs.dtype)


def input_gradient_penalty(
    model: Callable[..., Tensor],
    inputs: Tensor,
    forbidden: Tensor,
    *,
    additional_forward_args: Any = None,
) -> tuple[Tensor, Tensor]:
    r"""Per-example ``Σ_d (A_d · ∂/∂x_d Σ_k log p_k(x))²`` and the logits, in one forward pass.

    ``forbidden`` is the annotation ``A`` (1 on input features the model must not rely on),
    shaped like ``inputs`` or broadcastable to it (e.g. ``(N, 1, H, W)`` for every channel).
    The explained quantity is the sum of the log-probabilities over *all* classes, as in the
    paper and dtak/rrr (not the target class): the gradient of one class alone could be moved
    to the others.

    The gradient is taken with ``create_graph=True`` when grad mode is on, so the penalty is
    differentiable with respect to the model's parameters (double backpropagation); under
    ``torch.no_grad()`` the values are returned detached. ``inputs`` is never modified.

    Returns:
        ``(penalty, logits)``: ``(N,)`` penalties and the ``(N, C)`` model output.
    """
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise TypeError("inputs must be a floating-point tensor.")
    mask = _check_forbidden(forbidden, inputs)
    extra = _format_additional_forward_args(additional_forward_args) or ()
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad():
        x = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
        logits = model(x, *extra)
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
            raise ValueError(
                "the model must return class scores of shape (N, C) with C >= 2; got "
                f"{getattr(logits, 'shape', type(logits).__name__)}."
            )
        log_probabilities = F.log_softmax(logits, dim=1)
        (gradient,) = torch.autograd.grad(
            log_probabilities.sum(), x, create_graph=differentiable
        )
        penalty = (mask * gradient).pow(2).reshape(inputs.shape[0], -1).sum(1)
    if not differentiable:
        return penalty.detach(), logits.detach()
    return penalty, logits


def right_for_the_right_reasons(
    model: Callable[..., Tensor],
    inputs: Tensor,
    labels: Tensor,
    forbidden: Tensor,
    *,
    lambda_grads: float = DEFAULT_LAMBDA_GRADS,
    reduction: str = "mean",
    additional_forward_args: Any = None,
) -> ExplanationLossTerms:
    r"""The Right-for-the-Right-Reasons objective and its parts.

    .. math::
        L = \mathrm{CE}(y, f(x)) + λ \sum_d \Big(A_d \,
            \frac{\partial}{\partial x_d} \sum_k \log p_k(x)\Big)^2

    per example, reduced over the batch by ``reduction`` (``"mean"``, ``"sum"`` as in the
    paper's Σ_n, or ``"none"``). Both terms are reduced the same way, so ``λ`` keeps its meaning.
    The paper's ``λ₂‖θ‖²`` is the optimizer's ``weight_decay``. See
    :class:`RightForTheRightReasonsLoss`.
    """
    check_reduction(reduction)
    penalty, logits = input_gradient_penalty(
        model, inputs, forbidden, additional_forward_args=additional_forward_args
    )
    task = F.cross_entropy(logits, labels.to(logits.device), reduction="none")
    task = reduce_per_example(task, reduction)
    explanation = lambda_grads * reduce_per_example(penalty, reduction)
    return ExplanationLossTerms(task + explanation, task, explanation, logits)


class RightForTheRightReasonsLoss(nn.Module):
    r"""Right for the Right Reasons (Ross et al., IJCAI 2017) as a PyTorch loss module.

    .. math::
        L(θ) = \mathrm{CE}(y, f_θ(x)) + λ \sum_d \Big(A_d \,
            \frac{\partial}{\partial x_d} \sum_{k=1}^{C} \log p_k(x)\Big)^2 \; (+\, λ_2 \|θ\|^2)

    ``A`` (``forbidden``) marks the input features the model must not rely on; the explained
    quantity is the gradient of the **summed log-probabilities of all classes**, as in the paper
    and in dtak/rrr. ``λ₂‖θ‖²`` is left to the optimizer (``weight_decay``).

    Defaults: ``lambda_grads=500`` is dtak/rrr's TensorFlow weight (``l2_grads=1000`` on
    ``tf.nn.l2_loss = ½Σ²``) in our Σ² convention; its autograd MLP uses ``l2_grads=1e-4`` on
    ``Σ²`` (with sums, not means, over the batch in both codes). The paper tunes λ so that the
    two terms have similar magnitudes; do the same (the right value depends on the input scale
    and the size of the annotated region).

    Usage (one call per step replaces the usual forward + cross-entropy)::

        criterion = RightForTheRightReasonsLoss(model, lambda_grads=10.0)
        loss = criterion(x, y, forbidden)    # forbidden: input-shaped or (N, 1, *S)
        optimizer.zero_grad(); loss.backward(); optimizer.step()

    **Cost per step** (double backpropagation): the forward pass is shared with the
    cross-entropy, then one extra backward pass to the input *with a graph*
    (``create_graph=True``), and ``loss.backward()`` then runs through both the forward graph and
    that backward graph, roughly two more backward passes. In all about 2-3x the time of a plain
    training step and about 2x its activation memory (``benchmarks/bench_losses.py`` measures the
    ratio). Under ``torch.no_grad()`` (evaluation) the value is computed without the extra graph.

    The module holds a reference to ``model`` but has no parameters and no state of its own.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        *,
        lambda_grads: float = DEFAULT_LAMBDA_GRADS,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        if lambda_grads < 0:
            raise ValueError(f"lambda_grads must be non-negative, got {lambda_grads}.")
        # stored outside nn.Module's registry so that the loss does not own the model's parameters
        self.__dict__["model"] = model
        self.lambda_grads = float(lambda_grads)
        self.reduction = reduction

    def terms(
        self,
        inputs: Tensor,
        labels: Tensor,
        forbidden: Tensor,
        additional_forward_args: Any = None,
    ) -> ExplanationLossTerms:
        """The total loss, the cross-entropy, the weighted penalty and the logits."""
        return right_for_the_right_reasons(
            self.model,
            inputs,
            labels,
            forbidden,
            lambda_grads=self.lambda_grads,
            reduction=self.reduction,
            additional_forward_args=additional_forward_args,
        )

    def forward(
        self,
        inputs: Tensor,
        labels: Tensor,
        forbidden: Tensor,
        additional_forward_args: Optional[Any] = None,
    ) -> Tensor:
        """``CE + λ·penalty``, reduced as ``reduction`` says."""
        return self.terms(inputs, labels, forbidden, additional_forward_args).total

    def extra_repr(self) -> str:
        return f"lambda_grads={self.lambda_grads}, reduction={self.reduction!r}"

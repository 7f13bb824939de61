"""Meta-saliency: a saliency map after one virtual SGD step toward the target class.

Rebuffi, Fong, Ji and Vedaldi, CVPR 2020 (arXiv 2004.02866), spec §4. For each sample ``i``,

.. math:: θ'_i = θ - η \\, ∇_θ \\, \\mathrm{CE}(f_θ(x_i), c_i)

and the base attribution is computed on ``f_{θ'_i}``. The step is virtual: the updated
parameters live in a dictionary and the model runs through ``torch.func.functional_call``, so the
user's parameters, buffers, ``.grad``, ``requires_grad`` flags and training flag are never touched
(the same module objects run, so Captum's layer hooks still fire). Buffers are passed as copies,
so even a train-mode BatchNorm cannot update the user's running statistics.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Union, cast

import torch
import torch.nn.functional as F
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from captum_ext._captum import (
    TargetType,
    _format_additional_forward_args,
    _format_tensor_into_tuples,
    _is_tuple,
    _select_targets,
)
from captum_ext._validation import (
    check_target_against_output,
    validate_inputs,
    validate_layers_in_model,
    validate_target,
)

__all__ = ["MetaSaliency"]

LossType = Union[str, Callable[[Tensor, Any], Tensor]]


class MetaSaliency(Attribution):
    """Wrap any attribution of an ``nn.Module`` so that it explains the model after one virtual
    SGD step on each sample (Rebuffi et al. 2020, §4 of the spec).

    Args:
        attribution: the base method, e.g. ``LayerNormGrad(model, layers)``; its
            ``forward_func`` must be the ``nn.Module`` itself.
        lr: the step size ``η`` (default 1e-4, TorchRay's ``meta_saliency`` default; their
            class-selectivity script uses 0.0025). ``negate=True`` steps up the loss instead.
        loss: ``"cross_entropy"`` (default, the reference code: CE of the logits against the
            target class), ``"logit"`` (minus the target logit) or a callable
            ``loss(output, target) -> scalar``.

    Only parameters with ``requires_grad=True`` are updated. The step is per sample (a
    batch-mean step would couple the samples), so a batch costs, per sample, one extra forward
    and backward pass with respect to the parameters plus the base method's passes, and holds one
    parameter copy at a time. ``multiplies_by_inputs`` is the base method's. The stepped
    parameters are detached, so ``grad_kwargs={"create_graph": True}`` gives maps that are
    differentiable with respect to the inputs only, not to the model's parameters.
    """

    def __init__(
        self,
        attribution: Attribution,
        lr: float = 1e-4,
        *,
        negate: bool = False,
        loss: LossType = "cross_entropy",
    ) -> None:
        model = attribution.forward_func
        if not isinstance(model, nn.Module):
            raise TypeError(
                "MetaSaliency needs the base attribution's forward_func to be the nn.Module "
                f"whose parameters take the virtual step, got {type(model).__name__}."
            )
        if isinstance(loss, str) and loss not in ("cross_entropy", "logit"):
            raise ValueError(f"unknown loss {loss!r}; use 'cross_entropy', 'logit' or a callable.")
        if not torch.isfinite(torch.tensor(float(lr))):
            raise ValueError(f"lr must be finite, got {lr}.")
        Attribution.__init__(self, model)
        self.attribution = attribution
        self.lr = float(lr)
        self.negate = negate
        self.loss = loss

    @log_usage(part_of_slo=False)
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> Any:
        """The base method's ``attribute`` on the stepped model, one sample at a time.

        ``kwargs`` are forwarded to the base method. Tensors in ``additional_forward_args``
        whose first dimension is the batch size are sliced per sample; others are passed as is.
        The per-sample results are concatenated along the batch dimension.
        """
        model = cast(nn.Module, self.forward_func)
        inputs_tuple = cast(tuple[Tensor, ...], _format_tensor_into_tuples(inputs))
        batch_size = validate_inputs(inputs_tuple, forward_func=model)
        validate_target(target, batch_size)
        layers = getattr(self.attribution, "layer", None)
        if layers is not None:  # the inner calls run a wrapper, so check the layers here
            validate_layers_in_model(model, layers if isinstance(layers, list) else [layers])
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not trainable:
            raise ValueError(
                "meta-saliency updates the parameters with requires_grad=True, and the model has "
                "none. Enable gradients on the parameters to step (they are not modified)."
            )
        if model.training:
            warnings.warn(
                "the model is in training mode: meta-saliency runs it on single samples, so "
                "train-mode BatchNorm/Dropout change the maps (the model itself is not "
                "modified). Call model.eval() first.",
                stacklevel=2,
            )
        frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        buffers = dict(model.named_buffers())
        extra_args = _format_additional_forward_args(additional_forward_args)
        is_tuple = _is_tuple(inputs)
        results = []
        for index in tqdm(range(batch_size), disable=not show_progress, desc="meta-saliency"):
            sample = tuple(t[index : index + 1] for t in inputs_tuple)
            sample_args = _slice_args(extra_args, index, batch_size)
            sample_target = _slice_target(target, index)
            stepped = self._stepped_parameters(model, trainable, frozen, buffers, sample,
                                               sample_args, sample_target)

            def stepped_forward(*args: Any, _params: dict[str, Tensor] = stepped) -> Any:
                state = {**_params, **{n: b.clone() for n, b in buffers.items()}}
                return functional_call(model, state, args)

            inner = copy.copy(self.attribution)
            inner.forward_func = stepped_forward
            results.append(
                inner.attribute.__wrapped__(  # type: ignore[attr-defined]
                    inner,
                    sample if is_tuple else sample[0],
                    target=sample_target,
                    additional_forward_args=sample_args,
                    **kwargs,
                )
            )
        return _concatenate(results)

    def _stepped_parameters(
        self,
        model: nn.Module,
        trainable: dict[str, Tensor],
        frozen: dict[str, Tensor],
        buffers: dict[str, Tensor],
        sample: tuple[Tensor, ...],
        sample_args: Any,
        sample_target: TargetType,
    ) -> dict[str, Tensor]:
        """``θ' = θ ∓ η ∇_θ loss`` on copies; the user's tensors are only read."""
        with torch.enable_grad():
            leaves = {n: p.detach().requires_grad_(True) for n, p in trainable.items()}
            state = {**leaves, **frozen, **{n: b.clone() for n, b in buffers.items()}}
            output = functional_call(model, state, sample + tuple(sample_args or ()))
            check_target_against_output(output, sample_target)
            loss = self._loss(output, sample_target)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        step = -self.lr if not self.negate else self.lr
        stepped = {
            name: leaf.detach() if grad is None else leaf.detach() + step * grad
            for (name, leaf), grad in zip(leaves.items(), grads)
        }
        return {**stepped, **frozen}

    def _loss(self, output: Tensor, target: TargetType) -> Tensor:
        if callable(self.loss):
            return self.loss(output, target)
        if self.loss == "logit":
            return -_select_targets(output, target).sum()
        if output.dim() != 2 or target is None or isinstance(target, tuple):
            raise ValueError(
                "the cross-entropy step needs (N, C) logits and a class index target; use "
                "loss='logit' or a callable loss for other outputs."
            )
        classes = torch.as_tensor(target, device=output.device).reshape(-1)
        classes = classes.expand(output.shape[0])
        return F.cross_entropy(output, classes)

    @property
    def multiplies_by_inputs(self) -> bool:
        return bool(self.attribution.multiplies_by_inputs)

    def has_convergence_delta(self) -> bool:
        return self.attribution.has_convergence_delta()

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("MetaSaliency does not support attribute_future.")


def _slice_target(target: TargetType, index: int) -> TargetType:
    if isinstance(target, list):
        return [target[index]]
    if isinstance(target, Tensor) and target.numel() > 1:
        return target[index : index + 1]
    return target


def _slice_args(args: Any, index: int, batch_size: int) -> Any:
    if args is None:
        return None
    return tuple(
        a[index : index + 1] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == batch_size
        else a
        for a in args
    )


def _concatenate(results: list[Any]) -> Any:
    first = results[0]
    if isinstance(first, Tensor):
        return torch.cat(results)
    parts = [_concatenate([r[j] for r in results]) for j in range(len(first))]
    return parts if isinstance(first, list) else tuple(parts)

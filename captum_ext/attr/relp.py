"""Relevance Patching (RelP), attribution patching and exact activation patching in one API.

For a component with activation ``a`` (an attention head's output, an MLP output, a residual
stream position), a scalar metric ``m`` and a clean/patch input pair (Jafari, Eberle, Khakzar,
Nanda, "RelP: Faithful and Efficient Circuit Discovery via Relevance Patching", arXiv 2508.21258,
2025)::

    exact (activation patching):   c(n) = m(clean run with a_n := a_n(x_patch)) − m(clean run)
    attribution patching (AtP):    ĉ(n) = (a_n(x_patch) − a_n(x_clean))ᵀ · ∂m/∂a_n
    RelP:                          ĉ(n) = (a_n(x_patch) − a_n(x_clean))ᵀ · ∂̃m/∂a_n

``∂̃`` is the backward pass of the model under LRP rules (:mod:`captum_ext.rules`; by default
RelP's LN-rule, identity rule and half rule, :func:`captum_ext.rules.transformer_rules`). AtP
and RelP cost two forward passes and one backward pass, whatever the number of components;
exact patching costs one forward pass per unit (batched ``perturbations_per_eval`` at a time).
The gradient is taken on the clean run (the first-order expansion around clean, AtP's convention).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence, Union

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_ext._captum import (
    TargetType,
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _format_tensor_into_tuples,
    _is_tuple,
    _run_forward,
    _select_targets,
    ExpansionTypes,
)
from captum_ext._validation import (
    check_target_against_output,
    leaves_no_trace,
    validate_layers_in_model,
    validate_model_dtype,
    validate_target,
)
from captum_ext.attr._patching import Component, as_components, capture, patch, reduce_scores, unit_masks
from captum_ext.rules import Composite, transformer_rules

__all__ = ["Component", "RelevancePatching"]

logger = logging.getLogger(__name__)

Metric = Callable[[Tensor], Tensor]
MODES = ("relp", "attribution_patching", "activation_patching")


class RelevancePatching(GradientAttribution):
    """Score model components by how much patching them changes a metric (RelP, AtP, exact).

    Args:
        forward_func: the model, or a function of ``(*inputs, *additional_forward_args)``.
        layers: the components: modules, :class:`Component` objects (head split, per-position
            scores, module input), or a list of them.
        device_ids: accepted for Captum compatibility (unused).
        rules: the LRP rules for ``mode="relp"``; default :func:`transformer_rules` (LN-rule,
            identity rule for activation modules; attention untouched, as RelP's default with the
            AH-rule off). Pass ``transformer_rules(attention=..., constant_attention=True)`` for
            the AH-rule, or any :class:`~captum_ext.rules.Composite`.
        model: the module the rules attach to; defaults to ``forward_func`` when it is a module.

    Example::

        relp = RelevancePatching(model, [Component(attn, heads=12), mlp])
        head_scores, mlp_scores = relp.attribute(clean_ids, baselines=corrupt_ids, metric=m)
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layers: Union[nn.Module, Component, Sequence[Union[nn.Module, Component]]],
        device_ids: Union[None, list[int]] = None,
        *,
        rules: Composite | None = None,
        model: nn.Module | None = None,
    ) -> None:
        super().__init__(forward_func)
        self.layers = layers
        self.device_ids = device_ids
        self.rules = rules if rules is not None else transformer_rules()
        self.model = model if model is not None else (
            forward_func if isinstance(forward_func, nn.Module) else getattr(forward_func, "__self__", None)
        )

    @property
    def multiplies_by_inputs(self) -> bool:
        """Scores are multiplied by the activation difference ``a_patch − a_clean``."""
        return True

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("RelevancePatching does not support attribute_future.")

    @log_usage(part_of_slo=False)
    @leaves_no_trace
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        baselines: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        metric: Metric | None = None,
        mode: str = "relp",
        attribute_to_layer_input: bool = False,
        per_element: bool = False,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
    ) -> Union[Tensor, list[Tensor]]:
        """Scores ``(N, *grid)`` per component (a list for several components).

        Args:
            inputs: the clean input(s) (token ids are fine: no gradient is taken w.r.t. inputs).
            baselines: the patch (corrupted) input(s), same structure and shapes as ``inputs``.
            target: Captum target selecting the scalar metric from the output when ``metric`` is
                None (e.g. a class index per example).
            metric: ``metric(output) -> (N,)``; overrides ``target``. Must act row by row (exact
                patching evaluates it on stacked copies of the batch).
            mode: ``"relp"``, ``"attribution_patching"`` or ``"activation_patching"`` (exact).
            attribute_to_layer_input: score module inputs for components given as bare modules.
            per_element: return the element-wise products ``Δa ⊙ ∇̃a`` shaped like the
                activations instead of per-unit sums (not for exact patching).
            perturbations_per_eval: exact patching: how many units are patched per forward pass
                (stacked copies of the batch).
            show_progress: a progress bar over exact-patching forward passes.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if perturbations_per_eval < 1:
            raise ValueError(f"perturbations_per_eval must be >= 1, got {perturbations_per_eval}.")
        if per_element and mode == "activation_patching":
            raise ValueError("per_element scores exist only for relp and attribution_patching.")
        is_tuple = _is_tuple(inputs)
        clean = _format_tensor_into_tuples(inputs)
        patch_in = _format_tensor_into_tuples(baselines)
        batch = _check_pair(clean, patch_in)
        validate_model_dtype(self.forward_func, clean)
        validate_target(target, batch)
        extra = _format_additional_forward_args(additional_forward_args)
        components = as_components(self.layers, attribute_to_layer_input)
        validate_layers_in_model(self.model or self.forward_func, [c.module for c in components])
        if mode == "relp" and self.model is None:
            raise ValueError("mode='relp' needs the model (an nn.Module) to attach the rules to: model=...")
        del is_tuple  # scores are shaped by components, not by inputs

        def scalar(output: Tensor, tgt: Any) -> Tensor:
            if metric is not None:
                values = metric(output)
                if not isinstance(values, Tensor) or values.shape != (output.shape[0],):
                    raise ValueError(
                        f"metric must return one value per example, shape ({output.shape[0]},); got "
                        f"{getattr(values, 'shape', type(values).__name__)}."
                    )
                return values
            check_target_against_output(output, tgt)
            return _select_targets(output, tgt)

        with torch.no_grad(), capture(components, track_grad=False) as patched:
            _run_forward(self.forward_func, patch_in, None, extra)
        for component, activation in zip(components, patched):
            component.grid(activation)  # checks head splits and per-position shapes early

        if mode == "activation_patching":
            exact = self._exact(
                clean, extra, target, components, patched, scalar, perturbations_per_eval, show_progress
            )
            return self._shape_output(exact)

        with torch.enable_grad():
            if mode == "relp":
                assert self.model is not None
                with self.rules.context(self.model), capture(components, track_grad=True) as acts:
                    values = scalar(_run_forward(self.forward_func, clean, None, extra), target)
            else:
                with capture(components, track_grad=True) as acts:
                    values = scalar(_run_forward(self.forward_func, clean, None, extra), target)
            if not values.requires_grad:
                raise ValueError("the metric does not depend on any component: nothing to attribute.")
            grads = torch.autograd.grad(values.sum(), acts, allow_unused=True)
        results = []
        for component, a_clean, a_patch, grad in zip(components, acts, patched, grads):
            grad = torch.zeros_like(a_clean) if grad is None else grad
            products = ((a_patch - a_clean) * grad).detach()
            results.append(products if per_element else reduce_scores(products, component))
        return self._shape_output(results)

    def _shape_output(self, results: list[Tensor]) -> Union[Tensor, list[Tensor]]:
        """A bare tensor for one component given bare, a list otherwise (as Captum's layer lists)."""
        return results if isinstance(self.layers, (list, tuple)) else results[0]

    def _exact(
        self,
        clean: tuple[Tensor, ...],
        extra: Any,
        target: Any,
        components: list[Component],
        patched: list[Tensor],
        scalar: Callable[[Tensor, Any], Tensor],
        per_eval: int,
        show_progress: bool,
    ) -> list[Tensor]:
        with torch.no_grad():
            base = scalar(_run_forward(self.forward_func, clean, None, extra), target)
            units = [
                (index, mask)
                for index, (component, act) in enumerate(zip(components, patched))
                for mask in unit_masks(act.shape, component)
            ]
            deltas: list[Tensor] = []
            starts = range(0, len(units), per_eval)
            for start in tqdm(starts, disable=not show_progress, desc="activation patching"):
                chunk = units[start : start + per_eval]
                copies = len(chunk)
                masks = []
                for index, act in enumerate(patched):
                    stack = torch.zeros((copies,) + tuple(act.shape[1:]), dtype=torch.bool)
                    for slot, (owner, mask) in enumerate(chunk):
                        if owner == index:
                            stack[slot] = mask
                    masks.append(stack)
                inputs = tuple(torch.cat([x] * copies) for x in clean)
                args = _expand_additional_forward_args(extra, copies, ExpansionTypes.repeat)
                tgt = _expand_target(target, copies, ExpansionTypes.repeat)
                with patch(components, patched, masks, copies):
                    values = scalar(_run_forward(self.forward_func, inputs, None, args), tgt)
                deltas.append(values.reshape(copies, -1) - base.unsqueeze(0))
            flat = torch.cat(deltas).T  # (N, units)
        results, offset = [], 0
        for component, act in zip(components, patched):
            grid = component.grid(act)
            count = int(torch.tensor(grid).prod()) if grid else 1
            results.append(flat[:, offset : offset + count].reshape((flat.shape[0],) + grid))
            offset += count
        return results


def _check_pair(clean: tuple[Tensor, ...], patch_in: tuple[Tensor, ...]) -> int:
    if len(clean) != len(patch_in):
        raise ValueError(
            f"baselines (the patch inputs) must have the structure of inputs: {len(clean)} "
            f"tensor(s) vs {len(patch_in)}."
        )
    for index, (a, b) in enumerate(zip(clean, patch_in)):
        if not isinstance(a, Tensor) or not isinstance(b, Tensor):
            raise TypeError("inputs and baselines must be tensors (or tuples of tensors).")
        if a.shape != b.shape:
            raise ValueError(
                f"inputs[{index}] has shape {tuple(a.shape)} but its patch input has "
                f"{tuple(b.shape)}; clean and patch runs must align (same token length)."
            )
        if a.dim() == 0 or a.shape[0] == 0:
            raise ValueError(f"inputs[{index}] needs a non-empty batch dimension.")
        if a.numel() == 0:
            raise ValueError(
                f"inputs[{index}] has a zero-size dimension (shape {tuple(a.shape)}); there is "
                "nothing to patch."
            )
        if a.dtype != b.dtype:
            raise TypeError(
                f"inputs[{index}] has dtype {a.dtype} but its patch input has {b.dtype}; "
                "clean and patch inputs must have the same dtype."
            )
        if a.is_complex() or a.dtype == torch.bool:
            raise TypeError(
                f"inputs[{index}] has dtype {a.dtype}; pass real floating-point inputs, or "
                "integer token ids for a model with an embedding."
            )
        if a.is_floating_point() and not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise ValueError(f"inputs[{index}] or its patch input contains NaN or Inf.")
    return int(clean[0].shape[0])


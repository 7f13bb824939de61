"""LearnedPropagation: backward rules learned per pixel, trained through the masked input.

After Yang, Qiu, Song, Tao and Wang, "Learning Propagation Rules for Attribution Map
Generation", arXiv 2010.07210 (probably ECCV 2020; no official code was found). The spec
(``relevance-and-learned-rules.md`` §5) separates what the abstract states from a tentative
reading; the class docstring says which is which here.
"""

from __future__ import annotations

import logging
from os import PathLike
from typing import Any, Iterable, Optional, Sequence, Union, cast

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_ext._captum import (
    TargetType,
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    _run_forward,
)
from captum_ext._validation import (
    GuardedForward,
    leaves_no_trace,
    validate_inputs,
    validate_target,
)
from captum_ext.attr._propagation_rules import (
    SUPPORTED_ACTIVATIONS,
    PropagationRuleNet,
    installed_rules,
)

__all__ = ["LearnedPropagation"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


class LearnedPropagation(GradientAttribution):
    r"""Input attributions through learned, per-location backward rules (Yang et al. 2020).

    At every hooked activation ``y = f(a)`` (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh``,
    ``nn.LeakyReLU`` modules) the backward pass uses

    .. math::
        g_{in} = c_θ(a, g_{out}) ⊙ g_{out},\qquad
        c_θ = f'(a) · σ(\mathrm{net}_θ(\text{features}))

    instead of ``f'(a) ⊙ g_out`` (:class:`~captum_ext.attr._propagation_rules.PropagationRuleNet`).
    ``attribute`` returns the modified input gradient of the target score (like Captum's
    ``GuidedBackprop``; ``multiplies_by_inputs`` is False): 1 forward + 1 modified backward,
    in which the rule network runs at every hooked activation (about 2x the time of Captum's
    ``Saliency`` on the cue-task CNN of ``benchmarks/bench_learned_propagation.py``).
    Before training, the rule is ``0.98 · f'(a)``, i.e. (a scaled) plain gradient.

    :meth:`fit` trains θ with the classifier frozen. For a batch ``x`` with target ``t`` (the
    model's prediction by default) and original output ``p = softmax(f(x))``:

    .. math::
        s = \sum_{c} |\tilde g_c|,\quad m = s / \max_u s,\quad
        x_{keep} = m ⊙ x + (1-m) ⊙ b,\quad x_{del} = (1-m) ⊙ x + m ⊙ b

        L(θ) = \mathrm{KL}\big(p \,\|\, \mathrm{softmax}(f(x_{keep}))\big)
             + λ_{del}\, \mathrm{softmax}(f(x_{del}))_t + λ_{area}\, \overline{m}

    ``m`` depends on θ through the modified backward pass, so the step differentiates through
    it (``create_graph=True``, higher-order autograd); only θ receives gradients.

    **Faithful to the paper (its abstract)**: a learnable plug-in module on the non-linear
    layers in the backward pass; adaptive propagation rules for each pixel; used to generate a
    mask; the masked input is fed into the model again and its output, combined with the
    original output, guides training; trainable with any higher-order autograd framework.

    **Our reading (the PDF was not checked; spec §5 marks these tentative)**: the rule form
    ``c ⊙ g_out`` with a sigmoid in (0, 1) and, by default, the support of ``f'(a)`` kept; the
    rule network's architecture and inputs (a small MLP of per-position channel means plus a
    linear per-element term, see ``PropagationRuleNet``), one network shared by all layers, and
    its initialisation at ``0.98 · f'(a)`` (the plain gradient); the attribution as the modified
    gradient itself (not times the input); the mask as the max-normalised channel-summed
    |modified gradient|; the objective (KL between the original and masked outputs, our
    "combined with the original one", plus a deletion term and a compactness term, with the
    weights below); baseline ``b = 0``; training on the classifier's own predictions with the
    classifier frozen; Adam. The paper evaluated on 5 datasets and 6 architectures; none of its
    numbers are reproduced here, and the evaluation in ``benchmarks/results/learned_propagation.md``
    (the cue task, EfficientNet-Lite0 on 8 photos) is ours. There, the fitted rule beats the plain
    gradient on every column but not Integrated Gradients on deletion and relevance mass, nor
    Grad-CAM on the pointing game at 2 px.

    **The blockers spec §5 lists, and how they are handled**: in-place activations
    (``ReLU(inplace=True)``) are supported (a forward pre-hook keeps a copy of the input);
    backward hooks with ``create_graph`` are avoided (the rule is a tensor hook on a
    value-preserving surrogate output, and its arithmetic is recorded in the double backward);
    per-model artifacts are the small rule file of :meth:`save`. Functional activations
    (``F.relu``) remain out of reach: only activation *modules* can be hooked. A module that runs
    several times per forward pass (EfficientNet's shared ``ReLU6``) gets one rewrite per call.

    Limits: the model must run the activations eagerly (no TorchScript); a trained rule belongs
    to the model it was trained on; ``model.training`` is set to eval during :meth:`fit` and
    restored afterwards. Batched attributions equal per-example ones (the rule's normalisations
    are per example).

    Args:
        forward_func: the classifier (an ``nn.Module`` unless ``layers`` is given).
        layers: the activation modules to hook; default: every supported activation module of
            ``forward_func``.
        rule: a :class:`PropagationRuleNet` (a new one with ``hidden`` units by default). A fixed
            rule gives fixed backward rules, e.g. guided backpropagation through ReLU6 (which
            Captum's ``GuidedBackprop``, hooking ``nn.ReLU`` only, does not modify).
        hidden: hidden units of a new rule network.
        keep_support: see :class:`PropagationRuleNet`.
    """

    def __init__(
        self,
        forward_func: Any,
        *,
        layers: Optional[Sequence[nn.Module]] = None,
        rule: Optional[PropagationRuleNet] = None,
        hidden: int = 8,
        keep_support: bool = True,
    ) -> None:
        GradientAttribution.__init__(self, forward_func)
        if layers is None:
            if not isinstance(forward_func, nn.Module):
                raise TypeError(
                    "forward_func is not an nn.Module, so its activation modules cannot be "
                    "found; pass layers=[...] explicitly."
                )
            layers = [m for m in forward_func.modules() if isinstance(m, SUPPORTED_ACTIVATIONS)]
        layers = list(layers)
        if not layers:
            raise ValueError(
                "found no activation module to hook (nn.ReLU, nn.ReLU6, nn.Hardtanh, "
                "nn.LeakyReLU). Functional activations (F.relu) cannot be hooked: replace them by "
                "modules, or pass layers=[...]."
            )
        for layer in layers:
            if not isinstance(layer, SUPPORTED_ACTIVATIONS):
                raise TypeError(
                    f"{type(layer).__name__} is not a supported activation module; supported: "
                    f"{', '.join(t.__name__ for t in SUPPORTED_ACTIVATIONS)}."
                )
        self.layers = layers
        self.rule = rule if rule is not None else PropagationRuleNet(hidden, keep_support)

    # ------------------------------------------------------------------ attribution
    @log_usage(part_of_slo=False)
    @leaves_no_trace
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        grad_kwargs: Optional[dict[str, Any]] = None,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        """The input gradient of the target score through the learned rules.

        Args:
            inputs: a tensor ``(N, ...)`` or a tuple of them, as in Captum.
            target: the output index to explain, as in Captum.
            additional_forward_args: extra arguments appended to the forward call.
            grad_kwargs: ``{"create_graph": True}`` keeps the graph (to the rule and model).

        Returns:
            Attributions shaped like ``inputs``, with the same tuple-ness.
        """
        is_tuple = _is_tuple(inputs)
        inputs_tuple = cast(tuple[Tensor, ...], _format_tensor_into_tuples(inputs))
        validate_target(target, validate_inputs(inputs_tuple, forward_func=self.forward_func))
        create_graph = bool(grad_kwargs and grad_kwargs.get("create_graph", False))
        gradients = self._modified_gradients(
            inputs_tuple, target, _format_additional_forward_args(additional_forward_args),
            create_graph,
        )
        if not create_graph:
            gradients = tuple(g.detach() for g in gradients)
        return _format_output(is_tuple, gradients)

    def _modified_gradients(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        create_graph: bool,
    ) -> tuple[Tensor, ...]:
        calls = [0]
        guarded = GuardedForward(self.forward_func, [], target)
        with torch.enable_grad(), installed_rules(self.layers, self.rule, calls):
            leaves = tuple(x.detach().requires_grad_(True) for x in inputs)
            scores = _run_forward(guarded, leaves, target, additional_forward_args)
            if calls[0] == 0:
                raise ValueError(
                    "none of the hooked activation modules ran in the forward pass; check "
                    "`layers` (functional activations such as F.relu cannot be hooked)."
                )
            gradients = torch.autograd.grad(
                cast(Tensor, scores).sum(), leaves, create_graph=create_graph, allow_unused=True
            )
        return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, gradients))

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("LearnedPropagation does not support attribute_future.")

    # ------------------------------------------------------------------ training
    def fit(
        self,
        dataloader: Iterable[Any],
        *,
        epochs: int = 1,
        lr: float = 1e-2,
        target: str = "predicted",
        deletion_weight: float = 1.0,
        area_weight: float = 0.5,
        baseline: float = 0.0,
        max_steps: Optional[int] = None,
        show_progress: bool = False,
    ) -> list[float]:
        """Train the rule (θ only; the classifier is frozen). Returns the loss of every step.

        Args:
            dataloader: yields input batches, or tuples/lists whose first entry is the input
                batch and (for ``target="label"``) whose second entry holds the labels.
            epochs: passes over ``dataloader``.
            lr: Adam's learning rate for θ.
            target: ``"predicted"`` (the class the model predicts, default) or ``"label"``.
            deletion_weight: λ_del, the weight of the target probability of the deleted input.
            area_weight: λ_area, the weight of the mean mask value.
            baseline: the value ``b`` that masked-out pixels take.
            max_steps: stop after this many steps in total.
            show_progress: show a tqdm bar over the steps.

        **Cost per step**: 1 forward (the original output, no graph) + 1 forward and 1
        modified backward with a graph + 2 forwards of the masked inputs + the backward of the
        loss through all of them (second order): about 6x a plain training step of the
        classifier on the cue-task CNN of ``benchmarks/bench_learned_propagation.py``.
        """
        if target not in ("predicted", "label"):
            raise ValueError(f"target must be 'predicted' or 'label', got {target!r}.")
        if epochs < 1:
            raise ValueError(f"epochs must be positive, got {epochs}.")
        optimizer = torch.optim.Adam(self.rule.parameters(), lr=lr)
        model = self.forward_func if isinstance(self.forward_func, nn.Module) else None
        modes = {m: m.training for m in model.modules()} if model is not None else {}
        rule_was_training = self.rule.training
        history: list[float] = []
        progress = tqdm(total=max_steps, desc="LearnedPropagation.fit", disable=not show_progress)
        try:
            if model is not None:
                model.eval()
            self.rule.train()
            with torch.enable_grad():
                for _ in range(epochs):
                    for batch in dataloader:
                        inputs, labels = _split_batch(batch, target)
                        loss = self._training_loss(
                            inputs, labels, deletion_weight, area_weight, baseline
                        )
                        self._step(optimizer, loss)
                        history.append(float(loss.detach()))
                        progress.update(1)
                        if max_steps is not None and len(history) >= max_steps:
                            return history
        finally:
            progress.close()
            for module, mode in modes.items():
                module.training = mode
            self.rule.train(rule_was_training)
        return history

    def _step(self, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        """One optimizer step on θ; gradients go to the rule only (the model's .grad is unused)."""
        parameters = list(self.rule.parameters())
        for parameter, grad in zip(parameters, torch.autograd.grad(loss, parameters)):
            parameter.grad = grad
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def mask(self, inputs: Tensor, target: TargetType = None) -> Tensor:
        """The soft mask ``m = s / max s`` of the training objective, ``(N, 1, *S)``."""
        gradient = cast(Tensor, self.attribute(inputs, target=target))
        return _soft_mask(gradient).detach()

    def _training_loss(
        self,
        inputs: Tensor,
        labels: Optional[Tensor],
        deletion_weight: float,
        area_weight: float,
        baseline: float,
    ) -> Tensor:
        with torch.no_grad():
            original = self.forward_func(inputs)
        target = original.argmax(1) if labels is None else labels.to(original.device)
        with torch.enable_grad():
            (gradient,) = self._modified_gradients((inputs,), target.tolist(), None, True)
            mask = _soft_mask(gradient)
            kept = torch.lerp(torch.full_like(inputs, baseline), inputs, mask)
            deleted = torch.lerp(inputs, torch.full_like(inputs, baseline), mask)
            kept_log_p = F.log_softmax(self.forward_func(kept), 1)
            loss = F.kl_div(kept_log_p, F.log_softmax(original, 1), log_target=True,
                            reduction="batchmean")
            if deletion_weight:
                deleted_p = F.softmax(self.forward_func(deleted), 1)
                loss = loss + deletion_weight * deleted_p.gather(1, target[:, None]).mean()
            if area_weight:
                loss = loss + area_weight * mask.mean()
        return loss

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, PathLike[str]]) -> None:
        """Save the rule (its config and ``state_dict``; tensors and plain values only)."""
        torch.save(
            {"format": _FORMAT_VERSION, "config": self.rule.config(),
             "state_dict": self.rule.state_dict()},
            path,
        )

    def load(self, path: Union[str, PathLike[str]]) -> "LearnedPropagation":
        """Load a rule saved by :meth:`save` (``torch.load(weights_only=True)``); returns self."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or saved.get("format") != _FORMAT_VERSION:
            raise ValueError(f"{path} is not a LearnedPropagation rule file.")
        rule = PropagationRuleNet(**saved["config"])
        rule.load_state_dict(saved["state_dict"])
        device = next(self.rule.parameters()).device
        self.rule = rule.to(device)
        return self


def _soft_mask(gradient: Tensor) -> Tensor:
    saliency = gradient.abs().sum(1, keepdim=True)
    peak = saliency.reshape(saliency.shape[0], -1).amax(1).clamp_min(1e-12)
    return saliency / peak.reshape((-1,) + (1,) * (saliency.dim() - 1))


def _split_batch(batch: Any, target: str) -> tuple[Tensor, Optional[Tensor]]:
    if isinstance(batch, Tensor):
        if target == "label":
            raise ValueError("target='label' needs batches of (inputs, labels, ...).")
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        if target == "label":
            if len(batch) < 2:
                raise ValueError("target='label' needs batches of (inputs, labels, ...).")
            return batch[0], batch[1]
        return batch[0], None
    raise TypeError(
        "the dataloader must yield input tensors or tuples whose first entry is the inputs, "
        f"got {type(batch).__name__}."
    )

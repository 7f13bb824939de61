"""Attribution Guided Factorization (AGF): class-specific relevance maps for CNNs.

Gur, Ali, Wolf, "Visualization of Supervised and Self-Supervised Neural Networks via Attribution
Guided Factorization", AAAI 2021 (arXiv 2012.02166); official code shirgur/AGFVisualization.
AGF addresses "saliency bias": maps for a non-predicted class should show that class's evidence.

Algorithm (spec §4.1, reproduced from the official code's defaults):

1. Re-weighted score: ``σ = max_j |y_j − y_t|``, ``ỹ = softmax(y_t · exp(−½((y − y_t)/σ)²))``.
   The gradient stream is ``∇ = ∂ỹ_t/∂·`` (plain backprop), and the initial relevance at the
   classifier's input is ``X ⊙ ∇``.
2. Convolutions with a spatial kernel (and not reading the input): base relevance by the
   absolute z-rule, plus the residual terms ``R = (F_x + M)·sigmoid(C) + F_dx + A`` restricted
   to ``C ≠ 0`` and shifted to zero sum (``out = C + R − mean_{C≠0}(R)``): class-specific
   input×gradient ``M``, the factorisation terms ``F_x``/``F_dx`` and the all-ones relevance ``A``.
   1×1 convolutions and hidden ``nn.Linear`` layers use the absolute z-rule only (the official
   code does so for the convolutions that end a residual branch; override with
   ``factorized_layers``).
3. The convolution that reads the input: the z^B rule with ``l = min x``, ``h = max x``.
4. ReLU, pooling, residual additions: LRP-0 (for a sum, the proportional split
   ``R_a = a/(a+b)·R``, as the official ``Add``); batch norm, dropout: pass-through (ReLU6 too,
   where the official code has only ReLU). ``residual_rule="abs"`` splits sums as
   ``|a| : |b|`` instead (:class:`~captum_ext.rules.AbsoluteSum`), which never amplifies relevance
   when the summands nearly cancel.

Implementation: every step is a rule in the modified-gradient form (:mod:`captum_ext.rules`),
so that the model's own autograd graph carries relevance through any topology: a residual
``x + f(x)`` written in ``forward`` needs no rewriting, because the plain gradient of a sum is
LRP-0's proportional split in this form. Cost: two forward and two backward passes plus, per
factorised convolution, about six convolution VJPs and two 2×2 ridge solves per pixel.

Supported modules: Conv1d/2d/3d (any subclass, depthwise included), Linear, ReLU, LeakyReLU,
ReLU6, BatchNorm, max/avg/adaptive pooling, Dropout, Identity, Flatten, padding. Other modules
(SiLU, GELU, Sigmoid, LayerNorm, attention, transposed convolutions, ...) and functional
non-linearities outside supported modules (``torch.sigmoid``, gating products, softmax, ...)
raise ``TypeError`` naming them. EfficientNet-Lite0 is supported (ReLU6, no squeeze-excitation).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence, Union

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.pooling import (
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _AvgPoolNd,
    _MaxPoolNd,
)
from torch.overrides import TorchFunctionMode

from captum_ext._captum import (
    TargetType,
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    _run_forward,
)
from captum_ext._validation import (
    check_target_against_output,
    leaves_no_trace,
    validate_inputs,
    validate_target,
)
from captum_ext.attr._agf_rules import AGFConvStep, AGFOptions, ZBoxStep
from captum_ext.rules import AbsoluteSum, AbsZ, Composite, IdentityRule

__all__ = ["AttributionGuidedFactorization"]

_PLAIN = (
    nn.ReLU, nn.LeakyReLU, _MaxPoolNd, _AvgPoolNd, _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
)
_PASS = (_BatchNorm, nn.ReLU6)
_NONLINEAR_FUNCTIONS = frozenset({
    "sigmoid", "tanh", "softmax", "log_softmax", "silu", "gelu", "hardswish", "hardsigmoid",
    "mish", "elu", "selu", "softplus", "relu6", "hardtanh", "layer_norm", "group_norm",
    "scaled_dot_product_attention",
})
_PRODUCTS = frozenset({"mul", "__mul__", "matmul", "__matmul__", "bmm", "einsum", "div", "__truediv__"})


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, _ConvNd) and not isinstance(module, _ConvTransposeNd)


def _atomic(module: nn.Module) -> bool:
    return _is_conv(module) or isinstance(module, (nn.Linear,) + _PLAIN + _PASS)


class _Trace(TorchFunctionMode):
    """Records the run order of atomic modules and functional non-linearities outside them."""

    def __init__(self, model: nn.Module, x: Tensor) -> None:
        super().__init__()
        self.depth = 0
        self.x = x
        self.order: list[nn.Module] = []
        self.input_layers: list[nn.Module] = []
        self.outputs: dict[nn.Module, list[Tensor]] = {}
        self.problems: list[str] = []
        self.names = {m: n for n, m in model.named_modules()}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if self.depth == 0:
            name = getattr(func, "__name__", "")
            if name in _NONLINEAR_FUNCTIONS:
                self.problems.append(f"the functional call {name}()")
            elif name in _PRODUCTS:
                operands = [a for a in args if isinstance(a, Tensor) and a.requires_grad
                            and not isinstance(a, nn.Parameter)]
                if len(operands) >= 2:
                    self.problems.append(f"a product of two activations ({name}, e.g. a gate)")
        return func(*args, **kwargs)

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[None]:
        handles = []

        def pre(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if self.depth == 0:
                self.order.append(module)
                if _is_conv(module) and inputs and inputs[0] is self.x:
                    self.input_layers.append(module)
            self.depth += 1

        def post(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self.depth -= 1
            if self.depth == 0 and _is_conv(module) and isinstance(output, Tensor):
                self.outputs.setdefault(module, []).append(output)

        def leaf(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if self.depth == 0:
                self.problems.append(f"{type(module).__name__} ({self.names.get(module, '?')})")

        try:
            for module in model.modules():
                if _atomic(module):
                    handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
                elif not list(module.children()):
                    handles.append(module.register_forward_pre_hook(leaf))
            yield
        finally:
            for handle in handles:
                handle.remove()


def reweighted_score(logits: Tensor, target: Tensor) -> Tensor:
    """AGF's ỹ_t: ``softmax(y_t · exp(−½((y − y_t)/σ)²))_t``, ``σ = max_j |y_j − y_t|``, per example."""
    y_t = logits.gather(1, target[:, None])
    sigma = (logits - y_t).abs().amax(1, keepdim=True)
    sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    weights = torch.softmax(y_t * torch.exp(-0.5 * ((logits - y_t) / sigma) ** 2), dim=1)
    return weights.gather(1, target[:, None]).squeeze(1)


class AttributionGuidedFactorization(GradientAttribution):
    """AGF (Gur et al., AAAI 2021): per-class relevance maps, also for non-predicted classes.

    Args:
        forward_func: the CNN (an ``nn.Module`` returning logits ``(N, C)``), whose first layer
            is a convolution reading the input.
        factorized_layers: the convolutions that get the full AGF step (residual terms and
            factorisation); default: every convolution with a kernel larger than 1 element that
            does not read the input. The others get the absolute z-rule only.
        use_a, use_fx, use_fdx, use_m, use_sigmoid: the paper's ablation switches (default on).
        residual_rule: ``"proportional"`` (default, the official LRP-0) or ``"abs"`` for
            additions of two activations written in the model's forward.

    ``attribute`` returns the relevance of every input element, shaped like the input; the
    paper's heatmap is :meth:`heatmap` (sum over channels, divided by the maximum). Relevance is
    exactly 0 at input elements that are exactly 0 (the modified-gradient form divides by the
    input), which never happens for normalised 8-bit images.
    """

    def __init__(
        self,
        forward_func: nn.Module,
        *,
        factorized_layers: Sequence[nn.Module] | None = None,
        use_a: bool = True,
        use_fx: bool = True,
        use_fdx: bool = True,
        use_m: bool = True,
        use_sigmoid: bool = True,
        residual_rule: str = "proportional",
    ) -> None:
        if residual_rule not in ("abs", "proportional"):
            raise ValueError(f"residual_rule must be 'abs' or 'proportional', got {residual_rule!r}.")
        if not isinstance(forward_func, nn.Module):
            raise TypeError("AttributionGuidedFactorization needs the model itself (an nn.Module).")
        super().__init__(forward_func)
        self.model = forward_func
        self.factorized_layers = None if factorized_layers is None else list(factorized_layers)
        self.options = AGFOptions(use_a, use_fx, use_fdx, use_m, use_sigmoid)
        self.residual_rule = residual_rule

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("AttributionGuidedFactorization does not support attribute_future.")

    @staticmethod
    def heatmap(attribution: Tensor) -> Tensor:
        """The official code's map: relevance divided by its per-example maximum (over channels
        and positions), then summed over channels: ``(N, 1, *S)``."""
        top = attribution.flatten(1).amax(1).reshape((-1,) + (1,) * (attribution.dim() - 1))
        return (attribution / torch.where(top > 0, top, torch.ones_like(top))).sum(1, keepdim=True)

    @log_usage(part_of_slo=False)
    @leaves_no_trace
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        """Relevance of each input element for ``target`` (one class per example or for all)."""
        is_tuple = _is_tuple(inputs)
        formatted = _format_tensor_into_tuples(inputs)
        batch = validate_inputs(formatted, forward_func=self.forward_func)
        if len(formatted) != 1:
            raise ValueError("AttributionGuidedFactorization explains models with a single input tensor.")
        if formatted[0].dtype in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"AttributionGuidedFactorization refuses {formatted[0].dtype} inputs: its relevance "
                "rules divide by activations and sums that 16-bit floats cannot resolve (errors of "
                "the order of the relevance itself were measured). Run it in float32: "
                "`model.float()` and `x.float()`."
            )
        validate_target(target, batch)
        extra = _format_additional_forward_args(additional_forward_args)
        with torch.enable_grad():
            x = formatted[0].detach().clone().requires_grad_(True)
            trace, streams, classes = self._gradient_stream(x, target, extra)
            composite = self._composite(trace, streams)
            with composite.context(self.model):
                logits = _run_forward(self.model, (x,), None, extra)
                score = reweighted_score(logits, classes)
            (grad,) = torch.autograd.grad(score.sum(), x)
        relevance = (x * grad).detach()
        return _format_output(is_tuple, (relevance,))

    def _gradient_stream(self, x: Tensor, target: Any, extra: Any):  # type: ignore[no-untyped-def]
        trace = _Trace(self.model, x)
        with trace.hooks(self.model), trace:
            logits = _run_forward(self.model, (x,), None, extra)
        if trace.problems:
            unique = list(dict.fromkeys(trace.problems))
            raise TypeError(
                "AttributionGuidedFactorization has no AGF rule for: " + "; ".join(unique)
                + ". Supported: Conv1d/2d/3d, Linear, ReLU, LeakyReLU, ReLU6, BatchNorm, pooling, "
                "Dropout, Identity, Flatten, padding and residual additions."
            )
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise ValueError(
                f"AGF needs logits of shape (N, C); the model returned "
                f"{getattr(logits, 'shape', type(logits).__name__)}."
            )
        if target is None:
            raise ValueError("AGF explains one class: pass target (e.g. target=logits.argmax(1)).")
        check_target_against_output(logits, target)
        classes = _target_tensor(target, logits)
        if not trace.input_layers:
            raise TypeError(
                "AGF needs a convolution that reads the input directly (the paper's z^B input "
                "layer); this model's first layer is not one."
            )
        outputs = [t for m in trace.outputs for t in trace.outputs[m]]
        score = reweighted_score(logits, classes)
        grads = torch.autograd.grad(score.sum(), outputs, allow_unused=True)
        streams: dict[nn.Module, list[Tensor]] = {}
        flat = iter(grads)
        for module, tensors in trace.outputs.items():
            streams[module] = [
                torch.zeros_like(t) if (g := next(flat)) is None else g.detach() for t in tensors
            ]
        return trace, streams, classes

    def _composite(self, trace: _Trace, streams: dict[nn.Module, list[Tensor]]) -> Composite:
        linears = [m for m in trace.order if isinstance(m, nn.Linear)]
        classifier = linears[-1] if linears else None
        factorized = self.factorized_layers
        entries: list[tuple[Any, Any]] = []
        for module in dict.fromkeys(trace.order):
            if module in trace.input_layers:
                rule: Any = ZBoxStep(module)
            elif _is_conv(module):
                wanted = (module.weight[0, 0].numel() > 1) if factorized is None else any(
                    module is f for f in factorized)
                rule = AGFConvStep(module, _popper(streams[module]), self.options, wanted)
            elif isinstance(module, nn.Linear):
                rule = None if module is classifier else AbsZ()
            elif isinstance(module, _PASS):
                rule = IdentityRule(epsilon=1e-12)
            else:
                rule = None
            if rule is not None:
                entries.append((_same(module), rule))
        if self.residual_rule == "abs":
            entries.append((_same(self.model), AbsoluteSum()))
        return Composite(entries)


def _same(module: nn.Module):  # type: ignore[no-untyped-def]
    return lambda name, candidate: candidate is module


def _popper(stream: list[Tensor]):  # type: ignore[no-untyped-def]
    position = [0]

    def next_gradient() -> Tensor:
        gradient = stream[position[0] % len(stream)]
        position[0] += 1
        return gradient

    return next_gradient


def _target_tensor(target: Any, logits: Tensor) -> Tensor:
    n = logits.shape[0]
    if isinstance(target, Tensor):
        values = target.reshape(-1).to(logits.device)
        return values.expand(n) if values.numel() == 1 else values
    if isinstance(target, (list, tuple)):
        if isinstance(target, tuple):
            raise ValueError("AGF needs one class index per example, not a tuple index.")
        return torch.tensor([int(t) for t in target], device=logits.device)
    return torch.full((n,), int(target), device=logits.device, dtype=torch.long)

"""An inference-only copy of a model in which each convolution absorbs what follows it.

Score-CAM and its variants push one masked input per channel through the model: thousands of
forward passes under ``torch.no_grad()``, with no hook active. For those passes only,
:func:`validated_fused_copy` builds a ``torch.fx`` copy of the model in which every convolution
(1D, 2D or 3D, module or functional) takes in

* a symmetric zero padding just before it (``nn.ZeroPad*d``, ``nn.ConstantPad*d(value=0)`` or
  ``F.pad(..., value=0)``), moved into the convolution's own ``padding``;
* an eval-mode batch norm just after it, folded into its weight and bias with the running
  statistics: ``W' = W·γ/√(σ²+ε)``, ``b' = (b − μ)·γ/√(σ²+ε) + β``;
* a ReLU, ReLU6 or Hardtanh after that. On CPU float32 without autograd the convolution and
  the clamp run as one oneDNN kernel (``torch.ops.mkldnn._convolution_pointwise``, the kernel
  that ``torch.compile`` emits for this pattern on CPU); elsewhere the clamp runs in place.

Each of these is the model's own arithmetic up to float rounding, and the copy is checked
against the model's output on the clean inputs before it is used. On EfficientNet-Lite0
(2-core CPU, 32 images of 224², channels-last) a forward pass goes from 34 to 15 ms per image:
batch norm, ReLU6 and the "same" padding took 60% of the eager pass.

The user's model is not changed. The copy shares its modules, except that each fused
convolution is a new module holding new weight tensors. A model gets no copy (and the caller
uses the model itself) when:

* it is not an ``nn.Module``, or it is a ``DataParallel`` wrapper;
* a forward hook or pre-hook is registered globally, or on one of its modules that the copy
  does not call as it is (a fused module, or one whose ``forward`` was traced through): those
  hooks would not run. Hooks on the modules the copy still calls run as usual;
* ``torch.fx`` cannot trace it (data-dependent control flow, for instance);
* tracing changed an attribute of one of its modules, or the contents of a list, dict or set
  attribute (a ``forward`` that stores or records something on ``self``): they are put back
  as they were;
* there is nothing to fuse, or the copy's output on the clean inputs differs from the model's.

Tracing runs ``forward`` once on ``torch.fx`` proxies instead of tensors. Its side effects on
module attributes are undone (above); side effects elsewhere (appending to a global or
closure list, say) happen once more, with proxies. For a model whose ``forward`` does that,
set ``fused_inference_chunks = False`` on the method.

Everything that touches ``torch.fx`` and the private oneDNN operator is in this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.padding import _ConstantPadNd

__all__ = [
    "AGREEMENT_TOLERANCE",
    "FusedConvolution",
    "calls_module",
    "fused_copy",
    "may_survive_fusion",
    "validated_fused_copy",
]

logger = logging.getLogger(__name__)

_CONV_FUNCTIONS: dict[Any, int] = {
    F.conv1d: 1,
    F.conv2d: 2,
    F.conv3d: 3,
    torch.conv1d: 1,
    torch.conv2d: 2,
    torch.conv3d: 3,
}
_CONV_MODULES: dict[type, int] = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_CONVOLVE: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_PAD_FUNCTIONS = (F.pad, torch.constant_pad_nd)
_RELU_FUNCTIONS = (F.relu, torch.relu)

#: How far the copy's output on the clean inputs may be from the model's, relative to the
#: largest output magnitude. Folding changes rounding only (EfficientNet-Lite0: 7e-7).
AGREEMENT_TOLERANCE = 1e-3

#: ``(oneDNN attribute, scalars)``: ``("relu", [])`` or ``("hardtanh", [low, high])``.
Activation = tuple[str, list[float]]


def _onednn_operator() -> Optional[Callable[..., Tensor]]:
    """oneDNN's fused convolution + pointwise kernel, if this PyTorch build has it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


class FusedConvolution(nn.Module):
    """``activation(conv(x, weight, bias))`` with any padding, batch norm and clamp folded in.

    Under ``torch.no_grad()`` on CPU float32 the convolution and the clamp are one oneDNN
    kernel; otherwise they are ``F.conv{1,2,3}d`` followed by an in-place clamp (autograd
    works through that path).
    """

    weight: Tensor
    bias: Optional[Tensor]

    def __init__(
        self,
        weight: Tensor,
        bias: Optional[Tensor],
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        groups: int,
        activation: Optional[Activation],
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.rank = weight.dim() - 2
        self.stride = [int(s) for s in stride]
        self.padding = [int(p) for p in padding]
        self.dilation = [int(d) for d in dilation]
        self.groups = int(groups)
        self.activation = activation
        self._onednn = _onednn_operator()

    def extra_repr(self) -> str:
        return (
            f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, activation={self.activation}"
        )

    def forward(self, x: Tensor) -> Tensor:
        if (
            self._onednn is not None
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.dim() == self.rank + 2
            and not (torch.is_grad_enabled() and x.requires_grad)
        ):
            attribute, scalars = self.activation or ("none", [])
            try:
                return self._onednn(
                    x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                    self.groups, attribute, scalars, None,
                )
            except RuntimeError as error:  # a build whose kernel rejects this case
                logger.debug("oneDNN fused convolution failed (%s); using F.conv", error)
                self._onednn = None
        y = _CONVOLVE[self.rank](
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        if self.activation is None:
            return y
        attribute, scalars = self.activation
        return torch.relu_(y) if attribute == "relu" else F.hardtanh_(y, *scalars)


@dataclass
class _Convolution:
    """A convolution node of the traced graph, with everything needed to rebuild it."""

    node: fx.Node
    source: fx.Node  # its input
    weight: Tensor
    bias: Optional[Tensor]
    stride: list[int]
    padding: list[int]
    dilation: list[int]
    groups: int

    @property
    def rank(self) -> int:
        return self.weight.dim() - 2


def _argument(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _per_dim(value: Any, rank: int) -> Optional[list[int]]:
    """``value`` (an int or a sequence of ints, one per spatial dim) as a list, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * rank
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        if len(value) == rank:
            return list(value)
        if len(value) == 1:
            return list(value) * rank
    return None


def _attribute_tensor(graph_module: fx.GraphModule, node: Any) -> Optional[Tensor]:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value: Any = graph_module
    for name in str(node.target).split("."):
        value = getattr(value, name, None)
    return value if isinstance(value, Tensor) else None


def _as_convolution(
    node: fx.Node, graph_module: fx.GraphModule, modules: dict[str, nn.Module]
) -> Optional[_Convolution]:
    """The convolution computed by ``node``, if it is one that can be rebuilt."""
    if node.op == "call_module" and type(modules.get(str(node.target))) in _CONV_MODULES:
        conv = modules[str(node.target)]
        assert isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or node.kwargs:
            return None
        if len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
            return None
        return _Convolution(
            node, node.args[0], conv.weight, conv.bias, list(conv.stride),
            list(conv.padding), list(conv.dilation), conv.groups,
        )
    if node.op != "call_function" or node.target not in _CONV_FUNCTIONS:
        return None
    rank = _CONV_FUNCTIONS[node.target]
    source = _argument(node, 0, "input", None)
    weight = _attribute_tensor(graph_module, _argument(node, 1, "weight", None))
    bias_node = _argument(node, 2, "bias", None)
    bias = None if bias_node is None else _attribute_tensor(graph_module, bias_node)
    stride = _per_dim(_argument(node, 3, "stride", 1), rank)
    padding = _per_dim(_argument(node, 4, "padding", 0), rank)
    dilation = _per_dim(_argument(node, 5, "dilation", 1), rank)
    groups = _argument(node, 6, "groups", 1)
    if (
        not isinstance(source, fx.Node)
        or weight is None
        or weight.dim() != rank + 2
        or (bias_node is not None and bias is None)
        or stride is None
        or padding is None
        or dilation is None
        or not isinstance(groups, int)
    ):
        return None
    return _Convolution(node, source, weight, bias, stride, padding, dilation, groups)


def _only_user(node: fx.Node) -> Optional[fx.Node]:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _symmetric_zero_padding(
    node: fx.Node, rank: int, modules: dict[str, nn.Module]
) -> Optional[list[int]]:
    """Per-dim padding ``[p_1, ..., p_rank]`` if ``node`` pads only spatial dims with zeros,
    the same amount on both sides, and feeds nothing else."""
    if _only_user(node) is None:
        return None
    if node.op == "call_module":
        module = modules.get(str(node.target))
        if not isinstance(module, _ConstantPadNd) or module.value != 0:
            return None
        pads: Any = module.padding
    elif node.op == "call_function" and node.target in _PAD_FUNCTIONS:
        pads = _argument(node, 1, "pad", None)
        if node.target is F.pad:
            mode = _argument(node, 2, "mode", "constant")
            value = _argument(node, 3, "value", None)
        else:
            mode, value = "constant", _argument(node, 2, "value", 0)
        if mode != "constant" or value not in (None, 0, 0.0):
            return None
    else:
        return None
    if not isinstance(pads, (tuple, list)) or not all(isinstance(p, int) for p in pads):
        return None
    if len(pads) % 2 or len(pads) > 2 * rank:
        return None
    per_dim = [0] * rank
    for index in range(len(pads) // 2):  # pads run from the last dim backwards
        before, after = pads[2 * index], pads[2 * index + 1]
        if before != after or before < 0:
            return None
        per_dim[rank - 1 - index] = before
    return per_dim


def _foldable_batch_norm(node: Optional[fx.Node], modules: dict[str, nn.Module],
                         channels: int) -> Optional[_BatchNorm]:
    if node is None or node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    module = modules.get(str(node.target))
    if (
        not isinstance(module, _BatchNorm)
        or module.training
        or module.running_mean is None
        or module.running_var is None
        or module.num_features != channels
    ):
        return None
    return module


def _activation(node: Optional[fx.Node], modules: dict[str, nn.Module]) -> Optional[Activation]:
    if node is None:
        return None
    if node.op == "call_module" and len(node.args) == 1 and not node.kwargs:
        module = modules.get(str(node.target))
        if type(module) is nn.ReLU:
            return ("relu", [])
        if isinstance(module, nn.Hardtanh):  # ReLU6 too
            return ("hardtanh", [float(module.min_val), float(module.max_val)])
        return None
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS and len(node.args) == 1:
        return ("relu", [])
    if node.op == "call_function" and node.target is F.relu6 and len(node.args) == 1:
        return ("hardtanh", [0.0, 6.0])
    if node.op == "call_function" and node.target is F.hardtanh:
        low, high = _argument(node, 1, "min_val", -1.0), _argument(node, 2, "max_val", 1.0)
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            return ("hardtanh", [float(low), float(high)])
        return None
    if node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1:
        return ("relu", [])
    return None


def _fold_batch_norm(
    weight: Tensor, bias: Optional[Tensor], norm: _BatchNorm
) -> tuple[Tensor, Tensor]:
    assert norm.running_mean is not None and norm.running_var is not None
    scale = torch.rsqrt(norm.running_var.detach() + norm.eps)
    shift = -norm.running_mean.detach() * scale
    if norm.affine:
        scale = scale * norm.weight.detach()
        shift = shift * norm.weight.detach() + norm.bias.detach()
    folded_weight = weight * scale.to(weight.dtype).reshape((-1,) + (1,) * (weight.dim() - 1))
    base = bias if bias is not None else weight.new_zeros(weight.shape[0])
    return folded_weight, base * scale.to(weight.dtype) + shift.to(weight.dtype)


def _fuse(graph_module: fx.GraphModule, model: nn.Module) -> int:
    """Rewrite every convolution chain of the graph in place; returns how many were fused.

    The modules that a fused chain replaces are dropped from the copy's own containers, never
    from a module of ``model``."""
    graph = graph_module.graph
    user_modules = {id(m) for m in model.modules()}
    dropped: list[str] = []
    modules = dict(graph_module.named_modules())
    fused = 0
    for node in list(graph.nodes):
        conv = _as_convolution(node, graph_module, modules)
        if conv is None:
            continue
        replaced = [conv.node]
        source, padding = conv.source, list(conv.padding)
        extra = _symmetric_zero_padding(source, conv.rank, modules)
        if extra is not None and isinstance(source.args[0], fx.Node):
            replaced.insert(0, source)
            source = source.args[0]
            padding = [p + q for p, q in zip(padding, extra)]
        weight = conv.weight.detach().clone()
        bias = None if conv.bias is None else conv.bias.detach().clone()
        last = conv.node
        norm = _foldable_batch_norm(_only_user(last), modules, weight.shape[0])
        if norm is not None:
            weight, bias = _fold_batch_norm(weight, bias, norm)
            last = list(last.users)[0]
            replaced.append(last)
        activation_node = _only_user(last)
        activation = _activation(activation_node, modules)
        if activation is not None and activation_node is not None:
            last = activation_node
            replaced.append(last)
        if len(replaced) == 1 and activation is None:
            continue  # a lone convolution: nothing to gain
        name = f"_captum_ext_fused_{fused}"
        graph_module.add_submodule(
            name,
            FusedConvolution(weight, bias, conv.stride, padding, conv.dilation, conv.groups,
                             activation),
        )
        with graph.inserting_after(last):
            replacement = graph.call_module(name, (source,))
        last.replace_all_uses_with(replacement)
        for old in reversed(replaced):
            graph.erase_node(old)
            if old.op == "call_module":
                dropped.append(str(old.target))
        fused += 1
    if fused:
        for node in list(graph.nodes):  # the replaced convolutions' weights
            if node.op == "get_attr" and not node.users:
                graph.erase_node(node)
        still_called = {str(n.target) for n in graph.nodes if n.op == "call_module"}
        for target in dict.fromkeys(dropped):  # a module may be called (and fused) twice
            parent_name, _, name = target.rpartition(".")
            parent = graph_module.get_submodule(parent_name)
            if target not in still_called and id(parent) not in user_modules:
                delattr(parent, name)
        graph.lint()
        graph_module.recompile()
    return fused


def _has_global_hooks() -> bool:
    from torch.nn.modules import module as module_globals

    global_hooks = (
        getattr(module_globals, "_global_forward_hooks", {}),
        getattr(module_globals, "_global_forward_pre_hooks", {}),
    )
    return any(len(hooks) for hooks in global_hooks)


def _hooks_would_be_skipped(model: nn.Module, graph_module: fx.GraphModule) -> bool:
    """True if a module of ``model`` with forward (pre-)hooks is not called by the copy."""
    called = {
        id(graph_module.get_submodule(str(node.target)))
        for node in graph_module.graph.nodes
        if node.op == "call_module"
    }
    return any(
        (m._forward_hooks or m._forward_pre_hooks) and id(m) not in called
        for m in model.modules()
    )


class _Snapshot:
    """Every module's attributes, and the contents of its list, dict and set attributes
    (a ``forward`` that records calls appends to them, also while being traced)."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = [(m, dict(m.__dict__)) for m in model.modules()]
        self.contents = [
            (value, _shallow_copy(value))
            for _, attributes in self.modules
            for value in attributes.values()
            if isinstance(value, (list, dict, set))
        ]

    def restore(self) -> bool:
        """Put everything back as it was; True if anything had changed."""
        changed = False
        for container, saved in self.contents:
            if not _same_contents(container, saved):
                changed = True
                container.clear()
                if isinstance(container, list):
                    container.extend(saved)
                else:
                    container.update(saved)
        for module, attributes in self.modules:
            live = module.__dict__
            if not _same_contents(live, attributes):
                changed = True
                live.clear()
                live.update(attributes)
        return changed


def _shallow_copy(container: Any) -> Any:
    return dict(container) if isinstance(container, dict) else type(container)(container)


def _same_contents(live: Any, saved: Any) -> bool:
    if len(live) != len(saved):
        return False
    if isinstance(live, dict):
        return live.keys() == saved.keys() and all(live[k] is v for k, v in saved.items())
    if isinstance(live, set):
        return live == saved
    return all(a is b for a, b in zip(live, saved))


def fused_copy(model: Any) -> Optional[fx.GraphModule]:
    """A traced copy of ``model`` with its convolution chains fused (see the module docstring),
    or None when the model cannot or need not have one. ``model`` is left as it was."""
    if not isinstance(model, nn.Module) or isinstance(
        model, (nn.DataParallel, nn.parallel.DistributedDataParallel)
    ):
        return None
    if _has_global_hooks():
        logger.debug("no fused copy: global forward hooks are registered")
        return None
    snapshot = _Snapshot(model)
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception as error:  # any user code may fail on proxies: use the model itself
        logger.debug("no fused copy: torch.fx cannot trace the model (%s)", error)
        return None
    finally:
        changed = snapshot.restore()
    if changed:
        logger.debug("no fused copy: tracing changed module attributes (restored)")
        return None
    try:
        fused = _fuse(graph_module, model)
    except Exception as error:  # an unexpected graph: use the model itself
        logger.debug("no fused copy: fusion failed (%s)", error)
        return None
    if fused and _hooks_would_be_skipped(model, graph_module):
        logger.debug("no fused copy: the model has forward hooks on modules it fuses")
        return None
    return graph_module if fused else None


def _agrees(candidate: Any, reference: Tensor) -> bool:
    if not isinstance(candidate, Tensor) or candidate.shape != reference.shape:
        return False
    if not reference.is_floating_point() or not bool(torch.isfinite(reference).all()):
        return False
    if not reference.numel():
        return True
    scale = float(reference.abs().max())
    error = float((candidate.to(reference.dtype) - reference).abs().max())
    return error <= AGREEMENT_TOLERANCE * max(scale, 1e-12)


def may_survive_fusion(module: nn.Module) -> bool:
    """False if a fused copy certainly does not call ``module`` itself: ``torch.fx`` traces
    through it (it is not a ``torch.nn`` leaf), or it is of a kind that fusion may absorb
    (convolution, batch norm, ReLU, Hardtanh, constant padding). Lets a caller that needs
    ``module`` skip tracing the model at all."""
    leaf = type(module).__module__.startswith("torch.nn") and not isinstance(
        module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    )
    absorbable = (nn.Conv1d, nn.Conv2d, nn.Conv3d, _BatchNorm, nn.ReLU, nn.Hardtanh,
                  _ConstantPadNd)
    return leaf and not isinstance(module, absorbable)


def calls_module(copy: nn.Module, module: nn.Module) -> bool:
    """True if ``copy`` (a :func:`fused_copy`) calls ``module`` itself, so that hooks on it
    run during the copy's passes."""
    if not isinstance(copy, fx.GraphModule):
        return False
    return any(
        node.op == "call_module" and copy.get_submodule(str(node.target)) is module
        for node in copy.graph.nodes
    )


def validated_fused_copy(
    model: Any,
    inputs: tuple[Tensor, ...],
    additional_forward_args: Optional[tuple[Any, ...]],
    reference_output: Tensor,
    must_call: Optional[nn.Module] = None,
) -> Optional[nn.Module]:
    """:func:`fused_copy`, kept only if its output on ``inputs`` matches ``reference_output``
    (the model's own output on them) to :data:`AGREEMENT_TOLERANCE`, and, when ``must_call``
    is given (a module the caller hooks during its passes), only if the copy calls that
    module itself; the model is not even traced when fusion may absorb it. Costs one forward
    pass of ``inputs`` when a copy is built."""
    if must_call is not None and not may_survive_fusion(must_call):
        return None
    copy = fused_copy(model)
    if copy is None or (must_call is not None and not calls_module(copy, must_call)):
        return None
    try:
        with torch.no_grad():
            output = copy(*inputs, *(additional_forward_args or ()))
    except Exception as error:  # the copy must never make a working model fail
        logger.debug("fused copy not used: it failed on the clean inputs (%s)", error)
        return None
    if not _agrees(output, reference_output.detach()):
        logger.debug("fused copy not used: its output differs from the model's")
        return None
    return copy


"""Input, target and layer validation shared by every method.

Every check raises an error that says what is wrong and how to fix it, *before* the work starts
where possible. Nothing is silently truncated or broadcast: a list or tensor target must have
exactly one entry per example (pytorch-grad-cam zips targets with the batch and silently drops
the rest; we refuse instead).
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.dropout import _DropoutNd

__all__ = [
    "GuardedForward",
    "check_target_against_output",
    "leaves_no_trace",
    "resolve_layer",
    "training_mode_guard",
    "validate_inputs",
    "validate_layers_in_model",
    "validate_model_dtype",
    "validate_target",
]

F = TypeVar("F", bound=Callable[..., Any])


def validate_inputs(
    inputs: Sequence[Tensor], *, name: str = "inputs", forward_func: Any = None
) -> int:
    """Check a tuple of input tensors and return the batch size.

    With ``forward_func``, also check that floating inputs have the model's dtype
    (:func:`validate_model_dtype`).

    Raises:
        TypeError: a non-tensor, or an integer, boolean or complex tensor. Attribution needs
            gradients or continuous perturbations, so cast images with ``x.float()`` first.
        ValueError: an empty batch, a zero-size dimension, NaN or Inf values, or tensors with
            different batch sizes.
    """
    if len(inputs) == 0:
        raise ValueError(f"{name} is empty: pass a tensor of shape (N, ...) or a tuple of them.")
    batch_size: int | None = None
    for index, tensor in enumerate(inputs):
        label = name if len(inputs) == 1 else f"{name}[{index}]"
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(tensor).__name__}.")
        if tensor.is_complex() or not tensor.is_floating_point():
            raise TypeError(
                f"{label} has dtype {tensor.dtype}; attributions need a real floating-point "
                f"input. Convert it first, e.g. `x = x.float()` (and scale uint8 images to [0, 1])."
            )
        if tensor.dim() == 0:
            raise ValueError(f"{label} is a scalar; the first dimension must be the batch.")
        if tensor.shape[0] == 0:
            raise ValueError(f"{label} has an empty batch (shape {tuple(tensor.shape)}).")
        if tensor.numel() == 0:
            raise ValueError(
                f"{label} has a zero-size dimension (shape {tuple(tensor.shape)}); "
                "there is nothing to attribute."
            )
        if not bool(torch.isfinite(tensor).all()):
            bad = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
            raise ValueError(
                f"{label} contains {bad} values; attributions of non-finite inputs are "
                "meaningless. Clean the input (e.g. torch.nan_to_num) before attributing."
            )
        if batch_size is None:
            batch_size = int(tensor.shape[0])
        elif tensor.shape[0] != batch_size:
            raise ValueError(
                f"all input tensors must share the batch size: {label} has {tensor.shape[0]}, "
                f"the first has {batch_size}."
            )
    assert batch_size is not None
    if forward_func is not None:
        validate_model_dtype(forward_func, inputs)
    return batch_size


def validate_model_dtype(forward_func: Callable[..., Any], inputs: Sequence[Tensor]) -> None:
    """Refuse a floating input whose dtype differs from the model's floating parameters.

    A float16 input to a float32 model (or the reverse) otherwise fails deep inside the first
    convolution. 16-bit models with 16-bit inputs are supported: the layer CAMs combine their
    maps in float32 and return them in the input's dtype. Only checked when ``forward_func`` is
    (or is a bound method of) an ``nn.Module`` whose floating parameters share one dtype; wrap
    a model that casts its own inputs in a plain function to skip the check.
    """
    model = _owner_module(forward_func)
    if model is None:
        return
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1:
        return
    (model_dtype,) = dtypes
    for index, tensor in enumerate(inputs):
        if isinstance(tensor, Tensor) and tensor.is_floating_point() and tensor.dtype != model_dtype:
            label = "inputs" if len(inputs) == 1 else f"inputs[{index}]"
            raise TypeError(
                f"{label} has dtype {tensor.dtype} but the model's parameters are {model_dtype}; "
                f"cast the input to the model's dtype (`x.to({model_dtype})`) or the model to "
                f"the input's (`model.to({tensor.dtype})`). float16 and bfloat16 are supported "
                "when the model and the input agree."
            )


_RANDOM_OR_COUPLED = (_BatchNorm, _DropoutNd)
#: ids of the models a guard is active on in this context (nested calls, e.g. SAG's I-GOS
#: ranking, neither warn twice nor snapshot twice).
_GUARDED: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "captum_ext_guarded", default=frozenset()
)


@contextmanager
def training_mode_guard(forward_func: Callable[..., Any], method: str) -> Iterator[None]:
    """Run an attribution on a model left in training mode without leaving a trace.

    The model is used in the mode the caller left it in (as Captum does), but a train-mode
    BatchNorm or Dropout makes the map depend on the rest of the batch or on chance, so a
    ``UserWarning`` says so; and the running statistics that train-mode normalisation layers
    update during the attribution's forward passes are restored afterwards.
    """
    model = _owner_module(forward_func)
    if model is None or id(model) in _GUARDED.get():
        yield
        return
    token = _GUARDED.set(_GUARDED.get() | {id(model)})
    active = [
        m for m in model.modules() if m.training and isinstance(m, _RANDOM_OR_COUPLED + (_NormBase,))
    ]
    kinds = sorted({
        "BatchNorm" if isinstance(m, _BatchNorm) else "Dropout"
        for m in active if isinstance(m, _RANDOM_OR_COUPLED)
    })
    if kinds:
        effects = []
        if "BatchNorm" in kinds:
            effects.append("a BatchNorm layer is in training mode: the samples of a batch "
                           "interact, so the maps are not per-sample")
        if "Dropout" in kinds:
            effects.append("a Dropout layer is in training mode: the maps are random")
        warnings.warn(
            f"{method}: " + "; ".join(effects) + ". The model is used as it is (its running "
            "statistics are restored afterwards); call model.eval() first for deterministic, "
            "per-sample maps.",
            UserWarning,
            stacklevel=5,
        )
    saved = [
        (buffer, buffer.detach().clone())
        for m in active if isinstance(m, _NormBase)
        for buffer in m.buffers(recurse=False)
    ]
    try:
        yield
    finally:
        _GUARDED.reset(token)
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def leaves_no_trace(method: F) -> F:
    """Decorate an ``Attribution`` method: run it under :func:`training_mode_guard`."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with training_mode_guard(self.forward_func, type(self).__name__):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex():
            raise TypeError(f"{what} must be an integer, got tensor {value!r}.")
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {value!r}.")
    if value < 0:
        raise ValueError(
            f"{what} is {value}; negative class indices are refused because they are almost "
            "always a mistake. Use the non-negative index of the class."
        )
    return value


def validate_target(target: Any, batch_size: int) -> None:
    """Check the structure of a Captum ``target`` before any forward pass.

    Accepted forms follow Captum's ``_select_targets``: ``None``, an int, a tuple of ints, a
    one-element tensor, or one entry per example as a list of ints, a list of tuples or a 1-D
    integer tensor of length ``N``. Ranges are checked against the model output later
    (:func:`check_target_against_output`).
    """
    if target is None:
        return
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f"target tensor must hold integers, got dtype {target.dtype}.")
        if target.numel() == 1:
            _as_int(target, "target")
            return
        if target.dim() != 1:
            raise ValueError(
                f"a tensor target must be 1-D with one class per example, got shape "
                f"{tuple(target.shape)}."
            )
        if target.numel() != batch_size:
            raise ValueError(
                f"target has {target.numel()} entries but the batch has {batch_size} examples; "
                "give exactly one target per example (or a single int for all of them). "
                "Targets are never truncated or broadcast."
            )
        if bool((target < 0).any()):
            raise ValueError(f"target contains negative class indices: {target.tolist()}.")
        return
    if isinstance(target, tuple):
        for index, entry in enumerate(target):
            _as_int(entry, f"target[{index}]")
        return
    if isinstance(target, list):
        if len(target) != batch_size:
            raise ValueError(
                f"target has {len(target)} entries but the batch has {batch_size} examples; "
                "give exactly one target per example (or a single int for all of them). "
                "Targets are never truncated or broadcast."
            )
        for index, entry in enumerate(target):
            if isinstance(entry, tuple):
                for sub_index, sub_entry in enumerate(entry):
                    _as_int(sub_entry, f"target[{index}][{sub_index}]")
            else:
                _as_int(entry, f"target[{index}]")
        return
    _as_int(target, "target")


def _target_rows(target: Any, batch_size: int) -> list[tuple[int, ...]]:
    """One index tuple per example (after :func:`validate_target`)."""
    if isinstance(target, Tensor):
        if target.numel() == 1:
            return [(int(target.item()),)] * batch_size
        return [(int(value),) for value in target.tolist()]
    if isinstance(target, tuple):
        return [tuple(int(v) for v in target)] * batch_size
    if isinstance(target, list):
        return [tuple(int(v) for v in e) if isinstance(e, tuple) else (int(e),) for e in target]
    return [(int(target),)] * batch_size


def check_target_against_output(output: Tensor, target: Any) -> None:
    """Check that ``target`` selects exactly one in-range scalar per example of ``output``."""
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model returned {type(output).__name__}; attribution needs a tensor of shape "
            "(N,) or (N, C, ...). Wrap the model in a function that returns one."
        )
    if output.dim() == 0:
        raise ValueError(
            "the model returned a scalar; it must return one value (or one row) per example."
        )
    batch_size = int(output.shape[0])
    if target is None:
        if output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1):
            return
        raise ValueError(
            f"target=None but the model output has shape {tuple(output.shape)}; pass the class "
            "index to explain, e.g. target=output.argmax(1)."
        )
    for row in _target_rows(target, batch_size):
        if len(row) != output.dim() - 1:
            raise ValueError(
                f"target {row if len(row) > 1 else row[0]} indexes {len(row)} output dimension(s), "
                f"but the model output has shape {tuple(output.shape)}: the target must select "
                "exactly one value per example."
            )
        for axis, index in enumerate(row, start=1):
            if index >= output.shape[axis]:
                raise ValueError(
                    f"target {index} is out of range: the model output has "
                    f"{output.shape[axis]} entries along dimension {axis} "
                    f"(shape {tuple(output.shape)}), so valid targets are 0..{output.shape[axis] - 1}."
                )


def _owner_module(forward_func: Callable[..., Any]) -> nn.Module | None:
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def validate_layers_in_model(forward_func: Callable[..., Any], layers: Sequence[nn.Module]) -> None:
    """Raise if a layer is not a submodule of ``forward_func`` (when that can be known)."""
    for layer in layers:
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"layer must be a torch.nn.Module, got {type(layer).__name__}; use "
                "captum_ext.resolve_layer(model, 'name') to look a layer up by name."
            )
    model = _owner_module(forward_func)
    if model is None:
        return  # a plain function: the forward pass will tell whether the layer ran.
    known = {id(module) for module in model.modules()}
    for layer in layers:
        if id(layer) not in known:
            raise ValueError(
                f"the layer {layer.__class__.__name__} is not a submodule of the model "
                f"{model.__class__.__name__}. Pass a module of this model, e.g. model.features[-1]."
            )


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` (dotted, as in ``model.named_modules()``).

    An unknown name raises ``ValueError`` that lists the closest names.
    """
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"the model has no layer named {name!r}.{hint}")


class GuardedForward:
    """Wraps ``forward_func`` to check each forward pass it runs.

    During every call it counts how often each watched layer runs (a layer that runs twice,
    such as a shared activation module, makes the hooked activation ambiguous), and checks the
    model output against ``target`` so that an out-of-range target fails with a clear message
    instead of an index error deep inside Captum.
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layers: Sequence[nn.Module] = (),
        target: Any = None,
        *,
        check_target: bool = True,
        attribute_to_layer_input: bool = False,
    ) -> None:
        self.forward_func = forward_func
        self.layers = list(layers)
        self.target = target
        self.check_target = check_target
        self.attribute_to_layer_input = attribute_to_layer_input
        self._calls = [0] * len(self.layers)
        self._multi_device = isinstance(forward_func, nn.DataParallel)

    @contextmanager
    def _counting(self) -> Iterator[None]:
        handles = []
        for index, layer in enumerate(self.layers):

            def count(*_: Any, _index: int = index) -> None:
                self._calls[_index] += 1

            if self.attribute_to_layer_input:
                handles.append(layer.register_forward_pre_hook(count))
            else:
                handles.append(layer.register_forward_hook(count))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._calls = [0] * len(self.layers)
        with self._counting():
            output = self.forward_func(*args, **kwargs)
        for layer, calls in zip(self.layers, self._calls):
            name = layer.__class__.__name__
            if calls == 0:
                raise ValueError(
                    f"the layer {name} did not run in the forward pass, so it has no "
                    "activation to explain. Pick a layer on the path from the input to the output."
                )
            if calls > 1 and not self._multi_device:
                raise ValueError(
                    f"the layer {name} ran {calls} times in one forward pass (the same module is "
                    "reused, e.g. one activation module called after several blocks), so its "
                    "activation is ambiguous. Choose a layer that runs once, such as the module "
                    "just before it."
                )
        if self.check_target:
            check_target_against_output(output, self.target)
        return output

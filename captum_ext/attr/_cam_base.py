"""The one base class for layer CAMs.

A layer CAM is ``map = Σ_k W_k ⊙ A_k`` (summed over channels ``k``), where ``A`` is the layer's
activation of shape ``(N, K, *S)`` and ``W`` comes from a per-method weights function: either
per-channel weights ``(N, K)`` (Grad-CAM++, XGrad-CAM) or pixel-wise weights shaped like ``A``
(HiResCAM, Layer-CAM). The base class owns everything else once:

* the layer hooks, through Captum's ``compute_layer_gradients_and_eval`` and
  ``_forward_layer_eval`` (reached through :mod:`captum_ext._captum`), which remove their hooks
  in ``finally``;
* validation of inputs, targets and layers (:mod:`captum_ext._validation`), including a layer
  that did not run or ran twice in one forward pass;
* ``target``, ``additional_forward_args`` and ``attribute_to_layer_input``, as in Captum;
* token layers ``(N, T, C)`` through a ``reshape_transform`` (see :mod:`captum_ext.attr.reshape`);
* rank-agnostic reductions (1D, 2D and 3D maps, and rank-2 ``(N, K)`` layers);
* ``relu_attributions``, detaching, and differentiable maps with
  ``grad_kwargs={"create_graph": True}``.

Subclasses implement :meth:`LayerCamBase._weights` (and, for gradient-free or sampling
methods, :meth:`LayerCamBase._layer_statistics`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union, cast

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._captum import (
    TargetType,
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _forward_layer_eval,
    compute_layer_gradients_and_eval,
)
from captum_ext._graph import GraphFromFirstLayer
from captum_ext._tensor_ops import broadcast_channel_weights
from captum_ext._validation import (
    GuardedForward,
    leaves_no_trace,
    validate_inputs,
    validate_layers_in_model,
    validate_target,
)

__all__ = ["LayerCamBase"]

ReshapeTransform = Callable[[Tensor], Tensor]
LayerStatistics = tuple[tuple[Tensor, ...], tuple[Any, ...]]


class LayerCamBase(LayerAttribution, GradientAttribution):
    """Template for layer CAMs: ``map = Σ_k W_k ⊙ A_k`` with ``W`` from :meth:`_weights`.

    Args:
        forward_func: the model, or any function of ``(*inputs, *additional_forward_args)``
            returning ``(N,)`` or ``(N, C, ...)`` scores. Use logits, not probabilities.
        layer: the module whose output (or input) is explained. It must run exactly once per
            forward pass.
        device_ids: as in Captum, only for a plain function that wraps a DataParallel model.
        reshape_transform: maps the hooked tensor to ``(N, K, *S)``; applied identically to
            activations and gradients. Use :func:`captum_ext.attr.tokens_to_grid` for
            vision-transformer token layers ``(N, T, C)``.

    The output follows Captum's ``LayerGradCam``: one raw map per layer output tensor, shaped
    ``(N, 1, *S)`` (``(N, 1)`` for a rank-2 layer), a bare tensor when the layer has one output.

    Thread safety: calls on different models may run concurrently; concurrent calls on the
    same model are not supported (the temporary hooks fire for every forward pass of the model,
    whichever thread runs it). Use one model copy per thread.
    """

    #: whether the weights need the layer gradient (a backward pass).
    needs_gradients: bool = True

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module,
        device_ids: Union[None, list[int]] = None,
        *,
        reshape_transform: Optional[ReshapeTransform] = None,
    ) -> None:
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("reshape_transform must be a callable mapping (N, ...) to (N, K, *S).")
        self.reshape_transform = reshape_transform

    # ------------------------------------------------------------------ public API
    @log_usage(part_of_slo=False)
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        grad_kwargs: Optional[dict[str, Any]] = None,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        """Compute the CAM of ``target`` at the layer.

        Args:
            inputs: a tensor ``(N, ...)`` or a tuple of them, as in Captum.
            target: the output index to explain: an int, a tuple, or one entry per example.
            additional_forward_args: extra arguments appended to the forward call.
            attribute_to_layer_input: explain the layer's input instead of its output.
            relu_attributions: apply a ReLU to the map, as the papers do (Captum's default,
                False, returns the raw signed map).
            grad_kwargs: forwarded to ``torch.autograd.grad``; ``{"create_graph": True}``
                returns a differentiable map.

        Returns:
            The raw map at layer resolution, ``(N, 1, *S)``, or a tuple of maps for a layer
            with several outputs.
        """
        return self._attribute_cam(
            inputs,
            target,
            additional_forward_args,
            attribute_to_layer_input,
            relu_attributions,
            grad_kwargs,
        )

    @property
    def multiplies_by_inputs(self) -> bool:
        """CAMs are local attributions, not multiplied by ``input - baseline``."""
        return False

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not support attribute_future.")

    # ------------------------------------------------------------------ the template
    @leaves_no_trace
    def _attribute_cam(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        relu_attributions: bool,
        grad_kwargs: Optional[dict[str, Any]],
        **options: Any,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        inputs_tuple = cast(tuple[Tensor, ...], _format_tensor_into_tuples(inputs))
        batch_size = validate_inputs(inputs_tuple, forward_func=self.forward_func)
        validate_target(target, batch_size)
        validate_layers_in_model(self.forward_func, [cast(nn.Module, self.layer)])
        extra_args = _format_additional_forward_args(additional_forward_args)
        create_graph = bool(grad_kwargs and grad_kwargs.get("create_graph", False))

        activations, statistics = self._layer_statistics(
            inputs_tuple,
            target,
            extra_args,
            attribute_to_layer_input,
            grad_kwargs,
            **options,
        )
        with torch.set_grad_enabled(create_graph):
            maps = []
            for activation, stats in zip(activations, statistics):
                activation = self._to_grid(activation)
                dtype = activation.dtype
                if dtype in _HALF:  # 16-bit: weights such as Grad-CAM++'s G³ underflow
                    activation, stats = activation.float(), _to_float(stats)
                maps.append(self._combine(activation, stats, target=target, **options).to(dtype))
            if relu_attributions:
                maps = [F.relu(m) for m in maps]
        if not create_graph:
            maps = [m.detach() for m in maps]
        return _format_output(len(maps) > 1, tuple(maps))

    def _combine(self, activation: Tensor, stats: Any, **options: Any) -> Tensor:
        """``Σ_k W_k ⊙ A_k``, rank-agnostic; rank-2 layers are treated as one position."""
        rank_two = activation.dim() == 2
        if rank_two:
            activation = activation.unsqueeze(-1)
            stats = _map_tensors(lambda t: t.unsqueeze(-1), stats)
        weights = self._weights(activation, stats, **options)
        cam = (broadcast_channel_weights(weights, activation) * activation).sum(1, keepdim=True)
        return cam.squeeze(-1) if rank_two else cam

    def _weights(self, activation: Tensor, stats: Any, **options: Any) -> Tensor:
        """Per-channel ``(N, K)`` or pixel-wise ``(N, K, *S)`` weights. ``stats`` is the layer
        gradient for gradient CAMs (see :meth:`_layer_statistics`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ layer passes
    def _guarded_forward(self, target: TargetType, attribute_to_layer_input: bool) -> GuardedForward:
        return GuardedForward(
            self.forward_func,
            [cast(nn.Module, self.layer)],
            target,
            attribute_to_layer_input=attribute_to_layer_input,
        )

    def _device_ids(self) -> Optional[list[int]]:
        return self.device_ids or getattr(self.forward_func, "device_ids", None)

    def _layer_statistics(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_kwargs: Optional[dict[str, Any]],
        **options: Any,
    ) -> LayerStatistics:
        """Activations and the statistics :meth:`_weights` needs: here, the gradient of the
        target score with respect to the layer (one forward and one backward pass)."""
        if not self.needs_gradients:
            activations = self._layer_activations(
                inputs, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
            )
            return activations, (None,) * len(activations)
        gradients, activations = self._layer_gradients(
            inputs, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
        )
        return activations, tuple(self._to_grid(g) for g in gradients)

    def _layer_gradients(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_kwargs: Optional[dict[str, Any]],
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """``(gradients, activations)`` of the layer, each a tuple over the layer's outputs.

        Unless ``create_graph`` is asked for, autograd records only from the layer on (the
        gradient to the layer needs nothing upstream of it): this is why the gradient CAMs run
        below the cost of a forward pass with a full graph plus a backward pass to the layer.
        """
        forward: Callable[..., Any] = self._guarded_forward(target, attribute_to_layer_input)
        create_graph = bool(grad_kwargs and grad_kwargs.get("create_graph", False))
        if not create_graph and not isinstance(self.forward_func, nn.DataParallel):
            forward = GraphFromFirstLayer(forward, [cast(nn.Module, self.layer)])
        gradients, activations = compute_layer_gradients_and_eval(
            forward,
            cast(nn.Module, self.layer),
            inputs,
            target,
            additional_forward_args,
            device_ids=self._device_ids(),
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        return tuple(gradients), tuple(activations)

    def _layer_activations(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_kwargs: Optional[dict[str, Any]],
    ) -> tuple[Tensor, ...]:
        """The layer's activations from one forward pass (no backward)."""
        create_graph = bool(grad_kwargs and grad_kwargs.get("create_graph", False))
        activations = _forward_layer_eval(
            self._guarded_forward(target, attribute_to_layer_input),
            inputs,
            cast(nn.Module, self.layer),
            additional_forward_args,
            device_ids=self._device_ids(),
            attribute_to_layer_input=attribute_to_layer_input,
            grad_enabled=create_graph,
        )
        return tuple(activations)

    def _to_grid(self, tensor: Tensor) -> Tensor:
        """Apply the user's ``reshape_transform`` (token layers) and check the result's rank."""
        if self.reshape_transform is not None:
            tensor = self.reshape_transform(tensor)
        if tensor.dim() > 5:
            raise ValueError(
                f"the layer tensor has shape {tuple(tensor.shape)}; CAMs support (N, K), "
                "(N, K, L), (N, K, H, W) and (N, K, D, H, W). Pass a reshape_transform."
            )
        return tensor


_HALF = (torch.float16, torch.bfloat16)


def _to_float(stats: Any) -> Any:
    """16-bit tensors (in a tensor or nested tuple/list) to float32; anything else unchanged."""
    if isinstance(stats, Tensor):
        return stats.float() if stats.dtype in _HALF else stats
    if isinstance(stats, (tuple, list)):
        return type(stats)(_to_float(s) for s in stats)
    return stats


def _map_tensors(fn: Callable[[Tensor], Tensor], stats: Any) -> Any:
    """Apply ``fn`` to a tensor or to every tensor of a tuple (``None`` passes through)."""
    if stats is None:
        return None
    if isinstance(stats, Tensor):
        return fn(stats)
    return tuple(_map_tensors(fn, s) for s in stats)

"""NormGrad and the unified two-phase saliency framework at one or several layers.

Rebuffi, Fong, Ji and Vedaldi, "There and Back Again: Revisiting Backpropagation Saliency
Methods", CVPR 2020 (arXiv 2004.02866); spec ``../shared/reference/normgrad.md``. The maths is
in :mod:`captum_ext.attr._normgrad_ops`; combination in
:mod:`captum_ext.attr.saliency_combination`; meta-saliency in :mod:`captum_ext.attr.meta_saliency`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence, Union, cast

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._captum import (
    TargetType,
    _format_additional_forward_args,
    _format_output,
    _format_outputs,
    _format_tensor_into_tuples,
    compute_layer_gradients_and_eval,
)
from captum_ext._graph import GraphFromFirstLayer
from captum_ext._validation import (
    GuardedForward,
    leaves_no_trace,
    validate_inputs,
    validate_layers_in_model,
    validate_target,
)
from captum_ext.attr._normgrad_ops import (
    SaliencyChoice,
    WindowGeometry,
    resolve_choice,
    saliency_map,
)
from captum_ext.attr.meta_saliency import MetaSaliency
from captum_ext.attr.saliency_combination import (
    WeightsType,
    check_combine_options,
    combine_saliency_maps,
)

__all__ = ["LayerNormGrad"]

LayerOrLayers = Union[nn.Module, list[nn.Module]]
ReshapeTransform = Callable[[Tensor], Tensor]
LayerMaps = Union[Tensor, tuple[Tensor, ...]]


class LayerNormGrad(LayerAttribution, GradientAttribution):
    r"""NormGrad (Rebuffi et al., CVPR 2020) and its two-phase framework, at one or many layers.

    For the layer tensor ``A`` ``(N, K, *S)`` and ``G = ∂y^c/∂A`` (``y^c`` the target logit),
    plain NormGrad is the Frobenius norm of the weight gradient of a virtual identity 1×1 conv,

    .. math:: s_u = \lVert G_u A_u^\top \rVert_F = \lVert A_u \rVert_2 \, \lVert G_u \rVert_2

    (channel norms at each position ``u``). ``variant`` picks a named point of the framework:

    * ``"normgrad"`` (conv1x1, norm); ``"selective"`` (scaling, filter_norm):
      :math:`\sqrt{\sum_k \max(0, A^k_u G^k_u)^2}`; ``"linear"`` (scaling, sum):
      :math:`\sum_k A^k_u G^k_u` (HiResCAM, Captum's ``LayerGradientXActivation`` summed over
      channels); ``"gradient_norm"`` (bias, norm): :math:`\lVert G_u \rVert`;
    * ``"conv3x3"`` (patch, norm): :math:`\lVert G_u\rVert \lVert P_u\rVert` with ``P_u`` the
      zero-padded ``kernel_size`` patch, computed as a box filter of :math:`\sum_k A_k^2`;
    * ``"proper"``: the layer's own conv (or Linear) weight gradient,
      :math:`\sqrt{\sum_g \lVert G^{out}_{g,u}\rVert^2 \lVert P_{g,u}\rVert^2}` with the conv's
      kernel, stride, padding (mode), dilation and groups; ``A`` is the layer *input*, captured
      by a hook of ours in the same forward pass, and the map is on the conv's output grid;
    * ``"grad_cam"`` (scaling, sum, pooled gradient): Grad-CAM, ``Σ_k mean_u(G^k) A^k_u``,
      equal to Captum's ``LayerGradCam``.

    Any other pair is available as ``phase1 ∈ {conv1x1, scaling, bias, patch, proper}`` and
    ``phase2 ∈ {norm, sum, max, filter_norm}``, with ``gradient_pooling="mean"`` to pool the
    gradient first. Every pair is a closed form; no K×K or K·k² tensor is built.

    Args:
        forward_func: the model (logits), or a function of ``(*inputs, *additional_forward_args)``.
        layer: one module, or a list of modules. A list is served by one forward and one backward
            pass (Captum's ``compute_layer_gradients_and_eval`` with a list of layers).
        device_ids: as in Captum, for a function wrapping a DataParallel model.
        reshape_transform: maps token layers ``(N, T, C)`` to ``(N, C, *grid)``; applied to ``A``
            and ``G`` (not with ``"proper"``).

    Returns (from :meth:`attribute`): for one layer, the raw map ``(N, 1, *S)`` at layer
    resolution (``(N, 1)`` for a rank-2 ``(N, K)`` layer, which has a single position), a tuple
    for a layer with several outputs; for a list of layers, a list with one such entry per layer
    (Captum's list convention); with ``combine=``, one combined map ``(N, 1, *S_in)`` at input
    resolution. ``multiplies_by_inputs`` is False.

    Defaults: ``variant="normgrad"`` and the 3×3 patch of the paper; ``combine="product"``
    follows the paper's standalone code, ``"sum"``/``"geometric"`` with ``"uniform"``/
    ``"linear"`` weights follow TorchRay's ``weighted_saliency``; ``eps=1e-6`` and the neutral
    constant maps are plugin choices; ``meta_lr=1e-4`` is TorchRay's. The gradient is of the
    target *logit* (``G = +∂y^c/∂A``), so ``sum``/``max`` maps have the natural sign.

    Cost: one forward and one backward pass for any number of layers. Without ``create_graph``
    the autograd graph is recorded only from the first hooked layer on, which frees the
    activations upstream of it. In train-mode BatchNorm the samples of a batch interact: a
    warning says so. In-place ops on hooked outputs can break Captum's hooks: see
    :func:`captum_ext.attr.disable_inplace`.
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: LayerOrLayers,
        device_ids: Union[None, list[int]] = None,
        *,
        reshape_transform: Optional[ReshapeTransform] = None,
    ) -> None:
        if isinstance(layer, (list, tuple)):
            if len(layer) == 0:
                raise ValueError("layer is an empty list; pass at least one module.")
            if len({id(m) for m in layer}) != len(layer):
                raise ValueError("the list of layers contains the same module twice.")
            layer = list(layer)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("reshape_transform must be a callable mapping (N, ...) to (N, K, *S).")
        self.reshape_transform = reshape_transform

    @property
    def layers(self) -> list[nn.Module]:
        """The explained layers as a list (one entry for a single layer)."""
        return list(self.layer) if isinstance(self.layer, list) else [cast(nn.Module, self.layer)]

    @log_usage(part_of_slo=False)
    @leaves_no_trace
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        grad_kwargs: Optional[dict[str, Any]] = None,
        *,
        variant: Optional[str] = None,
        phase1: Optional[str] = None,
        phase2: Optional[str] = None,
        gradient_pooling: Optional[str] = None,
        kernel_size: Union[int, Sequence[int]] = 3,
        combine: Optional[str] = None,
        weights: WeightsType = "uniform",
        eps: float = 1e-6,
        meta_saliency: bool = False,
        meta_lr: float = 1e-4,
    ) -> Union[LayerMaps, list[LayerMaps]]:
        """Saliency of ``target`` at the layer(s).

        Args:
            inputs, target, additional_forward_args, attribute_to_layer_input: as in Captum
                (``attribute_to_layer_input`` is shared by all layers of a list).
            relu_attributions: apply a ReLU to each raw map (useful for signed aggregators).
            grad_kwargs: forwarded to ``torch.autograd.grad``; ``{"create_graph": True}`` keeps
                the maps differentiable (they are detached otherwise).
            variant: ``"normgrad"`` (default), ``"selective"``, ``"linear"``,
                ``"gradient_norm"``, ``"conv3x3"``, ``"proper"`` or ``"grad_cam"``.
            phase1, phase2, gradient_pooling: an explicit point of the framework instead of
                ``variant`` (``gradient_pooling`` may also override a variant's).
            kernel_size: the patch size of ``phase1="patch"`` (odd; default 3).
            combine: ``None`` (per-layer maps), or ``"product"``, ``"sum"``, ``"geometric"``:
                one map at input resolution (:func:`combine_saliency_maps`).
            weights: ``"uniform"``, ``"linear"`` or one weight per layer, for ``combine``.
            eps: added to normalised maps in product and geometric combination.
            meta_saliency: compute the maps after one virtual SGD step on the cross-entropy of
                the target, per sample (:class:`~captum_ext.attr.MetaSaliency`); the model is
                left bit-identical. ``meta_lr`` is the step size (TorchRay's default 1e-4).
        """
        if meta_saliency:
            wrapper = MetaSaliency(self, lr=meta_lr)
            return wrapper.attribute.__wrapped__(  # type: ignore[attr-defined]
                wrapper, inputs, target=target, additional_forward_args=additional_forward_args,
                attribute_to_layer_input=attribute_to_layer_input,
                relu_attributions=relu_attributions, grad_kwargs=grad_kwargs, variant=variant,
                phase1=phase1, phase2=phase2, gradient_pooling=gradient_pooling,
                kernel_size=kernel_size, combine=combine, weights=weights, eps=eps,
            )
        inputs_tuple = cast(tuple[Tensor, ...], _format_tensor_into_tuples(inputs))
        batch_size = validate_inputs(inputs_tuple, forward_func=self.forward_func)
        # Captum's input hooks set requires_grad on a hooked tensor: give them aliases, so that
        # the caller's tensors keep their flags.
        inputs_tuple = tuple(t if t.requires_grad else t.detach() for t in inputs_tuple)
        validate_target(target, batch_size)
        layers = self.layers
        validate_layers_in_model(self.forward_func, layers)
        choice = resolve_choice(variant, phase1, phase2, gradient_pooling)
        self._check_choice(choice, attribute_to_layer_input)
        if combine is not None:  # fail before the passes, not after them
            check_combine_options(combine, weights, len(layers))
        create_graph = bool(grad_kwargs and grad_kwargs.get("create_graph", False))
        forward: Callable[..., Any] = GuardedForward(
            self.forward_func, layers, target, attribute_to_layer_input=attribute_to_layer_input
        )
        if not create_graph and not self._data_parallel():
            forward = GraphFromFirstLayer(forward, layers)
        proper = choice.phase1 == "proper"
        with _captured_layer_inputs(layers if proper else [], create_graph) as layer_inputs:
            gradients, activations = compute_layer_gradients_and_eval(
                forward,
                layers,
                inputs_tuple,
                target,
                _format_additional_forward_args(additional_forward_args),
                device_ids=self.device_ids or getattr(self.forward_func, "device_ids", None),
                attribute_to_layer_input=attribute_to_layer_input,
                grad_kwargs=grad_kwargs,
            )
        with torch.set_grad_enabled(create_graph):
            per_layer: list[tuple[Tensor, ...]] = []
            for layer, layer_grads, layer_acts in zip(layers, gradients, activations):
                maps = []
                for gradient, activation in zip(layer_grads, layer_acts):
                    if proper:
                        activation = layer_inputs[layer]
                    maps.append(self._map(layer, activation, gradient, choice, kernel_size))
                if relu_attributions:
                    maps = [F.relu(m) for m in maps]
                per_layer.append(tuple(maps if create_graph else [m.detach() for m in maps]))
            if combine is not None:
                return self._combine(per_layer, inputs_tuple[0], combine, weights, eps)
        if isinstance(self.layer, list):
            return _format_outputs(True, per_layer)
        return _format_output(len(per_layer[0]) > 1, per_layer[0])

    # ------------------------------------------------------------------ helpers
    def _check_choice(self, choice: SaliencyChoice, attribute_to_layer_input: bool) -> None:
        if choice.phase1 != "proper":
            return
        if attribute_to_layer_input:
            raise ValueError(
                "variant 'proper' already pairs the layer's input activation with its output "
                "gradient; attribute_to_layer_input=True is not meaningful with it."
            )
        if self.reshape_transform is not None:
            raise ValueError("variant 'proper' works on conv/linear layers, not token layers "
                             "with a reshape_transform.")
        if self._data_parallel():
            raise NotImplementedError("variant 'proper' does not support DataParallel models.")
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                continue
            WindowGeometry.of_conv(layer)  # raises TypeError for other modules

    def _data_parallel(self) -> bool:
        return bool(self.device_ids) or isinstance(self.forward_func, nn.DataParallel)

    def _map(
        self,
        layer: nn.Module,
        activation: Tensor,
        gradient: Tensor,
        choice: SaliencyChoice,
        kernel_size: Union[int, Sequence[int]],
    ) -> Tensor:
        geometry: Optional[WindowGeometry] = None
        if choice.phase1 == "proper":
            if isinstance(layer, nn.Linear):
                if activation.dim() != 2:
                    raise ValueError(
                        f"variant 'proper' on nn.Linear needs (N, K) inputs, got "
                        f"{tuple(activation.shape)}."
                    )
            else:
                geometry = WindowGeometry.of_conv(layer)
                if activation.dim() == len(geometry.kernel_size) + 1:
                    raise ValueError("variant 'proper' needs batched conv inputs (N, K, *S).")
            return saliency_map(activation, gradient, choice, geometry)
        activation, gradient = self._to_grid(activation), self._to_grid(gradient)
        if choice.phase1 == "patch":
            if activation.dim() < 3:
                raise ValueError(
                    f"phase1='patch' needs a spatial grid (N, K, *S); the layer tensor has shape "
                    f"{tuple(activation.shape)} (a rank-2 layer has a single position)."
                )
            geometry = WindowGeometry.centred(kernel_size, activation.dim() - 2)
        return saliency_map(activation, gradient, choice, geometry)

    def _to_grid(self, tensor: Tensor) -> Tensor:
        if self.reshape_transform is not None:
            tensor = self.reshape_transform(tensor)
        if tensor.dim() < 2 or tensor.dim() > 5:
            raise ValueError(
                f"the layer tensor has shape {tuple(tensor.shape)}; NormGrad supports (N, K), "
                "(N, K, L), (N, K, H, W) and (N, K, D, H, W). Pass a reshape_transform."
            )
        return tensor

    def _combine(
        self,
        per_layer: list[tuple[Tensor, ...]],
        first_input: Tensor,
        combine: str,
        weights: WeightsType,
        eps: float,
    ) -> Tensor:
        if any(len(maps) != 1 for maps in per_layer):
            raise ValueError("combine= needs layers with a single output tensor each.")
        maps = [maps[0] for maps in per_layer]
        size = tuple(first_input.shape[2:])
        if len(size) != maps[0].dim() - 2:
            raise ValueError(
                f"combine= upsamples to the input size, but the input {tuple(first_input.shape)} "
                f"and the maps {tuple(maps[0].shape)} have different spatial ranks. Get the "
                "per-layer maps (combine=None) and call combine_saliency_maps with a size."
            )
        return combine_saliency_maps(maps, size, combine, weights, eps)

    @property
    def multiplies_by_inputs(self) -> bool:
        """Saliency maps are local, not multiplied by ``input - baseline``."""
        return False

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not support attribute_future.")


@contextmanager
def _captured_layer_inputs(
    layers: Sequence[nn.Module], keep_graph: bool
) -> Iterator[dict[nn.Module, Tensor]]:
    """Save each layer's first input during the forward pass (NormGrad "proper"); the hooks are
    removed in ``finally``. The saved tensor is a detached copy unless ``keep_graph``."""
    captured: dict[nn.Module, Tensor] = {}
    handles = []

    def save(module: nn.Module, args: tuple[Any, ...], _output: Any) -> None:
        first = args[0]
        captured[module] = first.clone() if keep_graph else first.detach().clone()

    try:
        for layer in layers:
            handles.append(layer.register_forward_hook(save))
        yield captured
    finally:
        for handle in handles:
            handle.remove()

"""Ablation-CAM (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
Network via Gradient-free Localization", WACV 2020)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Optional, Union

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._captum import TargetType
from captum_ext._tensor_ops import broadcast_channel_weights
from captum_ext._validation import leaves_no_trace
from captum_ext.attr._channel_scoring import Chunk, LayerChannelScoringBase

__all__ = ["LayerAblationCam"]


class LayerAblationCam(LayerChannelScoringBase):
    r"""Ablation-CAM: each channel weighted by the relative drop of the target score when that
    channel of the layer is set to zero.

    .. math:: w_k = \frac{y^c − y^c_{(k)}}{y^c},\qquad L = \sum_k w_k A^k

    ``y^c`` is the target logit (``score="logit"``, the default; ``"softmax"`` scores the
    probability) and ``y^c_{(k)}`` the same score when the layer's output is replaced by the
    cached activation with channel ``k`` zeroed. The replacement is a forward hook on the layer
    that is registered for one chunk of ``batch_size`` rows and removed in ``finally``; the
    layers before it are recomputed, as in the paper and in Captum's ``LayerFeatureAblation``
    with one group per channel (which gives ``y^c − y^c_{(k)}``). Channels that are already all
    zero cannot change the score and get weight 0 without a pass. The passes run through the
    fused inference copy of the model (``fused_inference_chunks``, see
    :class:`~captum_ext.attr.LayerScoreCam`) when that copy calls the layer itself, so that
    the hook replaces its tensor as in the model; otherwise through the model.

    Dividing by ``y^c`` is the paper's normalisation: it flips the map when ``y^c < 0`` and
    blows up when ``y^c ≈ 0`` (``|y^c|`` is clamped to at least ``eps``, keeping its sign).
    ``normalize_by_score=False`` returns the raw drops. The paper applies a final ReLU
    (``relu_attributions=True``). Works for any layer tensor ``(N, K, *S)``, including rank 2
    and 1D/3D maps (pytorch-grad-cam's Ablation-CAM is 2D only).
    ``multiplies_by_inputs`` is False.
    """

    @log_usage(part_of_slo=False)
    @leaves_no_trace
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        batch_size: int = 32,
        score: str = "logit",
        normalize_by_score: bool = True,
        eps: float = 1e-8,
        show_progress: bool = False,
    ) -> Tensor:
        """Compute the Ablation-CAM of ``target`` at the layer.

        Args:
            inputs: a tensor ``(N, ...)`` or a tuple of tensors.
            target: the output index to explain (an int, a tuple, or one per example).
            additional_forward_args: extra arguments of the forward call.
            attribute_to_layer_input: ablate the layer's (single) input instead of its output.
            relu_attributions: apply the paper's final ReLU.
            batch_size: ablated passes per forward call; bounds the memory.
            score: ``"logit"`` (default, the paper) or ``"softmax"``.
            normalize_by_score: divide the drops by ``y^c`` (the paper).
            eps: the smallest ``|y^c|`` divided by.
            show_progress: show a tqdm bar over the ablated passes.

        Returns:
            The raw map at layer resolution, ``(N, 1, *S)`` (``(N, 1)`` for a rank-2 layer).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}.")
        clean = self._clean_pass(
            inputs, None, target, additional_forward_args, attribute_to_layer_input, score
        )
        activation = clean.activation
        if activation.dim() < 2:
            raise ValueError(
                f"the layer tensor has shape {tuple(activation.shape)}; Ablation-CAM needs "
                "(N, K, ...) with channels on dimension 1."
            )
        alive = activation.reshape(activation.shape[0], activation.shape[1], -1).ne(0).any(2)
        pairs = alive.nonzero()  # (P, 2)
        layer = self.layer
        assert isinstance(layer, nn.Module)

        def ablated_chunk(start: int, stop: int) -> Chunk:
            pair = pairs[start:stop]
            examples, channels = pair[:, 0], pair[:, 1]
            replacement = activation[examples].clone()
            replacement[torch.arange(stop - start, device=replacement.device), channels] = 0
            rows = tuple(x[examples.to(x.device)] for x in clean.inputs)
            patch = _ReplaceLayerTensor(layer, replacement, attribute_to_layer_input)
            return Chunk(rows, examples, patch)

        clean_scores = self._clean_scores(clean, score)
        weights = activation.new_zeros(activation.shape[:2])
        if pairs.shape[0] > 0:
            ablated = self._score_chunks(
                clean, pairs.shape[0], ablated_chunk, batch_size, score, show_progress,
                fused=True, hooked_module=layer,
            )
            drops = clean_scores[pairs[:, 0]] - ablated
            weights[pairs[:, 0], pairs[:, 1]] = drops.to(weights.dtype)
        if normalize_by_score:
            magnitude = clean_scores.abs().clamp(min=eps)
            denominator = torch.where(clean_scores < 0, -magnitude, magnitude)
            weights = weights / denominator.to(weights.dtype).unsqueeze(1)
        cam = (broadcast_channel_weights(weights, activation) * activation).sum(1, keepdim=True)
        if relu_attributions:
            cam = cam.clamp(min=0)
        return cam.detach()


class _ReplaceLayerTensor:
    """While active, the layer's output (or first input) is replaced by ``replacement``.

    The hook checks the shape and that the layer ran exactly once; it is removed on exit,
    also when the forward pass raises.
    """

    def __init__(self, layer: nn.Module, replacement: Tensor, on_input: bool) -> None:
        self.layer = layer
        self.replacement = replacement
        self.on_input = on_input
        self.calls = 0
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = None

    def _check(self, tensor: Any) -> None:
        self.calls += 1
        if not isinstance(tensor, Tensor) or tensor.shape != self.replacement.shape:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(
                f"the layer produced {shape} during an ablated pass but the cached activation "
                f"is {tuple(self.replacement.shape)}; the model must process each example "
                "independently, with the batch on dimension 0."
            )

    def _replace_output(self, module: nn.Module, args: Any, output: Any) -> Tensor:
        self._check(output)
        return self.replacement.to(dtype=output.dtype, device=output.device)

    def _replace_input(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        self._check(args[0] if args else None)
        return (self.replacement.to(dtype=args[0].dtype, device=args[0].device),) + args[1:]

    def __enter__(self) -> "_ReplaceLayerTensor":
        if self.on_input:
            self._handle = self.layer.register_forward_pre_hook(self._replace_input)
        else:
            self._handle = self.layer.register_forward_hook(self._replace_output)
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if kind is None and self.calls != 1:
            raise ValueError(
                f"the layer ran {self.calls} times in an ablated pass; Ablation-CAM needs a layer "
                "that runs exactly once per forward pass."
            )
        return False

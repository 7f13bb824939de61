"""Score-CAM (Wang et al., CVPR-W 2020, arXiv 1910.01279); SS-CAM and IS-CAM are in
:mod:`captum_ext.attr.score_cam_variants`.

Every channel of the layer becomes a soft mask on the input; the channel's weight is the
model's score on the masked input. The chunked, hook-free scoring lives in
:mod:`captum_ext.attr._channel_scoring`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._captum import BaselineType, TargetType
from captum_ext._validation import leaves_no_trace
from captum_ext._tensor_ops import broadcast_channel_weights, upsample
from captum_ext.attr._channel_scoring import (
    Chunk,
    CleanPass,
    LayerChannelScoringBase,
    baseline_rows,
)

__all__ = ["LayerScoreCam"]

ReshapeTransform = Callable[[Tensor], Tensor]


class LayerScoreCam(LayerChannelScoringBase):
    r"""Score-CAM: channels weighted by the score of the input masked with each channel.

    For each example and channel ``k``, ``H^k = norm(up(A^k))`` is the channel upsampled to the
    input's spatial size (linear/bilinear/trilinear by rank) and min-max normalised to
    ``[0, 1]``; the masked input is ``x_b + (x − x_b) ⊙ H^k`` (``x ⊙ H^k`` for the default zero
    baseline), broadcast over input channels. Then

    .. math:: s_k = \mathrm{score}_c(x ⊙ H^k),\qquad L = \sum_k w_k A^k

    with ``A`` the original activation at layer resolution. Defaults reproduce the official
    code (haofanwang/Score-CAM): ``score="softmax"`` (the target's softmax probability),
    ``w = s``, no baseline, no channel softmax, constant channels skipped (weight 0); the paper
    applies a final ReLU (``relu_attributions=True``). Options:

    * ``score="logit"``: the raw target output instead of its probability;
    * ``baseline_subtraction=True``: ``s_k − score_c(x_b)`` (the paper's "increase of
      confidence"; ``x_b`` is the all-masked input, i.e. ``baselines``);
    * ``channel_softmax=True``: ``w = softmax_k(s)``. With ``score="logit"`` this is
      pytorch-grad-cam's Score-CAM; adding ``baseline_subtraction`` gives torchcam's (with
      a channel softmax the subtraction changes nothing);
    * ``skip_constant_channels=False``: a constant channel has the all-zero mask ``H = 0``, so
      its masked input is the baseline; all of them share that one scored pass (as
      pytorch-grad-cam's ``+1e-8`` normalisation implies, which scores them one by one).

    Cost: one hooked forward pass, then one forward pass per non-constant (example, channel)
    pair, ``batch_size`` masked inputs at a time under ``torch.no_grad()`` with **no hook
    active**; only one chunk of masks and masked inputs exists at a time, and the scores stay on
    the device. Tuple inputs: every input tensor with spatial dims is masked (upsampled to its
    own size); the others and ``additional_forward_args`` pass unmasked. CPU chunks of images
    and volumes run in channels-last memory format (``channels_last_chunks``), and through a
    fused inference copy of the model (``fused_inference_chunks``, both True by default): a
    ``torch.fx`` copy in which each convolution absorbs the symmetric zero padding before it
    and the eval-mode batch norm and ReLU/ReLU6/Hardtanh after it, checked against the model's
    output on the clean inputs before use; the model itself is not changed, and a model that
    cannot be traced, has hooks on fused modules, or disagrees runs as it is
    (:mod:`captum_ext._fused_inference`). On EfficientNet-Lite0 this halves the cost of a
    masked pass. ``multiplies_by_inputs`` is False.

    Args:
        forward_func: the model (it must return ``(N, C, ...)`` scores; logits for
            ``score="softmax"``).
        layer: a layer with output ``(N, K, *S)``; ``S`` must have the input's spatial rank.
        device_ids: as in Captum.
        reshape_transform: maps the layer tensor to ``(N, K, *S)`` (token layers).
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module,
        device_ids: Union[None, list[int]] = None,
        *,
        reshape_transform: Optional[ReshapeTransform] = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids)
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("reshape_transform must be a callable mapping (N, ...) to (N, K, *S).")
        self.reshape_transform = reshape_transform

    @log_usage(part_of_slo=False)
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        batch_size: int = 32,
        score: str = "softmax",
        channel_softmax: bool = False,
        baseline_subtraction: bool = False,
        skip_constant_channels: bool = True,
        interpolate_mode: Optional[str] = None,
        align_corners: bool = False,
        show_progress: bool = False,
    ) -> Tensor:
        """Compute the Score-CAM of ``target`` at the layer.

        Args:
            inputs: a tensor ``(N, C, *S_in)`` or a tuple of tensors.
            baselines: the "fully masked" input ``x_b`` (default 0: ``x ⊙ H``); a number or
                a tensor with batch 1 or ``N`` per input tensor.
            target: the output index to explain (an int, a tuple, or one per example).
            additional_forward_args: extra arguments of the forward call (rows selected per
                masked input).
            attribute_to_layer_input: use the layer's input instead of its output.
            relu_attributions: apply the paper's final ReLU.
            batch_size: masked inputs per forward pass; bounds the memory.
            score: ``"softmax"`` (official code) or ``"logit"``.
            channel_softmax: replace the scores by their softmax over channels.
            baseline_subtraction: subtract the baseline's score.
            skip_constant_channels: give constant channels weight 0 without a forward pass
                (official code); False scores them once, as the baseline.
            interpolate_mode: upsampling mode (default: linear/bilinear/trilinear by rank).
            align_corners: passed to the interpolation (never to ``nearest``); default False
                as the official code (pytorch-grad-cam uses True).
            show_progress: show a tqdm bar over the masked passes.

        Returns:
            The raw map at layer resolution, ``(N, 1, *S)``.
        """
        return self._attribute_scores(
            inputs,
            baselines,
            target,
            additional_forward_args,
            attribute_to_layer_input,
            relu_attributions,
            batch_size=batch_size,
            score=score,
            channel_softmax=channel_softmax,
            baseline_subtraction=baseline_subtraction,
            skip_constant_channels=skip_constant_channels,
            interpolate_mode=interpolate_mode,
            align_corners=align_corners,
            show_progress=show_progress,
        )

    # ------------------------------------------------------------------ subclass hooks
    def _repetitions(self, options: dict[str, Any]) -> int:
        """Scored passes per (example, channel) pair; their scores are averaged."""
        return 1

    def _perturbation_state(self, channel_count: int, options: dict[str, Any]) -> Any:
        """Anything :meth:`_perturb_masks` needs, prepared once per call."""
        return None

    def _perturb_masks(
        self,
        masks: Tensor,
        channels: Tensor,
        repetition: Tensor,
        state: Any,
        options: dict[str, Any],
    ) -> Tensor:
        """Change the normalised masks ``(B, 1, *S_in)`` of a chunk, given each row's channel
        and repetition. They must not depend on the example, so that a batch equals the
        stacked single examples."""
        return masks

    # ------------------------------------------------------------------ the algorithm
    @leaves_no_trace
    def _attribute_scores(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        baselines: BaselineType,
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        relu_attributions: bool,
        **options: Any,
    ) -> Tensor:
        batch_size = options["batch_size"]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        clean = self._clean_pass(
            inputs,
            baselines,
            target,
            additional_forward_args,
            attribute_to_layer_input,
            options["score"],
        )
        activation = self._grid(clean.activation)
        _check_spatial_inputs(clean.inputs, activation)
        flat = activation.flatten(2)
        nonconstant = flat.amax(2) > flat.amin(2)  # (N, K)
        pairs = nonconstant.nonzero()  # (P, 2): example-major, then channel
        repetitions = self._repetitions(options)
        item_count = pairs.shape[0] * repetitions
        state = self._perturbation_state(activation.shape[1], options)

        def masked_chunk(start: int, stop: int) -> Chunk:
            items = torch.arange(start, stop, device=pairs.device)
            pair = pairs[items // repetitions]
            examples, channels = pair[:, 0], pair[:, 1]
            maps = activation[examples, channels].unsqueeze(1)
            masked = _masked_inputs(
                clean,
                examples,
                lambda x: self._perturb_masks(
                    _normalised_masks(maps, x, options), channels, items % repetitions, state,
                    options,
                ),
            )
            return Chunk(masked, examples)

        weights = activation.new_zeros(activation.shape[:2])
        if item_count > 0:
            scores = self._score_chunks(
                clean, item_count, masked_chunk, batch_size, options["score"],
                options["show_progress"], fused=True,
            )
            pair_scores = scores.reshape(-1, repetitions).mean(1).to(weights.dtype)
            weights[pairs[:, 0], pairs[:, 1]] = pair_scores

        included = nonconstant
        constant_scored = not options["skip_constant_channels"] and not bool(nonconstant.all())
        if options["baseline_subtraction"] or constant_scored:
            baseline_scores = self._baseline_scores(clean, batch_size, options).to(weights.dtype)
            if constant_scored:
                weights = torch.where(nonconstant, weights, baseline_scores.unsqueeze(1))
                included = torch.ones_like(nonconstant)
            if options["baseline_subtraction"]:
                weights = weights - baseline_scores.unsqueeze(1)
        if options["channel_softmax"]:
            weights = torch.softmax(weights.masked_fill(~included, float("-inf")), dim=1)
            weights = torch.nan_to_num(weights, nan=0.0)  # an example with no channel left
        weights = torch.where(included, weights, torch.zeros_like(weights))
        cam = (broadcast_channel_weights(weights, activation) * activation).sum(1, keepdim=True)
        if relu_attributions:
            cam = cam.clamp(min=0)
        return cam.detach()

    def _baseline_scores(
        self, clean: CleanPass, batch_size: int, options: dict[str, Any]
    ) -> Tensor:
        """``(N,)`` scores of the baseline inputs (every spatial input fully masked)."""

        def baseline_chunk(start: int, stop: int) -> Chunk:
            examples = torch.arange(start, stop, device=clean.activation.device)
            masked = _masked_inputs(
                clean, examples, lambda x: x.new_zeros((stop - start, 1) + tuple(x.shape[2:]))
            )
            return Chunk(masked, examples)

        return self._score_chunks(
            clean, clean.batch_size, baseline_chunk, batch_size, options["score"], False
        )

    def _grid(self, activation: Tensor) -> Tensor:
        if self.reshape_transform is not None:
            activation = self.reshape_transform(activation)
        if activation.dim() < 3 or activation.dim() > 5:
            raise ValueError(
                f"{type(self).__name__} needs a layer tensor (N, K, L), (N, K, H, W) or "
                f"(N, K, D, H, W) to make masks; got shape {tuple(activation.shape)}. Pass a "
                "reshape_transform for token layers."
            )
        return activation


def _check_spatial_inputs(inputs: tuple[Tensor, ...], activation: Tensor) -> None:
    spatial = [x for x in inputs if x.dim() > 2]
    if not spatial:
        raise ValueError(
            "no input tensor has spatial dimensions (N, C, *S), so there is nothing to mask; "
            "Score-CAM needs image-, signal- or volume-shaped inputs."
        )
    for x in spatial:
        if x.dim() != activation.dim():
            raise ValueError(
                f"an input of shape {tuple(x.shape)} has {x.dim() - 2} spatial dims but the layer "
                f"map {tuple(activation.shape)} has {activation.dim() - 2}; the masks are the "
                "layer's channels upsampled to each input's spatial shape, so the ranks must match."
            )


def _normalised_masks(maps: Tensor, like: Tensor, options: dict[str, Any]) -> Tensor:
    """``(B, 1, *S)`` maps upsampled to ``like``'s spatial size, min-max normalised per row;
    a constant row becomes 0."""
    size = tuple(like.shape[2:])
    if tuple(maps.shape[2:]) != size:
        maps = upsample(maps, size, options["interpolate_mode"], options["align_corners"])
    flat = maps.flatten(1)
    low = flat.amin(1)
    span = flat.amax(1) - low
    shape = (-1,) + (1,) * (maps.dim() - 1)
    scale = torch.where(span > 0, 1.0 / torch.where(span > 0, span, 1.0), 0.0)
    return ((maps - low.reshape(shape)) * scale.reshape(shape)).to(like.dtype)


def _masked_inputs(
    clean: CleanPass, examples: Tensor, masks_for: Callable[[Tensor], Tensor]
) -> tuple[Tensor, ...]:
    """Inputs of the examples ``examples``: each spatial input blended with its baseline
    through ``masks_for(input)`` ``(B, 1, *S_in)``; the other inputs are passed unchanged."""
    masked = []
    for x, baseline in zip(clean.inputs, clean.baselines):
        rows = x[examples.to(x.device)]
        if x.dim() > 2:
            mask = masks_for(x).to(x.device)
            base = baseline_rows(baseline, examples.to(x.device))
            if isinstance(base, float) and base == 0.0:
                rows = rows * mask
            else:
                rows = base + (rows - base) * mask
        masked.append(rows)
    return tuple(masked)

"""Shared machinery of the perturbation CAMs (Score-CAM and its relatives, Ablation-CAM).

These methods weight each channel ``k`` of a layer activation ``A`` ``(N, K, *S)`` by the
model's score on a perturbed forward pass, one pass per (example, channel) pair. The work is:

1. one hooked forward pass for ``A`` and the clean output (Captum's ``_forward_layer_eval``,
   hooks removed in ``finally``, with the layer and target checks of ``GuardedForward``);
2. many perturbed passes, run here in chunks of ``batch_size`` rows under ``torch.no_grad()``.
   A chunk may mix examples; each row knows its example. Nothing of size ``N·K`` is ever
   materialised except the scores, which stay on the model's device (no ``.item()``).
   By default no hook is active during these passes (Score-CAM); a method that must patch the
   layer (Ablation-CAM) passes a context manager per chunk, which removes its hook on exit.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Optional, Union, cast

import torch
from captum.attr import LayerAttribution, PerturbationAttribution
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_ext._captum import (
    BaselineType,
    TargetType,
    _format_additional_forward_args,
    _format_tensor_into_tuples,
    _forward_layer_eval,
)
from captum_ext._fused_inference import validated_fused_copy
from captum_ext._tensor_ops import cpu_channels_last
from captum_ext._validation import (
    GuardedForward,
    _target_rows,
    validate_inputs,
    validate_layers_in_model,
    validate_target,
)

logger = logging.getLogger(__name__)

__all__ = ["Chunk", "CleanPass", "LayerChannelScoringBase", "SCORINGS"]

#: ``"softmax"``: the target's softmax probability (over dim 1); ``"logit"``: the raw output.
SCORINGS = ("softmax", "logit")


@dataclass
class CleanPass:
    """Everything the perturbed passes need, from one hooked forward pass."""

    inputs: tuple[Tensor, ...]
    additional_forward_args: Optional[tuple[Any, ...]]
    activation: Tensor  # (N, K, *S), detached
    output: Tensor  # the model output on the clean inputs, detached
    target_index: Tensor  # (N, d) int64: the output index of each example's target
    baselines: tuple[Union[Tensor, float], ...] = field(default=())

    @property
    def batch_size(self) -> int:
        return int(self.inputs[0].shape[0])


@dataclass
class Chunk:
    """One perturbed forward pass: its inputs, the example of each row, and an optional
    context (e.g. a layer hook) active during the pass only."""

    inputs: tuple[Tensor, ...]
    example_index: Tensor  # (B,) int64
    context: Optional[ContextManager[Any]] = None


class _RecordingForward:
    """Calls ``forward`` and keeps its last output (the clean output of the hooked pass)."""

    def __init__(self, forward: Callable[..., Any]) -> None:
        self.forward = forward
        self.output: Any = None

    def __call__(self, *args: Any) -> Any:
        self.output = self.forward(*args)
        return self.output


class LayerChannelScoringBase(LayerAttribution, PerturbationAttribution):
    """Base of the layer CAMs that score channels with perturbed forward passes.

    ``multiplies_by_inputs`` is False: the maps are local CAMs, not ``(x - x_b)``-scaled
    attributions (``PerturbationAttribution`` would say True).
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module,
        device_ids: Union[None, list[int]] = None,
    ) -> None:
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        PerturbationAttribution.__init__(self, forward_func)

    #: Run the perturbed CPU chunks of images and volumes in channels-last memory format
    #: (faster convolutions on CPU; values unchanged). A model whose forward fails on such
    #: inputs falls back to the input's format after the first chunk; set False to never try.
    channels_last_chunks: bool = True

    #: Run the perturbed passes through a ``torch.fx`` copy of the model in which each
    #: convolution absorbs the zero padding before it and the eval-mode batch norm and
    #: ReLU/ReLU6/Hardtanh after it (one oneDNN kernel on CPU; see
    #: :mod:`captum_ext._fused_inference`). The copy is checked against the model's output on
    #: the clean inputs first; a model that cannot be traced, has hooks on modules the copy
    #: fuses, or disagrees runs as it is, and so does Ablation-CAM when the copy does not call
    #: its layer (which it hooks) as it is. The model itself is never changed. Set False to
    #: always run the model, e.g. for a model whose ``forward`` has side effects outside its
    #: modules' attributes (the copy is made by tracing ``forward`` once on proxies).
    fused_inference_chunks: bool = True

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not support attribute_future.")

    # ------------------------------------------------------------------ the clean pass
    def _clean_pass(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        baselines: BaselineType,
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        scoring: str,
    ) -> CleanPass:
        """Validate everything, then run the one hooked forward pass."""
        if scoring not in SCORINGS:
            raise ValueError(f"score must be one of {SCORINGS}, got {scoring!r}.")
        inputs_tuple = cast(tuple[Tensor, ...], _format_tensor_into_tuples(inputs))
        batch_size = validate_inputs(inputs_tuple, forward_func=self.forward_func)
        validate_target(target, batch_size)
        if scoring == "softmax" and target is None:
            raise ValueError(
                "score='softmax' needs a class target: pass target=... (e.g. output.argmax(1)), "
                "or score='logit' for a model with one output per example."
            )
        layer = cast(nn.Module, self.layer)
        validate_layers_in_model(self.forward_func, [layer])
        extra_args = _format_additional_forward_args(additional_forward_args)
        _check_batch_args(extra_args, batch_size)
        formatted_baselines = _format_baselines(baselines, inputs_tuple)
        recorder = _RecordingForward(
            GuardedForward(
                self.forward_func,
                [layer],
                target,
                attribute_to_layer_input=attribute_to_layer_input,
            )
        )
        with torch.no_grad():
            activations = _forward_layer_eval(
                recorder,
                inputs_tuple,
                layer,
                extra_args,
                device_ids=self.device_ids or getattr(self.forward_func, "device_ids", None),
                attribute_to_layer_input=attribute_to_layer_input,
            )
        if len(activations) != 1:
            raise ValueError(
                f"the layer {'input' if attribute_to_layer_input else 'output'} is a tuple of "
                f"{len(activations)} tensors; {type(self).__name__} needs a layer with one tensor."
            )
        output = cast(Tensor, recorder.output).detach()
        rows = _target_rows(target, batch_size) if target is not None else [()] * batch_size
        target_index = torch.tensor(rows, dtype=torch.long, device=output.device).reshape(
            batch_size, len(rows[0])
        )
        return CleanPass(
            inputs=tuple(x.detach() for x in inputs_tuple),
            additional_forward_args=extra_args,
            activation=activations[0].detach(),
            output=output,
            target_index=target_index,
            baselines=formatted_baselines,
        )

    # ------------------------------------------------------------------ chunked scoring
    def _score_chunks(
        self,
        clean: CleanPass,
        item_count: int,
        build_chunk: Callable[[int, int], Chunk],
        batch_size: int,
        scoring: str,
        show_progress: bool,
        fused: bool = False,
        hooked_module: Optional[nn.Module] = None,
    ) -> Tensor:
        """Scores ``(item_count,)`` of the target for the perturbed passes, built by
        ``build_chunk(start, stop)`` and run ``batch_size`` rows at a time under no_grad.

        ``fused``: the passes may run through the fused inference copy of the model (when
        :attr:`fused_inference_chunks` is set). ``hooked_module``: the module that the chunks'
        contexts hook; the copy is then used only if it calls that module itself."""
        scores = clean.output.new_empty((item_count,))
        reformat = self.channels_last_chunks
        forward = self.forward_func
        if fused and self.fused_inference_chunks and item_count > 0:
            clean_inputs = cpu_channels_last(clean.inputs) if reformat else clean.inputs
            copy = validated_fused_copy(
                self.forward_func, clean_inputs, clean.additional_forward_args, clean.output,
                must_call=hooked_module,
            )
            if copy is not None:
                logger.debug("%s: perturbed passes run through the fused copy", self.get_name())
                forward = copy
        with torch.no_grad(), tqdm(
            total=item_count, disable=not show_progress, desc=self.get_name(), leave=False
        ) as bar:
            for start in range(0, item_count, batch_size):
                stop = min(start + batch_size, item_count)
                chunk = build_chunk(start, stop)
                extra = _select_rows(clean.additional_forward_args, chunk.example_index)
                inputs = cpu_channels_last(chunk.inputs) if reformat else chunk.inputs
                try:
                    with chunk.context if chunk.context is not None else nullcontext():
                        output = forward(*inputs, *(extra or ()))
                except RuntimeError:
                    if not reformat or start > 0 or inputs is chunk.inputs:
                        raise
                    # the model cannot take channels-last inputs (e.g. it calls .view on
                    # them): run every chunk in the input's own memory format
                    logger.debug("%s: channels-last chunks failed; using the input's memory "
                                 "format", self.get_name())
                    reformat = False
                    with chunk.context if chunk.context is not None else nullcontext():
                        output = forward(*chunk.inputs, *(extra or ()))
                rows = chunk.example_index.to(clean.target_index.device)
                scores[start:stop] = target_scores(output, clean.target_index[rows], scoring)
                bar.update(stop - start)
        return scores

    def _clean_scores(self, clean: CleanPass, scoring: str) -> Tensor:
        """``(N,)`` target scores of the clean output."""
        examples = torch.arange(clean.batch_size, device=clean.target_index.device)
        return target_scores(clean.output, clean.target_index[examples], scoring)


def target_scores(output: Any, target_index: Tensor, scoring: str) -> Tensor:
    """One score per row of ``output``: the target entry of the logits or of their softmax."""
    rows = target_index.shape[0]
    if not isinstance(output, Tensor) or output.dim() == 0 or output.shape[0] != rows:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"the model returned {shape} for a chunk of {rows} perturbed inputs; it must return "
            "one row per input example."
        )
    if scoring == "softmax":
        if output.dim() < 2:
            raise ValueError("score='softmax' needs outputs (N, C, ...) with a class dimension.")
        output = torch.softmax(output, dim=1)
    if target_index.shape[1] == 0:
        return output.reshape(rows)
    target_index = target_index.to(output.device)
    return output[(torch.arange(rows, device=output.device),) + tuple(target_index.unbind(1))]


def _check_batch_args(extra_args: Optional[tuple[Any, ...]], batch_size: int) -> None:
    for index, arg in enumerate(extra_args or ()):
        if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] != batch_size:
            raise ValueError(
                f"additional_forward_args[{index}] has shape {tuple(arg.shape)}; tensors in "
                f"additional_forward_args must have the batch ({batch_size}) as first dimension, "
                "because each perturbed pass selects the rows of its example (as Captum expands "
                "them). Pass other tensors through a closure instead."
            )


def _select_rows(args: Optional[tuple[Any, ...]], rows: Tensor) -> Optional[tuple[Any, ...]]:
    """Select the examples ``rows`` of every batched tensor in ``args``."""
    if args is None:
        return None
    return tuple(
        arg[rows.to(arg.device)] if isinstance(arg, Tensor) and arg.dim() > 0 else arg
        for arg in args
    )


def _format_baselines(
    baselines: BaselineType, inputs: tuple[Tensor, ...]
) -> tuple[Union[Tensor, float], ...]:
    """One baseline per input tensor: a float, or a tensor of the input's rank with batch 1
    or ``N`` (``None`` is 0, as in Captum)."""
    if baselines is None:
        return (0.0,) * len(inputs)
    values = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(values) != len(inputs):
        raise ValueError(f"got {len(values)} baselines for {len(inputs)} input tensors.")
    formatted: list[Union[Tensor, float]] = []
    for index, (value, x) in enumerate(zip(values, inputs)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            formatted.append(float(value))
            continue
        if not isinstance(value, Tensor):
            raise TypeError(f"baselines[{index}] must be a number or a tensor, got {value!r}.")
        if value.dim() != x.dim() or value.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"baselines[{index}] has shape {tuple(value.shape)}; it must have the input's "
                f"shape {tuple(x.shape)} with batch 1 or {x.shape[0]}."
            )
        try:
            torch.broadcast_shapes(value.shape[1:], x.shape[1:])
        except RuntimeError as error:
            raise ValueError(
                f"baselines[{index}] of shape {tuple(value.shape)} does not broadcast to the "
                f"input shape {tuple(x.shape)}."
            ) from error
        formatted.append(value.detach().to(device=x.device, dtype=x.dtype))
    return tuple(formatted)


def baseline_rows(baseline: Union[Tensor, float], rows: Tensor) -> Union[Tensor, float]:
    """The baseline of each example in ``rows`` (a float stays a float)."""
    if isinstance(baseline, Tensor):
        return baseline[rows] if baseline.shape[0] > 1 else baseline
    return baseline

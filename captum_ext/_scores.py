"""Class scores of many perturbed copies of a batch: one helper for methods and metrics.

Mask optimisation and the deletion/insertion metric both push many perturbed images through
the model, each belonging to one example of the original batch, and need one score per image:
``transform(model(image))[target of its example]``. :class:`ExampleScorer` does exactly that,
expands ``additional_forward_args`` to the perturbed batch, and counts the images it pushes
through the model (with and without a backward pass) so that costs can be reported.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from captum_ext._captum import TargetType, _format_additional_forward_args
from captum_ext._tensor_ops import cpu_channels_last
from captum_ext._validation import _target_rows, check_target_against_output, validate_target

__all__ = ["OutputKind", "ExampleScorer", "transform_output"]

logger = logging.getLogger(__name__)

OutputKind = Union[str, Callable[[Tensor], Tensor]]
_KINDS = ("softmax", "logit", "sigmoid")


def transform_output(output: Tensor, kind: OutputKind) -> Tensor:
    """Turn raw model outputs into the scores that are explained or measured.

    ``"softmax"`` (over dim 1), ``"logit"`` (unchanged), ``"sigmoid"`` (multi-label models) or a
    callable applied to the raw output.
    """
    if callable(kind):
        return kind(output)
    if kind == "softmax":
        if output.dim() < 2 or output.shape[1] < 2:
            raise ValueError(
                f"output='softmax' needs class scores of shape (N, C) with C >= 2, but the model "
                f"returned shape {tuple(output.shape)}; use output='logit' or 'sigmoid'."
            )
        return torch.softmax(output, dim=1)
    if kind == "logit":
        return output
    if kind == "sigmoid":
        return torch.sigmoid(output)
    raise ValueError(f"output must be one of {_KINDS} or a callable, got {kind!r}.")


def check_output_kind(kind: OutputKind) -> None:
    if not callable(kind) and kind not in _KINDS:
        raise ValueError(f"output must be one of {_KINDS} or a callable, got {kind!r}.")


class ExampleScorer:
    """Scores ``transform(forward_func(images, *args))[target]`` of images tagged by example.

    Args:
        forward_func: the model or function.
        inputs: the original batch (a tuple of tensors), used for the clean pass and for the
            default target.
        target: a Captum target, or ``None`` for the model's top-1 class on the clean inputs
            (or the single output of an ``(N,)`` model).
        additional_forward_args: as in Captum; tensors whose first dimension is the batch size
            are indexed with the example of each perturbed image, others are passed unchanged.
        output: see :func:`transform_output`.
        channels_last: pass CPU images and volumes to the model in channels-last memory format
            (:func:`~captum_ext._tensor_ops.cpu_channels_last`: the same values, 1.4-3x faster
            convolutions). A model that fails on such inputs (e.g. it calls ``.view`` on them)
            is retried in the images' own format, which is then used for every later pass.

    Attributes:
        forward_images: images pushed through the model so far (all passes).
        backward_images: of those, images whose pass was followed by a backward pass.
        clean_scores: ``(N,)`` scores of the unperturbed inputs.
        rows: one target index tuple per example (after resolving ``None``).
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        inputs: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        output: OutputKind = "softmax",
        channels_last: bool = True,
    ) -> None:
        check_output_kind(output)
        self.channels_last = channels_last
        self.forward_func = forward_func
        self.batch_size = int(inputs[0].shape[0])
        validate_target(target, self.batch_size)
        self.extra_args = _format_additional_forward_args(additional_forward_args)
        self.output = output
        self.forward_images = 0
        self.backward_images = 0
        with torch.no_grad():
            raw = self._forward(tuple(x.detach() for x in inputs), None)
        self.forward_images += self.batch_size
        if target is None and raw.dim() >= 2 and raw[0].numel() > 1:
            if raw.dim() != 2:
                raise ValueError(
                    f"target=None but the model output has shape {tuple(raw.shape)}; pass the "
                    "index to explain (one scalar per example)."
                )
            target = raw.argmax(1)
        check_target_against_output(raw, target)
        self.rows = _target_rows(target, self.batch_size) if target is not None else (
            [(0,)] * self.batch_size if raw.dim() == 2 else [()] * self.batch_size
        )
        self._columns = [
            torch.tensor([row[d] for row in self.rows], device=raw.device, dtype=torch.long)
            for d in range(len(self.rows[0]))
        ]
        self.target = target
        self.clean_scores = self._select(transform_output(raw, output), None).detach()

    def _forward(self, images: tuple[Tensor, ...], example_index: Optional[Tensor]) -> Tensor:
        args = self.extra_args
        if args is not None and example_index is not None:
            args = tuple(
                a[example_index.to(a.device)]
                if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == self.batch_size
                else a
                for a in args
            )
        formatted = cpu_channels_last(images) if self.channels_last else images
        if formatted is not images:
            try:
                return self._checked(self.forward_func(*formatted, *(args or ())))
            except RuntimeError as error:
                logger.debug("channels-last inputs failed (%s); using the inputs' own memory "
                             "format from now on", error)
                self.channels_last = False
        return self._checked(self.forward_func(*images, *(args or ())))

    @staticmethod
    def _checked(output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"the model returned {type(output).__name__}; a tensor of shape (N,) or (N, C, ...) "
                "is needed. Wrap the model in a function that returns one."
            )
        return output

    def _select(self, scores: Tensor, example_index: Optional[Tensor]) -> Tensor:
        if not self._columns:
            return scores.reshape(scores.shape[0])
        rows = torch.arange(scores.shape[0], device=scores.device)
        columns = [
            (c if example_index is None else c[example_index.to(c.device)]).to(scores.device)
            for c in self._columns
        ]
        return scores[(rows, *columns)]

    def __call__(self, images: Sequence[Tensor], example_index: Tensor) -> Tensor:
        """``(B,)`` scores of perturbed ``images`` (a tuple, batch ``B``) of examples
        ``example_index`` (``(B,)`` long). Differentiable when grad mode is on."""
        output = self._forward(tuple(images), example_index)
        count = int(example_index.numel())
        self.forward_images += count
        if torch.is_grad_enabled():
            self.backward_images += count
        return self._select(transform_output(output, self.output), example_index)

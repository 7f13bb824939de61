"""Shared plumbing of the mask-optimisation methods (I-GOS, iGOS++): validation, baselines,
frozen parameters, the optimiser's construction and the output format."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union, cast

import torch
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_ext._blur import igos_blur
from captum_ext._captum import (
    TargetType,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
)
from captum_ext._scores import ExampleScorer
from captum_ext._tensor_ops import upsample
from captum_ext._validation import leaves_no_trace, validate_inputs
from captum_ext.attr._mask_optim import (
    LineSearch,
    MaskOptimiser,
    OptimisationTrace,
    PathTerm,
    example_generators,
)
from captum_ext.attr._mask_regularisers import aaai_l1_schedule

__all__ = ["BaselineArg", "GeneratorArg", "Inputs", "MaskMethod"]

Inputs = Union[Tensor, tuple[Tensor, ...]]
BaselineArg = Union[None, Tensor, int, float, tuple[Any, ...], Callable[..., Any]]
GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator]]
#: profile → (line_search_init, line_search_loss, l1_schedule)
_PROFILES = {"igos_pp": (1000.0, "path", None), "aaai": (200.0, "plain", "aaai")}


class MaskMethod(GradientAttribution):
    """Shared plumbing: validation, baselines, frozen parameters, output formatting.

    Thread safety: the parameters' ``requires_grad`` is switched off during a call, so a model
    must not be used by another thread meanwhile (one model copy per thread)."""

    def __init__(self, forward_func: Callable[..., Any]) -> None:
        GradientAttribution.__init__(self, forward_func)
        #: the :class:`OptimisationTrace` of the last ``attribute`` call (costs, losses, masks).
        self.last_trace: Optional[OptimisationTrace] = None

    #: Push the path images of CPU images and volumes through the model in channels-last
    #: memory format (faster convolutions on CPU; values agree to float rounding). A model
    #: that fails on such inputs falls back to the input's format; set False to never try.
    channels_last_passes: bool = True

    @property
    def multiplies_by_inputs(self) -> bool:
        """A saliency ``1 - up(M)`` is not multiplied by ``input - baseline``: False."""
        return False

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not support attribute_future.")

    @leaves_no_trace
    def _run(self, inputs: Inputs, baselines: BaselineArg, target: TargetType,
             additional_forward_args: Any, options: dict[str, Any]) -> Any:
        is_tuple = _is_tuple(inputs)
        xs = cast(tuple[Tensor, ...], _format_tensor_into_tuples(inputs))
        batch = validate_inputs(xs, forward_func=self.forward_func)
        for index, x in enumerate(xs):
            if x.dtype in (torch.float16, torch.bfloat16):
                raise TypeError(
                    f"{type(self).__name__} refuses {x.dtype} inputs: its Armijo line search "
                    "compares losses closer together than 16-bit floats resolve, so the masks "
                    "change (saliency differences of 7% were measured). Run it in float32: "
                    "`model.float()` and `x.float()`."
                )
        for index, x in enumerate(xs):
            if not 3 <= x.dim() <= 5:
                raise ValueError(
                    f"inputs[{index}] has shape {tuple(x.shape)}; {type(self).__name__} needs "
                    "(N, C, L), (N, C, H, W) or (N, C, D, H, W) inputs (add a channel dim)."
                )
        options = _resolve_options(options)
        mask_shapes = [_mask_shape(options["mask_size"], x) for x in xs]
        generators = example_generators(options["generator"], batch)
        with torch.no_grad():
            xs = tuple(x.detach() for x in xs)
            bs = _format_baselines(baselines, xs, options["blur_kernel_size"], options["blur_sigma"])
        frozen = _freeze_parameters(self.forward_func)
        try:
            scorer = ExampleScorer(self.forward_func, xs, target, additional_forward_args,
                                   options["output"], channels_last=self.channels_last_passes)
            trace = self._optimise(scorer, xs, bs, mask_shapes, generators, options)
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
        self.last_trace = trace
        saliency = tuple(
            (1 - upsample(m, x.shape[2:], align_corners=True)).expand_as(x).contiguous()
            for m, x in zip(trace.masks, xs)
        )
        result = _format_output(is_tuple, saliency)
        if options["return_masks"]:
            return result, _format_output(is_tuple, trace.masks)
        return result

    def _optimiser(self, scorer: ExampleScorer, xs: tuple[Tensor, ...], bs: tuple[Tensor, ...],
                   terms: list[PathTerm], final_masks: Callable[[Sequence[Tensor]], list[Tensor]],
                   regulariser: Callable[..., Tensor], generators: list[Any],
                   options: dict[str, Any]) -> MaskOptimiser:
        schedule = None
        if options["l1_schedule"] == "aaai":
            schedule = aaai_l1_schedule(options["iterations"], scorer.clean_scores)
        return MaskOptimiser(
            scorer, xs, bs, terms, final_masks, regulariser,
            ig_steps=options["ig_steps"],
            noise_std=options["noise_std"],
            line_search=LineSearch(
                init=options["line_search_init"], armijo_c=options["armijo_c"],
                decay=options["decay"], min_step=options["min_step"],
                loss=options["line_search_loss"], batch=options["line_search_batch"],
                warm_start=options["warm_start"],
            ),
            early_stop_tol=options["early_stop_tol"],
            internal_batch_size=options["internal_batch_size"],
            generators=generators,
            l1_schedule=schedule,
            show_progress=options["show_progress"],
            description=self.get_name(),
        )

    def _optimise(self, scorer: ExampleScorer, xs: tuple[Tensor, ...], bs: tuple[Tensor, ...],
                  mask_shapes: list[tuple[int, ...]], generators: list[Any],
                  options: dict[str, Any]) -> OptimisationTrace:
        raise NotImplementedError


# ---------------------------------------------------------------------- helpers
def _resolve_options(options: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in options.items() if k not in ("self", "inputs", "baselines",
                                                              "target", "additional_forward_args")}
    profile = options["profile"]
    if profile not in _PROFILES:
        raise ValueError(f"profile must be one of {sorted(_PROFILES)}, got {profile!r}.")
    init, loss, schedule = _PROFILES[profile]
    if options["line_search_init"] is None:
        options["line_search_init"] = init
    if options["line_search_loss"] is None:
        options["line_search_loss"] = loss
    if options["l1_schedule"] is None:
        options["l1_schedule"] = schedule
    for name in ("iterations", "ig_steps", "line_search_batch"):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    for name in ("l1_weight", "tv_weight", "noise_std", "armijo_c"):
        if not float(options[name]) >= 0:
            raise ValueError(f"{name} must be >= 0, got {options[name]!r}.")
    for name in ("line_search_init", "min_step"):
        if not float(options[name]) > 0:
            raise ValueError(f"{name} must be > 0, got {options[name]!r}.")
    if not 0 < float(options["decay"]) < 1:
        raise ValueError(f"decay must be in (0, 1), got {options['decay']!r}.")
    if options["line_search_loss"] not in ("path", "plain"):
        raise ValueError(
            f"line_search_loss must be 'path' or 'plain', got {options['line_search_loss']!r}.")
    if options["l1_schedule"] not in (None, "aaai"):
        raise ValueError(f"l1_schedule must be None or 'aaai', got {options['l1_schedule']!r}.")
    tol = options["early_stop_tol"]
    if tol is not None and not float(tol) >= 0:
        raise ValueError(f"early_stop_tol must be >= 0 or None, got {tol!r}.")
    size = options["internal_batch_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"internal_batch_size must be a positive int or None, got {size!r}.")
    if "btv_sigma" in options and not float(options["btv_sigma"]) > 0:
        raise ValueError(f"btv_sigma must be > 0, got {options['btv_sigma']!r}.")
    return options


def _mask_shape(mask_size: Union[int, Sequence[int]], x: Tensor) -> tuple[int, ...]:
    spatial = tuple(x.shape[2:])
    sizes = (mask_size,) * len(spatial) if isinstance(mask_size, int) else tuple(mask_size)
    if len(sizes) != len(spatial) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise ValueError(
            f"mask_size must be a positive int or {len(spatial)} positive ints for inputs of "
            f"shape {tuple(x.shape)}, got {mask_size!r}."
        )
    return tuple(min(s, side) for s, side in zip(sizes, spatial))


def _format_baselines(baselines: BaselineArg, xs: tuple[Tensor, ...],
                      kernel_size: Optional[int], sigma: Optional[float]) -> tuple[Tensor, ...]:
    if baselines is None:
        return tuple(igos_blur(x, kernel_size, sigma) for x in xs)
    if callable(baselines) and not isinstance(baselines, Tensor):
        baselines = baselines(*xs)
    entries = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(entries) != len(xs):
        raise ValueError(f"baselines has {len(entries)} entries but there are {len(xs)} inputs.")
    formatted = []
    for index, (x, b) in enumerate(zip(xs, entries)):
        if b is None:
            formatted.append(igos_blur(x, kernel_size, sigma))
        elif isinstance(b, (int, float)) and not isinstance(b, bool):
            formatted.append(torch.full_like(x, float(b)))
        elif isinstance(b, Tensor):
            if b.dim() != x.dim() or b.shape[1:] != x.shape[1:] or b.shape[0] not in (1, x.shape[0]):
                raise ValueError(
                    f"baselines[{index}] has shape {tuple(b.shape)}; it must match the input "
                    f"{tuple(x.shape)} with a batch of 1 or {x.shape[0]}."
                )
            if not bool(torch.isfinite(b).all()):
                raise ValueError(f"baselines[{index}] contains NaN or Inf values.")
            formatted.append(b.detach().to(dtype=x.dtype, device=x.device).expand_as(x))
        else:
            raise TypeError(
                f"baselines[{index}] must be None, a number or a tensor, got {type(b).__name__}.")
    return tuple(formatted)


def _freeze_parameters(forward_func: Callable[..., Any]) -> list[nn.Parameter]:
    """Switch off ``requires_grad`` of the model's parameters; returns those to restore."""
    module = forward_func if isinstance(forward_func, nn.Module) else getattr(
        forward_func, "__self__", None)
    if not isinstance(module, nn.Module):
        return []
    frozen = [p for p in module.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return frozen

"""SS-CAM and IS-CAM: Score-CAM with each channel's score averaged over noisy or scaled masks.

Both reuse :class:`~captum_ext.attr.LayerScoreCam` and only change the masks of the repeated
passes (:meth:`LayerScoreCam._perturb_masks`).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from captum.log import log_usage
from torch import Tensor

from captum_ext._captum import BaselineType, TargetType
from captum_ext.attr.score_cam import LayerScoreCam

__all__ = ["LayerISCam", "LayerSSCam"]


class LayerSSCam(LayerScoreCam):
    r"""SS-CAM (Wang et al., "SS-CAM: Smoothed Score-CAM", arXiv 2006.14255).

    Score-CAM with each channel's score averaged over ``n_samples`` noisy masks:

    .. math:: s_k = \frac1n \sum_{i=1}^{n} \mathrm{score}_c\big(x ⊙ (H^k + δ_i)\big),
              \quad δ_i \sim N(0, σ^2)

    Noise is added to the normalised, upsampled mask (torchcam's reading; the spec marks the
    paper's choice unverified). Defaults ``n_samples=35``, ``stdev=2.0`` are torchcam's.
    Every (channel, sample) pair draws its noise from its own seed, taken from ``generator``,
    and every example uses the same seeds, so the result depends neither on ``batch_size`` nor
    on the other examples of the batch (a batch equals the stacked single examples).
    Cost: ``n·K`` passes.
    Constant channels are skipped, or (``skip_constant_channels=False``) scored as the
    noise-free baseline.
    """

    @log_usage(part_of_slo=False)
    def attribute(  # type: ignore[override]
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
        n_samples: int = 35,
        stdev: float = 2.0,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """As :meth:`LayerScoreCam.attribute`, plus ``n_samples`` noisy masks per channel
        with noise σ = ``stdev``, drawn reproducibly from ``generator``."""
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}.")
        if not float(stdev) >= 0:
            raise ValueError(f"stdev must be >= 0, got {stdev}.")
        return self._attribute_scores(
            inputs, baselines, target, additional_forward_args, attribute_to_layer_input,
            relu_attributions, batch_size=batch_size, score=score,
            channel_softmax=channel_softmax, baseline_subtraction=baseline_subtraction,
            skip_constant_channels=skip_constant_channels, interpolate_mode=interpolate_mode,
            align_corners=align_corners, show_progress=show_progress, n_samples=n_samples,
            stdev=float(stdev), generator=generator,
        )

    def _repetitions(self, options: dict[str, Any]) -> int:
        return int(options["n_samples"])

    def _perturbation_state(self, channel_count: int, options: dict[str, Any]) -> Any:
        generator = options["generator"]
        device = generator.device if generator is not None else torch.device("cpu")
        shape = (channel_count, options["n_samples"])
        return torch.randint(0, 2**62, shape, generator=generator, device=device).cpu()

    def _perturb_masks(
        self,
        masks: Tensor,
        channels: Tensor,
        repetition: Tensor,
        state: Any,
        options: dict[str, Any],
    ) -> Tensor:
        # drawn in float32 at least: a 16-bit run sees the float32 run's noise.
        noise = torch.empty_like(masks, dtype=torch.promote_types(masks.dtype, torch.float32))
        for row, seed in enumerate(state[channels.cpu(), repetition.cpu()].tolist()):
            item_generator = torch.Generator(device=masks.device).manual_seed(seed)
            noise[row].normal_(generator=item_generator)
        return masks + options["stdev"] * noise.to(masks.dtype)


class LayerISCam(LayerScoreCam):
    r"""IS-CAM (Naidu et al., "IS-CAM: Integrated Score-CAM", arXiv 2010.03023).

    Score-CAM with each channel's score averaged over ``n_steps`` scaled masks:

    .. math:: s_k = \frac1n \sum_{i=1}^{n} \mathrm{score}_c\big(x ⊙ \tfrac{i}{n} H^k\big)

    the formula of the spec (torchcam issue #154 questions whether the official code
    accumulates the masks instead). Default ``n_steps=10`` (torchcam's). Cost: ``n·K`` passes.
    """

    @log_usage(part_of_slo=False)
    def attribute(  # type: ignore[override]
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
        n_steps: int = 10,
    ) -> Tensor:
        """As :meth:`LayerScoreCam.attribute`, plus ``n_steps`` mask scales ``i / n``."""
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive int, got {n_steps!r}.")
        return self._attribute_scores(
            inputs, baselines, target, additional_forward_args, attribute_to_layer_input,
            relu_attributions, batch_size=batch_size, score=score,
            channel_softmax=channel_softmax, baseline_subtraction=baseline_subtraction,
            skip_constant_channels=skip_constant_channels, interpolate_mode=interpolate_mode,
            align_corners=align_corners, show_progress=show_progress, n_steps=n_steps,
        )

    def _repetitions(self, options: dict[str, Any]) -> int:
        return int(options["n_steps"])

    def _perturb_masks(
        self,
        masks: Tensor,
        channels: Tensor,
        repetition: Tensor,
        state: Any,
        options: dict[str, Any],
    ) -> Tensor:
        scale = (repetition.to(masks.device, masks.dtype) + 1) / options["n_steps"]
        return masks * scale.reshape((-1,) + (1,) * (masks.dim() - 1))

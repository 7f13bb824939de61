"""I-GOS (Qi, Khorram, Li, AAAI 2020) and iGOS++ (Khorram, Lawson, Li, CHIL 2021).

Both optimise a low-resolution mask ``M`` (1 keeps an input cell, 0 replaces it with the
baseline) by descending the integrated gradient of the class score along the path from the
baseline to the masked input, with an Armijo line search; the shared optimiser is in
:mod:`captum_ext.attr._mask_optim`. The attribution is the saliency ``1 - up(M)``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union, cast

import torch
from captum.log import log_usage
from torch import Tensor

from captum_ext._captum import TargetType
from captum_ext._scores import ExampleScorer, OutputKind
from captum_ext._tensor_ops import upsample
from captum_ext.attr._mask_method import BaselineArg, GeneratorArg, Inputs, MaskMethod
from captum_ext.attr._mask_optim import OptimisationTrace, PathTerm
from captum_ext.attr._mask_regularisers import bilateral_tv, edge_weights, l1_term, tv_term

__all__ = ["IGOS", "IGOSPlusPlus"]


class IGOS(MaskMethod):
    r"""I-GOS: integrated-gradient optimised saliency (Qi, Khorram, Li, AAAI 2020).

    Minimises, over a low-resolution mask ``M ∈ [0,1]^m`` (1 keeps, 0 blurs out),

    .. math::
        F(M) = p_c(Φ(x, b, M)) + λ_1 \operatorname{mean}|1 - M| + λ_2 \sum_{axes}
        \operatorname{mean}|ΔM|^β, \qquad Φ = x ⊙ up(M) + b ⊙ (1 - up(M)),

    descending the integrated gradient ``g = ∇_M (1/K) Σ_k p_c(b + (k/K)·up(M) ⊙ (x - b) + ε_k)
    + ∇R`` (``ε_k ~ N(0, σ²)``) with an Armijo backtracking line search, one step size per
    example. Returns the saliency ``1 - up(M)`` (higher = more important), broadcast over the
    channels to each input's shape. ``multiplies_by_inputs`` is False.

    Defaults are the spec's plugin defaults, i.e. the IGOS_pp code (28² mask, 15 iterations,
    20 integrated-gradient steps, L1 = 1, TV = 20, β = 2, σ = 0.2, first step 1000, Armijo
    1e-4, decay 0.2, minimum step 1e-5, noisy path loss in the line search, softmax score,
    blur(51, σ=50) baseline at 224 scaled with the size); ``profile="aaai"`` switches to the
    AAAI code's line search (first step 200, plain loss, adaptive L1).

    Differences from the official code, all of them speed-ups or fixes:

    * the trial steps of a line search are evaluated together, ``line_search_batch`` per
      batched pass, and (``warm_start``) the search starts at the last accepted step, one
      notch (``/decay``) higher when that step was the first trial of its search; the official
      code restarts every search at ``α_0`` (about 6.7 trials per iteration);
    * the gradient pass and the trials of one iteration share their noise (common random
      numbers), and the gradient pass's forward scores give the starting loss for free;
    * when no trial passes, the mask is left unchanged (the official code still takes the last
      tiny step, which can increase the loss) and that example stops;
    * early stopping: an example stops once an accepted step lowers its loss by less than
      ``early_stop_tol`` times the decrease achieved so far, or once two iterations have
      brought no decrease at all (a saturated mask on a model with no evidence for the
      target, e.g. in a randomisation sanity check; each step's decrease is measured
      under that iteration's noise; ``early_stop_tol=None`` runs every iteration, as the
      official code does). The deletion/insertion scores plateau after 2-3 iterations on
      EfficientNet-Lite0 (``benchmarks/results/igos.md``).

    The model is used in the mode the caller left it in (call ``model.eval()`` first: dropout
    or batch-norm in training mode makes the score random and couples the examples of a
    batch). Parameters' ``requires_grad`` flags are switched off during the call and restored.
    Costs are in :attr:`last_trace` (``forward_images``, ``backward_images``).
    """

    @log_usage(part_of_slo=False)
    def attribute(  # type: ignore[override]
        self,
        inputs: Inputs,
        baselines: BaselineArg = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        mask_size: Union[int, tuple[int, ...]] = 28,
        iterations: int = 15,
        ig_steps: int = 20,
        l1_weight: float = 1.0,
        tv_weight: float = 20.0,
        tv_beta: float = 2.0,
        noise_std: float = 0.2,
        output: OutputKind = "softmax",
        line_search_loss: Optional[str] = None,
        line_search_init: Optional[float] = None,
        armijo_c: float = 1e-4,
        decay: float = 0.2,
        min_step: float = 1e-5,
        line_search_batch: int = 2,
        warm_start: bool = True,
        early_stop_tol: Optional[float] = 0.1,
        l1_schedule: Optional[str] = None,
        profile: str = "igos_pp",
        blur_kernel_size: Optional[int] = None,
        blur_sigma: Optional[float] = None,
        internal_batch_size: Optional[int] = None,
        generator: GeneratorArg = None,
        return_masks: bool = False,
        show_progress: bool = False,
    ) -> Any:
        """Optimise one mask per example (and per input tensor).

        Args:
            inputs: ``(N, C, *S)`` with 1 to 3 spatial dims, or a tuple of them (one mask each).
            baselines: ``None`` (the default blur of each input), a number, a tensor (batch 1
                or N), a callable ``baselines(*inputs)``, or a tuple of those per input.
            target: the class to explain; ``None`` takes the top-1 class of the clean input.
            additional_forward_args: extra forward arguments, as in Captum.
            mask_size: mask cells per spatial axis (clamped to the input size).
            iterations: optimisation iterations (upper bound with early stopping).
            ig_steps: ``K``, points of the integrated-gradient path.
            l1_weight, tv_weight, tv_beta: ``λ_1``, ``λ_2``, ``β`` of the regularisers.
            noise_std: σ of the noise added to each path image (``0`` for a deterministic run).
            output: score of the model output: ``"softmax"``, ``"logit"``, ``"sigmoid"`` or a
                callable.
            line_search_loss: ``"path"`` (the noisy path score, IGOS_pp) or ``"plain"``
                (``p_c(Φ)``, AAAI); ``None``: the profile's.
            line_search_init: the first trial step ``α_0``; ``None``: the profile's (1000/200).
            armijo_c, decay, min_step: Armijo constant, step decay, smallest step.
            line_search_batch: trial steps per batched evaluation.
            warm_start: start each line search at the last accepted step (see above).
            early_stop_tol: stop an example once a step lowers its loss by less than this
                fraction of the decrease so far; ``None`` runs all ``iterations``.
            l1_schedule: ``None`` or ``"aaai"`` (adaptive L1); ``None`` keeps the profile's.
            profile: ``"igos_pp"`` or ``"aaai"``: default line search and L1 schedule.
            blur_kernel_size, blur_sigma: override the default blur baseline.
            internal_batch_size: at most this many path images per forward/backward pass.
            generator: a ``torch.Generator`` (spawns one stream per example) or one generator
                per example; the same per-example generators give the same masks batched or
                one at a time.
            return_masks: also return the low-resolution masks ``(N, 1, *m)``.
            show_progress: a progress bar over iterations.

        Returns:
            The saliency ``1 - up(M)`` with the shape and tuple-ness of ``inputs``; with
            ``return_masks``, ``(saliency, masks)``.
        """
        return self._run(inputs, baselines, target, additional_forward_args, dict(locals()))

    def _optimise(self, scorer: ExampleScorer, xs: tuple[Tensor, ...], bs: tuple[Tensor, ...],
                  mask_shapes: list[tuple[int, ...]], generators: list[Any],
                  options: dict[str, Any]) -> OptimisationTrace:
        tv_weight, tv_beta = options["tv_weight"], options["tv_beta"]

        def identity(variables: Sequence[Tensor]) -> list[Tensor]:
            return list(variables)

        def regulariser(masks: Sequence[Tensor], examples: Tensor, l1: Tensor) -> Tensor:
            return sum(l1 * l1_term(m) + tv_weight * tv_term(m, tv_beta) for m in masks)

        optimiser = self._optimiser(scorer, xs, bs, [PathTerm(True, identity)], identity,
                                    regulariser, generators, options)
        start = [torch.ones((x.shape[0], 1) + s, dtype=x.dtype, device=x.device)
                 for x, s in zip(xs, mask_shapes)]
        return optimiser.run(start, options["iterations"], options["l1_weight"])


class IGOSPlusPlus(MaskMethod):
    r"""iGOS++: bilateral perturbations (Khorram, Lawson, Li, ACM CHIL 2021).

    Two masks per example: a deletion mask ``M_d`` and an insertion mask ``M_i`` (both start
    at 1; small values mark important cells in both games). With the deletion path score
    ``S_del`` (as in :class:`IGOS`) and the insertion path score
    ``S_ins(M) = (1/K) Σ_k p_c(x - (k/K)·up(M) ⊙ (x - b) + ε_k)`` and ``M = M_d ⊙ M_i``:

    .. math::
        L = S_{del}(M_d) - S_{ins}(M_i) + S_{del}(M) - S_{ins}(M) + λ_1 \operatorname{mean}|1-M|
            + λ_2 \mathrm{BTV}(x, M)

    The descent directions are the integrated gradients of
    ``½[S_del(M) - S_ins(M) + S_del(M_d) - S_ins(M_i)] + R(M)`` (the code halves the path terms
    in the direction only); one Armijo step per example moves both masks. BTV is
    ``½(Σ mean(ΔM)² + Σ mean w ⊙ (Δup(M))²)`` with edge weights
    ``w = mean_c exp(-(Δx_c)²/σ_b)``, ``σ_b = 0.01`` on the normalised input
    (``btv_exact_official=True``: IGOS_pp's asymmetric vertical weight). Returns
    ``1 - up(M_d ⊙ M_i)``. Defaults, deviations and the model-mode note are as in
    :class:`IGOS`.
    """

    @log_usage(part_of_slo=False)
    def attribute(  # type: ignore[override]
        self,
        inputs: Inputs,
        baselines: BaselineArg = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        mask_size: Union[int, tuple[int, ...]] = 28,
        iterations: int = 15,
        ig_steps: int = 20,
        l1_weight: float = 1.0,
        tv_weight: float = 20.0,
        btv_sigma: float = 0.01,
        btv_exact_official: bool = False,
        noise_std: float = 0.2,
        output: OutputKind = "softmax",
        line_search_loss: Optional[str] = None,
        line_search_init: Optional[float] = None,
        armijo_c: float = 1e-4,
        decay: float = 0.2,
        min_step: float = 1e-5,
        line_search_batch: int = 2,
        warm_start: bool = True,
        early_stop_tol: Optional[float] = 0.1,
        l1_schedule: Optional[str] = None,
        profile: str = "igos_pp",
        blur_kernel_size: Optional[int] = None,
        blur_sigma: Optional[float] = None,
        internal_batch_size: Optional[int] = None,
        generator: GeneratorArg = None,
        return_masks: bool = False,
        show_progress: bool = False,
    ) -> Any:
        """As :meth:`IGOS.attribute`, with BTV (``btv_sigma``, ``btv_exact_official``) in place
        of TV. ``return_masks`` returns the product ``M_d ⊙ M_i``; both masks are in
        :attr:`last_trace` ``.variables``. A line-search trial costs ``4K`` path images."""
        return self._run(inputs, baselines, target, additional_forward_args, dict(locals()))

    def _optimise(self, scorer: ExampleScorer, xs: tuple[Tensor, ...], bs: tuple[Tensor, ...],
                  mask_shapes: list[tuple[int, ...]], generators: list[Any],
                  options: dict[str, Any]) -> OptimisationTrace:
        count = len(xs)
        tv_weight = options["tv_weight"]
        weights = [edge_weights(x, options["btv_sigma"], options["btv_exact_official"])
                   for x in xs]

        def product(v: Sequence[Tensor]) -> list[Tensor]:
            return [v[j] * v[count + j] for j in range(count)]

        def deletion(v: Sequence[Tensor]) -> list[Tensor]:
            return list(v[:count])

        def insertion(v: Sequence[Tensor]) -> list[Tensor]:
            return list(v[count:])

        def regulariser(masks: Sequence[Tensor], examples: Tensor, l1: Tensor) -> Tensor:
            total = 0
            for m, x, w in zip(masks, xs, weights):
                up = upsample(m, x.shape[2:], align_corners=True)
                total = total + l1 * l1_term(m) + tv_weight * bilateral_tv(
                    m, up, [wi[examples] for wi in w])
            return cast(Tensor, total)

        terms = [
            PathTerm(True, product, 0.5, 1.0),
            PathTerm(False, product, -0.5, -1.0),
            PathTerm(True, deletion, 0.5, 1.0),
            PathTerm(False, insertion, -0.5, -1.0),
        ]
        optimiser = self._optimiser(scorer, xs, bs, terms, product, regulariser, generators,
                                    options)
        start = [torch.ones((x.shape[0], 1) + s, dtype=x.dtype, device=x.device)
                 for x, s in zip(xs, mask_shapes)]
        return optimiser.run(start + [s.clone() for s in start], options["iterations"],
                             options["l1_weight"])

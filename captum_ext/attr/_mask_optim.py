"""The optimiser shared by I-GOS and iGOS++: integrated-gradient descent with a batched Armijo
line search, on low-resolution masks of 1D, 2D or 3D inputs.

Notation (``mask-optimisation.md``): an input ``x`` with baseline ``b`` and ``d = x - b``; a mask
``M`` at low resolution, ``U = up(M)`` at input resolution (linear/bilinear/trilinear,
``align_corners=True``). A *deletion path* ``b + α_k U ⊙ d + ε_k`` runs from the baseline to
``Φ(x, b, M) = x ⊙ U + b ⊙ (1 - U)``; an *insertion path* ``x - α_k U ⊙ d + ε_k`` swaps the roles
of image and baseline. ``α_k = k/K``, ``k = 1..K``, ``ε_k ~ N(0, σ²)``. A path score is
``S = (1/K) Σ_k p_c(path_k)``.

A method is a list of :class:`PathTerm` (which path, on which function of the mask variables,
with which weight in the descent direction and in the line-search loss) and a regulariser.
Every iteration:

1. all path images of all terms of all active examples go through the model in one batched
   forward and backward pass (chunked by ``internal_batch_size``); the descent direction is
   ``g = ∇_V [Σ_t w_t S_t] + ∇_V R`` (the integrated gradient: autograd through ``up`` is the
   adjoint ``up*``), and the same pass gives the line-search loss ``L(V) = Σ_t v_t S_t + R``;
2. Armijo backtracking, one step size per example: the candidate steps ``a, a·ρ, …`` of a
   window of ``line_search_batch`` trials, for every example still searching, are evaluated in
   one batched forward pass; the largest step with ``L(clamp(V - αg)) <= L(V) - c·α·||g||²`` wins.

The same noise ``ε`` serves the gradient pass and every trial of one iteration (common random
numbers), so the Armijo test compares losses under equal noise and an accepted step never
increases the loss it was tested on. Noise is drawn per example from that example's generator,
so a batch gives the same masks as its examples run one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from captum_ext._scores import ExampleScorer
from captum_ext._tensor_ops import upsample

__all__ = [
    "L1Schedule",
    "LineSearch",
    "MaskOptimiser",
    "OptimisationTrace",
    "PathTerm",
    "example_generators",
]

Variables = list[Tensor]
#: ``schedule(iteration, active, l1, plain_score)`` may rescale ``l1[active]`` in place;
#: ``plain_score(rows)`` gives ``p_c(Φ(x, b, M))`` of those examples (one forward each).
L1Schedule = Callable[[int, Tensor, Tensor, Callable[[Tensor], Tensor]], None]


@dataclass(frozen=True)
class PathTerm:
    """One path score in the objective.

    ``masks`` maps the mask variables to one mask per input tensor; ``deletion`` picks the path;
    ``direction_weight`` and ``loss_weight`` weigh ``S`` in the descent direction and in the
    line-search loss.
    """

    deletion: bool
    masks: Callable[[Sequence[Tensor]], list[Tensor]]
    direction_weight: float = 1.0
    loss_weight: float = 1.0


@dataclass(frozen=True)
class LineSearch:
    """Armijo backtracking: first trial ``init`` (or the warm start), ``×decay`` per trial, stop
    after a failed trial below ``min_step``; ``loss`` is ``"path"`` or ``"plain"``."""

    init: float = 1000.0
    armijo_c: float = 1e-4
    decay: float = 0.2
    min_step: float = 1e-5
    loss: str = "path"
    batch: int = 2
    warm_start: bool = True


@dataclass
class OptimisationTrace:
    """What one optimisation did, per example (``N`` rows; ``T`` = ``iterations``).

    Attributes:
        masks: the final masks, one ``(N, 1, *m)`` tensor per input tensor (iGOS++: the product
            of the deletion and insertion masks).
        variables: the optimised variables (I-GOS: the masks; iGOS++: deletion masks, then
            insertion masks).
        loss_before: ``(N, T)`` line-search loss at the start of each iteration (NaN once the
            example has stopped).
        loss_after: ``(N, T)`` the loss of the accepted step, under the same noise.
        step_sizes: ``(N, T)`` accepted step sizes (0: no step passed the Armijo test).
        iterations_run: ``(N,)`` iterations each example ran before it stopped.
        line_search_trials: ``(N,)`` trial steps evaluated.
        forward_images: images pushed through the model (all passes, clean pass included).
        backward_images: of those, images whose pass was also differentiated.
    """

    masks: tuple[Tensor, ...]
    variables: tuple[Tensor, ...]
    loss_before: Tensor
    loss_after: Tensor
    step_sizes: Tensor
    iterations_run: Tensor
    line_search_trials: Tensor
    forward_images: int = 0
    backward_images: int = 0


def example_generators(
    generator: Optional[torch.Generator | Sequence[torch.Generator]], batch_size: int
) -> list[Optional[torch.Generator]]:
    """One random stream per example.

    A sequence must hold one generator per example and is used as given. A single generator
    spawns ``N`` child generators from ``N`` seeds it draws (so a batch run with ``g`` seeded
    ``s`` equals one-at-a-time runs with the children). ``None`` uses the global RNG.
    """
    if generator is None:
        return [None] * batch_size
    if isinstance(generator, torch.Generator):
        seeds = torch.randint(0, 2**62, (batch_size,), generator=generator, device=generator.device)
        return [torch.Generator(device=generator.device).manual_seed(int(s)) for s in seeds]
    generators = list(generator)
    if len(generators) != batch_size or not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(
            f"generator must be a torch.Generator or a sequence of {batch_size} generators (one "
            f"per example), got {len(generators)} entries."
        )
    return generators


class MaskOptimiser:
    """Runs the loop of the module docstring for a batch (see :mod:`._mask_optim`)."""

    def __init__(
        self,
        scorer: ExampleScorer,
        inputs: tuple[Tensor, ...],
        baselines: tuple[Tensor, ...],
        terms: Sequence[PathTerm],
        final_masks: Callable[[Sequence[Tensor]], list[Tensor]],
        regulariser: Callable[[Sequence[Tensor], Tensor, Tensor], Tensor],
        *,
        ig_steps: int,
        noise_std: float,
        line_search: LineSearch,
        early_stop_tol: Optional[float],
        internal_batch_size: Optional[int],
        generators: list[Optional[torch.Generator]],
        l1_schedule: Optional[L1Schedule] = None,
        show_progress: bool = False,
        description: str = "mask optimisation",
    ) -> None:
        self.scorer = scorer
        self.inputs = tuple(x.detach() for x in inputs)
        self.baselines = tuple(b.detach() for b in baselines)
        self.diffs = tuple(x - b for x, b in zip(self.inputs, self.baselines))
        self.terms = list(terms)
        self.final_masks = final_masks
        self.regulariser = regulariser
        self.ig_steps = ig_steps
        self.noise_std = noise_std
        self.search = line_search
        self.early_stop_tol = early_stop_tol
        self.chunk = internal_batch_size
        self.generators = generators
        self.l1_schedule = l1_schedule
        self.show_progress = show_progress
        self.description = description
        device = self.inputs[0].device
        dtype = self.inputs[0].dtype
        self._deletion = torch.tensor([t.deletion for t in self.terms], device=device)
        self._direction_w = torch.tensor([t.direction_weight for t in self.terms], dtype=dtype,
                                         device=device)
        self._loss_w = torch.tensor([t.loss_weight for t in self.terms], dtype=dtype, device=device)

    # ------------------------------------------------------------------ path passes
    def _upsampled(self, variables: Sequence[Tensor]) -> list[Tensor]:
        """Per input tensor, the term masks at input resolution: ``(B, T, 1, *S)``."""
        per_term = [term.masks(variables) for term in self.terms]
        stacked = []
        for j, x in enumerate(self.inputs):
            masks = torch.stack([m[j] for m in per_term], 1)  # (B, T, 1, *m)
            flat = masks.flatten(0, 1)
            up = upsample(flat, x.shape[2:], align_corners=True)
            stacked.append(up.reshape(masks.shape[:2] + up.shape[1:]))
        return stacked

    def _path_scores(
        self,
        upsampled: list[Tensor],
        examples: Tensor,
        alphas: Tensor,
        noise: Optional[list[Tensor]],
        noise_rows: Optional[Tensor],
        weights: Optional[Tensor] = None,
    ) -> tuple[Tensor, Optional[list[Tensor]]]:
        """Scores ``(B, T, K)`` of every path image; with ``weights`` (T,), also the gradients of
        ``Σ weights_t · score / K`` with respect to ``upsampled`` (accumulated over chunks)."""
        n_inst, n_terms = upsampled[0].shape[:2]
        steps = alphas.numel()
        total = n_inst * n_terms * steps
        chunk = total if self.chunk is None else self.chunk
        scores = torch.empty(total, dtype=self.inputs[0].dtype, device=self.inputs[0].device)
        leaves = [u.detach().requires_grad_(weights is not None) for u in upsampled]
        grads = [torch.zeros_like(u) for u in upsampled] if weights is not None else None
        for start in range(0, total, chunk):
            items = torch.arange(start, min(start + chunk, total), device=scores.device)
            inst, term, step = items // (n_terms * steps), (items // steps) % n_terms, items % steps
            ex = examples[inst]
            insertion = (~self._deletion[term]).to(scores.dtype)
            sign = 1.0 - 2.0 * insertion
            with torch.set_grad_enabled(weights is not None):
                images = []
                for j, leaf in enumerate(leaves):
                    factor = _path_factor(insertion, sign * alphas[step], leaf[inst, term])
                    image = self.baselines[j][ex] + self.diffs[j][ex] * factor
                    if noise is not None and noise_rows is not None:
                        image = image + noise[j][noise_rows[ex], step]
                    images.append(image)
                chunk_scores = self.scorer(images, ex)
                if weights is not None and grads is not None:
                    objective = (chunk_scores * weights[term]).sum() / steps
                    chunk_grads = torch.autograd.grad(objective, leaves, allow_unused=True)
                    for acc, g in zip(grads, chunk_grads):
                        if g is not None:
                            acc += g
            scores[items] = chunk_scores.detach()
        return scores.view(n_inst, n_terms, steps), grads

    # ------------------------------------------------------------------ losses
    def _loss_and_direction(
        self, variables: Variables, examples: Tensor, noise: Optional[list[Tensor]],
        noise_rows: Tensor, l1: Tensor,
    ) -> tuple[Tensor, Variables]:
        """The path loss ``L(V)`` (B,) and the descent direction ``g`` from one batched
        forward + backward pass."""
        leaves = [v.detach().requires_grad_(True) for v in variables]
        with torch.enable_grad():
            upsampled = self._upsampled(leaves)
            scores, up_grads = self._path_scores(
                upsampled, examples, self._alphas(), noise, noise_rows, self._direction_w
            )
            reg = self.regulariser(self.final_masks(leaves), examples, l1)
            assert up_grads is not None
            direction = torch.autograd.grad(
                list(upsampled) + [reg.sum()], leaves,
                grad_outputs=list(up_grads) + [torch.ones_like(reg.sum())], allow_unused=True,
            )
        direction = [torch.zeros_like(v) if g is None else g.detach() for v, g in
                     zip(variables, direction)]
        loss = (scores.mean(-1) * self._loss_w).sum(1) + reg.detach()
        return loss, direction

    def _loss(
        self, variables: Variables, examples: Tensor, noise: Optional[list[Tensor]],
        noise_rows: Tensor, l1: Tensor,
    ) -> Tensor:
        """The line-search loss (B,) of candidate variables, without gradients."""
        with torch.no_grad():
            upsampled = self._upsampled(variables)
            if self.search.loss == "plain":
                alphas = torch.ones(1, dtype=self.inputs[0].dtype, device=self.inputs[0].device)
                scores, _ = self._path_scores(upsampled, examples, alphas, None, None)
            else:
                scores, _ = self._path_scores(upsampled, examples, self._alphas(), noise,
                                              noise_rows)
            reg = self.regulariser(self.final_masks(variables), examples, l1)
        return (scores.mean(-1) * self._loss_w).sum(1) + reg

    def _alphas(self) -> Tensor:
        x = self.inputs[0]
        return torch.arange(1, self.ig_steps + 1, dtype=x.dtype, device=x.device) / self.ig_steps

    def _draw_noise(self, active: Tensor) -> Optional[list[Tensor]]:
        if self.noise_std == 0:
            return None
        noise = []
        for x in self.inputs:
            rows = []
            for e in active.tolist():
                g = self.generators[e]
                device = g.device if g is not None else x.device
                # drawn in float32 at least: a 16-bit run sees the float32 run's noise.
                draw = torch.promote_types(x.dtype, torch.float32)
                rows.append(torch.randn((self.ig_steps,) + tuple(x.shape[1:]), generator=g,
                                        dtype=draw, device=device).to(x.device, x.dtype))
            noise.append(torch.stack(rows) * self.noise_std)
        return noise

    # ------------------------------------------------------------------ line search
    def _line_search(
        self, variables: Variables, direction: Variables, loss0: Tensor, examples: Tensor,
        noise: Optional[list[Tensor]], noise_rows: Tensor, l1: Tensor, first_step: Tensor,
    ) -> tuple[Tensor, Tensor, Variables, Tensor]:
        """Per example: accepted step (0 if none), its loss, the new variables, trials used."""
        n = loss0.shape[0]
        slope = -self.search.armijo_c * sum(g.flatten(1).pow(2).sum(1) for g in direction)
        accepted = torch.zeros_like(loss0)
        accepted_loss = loss0.clone()
        new_vars = [v.clone() for v in variables]
        trials = torch.zeros(n, dtype=torch.long, device=loss0.device)
        offset = torch.zeros(n, dtype=loss0.dtype, device=loss0.device)
        pending = torch.arange(n, device=loss0.device)
        window = torch.arange(self.search.batch, dtype=loss0.dtype, device=loss0.device)
        while pending.numel() > 0:
            steps = first_step[pending, None] * self.search.decay ** (offset[pending, None] + window)
            flat_steps = steps.flatten()
            rows = pending.repeat_interleave(self.search.batch)
            candidates = [
                (v[rows] - flat_steps.view((-1,) + (1,) * (v.dim() - 1)) * g[rows]).clamp(0, 1)
                for v, g in zip(variables, direction)
            ]
            losses = self._loss(candidates, examples[rows], noise, noise_rows, l1[rows]).view(
                steps.shape)
            ok = losses <= loss0[pending, None] + steps * slope[pending, None]
            trials[pending] += self.search.batch
            found = ok.any(1)
            first = ok.to(torch.int8).argmax(1)
            done_rows = pending[found]
            if done_rows.numel() > 0:
                pick = first[found]
                accepted[done_rows] = steps[found, pick]
                accepted_loss[done_rows] = losses[found, pick]
                chosen = torch.nonzero(found).squeeze(1) * self.search.batch + pick
                for new, cand in zip(new_vars, candidates):
                    new[done_rows] = cand[chosen]
            exhausted = steps[:, -1] < self.search.min_step
            offset[pending] += self.search.batch
            pending = pending[~found & ~exhausted]
        return accepted, accepted_loss, new_vars, trials

    # ------------------------------------------------------------------ main loop
    def run(self, variables: Variables, iterations: int, l1_weight: float) -> OptimisationTrace:
        n = self.inputs[0].shape[0]
        device, dtype = self.inputs[0].device, self.inputs[0].dtype
        variables = [v.detach().clone() for v in variables]
        l1 = torch.full((n,), float(l1_weight), dtype=dtype, device=device)
        nan = torch.full((n, iterations), float("nan"), dtype=dtype, device=device)
        loss_before, loss_after = nan.clone(), nan.clone()
        step_sizes = torch.zeros(n, iterations, dtype=dtype, device=device)
        iterations_run = torch.zeros(n, dtype=torch.long, device=device)
        trials = torch.zeros(n, dtype=torch.long, device=device)
        first_step = torch.full((n,), self.search.init, dtype=dtype, device=device)
        gained = torch.zeros(n, dtype=dtype, device=device)  # loss decrease so far
        active = torch.arange(n, device=device)
        for it in tqdm(range(iterations), disable=not self.show_progress, desc=self.description,
                       leave=False):
            if active.numel() == 0:
                break
            if self.l1_schedule is not None:
                self.l1_schedule(it, active, l1, lambda rows: self._plain_score(variables, rows))
            noise = self._draw_noise(active)
            noise_rows = torch.full((n,), -1, dtype=torch.long, device=device)
            noise_rows[active] = torch.arange(active.numel(), device=device)
            current = [v[active] for v in variables]
            loss0, direction = self._loss_and_direction(current, active, noise, noise_rows,
                                                        l1[active])
            if self.search.loss == "plain":
                loss0 = self._loss(current, active, None, noise_rows, l1[active])
            step, loss1, updated, used = self._line_search(
                current, direction, loss0, active, noise, noise_rows, l1[active],
                first_step[active],
            )
            for v, u in zip(variables, updated):
                v[active] = u
            loss_before[active, it] = loss0
            loss_after[active, it] = loss1
            step_sizes[active, it] = step
            iterations_run[active] += 1
            trials[active] += used
            if self.search.warm_start:
                # the next search starts at the accepted step, one notch higher when the very
                # first trial passed (so the step can grow back after a backtrack).
                grow = step >= first_step[active] * (1 - 1e-6)
                warm = torch.where(grow, step / self.search.decay, step)
                first_step[active] = torch.where(step > 0, warm.clamp(max=self.search.init),
                                                 first_step[active])
            decrease = loss0 - loss1
            gained[active] += decrease
            stop = step == 0
            if self.early_stop_tol is not None:
                stop |= decrease < self.early_stop_tol * gained[active]
                # two iterations without any decrease (e.g. a saturated mask on a model
                # with no evidence for the target): the rest would not move either
                stop |= (gained[active] <= 0) & (it >= 1)
            active = active[~stop]
        masks = tuple(m.detach() for m in self.final_masks(variables))
        return OptimisationTrace(
            masks=masks,
            variables=tuple(variables),
            loss_before=loss_before,
            loss_after=loss_after,
            step_sizes=step_sizes,
            iterations_run=iterations_run,
            line_search_trials=trials,
            forward_images=self.scorer.forward_images,
            backward_images=self.scorer.backward_images,
        )

    def _plain_score(self, variables: Variables, rows: Tensor) -> Tensor:
        """``p_c(Φ(x, b, M))`` of the first (deletion) term, without noise, for ``rows``."""
        with torch.no_grad():
            upsampled = self._upsampled([v[rows] for v in variables])
            ones = torch.ones(1, dtype=self.inputs[0].dtype, device=self.inputs[0].device)
            scores, _ = self._path_scores(upsampled, rows, ones, None, None)
        return scores[:, 0, 0]


def _path_factor(insertion: Tensor, signed_alphas: Tensor, mask: Tensor) -> Tensor:
    """``[insertion] ± α_k · U`` per item: the path image is ``b + d ⊙ factor``."""
    shape = (-1,) + (1,) * (mask.dim() - 1)
    return insertion.view(shape) + signed_alphas.view(shape) * mask

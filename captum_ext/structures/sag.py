"""Structured Attention Graphs (Shitole, Li, Kahng, Tadepalli, Fern, NeurIPS 2021).

Spec: ``shared/reference/structured-explanations.md`` §1–§5 (the official code's HEAD, "publish
beam search", is the reference whose defaults are reproduced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor
from tqdm.auto import tqdm

from captum_ext._blur import igos_blur
from captum_ext._captum import TargetType
from captum_ext._scores import OutputKind
from captum_ext._validation import leaves_no_trace, validate_inputs
from captum_ext.structures._patches import PatchScorer, mask_of, optional_int, patches_of
from captum_ext.structures._search import beam_search, removal_tree, select_diverse

__all__ = ["Explanation", "SAGNode", "SAGEdge", "SAGResult", "StructuredAttentionGraph"]

RankingArg = Union[None, Tensor, Callable[..., Tensor]]
BaselineSpec = Union[None, float, int, str, Tensor]


@dataclass(frozen=True)
class Explanation:
    """A minimal sufficient explanation: revealed patches, their grid mask and confidence."""

    patches: tuple[int, ...]
    mask: Tensor  #: boolean grid, True = revealed
    probability: float  #: p(S)
    relative_confidence: float  #: p(S) / p_full


@dataclass(frozen=True)
class SAGNode:
    id: int
    patches: tuple[int, ...]
    probability: float
    relative_confidence: float
    percent: int  #: ⌊100·p/p_full⌋, the SAG label
    is_root: bool
    depth: int
    children: tuple[tuple[int, int, float], ...]  #: (child id, removed patch, drop in % points)


@dataclass(frozen=True)
class SAGEdge:
    parent: int
    child: int
    removed_patch: int
    drop: float  #: parent % − child %


@dataclass
class SAGResult:
    """What :meth:`StructuredAttentionGraph.search` found for one example."""

    grid_shape: tuple[int, ...]
    target: Any
    p_full: float
    threshold: float  #: τ·p_full
    roots: list[Explanation]  #: all minimal sufficient explanations, discovery order
    explanations: list[Explanation]  #: the diverse subset drawn as the graph's roots
    nodes: list[SAGNode]
    edges: list[SAGEdge]
    ranking: Tensor  #: the grid ranking, lower = more promising
    forward_images: int  #: images pushed through the model by the search and the graph
    ranking_forward_images: int = 0  #: images of the I-GOS ranking (forward passes)
    ranking_backward_images: int = 0  #: of those, images followed by a backward pass
    states_scored: int = 0  #: distinct patch sets scored
    score_requests: int = 0  #: scores asked for (cache hits included)
    input_shape: tuple[int, ...] = field(default=())

    @property
    def dnf(self) -> str:
        """``P11 & P30 | P10 & P30`` for the selected explanations."""
        return " | ".join(" & ".join(f"P{p}" for p in e.patches) for e in self.explanations)

    def to_attribution_map(self) -> Tensor:
        """``(1, 1, *S)``: the nearest-upsampled explanation masks weighted by relative confidence."""
        total = torch.zeros((1, 1) + self.grid_shape)
        for e in self.explanations:
            total = total + e.relative_confidence * e.mask.float().reshape(total.shape)
        size = self.input_shape[2:] if self.input_shape else self.grid_shape
        return torch.nn.functional.interpolate(total, size=tuple(size), mode="nearest")


def _grid_shape(grid: Union[int, tuple[int, ...]], spatial: tuple[int, ...]) -> tuple[int, ...]:
    shape = (grid,) * len(spatial) if isinstance(grid, int) else tuple(grid)
    if len(shape) != len(spatial) or any(
            isinstance(g, bool) or not isinstance(g, int) or g < 1 or g > s
            for g, s in zip(shape, spatial)):
        raise ValueError(
            f"grid must be a positive int or one int per spatial dim, at most the input size "
            f"{spatial}; got {grid!r}.")
    return shape


def _baseline(baselines: BaselineSpec, x: Tensor) -> Tensor:
    if baselines is None:
        return torch.zeros_like(x)
    if isinstance(baselines, str):
        if baselines != "blur":
            raise ValueError(f"baselines must be None, a number, a tensor or 'blur', got {baselines!r}.")
        return igos_blur(x)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return torch.full_like(x, float(baselines))
    if isinstance(baselines, Tensor):
        try:
            return torch.broadcast_to(baselines.to(x.device, x.dtype), x.shape).clone()
        except RuntimeError as error:
            raise ValueError(
                f"baselines of shape {tuple(baselines.shape)} do not broadcast to the input "
                f"{tuple(x.shape)}.") from error
    raise TypeError(f"baselines must be None, a number, a tensor or 'blur', got {type(baselines).__name__}.")


class StructuredAttentionGraph(PerturbationAttribution):
    r"""Structured Attention Graphs: several minimal sufficient explanations and how removing
    patches changes the confidence (Shitole et al., NeurIPS 2021).

    The input is cut into a ``g^d`` grid of patches. With the insertion score
    ``p(S) = p_c(x ⊙ U_S + b ⊙ (1 − U_S))`` (``U_S``: the grid with 1 on ``S``, upsampled
    bilinearly with ``align_corners=True``), a set is *sufficient* when ``p(S) > τ·p_full`` and a
    *minimal sufficient explanation* (MSE) when no single patch can be removed. A beam search
    over sets ordered by a coarse I-GOS ranking finds MSEs (each sufficient successor is greedily
    1-minimised), the largest subset with pairwise overlaps ``<= overlap_thresh`` is selected
    (first ``num_roots_sag`` kept), and each selected root is expanded by removing one of its
    first 3 patches while its relative confidence exceeds ``node_prob_thresh`` %.

    Defaults reproduce the official code's beam search: 7×7 grid, beam width 3, 15 successors,
    10 roots, τ = 0.9, overlap 1, 3 roots drawn, 40 % expansion threshold, black baseline, and
    the ranking of 2 I-GOS iterations (AAAI line search, 20 IG steps, L1 1, TV 20, β 2) on the
    g×g mask. Deviations: the beam keeps ``beam_width`` states (the code keeps ``beam_width+1``:
    ``exact_official=True``); scores are batched (``batch_size``) and memoised, so no set is
    scored twice; the greedy minimisation scores the single removals from the scan position in
    one batch (the same result as the sequential scan).
    """

    def __init__(self, forward_func: Callable[..., Any]) -> None:
        PerturbationAttribution.__init__(self, forward_func)
        #: the memoised :class:`PatchScorer` of the last search (its cache and image count).
        self.last_scorer: Optional[PatchScorer] = None

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("StructuredAttentionGraph does not support attribute_future.")

    @log_usage(part_of_slo=False)
    def attribute(self, inputs: Tensor, target: TargetType = None, **kwargs: Any) -> SAGResult:  # type: ignore[override]
        """Same as :meth:`search` (Captum entry point)."""
        return self.search(inputs, target, **kwargs)

    @leaves_no_trace
    def search(
        self,
        inputs: Tensor,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        grid: Union[int, tuple[int, ...]] = 7,
        beam_width: int = 3,
        num_successors: int = 15,
        max_num_roots: int = 10,
        max_root_size: Optional[int] = None,
        tau: float = 0.9,
        overlap_thresh: int = 1,
        num_roots_sag: int = 3,
        node_prob_thresh: float = 40.0,
        max_children: int = 3,
        max_depth: Optional[int] = None,
        max_nodes: Optional[int] = 10_000,
        merge_identical: bool = False,
        baselines: BaselineSpec = None,
        upsample: str = "bilinear_align_corners",
        output: OutputKind = "softmax",
        ranking: RankingArg = None,
        ranking_kwargs: Optional[dict[str, Any]] = None,
        exact_official: bool = False,
        dedupe_beam: bool = False,
        batch_size: int = 64,
        generator: Optional[torch.Generator] = None,
        show_progress: bool = False,
    ) -> SAGResult:
        """Search the SAG of one example (the memoised scorer stays in ``last_scorer``).

        Args:
            inputs: ``(1, C, *S)`` (1 to 3 spatial dims), one example.
            target: the class; ``None`` takes the top-1 class.
            grid: patches per spatial axis (an int or one per axis).
            beam_width, num_successors, max_num_roots, max_root_size (``None``: all patches),
                tau: beam search (§3); τ is relative to ``p_full``.
            overlap_thresh, num_roots_sag: diversity selection (§4).
            node_prob_thresh, max_children, max_depth, merge_identical: the graph (§5); a tree
                unless ``merge_identical``; ``max_depth=None`` expands down to single patches.
            max_nodes: a bound on the graph's nodes (each is one forward pass); a tree of a
                confident root can grow ``max_children``-fold per level. Reaching it stops the
                expansion with a ``UserWarning``. ``None``: no bound (the official code).
            baselines: ``None`` (zeros: black for unnormalised images; pass ``-mean/std`` for
                normalised ones), a number, a tensor, or ``"blur"`` (the I-GOS blur).
            upsample: ``"bilinear_align_corners"`` (the code's tents) or ``"nearest"``.
            output: ``"softmax"``, ``"logit"``, ``"sigmoid"`` or a callable.
            ranking: ``None`` (coarse I-GOS, lower mask = more promising), a saliency tensor
                (higher = more important, average-pooled to the grid) or a callable
                ``ranking(inputs, target) -> saliency``.
            ranking_kwargs: overrides for the I-GOS ranking (e.g. ``noise_std``).
            exact_official: keep ``beam_width + 1`` states, as the code does.
            dedupe_beam: drop duplicate sets from the beam (the code keeps them).
            batch_size: patch sets per forward pass.
            generator: for the I-GOS ranking's path noise.
            show_progress: a progress bar over search depths.
        """
        xs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        validate_inputs(xs, forward_func=self.forward_func)
        if len(xs) != 1 or xs[0].shape[0] != 1:
            raise ValueError(
                "search explains one example: pass a single tensor of shape (1, C, *S); loop over "
                "a batch (or use count_sub_explanations_dataset for a DataLoader).")
        x = xs[0].detach()
        grid_shape = _grid_shape(grid, tuple(x.shape[2:]))
        cells = math.prod(grid_shape)
        for name, value in (("beam_width", beam_width), ("num_successors", num_successors),
                            ("max_num_roots", max_num_roots), ("num_roots_sag", num_roots_sag),
                            ("max_children", max_children), ("batch_size", batch_size)):
            optional_int(value, name)
        optional_int(max_root_size, "max_root_size")
        optional_int(max_depth, "max_depth", 0)
        optional_int(max_nodes, "max_nodes")
        if num_successors < beam_width:
            raise ValueError(f"num_successors ({num_successors}) must be >= beam_width ({beam_width}).")
        if not 0.0 < tau:
            raise ValueError(f"tau must be positive, got {tau}.")
        if isinstance(overlap_thresh, bool) or not isinstance(overlap_thresh, int) or overlap_thresh < 0:
            raise ValueError(f"overlap_thresh must be an integer >= 0, got {overlap_thresh!r}.")
        baseline = _baseline(baselines, x)
        scorer = PatchScorer(self.forward_func, x, baseline, target, additional_forward_args,
                             grid_shape, upsample=upsample, output=output, batch_size=batch_size)
        result = self._run(scorer, ranking, ranking_kwargs, generator, show_progress, dict(
            beam_width=beam_width, num_successors=num_successors, max_num_roots=max_num_roots,
            max_root_size=min(max_root_size or cells, cells), tau=tau,
            overlap_thresh=overlap_thresh, num_roots_sag=num_roots_sag,
            node_prob_thresh=node_prob_thresh, max_children=max_children, max_depth=max_depth,
            max_nodes=max_nodes, merge_identical=merge_identical, exact_official=exact_official,
            dedupe_beam=dedupe_beam, baselines=baselines, upsample=upsample, output=output,
            additional_forward_args=additional_forward_args))
        self.last_scorer = scorer
        return result

    def _ranking(self, scorer: PatchScorer, ranking: RankingArg, kwargs: Optional[dict[str, Any]],
                 generator: Optional[torch.Generator], options: dict[str, Any]) -> tuple[Tensor, int, int]:
        grid_shape = scorer.grid_shape
        if ranking is None:
            from captum_ext.attr import IGOS

            settings: dict[str, Any] = dict(
                mask_size=grid_shape, iterations=2, ig_steps=20, l1_weight=1.0, tv_weight=20.0,
                tv_beta=2.0, profile="aaai", early_stop_tol=None, output=options["output"])
            settings.update(kwargs or {})
            igos = IGOS(self.forward_func)
            _, masks = igos.attribute(scorer.x, baselines=scorer.baseline, target=scorer.target,
                                      additional_forward_args=options["additional_forward_args"],
                                      generator=generator, return_masks=True, **settings)
            trace = igos.last_trace
            assert trace is not None
            return (masks.detach().reshape(grid_shape).cpu(), int(trace.forward_images),
                    int(trace.backward_images))
        saliency = ranking(scorer.x, scorer.target) if callable(ranking) else ranking
        if not isinstance(saliency, Tensor):
            raise TypeError(f"ranking must be None, a tensor or a callable returning one, got "
                            f"{type(saliency).__name__}.")
        saliency = saliency.detach().float()
        while saliency.dim() < len(grid_shape) + 2:
            saliency = saliency.unsqueeze(0)
        if saliency.dim() != len(grid_shape) + 2 or saliency.shape[0] != 1:
            raise ValueError(f"ranking saliency of shape {tuple(saliency.shape)} does not match a "
                             f"single example with {len(grid_shape)} spatial dims.")
        pool = {1: torch.nn.functional.adaptive_avg_pool1d, 2: torch.nn.functional.adaptive_avg_pool2d,
                3: torch.nn.functional.adaptive_avg_pool3d}[len(grid_shape)]
        pooled = pool(saliency.mean(1, keepdim=True), grid_shape)
        return -pooled.reshape(grid_shape).cpu(), 0, 0

    def _run(self, scorer: PatchScorer, ranking: RankingArg, ranking_kwargs: Optional[dict[str, Any]],
             generator: Optional[torch.Generator], show_progress: bool,
             options: dict[str, Any]) -> SAGResult:
        ranks, rank_fwd, rank_bwd = self._ranking(scorer, ranking, ranking_kwargs, generator, options)
        order = sorted(range(ranks.numel()), key=lambda p: (float(ranks.flatten()[p]), p))
        threshold = options["tau"] * scorer.p_full
        with tqdm(total=options["max_root_size"], desc="SAG search", disable=not show_progress) as bar:
            roots = beam_search(
                scorer, order, threshold, beam_width=options["beam_width"],
                num_successors=options["num_successors"], max_num_roots=options["max_num_roots"],
                max_root_size=options["max_root_size"], exact_official=options["exact_official"],
                dedupe_beam=options["dedupe_beam"],
                progress=lambda found: (bar.update(1), bar.set_postfix(roots=found)))
        chosen = [roots[i] for i in select_diverse(roots, options["overlap_thresh"])]
        chosen = chosen[:options["num_roots_sag"]]
        tree = removal_tree(scorer, chosen, node_prob_thresh=options["node_prob_thresh"],
                            max_children=options["max_children"], max_depth=options["max_depth"],
                            merge_identical=options["merge_identical"],
                            max_nodes=options["max_nodes"])
        p_full = scorer.p_full

        def relative(p: float) -> float:
            return p / p_full if p_full > 0 else 0.0

        def explanation(bits: int) -> Explanation:
            p = scorer.score(bits)
            return Explanation(patches_of(bits), mask_of(bits, scorer.grid_shape), p, relative(p))

        nodes = [SAGNode(n.id, patches_of(n.bits), n.p, relative(n.p),
                         int(100.0 * relative(n.p)), n.is_root, n.depth, tuple(n.children))
                 for n in tree]
        edges = [SAGEdge(n.id, child, removed, drop) for n in tree for child, removed, drop in n.children]
        return SAGResult(
            grid_shape=scorer.grid_shape, target=scorer.target, p_full=p_full, threshold=threshold,
            roots=[explanation(b) for b in roots], explanations=[explanation(b) for b in chosen],
            nodes=nodes, edges=edges, ranking=ranks, forward_images=scorer.forward_images,
            ranking_forward_images=rank_fwd, ranking_backward_images=rank_bwd,
            states_scored=len(scorer.cache), score_requests=scorer.requests,
            input_shape=tuple(scorer.x.shape))

"""The SAG search steps on bitmask patch sets: beam search for minimal sufficient explanations,
greedy 1-minimisation, diversity selection and the one-patch-removal tree (spec §3–§5)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from captum_ext.structures._patches import PatchScorer, patches_of

__all__ = ["beam_search", "minimise", "select_diverse", "removal_tree", "TreeNode"]

logger = logging.getLogger(__name__)


def minimise(scorer: PatchScorer, bits: int, threshold: float) -> int:
    """Greedy 1-minimisation: scan the patches in raster order, drop each one whose removal keeps
    ``p > threshold``; repeat passes until one removes nothing.

    The scan is batched speculatively: the next single removals of the current set (from the
    scan position on, in raster order) are scored together, in chunks that start at one set and
    double while no removal in them stays sufficient. The first sufficient one is exactly the
    patch a sequential scan would drop (the set is unchanged up to it), so the result is the
    sequential one, with at most about twice its distinct forwards in O(log |S|) passes per drop.
    """
    while True:
        removed_any, position, chunk = False, 0, 1
        while True:
            ids = [p for p in patches_of(bits) if p >= position][:chunk]
            if not ids:
                break
            candidates = [bits & ~(1 << p) for p in ids]
            scores = scorer.scores(candidates)
            hit = next((i for i, s in enumerate(scores) if s > threshold), None)
            if hit is None:
                position, chunk = ids[-1] + 1, chunk * 2
                continue
            bits, position, removed_any, chunk = candidates[hit], ids[hit] + 1, True, 1
        if not removed_any:
            return bits


def beam_search(
    scorer: PatchScorer,
    order: Sequence[int],
    threshold: float,
    *,
    beam_width: int,
    num_successors: int,
    max_num_roots: int,
    max_root_size: int,
    exact_official: bool,
    dedupe_beam: bool,
    progress: Optional[Callable[[int], None]] = None,
) -> list[int]:
    """Minimal sufficient sets (bitmasks) in discovery order (higher p first within a depth)."""
    beam: list[int] = [0]
    roots: list[int] = []
    keep = beam_width + 1 if exact_official else beam_width
    for _depth in range(max_root_size):
        successors: list[int] = []
        for bits in beam:
            free = [p for p in order if not bits >> p & 1][:num_successors]
            successors.extend(bits | 1 << p for p in free)
        if not successors:
            break
        scores = scorer.scores(successors)
        ranked = sorted(zip(successors, scores), key=lambda item: -item[1])  # stable
        new_beam: list[int] = []
        for bits, score in ranked:
            if score > threshold:
                root = minimise(scorer, bits, threshold)
                if root not in roots:
                    roots.append(root)
            elif len(new_beam) < keep and not (dedupe_beam and bits in new_beam):
                new_beam.append(bits)
        beam = new_beam
        if progress is not None:
            progress(len(roots))
        if len(roots) > max_num_roots or not beam:
            break
    return roots


def select_diverse(roots: Sequence[int], overlap_thresh: int) -> list[int]:
    """Indices of the largest subset with all pairwise overlaps ``|S_i ∩ S_j| <= overlap_thresh``;
    ties go to the first subset in index (lexicographic) order."""
    n = len(roots)
    compatible = [
        sum(1 << j for j in range(n)
            if j != i and bin(roots[i] & roots[j]).count("1") <= overlap_thresh)
        for i in range(n)
    ]
    best: list[int] = []

    def extend(chosen: list[int], allowed: int, start: int) -> None:
        nonlocal best
        if len(chosen) > len(best):
            best = list(chosen)
        for j in range(start, n):
            remaining = bin(allowed >> j).count("1")
            if len(chosen) + remaining <= len(best):
                return
            if allowed >> j & 1:
                chosen.append(j)
                extend(chosen, allowed & compatible[j], j + 1)
                chosen.pop()

    extend([], (1 << n) - 1, 0)
    return best


@dataclass
class TreeNode:
    id: int
    bits: int
    p: float
    is_root: bool
    depth: int
    children: list[tuple[int, int, float]] = field(default_factory=list)


def removal_tree(
    scorer: PatchScorer,
    roots: Sequence[int],
    *,
    node_prob_thresh: float,
    max_children: int,
    max_depth: Optional[int],
    merge_identical: bool,
    max_nodes: Optional[int] = None,
) -> list[TreeNode]:
    """Breadth-first one-patch-removal expansion; the children of a level are scored together.

    A node is expanded when its relative confidence ``p/p_full`` (in %) exceeds
    ``node_prob_thresh``, it has more than one patch and is above ``max_depth``; its children
    remove one of its first ``max_children`` patches (raster order). ``drop`` on an edge is
    parent % − child %, with % = ⌊100·p/p_full⌋.

    ``max_nodes`` bounds the graph: a tree grows up to ``max_children`` times per level while
    the confidence stays above the threshold, so a confident root of ``n`` patches can have
    ``max_children^n`` descendants, each one forward pass. When the next level would pass the
    bound, only its first children (breadth-first order) are scored, expansion stops there and
    a ``UserWarning`` says so.
    """
    p_full = scorer.p_full
    nodes: list[TreeNode] = []
    by_bits: dict[int, int] = {}

    def percent(p: float) -> int:
        return int(100.0 * p / p_full) if p_full > 0 else 0

    level_scores = scorer.scores(list(roots))
    frontier: list[int] = []
    for bits, p in zip(roots, level_scores):
        nodes.append(TreeNode(len(nodes), bits, p, True, 0))
        by_bits.setdefault(bits, nodes[-1].id)
        frontier.append(nodes[-1].id)
    while frontier:
        pending: list[tuple[int, int, int]] = []  # parent id, removed patch, child bits
        for node_id in frontier:
            node = nodes[node_id]
            ids = patches_of(node.bits)
            if (len(ids) <= 1 or percent(node.p) <= node_prob_thresh
                    or (max_depth is not None and node.depth >= max_depth)):
                continue
            pending.extend((node_id, p, node.bits & ~(1 << p)) for p in ids[:max_children])
        truncated = max_nodes is not None and len(nodes) + len(pending) > max_nodes
        if truncated:
            assert max_nodes is not None
            message = (f"the SAG's removal graph reached max_nodes={max_nodes} at depth "
                       f"{nodes[pending[0][0]].depth + 1}; deeper nodes were not expanded. "
                       "Raise max_nodes, or set max_depth or a higher node_prob_thresh.")
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=3)
            pending = pending[:max(0, max_nodes - len(nodes))]
        scores = scorer.scores([bits for _, _, bits in pending])
        frontier = []
        for (parent_id, removed, bits), p in zip(pending, scores):
            parent = nodes[parent_id]
            if merge_identical and bits in by_bits:
                child_id = by_bits[bits]
            else:
                nodes.append(TreeNode(len(nodes), bits, p, False, parent.depth + 1))
                child_id = nodes[-1].id
                by_bits.setdefault(bits, child_id)
                frontier.append(child_id)
            parent.children.append((child_id, removed, float(percent(parent.p) - percent(p))))
        if truncated:
            break
    return nodes

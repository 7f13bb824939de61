"""A small DBSCAN in torch (Ester et al., KDD 1996), with scikit-learn's semantics.

CF-CAM clusters at most a few thousand channel vectors per example, so a dense implementation is
enough and keeps the package free of a scikit-learn dependency:

1. pairwise Euclidean distances with ``torch.cdist``; ``j`` is a neighbour of ``i`` when
   ``d(i, j) <= eps`` (inclusive, as scikit-learn's radius queries), and every point is its own
   neighbour;
2. a point is a *core* point when it has at least ``min_samples`` neighbours, itself included
   (scikit-learn counts the point itself);
3. clusters are the connected components of the core points under the neighbour relation,
   found by min-label propagation with pointer jumping, all in tensor operations;
4. clusters are numbered ``0, 1, ...`` in the order of their lowest-index core point, the order
   in which scikit-learn's scan over the points discovers them;
5. a non-core point within ``eps`` of a core point is a *border* point. scikit-learn expands a
   whole cluster before it starts the next, so a border point reachable from several clusters
   joins the one discovered first: the lowest-numbered one. Everything else is noise, ``-1``.

With these rules the labels equal ``sklearn.cluster.DBSCAN(eps, min_samples).fit(x).labels_``
exactly, border points included (tested when scikit-learn is installed).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dbscan", "dbscan_precomputed", "pairwise_distances"]


def dbscan(points: Tensor, eps: float, min_samples: int) -> Tensor:
    """Cluster the rows of ``points`` ``(P, D)``; returns labels ``(P,)`` (int64, ``-1`` = noise).

    Distances are computed exactly (no ``|x|² + |y|² - 2xy`` shortcut), so that points at
    distance exactly ``eps`` are neighbours.

    Args:
        points: one point per row.
        eps: neighbourhood radius (inclusive).
        min_samples: neighbours, the point itself included, that make a core point.
    """
    if points.dim() != 2:
        raise ValueError(f"points must be (P, D), got shape {tuple(points.shape)}.")
    points = points.detach()
    if points.dtype not in (torch.float32, torch.float64):
        points = points.float()
    return dbscan_precomputed(pairwise_distances(points), eps, min_samples)


def pairwise_distances(points: Tensor) -> Tensor:
    """Exact Euclidean distances between the rows of ``points`` ``(P, D)``: ``(P, P)``."""
    return torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")


def dbscan_precomputed(distances: Tensor, eps: float, min_samples: int) -> Tensor:
    """DBSCAN on a precomputed ``(P, P)`` distance matrix (scikit-learn's
    ``metric="precomputed"``); returns labels ``(P,)``, ``-1`` for noise."""
    if distances.dim() != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be (P, P), got shape {tuple(distances.shape)}.")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}.")
    count = distances.shape[0]
    device = distances.device
    labels = torch.full((count,), -1, dtype=torch.long, device=device)
    if count == 0:
        return labels
    neighbours = distances.detach() <= eps
    neighbours.fill_diagonal_(True)
    core = neighbours.sum(1) >= min_samples
    if not bool(core.any()):
        return labels

    index = torch.arange(count, device=device)
    core_links = neighbours & core.unsqueeze(0) & core.unsqueeze(1)
    # Min-label propagation over the core graph; pointer jumping (root = root[root]) halves
    # the number of rounds on long chains. Non-core points keep their own index and are unused.
    sentinel = torch.full_like(index, count)
    root = torch.where(core, index, sentinel)
    while True:
        reached = torch.where(core_links, root.unsqueeze(0), sentinel.unsqueeze(0)).amin(1)
        updated = torch.where(core, torch.minimum(root, reached), sentinel)
        updated = torch.where(core, updated[updated.clamp(max=count - 1)], sentinel)
        if torch.equal(updated, root):
            break
        root = updated

    # Number the clusters by their lowest core index (each root is that index).
    roots = torch.unique(root[core])  # sorted ascending
    cluster_of_root = torch.full((count + 1,), -1, dtype=torch.long, device=device)
    cluster_of_root[roots] = torch.arange(roots.numel(), device=device)
    labels[core] = cluster_of_root[root[core]]

    # Border points: the lowest cluster label among their core neighbours.
    border = ~core & (neighbours & core.unsqueeze(0)).any(1)
    if bool(border.any()):
        big = roots.numel()
        core_label = torch.where(core, labels, torch.full_like(labels, big))
        candidate = torch.where(
            neighbours[border] & core.unsqueeze(0), core_label.unsqueeze(0), big
        ).amin(1)
        labels[border] = candidate
    return labels

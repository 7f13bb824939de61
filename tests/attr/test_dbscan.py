"""The small torch DBSCAN used by CF-CAM: hand-made examples, and scikit-learn when installed."""

from __future__ import annotations

import pytest
import torch

from captum_ext.attr._dbscan import dbscan, dbscan_precomputed, pairwise_distances


def labels_of(values, eps, min_samples):
    points = torch.tensor(values, dtype=torch.float64).reshape(len(values), -1)
    return dbscan(points, eps, min_samples).tolist()


def test_hand_made_clusters_border_point_and_noise():
    # Cluster B is listed first, so it is discovered first and numbered 0. The point 2.0 has
    # only 3 neighbours (1.0, itself, 3.0) < min_samples = 4: a border point of both clusters,
    # which joins the one discovered first (scikit-learn expands a cluster completely).
    values = [3.0, 3.4, 3.7, 4.0, 0.0, 0.3, 0.6, 1.0, 2.0, 20.0]
    assert labels_of(values, eps=1.0, min_samples=4) == [0, 0, 0, 0, 1, 1, 1, 1, 0, -1]
    # Listing A first swaps the numbering, and the border point follows A.
    reordered = values[4:8] + values[:4] + values[8:]
    assert labels_of(reordered, eps=1.0, min_samples=4) == [0, 0, 0, 0, 1, 1, 1, 1, 0, -1]


def test_min_samples_counts_the_point_itself():
    assert labels_of([0.0, 10.0], eps=1.0, min_samples=1) == [0, 1]
    assert labels_of([0.0, 0.5, 10.0], eps=1.0, min_samples=2) == [0, 0, -1]


def test_eps_is_inclusive():
    assert labels_of([0.0, 1.0], eps=1.0, min_samples=2) == [0, 0]
    assert labels_of([0.0, 1.0], eps=0.999, min_samples=2) == [-1, -1]


def test_chains_are_one_cluster():
    # A chain of core points, listed in scrambled order, is connected through many rounds.
    values = [float(v) for v in [7, 0, 5, 2, 9, 1, 8, 3, 6, 4]] + [30.0]
    assert labels_of(values, eps=1.0, min_samples=2) == [0] * 10 + [-1]


def test_empty_and_bad_arguments():
    assert dbscan(torch.zeros(0, 3), 1.0, 2).shape == (0,)
    with pytest.raises(ValueError, match="eps"):
        dbscan(torch.zeros(2, 3), 0.0, 2)
    with pytest.raises(ValueError, match="min_samples"):
        dbscan(torch.zeros(2, 3), 1.0, 0)
    with pytest.raises(ValueError, match=r"\(P, D\)"):
        dbscan(torch.zeros(2), 1.0, 2)
    with pytest.raises(ValueError, match=r"\(P, P\)"):
        dbscan_precomputed(torch.zeros(2, 3), 1.0, 2)


def test_matches_scikit_learn_when_installed():
    cluster = pytest.importorskip("sklearn.cluster")
    for seed in range(40):
        generator = torch.Generator().manual_seed(seed)
        count = int(torch.randint(2, 60, (1,), generator=generator))
        points = torch.randn(count, 3, generator=generator, dtype=torch.float64)
        if seed % 2:
            points = (points * 2).round() / 2  # many distances exactly at eps
        distances = pairwise_distances(points)
        off_diagonal = distances[~torch.eye(count, dtype=torch.bool)]
        eps = max(float(torch.quantile(off_diagonal, 0.25)), 1e-5)
        min_samples = 1 + seed % 6
        expected = cluster.DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(
            distances.numpy()
        ).labels_
        assert dbscan_precomputed(distances, eps, min_samples).tolist() == expected.tolist()

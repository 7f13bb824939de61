"""CF-CAM (He, Pan, Yao, "CF-CAM: Cluster Filter Class Activation Mapping for Reliable
Gradient-Based Interpretability", arXiv 2504.00060), following the released code
(jerryp-hfut/CF-CAM, MIT) step by step; see ``cam-family.md`` §12."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor

from captum_ext._captum import TargetType
from captum_ext.attr._cam_base import LayerCamBase
from captum_ext.attr._dbscan import dbscan_precomputed, pairwise_distances

__all__ = [
    "FILTERS",
    "LayerCFCam",
    "WEIGHT_NORMS",
    "cf_cam_channel_weights",
    "cluster_filter",
    "filter_kernels",
]

WEIGHT_NORMS = ("softmax", "softmax_standardized", "softmax_temperature", "none")
FILTERS = ("code", "gaussian", "none")
#: labels of :class:`CFCamWeights`: tier-1 channels; DBSCAN noise (dropped) is -1.
IMPORTANT = -2


class CFCamWeights(NamedTuple):
    """The intermediate results of CF-CAM for one example (``K`` channels)."""

    norms: Tensor  # (K,) channel norms ‖A_k‖₂
    important: Tensor  # (K,) bool, tier 1: norm >= the importance percentile
    eps: float  # DBSCAN radius (the distance percentile of tier 2, at least 1e-5)
    min_samples: int  # DBSCAN min_samples, max(2, ⌊fraction·|R|⌋)
    labels: Tensor  # (K,) int64: -2 tier 1, -1 noise (dropped), >= 0 cluster id
    raw_weights: Tensor  # (K,) ŵ (0 for dropped channels)
    weights: Tensor  # (K,) final weights (0 for dropped channels)


def cf_cam_channel_weights(
    activation: Tensor,
    gradient: Tensor,
    *,
    weight_norm: str = "softmax_standardized",
    temperature: float = 1.0,
    filter: str = "code",
    sigma_spatial: float = 5.0,
    sigma_range: float = 0.1,
    gaussian_sigma: float = 1.0,
    importance_percentile: float = 75.0,
    distance_percentile: float = 25.0,
    min_samples_fraction: float = 0.05,
) -> CFCamWeights:
    """CF-CAM channel weights of one example: ``activation`` and ``gradient`` are ``(K, *S)``.

    Steps (§12): channel norms; tier 1 ``I = {k: n_k ≥ P75(n)}`` (linear-interpolation
    percentile, as numpy); DBSCAN over the other channels ``R`` with ``eps`` the 25th
    percentile of their pairwise distances (off-diagonal, both triangles, as the code) and
    ``min_samples = max(2, ⌊0.05·|R|⌋)``; noise channels dropped; tier-1 weights
    ``mean_u g^k_u``; cluster weights ``mean_u Φ(mean_{k∈Q} g^k)_u``; then ``weight_norm``.
    """
    channels = activation.shape[0]
    features = activation.detach().reshape(channels, -1)
    if features.dtype not in (torch.float32, torch.float64):
        features = features.float()
    norms = features.norm(dim=1)
    threshold = torch.quantile(norms, importance_percentile / 100.0)
    important = norms >= threshold
    rest = (~important).nonzero().squeeze(1)
    labels = torch.full((channels,), IMPORTANT, dtype=torch.long, device=activation.device)
    eps, min_samples = 1e-5, 2
    if rest.numel() > 0:
        distances = pairwise_distances(features[rest])
        if rest.numel() > 1:
            pairs = torch.triu_indices(rest.numel(), rest.numel(), 1, device=rest.device)
            upper = distances[pairs[0], pairs[1]]
            eps = max(_percentile_of_both_triangles(upper, distance_percentile), 1e-5)
        min_samples = max(2, int(math.floor(min_samples_fraction * rest.numel())))
        labels[rest] = dbscan_precomputed(distances, eps, min_samples)

    flat_gradient = gradient.reshape(channels, -1)
    raw = torch.where(important, flat_gradient.mean(1), torch.zeros_like(flat_gradient[:, 0]))
    cluster_count = int(labels.max().item()) + 1 if labels.numel() else 0
    if cluster_count > 0:
        members = labels.clamp(min=0)
        in_cluster = labels >= 0
        sums = gradient.new_zeros((cluster_count,) + tuple(gradient.shape[1:]))
        sums = sums.index_add(0, members[in_cluster], gradient[in_cluster])
        sizes = torch.bincount(members[in_cluster], minlength=cluster_count).to(gradient.dtype)
        means = sums / sizes.reshape((-1,) + (1,) * (gradient.dim() - 1))
        filtered = cluster_filter(
            means, filter, sigma_spatial=sigma_spatial, sigma_range=sigma_range,
            gaussian_sigma=gaussian_sigma,
        )
        cluster_weights = filtered.reshape(cluster_count, -1).mean(1)
        raw = torch.where(in_cluster, cluster_weights[members], raw)
    kept = labels != -1
    weights = normalise_weights(raw, kept, weight_norm, temperature)
    return CFCamWeights(norms, important, eps, min_samples, labels, raw, weights)


def _percentile_of_both_triangles(upper: Tensor, percentile: float) -> float:
    """numpy's linear percentile of the off-diagonal distances, both triangles (each value of
    ``upper`` twice, as the code's ``distances[distances != inf]``), by two ``kthvalue``
    selections instead of a sort of ``P(P-1)`` values."""
    doubled = 2 * upper.numel()
    position = percentile / 100.0 * (doubled - 1)
    low = int(math.floor(position))
    high = min(low + 1, doubled - 1)
    # the sorted doubled list is u(0), u(0), u(1), u(1), ...: its entry j is u(j // 2)
    low_value = float(torch.kthvalue(upper, low // 2 + 1).values)
    high_value = low_value
    if high // 2 != low // 2:
        high_value = float(torch.kthvalue(upper, high // 2 + 1).values)
    return low_value + (high_value - low_value) * (position - low)


def normalise_weights(raw: Tensor, kept: Tensor, weight_norm: str, temperature: float) -> Tensor:
    """Turn the raw weights ``ŵ`` of the kept channels ``V`` into the final weights."""
    if weight_norm == "none":
        return torch.where(kept, raw, torch.zeros_like(raw))
    values = raw[kept]
    if weight_norm == "softmax_standardized":
        spread = values.std(unbiased=False) if values.numel() > 1 else values.new_zeros(())
        values = torch.where(spread > 0, (values - values.mean()) / spread.clamp(min=1e-30), 0.0)
        values = values / temperature
    elif weight_norm == "softmax_temperature":
        values = values / temperature
    weights = torch.zeros_like(raw)
    weights[kept] = torch.softmax(values, dim=0)
    return weights


def filter_kernels(
    maps: Tensor,
    filter: str = "code",
    *,
    sigma_spatial: float = 5.0,
    sigma_range: float = 0.1,
    gaussian_sigma: float = 1.0,
) -> Tensor:
    """The kernel of each map of ``(M, *S)``: ``(M, *S)``, each summing to 1 (see
    :func:`cluster_filter`)."""
    spatial = tuple(maps.shape[1:])
    coordinates = torch.meshgrid(
        *[torch.arange(size, device=maps.device, dtype=maps.dtype) - size / 2 for size in spatial],
        indexing="ij",
    )
    squared = sum(c * c for c in coordinates)
    if filter == "code":
        spatial_term = torch.exp(-squared / (2 * sigma_spatial**2))
        means = maps.reshape(maps.shape[0], -1).mean(1).reshape((-1,) + (1,) * len(spatial))
        kernels = spatial_term * torch.exp(-((maps - means) ** 2) / (2 * sigma_range**2))
    elif filter == "gaussian":
        kernels = torch.exp(-squared / (2 * gaussian_sigma**2)).expand_as(maps)
    else:
        raise ValueError(f"filter must be 'code' or 'gaussian', got {filter!r}.")
    totals = kernels.reshape(kernels.shape[0], -1).sum(1).reshape((-1,) + (1,) * len(spatial))
    return torch.where(totals > 0, kernels / totals.clamp(min=1e-30), 0.0)


def cluster_filter(
    maps: Tensor,
    filter: str = "code",
    *,
    sigma_spatial: float = 5.0,
    sigma_range: float = 0.1,
    gaussian_sigma: float = 1.0,
) -> Tensor:
    """Filter each map of ``(M, *S)`` (one mean cluster gradient per row), zero-padded "same".

    * ``"code"`` (the released code's "bilateral" filter): one kernel the size of the map, a
      spatial Gaussian (σ_s) centred at ``S/2`` times the range term
      ``exp(−(Ḡ − mean Ḡ)² / (2σ_r²))`` evaluated on the map itself, normalised to sum 1
      (the code adds 1e-6 to the sum), applied as a cross-correlation (``F.conv*d`` with
      ``padding="same"``: the extra pixel of an even size is padded last);
    * ``"gaussian"`` (the paper's wording): a normalised Gaussian of σ = ``gaussian_sigma``
      (unverified: the paper's σ and size are not in the retrieved text), the size of the map;
    * ``"none"``: no filtering.
    """
    if filter == "none":
        return maps
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}.")
    spatial = tuple(maps.shape[1:]) or (1,)
    grid = maps.reshape((maps.shape[0],) + spatial)
    kernels = filter_kernels(
        grid, filter, sigma_spatial=sigma_spatial, sigma_range=sigma_range,
        gaussian_sigma=gaussian_sigma,
    )
    padding: list[int] = []
    for size in reversed(spatial):
        padding += [(size - 1) // 2, (size - 1) - (size - 1) // 2]
    convolution = (F.conv1d, F.conv2d, F.conv3d)[len(spatial) - 1]
    filtered = convolution(
        F.pad(grid.unsqueeze(0), padding), kernels.unsqueeze(1), groups=grid.shape[0]
    )
    return filtered.squeeze(0).reshape(maps.shape)


class LayerCFCam(LayerCamBase):
    r"""CF-CAM: Grad-CAM weights on the strongest channels, DBSCAN-clustered and filtered
    gradient weights on the others, noise channels dropped.

    Per example (clustering is per example; the official code handles only element 0), with
    ``g = ∂y^c/∂A`` for the target logit: tier 1 ``I`` are the channels whose norm
    ``‖A_k‖₂`` is at least the 75th percentile, with weight ``ŵ_k = mean_u g^k_u``; the other
    channels are clustered with DBSCAN (``eps`` = 25th percentile of their pairwise distances,
    ``min_samples = max(2, ⌊0.05·|R|⌋)``); noise channels are dropped; every member of a
    cluster ``Q`` gets ``ŵ_k = mean_u Φ(mean_{j∈Q} g^j)_u`` with the filter ``Φ``
    (:func:`cluster_filter`); finally ``L = Σ_{k∈V} w_k A^k`` with ``w = norm(ŵ_V)``.
    DBSCAN is the small torch implementation of :mod:`captum_ext.attr._dbscan` (scikit-learn's
    semantics, no extra dependency).

    **Weighting (``weight_norm``) and the default.** The code's ``softmax(ŵ)`` (temperature 1,
    ``weight_norm="softmax"``) is nearly uniform, because logit gradients are tiny
    (``|ŵ| ~ 1e-3``): the map becomes ``≈ mean_{k∈V} A^k`` and is **class-agnostic**. On
    EfficientNet-Lite0 (layer ``_bn1``, the cat photo, class 285 against 967) the raw maps of
    the two classes correlate 1.000 with it (``tests/attr/test_cf_cam.py``). The default is
    therefore ``"softmax_standardized"``: ``ŵ`` is z-scored within ``V``, then
    ``softmax(z / τ)``; it keeps the paper's positive, sum-to-one weights, and the same two
    maps correlate -0.36 (class-discriminative). ``"none"`` uses the raw ``ŵ`` (Grad-CAM-like,
    two-signed; -0.39 there) and ``"softmax_temperature"`` is ``softmax(ŵ / τ)`` (1.000 at
    τ = 1, 0.989 at 1e-4, -0.51 at 1e-5: τ must be of the order of the spread of ``ŵ``,
    2.4e-5 there, which depends on the model; standardising removes that scale). Use
    ``weight_norm="softmax"`` for parity with the released code; it warns when the weights
    are uniform to 1 %. ``_bn1`` is a pre-activation layer, so these maps are mostly negative.

    Other options: ``filter`` (``"code"`` default, ``"gaussian"``, ``"none"``) and its
    ``sigma_spatial=5.0``, ``sigma_range=0.1`` (the code's values) and ``gaussian_sigma``;
    the tier and DBSCAN percentiles. The code's test-only ``noise_level`` is not offered.
    The code ReLUs, upsamples and max-normalises; here the map is raw at layer resolution
    (``relu_attributions=True`` applies the ReLU).
    """

    @log_usage(part_of_slo=False)
    def attribute(  # type: ignore[override]
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        grad_kwargs: Optional[dict[str, Any]] = None,
        weight_norm: str = "softmax_standardized",
        temperature: float = 1.0,
        filter: str = "code",
        sigma_spatial: float = 5.0,
        sigma_range: float = 0.1,
        gaussian_sigma: float = 1.0,
        importance_percentile: float = 75.0,
        distance_percentile: float = 25.0,
        min_samples_fraction: float = 0.05,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        """As :meth:`LayerCamBase.attribute`, plus the options of the class docstring."""
        if weight_norm not in WEIGHT_NORMS:
            raise ValueError(f"weight_norm must be one of {WEIGHT_NORMS}, got {weight_norm!r}.")
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}.")
        for name, value in (
            ("temperature", temperature), ("sigma_spatial", sigma_spatial),
            ("sigma_range", sigma_range), ("gaussian_sigma", gaussian_sigma),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}.")
        for name, value in (
            ("importance_percentile", importance_percentile),
            ("distance_percentile", distance_percentile),
        ):
            if not 0 <= value <= 100:
                raise ValueError(f"{name} must be in [0, 100], got {value}.")
        if not 0 <= min_samples_fraction <= 1:
            raise ValueError(f"min_samples_fraction must be in [0, 1], got {min_samples_fraction}.")
        return self._attribute_cam(
            inputs, target, additional_forward_args, attribute_to_layer_input,
            relu_attributions, grad_kwargs, weight_norm=weight_norm,
            temperature=float(temperature), filter=filter, sigma_spatial=float(sigma_spatial),
            sigma_range=float(sigma_range), gaussian_sigma=float(gaussian_sigma),
            importance_percentile=float(importance_percentile),
            distance_percentile=float(distance_percentile),
            min_samples_fraction=float(min_samples_fraction),
        )

    def _combine(self, activation: Tensor, stats: Any, **options: Any) -> Tensor:
        options.pop("target", None)
        rank_two = activation.dim() == 2
        if rank_two:
            activation, stats = activation.unsqueeze(-1), stats.unsqueeze(-1)
        weights = torch.stack(
            [cf_cam_channel_weights(a, g, **options).weights for a, g in zip(activation, stats)]
        )
        if options["weight_norm"] == "softmax":
            _warn_if_uniform(weights)
        cam = (weights.reshape(weights.shape + (1,) * (activation.dim() - 2)) * activation).sum(
            1, keepdim=True
        )
        return cam.squeeze(-1) if rank_two else cam


def _warn_if_uniform(weights: Tensor) -> None:
    kept = weights > 0
    for row, mask in zip(weights, kept):
        values = row[mask]
        if values.numel() > 1 and float(values.max() / values.min()) - 1 < 1e-2:
            warnings.warn(
                "CF-CAM softmax weights are uniform to 1 %: the map is the mean of the kept "
                "activations and does not depend on the class. Use "
                "weight_norm='softmax_standardized' (the default) or 'none' for a "
                "class-discriminative map.",
                UserWarning,
                stacklevel=4,
            )
            return

"""The catalogue of methods: what the CLI lists, the demo runs and the benchmarks compare.

Each entry says how to build the method for a model whose last feature map is ``layer`` (pooled
into ``classifier``), which keyword arguments make a sensible default call, its paper, its cost
class and the data ranks it supports. Adding a method to the package means adding one entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from captum.attr import Attribution, LayerGradCam
from torch import Tensor, nn

from captum_ext import attr

__all__ = ["METHODS", "MethodInfo", "get_method"]


@dataclass(frozen=True)
class MethodInfo:
    """One method of the catalogue."""

    name: str
    build: Callable[[nn.Module, nn.Module, nn.Module], Attribution]
    paper: str
    cost: str
    ranks: str = "1D, 2D, 3D, rank-2"
    kind: str = "layer CAM"
    attribute_kwargs: dict[str, Any] = field(default_factory=dict)
    is_captum_builtin: bool = False
    #: one forward pass per channel: the demo runs it on a subset of the photos by default.
    expensive: bool = False

    @property
    def uses_layer(self) -> bool:
        """Whether the method explains a layer (and takes ``attribute_to_layer_input``)."""
        return self.kind.startswith("layer")

    def run(
        self,
        method: Attribution,
        inputs: Tensor,
        target: Any,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
    ) -> Tensor:
        """Call ``method.attribute`` with the catalogue's defaults and the options it takes."""
        kwargs = dict(self.attribute_kwargs)
        if self.uses_layer:
            kwargs["attribute_to_layer_input"] = attribute_to_layer_input
            if self.kind == "layer CAM":
                kwargs["relu_attributions"] = relu_attributions
        result = method.attribute(inputs, target=target, **kwargs)  # type: ignore[attr-defined]
        return (result[0] if isinstance(result, tuple) else result).detach()


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in [
        MethodInfo(
            "LayerGradCam",
            lambda model, layer, head: LayerGradCam(model, layer),
            "Selvaraju et al., ICCV 2017 (Captum's own, the reference)",
            "1 forward + 1 backward",
            is_captum_builtin=True,
        ),
        MethodInfo(
            "LayerGradCamPlusPlus",
            lambda model, layer, head: attr.LayerGradCamPlusPlus(model, layer),
            "Chattopadhyay et al., WACV 2018",
            "1 forward + 1 backward",
        ),
        MethodInfo(
            "LayerSmoothGradCamPlusPlus",
            lambda model, layer, head: attr.LayerSmoothGradCamPlusPlus(model, layer),
            "Omeiza et al., arXiv 1908.01224",
            "(n+1) forward + n backward, batched",
        ),
        MethodInfo(
            "LayerXGradCam",
            lambda model, layer, head: attr.LayerXGradCam(model, layer),
            "Fu et al., BMVC 2020",
            "1 forward + 1 backward",
        ),
        MethodInfo(
            "LayerHiResCam",
            lambda model, layer, head: attr.LayerHiResCam(model, layer),
            "Draelos & Carin, arXiv 2011.08891",
            "1 forward + 1 backward",
        ),
        MethodInfo(
            "LayerLayerCam",
            lambda model, layer, head: attr.LayerLayerCam(model, layer),
            "Jiang et al., IEEE TIP 2021",
            "1 forward + 1 backward",
        ),
        MethodInfo(
            "LayerEigenCam",
            lambda model, layer, head: attr.LayerEigenCam(model, layer),
            "Bany Muhammad & Yeasin, IJCNN 2020 (class-agnostic)",
            "1 forward + a thin SVD",
        ),
        MethodInfo(
            "LayerEigenGradCam",
            lambda model, layer, head: attr.LayerEigenGradCam(model, layer),
            "EigenGrad-CAM (pytorch-grad-cam's variant of Eigen-CAM on gradient x activation)",
            "1 forward + 1 backward + a thin SVD",
        ),
        MethodInfo(
            "LayerScoreCam",
            lambda model, layer, head: attr.LayerScoreCam(model, layer),
            "Wang et al., CVPR-W 2020",
            "1 + K forward (K channels), chunked, hook-free",
            attribute_kwargs={"batch_size": 64},
            expensive=True,
        ),
        MethodInfo(
            "LayerAblationCam",
            lambda model, layer, head: attr.LayerAblationCam(model, layer),
            "Desai & Ramaswamy, WACV 2020",
            "1 + K forward (K channels), chunked",
            attribute_kwargs={"batch_size": 64},
            expensive=True,
        ),
        MethodInfo(
            "LayerCFCam",
            lambda model, layer, head: attr.LayerCFCam(model, layer),
            "He, Pan, Yao, arXiv 2504.00060 (standardised softmax weighting by default)",
            "1 forward + 1 backward + per-example DBSCAN",
        ),
        MethodInfo(
            "LayerNormGrad",
            lambda model, layer, head: attr.LayerNormGrad(model, layer),
            "Rebuffi et al., CVPR 2020 (NormGrad; selective variant)",
            "1 forward + 1 backward (any number of layers)",
            kind="layer saliency",
            attribute_kwargs={"variant": "selective"},
        ),
        MethodInfo(
            "AttributionGuidedFactorization",
            lambda model, layer, head: attr.AttributionGuidedFactorization(model),
            "Gur, Ali, Wolf, AAAI 2021 (conv/linear/ReLU/pool/BN/residual models only)",
            "1 forward + a rule-modified backward with factorisations",
            ranks="1D, 2D, 3D",
            kind="input relevance",
        ),
        MethodInfo(
            "LayerClassActivationMap",
            lambda model, layer, head: attr.LayerClassActivationMap(model, layer, head),
            "Zhou et al., CVPR 2016 (needs a GAP + linear head)",
            "1 forward",
        ),
    ]
}


def get_method(name: str) -> MethodInfo:
    """Look a method up by name (case-insensitive); unknown names list the close ones."""
    import difflib

    by_lower = {key.lower(): key for key in METHODS}
    if name.lower() in by_lower:
        return METHODS[by_lower[name.lower()]]
    close = difflib.get_close_matches(name, list(METHODS), n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown method {name!r}.{hint} `captum-ext methods` lists them all.")

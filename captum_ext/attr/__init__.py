"""Attribution methods, each a Captum ``Attribution`` subclass.

Layer methods follow ``Method(forward_func, layer).attribute(inputs, target=..., ...)`` and return
raw maps at layer resolution, like Captum's ``LayerGradCam``; input methods (``IGOS``,
``IGOSPlusPlus``, ``AttributionGuidedFactorization``, ``NormGrad``) return maps with the
tuple-ness of the inputs.
"""

from captum_ext.attr._cam_base import LayerCamBase
from captum_ext.attr._patching import Component
from captum_ext.attr._propagation_rules import PropagationRuleNet
from captum_ext.attr.ablation_cam import LayerAblationCam
from captum_ext.attr.agf import AttributionGuidedFactorization
from captum_ext.attr.cam import LayerClassActivationMap
from captum_ext.attr.cf_cam import LayerCFCam
from captum_ext.attr.eigen_cam import LayerEigenCam, LayerEigenGradCam
from captum_ext.attr.gradient_cams import (
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerLayerCam,
    LayerXGradCam,
    fuse_layer_cams,
)
from captum_ext.attr.igos import IGOS, IGOSPlusPlus
from captum_ext.attr.inplace import disable_inplace
from captum_ext.attr.input_normgrad import NormGrad
from captum_ext.attr.interop import input_space_explanation, upsample_to_input
from captum_ext.attr.learned_propagation import LearnedPropagation
from captum_ext.attr.meta_saliency import MetaSaliency
from captum_ext.attr.normgrad import LayerNormGrad
from captum_ext.attr.relp import RelevancePatching
from captum_ext.attr.reshape import channels_last_to_first, tokens_to_grid
from captum_ext.attr.saliency_combination import combine_saliency_maps, layer_weights
from captum_ext.attr.score_cam import LayerScoreCam
from captum_ext.attr.score_cam_variants import LayerISCam, LayerSSCam
from captum_ext.attr.smooth_grad_cam_pp import LayerSmoothGradCamPlusPlus

__all__ = [
    "AttributionGuidedFactorization",
    "Component",
    "IGOS",
    "IGOSPlusPlus",
    "LayerAblationCam",
    "LayerCFCam",
    "LayerCamBase",
    "LayerClassActivationMap",
    "LayerEigenCam",
    "LayerEigenGradCam",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "LayerISCam",
    "LayerLayerCam",
    "LayerNormGrad",
    "LayerSSCam",
    "LayerScoreCam",
    "LayerSmoothGradCamPlusPlus",
    "LayerXGradCam",
    "MetaSaliency",
    "NormGrad",
    "RelevancePatching",
    "LearnedPropagation",
    "PropagationRuleNet",
    "channels_last_to_first",
    "combine_saliency_maps",
    "disable_inplace",
    "fuse_layer_cams",
    "input_space_explanation",
    "layer_weights",
    "tokens_to_grid",
    "upsample_to_input",
]

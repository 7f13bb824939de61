"""Attribution methods, each a Captum ``Attribution`` subclass.

Layer methods follow ``Method(forward_func, layer).attribute(inputs, target=..., ...)`` and return
raw maps at layer resolution, like Captum's ``LayerGradCam``.
"""

from captum_ext.attr._cam_base import LayerCamBase
from captum_ext.attr.cam import LayerClassActivationMap
from captum_ext.attr.gradient_cams import (
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerLayerCam,
    LayerXGradCam,
    fuse_layer_cams,
)
from captum_ext.attr.interop import input_space_explanation, upsample_to_input
from captum_ext.attr._propagation_rules import PropagationRuleNet
from captum_ext.attr.learned_propagation import LearnedPropagation
from captum_ext.attr.reshape import channels_last_to_first, tokens_to_grid
from captum_ext.attr.smooth_grad_cam_pp import LayerSmoothGradCamPlusPlus

__all__ = [
    "LayerCamBase",
    "LayerClassActivationMap",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "LayerLayerCam",
    "LayerSmoothGradCamPlusPlus",
    "LayerXGradCam",
    "LearnedPropagation",
    "PropagationRuleNet",
    "channels_last_to_first",
    "fuse_layer_cams",
    "input_space_explanation",
    "tokens_to_grid",
    "upsample_to_input",
]

"""The one module that reaches into Captum's private helpers.

Captum's underscore-prefixed helpers are, in practice, its extension API: every built-in method
uses them, but they are undocumented and have been renamed between releases (``_format_input``
became ``_format_tensor_into_tuples`` in 0.6, ``_parse_version`` became ``parse_version`` in
0.8). Everything in :mod:`captum_ext` imports them from here, so that a Captum upgrade touches
this file only. Public Captum names (``captum.attr``, ``captum.log``) may be imported directly.
"""

from __future__ import annotations

from captum._utils.common import (
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _format_output,
    _format_outputs,
    _format_tensor_into_tuples,
    _is_tuple,
    _run_forward,
    _select_targets,
    ExpansionTypes,
)
from captum._utils.gradient import (
    _forward_layer_eval,
    apply_gradient_requirements,
    compute_gradients,
    compute_layer_gradients_and_eval,
    undo_gradient_requirements,
)
from captum._utils.typing import (
    BaselineType,
    TargetType,
    TensorOrTupleOfTensorsGeneric,
)
from captum.attr._utils.common import _format_input_baseline

__all__ = [
    "BaselineType",
    "ExpansionTypes",
    "TargetType",
    "TensorOrTupleOfTensorsGeneric",
    "_expand_additional_forward_args",
    "_expand_target",
    "_format_additional_forward_args",
    "_format_input_baseline",
    "_format_output",
    "_format_outputs",
    "_format_tensor_into_tuples",
    "_forward_layer_eval",
    "_is_tuple",
    "_run_forward",
    "_select_targets",
    "apply_gradient_requirements",
    "compute_gradients",
    "compute_layer_gradients_and_eval",
    "undo_gradient_requirements",
]

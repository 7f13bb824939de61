"""Matplotlib visualisation of attributions; headless (no pyplot, an Agg canvas), Captum-compatible.

Every function returns the matplotlib ``Figure`` it drew on and accepts an existing Axes (``ax=``;
the grid takes ``fig=`` or ``axes=``). NumPy images follow ``captum.attr.visualization``'s
channels-last ``(H, W, C)`` convention, torch tensors are channels-first; layer-resolution maps are
upsampled to the data. All-zero maps are drawn blank with a note instead of raising.

- :func:`overlay_heatmap`, :func:`overlay_batch`: heatmaps over images (sign-aware colormap,
  alpha blending, colorbar, top-k% contour).
- :func:`comparison_grid`: images x methods, with caller-supplied titles (time, metrics).
- :func:`plot_deletion_insertion`, :func:`curve_area`: deletion/insertion curves and their AUC.
- :func:`plot_sag`: a Structured Attention Graph (matplotlib only).
- :func:`plot_signal_attribution`: 1D signals; :func:`plot_volume_attribution`: 3D volumes.
- :func:`to_captum_hwc`, :func:`to_captum_image`: inputs for ``captum.attr.visualization``.
"""

from captum_ext.visualization._convert import to_captum_hwc, to_captum_image
from captum_ext.visualization.curves import curve_area, plot_deletion_insertion
from captum_ext.visualization.grid import comparison_grid
from captum_ext.visualization.overlay import overlay_batch, overlay_heatmap
from captum_ext.visualization.sag import plot_sag
from captum_ext.visualization.signal import plot_signal_attribution
from captum_ext.visualization.volume import plot_volume_attribution

__all__ = [
    "comparison_grid",
    "curve_area",
    "overlay_batch",
    "overlay_heatmap",
    "plot_deletion_insertion",
    "plot_sag",
    "plot_signal_attribution",
    "plot_volume_attribution",
    "to_captum_hwc",
    "to_captum_image",
]

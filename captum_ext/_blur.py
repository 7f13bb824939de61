"""Rank-agnostic separable blurs, shared by the mask-optimisation methods and the metrics.

One code path for ``(N, C, L)``, ``(N, C, H, W)`` and ``(N, C, D, H, W)``: the 1-D kernel is
applied along each spatial axis in turn (a separable convolution), so a 51-tap blur costs
``3 · 51`` multiply-adds per pixel and axis instead of ``51²``.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "gaussian_kernel1d",
    "igos_blur",
    "igos_blur_parameters",
    "rise_blur",
    "rise_kernel1d",
    "separable_blur",
]

#: The I-GOS baseline blur at a 224-pixel side: kernel 51, σ = 50 (Qi et al., AAAI 2020 code).
IGOS_REFERENCE_SIDE = 224
IGOS_KERNEL_SIZE = 51
IGOS_SIGMA = 50.0


def gaussian_kernel1d(kernel_size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                      device: Union[torch.device, str, None] = None) -> Tensor:
    """The sampled, normalised Gaussian ``exp(-t²/2σ²)``, ``t = -(k-1)/2 .. (k-1)/2``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"the blur kernel size must be a positive odd int, got {kernel_size}.")
    if not sigma > 0:
        raise ValueError(f"the blur sigma must be positive, got {sigma}.")
    t = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def rise_kernel1d(kernel_size: int = 11, sigma: float = 5.0, *, dtype: torch.dtype = torch.float32,
                  device: Union[torch.device, str, None] = None) -> Tensor:
    """The RISE insertion kernel: a length-``k`` delta filtered by a Gaussian of ``σ``.

    This is what ``scipy.ndimage.gaussian_filter`` (truncate 4, ``mode='reflect'``, i.e.
    half-sample symmetric) makes of a centred delta, which is how the official RISE code builds
    its ``gkern(11, 5)``; the 2-D kernel is the outer product of this one with itself. The
    reflection folds the tails back in, so the kernel sums to 1 but is flatter than a sampled
    Gaussian.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"the RISE kernel size must be a positive odd int, got {kernel_size}.")
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = weights / weights.sum()
    centre = kernel_size // 2
    kernel = torch.zeros(kernel_size, dtype=torch.float64)
    for tap, weight in zip(taps.tolist(), weights.tolist()):
        # output[i] = Σ_j w_j · delta_ext[i + j]; delta_ext[m] = 1 where m reflects to the centre.
        for i in range(kernel_size):
            if _reflect_half_sample(i + int(tap), kernel_size) == centre:
                kernel[i] += weight
    return kernel.to(dtype=dtype, device=device)


def _reflect_half_sample(index: int, size: int) -> int:
    """scipy's ``reflect`` extension (``d c b a | a b c d | d c b a``)."""
    period = 2 * size
    index %= period
    return index if index < size else period - 1 - index


def separable_blur(x: Tensor, kernels: Sequence[Tensor], padding_mode: str = "reflect") -> Tensor:
    """Convolve every channel of ``(N, C, *S)`` with a 1-D kernel per spatial axis.

    ``padding_mode`` is ``"reflect"`` (reflect-101, OpenCV's default border and torchvision's
    ``gaussian_blur``), ``"replicate"`` or ``"zeros"``. Axes whose kernel has length 1 are
    skipped.
    """
    spatial = x.dim() - 2
    if spatial < 1 or len(kernels) != spatial:
        raise ValueError(
            f"need one kernel per spatial axis: got {len(kernels)} kernels for a tensor of shape "
            f"{tuple(x.shape)}."
        )
    out = x
    for axis, kernel in enumerate(kernels):
        size = kernel.numel()
        if size == 1:
            continue
        pad = size // 2
        dim = 2 + axis
        length = out.shape[dim]
        if padding_mode == "reflect" and pad >= length:
            raise ValueError(
                f"a blur kernel of {size} taps is too wide for a spatial size of {length} with "
                "reflect padding; pass a smaller kernel."
            )
        moved = out.movedim(dim, -1)
        lead_shape = moved.shape[:-1]
        rows = moved.reshape(-1, 1, length)
        if padding_mode == "zeros":
            rows = F.pad(rows, (pad, pad))
        else:
            rows = F.pad(rows, (pad, pad), mode=padding_mode)
        weight = kernel.to(dtype=x.dtype, device=x.device).flip(0).view(1, 1, size)
        rows = F.conv1d(rows, weight)
        out = rows.reshape(lead_shape + (length,)).movedim(-1, dim)
    return out


def igos_blur_parameters(spatial_shape: Sequence[int]) -> list[tuple[int, float]]:
    """Per-axis ``(kernel_size, sigma)`` of the I-GOS baseline blur, scaled with the size.

    At a side of 224 this is the reference's kernel 51, σ = 50; other sides scale both linearly
    (``k = 2·round(25·s/224) + 1``, ``σ = 50·s/224``), which keeps the blur's relative extent.
    (IGOS_pp switches to kernels 151 and 201 at 500 and 800 pixels instead.)
    """
    params = []
    for side in spatial_shape:
        scale = side / IGOS_REFERENCE_SIDE
        half = max(1, round((IGOS_KERNEL_SIZE // 2) * scale))
        half = min(half, max(side - 1, 0))
        params.append((2 * half + 1 if side > 1 else 1, max(IGOS_SIGMA * scale, 1e-3)))
    return params


def igos_blur(x: Tensor, kernel_size: Union[int, None] = None, sigma: Union[float, None] = None
              ) -> Tensor:
    """The I-GOS baseline: a Gaussian blur with reflect-101 borders.

    ``kernel_size=None``/``sigma=None`` use :func:`igos_blur_parameters` (51, σ = 50 at 224).
    """
    defaults = igos_blur_parameters(x.shape[2:])
    kernels = []
    for side, (k_default, s_default) in zip(x.shape[2:], defaults):
        k = k_default if kernel_size is None else int(kernel_size)
        s = s_default if sigma is None else float(sigma)
        kernels.append(gaussian_kernel1d(k, s, dtype=x.dtype, device=x.device) if side > 1
                       else torch.ones(1, dtype=x.dtype, device=x.device))
    return separable_blur(x, kernels, padding_mode="reflect")


def rise_blur(x: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """The RISE insertion start image: ``gkern(11, 5)`` per channel, zero padding."""
    kernel = rise_kernel1d(kernel_size, sigma, dtype=x.dtype, device=x.device)
    return separable_blur(x, [kernel] * (x.dim() - 2), padding_mode="zeros")

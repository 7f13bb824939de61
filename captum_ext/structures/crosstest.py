"""Cross-testing (Jiang, Khorram, Li, CVPR 2024; spec ``structured-explanations.md`` §7).

Salient regions computed with one network (any explainer; iGOS++ by default) are shown, on the
baseline, to every other network. Every choice the spec marks **[ASSUMPTION]** is an argument:
the explainer, the budgets, patches or pixels, the class shown (the source's top-1 or the label),
the metric (probability or top-1 accuracy), the aggregation over budgets, and the similarity /
distance / embedding of :class:`CrossTestResult`.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from captum_ext._validation import (
    check_target_against_output,
    training_mode_guard,
    validate_inputs,
    validate_model_dtype,
    validate_target,
)
from captum_ext.metrics.distributed import evaluate_dataset

__all__ = ["CrossTestResult", "cross_test", "cross_test_dataset", "region_masks"]

Explainer = Callable[[Callable[..., Any], Tensor, Tensor], Tensor]
Preprocess = Union[None, Callable[[Tensor], Tensor], Mapping[str, Callable[[Tensor], Tensor]]]


@dataclass
class CrossTestResult:
    names: list[str]
    budgets: tuple[float, ...]
    per_example: Tensor  #: ``(N, A, B, K)``: source A's regions shown to target B, per budget
    aggregate: str

    @property
    def matrix(self) -> Tensor:
        """``C[A, B]``: mean over examples of the budget aggregate (mean or trapezoid AUC)."""
        values = self.per_example.mean(0)
        if self.aggregate == "mean" or len(self.budgets) == 1:
            return values.mean(-1)
        x = torch.tensor(self.budgets, dtype=values.dtype)
        return torch.trapezoid(values, x, dim=-1) / (x[-1] - x[0])

    def normalised(self) -> Tensor:
        """``C[A, B] / C[B, B]`` (relative to B's self-test)."""
        c = self.matrix
        return c / torch.diagonal(c).clamp_min(1e-12).unsqueeze(0)

    def distance(self) -> Tensor:
        """``1 − (C̃ + C̃ᵀ)/2``."""
        n = self.normalised()
        return 1 - (n + n.T) / 2

    def embedding(self, dim: int = 2) -> Tensor:
        """Classical MDS of :meth:`distance` into ``dim`` coordinates per model."""
        d2 = self.distance().double() ** 2
        m = d2.shape[0]
        centre = torch.eye(m, dtype=d2.dtype) - 1.0 / m
        gram = -0.5 * centre @ d2 @ centre
        values, vectors = torch.linalg.eigh(gram)
        top = torch.argsort(values, descending=True)[:dim]
        return vectors[:, top] * values[top].clamp_min(0).sqrt()


def region_masks(saliency: Tensor, spatial: Sequence[int], budgets: Sequence[float],
                 grid: Optional[int]) -> Tensor:
    """``(K, N, 1, *spatial)`` binary masks of the top ``budget`` fraction of cells (``grid`` per
    axis) or of the saliency's own elements (``grid=None``), nearest-upsampled to ``spatial``."""
    maps = saliency.detach().float().mean(1, keepdim=True)
    if grid is not None:
        pool = {1: torch.nn.functional.adaptive_avg_pool1d, 2: torch.nn.functional.adaptive_avg_pool2d,
                3: torch.nn.functional.adaptive_avg_pool3d}[maps.dim() - 2]
        maps = pool(maps, (grid,) * (maps.dim() - 2))
    flat = maps.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    masks = []
    for budget in budgets:
        k = max(1, math.ceil(budget * flat.shape[1]))
        chosen = torch.zeros_like(flat)
        chosen.scatter_(1, order[:, :k], 1.0)
        up = torch.nn.functional.interpolate(chosen.reshape(maps.shape), size=tuple(spatial),
                                             mode="nearest")
        masks.append(up)
    return torch.stack(masks)


def _default_explainer(model: Callable[..., Any], x: Tensor, target: Tensor) -> Tensor:
    from captum_ext.attr import IGOSPlusPlus

    return IGOSPlusPlus(model).attribute(x, target=target, generator=torch.Generator().manual_seed(0))


def cross_test(
    models: Mapping[str, Callable[..., Any]],
    inputs: Tensor,
    labels: Optional[Tensor] = None,
    *,
    explain: Optional[Explainer] = None,
    budgets: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    grid: Optional[int] = 7,
    baseline: float = 0.0,
    preprocess: Preprocess = None,
    metric: str = "probability",
    class_source: str = "source",
    aggregate: str = "mean",
) -> CrossTestResult:
    """Cross-test every ordered pair of ``models`` on ``inputs`` (``(N, C, *S)`` in pixel space).

    For source A: ``c_A`` = A's top-1 class on ``preprocess_A(x)`` (or the label with
    ``class_source="label"``); the saliency ``explain(A, preprocess_A(x), c)`` picks the top
    ``budget`` fraction of grid cells (``grid=None``: of the saliency's elements); the image
    ``x ⊙ m + baseline ⊙ (1 − m)`` (pixel space, before each target's own preprocessing) is shown
    to target B, which scores ``softmax_c`` (``metric="probability"``) or ``argmax == c``
    (``"accuracy"``). ``preprocess`` is one callable or one per model name.
    """
    if not models:
        raise ValueError("models must name at least one model.")
    if metric not in ("probability", "accuracy"):
        raise ValueError(f"metric must be 'probability' or 'accuracy', got {metric!r}.")
    if class_source not in ("source", "label"):
        raise ValueError(f"class_source must be 'source' or 'label', got {class_source!r}.")
    if aggregate not in ("mean", "auc"):
        raise ValueError(f"aggregate must be 'mean' or 'auc', got {aggregate!r}.")
    if not budgets or any(not 0 < b <= 1 for b in budgets):
        raise ValueError(f"budgets must be fractions in (0, 1], got {tuple(budgets)}.")
    if class_source == "label" and labels is None:
        raise ValueError("class_source='label' needs labels.")
    names = list(models)
    explain = explain or _default_explainer
    batch = validate_inputs((inputs,))
    if labels is not None:
        validate_target(labels if isinstance(labels, Tensor) else list(labels), batch)
    if inputs.dim() < 3:
        raise ValueError(
            f"inputs has shape {tuple(inputs.shape)}; cross-testing needs (N, C, *S) images.")
    if preprocess is None:  # a preprocess may cast; without one, the models see the inputs
        for model in models.values():
            validate_model_dtype(model, (inputs,))

    def prep(name: str, x: Tensor) -> Tensor:
        if preprocess is None:
            return x
        if callable(preprocess):
            return preprocess(x)
        return preprocess[name](x) if name in preprocess else x

    x = inputs.detach()
    with ExitStack() as stack:
        for name in names:
            stack.enter_context(training_mode_guard(models[name], f"cross_test ({name})"))
        per_example = _cross_test(models, names, x, labels, explain, budgets, grid, baseline,
                                  prep, metric, class_source)
    return CrossTestResult(names, tuple(budgets), per_example, aggregate)


def _cross_test(models: Mapping[str, Callable[..., Any]], names: list[str], x: Tensor,
                labels: Optional[Tensor], explain: Explainer, budgets: Sequence[float],
                grid: Optional[int], baseline: float, prep: Callable[[str, Tensor], Tensor],
                metric: str, class_source: str) -> Tensor:
    per_source = []
    for source in names:
        with torch.no_grad():
            seen = prep(source, x)
            output = models[source](seen)
            if class_source == "source":
                classes = output.argmax(1)
            else:
                assert labels is not None
                check_target_against_output(output, labels)
                classes = torch.as_tensor(labels, device=output.device).long()
        saliency = explain(models[source], seen, classes)
        if not isinstance(saliency, Tensor) or saliency.shape[0] != x.shape[0] or (
                saliency.dim() != x.dim()):
            raise ValueError(
                f"explain returned {getattr(saliency, 'shape', type(saliency).__name__)} for "
                f"inputs of shape {tuple(x.shape)}; it must return (N, C', *S) saliency.")
        masks = region_masks(saliency, x.shape[2:], budgets, grid).to(x.dtype)  # (K, N, 1, *S)
        shown = x.unsqueeze(0) * masks + baseline * (1 - masks)
        per_target = []
        with torch.no_grad():
            for target in names:
                flat = shown.reshape((-1,) + tuple(x.shape[1:]))
                scores = torch.softmax(models[target](prep(target, flat)), dim=1)
                scores = scores.reshape(len(budgets), x.shape[0], -1)
                index = classes.view(1, -1, 1).expand(len(budgets), -1, 1)
                if metric == "probability":
                    value = scores.gather(2, index).squeeze(2)
                else:
                    value = (scores.argmax(2) == index.squeeze(2)).to(scores.dtype)
                per_target.append(value.T)  # (N, K)
        per_source.append(torch.stack(per_target, 1))  # (N, B, K)
    return torch.stack(per_source, 1).cpu()


def cross_test_dataset(
    models: Mapping[str, Callable[..., Any]],
    loader: DataLoader,
    *,
    show_progress: bool = False,
    **kwargs: Any,
) -> Optional[CrossTestResult]:
    """:func:`cross_test` over every batch of ``loader`` (tensor or ``(images, labels, ...)``),
    sharded over the process group; the result on rank 0, ``None`` on other ranks."""
    aggregate = kwargs.get("aggregate", "mean")
    budgets = tuple(kwargs.get("budgets", (0.05, 0.1, 0.2, 0.3, 0.5)))

    def metric(batch: Any) -> Tensor:
        images = batch if isinstance(batch, Tensor) else batch[0]
        labels = None if isinstance(batch, Tensor) or len(batch) < 2 else batch[1]
        return cross_test(models, images, labels, **kwargs).per_example

    per_example = evaluate_dataset(loader, metric, show_progress=show_progress)
    if per_example is None:
        return None
    assert isinstance(per_example, Tensor)
    return CrossTestResult(list(models), budgets, per_example, aggregate)

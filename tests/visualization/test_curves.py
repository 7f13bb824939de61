"""Deletion and insertion curves: areas computed by hand, plotted headless."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from captum_ext.visualization import curve_area, plot_deletion_insertion
from tests.visualization._render import new_axes


def test_curve_area_oracles() -> None:
    assert curve_area(torch.linspace(1, 0, 11)) == pytest.approx(0.5)  # a straight fall: a triangle
    assert curve_area(np.ones(5)) == pytest.approx(1.0)
    assert curve_area([0.0, 1.0, 1.0], fractions=[0.0, 0.5, 1.0]) == pytest.approx(0.75)
    # the area of the mean curve = the mean of the areas (trapezoid rule is linear)
    curves = torch.rand(4, 9, generator=torch.Generator().manual_seed(0))
    assert curve_area(curves) == pytest.approx(np.mean([curve_area(c) for c in curves]))


def test_plot_has_both_curves_with_their_areas_in_the_legend(tmp_path: Path) -> None:
    deletion = torch.linspace(1, 0, 11).repeat(3, 1)  # AUC 0.5
    insertion = torch.linspace(0, 1, 11) ** 2  # AUC 0.335 by the trapezoid rule
    fig = plot_deletion_insertion(deletion, insertion, label="Grad-CAM")
    ax = fig.axes[0]
    texts = [text.get_text() for text in ax.get_legend().get_texts()]
    expected_insertion = curve_area(insertion)
    assert expected_insertion == pytest.approx(0.335)
    assert texts == ["Grad-CAM deletion (AUC 0.500)", f"Grad-CAM insertion (AUC {expected_insertion:.3f})"]
    deletion_line, insertion_line = ax.get_lines()
    np.testing.assert_allclose(deletion_line.get_xdata(), np.linspace(0, 1, 11))
    np.testing.assert_allclose(deletion_line.get_ydata(), deletion[0].numpy(), rtol=1e-6)
    assert insertion_line.get_linestyle() == "--" and deletion_line.get_color() != insertion_line.get_color()
    fig.savefig(tmp_path / "curves.png", dpi=40)
    assert mpimg.imread(tmp_path / "curves.png")[..., :3].std() > 0.05


def test_methods_are_compared_one_colour_each_with_spread_and_examples() -> None:
    generator = torch.Generator().manual_seed(0)
    deletion = {"A": torch.rand(4, 6, generator=generator), "B": torch.rand(6, generator=generator)}
    insertion = {"A": torch.rand(4, 6, generator=generator), "B": torch.rand(6, generator=generator)}
    fractions = np.array([0.0, 0.1, 0.2, 0.4, 0.7, 1.0])
    fig = plot_deletion_insertion(deletion, insertion, fractions, show_examples=True)
    ax = fig.axes[0]
    labelled = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert sorted(labelled) == sorted(
        f"{name} {kind} (AUC {curve_area(scores[name], fractions):.3f})"
        for kind, scores in (("deletion", deletion), ("insertion", insertion)) for name in "AB"
    )
    colour = {label.split()[0] + label.split()[1]: line.get_color() for label, line in labelled.items()}
    assert colour["Adeletion"] == colour["Ainsertion"] != colour["Bdeletion"]
    assert len(ax.get_lines()) == 4 + 4 + 4 + 1 + 1  # means, A's examples x 2 kinds, B's single curves
    assert len(ax.collections) == 2  # the +-std bands of A (N = 4); B has one example


def test_one_kind_only_and_an_existing_axes() -> None:
    fig, (ax,) = new_axes()
    assert plot_deletion_insertion(None, torch.linspace(0, 1, 5), ax=ax, title="insertion") is fig
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["insertion (AUC 0.500)"]
    assert ax.get_title() == "insertion"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((None, None), {}, ValueError, "deletion_scores, insertion_scores, or both"),
        ((torch.rand(2, 3, 4),), {}, ValueError, r"expected \(T,\) or \(N, T\)"),
        ((torch.rand(1),), {}, ValueError, "T >= 2"),
        ((torch.tensor([1.0, float("nan"), 0.0]),), {}, ValueError, "NaN"),
        ((torch.rand(5),), {"fractions": [0, 0.5, 1]}, ValueError, "fractions has 3 values but deletion_scores has 5"),
        ((torch.rand(3),), {"fractions": [0, 1, 0.5]}, ValueError, "non-decreasing"),
        (({"A": torch.rand(3)}, {"A": torch.rand(2, 2, 2)}), {}, ValueError, r"insertion_scores\['A'\]"),
        ((["a", "b"],), {}, TypeError, "numeric"),
    ],
)
def test_errors_are_clear(args: tuple, kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        plot_deletion_insertion(*args, **kwargs)

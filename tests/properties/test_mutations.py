"""Mutation check: the property suite must fail when a method's defining part is broken.

Each mutation edits a copy of the package (never the working tree) and runs the other property
tests against it in a subprocess. The unmutated copy must pass, so a failure is the mutation's.

Mutations (issue 9):

* ``alpha-sign``: flip the sign of Grad-CAM++'s α.
* ``no-gradient-relu``: drop the ReLU on Grad-CAM++'s gradients. Our α is computed only where
  the gradient is positive, which is the same ReLU; removing only the ``F.relu`` call would be an
  equivalent mutant, so both places are removed.
* ``igos-zero-baseline``: swap I-GOS's default blur baseline for zeros.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MUTATIONS = {
    "alpha-sign": [
        ("captum_ext/attr/gradient_cams.py",
         "alpha = torch.where(positive, safe_divide(second, denominator), 0.0)",
         "alpha = torch.where(positive, safe_divide(-second, denominator), 0.0)"),
    ],
    "no-gradient-relu": [
        ("captum_ext/attr/gradient_cams.py",
         "alpha = torch.where(positive, safe_divide(second, denominator), 0.0)",
         "alpha = safe_divide(second, denominator)"),
        ("captum_ext/attr/gradient_cams.py",
         "return spatial_sum(alpha * F.relu(first))",
         "return spatial_sum(alpha * first)"),
    ],
    "igos-zero-baseline": [
        ("captum_ext/attr/_mask_method.py",
         "return tuple(igos_blur(x, kernel_size, sigma) for x in xs)",
         "return tuple(x * 0 for x in xs)"),
    ],
}


def _property_suite(copy: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
         "--ignore", str(copy / "tests/properties/test_mutations.py"),
         "-o", "addopts=", str(copy / "tests/properties")],
        cwd=copy, env=env, capture_output=True, text=True, timeout=900,
    )


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "captum_ext", copy / "captum_ext",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


@pytest.mark.slow
def test_unmutated_copy_passes(tmp_path):
    result = _property_suite(_copy(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MUTATIONS))
def test_property_suite_catches_mutation(tmp_path, name):
    copy = _copy(tmp_path)
    for relative, old, new in MUTATIONS[name]:
        path = copy / relative
        source = path.read_text()
        assert source.count(old) == 1, f"mutation {name}: the target line moved in {relative}"
        path.write_text(source.replace(old, new))
    result = _property_suite(copy)
    assert result.returncode == 1, f"mutation {name} survived:\n{result.stdout[-3000:]}"
    assert "failed" in result.stdout

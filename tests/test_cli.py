"""The captum-ext command, through subprocess calls."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "captum_ext.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )


def test_methods_lists_every_method_with_its_paper():
    from captum_ext.registry import METHODS

    result = run_cli("methods")
    assert result.returncode == 0, result.stderr
    for name, info in METHODS.items():
        assert name in result.stdout
        assert info.paper.split(",")[0] in result.stdout


def test_unknown_method_is_a_clear_error(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path), "--methods", "GradCamPlusPlus2")
    assert result.returncode == 1
    assert "unknown method 'GradCamPlusPlus2'" in result.stderr
    assert "Did you mean: LayerGradCamPlusPlus" in result.stderr


def test_unknown_photo_is_a_clear_error(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path), "--photos", "dog")
    assert result.returncode == 1
    assert "unknown photo 'dog'" in result.stderr


def test_usage_error_exit_code():
    assert run_cli("frobnicate").returncode == 2
    assert run_cli().returncode == 2


@pytest.mark.real_model
def test_demo_writes_grid_table_and_summary(tmp_path):
    result = run_cli(
        "demo", "--out", str(tmp_path), "--photos", "chelsea", "coffee",
        "--methods", "LayerGradCam", "LayerGradCamPlusPlus", "LayerHiResCam", "-q",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["targets"] == {"chelsea": 285, "coffee": 967}
    assert set(summary["seconds_per_image"]) == {"LayerGradCam", "LayerGradCamPlusPlus", "LayerHiResCam"}
    table = (tmp_path / "demo_times.md").read_text()
    assert "| LayerGradCamPlusPlus |" in table
    from matplotlib.image import imread

    grid = imread(tmp_path / "demo_grid.png")
    assert grid.shape[0] > 200 and grid.shape[1] > 400
    assert grid[..., :3].std() > 0.05

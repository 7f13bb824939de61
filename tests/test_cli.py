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


@pytest.fixture(scope="module")
def cat_png(tmp_path_factory):
    from matplotlib.image import imsave
    from skimage import data

    path = tmp_path_factory.mktemp("images") / "cat.png"
    imsave(path, data.chelsea()[::2, ::2])
    return path


def _tiny_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


@pytest.mark.real_model
def test_explain_builtin_model_writes_overlay_and_stats(cat_png, tmp_path):
    result = run_cli("explain", str(cat_png), "--method", "LayerHiResCam", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "explanations.json").read_text())
    stats = report["images"][str(cat_png)]
    assert stats["target"] == 285 and stats["shape"] == [1, 1, 7, 7]
    assert stats["min"] <= stats["mean"] <= stats["max"]
    assert (tmp_path / "cat_LayerHiResCam.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "NoSuchCam"], "unknown method"),
        (["--layer", "_bn2"], "Did you mean: _bn1"),
        (["--target", "1000"], "out of range"),
    ],
    ids=["method", "layer", "target"],
)
def test_explain_errors(cat_png, tmp_path, extra, message):
    result = run_cli("explain", str(cat_png), "--out", str(tmp_path), "-q", *extra)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_explain_missing_and_unreadable_images(tmp_path):
    missing = run_cli("explain", str(tmp_path / "nope.png"), "--out", str(tmp_path))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    unreadable = run_cli("explain", str(bad), "--out", str(tmp_path))
    assert unreadable.returncode == 1 and "cannot read" in unreadable.stderr


def test_explain_refuses_pickled_models(cat_png, tmp_path):
    import torch

    path = tmp_path / "model.pt"
    torch.save(_tiny_model(), path)
    result = run_cli("explain", str(cat_png), "--model", str(path), "--layer", "1",
                     "--out", str(tmp_path))
    assert result.returncode == 1
    assert "refuses them" in result.stderr and "torch.export" in result.stderr


def test_explain_torch_export_model(cat_png, tmp_path):
    import torch

    model = _tiny_model()
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), path)
    result = run_cli("explain", str(cat_png), "--model", str(path), "--layer", "1",
                     "--size", "32", "--normalize", "none", "--method", "LayerXGradCam",
                     "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "explanations.json").read_text())["images"][str(cat_png)]
    assert stats["shape"] == [1, 1, 32, 32] and stats["target"] in (0, 1, 2)
    wrong_layer = run_cli("explain", str(cat_png), "--model", str(path), "--layer", "9",
                          "--size", "32", "--out", str(tmp_path), "-q")
    assert wrong_layer.returncode == 1 and "no layer named '9'" in wrong_layer.stderr


def test_explain_refuses_torchscript_for_layer_methods(cat_png, tmp_path):
    import torch

    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(_tiny_model()), path)
    result = run_cli("explain", str(cat_png), "--model", str(path), "--layer", "1",
                     "--out", str(tmp_path))
    assert result.returncode == 1 and "TorchScript" in result.stderr

"""Sharded evaluation: 2 gloo processes under torchrun give exactly the single-process results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from captum_ext.metrics import evaluate_dataset
from tests.metrics import distributed_worker

ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_two_gloo_processes_equal_single_process(tmp_path):
    out = tmp_path / "gathered.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(ROOT / "tests" / "metrics" / "distributed_worker.py"), str(out),
    ]
    completed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    gathered = torch.load(out, weights_only=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = evaluate_dataset(distributed_worker.make_loader(), distributed_worker.make_metric())
    finally:
        torch.set_num_threads(threads)
    assert set(gathered) == set(single) == {"pointing_game", "relevance_mass", "average_drop"}
    for name in single:
        assert single[name].shape == (23,)
        assert torch.equal(gathered[name], single[name]), name


def test_single_process_order_tensor_results_and_progress():
    data = TensorDataset(torch.arange(10.0))
    loader = DataLoader(data, batch_size=3)
    result = evaluate_dataset(loader, lambda batch: batch[0] * 2, show_progress=True)
    assert torch.equal(result, torch.arange(10.0) * 2)


def test_shuffled_loader_follows_one_pass_of_its_batch_sampler():
    data = TensorDataset(torch.arange(10.0))

    def loader() -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        return DataLoader(data, batch_size=4, shuffle=True, generator=generator)

    order = torch.tensor([i for batch in loader().batch_sampler for i in batch], dtype=torch.float)
    assert sorted(order.tolist()) == list(range(10))
    assert torch.equal(evaluate_dataset(loader(), lambda batch: batch[0]), order)


def test_errors():
    loader = DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2)
    with pytest.raises(ValueError, match="one row per example"):
        evaluate_dataset(loader, lambda batch: batch[0].sum())
    with pytest.raises(TypeError, match="metric_fn"):
        evaluate_dataset(loader, lambda batch: [1, 2])
    with pytest.raises(TypeError, match="DataLoader"):
        evaluate_dataset([1, 2], lambda batch: batch)

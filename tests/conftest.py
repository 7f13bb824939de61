"""Suite-wide settings."""

from __future__ import annotations

import torch


def pytest_configure(config):
    # The test tensors are tiny, and the suite runs with pytest-xdist on a 2-core machine:
    # one intra-op thread per worker avoids oversubscription (5-20x slowdowns were measured).
    torch.set_num_threads(1)

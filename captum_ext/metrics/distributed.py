"""Dataset-wide evaluation over a DataLoader, sharded across processes with ``torch.distributed``.

Start it with ``torchrun`` (any backend; ``gloo`` on CPU)::

    torchrun --standalone --nproc_per_node=2 my_eval.py

    # my_eval.py
    logger = logging.getLogger("my_eval")
    with distributed_session("gloo"):
        results = evaluate_dataset(loader, metric_fn, show_progress=True)
    if results is not None:  # rank 0
        logger.info("means: %s", {name: values.nanmean() for name, values in results.items()})

How it shards: rank 0 lists the loader's batches (the index lists its batch sampler yields, so
any sampler and ``drop_last`` setting is honoured) and broadcasts them; rank ``r`` evaluates
batches ``r, r + W, r + 2W, …`` through a new DataLoader over the same dataset, collate function
and workers. Every batch therefore holds exactly the examples it holds in a single-process run,
so per-example results are **identical** to a single-process run (batch composition can change
floating-point results, so sharding by example would not be). Results are gathered on rank 0 with
``gather_object`` and put back in the loader's order (the order of one pass of its batch
sampler: with ``shuffle=True`` that is a fresh shuffle, so evaluate with ``shuffle=False`` to
match results to examples); other ranks get ``None``.

``metric_fn(batch)`` receives what the loader yields and returns a tensor with one row per
example, or a dict of such tensors. Without an initialised process group, ``evaluate_dataset``
runs everything in the current process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

__all__ = ["distributed_session", "evaluate_dataset"]

MetricFn = Callable[[Any], "Tensor | dict[str, Tensor]"]


@contextmanager
def distributed_session(backend: str = "gloo") -> Iterator[None]:
    """Initialise the default process group from ``torchrun``'s environment, destroy it after.

    Does nothing when the process group is already initialised or when not launched by a
    launcher (no ``WORLD_SIZE`` in the environment).
    """
    started = False
    if not dist.is_initialized() and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend=backend)
        started = True
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def _as_dict(result: Any) -> dict[str, Tensor]:
    if isinstance(result, Tensor):
        return {"": result}
    if isinstance(result, dict) and result and all(
        isinstance(key, str) and key and isinstance(value, Tensor) for key, value in result.items()
    ):
        return dict(result)
    raise TypeError(
        "metric_fn must return a tensor with one row per example or a non-empty dict of such "
        "tensors keyed by non-empty names, got "
        f"{type(result).__name__}."
    )


def evaluate_dataset(
    loader: DataLoader,
    metric_fn: MetricFn,
    *,
    show_progress: bool = False,
) -> Tensor | dict[str, Tensor] | None:
    """Apply ``metric_fn`` to every batch of ``loader``, sharded over the process group.

    Returns, on rank 0 (or in a single process), the per-example results concatenated in the
    loader's order (a tensor, or a dict of tensors, as ``metric_fn`` returns them), on the CPU.
    Other ranks return ``None``. The progress bar (off by default) shows on rank 0 only.
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"loader must be a torch.utils.data.DataLoader, got {type(loader).__name__}."
        )
    if isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
        raise ValueError(
            "evaluate_dataset needs a map-style dataset with batching by the loader (a batch "
            "sampler); an IterableDataset or batch_size=None cannot be sharded reproducibly."
        )
    sharded = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    batches: list[Any] = [list(batch) for batch in loader.batch_sampler] if rank == 0 else []
    if sharded:
        holder = [batches]
        dist.broadcast_object_list(holder, src=0)
        batches = holder[0]
    mine = list(range(rank, len(batches), world))
    shard = DataLoader(
        loader.dataset,
        batch_sampler=[batches[index] for index in mine],
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )
    if not batches:
        raise ValueError("the loader yields no batches: there is nothing to evaluate.")
    local: list[tuple[int, dict[str, Tensor]]] = []
    progress = tqdm(shard, desc="evaluate", disable=not show_progress or rank != 0)
    for index, batch in zip(mine, progress):
        values = _as_dict(metric_fn(batch))
        expected = len(batches[index])
        for name, value in values.items():
            if value.dim() == 0 or value.shape[0] != expected:
                raise ValueError(
                    f"metric_fn returned {tuple(value.shape)} for {name or 'the result'}, but the "
                    f"batch has {expected} examples; return one row per example."
                )
        local.append((index, {name: value.detach().cpu() for name, value in values.items()}))
    gathered: list[Any] = [local]
    if sharded:
        gathered = [None] * world if rank == 0 else []
        dist.gather_object(local, gathered if rank == 0 else None, dst=0)
        if rank != 0:
            return None
    ordered = sorted((item for part in gathered for item in part), key=lambda item: item[0])
    bare = list(ordered[0][1]) == [""]
    merged = {
        name: torch.cat([values[name] for _, values in ordered]) for name in ordered[0][1]
    }
    return merged[""] if bare else merged

"""Interop with threads (issue 9).

Concurrent calls on **different** models do not interfere: hooks, the parameter freezing of
I-GOS and the training-mode guard all act on the model they were given. Concurrent calls on the
**same** model are unsupported (README, "Thread safety"): the layer methods put temporary hooks
on the model's modules, which fire for every forward pass of that model, whichever thread runs
it, and I-GOS switches the parameters' ``requires_grad`` off for the duration of a call.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import torch

from captum_ext.attr import IGOS, LayerGradCamPlusPlus, LayerScoreCam, NormGrad
from tests._helpers import conv_input, conv_model, hook_count

Run = Callable[[], torch.Tensor]


def _concurrently(runs: list[Run], repeats: int = 4) -> list[list[Any]]:
    """Run each callable ``repeats`` times in its own thread, all starting together."""
    barrier = threading.Barrier(len(runs))
    results: list[list[Any]] = [[] for _ in runs]

    def worker(index: int) -> None:
        barrier.wait()
        for _ in range(repeats):
            try:
                results[index].append(runs[index]())
            except BaseException as error:  # reported by the test, not lost in the thread
                results[index].append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_two_methods_on_two_models_from_two_threads():
    first, second = conv_model(2, seed=0), conv_model(2, seed=1)
    x = conv_input(2, size=8)
    second.train()  # the guard of one thread must not touch the other model

    runs: list[Run] = [
        lambda: LayerGradCamPlusPlus(first, first.features[-1]).attribute(x, target=[0, 1, 2]),
        lambda: LayerScoreCam(second, second.features[-1]).attribute(x, target=1, batch_size=4),
        lambda: IGOS(conv_pair[0]).attribute(
            x, target=0, iterations=2, ig_steps=2, mask_size=3,
            generator=[torch.Generator().manual_seed(i) for i in range(3)]),
        lambda: NormGrad(conv_pair[1]).attribute(x, target=2),
    ]
    conv_pair = (conv_model(2, seed=2), conv_model(2, seed=3))
    expected = [run() for run in runs]
    results = _concurrently(runs)
    for reference, outputs in zip(expected, results):
        for output in outputs:
            assert not isinstance(output, BaseException), repr(output)
            torch.testing.assert_close(output, reference)
    models = (first, second) + conv_pair
    assert all(hook_count(m) == 0 for m in models)
    assert second.training and not first.training
    assert all(p.requires_grad for m in models for p in m.parameters())

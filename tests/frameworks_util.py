"""What the framework integration tests (``test_frameworks_*.py``) share.

Each test trains a tiny model three ways with the same data and seeds: straight
through, checkpointed and resumed in a fresh framework object, and with
``torch.optim`` in place of optimlab.  The resumed run must end bitwise equal to the
straight one; torch.optim is the oracle for the math.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch

import optimlab
from optimlab.schedules import ScheduledLR, cosine, warmup

# The frameworks' loggers: their banners and tips are not the tests' output.
_LOGGERS = ("transformers", "lightning", "pytorch_lightning", "lightning_fabric", "accelerate")

LR = 1e-2
STEPS = 8  # optimizer steps in a whole run
WARMUP = 2
SCHEDULE = warmup(WARMUP, cosine(LR, STEPS - WARMUP))


def torch_schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """``SCHEDULE`` as torch.optim writes it (the lambda of HF's cosine-with-warmup)."""

    def factor(step: int) -> float:
        if step < WARMUP:
            return step / WARMUP
        return (1 + math.cos(math.pi * min(step - WARMUP, STEPS - WARMUP) / (STEPS - WARMUP))) / 2

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# name -> (optimizer from params, scheduler from optimizer); every optimizer is AdamW
# with the same hyperparameters.
def _adamw(cls: Callable[..., torch.optim.Optimizer], **kwargs: object) -> Callable:
    return lambda params: cls(params, lr=LR, weight_decay=0.01, **kwargs)


RECIPES: dict[str, tuple[Callable, Callable]] = {
    # optimlab's default path: the fused C kernels
    "optimlab": (_adamw(optimlab.AdamW), lambda opt: ScheduledLR(opt, SCHEDULE)),
    # optimlab's reference path, which is torch's for-loop math op for op
    "optimlab fused=False": (
        _adamw(optimlab.AdamW, fused=False),
        lambda opt: ScheduledLR(opt, SCHEDULE),
    ),
    # the same schedule adapter on torch's AdamW: the oracle for "fused=False" (bitwise)
    "torch + ScheduledLR": (
        _adamw(torch.optim.AdamW, foreach=False),
        lambda opt: ScheduledLR(opt, SCHEDULE),
    ),
    # torch end to end: the oracle for "optimlab" (tolerance)
    "torch": (_adamw(torch.optim.AdamW, foreach=False), torch_schedule),
}

# optimlab's kernels against torch's AdamW after STEPS steps of a tiny model: float32
# rounding in a different order, each difference amplified at most ~1/sqrt(v) by Adam.
RTOL, ATOL = 1e-4, 1e-5


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"not bitwise equal: {different}"


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=RTOL, atol=ATOL, msg=name)


def assert_moved(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]) -> None:
    """Training changed every parameter: a run that did nothing would compare equal."""
    unchanged = [name for name in start if torch.equal(start[name], end[name])]
    assert not unchanged, f"parameters that never moved: {unchanged}"


@contextlib.contextmanager
def _quiet_and_deterministic() -> Iterator[None]:
    threads = torch.get_num_threads()
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    torch.set_num_threads(1)  # one thread: the same reduction order in every run
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.set_num_threads(threads)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def quiet() -> Iterator[None]:
    with _quiet_and_deterministic():
        yield

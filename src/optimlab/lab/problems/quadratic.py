r"""A noisy 100-D quadratic with a deep-learning-like Hessian spectrum (DeepOBS ``quadratic_deep``).

.. math:: L(\theta) = \frac{1}{B} \sum_{b} \tfrac12 (\theta - x_b)^\top Q (\theta - x_b)

with :math:`Q = R^\top \operatorname{diag}(\lambda) R`: 90 eigenvalues drawn
uniformly from [0, 1] and 10 from [30, 60] (the spectrum reported for deep
networks by Chaudhari et al. 2017, https://arxiv.org/abs/1611.01838), ``R`` a
random rotation, and data points :math:`x_b \sim \mathcal N(0, 0.6^2 I)` — a
fixed training set of 1,000 (mini-batches of 128 drawn from it are the
gradient noise) and a separate held-out set of 1,000 for the validation loss.
:math:`\theta` starts at all ones.

As in F. Schneider, L. Balles and P. Hennig, "DeepOBS: A Deep Learning
Optimizer Benchmark Suite", ICLR 2019, https://arxiv.org/abs/1903.05499
(eigenvalues from ``RandomState(42)``, data from seeds 42 and 43).  One
difference: the rotation here is the Q factor of a Gaussian matrix (Haar
distributed, as DeepOBS's subgroup algorithm), so ``Q`` is not bitwise
DeepOBS's.  The problem (Hessian, data) is the same for every seed; the seed
changes only the order of the mini-batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Problem, Task

__all__ = ["NoisyQuadratic", "hessian", "problems"]

DIM = 100
NOISE = 0.6


@cache
def hessian() -> Tensor:
    """The fixed Hessian ``Q`` (float64)."""
    rng = np.random.RandomState(42)
    eigenvalues = np.concatenate([rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)])
    q, r = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    rotation = q * np.sign(np.diag(r))  # the sign fix that makes QR's Q Haar-distributed
    return torch.from_numpy(rotation.T @ np.diag(eigenvalues) @ rotation)


@cache
def _data(seed: int) -> Tensor:
    return torch.from_numpy(np.random.RandomState(seed).normal(0.0, NOISE, (1000, DIM)))


def _loss(theta: Tensor, x: Tensor) -> Tensor:
    d = theta - x
    return 0.5 * ((d @ hessian().to(d.dtype)) * d).sum(1).mean()


def optimum_loss() -> float:
    """The smallest validation loss (at the mean of the validation points)."""
    x = _data(43)
    return _loss(x.mean(0), x).item()


@dataclass(frozen=True)
class NoisyQuadratic(Problem):
    step_ms: float = 0.35

    def make(self, seed: int, settings: Mapping[str, Any]) -> Task:
        return _QuadraticTask(seed, int(settings["batch_size"]))


class _QuadraticTask(Task):
    def __init__(self, seed: int, batch_size: int) -> None:
        self.theta = torch.ones(DIM, dtype=torch.float32, requires_grad=True)
        self.params = [self.theta]
        self.x = _data(42).float()
        self.x_val = _data(43).float()
        self.batch_size = batch_size
        self._generator = torch.Generator().manual_seed(3000 + seed)

    def draw(self) -> Tensor:
        return torch.randint(len(self.x), (self.batch_size,), generator=self._generator)

    def loss(self, batch: Tensor) -> Tensor:
        return _loss(self.theta, self.x[batch])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {"val_loss": _loss(self.theta, self.x_val).item()}


def problems() -> list[NoisyQuadratic]:
    floor = optimum_loss()
    target = round(floor + 1.0, 1)
    return [
        NoisyQuadratic(
            name="quadratic_deep",
            title="Noisy 100-D quadratic (DeepOBS quadratic_deep)",
            description=(
                "½(θ−x)ᵀQ(θ−x) averaged over mini-batches of 128 of 1,000 Gaussian points; "
                "Q has 90 eigenvalues in [0, 1] and 10 in [30, 60] under a random rotation; "
                f"θ starts at 1. The best achievable validation loss is {floor:.2f}."
            ),
            target=target,
            target_text=f"validation loss ≤ {target:g} (the optimum {floor:.2f} + 1)",
            optimum=floor,
            lr_center=dict(sgd=1e-2, momentum=3e-3, adagrad=1.0, rmsprop=3e-2, adam=0.1),
            settings={"batch_size": 128},
        )
    ]

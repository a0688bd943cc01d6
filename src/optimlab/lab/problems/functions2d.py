r"""Two-dimensional test functions, with exact gradients and with mini-batch-like noise.

The lecture's "problems with GD" (slide 2) — slow convergence in flat regions,
oscillations across a steep valley, getting stuck in local minima — are easiest
to *see* in two dimensions.  Each function is written in torch, so autograd
gives its exact gradient.  The ``_noisy`` variant of each adds Gaussian noise
of standard deviation ``noise`` to every gradient component (a fresh draw per
step, seeded by the run's seed), which is what a mini-batch estimate of a
gradient looks like: unbiased, with a spread that does not shrink at the
minimum.  The recorded loss is always the exact function value.

A run's parameter is a (K, 2) tensor of K independent points (K = 1 except
for Rastrigin, which starts 16 points at once to see where each ends up).
Every optimizer here acts elementwise, so the K points do not interact: the
loss is their mean and each point's gradient is exactly its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import Problem, Task

__all__ = ["FUNCTIONS", "Function2D", "problems"]


def rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    r"""Rosenbrock's banana: :math:`(1 - x)^2 + 100 (y - x^2)^2`.

    Global minimum 0 at (1, 1), at the bottom of a long curved flat valley:
    gradient descent reaches the valley quickly and then crawls along it.
    H. H. Rosenbrock, "An automatic method for finding the greatest or least
    value of a function", The Computer Journal 3(3), 1960.
    """
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(x: Tensor, y: Tensor) -> Tensor:
    r"""Beale's function: :math:`(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2`.

    Global minimum 0 at (3, 0.5); flat plateaus next to very steep walls.
    E. M. L. Beale, "On an iterative method for finding a local minimum of a
    function of more than one variable", Princeton tech. report 25, 1958;
    see also Jamil & Yang, "A literature survey of benchmark functions for
    global optimization problems", 2013, f10.
    """
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(x: Tensor, y: Tensor) -> Tensor:
    r"""A bounded saddle: :math:`x^2 + y^4/4 - y^2/2`.

    A saddle point at (0, 0) (curvature +2 along x, -1 along y) between two
    global minima at (0, ±1) with value -1/4.  Started next to the ridge
    (y = 0.001), exact gradient descent needs many steps to notice the
    descent direction; momentum and noise leave sooner.
    """
    return x**2 + y**4 / 4 - y**2 / 2


def ill_conditioned(x: Tensor, y: Tensor) -> Tensor:
    r"""An ill-conditioned quadratic: :math:`(x^2 + 50 y^2) / 2` (condition number 50).

    Minimum 0 at (0, 0).  A learning rate large enough to make progress along
    the flat x direction is close to the stability limit 2/50 of the steep y
    direction, so gradient descent zig-zags across the valley (slide 2's
    "oscillations") and the error shrinks by only (κ-1)/(κ+1) ≈ 0.96 per step at
    the best constant learning rate; momentum reaches (√κ-1)/(√κ+1) ≈ 0.75
    (Polyak 1964; Goh, "Why momentum really works", Distill 2017).
    """
    return (x**2 + 50 * y**2) / 2


def rastrigin(x: Tensor, y: Tensor) -> Tensor:
    r"""Rastrigin's function in 2-D: :math:`20 + \sum_i (x_i^2 - 10 \cos 2\pi x_i)`.

    Global minimum 0 at (0, 0), and a local minimum near every integer point
    (value ≈ the squared distance to the origin), a lattice of traps for
    gradient descent (slide 2's "local minima").  L. A. Rastrigin, "Systems of
    extremal control", 1974; Mühlenbein et al., Parallel Computing 17, 1991.
    """
    return 20 + x**2 - 10 * torch.cos(2 * math.pi * x) + y**2 - 10 * torch.cos(2 * math.pi * y)


@dataclass(frozen=True)
class Function2D(Problem):
    """One 2-D test function (see the module docstring); ``settings["noise"]`` > 0 adds noise."""

    function: Callable[[Tensor, Tensor], Tensor] = rosenbrock
    minima: tuple[tuple[float, float], ...] = ((0.0, 0.0),)
    start: tuple[float, float] = (0.0, 0.0)
    #: K > 1: that many starting points drawn uniformly from ``bounds`` (Rastrigin)
    points: int = 1
    bounds: tuple[float, float, float, float] = (-2.0, 2.0, -2.0, 2.0)  # x0, x1, y0, y1
    is_2d: bool = True
    evals: int | None = None
    step_ms: float = 0.5

    def make(self, seed: int, settings: Mapping[str, Any]) -> Task:
        return _Function2DTask(self, seed, float(settings.get("noise", 0.0)))

    def starts(self, seed: int) -> Tensor:
        """The (K, 2) starting points of ``seed``: the classic start, jittered for seeds > 0."""
        generator = torch.Generator().manual_seed(seed)
        if self.points > 1:
            x0, x1, y0, y1 = self.bounds
            lo = torch.tensor([x0, y0], dtype=torch.float64) * 0.85
            hi = torch.tensor([x1, y1], dtype=torch.float64) * 0.85
            return lo + (hi - lo) * torch.rand(self.points, 2, generator=generator, dtype=lo.dtype)
        start = torch.tensor([self.start], dtype=torch.float64)
        if seed == 0:
            return start
        return start + 0.1 * torch.randn(1, 2, generator=generator, dtype=start.dtype)

    def value(self, points: Tensor) -> Tensor:
        return self.function(points[..., 0], points[..., 1])


class _Function2DTask(Task):
    def __init__(self, problem: Function2D, seed: int, noise: float) -> None:
        self.problem = problem
        # float64: the lecture's pictures, not float32 rounding, near the minimum
        self.w = problem.starts(seed).clone().requires_grad_(True)
        self.params = [self.w]
        self.noise = noise
        self._generator = torch.Generator().manual_seed(2000 + seed)

    def draw(self) -> Tensor | None:
        if self.noise == 0:
            return None
        return self.noise * torch.randn(self.w.shape, generator=self._generator, dtype=self.w.dtype)

    def loss(self, batch: Tensor | None) -> Tensor:
        values = self.problem.value(self.w)
        objective = values.sum()  # summed, so each point's gradient is exactly its own
        if batch is not None:
            objective = objective + (batch * self.w).sum()  # gradient + noise
        # the value reported is the exact mean over the points; the gradient is the objective's
        return values.mean().detach() + objective - objective.detach()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {"val_loss": self.problem.value(self.w).mean().item()}

    def position(self) -> Tensor:
        return self.w.detach().clone()


TITLES = {
    "rosenbrock": "Rosenbrock",
    "beale": "Beale",
    "saddle": "Saddle point",
    "ill_conditioned": "Ill-conditioned quadratic",
    "rastrigin": "Rastrigin",
}
#: each function in plain text, for the report (the docstrings hold the references)
FORMULAS = {
    "rosenbrock": "f(x, y) = (1 − x)² + 100 (y − x²)²: a long, curved, flat valley; its "
    "minimum, 0, is at (1, 1).",
    "beale": "f(x, y) = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²: flat "
    "plateaus beside steep walls; minimum 0 at (3, 0.5).",
    "saddle": "f(x, y) = x² + y⁴/4 − y²/2: a saddle point at (0, 0) between two minima at "
    "(0, ±1) of value −1/4; the start sits next to the ridge.",
    "ill_conditioned": "f(x, y) = (x² + 50 y²)/2: a valley 50 times steeper across (y) than "
    "along its floor (x); minimum 0 at (0, 0).",
    "rastrigin": "f(x, y) = 20 + x² − 10 cos 2πx + y² − 10 cos 2πy: an egg-box with a local "
    "minimum near every integer point; the global minimum, 0, is at (0, 0).",
}

# name: (function, minima, start, bounds, target, noise, points, lr centres per family)
_CATALOG: dict[str, tuple[Any, ...]] = {
    "rosenbrock": (
        rosenbrock,
        ((1.0, 1.0),),
        (-1.2, 1.0),
        (-2.0, 2.0, -1.0, 3.0),
        1e-2,
        2.0,
        1,
        dict(sgd=2e-3, momentum=1e-3, adagrad=1.0, rmsprop=0.1, adam=0.3),
    ),
    "beale": (
        beale,
        ((3.0, 0.5),),
        (1.0, 1.5),
        (-1.0, 4.0, -1.5, 2.0),
        1e-2,
        1.0,
        1,
        dict(sgd=1e-2, momentum=1e-3, adagrad=1.0, rmsprop=0.1, adam=0.3),
    ),
    "saddle": (
        saddle,
        ((0.0, 1.0), (0.0, -1.0)),
        (1.5, 1e-3),
        (-2.0, 2.0, -1.6, 1.6),
        -0.24,
        0.3,
        1,
        dict(sgd=0.1, momentum=1e-2, adagrad=0.3, rmsprop=3e-2, adam=3e-2),
    ),
    "ill_conditioned": (
        ill_conditioned,
        ((0.0, 0.0),),
        (-4.0, 1.5),
        (-5.0, 5.0, -2.0, 2.0),
        1e-3,
        2.0,
        1,
        dict(sgd=3e-2, momentum=1e-2, adagrad=1.0, rmsprop=0.1, adam=0.3),
    ),
    "rastrigin": (
        rastrigin,
        ((0.0, 0.0),),
        (0.0, 0.0),
        (-4.5, 4.5, -4.5, 4.5),
        1.0,
        5.0,
        16,
        dict(sgd=1e-3, momentum=1e-4, adagrad=0.1, rmsprop=1e-2, adam=3e-2),
    ),
}

FUNCTIONS = tuple(_CATALOG)


def problems() -> list[Function2D]:
    """The five functions, each exact and ``_noisy``."""
    out = []
    for name, (function, minima, start, bounds, target, noise, points, lrs) in _CATALOG.items():
        doc = FORMULAS[name]
        for noisy in (False, True):
            where = (
                f"{points} starting points drawn at random in the middle 85 % of the plotted box"
                if points > 1
                else f"start at ({start[0]:g}, {start[1]:g}) (each seed > 0 moves it by a random "
                "offset of standard deviation 0.1)"
            )
            out.append(
                Function2D(
                    name=f"{name}_noisy" if noisy else name,
                    title=TITLES[name] + (" (noisy gradients)" if noisy else ""),
                    description=f"{doc} {where.capitalize()}; "
                    + (
                        f"each gradient component gets Gaussian noise of standard deviation "
                        f"{noise:g}, like a mini-batch estimate."
                        if noisy
                        else "exact gradients."
                    ),
                    target=target,
                    target_text=f"f ≤ {target:g}"
                    + (" (mean over the points)" if points > 1 else ""),
                    lr_center=lrs,
                    settings={"noise": noise if noisy else 0.0},
                    optimum=float(function(*(torch.tensor(v) for v in minima[0]))),
                    function=function,
                    minima=minima,
                    start=start,
                    points=points,
                    bounds=bounds,
                )
            )
    return out

r"""Schedules made of the simple ones: join, warmup, SGDR restarts, 1cycle, WSD.

None of them re-implements a curve: each is (or evaluates) an expression of
:mod:`.core` schedules, which :meth:`expand` shows::

    >>> warmup(2, cosine(1.0, 8)).expand()
    join([linear(0.0, 2, final_lr=1.0), cosine(1.0, 8)], [2])
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, pairwise

from . import _check
from .core import Schedule, _frozen, check_schedule, constant, cosine, linear

__all__ = [
    "join",
    "warmup",
    "cosine_restarts",
    "one_cycle",
    "one_cycle_momentum",
    "warmup_stable_decay",
]


@_frozen
class Join(Schedule):
    """Value of :func:`join`."""

    constructor = "join"
    schedules: tuple[Schedule, ...]
    boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        schedules = self.schedules
        if isinstance(schedules, Schedule) or not isinstance(schedules, Sequence) or not schedules:
            raise ValueError(f"schedules must be a non-empty list of schedules, got {schedules=}")
        schedules = tuple(check_schedule(f"schedules[{i}]", s) for i, s in enumerate(schedules))
        boundaries = _check.increasing("boundaries", self.boundaries)
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(
                f"boundaries must have len(schedules) - 1 = {len(schedules) - 1} entries, "
                f"got boundaries={list(boundaries)}"
            )
        self._set(schedules=schedules, boundaries=boundaries)

    def _value(self, t: int) -> float:
        i = bisect_right(self.boundaries, t)
        start = self.boundaries[i - 1] if i else 0
        return self.schedules[i]._value(t - start)


class _Composite(Schedule):
    """A schedule whose value is that of an expression of simpler schedules.

    ``__post_init__`` checks the fields and stores the expression as ``_impl``
    (an attribute, not a field: it takes no part in ``==``, ``hash`` or ``spec``).
    """

    _impl: Schedule

    def _value(self, t: int) -> float:
        return self._impl._value(t)

    def expand(self) -> Schedule:
        """The same schedule written with :func:`join` and the simple schedules."""
        return self._impl


@_frozen
class Warmup(_Composite):
    """Value of :func:`warmup`."""

    constructor = "warmup"
    steps: int
    then: Schedule
    start_lr: float = 0.0

    def __post_init__(self) -> None:
        self._set(
            steps=_check.integer("steps", self.steps),
            then=check_schedule("then", self.then),
            start_lr=_check.number("start_lr", self.start_lr),
        )
        ramp = linear(self.start_lr, self.steps, final_lr=self.then(0))
        self._set(_impl=join([ramp, self.then], [self.steps]))


@_frozen
class CosineRestarts(Schedule):
    """Value of :func:`cosine_restarts`."""

    constructor = "cosine_restarts"
    lr: float
    period: int
    mult: int = 1
    final_lr: float = 0.0

    def __post_init__(self) -> None:
        self._set(
            lr=_check.number("lr", self.lr),
            period=_check.integer("period", self.period),
            mult=_check.integer("mult", self.mult),
            final_lr=_check.number("final_lr", self.final_lr),
        )

    def _value(self, t: int) -> float:
        # Integer arithmetic finds the cycle exactly; torch's closed form uses
        # log() and can land one cycle off at a restart.  O(log t) for mult > 1.
        length = self.period
        if self.mult == 1:
            t %= length
        else:
            while t >= length:
                t -= length
                length *= self.mult
        # A cycle can outgrow a float (mult=1e300), and math.pi * t / length would
        # overflow; in a cycle that long cos(pi * t / length) is 1 for any t a float
        # can count, and so it is in a cycle 2**1000 steps long.
        return cosine(self.lr, min(length, 2**1000), self.final_lr)._value(t)


_RAMPS = {"cos": cosine, "cosine": cosine, "linear": linear}


def _ramps(values: list[float], lengths: list[int], kind: str) -> Schedule:
    """Join ramps of shape ``kind`` through ``values``, the i-th lasting ``lengths[i]`` steps."""
    ends = zip(pairwise(values), lengths, strict=True)
    pieces = [_RAMPS[kind](a, n, final_lr=b) for (a, b), n in ends]
    return join(pieces, list(accumulate(lengths[:-1])))


class _Cycle(_Composite):
    """torch ``OneCycleLR``'s phases, shared by the lr and the momentum halves of 1cycle."""

    def _phases(self, start: float, peak: float, end: float) -> Schedule:
        """``start`` to ``peak`` at step ``pct_start * steps - 1`` (three-phase: back to
        ``start`` at twice that), then to ``end`` at step ``steps - 1``; flat after."""
        self._set(
            steps=_check.integer("steps", self.steps),
            pct_start=_check.fraction("pct_start", self.pct_start),
            anneal=_check.choice("anneal", self.anneal, ("cos", "linear")),
            three_phase=_check.flag("three_phase", self.three_phase),
        )
        # The nearest step to torch's fractional peak, halves rounded up.
        steps, rise = self.steps, int(self.pct_start * self.steps + 0.5) - 1
        if self.three_phase:
            values, lengths = [start, peak, start, end], [rise, rise, steps - 1 - 2 * rise]
        else:
            values, lengths = [start, peak, end], [rise, steps - 1 - rise]
        if min(lengths) < 1:
            raise ValueError(
                "pct_start * steps must leave every phase at least one step, got "
                f"pct_start={self.pct_start}, steps={steps} (phase lengths {lengths})"
            )
        return _ramps(values, lengths, self.anneal)


@_frozen
class OneCycle(_Cycle):
    """Value of :func:`one_cycle`."""

    constructor = "one_cycle"
    lr: float
    steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: str = "cos"
    three_phase: bool = False

    def __post_init__(self) -> None:
        self._set(
            lr=_check.number("lr", self.lr),
            div_factor=_check.number("div_factor", self.div_factor, positive=True),
            final_div_factor=_check.number(
                "final_div_factor", self.final_div_factor, positive=True
            ),
        )
        initial = self.lr / self.div_factor
        self._set(_impl=self._phases(initial, self.lr, initial / self.final_div_factor))


@_frozen
class OneCycleMomentum(_Cycle):
    """Value of :func:`one_cycle_momentum`."""

    constructor = "one_cycle_momentum"
    steps: int
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    pct_start: float = 0.3
    anneal: str = "cos"
    three_phase: bool = False

    def __post_init__(self) -> None:
        self._set(
            base_momentum=_check.number("base_momentum", self.base_momentum),
            max_momentum=_check.number("max_momentum", self.max_momentum),
        )
        high, low = self.max_momentum, self.base_momentum
        self._set(_impl=self._phases(high, low, high))


@_frozen
class WarmupStableDecay(_Composite):
    """Value of :func:`warmup_stable_decay`."""

    constructor = "warmup_stable_decay"
    lr: float
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    final_lr: float = 0.0
    decay: str = "cosine"

    def __post_init__(self) -> None:
        self._set(
            lr=_check.number("lr", self.lr),
            warmup_steps=_check.integer("warmup_steps", self.warmup_steps, minimum=0),
            stable_steps=_check.integer("stable_steps", self.stable_steps, minimum=0),
            decay_steps=_check.integer("decay_steps", self.decay_steps),
            final_lr=_check.number("final_lr", self.final_lr),
            decay=_check.choice("decay", self.decay, ("cosine", "linear")),
        )
        body = _RAMPS[self.decay](self.lr, self.decay_steps, final_lr=self.final_lr)
        if self.stable_steps:
            body = join([constant(self.lr), body], [self.stable_steps])
        if self.warmup_steps:
            body = warmup(self.warmup_steps, body)
        self._set(_impl=body)


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Join:
    """Run ``schedules[i]`` from ``boundaries[i-1]`` (0 for the first) until ``boundaries[i]``.

    Each schedule sees the steps since its own boundary, so at ``t = boundaries[i]``
    the value is ``schedules[i+1](0)``.  ``boundaries`` are strictly increasing
    positive integers, one fewer than ``schedules``.  Pieces are not made to meet:
    ``join`` runs what it is given (the composites below choose pieces that do).
    As optax's ``join_schedules``.

    >>> s = join([constant(1.0), linear(0.5, 2)], [3])
    >>> [s(t) for t in range(6)]
    [1.0, 1.0, 1.0, 0.5, 0.25, 0.0]
    """
    return Join(schedules, boundaries)  # type: ignore[arg-type]


def warmup(steps: int, then: Schedule, start_lr: float = 0.0) -> Warmup:
    r"""Linear warmup from ``start_lr`` to ``then(0)`` over ``steps`` steps, then ``then``.

    .. math::
        \eta_t = \begin{cases}
            \eta_{start} + (\mathrm{then}(0) - \eta_{start})\, t / W & t < W \\
            \mathrm{then}(t - W) & t \ge W
        \end{cases}

    ``then`` starts at its own step 0 when the warmup ends, so nesting never
    shifts it by one.  HF ``get_cosine_schedule_with_warmup(w, n)`` with peak
    ``lr`` is ``warmup(w, cosine(lr, n - w))``.

    >>> [warmup(2, constant(1.0))(t) for t in range(4)]
    [0.0, 0.5, 1.0, 1.0]
    """
    return Warmup(steps, then, start_lr)


def cosine_restarts(lr: float, period: int, mult: int = 1, final_lr: float = 0.0) -> CosineRestarts:
    r"""SGDR: cosine annealing from ``lr`` to ``final_lr`` that restarts at ``lr``.

    Cycle ``i`` lasts :math:`T_i = \mathrm{period} \cdot \mathrm{mult}^i` steps and is
    ``cosine(lr, T_i, final_lr)`` seen from the cycle's start.  torch
    ``CosineAnnealingWarmRestarts(T_0=period, T_mult=mult, eta_min=final_lr)``.

    Reference: I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent
    with Warm Restarts", ICLR 2017, https://arxiv.org/abs/1608.03983.

    >>> [cosine_restarts(1.0, 2)(t) for t in range(4)]
    [1.0, 0.5, 1.0, 0.5]
    """
    return CosineRestarts(lr, period, mult, final_lr)


def one_cycle(
    lr: float,
    steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
    three_phase: bool = False,
) -> OneCycle:
    """The 1cycle policy with torch ``OneCycleLR``'s parameters, defaults and phases.

    From ``lr / div_factor`` up to ``lr`` (the peak, at step ``pct_start * steps - 1``),
    then down to ``lr / div_factor / final_div_factor`` at step
    ``steps - 1``, each phase a ``cosine`` (``anneal="cos"``) or ``linear`` ramp.
    ``three_phase=True`` goes back down to ``lr / div_factor`` symmetrically
    before the final descent.  Pair it with :func:`one_cycle_momentum`.

    torch lets the peak fall between steps; here ``pct_start * steps`` is rounded
    to the nearest whole step (halves up), so the two agree whenever
    ``pct_start * steps`` is whole.

    Reference: L. N. Smith and N. Topin, "Super-Convergence: Very Fast Training
    of Neural Networks Using Large Learning Rates", 2018,
    https://arxiv.org/abs/1708.07120; torch.optim.lr_scheduler.OneCycleLR.

    >>> one_cycle(1.0, 100)(29)
    1.0
    """
    return OneCycle(lr, steps, pct_start, div_factor, final_div_factor, anneal, three_phase)


def one_cycle_momentum(
    steps: int,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal: str = "cos",
    three_phase: bool = False,
) -> OneCycleMomentum:
    """The momentum (or Adam beta1) half of 1cycle: the mirror image of :func:`one_cycle`.

    ``max_momentum`` down to ``base_momentum`` while the lr rises, back up to
    ``max_momentum`` while it falls (three-phase: and flat at ``max_momentum``
    for the last phase), with the same phase boundaries as
    ``one_cycle(lr, steps, pct_start, anneal=..., three_phase=...)``: torch
    ``OneCycleLR(cycle_momentum=True)``.  Drive ``"momentum"`` or ``"betas[0]"``
    with :class:`~optimlab.schedules.ScheduledHyperparameter`.

    >>> one_cycle_momentum(100)(29)
    0.85
    """
    return OneCycleMomentum(steps, base_momentum, max_momentum, pct_start, anneal, three_phase)


def warmup_stable_decay(
    lr: float,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    final_lr: float = 0.0,
    decay: str = "cosine",
) -> WarmupStableDecay:
    """Warmup-Stable-Decay: linear warmup to ``lr``, hold, then decay to ``final_lr``.

    ``warmup(warmup_steps, join([constant(lr), D], [stable_steps]))`` where ``D`` is
    ``cosine(lr, decay_steps, final_lr)`` or ``linear(...)`` (``decay=``); a
    zero ``warmup_steps`` or ``stable_steps`` leaves that phase out.  Matches HF
    ``get_wsd_schedule(warmup_type="linear", decay_type=decay, min_lr_ratio=final_lr
    / lr)`` from the end of warmup on; recent HF versions start the warmup at
    ``final_lr``, this one starts it at 0 (as ``warmup`` does).

    Reference: S. Hu et al., "MiniCPM: Unveiling the Potential of Small Language
    Models with Scalable Training Strategies", 2024, https://arxiv.org/abs/2404.06395
    (section 4); transformers.get_wsd_schedule.

    >>> [warmup_stable_decay(1.0, 2, 1, 2, decay="linear")(t) for t in range(6)]
    [0.0, 0.5, 1.0, 1.0, 0.5, 0.0]
    """
    return WarmupStableDecay(lr, warmup_steps, stable_steps, decay_steps, final_lr, decay)

r"""The schedule value type and the simple, closed-form schedules.

Each schedule is a frozen dataclass (compared, hashed and pickled by value)
made by a lower-case constructor function that is the public API.  The class
checks its fields in ``__post_init__``, so a schedule built any way (constructor,
class, SPEC text) is valid; unpickling restores the fields without re-checking.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, ClassVar

from . import _check

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "multistep",
    "exponential",
    "cosine",
    "linear",
    "polynomial",
    "inverse_sqrt",
    "scale",
]


class Schedule:
    """A pure function of the step: ``schedule(t) -> float`` for ``t = 0, 1, 2, ...``.

    Subclasses are frozen dataclasses whose fields are exactly the parameters
    of the constructor named ``constructor``, in the same order and with the same
    defaults; that is what lets :attr:`spec` print them and the SPEC parser
    read them back.
    """

    constructor: ClassVar[str]

    def __call__(self, step: int) -> float:
        t = _check.step(step)
        value = self._value(t)
        if not math.isfinite(value):
            # only an overflow gets here (every field is finite): 1e308 * 10
            raise ValueError(f"{self.spec} at step {t} is {value}: the value overflows a float")
        return value

    def _value(self, t: int) -> float:
        """The value at step ``t``, an int >= 0 already checked.  Schedules built of
        others call their ``_value``, so that an error names the whole schedule."""
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """The SPEC text of this schedule: the constructor call, defaults left out.

        ``parse(s.spec) == s`` for every schedule ``s``, and the text is also
        valid Python given ``from optimlab.schedules import *``.
        """
        args = []
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            if not field.init:
                continue
            value = getattr(self, field.name)
            if field.default is dataclasses.MISSING:
                args.append(_format(value))
            elif value != field.default:
                args.append(f"{field.name}={_format(value)}")
        return f"{self.constructor}({', '.join(args)})"

    def __repr__(self) -> str:
        return self.spec

    def _set(self, **fields: Any) -> None:
        """Store checked, normalised field values on the frozen instance."""
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def scale(self, factor: float) -> Scaled:
        """This schedule times ``factor``; ``0.1 * s`` and ``s * 0.1`` mean the same."""
        return scale(self, factor)

    def __mul__(self, other: object) -> Scaled:
        if isinstance(other, bool) or not isinstance(other, numbers.Real):
            return NotImplemented
        return self.scale(other)

    __rmul__ = __mul__


def _format(value: Any) -> str:
    if isinstance(value, Schedule):
        return value.spec
    if isinstance(value, tuple):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return repr(value)


def check_schedule(name: str, value: Any) -> Schedule:
    if not isinstance(value, Schedule):
        raise ValueError(f"{name} must be a schedule, got {name}={value!r}")
    return value


def _frozen(cls: type) -> type:
    return dataclasses.dataclass(frozen=True, repr=False)(cls)


@_frozen
class Constant(Schedule):
    """Value of :func:`constant`."""

    constructor = "constant"
    lr: float

    def __post_init__(self) -> None:
        self._set(lr=_check.number("lr", self.lr))

    def _value(self, t: int) -> float:
        return self.lr


@_frozen
class StepDecay(Schedule):
    """Value of :func:`step_decay`."""

    constructor = "step_decay"
    lr: float
    every: int
    gamma: float

    def __post_init__(self) -> None:
        self._set(
            lr=_check.number("lr", self.lr),
            every=_check.integer("every", self.every),
            gamma=_check.gamma("gamma", self.gamma),
        )

    def _value(self, t: int) -> float:
        return self.lr * self.gamma ** (t // self.every)


@_frozen
class MultiStep(Schedule):
    """Value of :func:`multistep`."""

    constructor = "multistep"
    lr: float
    milestones: tuple[int, ...]
    gamma: float

    def __post_init__(self) -> None:
        self._set(
            lr=_check.number("lr", self.lr),
            milestones=_check.increasing("milestones", self.milestones),
            gamma=_check.gamma("gamma", self.gamma),
        )

    def _value(self, t: int) -> float:
        return self.lr * self.gamma ** bisect_right(self.milestones, t)


@_frozen
class Exponential(Schedule):
    """Value of :func:`exponential`."""

    constructor = "exponential"
    lr: float
    gamma: float

    def __post_init__(self) -> None:
        self._set(lr=_check.number("lr", self.lr), gamma=_check.gamma("gamma", self.gamma))

    def _value(self, t: int) -> float:
        return self.lr * self.gamma**t


class _Decay(Schedule):
    """The schedules that go from ``lr`` at step 0 to ``final_lr`` at ``steps``, then stay.

    A subclass gives ``_remaining(t)``, the fraction of ``lr - final_lr`` still
    left at ``0 < t < steps``.  The end points are returned as given: the formulas
    alone can miss them by an ulp, and warmups, restarts and joins rely on a
    piece starting at exactly ``lr`` and ending at exactly ``final_lr``.
    """

    def __post_init__(self) -> None:
        self._set(
            lr=_check.number("lr", self.lr),
            steps=_check.integer("steps", self.steps),
            final_lr=_check.number("final_lr", self.final_lr),
        )

    def _value(self, t: int) -> float:
        if t == 0:
            return self.lr
        if t >= self.steps:
            return self.final_lr
        return self.final_lr + (self.lr - self.final_lr) * self._remaining(t)

    def _remaining(self, t: int) -> float:
        raise NotImplementedError


@_frozen
class Cosine(_Decay):
    """Value of :func:`cosine`."""

    constructor = "cosine"
    lr: float
    steps: int
    final_lr: float = 0.0

    def _remaining(self, t: int) -> float:
        # As torch's closed form, so values agree to the last bit.
        return (1 + math.cos(math.pi * t / self.steps)) / 2


@_frozen
class Linear(_Decay):
    """Value of :func:`linear`."""

    constructor = "linear"
    lr: float
    steps: int
    final_lr: float = 0.0

    def _remaining(self, t: int) -> float:
        return 1 - t / self.steps


@_frozen
class Polynomial(_Decay):
    """Value of :func:`polynomial`."""

    constructor = "polynomial"
    lr: float
    steps: int
    power: float
    final_lr: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set(power=_check.number("power", self.power, positive=True))

    def _remaining(self, t: int) -> float:
        return (1 - t / self.steps) ** self.power


@_frozen
class InverseSqrt(Schedule):
    """Value of :func:`inverse_sqrt`."""

    constructor = "inverse_sqrt"
    lr: float
    timescale: int
    offset: int = 0

    def __post_init__(self) -> None:
        self._set(
            lr=_check.number("lr", self.lr),
            timescale=_check.integer("timescale", self.timescale),
            offset=_check.integer("offset", self.offset, minimum=0),
        )

    def _value(self, t: int) -> float:
        return self.lr / math.sqrt(max(1.0, (t + self.offset) / self.timescale))


@_frozen
class Scaled(Schedule):
    """Value of :func:`scale`."""

    constructor = "scale"
    schedule: Schedule
    factor: float

    def __post_init__(self) -> None:
        check_schedule("schedule", self.schedule)
        self._set(factor=_check.number("factor", self.factor))

    def _value(self, t: int) -> float:
        return self.factor * self.schedule._value(t)


def constant(lr: float) -> Constant:
    """``lr`` at every step.

    >>> constant(0.1)(1000)
    0.1
    """
    return Constant(lr)


def step_decay(lr: float, every: int, gamma: float) -> StepDecay:
    r"""Reduce the value at fixed intervals (the lecture's "step decay"; torch ``StepLR``).

    .. math:: \eta_t = \eta \, \gamma^{\lfloor t / \mathrm{every} \rfloor}

    >>> [step_decay(1.0, every=2, gamma=0.5)(t) for t in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    return StepDecay(lr, every, gamma)


def multistep(lr: float, milestones: Sequence[int], gamma: float) -> MultiStep:
    r"""Multiply by ``gamma`` at each milestone (torch ``MultiStepLR``).

    .. math:: \eta_t = \eta \, \gamma^{\#\{m \in \mathrm{milestones} : m \le t\}}

    ``milestones`` must be strictly increasing positive integers.

    >>> [multistep(1.0, [1, 3], 0.1)(t) for t in range(4)]
    [1.0, 0.1, 0.1, 0.010000000000000002]
    """
    return MultiStep(lr, milestones, gamma)  # type: ignore[arg-type]


def exponential(lr: float, gamma: float) -> Exponential:
    r"""Multiply by ``gamma`` every step (torch ``ExponentialLR``): :math:`\eta_t = \eta\gamma^t`.

    >>> exponential(1.0, 0.5)(3)
    0.125
    """
    return Exponential(lr, gamma)


def cosine(lr: float, steps: int, final_lr: float = 0.0) -> Cosine:
    r"""Cosine annealing from ``lr`` to ``final_lr`` over ``steps`` steps, then flat.

    .. math::
        \eta_t = \eta_{final} + (\eta - \eta_{final})
                 \frac{1 + \cos(\pi \min(t, T) / T)}{2}

    Equals torch's ``CosineAnnealingLR(T_max=steps, eta_min=final_lr)`` for
    ``t <= steps``; torch's then rises again, this stays at ``final_lr``.
    ``final_lr > lr`` gives a cosine ramp up.

    Reference: I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent
    with Warm Restarts", ICLR 2017, https://arxiv.org/abs/1608.03983 (eq. 5,
    one cycle).

    >>> cosine(1.0, 10)(5)
    0.5
    """
    return Cosine(lr, steps, final_lr)


def linear(lr: float, steps: int, final_lr: float = 0.0) -> Linear:
    r"""A straight line from ``lr`` at step 0 to ``final_lr`` at ``steps``, then flat.

    .. math:: \eta_t = \eta_{final} + (\eta - \eta_{final})(1 - \min(t, T) / T)

    The lecture's "linear decay"; torch ``LinearLR(start_factor=1,
    end_factor=final_lr / lr, total_iters=steps)``, HF ``linear``.  With
    ``final_lr > lr`` it is a ramp up (what :func:`warmup` uses).

    >>> linear(1.0, 4)(1)
    0.75
    """
    return Linear(lr, steps, final_lr)


def polynomial(lr: float, steps: int, power: float, final_lr: float = 0.0) -> Polynomial:
    r"""Polynomial decay from ``lr`` to ``final_lr`` over ``steps`` steps, then flat.

    .. math:: \eta_t = \eta_{final} + (\eta - \eta_{final})(1 - \min(t, T) / T)^{p}

    torch ``PolynomialLR(total_iters=steps, power=power)`` (there ``final_lr = 0``);
    HF ``get_polynomial_decay_schedule_with_warmup`` after its warmup.

    >>> polynomial(1.0, 4, power=2)(2)
    0.25
    """
    return Polynomial(lr, steps, power, final_lr)


def inverse_sqrt(lr: float, timescale: int, offset: int = 0) -> InverseSqrt:
    r"""Inverse square-root decay: flat for ``timescale`` steps, then :math:`\propto 1/\sqrt{t}`.

    .. math:: \eta_t = \eta / \sqrt{\max(1, (t + \mathrm{offset}) / \tau)}

    ``offset`` shifts the clock, which is what reproduces the usual forms when
    the schedule runs after a warmup of ``w`` steps (``warmup`` starts it at 0):

    - Vaswani et al. (2017), "Attention Is All You Need", section 5.3,
      https://arxiv.org/abs/1706.03762: ``warmup(w, inverse_sqrt(lr, w, offset=w))``
      is :math:`\eta \min(t / w, \sqrt{w / t})`.
    - HF ``get_inverse_sqrt_schedule(num_warmup_steps=w, timescale=ts)`` is
      ``warmup(w, inverse_sqrt(lr, ts, offset=ts))``.

    >>> inverse_sqrt(1.0, 100)(400)
    0.5
    """
    return InverseSqrt(lr, timescale, offset)


def scale(schedule: Schedule, factor: float) -> Scaled:
    """``schedule`` multiplied by ``factor >= 0`` (also written ``factor * schedule``).

    Handy to keep a shape and change its peak: ``0.1 * cosine(1.0, 1000)``.

    >>> scale(linear(1.0, 4), 0.5)(1)
    0.375
    """
    return Scaled(schedule, factor)

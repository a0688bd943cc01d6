r"""Comparing two optimizers over seeds: a paired t interval, looked at sequentially.

Runs with the same seed share the initial weights and the order of the
mini-batches, so a comparison pairs them: for seed ``i`` the difference is
:math:`d_i = m_A(i) - m_B(i)` of some metric ``m`` (lower is better).  The
effect is the mean difference and its confidence interval is Student's

.. math:: \bar d \pm t_{1-\alpha'/2,\,n-1}\, s / \sqrt n

(exact when the differences are normally distributed; a t interval, not a
bootstrap, because a bootstrap's intervals are too narrow at 5–20 seeds).

*Sequential looks.*  A comparison is looked at after ``looks[0]`` seeds, and
again after ``looks[1]``, ... while its interval still contains 0.  Each look
uses :math:`\alpha' = \alpha / K` for ``K`` planned looks (Bonferroni), so the
chance that any look declares a difference that is not there is at most
:math:`\alpha`: the stated confidence holds for the whole sequence.  A
comparison still undecided at its last look reports the smallest effect it
would have detected with probability :data:`POWER`,
:math:`(t_{1-\alpha'/2} + t_{P}) s / \sqrt n` (the usual power calculation
with ``s`` for the unknown spread).

*Equivalence* ("B does as well as A"): :func:`equivalence` asks whether the
difference lies within a margin ``±m``, by two one-sided tests (Schuirmann 1987)
each at :math:`\alpha'`: equivalent if the :math:`1 - 2\alpha'` interval lies
inside ``(-m, m)``, different if it lies entirely beyond ``m`` or ``-m``.  The
same looks and Bonferroni split apply, so a false "equivalent" (or "different")
has probability at most :math:`\alpha` over the whole sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from scipy import stats as _scipy

__all__ = ["POWER", "SAME", "Interval", "Decision", "detectable", "equivalence", "paired_interval",
           "sequential"]  # fmt: skip

#: the probability of detecting an effect of the reported "detectable" size
POWER = 0.8
#: an equivalence comparison's ``better`` when the difference lies within its margin
SAME = "same"


@dataclass(frozen=True)
class Interval:
    """The mean paired difference with its two-sided confidence interval at ``level``."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


@cache
def _t(q: float, df: int) -> float:
    """Student's t quantile (cached: the same few are asked for over and over)."""
    return float(_scipy.t.ppf(q, df))


def paired_interval(differences: Sequence[float], level: float) -> Interval:
    d = [float(x) for x in differences]
    n = len(d)
    if n == 0:
        return Interval(math.nan, -math.inf, math.inf, 0, math.nan, level)
    mean = math.fsum(d) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, math.nan, level)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1))
    half = _t(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, level)


def detectable(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The true mean difference a two-sided t test at ``alpha`` detects with ``power``."""
    if n < 2 or not math.isfinite(sd):
        return math.inf
    return (_t(1 - alpha / 2, n - 1) + _t(power, n - 1)) * sd / math.sqrt(n)


@dataclass(frozen=True)
class Decision:
    """Where a sequential comparison stopped.

    ``better``: "a" or "b" (decided: the interval excludes 0 on that side; for an
    equivalence, the margin), :data:`SAME` (an equivalence held) or None.  ``interval``
    is the last look's; ``detectable`` is set when undecided at the last look; ``margin``
    is an equivalence's at the last look.
    """

    better: str | None
    interval: Interval
    look: int  # index of the look it stopped at
    looks: tuple[int, ...]
    confidence: float
    detectable: float | None = None
    margin: float | None = None

    @property
    def decided(self) -> bool:
        return self.better is not None

    @property
    def final(self) -> bool:
        """True if no more seeds would be added: decided, or undecided at the last look."""
        return self.decided or self.look == len(self.looks) - 1


def sequential(
    differences: Sequence[float], looks: Sequence[int], confidence: float
) -> Decision | None:
    """Walk the looks over the paired ``differences`` (seed order) while they are available.

    Returns the decision at the first look that decides, or at the last look that the
    available differences reach (None if they do not reach even the first look).
    """

    def judge(d: Sequence[float], alpha: float) -> tuple[str | None, Interval, None]:
        interval = paired_interval(d, 1 - alpha)
        if not interval.excludes_zero:
            return None, interval, None
        return ("a" if interval.hi < 0 else "b"), interval, None

    return _walk(differences, looks, confidence, judge)


def equivalence(
    differences: Sequence[float],
    looks: Sequence[int],
    confidence: float,
    margin: Callable[[int], float],
) -> Decision | None:
    """Walk the looks as :func:`sequential` does, asking whether the mean difference lies
    within ``±margin(n)`` after ``n`` seeds (two one-sided tests, see the module)."""

    def judge(d: Sequence[float], alpha: float) -> tuple[str | None, Interval, float]:
        m = margin(len(d))
        interval = paired_interval(d, 1 - 2 * alpha)
        if -m < interval.lo and interval.hi < m:
            return SAME, interval, m
        if interval.lo > m or interval.hi < -m:
            return ("b" if interval.lo > m else "a"), interval, m
        return None, interval, m

    return _walk(differences, looks, confidence, judge)


Judge = Callable[[Sequence[float], float], tuple[str | None, Interval, float | None]]


def _walk(
    differences: Sequence[float], looks: Sequence[int], confidence: float, judge: Judge
) -> Decision | None:
    """The looks of either test: ``judge(first n differences, alpha per look)`` gives
    (better or None, the interval, the margin or None); stop at the first that decides."""
    looks = tuple(looks)
    alpha = (1 - confidence) / len(looks)
    decision = None
    for k, n in enumerate(looks):
        if len(differences) < n:
            break
        better, interval, m = judge(differences[:n], alpha)
        last = k == len(looks) - 1
        mde = detectable(interval.sd, n, alpha) if last and better is None else None
        decision = Decision(better, interval, k, looks, confidence, mde, m)
        if better is not None:
            break
    return decision

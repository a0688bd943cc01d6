"""The lecture's claims, each checked against the stored runs by a stated rule.

Every check is a function ``(study, store) -> Claim``.  It finds the runs it
needs (the tuned runs of the groups named in its experiment), computes the
numbers from the stored per-step series, and applies its rule; the verdict is
``held``, ``did not hold`` or ``inconclusive`` (with the reason), never written
by hand.  Comparisons across seeds use ranges: "A is faster than B" means every
seed of A beats every seed of B (the min–max ranges do not overlap); with fewer
than :data:`MIN_SEEDS` seeds a stochastic comparison is inconclusive.
"""

from __future__ import annotations

from collections.abc import Callable

from ..analysis import Study
from ..store import Store
from .adaptive import claim_adagrad, claim_bias_correction, early_update
from .common import HELD, INCONCLUSIVE, MIN_SEEDS, NOT_HELD, Claim
from .convergence import (
    claim_local_minima,
    claim_momentum,
    claim_nesterov,
    claim_oscillation,
    global_fraction,
    zigzag,
)
from .schedules import claim_schedules, claim_warmup

__all__ = [
    "CLAIMS",
    "Claim",
    "HELD",
    "INCONCLUSIVE",
    "MIN_SEEDS",
    "NOT_HELD",
    "check_all",
    "early_update",
    "global_fraction",
    "zigzag",
]

CLAIMS: list[Callable[[Study, Store], Claim]] = [
    claim_oscillation,
    claim_momentum,
    claim_nesterov,
    claim_adagrad,
    claim_bias_correction,
    claim_schedules,
    claim_warmup,
    claim_local_minima,
]


def check_all(study: Study, store: Store) -> list[Claim]:
    return [check(study, store) for check in CLAIMS]

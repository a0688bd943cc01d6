"""The lecture's claims, each checked against the stored runs by a stated rule.

Every check is a function ``(study, store) -> Claim``.  It finds the runs it
needs, computes the numbers from the stored per-step series, and applies its
rule; the verdict is ``held``, ``not held`` or ``undecided`` (with the reason
and, for a comparison, the smallest effect it could have detected), never
written by hand.  A comparison between two optimizers pairs their runs by seed
and decides with a confidence interval (see :mod:`optimlab.lab.stats`); the
runner added seeds to it while it was undecided.

``FORMS`` are the same kind of checks for the lecture's own forms of the
optimizers (its velocity, its look-ahead gradient, its ε inside the root), and
:func:`check_precision` for optimlab's low-precision storage against float32.
"""

from __future__ import annotations

from collections.abc import Callable

from ..analysis import Study
from ..store import Store
from .adaptive import claim_adagrad, claim_bias_correction, early_update
from .common import HELD, NOT_HELD, UNDECIDED, Claim
from .convergence import (
    claim_local_minima,
    claim_momentum,
    claim_nesterov,
    claim_oscillation,
    clopper_pearson,
    global_fraction,
    zigzag,
)
from .forms import FORMS
from .precision import claim_precision, section_params
from .schedules import claim_schedules, claim_warmup

__all__ = [
    "CLAIMS",
    "FORMS",
    "HELD",
    "NOT_HELD",
    "UNDECIDED",
    "Claim",
    "check_all",
    "check_forms",
    "check_precision",
    "clopper_pearson",
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


def check_forms(study: Study, store: Store) -> list[Claim]:
    return [check(study, store) for check in FORMS]


def check_precision(study: Study, store: Store) -> list[Claim]:
    """Low precision against float32: the state claim (P) and the bfloat16-params section."""
    return [claim_precision(study, store), section_params(study, store)]

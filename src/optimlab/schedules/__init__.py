"""Learning-rate schedules: pure, composable, resumable, and able to drive any optimizer.

A schedule is an immutable value, ``schedule(step) -> float`` for steps 0, 1,
2, ... in closed form (no hidden counter), compared and hashed by value,
picklable, and printed as the call that builds it::

    >>> from optimlab.schedules import cosine, warmup, parse
    >>> s = warmup(500, cosine(3e-4, 9500, final_lr=3e-5))
    >>> s
    warmup(500, cosine(0.0003, 9500, final_lr=3e-05))
    >>> s(0), s(250), s(500)
    (0.0, 0.00015, 0.0003)
    >>> parse(str(s)) == s
    True

Simple schedules (:mod:`.core`): ``constant``, ``step_decay``, ``multistep``,
``exponential``, ``cosine``, ``linear``, ``polynomial``, ``inverse_sqrt``,
``scale`` (also ``0.1 * s``).  Built from them (:mod:`.composite`): ``join``,
``warmup``, ``cosine_restarts`` (SGDR), ``one_cycle`` and ``one_cycle_momentum``
(1cycle), ``warmup_stable_decay`` (WSD).

To drive an optimizer, :class:`ScheduledLR` (the ``lr`` of every param group,
times the group's ``lr_scale`` if it has one) or :class:`ScheduledHyperparameter`
(any entry: ``"momentum"``, ``"weight_decay"``, ``"betas[0]"``); both are
``torch.optim.lr_scheduler.LRScheduler`` subclasses whose state is the step::

    sched = ScheduledLR(optimizer, s)
    for batch in data:
        ...
        optimizer.step()
        sched.step()

On the command line: ``optimlab schedule SPEC [SPEC ...] --steps N --out plot.png``.

"""

from .adapter import ScheduledHyperparameter, ScheduledLR
from .composite import (
    cosine_restarts,
    join,
    one_cycle,
    one_cycle_momentum,
    warmup,
    warmup_stable_decay,
)
from .core import (
    Schedule,
    constant,
    cosine,
    exponential,
    inverse_sqrt,
    linear,
    multistep,
    polynomial,
    scale,
    step_decay,
)
from .spec import GRAMMAR, parse

__doc__ += GRAMMAR

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
    "join",
    "warmup",
    "cosine_restarts",
    "one_cycle",
    "one_cycle_momentum",
    "warmup_stable_decay",
    "parse",
    "ScheduledLR",
    "ScheduledHyperparameter",
]

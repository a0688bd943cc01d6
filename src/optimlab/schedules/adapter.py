"""Drive any ``torch.optim.Optimizer`` hyperparameter from a schedule.

The adapters are real :class:`torch.optim.lr_scheduler.LRScheduler` subclasses,
so Hugging Face Trainer, Lightning and plain loops accept them, but they keep
no state besides the step: every value is ``schedule(step)``, computed afresh.
That is what makes resuming exact and the call order irrelevant.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from . import _check
from .core import Schedule

__all__ = ["ScheduledHyperparameter", "ScheduledLR"]

_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")


class ScheduledHyperparameter(LRScheduler):
    """Set ``group[key] = schedule(step) * group.get(scale_key, 1)`` in every param group.

    ``key`` names a param-group entry: ``"lr"``, ``"momentum"``, ``"weight_decay"``,
    or one element of a tuple entry, ``"betas[0]"`` for Adam's beta1.  Steps
    follow torch: right after construction the groups hold ``schedule(0)`` and
    ``last_epoch == 0``; each :meth:`step` (call it after ``optimizer.step()``)
    moves to the next step.  A tensor entry (``Adam(lr=torch.tensor(1e-3))``) is
    updated in place with ``fill_``, never replaced, so a ``torch.compile``'d
    optimizer step keeps its graph.

    :meth:`state_dict` is ``{"last_epoch": step, "schedule": spec, "key": key}``;
    :meth:`load_state_dict` refuses a state from a different schedule or key
    and sets the values of the loaded step at once, before or after the
    optimizer's own ``load_state_dict``.  To change the schedule of a resumed
    run, build a new adapter and call ``step(epoch=...)`` to jump to the step.

    >>> opt = torch.optim.SGD([torch.zeros(1)], lr=1.0, momentum=0.9)
    >>> from optimlab.schedules import one_cycle_momentum
    >>> sched = ScheduledHyperparameter(opt, "momentum", one_cycle_momentum(100))
    >>> opt.param_groups[0]["momentum"]
    0.95
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        key: str,
        schedule: Schedule,
        *,
        scale_key: str | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule must be an optimlab schedule such as cosine(0.1, 1000), got {schedule!r}"
            )
        match = _KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            raise ValueError(f"key must be a param-group entry like 'lr' or 'betas[0]', got {key=}")
        self.optimizer = optimizer
        self.schedule = schedule
        self.key = key
        self.scale_key = scale_key
        self._entry = match.group(1)
        self._index = None if match.group(2) is None else int(match.group(2))
        for i, group in enumerate(optimizer.param_groups):
            self._read(group, i)
        # torch's LRScheduler.__init__ is not called: it wraps optimizer.step to
        # police the call order, which a closed-form schedule does not need.
        self.last_epoch = 0
        self._apply()

    # --- torch LRScheduler API -------------------------------------------------

    def step(self, epoch: int | None = None) -> None:
        """Advance one step, or go to step ``epoch`` (any order: values are closed-form)."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else _check.step(epoch)
        self._apply()

    def get_lr(self) -> list[float]:
        """The values this adapter sets at ``last_epoch``, one per param group."""
        value = self.schedule(self.last_epoch)
        return [value * self._scale(group) for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[Any]:
        """The values last set, one per group; tensor entries as copies (as torch)."""
        return self._last_values

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "schedule": self.schedule.spec, "key": self.key}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        name = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {
            "last_epoch",
            "schedule",
            "key",
        }:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else state_dict
            raise ValueError(
                f"not a {name} state_dict: expected keys ['key', 'last_epoch', 'schedule'], "
                f"got {keys!r}"
            )
        if state_dict["schedule"] != self.schedule.spec or state_dict["key"] != self.key:
            raise ValueError(
                f"this state_dict is for schedule {state_dict['schedule']} on "
                f"{state_dict['key']!r}, but this {name} runs {self.schedule.spec} on "
                f"{self.key!r}; build the {name} with the checkpoint's schedule "
                "(optimlab.schedules.parse(state_dict['schedule']))"
            )
        self.last_epoch = _check.step(state_dict["last_epoch"])
        self._apply()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key={self.key!r}, schedule={self.schedule.spec}, "
            f"last_epoch={self.last_epoch})"
        )

    # --- param-group access ----------------------------------------------------

    def _scale(self, group: dict[str, Any]) -> float:
        return 1.0 if self.scale_key is None else group.get(self.scale_key, 1.0)

    def _read(self, group: dict[str, Any], i: int) -> Any:
        if self._entry not in group:
            raise ValueError(
                f"param_groups[{i}] has no {self._entry!r} entry to schedule "
                f"(entries: {sorted(k for k in group if k != 'params')})"
            )
        value = group[self._entry]
        if self._index is None:
            return value
        if not isinstance(value, (tuple, list)) or self._index >= len(value):
            raise ValueError(
                f"param_groups[{i}][{self._entry!r}] = {value!r} has no element "
                f"[{self._index}] to schedule"
            )
        return value[self._index]

    def _write(self, group: dict[str, Any], i: int, value: float) -> None:
        current = self._read(group, i)
        if isinstance(current, torch.Tensor):
            current.fill_(value)
        elif self._index is None:
            group[self._entry] = value
        else:
            items = list(group[self._entry])
            items[self._index] = value
            group[self._entry] = type(group[self._entry])(items)

    def _apply(self) -> None:
        groups = self.optimizer.param_groups
        for i, (group, value) in enumerate(zip(groups, self.get_lr(), strict=True)):
            self._write(group, i, value)
        self._last_values = [
            v.clone() if isinstance(v, torch.Tensor) else v
            for v in (self._read(group, i) for i, group in enumerate(groups))
        ]


class ScheduledLR(ScheduledHyperparameter):
    """Set each param group's ``lr`` to ``schedule(step) * group.get("lr_scale", 1)``.

    ``lr_scale`` is timm's per-group factor (layer-wise lr decay, a slower
    backbone); pass ``scale_key=None`` to ignore it, or another entry's name.
    Everything else is as :class:`ScheduledHyperparameter`.

    >>> from optimlab.schedules import cosine, warmup
    >>> opt = torch.optim.SGD([torch.zeros(1)], lr=0.0)
    >>> sched = ScheduledLR(opt, warmup(2, cosine(0.1, 8)))
    >>> for _ in range(2):
    ...     opt.step()
    ...     sched.step()
    >>> sched.get_last_lr()
    [0.1]
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        *,
        scale_key: str | None = "lr_scale",
    ) -> None:
        super().__init__(optimizer, "lr", schedule, scale_key=scale_key)

"""Drive any ``torch.optim.Optimizer`` hyperparameter from a schedule.

The adapters are real :class:`torch.optim.lr_scheduler.LRScheduler` subclasses,
with every attribute frameworks read on one (``optimizer``, ``base_lrs``,
``last_epoch``, ``_step_count``, ``_last_lr``), so Hugging Face Trainer,
Lightning, Accelerate and plain loops accept them; but every value is
``schedule(step)``, computed afresh, so the step is the whole state.  That is
what makes resuming exact and the call order irrelevant.

A value is written only if the optimizer would accept it (see :mod:`._rules`):
a step that would set ``betas[0] = 1.5`` raises ``ValueError`` and writes nothing.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from . import _check, _rules
from .core import Schedule

__all__ = ["ScheduledHyperparameter", "ScheduledLR"]

_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")
_STATE_KEYS = {"last_epoch", "schedule", "key"}  # what every version saves
_OPTIONAL_STATE_KEYS = {"_step_count"}  # saved since the adapters gained torch's counters


class ScheduledHyperparameter(LRScheduler):
    """Set ``group[key] = schedule(step) * group.get(scale_key, 1)`` in every param group.

    ``key`` names a param-group entry: ``"lr"``, ``"momentum"``, ``"weight_decay"``,
    or one element of a tuple entry, ``"betas[0]"`` for Adam's beta1.  Steps
    follow torch: right after construction the groups hold ``schedule(0)``,
    ``last_epoch == 0`` and ``_step_count == 1``; each :meth:`step` (call it after
    ``optimizer.step()``) moves to the next step.  A tensor entry
    (``Adam(lr=torch.tensor(1e-3))``) is updated in place with ``fill_``, never
    replaced, so a ``torch.compile``'d optimizer step keeps its graph.

    Each value is checked before it is written: an optimlab optimizer checks it
    with its own constructor rules, any other optimizer with torch's (finite
    ``lr >= 0``, ``betas`` in [0, 1), ...).  A step whose value would be refused
    raises ``ValueError`` naming the schedule, the step and the value, and
    changes nothing.

    As on torch's schedulers, ``base_lrs`` holds each group's value from before the
    adapter took over (``initial_lr`` if a torch scheduler set one), ``_last_lr``
    and :meth:`get_last_lr` the values last written (tensor entries as copies).

    :meth:`state_dict` is ``{"last_epoch": step, "schedule": spec, "key": key,
    "_step_count": n}``; :meth:`load_state_dict` also takes the state dicts saved
    before ``_step_count`` was added, refuses a state from a different schedule or
    key and sets the values of the loaded step at once, before or after the
    optimizer's own ``load_state_dict``.  To change the schedule of a resumed run,
    build a new adapter and call ``step(epoch=...)`` to jump to the step.

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
        initial = "initial_lr" if key == "lr" else None
        self.base_lrs = [
            _copy(group[initial] if initial in group else self._read(group, i))
            for i, group in enumerate(optimizer.param_groups)
        ]
        # torch's LRScheduler.__init__ is not called: it wraps optimizer.step to
        # police the call order, which a closed-form schedule does not need.
        # Its counters start as its initial step leaves them.
        self._go_to(0)
        self._step_count = 1

    # --- torch LRScheduler API -------------------------------------------------

    def step(self, epoch: int | None = None) -> None:
        """Advance one step, or go to step ``epoch`` (any order: values are closed-form)."""
        self._go_to(self.last_epoch + 1 if epoch is None else _check.step(epoch))
        self._step_count += 1

    def get_lr(self) -> list[float]:
        """The values this adapter sets at ``last_epoch``, one per param group."""
        return self._values(self.last_epoch)

    def get_last_lr(self) -> list[Any]:
        """The values last set, one per group; tensor entries as copies (as torch)."""
        return self._last_lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "schedule": self.schedule.spec,
            "key": self.key,
            "_step_count": self._step_count,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        name = type(self).__name__
        keys = set(state_dict) if isinstance(state_dict, dict) else None
        if keys is None or not _STATE_KEYS <= keys <= _STATE_KEYS | _OPTIONAL_STATE_KEYS:
            got = sorted(state_dict) if isinstance(state_dict, dict) else state_dict
            raise ValueError(
                f"not a {name} state_dict: expected keys {sorted(_STATE_KEYS)} "
                f"(and optionally {sorted(_OPTIONAL_STATE_KEYS)}), got {got!r}"
            )
        if state_dict["schedule"] != self.schedule.spec or state_dict["key"] != self.key:
            raise ValueError(
                f"this state_dict is for schedule {state_dict['schedule']} on "
                f"{state_dict['key']!r}, but this {name} runs {self.schedule.spec} on "
                f"{self.key!r}; build the {name} with the checkpoint's schedule "
                "(optimlab.schedules.parse(state_dict['schedule']))"
            )
        step = _check.step(state_dict["last_epoch"])
        # saved before the counter was: as many steps as torch's would have counted
        count = state_dict.get("_step_count", step + 1)
        count = _check.integer("_step_count", count)
        self._go_to(step)
        self._step_count = count

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key={self.key!r}, schedule={self.schedule.spec}, "
            f"last_epoch={self.last_epoch})"
        )

    # --- param-group access ----------------------------------------------------

    def _scale(self, group: dict[str, Any]) -> float:
        return 1.0 if self.scale_key is None else group.get(self.scale_key, 1.0)

    def _values(self, step: int) -> list[float]:
        value = self.schedule(step)
        return [value * self._scale(group) for group in self.optimizer.param_groups]

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

    def _with(self, group: dict[str, Any], value: Any) -> dict[str, Any]:
        """A shallow copy of ``group`` holding ``value`` at this adapter's key."""
        if self._index is None:
            return {**group, self._entry: value}
        items = list(group[self._entry])
        items[self._index] = value
        return {**group, self._entry: type(group[self._entry])(items)}

    def _check(self, group: dict[str, Any], i: int, step: int, value: float) -> None:
        """Raise ``ValueError`` unless the optimizer accepts ``value`` in ``group``."""
        stored: Any = value
        current = self._read(group, i)
        if isinstance(current, torch.Tensor):
            # The tensor's dtype rounds (0.99999999 in a float32 beta is 1.0); a CPU copy
            # says to what without reading a GPU tensor back every step.
            stored = torch.tensor(value, dtype=current.dtype)
        reason = _rules.refusal(self.optimizer, self._with(group, stored), self.key)
        if reason is None:
            return
        shown = repr(value)
        if self._scale(group) != 1:
            shown += f" (schedule value {self.schedule(step)!r} * {self.scale_key} "
            shown += f"{self._scale(group)!r})"
        if isinstance(stored, torch.Tensor) and float(stored) != value:
            shown += f", stored in a {stored.dtype} tensor as {float(stored)!r}"
        raise ValueError(
            f"{type(self).__name__}: schedule {self.schedule.spec} at step {step} gives "
            f"{self.key}={shown} for param_groups[{i}], which {type(self.optimizer).__name__} "
            f"refuses: {reason}; nothing was written"
        )

    def _write(self, group: dict[str, Any], i: int, value: float) -> None:
        current = self._read(group, i)
        if isinstance(current, torch.Tensor):
            current.fill_(value)
        else:
            group[self._entry] = self._with(group, value)[self._entry]

    def _go_to(self, step: int) -> None:
        """Write the values of ``step`` into every group, or raise and write nothing."""
        groups = self.optimizer.param_groups
        values = self._values(step)
        for i, (group, value) in enumerate(zip(groups, values, strict=True)):
            self._check(group, i, step, value)
        for i, (group, value) in enumerate(zip(groups, values, strict=True)):
            self._write(group, i, value)
        self.last_epoch = step
        self._last_lr = [_copy(self._read(group, i)) for i, group in enumerate(groups)]


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


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

"""One run: a configuration in, its metrics out, nothing written anywhere.

:func:`run_config` builds the canonical configuration of a run — everything
that decides its result — and :func:`run_key` hashes it.  :func:`train` runs it
and returns a :class:`RunResult` held in memory; the caller stores it in one
transaction, so a run interrupted half-way leaves no trace.

What is recorded, and when (step ``t`` means "at the weights after ``t`` updates"):

- ``train_loss``: the mean mini-batch loss over the steps since the previous
  logged step (every step for the first 20, then every ``log_every``);
- ``lr``: the learning rate of the update from step ``t``;
- ``update``: mean |Δw| / lr of that update — 1 for SGD on a unit gradient; Adam
  without bias correction makes it several times larger at the start;
- ``eff_lr``: median over weights of |Δw_i| / (lr |g_i|), the per-weight step
  multiplier: 1 for SGD, 1 / (√(Σ g²) + ε) for Adagrad, 1 / (√EMA(g²) + ε) for RMSProp;
- ``val_loss`` (and ``val_acc`` / ``val_bpc``) every ``eval_every`` steps, at 0 and at the end;
- for 2-D problems the array ``trajectory`` of shape (steps + 1, K, 2).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from optimlab.schedules import ScheduledLR, parse

from . import catalog, problems

__all__ = ["LAB_VERSION", "RunResult", "canonical", "run_config", "run_key", "train"]

#: bumped whenever training code changes what a configuration produces
LAB_VERSION = 1
#: every step is logged before this one (the first steps are where bias correction shows)
DENSE_STEPS = 20
#: a run stops as diverged once its loss is not finite or this many times its first loss
DIVERGED = 1e4


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def group_config(
    problem: str, settings: Mapping[str, Any], optimizer: str, schedule: str, steps: int
) -> dict[str, Any]:
    """What a run shares with the other runs of its (problem, optimizer, schedule) group."""
    spec = catalog.OPTIMIZERS[optimizer]
    evals = problems.get(problem).evals
    eval_every = 1 if evals is None else max(1, steps // evals)
    config = {
        "lab": LAB_VERSION,
        "problem": problem,
        "settings": dict(sorted(settings.items())),
        "optimizer": optimizer,
        "optimizer_class": spec.cls,
        "optimizer_kwargs": spec.kwargs,
        "schedule": schedule,
        "steps": int(steps),
        "eval_every": eval_every,
        "log_every": max(1, steps // 100),
    }
    if spec.param_dtype != "float32":  # (absent for float32: earlier runs keep their keys)
        config["param_dtype"] = spec.param_dtype
    if spec.revision:  # (absent at 0, likewise)
        config["revision"] = spec.revision
    return config


def run_config(group: Mapping[str, Any], lr: float, seed: int) -> dict[str, Any]:
    schedule = catalog.SCHEDULES[group["schedule"]].make(lr, group["steps"])
    return {**group, "lr": float(lr), "seed": int(seed), "schedule_spec": schedule.spec}


def run_key(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(config).encode()).hexdigest()[:20]


@dataclass
class RunResult:
    status: str  # "finished" or "diverged"
    steps_done: int
    wall_s: float  # from the first step to the end, evaluations included
    step_ms: float  # per training step, evaluations excluded
    #: mean mini-batch loss over the last 10 % of the steps (None if diverged)
    final_train_loss: float | None = None
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    setup_s: float = 0.0  # building the task (model, data) and the optimizer
    eval_ms: float = 0.0  # per evaluation

    def last(self, name: str) -> float | None:
        values = self.series.get(name)
        return values[-1][1] if values and self.status == "finished" else None


def _step_stats(before: list[torch.Tensor], params: list[torch.Tensor], lr: float) -> tuple:
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before, strict=True)])
    grad = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
    )
    if lr <= 0:
        return None, None
    update = delta.abs().mean().item() / lr
    mask = grad.abs() > 1e-12
    eff = (delta[mask].abs() / grad[mask].abs()).median().item() / lr if mask.any() else None
    return update, eff


def train(config: Mapping[str, Any], progress: Callable[[int], None] | None = None) -> RunResult:
    """Run ``config``; ``progress(steps_done)`` is called now and then."""
    problem = problems.get(config["problem"])
    steps, seed = int(config["steps"]), int(config["seed"])
    log_every, eval_every = int(config["log_every"]), int(config["eval_every"])
    setup = time.perf_counter()
    torch.manual_seed(seed)
    task = problem.make(seed, config["settings"])
    if "param_dtype" in config:
        task.cast(getattr(torch, config["param_dtype"]))
    optimizer = catalog.build_optimizer(config["optimizer"], task.params, config["lr"], seed)
    scheduler = ScheduledLR(optimizer, parse(config["schedule_spec"]))
    series: dict[str, list[tuple[int, float]]] = {}

    def record(name: str, step: int, value: float | None) -> None:
        if value is not None:
            series.setdefault(name, []).append((step, float(value)))

    def evaluate(step: int) -> None:
        for name, value in task.evaluate().items():
            record(name, step, value)

    trajectory = [task.position()] if problem.is_2d else None
    start = time.perf_counter()
    setup = start - setup
    eval_time, evals = 0.0, 0
    evaluate(0)
    losses: list[float] = []
    pending: list[float] = []
    status, done = "finished", 0

    for step in range(steps):
        batch = task.batch(step)
        lr = optimizer.param_groups[0]["lr"]
        logged = step < DENSE_STEPS or step % log_every == 0 or step == steps - 1
        before = [p.detach().clone() for p in task.params] if logged else None

        def closure(batch: object = batch) -> torch.Tensor:
            optimizer.zero_grad()
            loss = task.loss(batch)
            loss.backward()
            return loss.detach()

        loss = float(optimizer.step(closure))
        scheduler.step()
        done = step + 1
        losses.append(loss)
        pending.append(loss)
        if trajectory is not None:
            trajectory.append(task.position())
        if not math.isfinite(loss) or abs(loss) > DIVERGED * max(1.0, abs(losses[0])):
            status = "diverged"
            record("train_loss", step, loss if math.isfinite(loss) else None)
            break
        if logged:
            record("train_loss", step, sum(pending) / len(pending))
            pending = []
            record("lr", step, lr)
            update, eff = _step_stats(before, task.params, lr)
            record("update", step, update)
            record("eff_lr", step, eff)
        if done % eval_every == 0 or done == steps:
            t = time.perf_counter()
            evaluate(done)
            eval_time += time.perf_counter() - t
            evals += 1
            if not all(math.isfinite(v) for _, v in (s[-1] for s in series.values())):
                status = "diverged"
                break
        if progress is not None and (done % 25 == 0 or done == steps):
            progress(done)

    wall = time.perf_counter() - start
    arrays = {}
    if trajectory is not None:
        arrays["trajectory"] = torch.stack(trajectory).to(torch.float64).numpy()
    tail = losses[-max(1, len(losses) // 10) :]
    return RunResult(
        status=status,
        final_train_loss=sum(tail) / len(tail) if status == "finished" and tail else None,
        steps_done=done,
        wall_s=wall,
        step_ms=1000 * (wall - eval_time) / max(1, done),
        series=series,
        arrays=arrays,
        setup_s=setup,
        eval_ms=1000 * eval_time / max(1, evals),
    )

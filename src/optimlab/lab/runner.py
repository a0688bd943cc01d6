"""Run a study: tune, run seeds, add seeds where a comparison is undecided, store each run.

Resuming is not a mode: every run's key is the hash of its configuration, and
a run whose key is in the database is never trained again, so running the same
study after Ctrl-C or ``kill -9`` does exactly the missing runs.  What to run
next is always decided from the database (:func:`analysis.load_problem`, the
comparisons' looks), so a resumed study and a second process sharing the
database make the same decisions.

Several processes on one database share the work: each claims a run before it
trains it (:meth:`Store.claim`), skips runs another live process has claimed,
and waits for their results before a decision that needs them; a claim left by
a dead process is taken over.

Threads: one.  Measured on the 2-core machines this lab targets (torch 2.13,
medians of 100-2000 steps): two intra-op threads made every problem slower —
the 2-D functions 1.3x, the digits MLP 10x, the CNN 5x, the transformer 2-13x.
``--threads`` changes it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from . import train
from .analysis import Group, load_problem
from .compare import comparisons_of
from .progress import Progress
from .store import Store

__all__ = ["Counts", "run_study"]

#: seconds between a training process's heartbeats on its claim, and between looks at
#: a run another process is training
HEARTBEAT_S = 5.0
POLL_S = 0.25


@dataclass
class Counts:
    here: int = 0  # trained by this process
    other: int = 0  # trained by another process sharing the database, meanwhile
    before: int = 0  # in the database already when this process started
    trained: set[str] = field(default_factory=set)


def _env(threads: int) -> str:
    import optimlab

    return json.dumps(
        {
            "optimlab": optimlab.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": threads,
        },
        sort_keys=True,
    )


def _row(
    key: str, group_key: str, config: Mapping[str, Any], result: train.RunResult, env: str
) -> dict:
    return {
        "key": key,
        "group_key": group_key,
        "problem": config["problem"],
        "optimizer": config["optimizer"],
        "schedule": config["schedule"],
        "lr": config["lr"],
        "seed": config["seed"],
        "steps": config["steps"],
        "status": result.status,
        "steps_done": result.steps_done,
        "final_train_loss": result.final_train_loss,
        "final_val_loss": result.last("val_loss"),
        "final_val_acc": result.last("val_acc"),
        "wall_s": result.wall_s,
        "step_ms": result.step_ms,
        "finished": time.time(),
        "config": train.canonical(config),
        "env": env,
    }


class _Worker:
    """Trains the runs it is asked for, unless stored or claimed by another live process."""

    def __init__(self, store: Store, progress: Progress, threads: int) -> None:
        self.store = store
        self.progress = progress
        self.env = _env(threads)
        self.counts = Counts()
        self.waiting: dict[str, tuple[Mapping[str, Any], float, int]] = {}

    def run(self, group: Mapping[str, Any], lr: float, seed: int) -> None:
        config = train.run_config(group["config"], lr, seed)
        key = train.run_key(config)
        state = self.store.claim(key)
        if state == "busy":
            self.waiting[key] = (group, lr, seed)
            return
        if state == "done":
            return
        label = f"{config['problem']} {group['name']} lr={lr:g} seed={seed}"
        bar = self.progress.start_run(label, config["steps"])
        try:
            result = train.train(config, self._beating(bar))
            row = _row(key, group["group_key"], config, result, self.env)
            if self.store.add_run(row, result.series, result.arrays):
                self.counts.here += 1
                self.counts.trained.add(key)
        except BaseException:
            self.store.release(key)
            raise
        finally:
            self.progress.end_run()

    def _beating(self, bar: Callable[[int], None] | None) -> Callable[[int], None]:
        last = time.monotonic()

        def update(done: int) -> None:
            nonlocal last
            if bar is not None:
                bar(done)
            if time.monotonic() - last > HEARTBEAT_S:
                self.store.heartbeat()
                last = time.monotonic()

        return update

    def settle(self) -> None:
        """Wait for the runs other processes were training; take over those they abandoned."""
        while self.waiting:
            for key in list(self.waiting):
                state = self.store.claim_state(key)
                if state == "busy":
                    continue
                group, lr, seed = self.waiting.pop(key)
                if state == "free":  # its process died: run it here
                    self.run(group, lr, seed)
            if self.waiting:
                time.sleep(POLL_S)


def _tuning_round(worker: _Worker, problem: Mapping[str, Any], groups: list[Group]) -> bool:
    """Run the grid lrs still missing (seed 0); False when every tuned group is decided."""
    plans = {g["name"]: g for g in problem["groups"]}
    todo = [
        (g, lr)
        for g in groups
        if g.tuning is not None
        for lr in g.tuning.grid
        if g.grid_runs.get(lr) is None
    ]
    for g, lr in todo:
        worker.run(plans[g.name], lr, problem["seeds"][0])
    return bool(todo)


def _seed_round(
    worker: _Worker, problem: Mapping[str, Any], groups: list[Group], confidence: float
) -> bool:
    """Run the seeds each group needs now: the first look, more for undecided comparisons."""
    plans = {g["name"]: g for g in problem["groups"]}
    wanted = {g.name: problem["looks"][0] for g in groups}
    for c in comparisons_of(problem, groups, confidence):
        n = c.seeds_wanted(worker.store)
        for g in (c.a, c.b):
            wanted[g.name] = max(wanted[g.name], n)
    todo = [
        (g, seed)
        for g in groups
        if g.best_lr is not None
        for seed in problem["seeds"][: wanted[g.name]]
        if g.seed_runs.get(seed) is None
    ]
    for g, seed in todo:
        worker.run(plans[g.name], g.best_lr, seed)
    return bool(todo)


def run_study(
    store: Store,
    plan: Mapping[str, Any],
    progress: Progress,
    threads: int = 1,
    on_problem: Callable[[str], None] | None = None,
) -> Counts:
    """Run every missing run of ``plan``; returns who trained the runs the study used."""
    torch.set_num_threads(threads)
    before = store.run_keys()
    worker = _Worker(store, progress, threads)
    confidence = float(plan.get("confidence", 0.95))
    used: set[str] = set()
    for problem in plan["problems"]:
        started, here = time.perf_counter(), worker.counts.here
        for round_ in (_tuning_round, _seed_round):
            while True:
                groups = load_problem(store, problem)
                args = (confidence,) if round_ is _seed_round else ()
                if not round_(worker, problem, groups, *args):
                    break
                worker.settle()
        groups = load_problem(store, problem)
        used |= {r.key for g in groups for r in (*g.grid_runs.values(), *g.runs) if r is not None}
        diverged = [g.name for g in groups if g.tuned and g.best_lr is None]
        progress.problem_done(
            problem["name"], worker.counts.here - here, time.perf_counter() - started, diverged
        )
        if on_problem is not None:
            on_problem(problem["name"])
    counts = worker.counts
    counts.before = len(used & before)
    counts.other = len(used - before - counts.trained)
    return counts

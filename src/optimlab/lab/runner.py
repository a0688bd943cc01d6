"""Run a study: tune, rerun on seeds, store each run as it ends, skip what is already stored.

Resuming is not a mode: every run's key is the hash of its configuration, and
a run whose key is in the database is skipped, so running the same study again
after Ctrl-C or ``kill -9`` does exactly the missing runs.  The learning rate a
group's seeds use is chosen from the stored grid runs by
:func:`analysis.choose_lr`, so it is the same on every resume.

Threads: one.  Measured on the 2-core machines this lab targets (torch 2.13,
medians of 100-2000 steps): two intra-op threads made every problem slower —
the 2-D functions 1.3x, the digits MLP 10x, the CNN 5x, the transformer 2-13x —
and two processes side by side each ran about 2x slower than one alone, so
neither threads nor a process pool buys throughput here.  ``--threads`` changes it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping
from typing import Any

import torch

from . import analysis, train
from .progress import Progress
from .store import Store

__all__ = ["run_study"]


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


def run_study(
    store: Store,
    plan: Mapping[str, Any],
    progress: Progress,
    threads: int = 1,
) -> dict[str, int]:
    """Run every missing run of ``plan``; returns counts ``{"new": .., "skipped": ..}``."""
    torch.set_num_threads(threads)
    env = _env(threads)
    done = store.run_keys()
    counts = {"new": 0, "skipped": 0}

    def run(group: Mapping[str, Any], lr: float, seed: int) -> None:
        config = train.run_config(group["config"], lr, seed)
        key = train.run_key(config)
        if key in done:
            counts["skipped"] += 1
            progress.skip()
            return
        label = (
            f"{config['problem']} {group['optimizer']}/{group['schedule']} lr={lr:g} seed={seed}"
        )
        bar = progress.start_run(label, config["steps"])
        result = train.train(config, bar)
        row = _row(key, group["group_key"], config, result, env)
        stored = store.add_run(row, result.series, result.arrays)  # False: another process did
        done.add(key)
        counts["new" if stored else "skipped"] += 1
        progress.end_run()

    for problem in plan["problems"]:
        started = time.perf_counter()
        new_before = counts["new"]
        for group in problem["groups"]:  # 1. the lr grid on seed 0
            for lr in group["grid"]:
                run(group, lr, 0)
        chosen = {}
        for group in problem["groups"]:  # 2. the best lr on the other seeds
            rows = {r.lr: r for r in store.runs(group["group_key"]) if r.seed == 0}
            best = analysis.choose_lr(group["grid"], {lr: _near(rows, lr) for lr in group["grid"]})
            chosen[group["optimizer"], group["schedule"]] = best
            for seed in problem["seeds"][1:]:
                if best is None:  # every lr diverged: nothing to rerun
                    progress.skip()
                    continue
                run(group, best, seed)
        progress.problem_done(
            problem["name"], counts["new"] - new_before, time.perf_counter() - started, chosen
        )
    return counts


def _near(rows: Mapping[float, Any], lr: float) -> Any:
    for key, row in rows.items():
        if abs(key - lr) <= 1e-9 * abs(lr):
            return row
    return None

"""How long a study will take, from the cost of a run measured on this machine just now.

Nothing here is a constant someone typed in: :func:`calibrate` trains a short
run of every problem of the plan (a few seconds in all, and the data sets it
loads stay loaded for the study), and a run's cost is its measured setup time
plus its steps and evaluations at their measured prices.  A study's length
depends on how many seeds its comparisons end up needing, so the estimate is a
range: every comparison decided at its first look, or none before its last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from . import train
from .plan import count_runs

__all__ = ["Cost", "calibrate", "study_seconds"]

#: steps of the calibration run of each problem (the longer, the steadier the price)
CALIBRATION_STEPS = 100


@dataclass(frozen=True)
class Cost:
    setup_s: float
    step_ms: float
    eval_ms: float

    def run_seconds(self, config: Mapping[str, Any]) -> float:
        steps, every = int(config["steps"]), int(config["eval_every"])
        return self.setup_s + (steps * self.step_ms + (steps // every + 1) * self.eval_ms) / 1000


def calibrate(plan: Mapping[str, Any], threads: int = 1) -> dict[str, Cost]:
    """Time a short run of each problem's first group (its optimizer, lr, logging) with
    ``threads`` torch threads, as the study will run."""
    torch.set_num_threads(threads)
    costs = {}
    for p in plan["problems"]:
        group = p["groups"][0]
        config = dict(group["config"])
        lr = group["grid"][len(group["grid"]) // 2] if group["grid"] else 1e-3
        # loading the data set and the kernels happens once per study, not once per run:
        # a few steps untimed first
        train.train(train.run_config({**config, "steps": 3}, lr, 0))
        config["steps"] = min(int(config["steps"]), CALIBRATION_STEPS)
        result = train.train(train.run_config(config, lr, 0))
        costs[p["name"]] = Cost(result.setup_s, result.step_ms, result.eval_ms)
    return costs


def study_seconds(
    plan: Mapping[str, Any], costs: Mapping[str, Cost], have: Mapping[str, int] | None = None
) -> tuple[float, float]:
    """(seconds if every comparison is decided at its first look, if none is before its last),
    for the runs not yet done (``have``: problem -> runs of it in the database already)."""
    low = high = 0.0
    for p in plan["problems"]:
        runs_low, runs_high = count_runs({"problems": [p]})
        done = (have or {}).get(p["name"], 0)
        per_run = costs[p["name"]].run_seconds(p["groups"][0]["config"])
        low += max(0, runs_low - done) * per_run
        high += max(0, runs_high - done) * per_run
    return low, high

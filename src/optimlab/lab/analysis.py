"""Read a study back from the store: groups, the chosen learning rates, derived metrics.

The runner and the report use the same :func:`choose_lr`, so the learning rate
whose seeds were run is the one the report shows.  Nothing here trusts a
summary the runner wrote: steps-to-target, spreads and so on are recomputed
from the stored per-step series.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import problems
from .store import RunRow, Store

__all__ = ["Group", "Study", "Spread", "choose_lr", "load_study", "score", "steps_to_target"]


def score(row: RunRow | None) -> float:
    """What learning-rate tuning minimizes: the final validation loss; inf if diverged."""
    if row is None or row.diverged or row.final_val_loss is None:
        return math.inf
    return row.final_val_loss if math.isfinite(row.final_val_loss) else math.inf


def choose_lr(grid: Sequence[float], runs: Mapping[float, RunRow | None]) -> float | None:
    """The grid lr with the lowest :func:`score` (the smaller lr on a tie); None if all diverged."""
    best, best_score = None, math.inf
    for lr in grid:
        s = score(runs.get(lr))
        if s < best_score:
            best, best_score = lr, s
    return best


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


@dataclass
class Group:
    problem: str
    optimizer: str
    schedule: str
    group_key: str
    grid: list[float]
    steps: int
    seeds: list[int]
    grid_runs: dict[float, RunRow | None] = field(default_factory=dict)
    best_lr: float | None = None
    seed_runs: dict[int, RunRow | None] = field(default_factory=dict)

    @property
    def grid_complete(self) -> bool:
        return all(r is not None for r in self.grid_runs.values())

    @property
    def complete(self) -> bool:
        if not self.grid_complete:
            return False
        return self.best_lr is None or all(r is not None for r in self.seed_runs.values())

    @property
    def best_at_edge(self) -> bool:
        return (
            self.best_lr is not None
            and len(self.grid) > 1
            and self.best_lr in (self.grid[0], self.grid[-1])
        )

    @property
    def runs(self) -> list[RunRow]:
        """The runs at the chosen lr, one per seed that has finished."""
        return [r for r in self.seed_runs.values() if r is not None]

    @property
    def label(self) -> str:
        return f"{self.optimizer} / {self.schedule}"


@dataclass
class Study:
    key: str
    profile: str
    plan: dict[str, Any]
    groups: list[Group]

    def problems(self) -> list[str]:
        return [p["name"] for p in self.plan["problems"]]

    def find(self, problem: str, optimizer: str, schedule: str = "constant") -> Group | None:
        for g in self.groups:
            if (g.problem, g.optimizer, g.schedule) == (problem, optimizer, schedule):
                return g
        return None

    def of(self, problem: str) -> list[Group]:
        return [g for g in self.groups if g.problem == problem]

    @property
    def runs_done(self) -> int:
        return len({r.key for g in self.groups for r in (*g.grid_runs.values(), *g.runs) if r})

    @property
    def runs_planned(self) -> int:
        return sum(len(g.grid) + len(g.seeds) - 1 for g in self.groups)


def load_groups(store: Store, plan: Mapping[str, Any]) -> list[Group]:
    out = []
    for p in plan["problems"]:
        seeds = list(p["seeds"])
        for g in p["groups"]:
            rows = store.runs(g["group_key"])
            group = Group(
                p["name"], g["optimizer"], g["schedule"], g["group_key"], list(g["grid"]),
                int(p["steps"]), seeds,
            )  # fmt: skip
            for lr in group.grid:
                group.grid_runs[lr] = next(
                    (r for r in rows if r.seed == 0 and _same(r.lr, lr)), None
                )
            if group.grid_complete:
                group.best_lr = choose_lr(group.grid, group.grid_runs)
            if group.best_lr is not None:
                for seed in seeds:
                    group.seed_runs[seed] = next(
                        (r for r in rows if r.seed == seed and _same(r.lr, group.best_lr)), None
                    )
            out.append(group)
    return out


def load_study(store: Store) -> Study | None:
    latest = store.latest_study()
    if latest is None:
        return None
    key, profile, plan = latest
    return Study(key, profile, plan, load_groups(store, plan))


# --- derived metrics -----------------------------------------------------------


def steps_to_target(store: Store, row: RunRow, target: float) -> int | None:
    """The first evaluation step with ``val_loss <= target``; None if never (or diverged)."""
    steps, values = store.series(row.key, "val_loss")
    hit = np.nonzero(values <= target)[0]
    return int(steps[hit[0]]) if len(hit) else None


def target_of(problem: str) -> float:
    return problems.get(problem).target


@dataclass(frozen=True)
class Spread:
    """Values over seeds: mean, standard deviation, min and max."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread:
        return cls(tuple(math.inf if v is None else float(v) for v in values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def finite(self) -> bool:
        return self.n > 0 and all(math.isfinite(v) for v in self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.n else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 and self.finite else 0.0

    @property
    def lo(self) -> float:
        return min(self.values) if self.n else math.nan

    @property
    def hi(self) -> float:
        return max(self.values) if self.n else math.nan

    def below(self, other: Spread) -> bool:
        """Every value here is smaller than every value of ``other`` (the ranges do not overlap)."""
        return self.n > 0 and other.n > 0 and self.hi < other.lo

    def fmt(self, digits: int = 3, pct: bool = False) -> str:
        if not self.n:
            return "–"
        if not self.finite:
            bad = sum(not math.isfinite(v) for v in self.values)
            return f"{bad}/{self.n} diverged"
        scale, unit = (100, " %") if pct else (1, "")
        if self.n == 1:
            return f"{self.mean * scale:.{digits}g}{unit}"
        return f"{self.mean * scale:.{digits}g} ± {self.std * scale:.2g}{unit}"


def final_spread(group: Group, what: str = "val_loss") -> Spread:
    attr = {"val_loss": "final_val_loss", "val_acc": "final_val_acc",
            "train_loss": "final_train_loss"}[what]  # fmt: skip
    return Spread.of(None if r.diverged else getattr(r, attr) for r in group.runs)


def target_spread(store: Store, group: Group) -> tuple[Spread, int]:
    """Steps to target over seeds (a run that never reaches it counts as steps + 1), and hits."""
    target = target_of(group.problem)
    values, hits = [], 0
    for r in group.runs:
        s = None if r.diverged else steps_to_target(store, r, target)
        hits += s is not None
        values.append(group.steps + 1 if s is None else s)
    return Spread.of(values), hits

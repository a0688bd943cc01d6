"""Read a study back from the store: groups, their tuned learning rates, derived metrics.

The runner and the report resolve a group the same way (:func:`load_problem`):
the tuned lr is recomputed from the stored grid runs by :func:`tune`, so the lr
whose seeds were run is the one the report shows, on every resume and in every
process sharing the database.  Nothing here trusts a summary the runner wrote:
steps to target, spreads and so on are recomputed from the stored series.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import catalog, problems
from .plan import upgrade
from .store import RunRow, Store

__all__ = ["Group", "Spread", "Study", "Tuning", "choose_lr", "load_problem", "load_study",
           "steps_to_target", "tune"]  # fmt: skip

#: how many learning rates a tuned winner at the edge of its grid may add on each side
MAX_EXTEND = 2


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


def grid_lr(center: float, k: float) -> float:
    """The lr ``k`` half-decades from ``center``, to 3 significant digits (as plan.lr_grid)."""
    return float(f"{center * 10 ** (0.5 * k):.3g}")


@dataclass(frozen=True)
class Tuning:
    grid: list[float]  # the grid as extended so far
    best: float | None  # None: not finished (see ``missing``) or every lr diverged
    missing: float | None  # the next lr that needs a run
    at_edge: bool = False  # the winner is at an end of the grid after every extension


def tune(grid: Sequence[float], run_at: Callable[[float], RunRow | None]) -> Tuning:
    """Pick the best lr of ``grid``, widening it while the winner sits at an end.

    A new lr continues the planned grid's half-decade steps from its centre, not from the
    rounded edge, so that rounding does not pile up (0.001, 0.00316, 0.01, not 0.00999).
    """
    grid = list(grid)
    center, half = grid[len(grid) // 2], (len(grid) - 1) / 2
    ends = {-1: -half, 1: half}  # where the grid ends, in half-decades from its centre
    while True:
        rows = {lr: run_at(lr) for lr in grid}
        missing = [lr for lr, row in rows.items() if row is None]
        if missing:
            return Tuning(grid, None, missing[0])
        best = choose_lr(grid, rows)
        if best is None or len(grid) < 2:
            return Tuning(grid, best, None)
        side = -1 if best == grid[0] else 1 if best == grid[-1] else 0
        if side == 0:
            return Tuning(grid, best, None)
        if abs(ends[side]) - half >= MAX_EXTEND:
            return Tuning(grid, best, None, at_edge=True)
        ends[side] += side
        lr = grid_lr(center, ends[side])
        grid = [lr, *grid] if side < 0 else [*grid, lr]


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


@dataclass
class Group:
    problem: str
    name: str  # "optimizer/schedule", or with "@source" for an lr taken from another group
    optimizer: str
    schedule: str
    group_key: str
    steps: int
    seeds: list[int]
    grid: list[float]  # as planned; ``tuning.grid`` holds the extended one
    lr_from: Mapping[str, Any] | None = None
    tuning: Tuning | None = None
    best_lr: float | None = None
    grid_runs: dict[float, RunRow | None] = field(default_factory=dict)
    seed_runs: dict[int, RunRow | None] = field(default_factory=dict)

    @property
    def tuned(self) -> bool:
        return self.lr_from is None

    @property
    def best_at_edge(self) -> bool:
        return bool(self.tuning and self.tuning.at_edge)

    @property
    def runs(self) -> list[RunRow]:
        """The runs at the chosen lr, in seed order, up to the first seed not run (yet)."""
        out = []
        for seed in self.seeds:
            row = self.seed_runs.get(seed)
            if row is None:
                break
            out.append(row)
        return out

    @property
    def label(self) -> str:
        text = catalog.OPTIMIZERS[self.optimizer].label
        if self.schedule != "constant":
            text += f", {catalog.SCHEDULES[self.schedule].label}"
        if self.lr_from and self.optimizer not in catalog.BESIDE:
            text += f" at {self.lr_from['group'].split('/')[0]}'s lr"
            if self.lr_from["scale"] != 1:
                text += f" × {self.lr_from['scale']:g}"
        return text


@dataclass
class Study:
    key: str
    profile: str
    plan: dict[str, Any]
    groups: list[Group]

    @property
    def confidence(self) -> float:
        return float(self.plan.get("confidence", 0.95))

    def problems(self) -> list[str]:
        return [p["name"] for p in self.plan["problems"]]

    def problem_plan(self, problem: str) -> Mapping[str, Any]:
        return next(p for p in self.plan["problems"] if p["name"] == problem)

    def group(self, problem: str, name: str) -> Group | None:
        return next((g for g in self.groups if g.problem == problem and g.name == name), None)

    def find(self, problem: str, optimizer: str, schedule: str = "constant") -> Group | None:
        return self.group(problem, f"{optimizer}/{schedule}")

    def of(self, problem: str) -> list[Group]:
        return [g for g in self.groups if g.problem == problem]

    def all_runs(self) -> dict[str, RunRow]:
        rows = {}
        for g in self.groups:
            for r in (*g.grid_runs.values(), *g.seed_runs.values()):
                if r is not None:
                    rows[r.key] = r
        return rows


def load_problem(store: Store, problem: Mapping[str, Any]) -> list[Group]:
    """The groups of one planned problem, resolved against the store as it is now."""
    seeds = list(problem["seeds"])
    groups: dict[str, Group] = {}
    rows: dict[str, list[RunRow]] = {}  # by group key (groups at another's lr share a key)
    for g in problem["groups"]:
        group = Group(
            problem["name"], g["name"], g["optimizer"], g["schedule"], g["group_key"],
            int(problem["steps"]), seeds, list(g["grid"]), g.get("lr_from"),
        )  # fmt: skip
        groups[group.name] = group
        if group.group_key not in rows:
            rows[group.group_key] = store.runs(group.group_key)

    def at(group: Group, lr: float, seed: int) -> RunRow | None:
        return next((r for r in rows[group.group_key] if r.seed == seed and _same(r.lr, lr)), None)

    for group in groups.values():  # tuned groups first: the others take their lr
        if group.tuned:
            group.tuning = tune(group.grid, lambda lr, g=group: at(g, lr, seeds[0]))
            group.grid_runs = {lr: at(group, lr, seeds[0]) for lr in group.tuning.grid}
            group.best_lr = group.tuning.best
    for group in groups.values():
        if not group.tuned:
            source = groups.get(group.lr_from["group"])
            if source is not None and source.best_lr is not None:
                group.best_lr = scaled_lr(source.best_lr, group.lr_from["scale"])
    for group in groups.values():
        if group.best_lr is not None:
            group.seed_runs = {s: at(group, group.best_lr, s) for s in seeds}
    return list(groups.values())


def scaled_lr(lr: float, scale: float) -> float:
    return lr if scale == 1 else float(f"{lr * scale:.3g}")


def load_study(store: Store) -> Study | None:
    latest = store.latest_study()
    if latest is None:
        return None
    key, profile, plan = latest
    plan = upgrade(plan)  # a first-edition study reads as a study of this one
    groups = [g for p in plan["problems"] for g in load_problem(store, p)]
    return Study(key, profile, plan, groups)


# --- derived metrics -----------------------------------------------------------


def steps_to_target(store: Store, row: RunRow, target: float) -> float | None:
    """When ``val_loss`` first reaches ``target``: linear between the two evaluations around
    the crossing (evaluations are every step for the 2-D functions, every few dozen
    otherwise); None if never (or diverged)."""
    steps, values = store.series(row.key, "val_loss")
    hit = np.nonzero(values <= target)[0]
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0 or not math.isfinite(values[i - 1]):
        return float(steps[i])
    (s0, s1), (v0, v1) = steps[i - 1 : i + 1], values[i - 1 : i + 1]
    return float(s0 + (s1 - s0) * (v0 - target) / (v0 - v1))


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

    def fmt(self, digits: int = 3, pct: bool = False, scale: float = 1.0) -> str:
        """``mean ± sd`` (``pct``: in percent; ``scale`` multiplies, e.g. nats to bits)."""
        if not self.n:
            return "–"
        if not self.finite:
            bad = sum(not math.isfinite(v) for v in self.values)
            return f"{bad} of {self.n} diverged"
        scale, unit = (100 * scale, " %") if pct else (scale, "")
        if self.n == 1 or self.std == 0:
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

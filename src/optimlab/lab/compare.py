"""Comparisons of two groups over paired seeds, decided sequentially (see :mod:`.stats`).

A comparison is one row of a problem's plan — ``{"claim", "a", "b", "metric",
"looks"}`` — resolved against the study's groups.  Its metric is computed per
run from the stored series; lower is better for every metric, and the
difference is ``a - b``, so "a is better" is a negative difference.  Adding a
claim-style comparison is one row in :mod:`.plan` (and a metric here if it
needs a new one).  A row with a ``margin`` (a key of :data:`MARGINS`) asks for
equivalence instead: does ``a`` do as well as ``b``, within that margin?
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .analysis import Group, Study, steps_to_target, target_of
from .stats import Decision, equivalence, sequential
from .store import RunRow, Store

__all__ = ["MARGINS", "METRICS", "Comparison", "Metric", "comparisons_of", "study_comparisons"]


@dataclass(frozen=True)
class Metric:
    name: str
    what: str  # for the report: "steps to target", ...
    unit: str
    value: Callable[[Store, Group, RunRow], float]


def _steps(store: Store, group: Group, row: RunRow) -> float:
    """Steps to the problem's target; a run that never reaches it counts as steps + 1."""
    s = None if row.diverged else steps_to_target(store, row, target_of(group.problem))
    return group.steps + 1.0 if s is None else s


def _final_loss(store: Store, group: Group, row: RunRow) -> float:
    """The final validation loss; a diverged run counts as its loss at step 0 (no progress)."""
    if not row.diverged and row.final_val_loss is not None and math.isfinite(row.final_val_loss):
        return row.final_val_loss
    return float(store.series(row.key, "val_loss")[1][0])


def _final_train_loss(store: Store, group: Group, row: RunRow) -> float:
    """The mean mini-batch loss over the last 10 % of the steps; a diverged run counts as its
    first loss (no progress)."""
    if not row.diverged and row.final_train_loss is not None:
        if math.isfinite(row.final_train_loss):
            return row.final_train_loss
    return float(store.series(row.key, "train_loss")[1][0])


def decay_ratio(store: Store, row: RunRow) -> float | None:
    """The per-weight step multiplier at the end of the run over its value at 10 % of it."""
    s, v = store.series(row.key, "eff_lr")
    early = np.nonzero(s >= row.steps // 10)[0]
    if row.diverged or len(early) == 0 or v[early[0]] <= 0 or v[-1] <= 0:
        return None
    return float(v[-1] / v[early[0]])


def _decay(store: Store, group: Group, row: RunRow) -> float:
    """log10 of :func:`decay_ratio` (-1: the multiplier fell tenfold); 0 if not measured."""
    ratio = decay_ratio(store, row)
    return 0.0 if ratio is None else math.log10(ratio)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("steps", "steps to target", "steps", _steps),
        Metric("final_loss", "final validation loss", "", _final_loss),
        Metric("final_train_loss", "final training loss", "", _final_train_loss),
        Metric("decay", "log10(multiplier at the end / at 10 % of the run)", "", _decay),
    )
}


def _seed_sd(b: Sequence[float]) -> float:
    """The standard deviation of ``b``'s metric over its seeds: what changing the seed does."""
    return statistics.stdev(b) if len(b) > 1 else math.inf


#: equivalence margins, from the reference group's values over the seeds looked at
MARGINS: dict[str, Callable[[Sequence[float]], float]] = {"seed_sd": _seed_sd}


@dataclass
class Comparison:
    claim: str
    problem: str
    a: Group
    b: Group
    metric: Metric
    looks: tuple[int, ...]
    confidence: float
    #: a key of MARGINS: an equivalence comparison (None: which one is better)
    margin: str | None = None

    def values(self, store: Store, group: Group) -> list[float]:
        return [self.metric.value(store, group, r) for r in group.runs]

    def pairs(self, store: Store) -> list[tuple[float, float]]:
        """(a, b) per seed, in seed order, while both have run."""
        a, b = self.values(store, self.a), self.values(store, self.b)
        return list(zip(a, b, strict=False))

    def decision(self, store: Store) -> Decision | None:
        pairs = self.pairs(store)
        differences = [x - y for x, y in pairs]
        if self.margin is None:
            return sequential(differences, self.looks, self.confidence)
        margin = MARGINS[self.margin]
        b = [y for _, y in pairs]
        return equivalence(differences, self.looks, self.confidence, lambda n: margin(b[:n]))

    def seeds_wanted(self, store: Store) -> int:
        """How many seeds both groups need now: the next look while undecided."""
        decision = self.decision(store)
        if decision is None:
            return self.looks[0]
        return self.looks[decision.look] if decision.final else self.looks[decision.look + 1]


def comparisons_of(
    problem: Mapping[str, Any], groups: list[Group], confidence: float
) -> list[Comparison]:
    by_name = {g.name: g for g in groups}
    out = []
    for c in problem.get("comparisons", ()):
        a, b = by_name.get(c["a"]), by_name.get(c["b"])
        if a is not None and b is not None:
            out.append(
                Comparison(
                    c["claim"],
                    problem["name"],
                    a,
                    b,
                    METRICS[c["metric"]],
                    tuple(c["looks"]),
                    confidence,
                    c.get("margin"),
                )  # fmt: skip
            )
    return out


def study_comparisons(study: Study) -> list[Comparison]:
    return [
        c
        for p in study.plan["problems"]
        for c in comparisons_of(p, study.of(p["name"]), study.confidence)
    ]

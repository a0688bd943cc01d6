"""What every check shares: the Claim record, the verdicts, and how a comparison reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..analysis import Group, Study
from ..compare import Comparison, study_comparisons
from ..problems import get
from ..stats import POWER, Decision
from ..store import Store

HELD, NOT_HELD, UNDECIDED = "held", "not held", "undecided"


@dataclass
class Claim:
    number: str
    statement: str
    source: str
    experiment: str = ""
    numbers: list[str] = field(default_factory=list)
    rule: str = ""
    verdict: str = UNDECIDED
    why: str = ""
    #: the figure the report draws ("kind:problem", see report.figures) and what it shows
    figure: str | None = None
    caption: str = ""
    #: the claims table's one line (default: the first of ``numbers``)
    summary: str = ""


def missing(claim: Claim, what: str) -> Claim:
    claim.verdict = UNDECIDED
    claim.why = f"the study has no finished runs of {what}"
    return claim


def comparisons(study: Study, claim: str) -> list[Comparison]:
    return [c for c in study_comparisons(study) if c.claim == claim]


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else words or word + 's'}"


def seeds_text(group: Group) -> str:
    n = len(group.runs)
    if not n:
        return "no seeds"
    seeds = [r.seed for r in group.runs]
    if seeds == list(range(seeds[0], seeds[0] + n)) and n > 2:
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return ("seed " if n == 1 else "seeds ") + ", ".join(map(str, seeds))


def lr_text(group: Group) -> str:
    if group.best_lr is None:
        return "lr not chosen: " + ("every lr diverged" if group.tuning else "tuning unfinished")
    return f"lr {group.best_lr:g}"


def unit_scale(problem: str) -> tuple[float, str]:
    """How losses of ``problem`` are shown: (factor, unit); the transformer in bits per char."""
    p = get(problem)
    return p.loss_scale, p.loss_unit


def fmt_value(value: float, metric: str, problem: str, digits: int = 3) -> str:
    if metric == "steps":
        return f"{value:.0f} steps"
    if metric in ("final_loss", "final_train_loss"):
        scale, unit = unit_scale(problem)
        return f"{value * scale:.{digits}g}{' ' + unit if unit else ''}"
    return f"{value:+.2f}".replace("-", "−")


def _signed(value: float, metric: str, problem: str) -> str:
    if metric == "decay":
        return f"{value:+.2f}".replace("-", "−")
    text = fmt_value(abs(value), metric, problem)
    return ("−" if value < 0 else "+") + text


def effect_text(c: Comparison, decision: Decision | None, store: Store) -> str:
    """One line: both groups' means and the paired difference with its confidence interval."""
    pairs = c.pairs(store)
    if decision is None or not pairs:
        return f"{c.a.label} vs {c.b.label}: not enough seeds yet"
    n = decision.interval.n
    a = math.fsum(x for x, _ in pairs[:n]) / n
    b = math.fsum(y for _, y in pairs[:n]) / n
    iv = decision.interval
    level = f"{100 * decision.confidence:.0f} %"
    ci = (
        f"[{_signed(iv.lo, c.metric.name, c.problem)}, {_signed(iv.hi, c.metric.name, c.problem)}]"
        if math.isfinite(iv.lo)
        else "[no interval from one seed]"
    )
    return (
        f"{c.a.label} {fmt_value(a, c.metric.name, c.problem)} vs {c.b.label} "
        f"{fmt_value(b, c.metric.name, c.problem)} (means over {plural(n, 'seed')}); "
        f"difference {_signed(iv.mean, c.metric.name, c.problem)}, {level} CI {ci}"
    )


def undecided_why(c: Comparison, decision: Decision | None) -> str:
    if decision is None:
        return f"{c.a.label} vs {c.b.label}: the runs are not finished"
    n = decision.interval.n
    if not decision.final:
        return f"after {plural(n, 'seed')}; the study stopped before its next look"
    mde = decision.detectable
    size = fmt_value(mde, c.metric.name, c.problem) if mde is not None else "?"
    return (
        f"after {plural(n, 'seed')}, a true difference of {size} or more would have been "
        f"detected {100 * POWER:.0f} % of the time"
    )


def edge_why(*groups: Group) -> str:
    labels = [g.label for g in groups if g.best_at_edge]
    if not labels:
        return ""
    return (
        f"the tuned lr of {' and '.join(labels)} is at the edge of its grid even after widening "
        "it, so a better lr may lie beyond"
    )


def decide(claim: Claim, c: Comparison, store: Store, better: str = "a") -> Decision | None:
    """Set ``claim``'s verdict from one comparison: held if ``better`` won it, not held if the
    other one did, undecided otherwise; its numbers get the effect line."""
    decision = c.decision(store)
    claim.numbers.append(effect_text(c, decision, store))
    edge = edge_why(c.a, c.b)
    if decision is None or not decision.decided:
        claim.verdict, claim.why = UNDECIDED, undecided_why(c, decision)
    elif edge:
        claim.verdict, claim.why = UNDECIDED, edge
    else:
        claim.verdict = HELD if decision.better == better else NOT_HELD
    return decision


def comparison_rule(metric: str, confidence: float, looks: Sequence[int]) -> str:
    looks_text = ", ".join(map(str, looks))
    return (
        f"the runs are paired by seed (same initial weights and batches); held if the "
        f"{100 * confidence:.0f} % confidence interval of the mean difference lies on the claimed "
        f"side of 0, not held if it lies on the other side, otherwise undecided. Seeds are added "
        f"while undecided: looks after {looks_text} seeds, each at confidence "
        f"1 − {1 - confidence:.2g}/{len(looks)} (Bonferroni), so {100 * confidence:.0f} % holds "
        "for the whole sequence"
    )


def combine(verdicts: Sequence[str]) -> tuple[str, str]:
    """A claim made of several comparisons: held if more than half of them held, not held if
    more than half were not held, undecided otherwise; with a summary line."""
    held, not_held = verdicts.count(HELD), verdicts.count(NOT_HELD)
    summary = (
        f"held in {held} of {plural(len(verdicts), 'comparison')}, not held in {not_held}, "
        f"undecided in {len(verdicts) - held - not_held}"
    )
    if 2 * held > len(verdicts):
        return HELD, summary
    if 2 * not_held > len(verdicts):
        return NOT_HELD, summary
    return UNDECIDED, summary


COMBINE_RULE = (
    "the claim held if more than half of its comparisons held, was not held if more than half "
    "were not held, otherwise undecided (the list shows which held)"
)


def range_text(lo: float, hi: float, fmt: str = "{:.0f}", unit: str = "") -> str:
    """``lo–hi`` with a unit, or one number when they are equal."""
    a, b = fmt.format(lo), fmt.format(hi)
    return f"{a}{unit}" if a == b else f"{a}–{b}{unit}"

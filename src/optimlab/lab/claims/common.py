"""What every check shares: the Claim record, the verdicts, and seed-range comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import catalog
from ..analysis import Group, Spread, Study, final_spread, target_spread
from ..problems import get
from ..store import Store

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"
MIN_SEEDS = 3
#: claim 4: a multiplier "decays" if it ends below this fraction of its value at 10 % of the run
KEEP = 0.8
STOCHASTIC = ("mnist1d_cnn", "digits_mlp", "digits_logreg", "quadratic_deep", "charlm")


@dataclass
class Claim:
    number: str
    statement: str
    source: str
    experiment: str = ""
    numbers: list[str] = field(default_factory=list)
    rule: str = ""
    verdict: str = INCONCLUSIVE
    why: str = ""
    figure: str | None = None  # a figure the report draws, "kind:problem" (e.g. "loss:digits_mlp")


def missing(claim: Claim, what: str) -> Claim:
    claim.verdict = INCONCLUSIVE
    claim.why = f"the study has no finished runs of {what}"
    return claim


def pick_pair(claim: Claim, study: Study, candidates: Sequence[str], a: str, b: str) -> str | None:
    """The first candidate with tuned runs of ``a`` and ``b`` (constant lr), or None and why."""
    problem = pick(study, candidates, (a, "constant"), (b, "constant"))
    if problem is None:
        missing(claim, f"{a} and {b} with the constant schedule on " + " / ".join(candidates))
    return problem


def pick(study: Study, candidates: Sequence[str], *pairs: tuple[str, str]) -> str | None:
    """The first candidate problem where every (optimizer, schedule) group has tuned runs."""
    for problem in candidates:
        groups = [study.find(problem, o, s) for o, s in pairs]
        if all(g is not None and g.runs for g in groups):
            return problem
    return None


def pick_reached(
    study: Study, store: Store, candidates: Sequence[str], *optimizers: str
) -> str | None:
    """Like :func:`pick`, preferring a problem where one of the runs reached the target."""
    pairs = [(o, "constant") for o in optimizers]
    available = [p for p in candidates if pick(study, [p], *pairs)]
    for problem in available:
        if any(target_spread(store, study.find(problem, o))[1] for o in optimizers):
            return problem
    return available[0] if available else None


def seeds_text(group: Group) -> str:
    seeds = sorted(r.seed for r in group.runs)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def steps_text(spread: Spread, steps: int) -> str:
    """Mean [min–max] steps to target, or which seeds reached it (unreached = steps + 1)."""
    reached = sorted(int(v) for v in spread.values if v <= steps)
    if not reached:
        return f"not reached in {steps} steps"
    if len(reached) < spread.n:
        at = ", ".join(map(str, reached))
        return f"reached by {len(reached)} of {spread.n} seeds (at {at}), not by the others"
    return f"{spread.mean:.0f} [{spread.lo:.0f}–{spread.hi:.0f}]"


#: a comparison of tuned runs is only as good as the tuning
EDGE_RULE = (
    "; inconclusive if a tuned lr lies at the edge of its grid (a wider grid might change "
    "the comparison)"
)


def lr_text(group: Group) -> str:
    return f"lr {group.best_lr:g}" + (", at the grid edge" if group.best_at_edge else "")


def edge_why(*groups: Group) -> str:
    labels = [f"{g.optimizer}/{g.schedule}" for g in groups if g.best_at_edge]
    return f"the tuned lr of {' and '.join(labels)} lies at the edge of its grid" if labels else ""


def compare(a: Spread, b: Spread, n_a: int, n_b: int, stochastic: bool) -> str:
    """held if a's range lies below b's, did not hold if above, else inconclusive."""
    if stochastic and min(n_a, n_b) < MIN_SEEDS:
        return INCONCLUSIVE
    if a.below(b):
        return HELD
    if b.below(a):
        return NOT_HELD
    return INCONCLUSIVE


def faster(
    study: Study, store: Store, claim: Claim, fast: str, slow: str, candidates: Sequence[str]
) -> Claim:
    """Steps to target of ``fast`` vs ``slow`` (constant schedule) on a candidate problem."""
    problem = pick_reached(study, store, candidates, fast, slow)
    if problem is None:
        return missing(
            claim, f"{fast} and {slow} with the constant schedule on " + " / ".join(candidates)
        )
    g_fast, g_slow = study.find(problem, fast), study.find(problem, slow)
    s_fast, h_fast = target_spread(store, g_fast)
    s_slow, h_slow = target_spread(store, g_slow)
    stochastic = problem in STOCHASTIC or problem.endswith("_noisy")
    claim.figure = claim.figure or f"loss:{problem}"
    claim.experiment = (
        f"{get(problem).title}: {catalog.OPTIMIZERS[fast].label} vs "
        f"{catalog.OPTIMIZERS[slow].label}, constant lr tuned for each, {seeds_text(g_fast)}; "
        f"steps until {get(problem).target_text}"
    )
    for g, s in ((g_fast, s_fast), (g_slow, s_slow)):
        acc = final_spread(g, "val_acc")
        claim.numbers.append(
            f"{catalog.OPTIMIZERS[g.optimizer].label} ({lr_text(g)}): steps to target "
            f"{steps_text(s, g.steps)}; final validation loss {final_spread(g).fmt()}"
            + (f", accuracy {acc.fmt(3, pct=True)}" if acc.finite else "")
        )
    claim.rule = (
        f"held if every seed of {fast} reaches the target in fewer steps than every seed of "
        f"{slow} (a seed that never reaches it counts as steps + 1); did not hold if the "
        "reverse; otherwise (ranges overlap) inconclusive"
        + (f"; needs ≥ {MIN_SEEDS} seeds on a stochastic problem" if stochastic else "")
        + EDGE_RULE
    )
    if h_fast == 0 and h_slow == 0:
        claim.why = "neither reached the target within the run"
        return claim
    claim.verdict = compare(s_fast, s_slow, s_fast.n, s_slow.n, stochastic)
    if claim.verdict != INCONCLUSIVE and edge_why(g_fast, g_slow):
        claim.verdict, claim.why = INCONCLUSIVE, edge_why(g_fast, g_slow)
    elif claim.verdict == INCONCLUSIVE:
        claim.why = (
            f"only {min(s_fast.n, s_slow.n)} seeds"
            if stochastic and min(s_fast.n, s_slow.n) < MIN_SEEDS
            else "the seed ranges overlap"
        )
    return claim


# --- the claims ------------------------------------------------------------------

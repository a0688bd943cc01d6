"""Claims 6a and 6b: decaying schedules, and warmup on the transformer (slide 11)."""

from __future__ import annotations

import math

from .. import catalog
from ..analysis import Group, Spread, Study, final_spread
from ..store import Store
from .common import (
    HELD,
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_HELD,
    Claim,
    edge_why,
    lr_text,
    missing,
    seeds_text,
)


def _sweep_verdict(better: int, worse: int, total: int) -> str:
    """One comparison: at least half the decaying schedules clearly lower and none higher."""
    if total == 0:
        return INCONCLUSIVE
    if 2 * better >= total and worse == 0:
        return HELD
    if better == 0 and 2 * worse >= total:
        return NOT_HELD
    return INCONCLUSIVE


def _sweep(base: Group, decaying: list[Group]) -> tuple[str, str]:
    """The verdict of one (problem, optimizer) comparison and a line of its numbers."""
    const = final_spread(base)
    better = worse = 0
    parts = [f"constant {const.fmt()} ({lr_text(base)})"]
    for g in decaying:
        s = final_spread(g)
        mark = ""
        if not g.best_at_edge:  # an edge-tuned schedule counts as neither
            if s.below(const):
                better, mark = better + 1, " lower"
            elif const.below(s):
                worse, mark = worse + 1, " higher"
        parts.append(f"{g.schedule} {s.fmt()}{mark} ({lr_text(g)})")
    if len(base.runs) < MIN_SEEDS:
        verdict, why = INCONCLUSIVE, f"only {len(base.runs)} seeds"
    elif base.best_at_edge:
        verdict, why = INCONCLUSIVE, edge_why(base)
    else:
        verdict = _sweep_verdict(better, worse, len(decaying))
        why = f"{better} of {len(decaying)} clearly lower, {worse} higher"
    name = f"{base.problem}, {catalog.OPTIMIZERS[base.optimizer].label}"
    return verdict, f"{name}: {'; '.join(parts)} → {verdict} ({why})"


def claim_schedules(study: Study, store: Store) -> Claim:
    claim = Claim(
        "6a",
        "Decaying the learning rate (step, cosine, linear, inverse square root) "
        "ends training at a lower loss than keeping it constant.",
        "slide 11",
    )
    verdicts = []
    for problem in study.problems():
        for optimizer in catalog.OPTIMIZERS:
            base = study.find(problem, optimizer)
            decaying = [g for s in catalog.DECAYING if (g := study.find(problem, optimizer, s))]
            decaying = [g for g in decaying if g.runs]
            if base is None or not base.runs or not decaying:
                continue
            verdict, line = _sweep(base, decaying)
            verdicts.append(verdict)
            claim.numbers.append(line)
            if claim.figure is None:
                claim.figure = f"schedules:{problem}"
    if not verdicts:
        return missing(claim, "a constant and a decaying schedule for one optimizer")
    claim.experiment = (
        f"every (problem, optimizer) run with the constant and decaying schedules: final "
        f"validation loss, peak lr tuned per schedule, {len(verdicts)} comparisons"
    )
    claim.rule = (
        "each comparison held if at least half of its decaying schedules end below constant in "
        "every seed (ranges do not overlap) and none above, did not hold if none below and at "
        "least half above (a schedule tuned at the edge of its lr grid counts as neither; "
        f"constant's at the edge, or fewer than {MIN_SEEDS} seeds, make it inconclusive); the "
        "claim held if more than half of the comparisons held and none did not hold, did not "
        "hold if the reverse, otherwise inconclusive"
    )
    held, not_held = verdicts.count(HELD), verdicts.count(NOT_HELD)
    if 2 * held > len(verdicts) and not not_held:
        claim.verdict = HELD
    elif 2 * not_held > len(verdicts) and not held:
        claim.verdict = NOT_HELD
    else:
        claim.why = f"{held} of {len(verdicts)} comparisons held, {not_held} did not"
    return claim


def claim_warmup(study: Study, store: Store) -> Claim:
    claim = Claim(
        "6b",
        "A linear warmup helps training the transformer.",
        "slide 11",
        figure="schedules:charlm",
    )
    pairs = [(s, f"warmup_{s}") for s in ("constant", "cosine", "linear", "inv_sqrt")]
    found = []
    for optimizer in ("adam", *catalog.OPTIMIZERS):
        found = [
            (a, b)
            for s, w in pairs
            if (a := study.find("charlm", optimizer, s))
            and (b := study.find("charlm", optimizer, w))
            and a.runs
            and b.runs
        ]
        if found:
            break
    if not found:
        return missing(claim, "a schedule with and without warmup on charlm")
    claim.experiment = (
        f"charlm, {catalog.OPTIMIZERS[found[0][0].optimizer].label}: final validation loss "
        f"(bits per character) with and without 10 % linear warmup, peak lr tuned for each, "
        f"{seeds_text(found[0][0])}"
    )
    better = worse = 0
    counted = 0
    for plain, warm in found:
        a, b = final_spread(plain), final_spread(warm)
        if not (plain.best_at_edge or warm.best_at_edge):
            counted += 1
            better += b.below(a)
            worse += a.below(b)
        claim.numbers.append(
            f"{plain.schedule}: {_bpc(a)} bpc ({lr_text(plain)}) → with warmup {_bpc(b)} bpc "
            f"({lr_text(warm)})"
        )
    claim.rule = (
        "held if warmup ends lower in every seed for at least one schedule and higher for none; "
        f"did not hold if the reverse; otherwise inconclusive; needs ≥ {MIN_SEEDS} seeds; a pair "
        "where a tuned lr lies at the edge of its grid is not counted"
    )
    n = min(len(p.runs) for pair in found for p in pair)
    if n < MIN_SEEDS:
        claim.why = f"only {n} seeds"
        return claim
    if not counted:
        claim.why = edge_why(*(g for pair in found for g in pair))
    elif better and not worse:
        claim.verdict = HELD
    elif worse and not better:
        claim.verdict = NOT_HELD
    else:
        claim.why = "no schedule was clearly better or worse with warmup"
    return claim


def _bpc(spread: Spread) -> str:
    if not spread.finite:
        return spread.fmt()
    ln2 = math.log(2)
    return f"{spread.mean / ln2:.3f} ± {spread.std / ln2:.2g}"

"""Claims 6a and 6b: decaying schedules, and warmup on the transformer (slide 11)."""

from __future__ import annotations

import math

from .. import catalog
from ..analysis import Spread, Study, final_spread
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


def _schedule_verdict(better: int, worse: int, total: int) -> str:
    if total == 0:
        return INCONCLUSIVE
    if 2 * better >= total and worse == 0:
        return HELD
    if better == 0 and 2 * worse >= total:
        return NOT_HELD
    return INCONCLUSIVE


def claim_schedules(study: Study, store: Store) -> Claim:
    claim = Claim(
        "6a",
        "Decaying the learning rate (step, cosine, linear, inverse square root) "
        "ends training at a lower loss than keeping it constant.",
        "slide 11",
    )
    for problem in ("mnist1d_cnn", "digits_mlp", "quadratic_deep", "digits_logreg", "charlm"):
        for optimizer in ("momentum", "adam", "sgd", *catalog.OPTIMIZERS):
            base = study.find(problem, optimizer)
            decaying = [g for s in catalog.DECAYING if (g := study.find(problem, optimizer, s))]
            decaying = [g for g in decaying if g.runs]
            if base is None or not base.runs or not decaying:
                continue
            const = final_spread(base)
            claim.figure = f"schedules:{problem}"
            claim.experiment = (
                f"{problem}, {catalog.OPTIMIZERS[optimizer].label}: final validation loss with "
                f"each schedule, peak lr tuned per schedule, {seeds_text(base)}"
            )
            claim.numbers.append(f"constant ({lr_text(base)}): {const.fmt()}")
            better = worse = 0
            for g in decaying:
                s = final_spread(g)
                if not g.best_at_edge:  # an edge-tuned schedule counts as neither
                    better += s.below(const)
                    worse += const.below(s)
                claim.numbers.append(f"{g.schedule} ({lr_text(g)}): {s.fmt()}")
            claim.rule = (
                "held if at least half of the decaying schedules end below constant in every seed "
                "(ranges do not overlap) and none ends above; did not hold if none ends below and "
                f"at least half end above; otherwise inconclusive; needs ≥ {MIN_SEEDS} seeds; a "
                "schedule whose tuned lr lies at the edge of its grid counts as neither, and "
                "constant's at the edge makes it inconclusive"
            )
            if base.runs and len(base.runs) < MIN_SEEDS:
                claim.why = f"only {len(base.runs)} seeds"
                return claim
            if base.best_at_edge:
                claim.why = edge_why(base)
                return claim
            claim.verdict = _schedule_verdict(better, worse, len(decaying))
            if claim.verdict == INCONCLUSIVE:
                claim.why = (
                    f"{better} of {len(decaying)} decaying schedules ended clearly lower, "
                    f"{worse} higher"
                )
            return claim
    return missing(claim, "a constant and a decaying schedule for one optimizer")


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

"""Claims 4 and 5: Adagrad's decaying step vs RMSProp's; Adam's bias correction (slides 7-10)."""

from __future__ import annotations

import math

import numpy as np

from ..analysis import Study
from ..compare import decay_ratio
from ..problems import get
from ..store import Store
from .common import (
    HELD,
    NOT_HELD,
    UNDECIDED,
    Claim,
    comparison_rule,
    comparisons,
    decide,
    lr_text,
    missing,
    range_text,
)

#: claim 5: "huge" first steps are at least this many times the corrected ones, at every lr
HUGE = 2.0


def claim_adagrad(study: Study, store: Store) -> Claim:
    claim = Claim(
        "4",
        "Adagrad's step size decays towards zero as its sum of squared gradients grows; "
        "RMSProp's moving average keeps it from decaying.",
        "slides 7–8",
    )
    found = comparisons(study, "4")
    if not found:
        return missing(claim, "adagrad and rmsprop with the constant schedule on one problem")
    c = found[0]
    claim.figure = f"eff_lr:{c.problem}"
    claim.experiment = (
        f"{get(c.problem).title}: the step multiplier — how far a weight moves per unit of "
        "lr and of its gradient, median over the weights of |Δw| / (lr·|g|): 1/(√Σg² + ε) for "
        "Adagrad, 1/(√avg(g²) + ε) for RMSProp — compared between 10 % of the run and its end, "
        "as log10(end / early) (−1: it fell tenfold), each at its tuned constant lr"
    )
    for g in (c.a, c.b):
        ratios = [r for run in g.runs if (r := decay_ratio(store, run)) is not None]
        if ratios:
            # over a tenfold span of steps, ratio = 10^-p for a multiplier decaying like t^-p
            p = [-math.log10(v) for v in ratios]
            claim.numbers.append(
                f"{g.label}: end / early = {range_text(min(ratios), max(ratios), '{:.2f}')} over "
                f"{len(ratios)} seeds (like t^{-max(p):+.2f} … t^{-min(p):+.2f}"
                + ("; constant gradients would give t^-0.50)" if g.optimizer == "adagrad" else ")")
            )
    decide(claim, c, store)
    mean_adagrad = np.mean(c.values(store, c.a)) if c.a.runs else 0.0
    claim.rule = (
        "held if Adagrad's multiplier falls over the run (mean log ratio below 0) and falls "
        "further than RMSProp's; for the second part, "
        + comparison_rule("decay", study.confidence, c.looks)
    )
    if claim.verdict == HELD and mean_adagrad >= 0:
        claim.verdict, claim.why = UNDECIDED, "Adagrad fell more than RMSProp but did not fall"
    claim.caption = (
        "The step multiplier over the run (log axes; mean and seed range). SGD's is 1 by "
        "definition. Adagrad's keeps falling as its sum of squared gradients grows; RMSProp's "
        "levels off, because its average forgets old gradients."
    )
    return claim


def early_update(store: Store, key: str, first: int = 10) -> tuple[float | None, float | None]:
    """Largest mean |Δw| / lr over the first steps, and the train loss at step ``first``."""
    s, v = store.series(key, "update")
    sl, vl = store.series(key, "train_loss")
    big = float(v[s < first].max()) if np.any(s < first) else None
    at = vl[np.nonzero(sl >= first)[0][0]] if np.any(sl >= first) else None
    return big, None if at is None else float(at)


def claim_bias_correction(study: Study, store: Store) -> Claim:
    claim = Claim(
        "5",
        "Adam's bias correction prevents huge first steps (its moments start at zero, so "
        "uncorrected the second moment is tiny at first).",
        "slides 9–10",
    )
    candidates = ("mnist1d_cnn", "digits_mlp", "quadratic_deep", "digits_logreg", "charlm")
    problem = next(
        (p for p in candidates if (a := study.find(p, "adam")) and a.grid_runs
         and (b := study.find(p, "adam_nobc")) and b.grid_runs),
        None,
    )  # fmt: skip
    if problem is None:
        return missing(claim, "adam and adam_nobc on " + " / ".join(candidates))
    claim.figure = f"early_update:{problem}"
    adam, nobc = study.find(problem, "adam"), study.find(problem, "adam_nobc")
    ratios = []
    for lr in adam.grid_runs:
        ra, rn = adam.grid_runs.get(lr), nobc.grid_runs.get(lr)
        if ra is None or rn is None:
            continue
        (ua, la), (un, ln) = early_update(store, ra.key), early_update(store, rn.key)
        if ua and un:
            ratios.append(un / ua)
            claim.numbers.append(
                f"lr {lr:g}: largest of the first 10 steps {ua:.2f}·lr corrected vs "
                f"{un:.2f}·lr uncorrected ({un / ua:.1f}×); training loss after 10 steps "
                f"{la:.3g} vs {ln:.3g}"
            )
    claim.experiment = (
        f"{get(problem).title}: Adam with and without bias correction at the same learning "
        "rates (every lr of the grid, seed 0); a step's size is the mean |Δw| over the weights "
        f"divided by lr. The tuning picked {lr_text(adam)} with correction and "
        f"{lr_text(nobc)} without."
    )
    claim.rule = (
        f"held if, at every learning rate, the largest of the first 10 steps is at least {HUGE:g}× "
        "larger without correction; not held if less than 1.2× at any; otherwise undecided (a "
        "deterministic measurement per lr: no seeds to add)"
    )
    claim.caption = (
        "Left: the size of each of the first steps at the corrected run's tuned lr, in units "
        "of lr. Uncorrected, Adam's first step is lr·(1 − β₁)|g| / (√(1 − β₂)|g|) ≈ 3.2·lr "
        "(β₁ = 0.9, β₂ = 0.999); corrected, it is lr. Right: the training loss of the same runs."
    )
    if not ratios:
        claim.why = "no pair of comparable runs"
    elif min(ratios) >= HUGE:
        claim.verdict = HELD
    elif min(ratios) < 1.2:
        claim.verdict = NOT_HELD
    else:
        claim.why = f"the ratio fell between 1.2× and {HUGE:g}×"
    return claim

"""Claims 4 and 5: Adagrad's decaying step vs RMSProp's; Adam's bias correction (slides 7-10)."""

from __future__ import annotations

import math

import numpy as np

from .. import catalog
from ..analysis import Study
from ..store import Store
from .common import HELD, KEEP, NOT_HELD, Claim, pick_pair, seeds_text


def _decay_ratio(store: Store, key: str, steps: int) -> float | None:
    s, v = store.series(key, "eff_lr")
    early = np.nonzero(s >= steps // 10)[0]
    if len(early) == 0 or v[early[0]] <= 0:
        return None
    return float(v[-1] / v[early[0]])


def claim_adagrad(study: Study, store: Store) -> Claim:
    claim = Claim(
        "4",
        "Adagrad's effective step size decays towards zero as its sum of squared "
        "gradients grows; RMSProp's moving average keeps it from decaying.",
        "slides 7–8",
    )
    candidates = ("digits_mlp", "mnist1d_cnn", "quadratic_deep", "digits_logreg", "charlm")
    problem = pick_pair(claim, study, candidates, "adagrad", "rmsprop")
    if problem is None:
        return claim
    claim.figure = f"eff_lr:{problem}"
    ratios = {}
    for name in ("adagrad", "rmsprop"):
        g = study.find(problem, name)
        values = [_decay_ratio(store, r.key, g.steps) for r in g.runs if not r.diverged]
        ratios[name] = [v for v in values if v is not None]
    claim.experiment = (
        f"{problem}: the effective step multiplier median |Δw| / (lr |g|) over the weights "
        f"(1 / (√(Σ g²) + ε) for Adagrad, 1 / (√EMA(g²) + ε) for RMSProp), from 10 % of the "
        f"run to its end, constant tuned lr, {seeds_text(study.find(problem, 'adagrad'))}"
    )
    for name, values in ratios.items():
        if values:
            # over a tenfold span of steps, ratio = 10^-p for a multiplier decaying like t^-p
            p = [-math.log10(v) for v in values]
            claim.numbers.append(
                f"{catalog.OPTIMIZERS[name].label}: end / early = "
                f"{min(values):.2f}–{max(values):.2f} over {len(values)} seeds "
                f"(like t^{-max(p):+.2f} … t^{-min(p):+.2f}"
                + ("; constant gradients would give t^-0.50)" if name == "adagrad" else ")")
            )
    claim.rule = (
        f"held if, in every seed, Adagrad's multiplier ended below {KEEP:.0%} of its early value "
        f"and RMSProp's at or above {KEEP:.0%} of it; did not hold if Adagrad's fell less than "
        "RMSProp's in every seed; otherwise inconclusive"
    )
    a, r = ratios["adagrad"], ratios["rmsprop"]
    if not a or not r:
        claim.why = "the runs diverged or recorded no multiplier"
    elif max(a) < KEEP <= min(r):
        claim.verdict = HELD
    elif min(a) > max(r):
        claim.verdict = NOT_HELD
    else:
        claim.why = f"a ratio fell on the wrong side of {KEEP:.0%}"
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
        "Adam's bias correction prevents huge first steps (its moments start at "
        "zero, so uncorrected the second moment is tiny at first).",
        "slides 9–10",
    )
    candidates = ("mnist1d_cnn", "digits_mlp", "quadratic_deep", "digits_logreg", "charlm")
    problem = pick_pair(claim, study, candidates, "adam", "adam_nobc")
    if problem is None:
        return claim
    claim.figure = f"early_update:{problem}"
    adam, nobc = study.find(problem, "adam"), study.find(problem, "adam_nobc")
    ratios = []
    for lr in adam.grid:
        ra, rn = adam.grid_runs.get(lr), nobc.grid_runs.get(lr)
        if ra is None or rn is None:
            continue
        (ua, la), (un, ln) = early_update(store, ra.key), early_update(store, rn.key)
        if ua and un:
            ratios.append(un / ua)
            claim.numbers.append(
                f"lr {lr:g}: largest step in the first 10 = {ua:.2f}·lr corrected vs "
                f"{un:.2f}·lr uncorrected ({un / ua:.1f}x); train loss after 10 steps "
                f"{la:.3g} vs {ln:.3g}"
            )
    claim.experiment = (
        f"{problem}: Adam with and without bias correction at the same learning rates (the "
        f"lr grid, seed 0); step size = mean |Δw| / lr. The tuner picked lr {adam.best_lr} with "
        f"correction and {nobc.best_lr} without."
    )
    claim.rule = (
        "held if, at every learning rate, the largest of the first 10 steps is at least 2x "
        "larger without correction; did not hold if less than 1.2x at any; otherwise inconclusive"
    )
    if not ratios:
        claim.why = "no pair of comparable runs"
    elif min(ratios) >= 2:
        claim.verdict = HELD
    elif min(ratios) < 1.2:
        claim.verdict = NOT_HELD
    else:
        claim.why = "the ratio fell between 1.2x and 2x"
    return claim

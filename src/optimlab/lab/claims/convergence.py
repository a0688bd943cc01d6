"""Claims 1-3 and 7: oscillation, momentum, Nesterov, local minima (slides 2-5)."""

from __future__ import annotations

import numpy as np
from scipy import stats as _scipy

from .. import catalog
from ..analysis import Group, Study
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
    seeds_text,
)

#: a path "zig-zags" along an axis if at least this share of its steps reverse direction there
ZIGZAG = 0.5


def zigzag(trajectory: np.ndarray, axis: int, tol: float = 1e-9) -> float:
    """Share of consecutive steps along ``axis`` that reverse direction (point 0); steps
    shorter than ``tol`` (converged to rounding) are left out."""
    d = np.diff(trajectory[:, 0, axis])
    d = d[np.abs(d) > tol]
    if len(d) < 2:
        return 0.0
    return float(np.mean(np.sign(d[1:]) != np.sign(d[:-1])))


def _zigzags(store: Store, group: Group | None, axis: int) -> list[float]:
    if group is None:
        return []
    return [
        zigzag(a, axis)
        for r in group.runs
        if not r.diverged and (a := store.array(r.key, "trajectory")) is not None
    ]


def _pct(values: list[float]) -> str:
    lo, hi = 100 * min(values), 100 * max(values)
    return f"{lo:.0f} %" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f} %"


def _steps_claim(claim: Claim, study: Study, store: Store) -> Claim:
    found = comparisons(study, claim.number)
    if not found:
        return missing(claim, "the two optimizers with the constant schedule on one problem")
    c = found[0]
    p = get(c.problem)
    claim.experiment = (
        f"{p.title}: {c.a.label} vs {c.b.label}, each at its own tuned constant lr "
        f"({lr_text(c.a)} and {lr_text(c.b)}); steps until {p.target_text} "
        "(a seed that never gets there counts as the run's length + 1)"
    )
    claim.rule = comparison_rule("steps", study.confidence, c.looks)
    decide(claim, c, store)
    claim.figure = claim.figure or f"loss:{c.problem}:{c.b.optimizer},{c.a.optimizer}"
    return claim


def claim_oscillation(study: Study, store: Store) -> Claim:
    claim = Claim(
        "1",
        "Gradient descent oscillates across a steep valley and converges slowly; "
        "momentum damps the oscillation and converges faster.",
        "slides 2–3",
        figure="claim1:ill_conditioned",
    )
    _steps_claim(claim, study, store)
    if claim.why.startswith("the study has no"):
        return claim
    sgd = study.find("ill_conditioned", "sgd")
    same = study.group("ill_conditioned", "momentum/constant@sgd*0.1")
    across, along = _zigzags(store, sgd, 1), _zigzags(store, sgd, 0)
    smooth = _zigzags(store, same, 1)
    if across:
        claim.numbers.append(
            f"SGD's steps reverse direction on {_pct(across)} of its steps across the steep "
            f"valley (y) and {_pct(along)} along its floor (x)"
            + (f"; momentum at the same long-run step size on {_pct(smooth)}" if smooth else "")
        )
    claim.rule = (
        f"held if SGD zig-zags (at least {ZIGZAG:.0%} of its steps across the valley reverse "
        f"direction) and momentum is faster; for faster, {claim.rule}"
    )
    if claim.verdict == HELD and (not across or min(across) < ZIGZAG):
        claim.verdict, claim.why = UNDECIDED, "momentum was faster, but tuned SGD did not zig-zag"
    claim.caption = (
        "The ill-conditioned quadratic f = (x² + 50 y²)/2 from (−4, 1.5), seed 0; each panel's "
        "title gives the learning rates. At the same lr, momentum's steps are about 10× larger "
        "(torch's buffer adds up the gradients: 1/(1 − 0.9) = 10), so it swings across the "
        "valley in wide arcs. At one tenth of SGD's lr — the same long-run step — the picture "
        "is the lecture's: SGD zig-zags across the steep y direction and creeps along x, "
        "momentum follows the valley to the minimum."
    )
    return claim


def claim_momentum(study: Study, store: Store) -> Claim:
    claim = Claim("2", "Momentum converges faster than plain SGD with mini-batches.", "slide 5")
    _steps_claim(claim, study, store)
    claim.caption = _loss_caption(claim)
    return claim


def claim_nesterov(study: Study, store: Store) -> Claim:
    claim = Claim(
        "3",
        "Nesterov momentum (the gradient at the look-ahead point) converges faster than "
        "classical momentum.",
        "slide 4",
    )
    _steps_claim(claim, study, store)
    claim.caption = _loss_caption(claim)
    return claim


def _loss_caption(claim: Claim) -> str:
    return (
        "Mean over seeds (line) and the range from the lowest to the highest seed (band), each "
        "optimizer at its tuned constant lr. Look at where each curve crosses the dotted target "
        "line in the middle panel: that step is the claim's measure."
    )


def global_fraction(store: Store, group: Group) -> tuple[int, int]:
    """(starting points that ended in the global minimum's basin, all points), over seeds."""
    hits = total = 0
    for r in group.runs:
        traj = store.array(r.key, "trajectory")
        if traj is None or r.diverged:
            continue
        final = traj[-1]
        hits += int(np.sum(np.all(np.abs(final) < 0.5, axis=1)))
        total += len(final)
    return hits, total


def clopper_pearson(hits: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) confidence interval of a proportion."""
    a = (1 - level) / 2
    lo = 0.0 if hits == 0 else float(_scipy.beta.ppf(a, hits, total - hits + 1))
    hi = 1.0 if hits == total else float(_scipy.beta.ppf(1 - a, hits + 1, total - hits))
    return lo, hi


def claim_local_minima(study: Study, store: Store) -> Claim:
    claim = Claim(
        "7", "Gradient descent gets stuck in local minima.", "slide 2",
        figure="trajectories:rastrigin",
    )  # fmt: skip
    sgd = study.find("rastrigin", "sgd")
    if sgd is None or not sgd.runs:
        return missing(claim, "sgd on rastrigin")
    points = get("rastrigin").points
    claim.experiment = (
        f"Rastrigin (a local minimum near every integer point, the global one at 0): {points} "
        f"random starts per seed in [−3.8, 3.8]², {seeds_text(sgd)}, tuned constant lr; a start "
        "counts as global if it ends within 0.5 of the origin in both coordinates"
    )
    level = study.confidence
    for problem in ("rastrigin", "rastrigin_noisy"):
        for g in study.of(problem):
            if g.schedule == "constant" and g.tuned and g.runs:
                hits, total = global_fraction(store, g)
                if total:
                    lo, hi = clopper_pearson(hits, total, level)
                    noisy = ", noisy gradients" if problem.endswith("_noisy") else ""
                    claim.numbers.append(
                        f"{catalog.OPTIMIZERS[g.optimizer].label}{noisy} (lr {g.best_lr:g}): "
                        f"{hits} of {total} starts reach the global minimum "
                        f"({100 * hits / total:.0f} %, {100 * level:.0f} % CI "
                        f"{100 * lo:.0f}–{100 * hi:.0f} %)"
                    )
    hits, total = global_fraction(store, sgd)
    claim.rule = (
        f"held if the {100 * level:.0f} % confidence interval (Clopper–Pearson, exact) of the "
        "share of starts from which plain GD (exact gradients) reaches the global minimum lies "
        "below 50 %; not held if it lies above 90 %; otherwise undecided"
    )
    claim.caption = (
        f"Each panel: one optimizer's {points} paths (seed 0) from the black squares; a coloured "
        "dot is where a path ended, the star the global minimum. Almost every path stops in the "
        "nearest dip of the egg-box."
    )
    if not total:
        claim.why = "every SGD run diverged"
        return claim
    lo, hi = clopper_pearson(hits, total, level)
    if hi < 0.5:
        claim.verdict = HELD
    elif lo > 0.9:
        claim.verdict = NOT_HELD
    else:
        claim.why = f"{hits} of {total} starts reached the global minimum"
    return claim

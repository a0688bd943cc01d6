"""The lecture's own forms beside torch's: when they differ and when they do not (L1-L3).

The lecture writes momentum with a velocity that carries the learning rate
(slides 3, 5), Nesterov with the gradient at the look-ahead point (slide 4), and
Adagrad / RMSProp with ε inside the square root (slides 7-8); torch writes each
differently.  Each section runs both forms at the *same* hyperparameters: an
exact check on the 2-D quadratic (float64, where rounding is the only other
difference) and a paired comparison on a real model.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..analysis import Group, Study
from ..problems import get
from ..store import Store
from .common import (
    HELD,
    NOT_HELD,
    UNDECIDED,
    Claim,
    comparisons,
    effect_text,
    missing,
)

#: "the same path": deviations below this share of the distance from the start to the optimum
SAME = 1e-9
#: "they split": deviations above this share
SPLIT = 1e-6
#: L3: the forms count as equivalent on a model if the confidence interval of the difference
#: in final training loss lies within this share of the loss that training removed
MARGIN = 0.01


def _path(store: Store, group: Group | None) -> np.ndarray | None:
    run = group.seed_runs.get(0) if group is not None else None
    if run is None or run.diverged:
        return None
    traj = store.array(run.key, "trajectory")
    return None if traj is None else traj[:, 0, :]


def _real_numbers(claim: Claim, study: Study, store: Store) -> None:
    for c in comparisons(study, claim.number):
        claim.numbers.append(f"{get(c.problem).title}: {effect_text(c, c.decision(store), store)}")


def _progress(store: Store, group: Group) -> float:
    """How much training loss the group's runs removed: the first loss minus the last, mean."""
    drops = [
        float(store.series(r.key, "train_loss")[1][0]) - r.final_train_loss
        for r in group.runs
        if not r.diverged and r.final_train_loss is not None
    ]
    return float(np.mean(drops)) if drops else 0.0


def decay_step(steps: int) -> int:
    """The first step that uses the decayed lr in the lab's step schedule (see catalog)."""
    return max(1, math.ceil(steps / 3))


def form_velocity(study: Study, store: Store) -> Claim:
    claim = Claim(
        "L1",
        "The lecture's velocity (v = βv − lr·dw; w = w + v) and torch's buffer (b = βb + dw; "
        "w = w − lr·b) take the same steps while the lr is constant, and split when it changes: "
        "the velocity remembers the lr of every past gradient, torch's buffer multiplies all "
        "of them by the new one.",
        "slides 3, 5",
    )
    torch_form = study.find("ill_conditioned", "momentum", "step")
    lecture = study.group("ill_conditioned", "momentum_lecture/step")
    a, b = _path(store, torch_form), _path(store, lecture)
    if a is None or b is None:
        return missing(claim, "momentum in both forms with the step schedule on ill_conditioned")
    d = decay_step(torch_form.steps)
    scale = float(np.abs(a[0]).max())
    before = float(np.abs(a[: d + 1] - b[: d + 1]).max()) / scale
    after = float(np.abs(a[d + 1 :] - b[d + 1 :]).max()) / scale
    ratio = np.linalg.norm(b[d + 1] - b[d]) / max(np.linalg.norm(a[d + 1] - a[d]), 1e-300)
    f = get("ill_conditioned").value
    claim.figure = "form_velocity:ill_conditioned"
    claim.experiment = (
        f"Ill-conditioned quadratic, momentum 0.9 at torch's tuned lr {torch_form.best_lr:g} "
        f"with the step schedule (lr × 0.1 at steps {d} and {2 * d}), both forms, seed 0, float64"
    )
    claim.numbers += [
        f"before the first decay the paths differ by at most {before:.1e} of the distance to the "
        f"optimum (rounding); after it by up to {after:.1e}",
        f"the first step after the decay is {ratio:.1f}× longer in the lecture's form (its "
        "velocity still carries the old lr); final f: torch "
        f"{_f(f, a[-1]):.2e}, lecture {_f(f, b[-1]):.2e}",
    ]
    _real_numbers(claim, study, store)
    claim.rule = (
        f"held if the two paths agree to {SAME:g} of the distance to the optimum before the decay "
        f"and differ by more than {SPLIT:g} after it; not held otherwise"
    )
    claim.verdict = HELD if before <= SAME and after > SPLIT else NOT_HELD
    claim.caption = (
        "Left: the distance to the optimum over the run for both forms (dotted lines: the "
        "decays). Middle: the length of each step — at a decay torch's form shrinks its step at "
        "once by 10×, the lecture's only as the old velocity fades (by β = 0.9 per step). "
        "Right: a real model's validation loss with both forms (mean and seed range)."
    )
    return claim


def _f(function, point: np.ndarray) -> float:
    return float(function(torch.tensor(point, dtype=torch.float64)))


def form_nesterov(study: Study, store: Store) -> Claim:
    claim = Claim(
        "L2",
        "Nesterov's look-ahead gradient (slide 4: the gradient at w + βv) and torch's "
        "reformulation (the gradient at w, then g + β·b) are one method in two coordinates: "
        "torch's weights are the look-ahead points w + βv of the lecture's.",
        "slide 4",
    )
    reform = study.find("ill_conditioned", "nesterov")
    look = study.group("ill_conditioned", "nesterov_lookahead/constant")
    a, b = _path(store, reform), _path(store, look)
    if a is None or b is None:
        return missing(claim, "Nesterov in both forms on ill_conditioned")
    mu = 0.9
    shifted = b[1:] + mu * (b[1:] - b[:-1])  # the look-ahead point w + βv, v = w_t - w_(t-1)
    scale = float(np.abs(a[0]).max())
    deviation = float(np.abs(a[1:] - shifted).max()) / scale
    raw = float(np.abs(a - b).max()) / scale
    claim.figure = "form_nesterov:ill_conditioned"
    claim.experiment = (
        f"Ill-conditioned quadratic, Nesterov momentum 0.9 at torch's tuned lr "
        f"{reform.best_lr:g}, both forms, seed 0, float64: torch's weights against the "
        "lecture's weights w and against its look-ahead points w + βv"
    )
    claim.numbers += [
        f"torch's weights and the lecture's weights differ by up to {raw:.1e} of the distance "
        f"to the optimum; torch's weights and the lecture's look-ahead points by {deviation:.1e}",
    ]
    _real_numbers(claim, study, store)
    claim.rule = (
        f"held if torch's path equals the lecture's look-ahead points to {SAME:g} of the "
        "distance to the optimum at every step; not held otherwise"
    )
    claim.verdict = HELD if deviation <= SAME else NOT_HELD
    claim.caption = (
        "Left: the paths of both forms; the crosses are the lecture's look-ahead points w + βv, "
        "which lie on torch's path. Right: a real model's validation loss with both forms "
        "(rounding makes the two runs drift apart over many steps, as any two orderings of "
        "floating-point arithmetic do)."
    )
    return claim


def form_eps(study: Study, store: Store) -> Claim:
    claim = Claim(
        "L3",
        "ε inside the square root (the lecture: dw / √(s + ε)) and outside it (torch: "
        "dw / (√s + ε)) give the same steps unless √s, the gradients' scale, is near √ε: "
        "1e-5 for Adagrad (ε = 1e-10), 1e-4 for RMSProp (ε = 1e-8).",
        "slides 7–8",
    )
    found = comparisons(study, "L3")
    if not found:
        return missing(claim, "adagrad or rmsprop with ε inside the root on a model")
    claim.figure = f"form_eps:{found[0].problem}"
    claim.experiment = (
        f"{get(found[0].problem).title}: Adagrad and RMSProp at torch's tuned lr, with ε outside "
        "(torch) and inside (the lecture) the root, paired seeds: the final training loss"
    )
    outside = inside = 0
    for c in found:
        decision = c.decision(store)
        claim.numbers.append(effect_text(c, decision, store))
        if decision is None:
            continue
        margin = MARGIN * _progress(store, c.b)
        iv = decision.interval
        inside += -margin < iv.lo and iv.hi < margin
        outside += iv.lo > margin or iv.hi < -margin
    claim.rule = (
        f"held if, for each optimizer, the {100 * study.confidence:.0f} % confidence interval of "
        f"the difference in final training loss lies within ±{MARGIN:.0%} of what training "
        "removed (the first loss minus the last, torch's form, mean over seeds); not held if "
        "one lies entirely outside it; otherwise undecided"
    )
    if outside:
        claim.verdict = NOT_HELD
    elif inside == len(found):
        claim.verdict = HELD
    else:
        claim.verdict, claim.why = UNDECIDED, "an interval reaches beyond the margin"
    claim.caption = (
        "Left: the step multiplier 1/(√s + ε) and 1/√(s + ε) against the gradients' scale √s, "
        "from the formulas, for each optimizer's ε: they part only where √s approaches √ε. "
        "Right: the final training loss of each seed with both forms (lines join a seed's two "
        "runs)."
    )
    return claim


FORMS = [form_velocity, form_nesterov, form_eps]

"""Claims 1-3 and 7: oscillation, momentum, Nesterov, local minima (slides 2-5)."""

from __future__ import annotations

import numpy as np

from .. import catalog
from ..analysis import Group, Study, final_spread
from ..store import Store
from .common import HELD, INCONCLUSIVE, NOT_HELD, STOCHASTIC, Claim, faster, missing, seeds_text


def zigzag(trajectory: np.ndarray, axis: int, tol: float = 1e-9) -> float:
    """Fraction of consecutive steps along ``axis`` that reverse direction (point 0)."""
    d = np.diff(trajectory[:, 0, axis])
    d = d[np.abs(d) > tol]
    if len(d) < 2:
        return 0.0
    return float(np.mean(np.sign(d[1:]) != np.sign(d[:-1])))


def claim_oscillation(study: Study, store: Store) -> Claim:
    claim = Claim(
        "1",
        "Gradient descent oscillates across a steep valley and converges slowly; "
        "momentum damps the oscillation and converges faster.",
        "slides 2–3",
        figure="trajectories:ill_conditioned",
    )
    faster(study, store, claim, "momentum", "sgd", ("ill_conditioned",))
    group = study.find("ill_conditioned", "sgd")
    if group is None or not group.runs or claim.why.startswith("the study has no"):
        return claim
    zz = [zigzag(a, 1) for r in group.runs if (a := store.array(r.key, "trajectory")) is not None]
    zx = [zigzag(a, 0) for r in group.runs if (a := store.array(r.key, "trajectory")) is not None]
    claim.numbers.append(
        f"SGD's steps reverse direction on {100 * min(zz):.0f}–{100 * max(zz):.0f} % of steps "
        f"across the steep y axis vs {100 * min(zx):.0f}–{100 * max(zx):.0f} % along the flat "
        "x axis"
    )
    claim.rule = "held if SGD zig-zags (≥ 50 % of its steps across the valley reverse) and " + (
        claim.rule.replace("held if", "", 1)
    )
    oscillates = min(zz) >= 0.5
    if claim.verdict == HELD and not oscillates:
        claim.verdict, claim.why = (
            INCONCLUSIVE,
            "momentum was faster, but tuned SGD did not zig-zag",
        )
    return claim


def claim_momentum(study: Study, store: Store) -> Claim:
    claim = Claim(
        "2",
        "Momentum converges faster than plain SGD with mini-batches.",
        "slide 5",
    )
    return faster(study, store, claim, "momentum", "sgd", STOCHASTIC)


def claim_nesterov(study: Study, store: Store) -> Claim:
    claim = Claim(
        "3",
        "Nesterov momentum (the gradient at the look-ahead point) converges "
        "faster than classical momentum.",
        "slide 4",
    )
    return faster(study, store, claim, "nesterov", "momentum", STOCHASTIC)


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


def claim_local_minima(study: Study, store: Store) -> Claim:
    claim = Claim(
        "7",
        "Gradient descent gets stuck in local minima.",
        "slide 2",
        figure="trajectories:rastrigin",
    )
    sgd = study.find("rastrigin", "sgd")
    if sgd is None or not sgd.runs:
        return missing(claim, "sgd on rastrigin")
    claim.experiment = (
        "Rastrigin (a local minimum near every integer point, the global one at 0): 16 random "
        f"starts per seed in [-3.8, 3.8]², {seeds_text(sgd)}, tuned constant lr; a point counts "
        "as global if it ends within 0.5 of the origin in both coordinates"
    )
    for problem in ("rastrigin", "rastrigin_noisy"):
        for g in study.of(problem):
            if g.schedule == "constant" and g.runs:
                hits, total = global_fraction(store, g)
                if total:
                    claim.numbers.append(
                        f"{problem} {catalog.OPTIMIZERS[g.optimizer].label} (lr {g.best_lr:g}): "
                        f"{hits}/{total} starts reached the global minimum; final mean f "
                        f"{final_spread(g).fmt()}"
                    )
    hits, total = global_fraction(store, sgd)
    claim.rule = (
        "held if plain GD (exact gradients) ends in a non-global local minimum from at least half "
        "of the starts; did not hold if it reaches the global one from at least 90 %; otherwise "
        "inconclusive"
    )
    if not total:
        claim.why = "every SGD run diverged"
    elif hits <= total / 2:
        claim.verdict = HELD
    elif hits >= 0.9 * total:
        claim.verdict = NOT_HELD
    else:
        claim.why = f"{hits}/{total} starts reached the global minimum"
    return claim

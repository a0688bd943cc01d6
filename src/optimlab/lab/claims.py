"""The lecture's claims, each checked against the stored runs by a stated rule.

Every check is a function ``(study, store) -> Claim``.  It finds the runs it
needs (the tuned runs of the groups named in its experiment), computes the
numbers from the stored per-step series, and applies its rule; the verdict is
``held``, ``did not hold`` or ``inconclusive`` (with the reason), never written
by hand.  Comparisons across seeds use ranges: "A is faster than B" means every
seed of A beats every seed of B (the min–max ranges do not overlap); with fewer
than :data:`MIN_SEEDS` seeds a stochastic comparison is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import catalog
from .analysis import Group, Spread, Study, final_spread, target_spread
from .store import Store

__all__ = ["CLAIMS", "Claim", "HELD", "INCONCLUSIVE", "NOT_HELD", "check_all"]

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
    figure: str | None = None  # name of a figure in plots.claim_figures


def _missing(claim: Claim, what: str) -> Claim:
    claim.verdict = INCONCLUSIVE
    claim.why = f"the study has no finished runs of {what}"
    return claim


def _pick_pair(claim: Claim, study: Study, candidates: Sequence[str], a: str, b: str) -> str | None:
    """The first candidate with tuned runs of ``a`` and ``b`` (constant lr), or None and why."""
    problem = _pick(study, candidates, (a, "constant"), (b, "constant"))
    if problem is None:
        _missing(claim, f"{a} and {b} with the constant schedule on " + " / ".join(candidates))
    return problem


def _pick(study: Study, candidates: Sequence[str], *pairs: tuple[str, str]) -> str | None:
    """The first candidate problem where every (optimizer, schedule) group has tuned runs."""
    for problem in candidates:
        groups = [study.find(problem, o, s) for o, s in pairs]
        if all(g is not None and g.runs for g in groups):
            return problem
    return None


def _pick_reached(
    study: Study, store: Store, candidates: Sequence[str], *optimizers: str
) -> str | None:
    """Like :func:`_pick`, preferring a problem where one of the runs reached the target."""
    pairs = [(o, "constant") for o in optimizers]
    available = [p for p in candidates if _pick(study, [p], *pairs)]
    for problem in available:
        if any(target_spread(store, study.find(problem, o))[1] for o in optimizers):
            return problem
    return available[0] if available else None


def _seeds_text(group: Group) -> str:
    seeds = sorted(r.seed for r in group.runs)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def _steps_text(spread: Spread, hits: int, steps: int) -> str:
    if hits == 0:
        return f"not reached in {steps} steps"
    text = f"{spread.mean:.0f} [{spread.lo:.0f}–{spread.hi:.0f}]"
    return text + (
        f" ({spread.n - hits} of {spread.n} seeds never reached it)" if hits < spread.n else ""
    )


def _compare(a: Spread, b: Spread, n_a: int, n_b: int, stochastic: bool) -> str:
    """held if a's range lies below b's, did not hold if above, else inconclusive."""
    if stochastic and min(n_a, n_b) < MIN_SEEDS:
        return INCONCLUSIVE
    if a.below(b):
        return HELD
    if b.below(a):
        return NOT_HELD
    return INCONCLUSIVE


def _faster(
    study: Study, store: Store, claim: Claim, fast: str, slow: str, candidates: Sequence[str]
) -> Claim:
    """Steps to target of ``fast`` vs ``slow`` (constant schedule) on a candidate problem."""
    problem = _pick_reached(study, store, candidates, fast, slow)
    if problem is None:
        return _missing(
            claim, f"{fast} and {slow} with the constant schedule on " + " / ".join(candidates)
        )
    from .problems import get

    g_fast, g_slow = study.find(problem, fast), study.find(problem, slow)
    s_fast, h_fast = target_spread(store, g_fast)
    s_slow, h_slow = target_spread(store, g_slow)
    stochastic = problem in STOCHASTIC or problem.endswith("_noisy")
    claim.figure = claim.figure or f"loss:{problem}"
    claim.experiment = (
        f"{get(problem).title}: {catalog.OPTIMIZERS[fast].label} vs "
        f"{catalog.OPTIMIZERS[slow].label}, constant lr tuned for each, {_seeds_text(g_fast)}; "
        f"steps until {get(problem).target_text}"
    )
    for g, s, h in ((g_fast, s_fast, h_fast), (g_slow, s_slow, h_slow)):
        acc = final_spread(g, "val_acc")
        claim.numbers.append(
            f"{catalog.OPTIMIZERS[g.optimizer].label} (lr {g.best_lr:g}): steps to target "
            f"{_steps_text(s, h, g.steps)}; final validation loss {final_spread(g).fmt()}"
            + (f", accuracy {acc.fmt(3, pct=True)}" if acc.finite else "")
        )
    claim.rule = (
        f"held if every seed of {fast} reaches the target in fewer steps than every seed of "
        f"{slow} (a seed that never reaches it counts as steps + 1); did not hold if the "
        "reverse; otherwise (ranges overlap) inconclusive"
        + (f"; needs ≥ {MIN_SEEDS} seeds on a stochastic problem" if stochastic else "")
    )
    if h_fast == 0 and h_slow == 0:
        claim.why = "neither reached the target within the run"
        return claim
    claim.verdict = _compare(s_fast, s_slow, s_fast.n, s_slow.n, stochastic)
    if claim.verdict == INCONCLUSIVE:
        claim.why = (
            f"only {min(s_fast.n, s_slow.n)} seeds"
            if stochastic and min(s_fast.n, s_slow.n) < MIN_SEEDS
            else "the seed ranges overlap"
        )
    return claim


# --- the claims ------------------------------------------------------------------


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
    _faster(study, store, claim, "momentum", "sgd", ("ill_conditioned",))
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
    return _faster(study, store, claim, "momentum", "sgd", STOCHASTIC)


def claim_nesterov(study: Study, store: Store) -> Claim:
    claim = Claim(
        "3",
        "Nesterov momentum (the gradient at the look-ahead point) converges "
        "faster than classical momentum.",
        "slide 4",
    )
    return _faster(study, store, claim, "nesterov", "momentum", STOCHASTIC)


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
    problem = _pick_pair(claim, study, candidates, "adagrad", "rmsprop")
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
        f"run to its end, constant tuned lr, {_seeds_text(study.find(problem, 'adagrad'))}"
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
    problem = _pick_pair(claim, study, candidates, "adam", "adam_nobc")
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
                f"each schedule, peak lr tuned per schedule, {_seeds_text(base)}"
            )
            claim.numbers.append(f"constant (lr {base.best_lr:g}): {const.fmt()}")
            better = worse = 0
            for g in decaying:
                s = final_spread(g)
                better += s.below(const)
                worse += const.below(s)
                claim.numbers.append(f"{g.schedule} (lr {g.best_lr:g}): {s.fmt()}")
            claim.rule = (
                "held if at least half of the decaying schedules end below constant in every seed "
                "(ranges do not overlap) and none ends above; did not hold if none ends below and "
                f"at least half end above; otherwise inconclusive; needs ≥ {MIN_SEEDS} seeds"
            )
            if base.runs and len(base.runs) < MIN_SEEDS:
                claim.why = f"only {len(base.runs)} seeds"
                return claim
            claim.verdict = _schedule_verdict(better, worse, len(decaying))
            if claim.verdict == INCONCLUSIVE:
                claim.why = (
                    f"{better} of {len(decaying)} decaying schedules ended clearly lower, "
                    f"{worse} higher"
                )
            return claim
    return _missing(claim, "a constant and a decaying schedule for one optimizer")


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
        return _missing(claim, "a schedule with and without warmup on charlm")
    claim.experiment = (
        f"charlm, {catalog.OPTIMIZERS[found[0][0].optimizer].label}: final validation loss "
        f"(bits per character) with and without 10 % linear warmup, peak lr tuned for each, "
        f"{_seeds_text(found[0][0])}"
    )
    better = worse = 0
    for plain, warm in found:
        a, b = final_spread(plain), final_spread(warm)
        better += b.below(a)
        worse += a.below(b)
        claim.numbers.append(
            f"{plain.schedule}: {_bpc(a)} bpc (lr {plain.best_lr:g}) → with warmup {_bpc(b)} bpc "
            f"(lr {warm.best_lr:g})"
        )
    claim.rule = (
        "held if warmup ends lower in every seed for at least one schedule and higher for none; "
        "did not hold if the reverse; otherwise inconclusive; needs ≥ "
        f"{MIN_SEEDS} seeds"
    )
    n = min(len(p.runs) for pair in found for p in pair)
    if n < MIN_SEEDS:
        claim.why = f"only {n} seeds"
        return claim
    if better and not worse:
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
        return _missing(claim, "sgd on rastrigin")
    claim.experiment = (
        "Rastrigin (a local minimum near every integer point, the global one at 0): 16 random "
        f"starts per seed in [-3.8, 3.8]², {_seeds_text(sgd)}, tuned constant lr; a point counts "
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


CLAIMS: list[Callable[[Study, Store], Claim]] = [
    claim_oscillation,
    claim_momentum,
    claim_nesterov,
    claim_adagrad,
    claim_bias_correction,
    claim_schedules,
    claim_warmup,
    claim_local_minima,
]


def check_all(study: Study, store: Store) -> list[Claim]:
    return [check(study, store) for check in CLAIMS]

"""The study plan: which groups run on which problem, and which of them are compared.

A *group* is (problem, optimizer, schedule) with a learning-rate grid.  The protocol:

1. every lr of the grid (half a decade apart, centred on the problem's guess for
   that optimizer family) runs on seed 0 for the full number of steps; the lr with
   the lowest final validation loss wins (diverged runs count as infinitely bad);
   a winner at either end of the grid adds the next lr beyond it, up to
   :data:`~optimlab.lab.analysis.MAX_EXTEND` times per side;
2. the winner runs on the first ``looks[0]`` seeds (seed 0 is its grid run);
3. each *comparison* of two groups is decided from its paired seeds
   (:mod:`optimlab.lab.stats`); an undecided one gets more seeds, up to the next
   look, until it is decided or its last look is reached.

A group with ``lr_from`` is not tuned: it runs at another group's tuned lr (times
a scale) — the lecture's forms beside torch's with the same hyperparameters, and
Adam with its state or weights in low precision beside float32 Adam.

Which groups: every selected optimizer with the base schedule (``constant`` when
selected); on the problems where the profile compares schedules, its sweep
optimizers with those schedules; the profile's lecture forms and low-precision
variants.  Choosing
``--optimizers`` alone runs just those optimizers with the base schedule;
``--schedules`` compares those schedules everywhere; ``--cross`` runs every
optimizer with every schedule.  The plan is plain JSON, stored with the study.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from . import catalog, problems, train
from .config import Selection
from .profiles import PROFILES, Profile

__all__ = ["CONFIDENCE", "build_plan", "count_runs", "lr_grid", "study_key"]

#: every comparison is decided at this confidence, across all of its looks
CONFIDENCE = 0.95
#: problems where mini-batch noise makes runs differ between seeds (claims 2-4 use them)
STOCHASTIC = ("mnist1d_cnn", "digits_mlp", "digits_logreg", "quadratic_deep", "charlm")
#: which torch-form group each lecture form runs beside, and the section that compares them
FORM_SOURCE = {
    "momentum_lecture": ("momentum/step", "L1"),
    "nesterov_lookahead": ("nesterov/constant", "L2"),
    "adagrad_eps_inside": ("adagrad/constant", "L3"),
    "rmsprop_eps_inside": ("rmsprop/constant", "L3"),
}
#: claims that compare two constant-lr optimizers: (claim, candidate problems, a, b, metric);
#: the first candidate in the study where both run hosts the comparison
PAIRS = (
    ("1", ("ill_conditioned",), "momentum", "sgd", "steps"),
    ("2", STOCHASTIC, "momentum", "sgd", "steps"),
    ("3", STOCHASTIC, "nesterov", "momentum", "steps"),
    ("4", ("digits_mlp", "mnist1d_cnn", "quadratic_deep", "digits_logreg", "charlm"),
     "adagrad", "rmsprop", "decay"),
)  # fmt: skip
#: the claims that compare low-precision storage with float32: what is stored -> claim
PRECISION_CLAIMS = {"state": "P", "params": "P2"}
#: claim 1's figure: momentum at SGD's tuned lr, and at the lr that makes its long-run step
#: the same as SGD's (torch's buffer sums gradients: steps grow by 1 / (1 - 0.9) = 10)
SAME_LR = ("momentum/constant@sgd", "momentum/constant@sgd*0.1")


def lr_grid(center: float, points: int) -> list[float]:
    """``points`` learning rates half a decade apart around ``center``, to 3 significant digits."""
    half = (points - 1) / 2
    return [float(f"{center * 10 ** (0.5 * (k - half)):.3g}") for k in range(points)]


def _tuned(profile: Profile, sel: Selection, problem: str) -> list[tuple[str, str]]:
    optimizers = sel.optimizers or profile.problem_optimizers.get(problem, profile.optimizers)
    schedules = sel.schedules or profile.schedules
    base = "constant" if "constant" in schedules else schedules[0]
    if sel.cross:
        return [(o, s) for o in optimizers for s in schedules]
    pairs = [(o, base) for o in optimizers]
    if sel.schedules is not None:
        sweep = profile.sweeps.get(problem, ((), ("momentum", "adam")))[1]
        chosen = [o for o in sweep if o in optimizers] or list(optimizers[:1])
        pairs += [(o, s) for o in chosen for s in schedules if s != base]
    elif sel.optimizers is None:
        sweep_schedules, sweep_optimizers = profile.sweeps.get(problem, ((), ()))
        pairs += [(o, s) for o in sweep_optimizers for s in sweep_schedules if s != base]
    return pairs


def _specs(profile: Profile, sel: Selection, problem: str) -> list[tuple[str, str, Any]]:
    """(optimizer, schedule, lr_from) of every group on ``problem``."""
    tuned = _tuned(profile, sel, problem)
    names = {f"{o}/{s}" for o, s in tuned}
    specs: list[tuple[str, str, Any]] = [(o, s, None) for o, s in tuned]
    if sel.optimizers is None and sel.schedules is None and not sel.cross:
        beside = [(form, FORM_SOURCE[form][0]) for form in profile.forms.get(problem, ())]
        precisions = profile.precisions.get(problem, ())
        beside += [(v, f"{catalog.BESIDE[v]}/constant") for v in precisions]
        for variant, source in beside:
            optimizer, schedule = source.split("/")
            if source not in names:
                specs.append((optimizer, schedule, None))
                names.add(source)
            specs.append((variant, schedule, {"group": source, "scale": 1.0}))
    if problem == "ill_conditioned" and {"sgd/constant", "momentum/constant"} <= names:
        for name in SAME_LR:
            scale = float(name.partition("*")[2] or 1.0)
            specs.append(("momentum", "constant", {"group": "sgd/constant", "scale": scale}))
    return specs


def _name(optimizer: str, schedule: str, lr_from: Any) -> str:
    name = f"{optimizer}/{schedule}"
    if lr_from and optimizer not in catalog.BESIDE:
        scale = lr_from["scale"]
        name += f"@{lr_from['group'].split('/')[0]}" + (f"*{scale:g}" if scale != 1 else "")
    return name


def _comparisons(plan_problems: list[dict[str, Any]]) -> None:
    """Add each problem's ``comparisons``: the claims' pairs, schedules, and lecture forms."""
    groups = {p["name"]: {g["name"] for g in p["groups"]} for p in plan_problems}
    by_name = {p["name"]: p for p in plan_problems}

    def add(problem: str, claim: str, a: str, b: str, metric: str, sequential: bool = True,
            **extra: Any) -> None:  # fmt: skip
        p = by_name[problem]
        looks = p["looks"] if sequential else p["looks"][:1]
        p["comparisons"].append(
            {"claim": claim, "a": a, "b": b, "metric": metric, "looks": list(looks), **extra}
        )

    for claim, candidates, a, b, metric in PAIRS:
        pair = {f"{a}/constant", f"{b}/constant"}
        host = next((c for c in candidates if c in groups and pair <= groups[c]), None)
        if host:
            add(host, claim, f"{a}/constant", f"{b}/constant", metric)
    for name, names in groups.items():
        exact_2d = problems.get(name).is_2d and not name.endswith("_noisy")
        for o in catalog.OPTIMIZERS:
            for base, decaying in (("constant", catalog.DECAYING), ("warmup_constant",
                                   tuple(f"warmup_{s}" for s in catalog.DECAYING))):  # fmt: skip
                for s in decaying:  # (on an exact 2-D function only the lecture forms decay)
                    if {f"{o}/{s}", f"{o}/{base}"} <= names and not exact_2d:
                        add(name, "6a", f"{o}/{s}", f"{o}/{base}", "final_train_loss")
            if name == "charlm":
                for s in ("constant", *catalog.DECAYING):
                    if {f"{o}/warmup_{s}", f"{o}/{s}"} <= names:
                        add(name, "6b", f"{o}/warmup_{s}", f"{o}/{s}", "final_train_loss")
        for variant, (source, stored) in catalog.PRECISIONS.items():
            if {f"{variant}/constant", f"{source}/constant"} <= names:
                # the transformer's runs are costly and its seed spread narrow: 6 seeds do not
                # bring an interval inside it, 10 decided bf16 state (measured, 600 steps), so
                # seeds are added only where the profile goes to 10 (full); else one look
                sequential = name != "charlm" or by_name[name]["looks"][-1] >= 10
                add(name, PRECISION_CLAIMS[stored], f"{variant}/constant", f"{source}/constant",
                    "final_loss", sequential=sequential, margin="seed_sd")  # fmt: skip
        for form, (source, section) in FORM_SOURCE.items():
            schedule = source.split("/")[1]
            if f"{form}/{schedule}" in names and not problems.get(name).is_2d:
                # ε's placement is compared on the cheap digits MLP, seeds added as needed
                add(name, section, f"{form}/{schedule}", source, "final_train_loss",
                    sequential=section == "L3")  # fmt: skip


def build_plan(sel: Selection) -> dict[str, Any]:
    """The study for a selection: JSON-ready, stored with the study, read back by the report."""
    profile = PROFILES[sel.profile]
    plan_problems = []
    for name in sel.problems or profile.problems:
        problem = problems.get(name)
        steps = sel.steps.get(name, profile.steps[name])
        if sel.seeds is not None:
            seeds, looks = list(sel.seeds), [len(sel.seeds)]
        else:
            looks = list(profile.problem_looks.get(name, profile.looks))
            seeds = list(range(looks[-1]))
        points = sel.grid_points or profile.problem_grid.get(name, profile.grid_points)
        settings = {**problem.settings, **profile.settings.get(name, {})}
        groups = []
        for optimizer, schedule, lr_from in _specs(profile, sel, name):
            config = train.group_config(name, settings, optimizer, schedule, steps)
            family = catalog.OPTIMIZERS[optimizer].family
            groups.append(
                {
                    "name": _name(optimizer, schedule, lr_from),
                    "optimizer": optimizer,
                    "schedule": schedule,
                    "group_key": train.run_key(config),
                    "grid": [] if lr_from else lr_grid(problem.lr_center[family], points),
                    "lr_from": lr_from,
                    "config": config,
                }
            )
        plan_problems.append(
            {
                "name": name,
                "steps": steps,
                "seeds": seeds,
                "looks": looks,
                "groups": groups,
                "comparisons": [],
            }  # fmt: skip
        )
    _comparisons(plan_problems)
    return {"profile": profile.name, "confidence": CONFIDENCE, "problems": plan_problems}


def upgrade(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A plan as this version reads it; one written by the lab's first edition (no group
    names, looks or comparisons: every seed run at once) gets them, derived as now."""
    plan = copy.deepcopy(dict(plan))
    if all("comparisons" in p for p in plan["problems"]):
        return plan
    for p in plan["problems"]:
        p.setdefault("looks", [len(p["seeds"])])
        for g in p["groups"]:
            g.setdefault("name", f"{g['optimizer']}/{g['schedule']}")
            g.setdefault("lr_from", None)
        p["comparisons"] = []
    _comparisons(plan["problems"])
    plan.setdefault("confidence", CONFIDENCE)
    return plan


def study_key(plan: Mapping[str, Any]) -> str:
    return hashlib.sha256(train.canonical(plan).encode()).hexdigest()[:16]


def count_runs(plan: Mapping[str, Any]) -> tuple[int, int]:
    """(runs at the first look, runs if every comparison needed all of its seeds).

    Grid extensions (a tuned lr at the edge of its grid) can add a few more.
    """
    low = high = 0
    for p in plan["problems"]:
        first = p["looks"][0]
        most = _seeds_needed(p)
        for g in p["groups"]:
            grid = len(g["grid"])
            low += grid + first - (1 if grid else 0)
            high += grid + most.get(g["name"], first) - (1 if grid else 0)
    return low, high


def _seeds_needed(problem: Mapping[str, Any]) -> dict[str, int]:
    """The most seeds each group can need: its comparisons' last looks."""
    need: dict[str, int] = {}
    for c in problem["comparisons"]:
        for name in (c["a"], c["b"]):
            need[name] = max(need.get(name, 0), c["looks"][-1])
    return need


def groups_by_name(problem: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {g["name"]: g for g in problem["groups"]}


def seeds_of(problem: Mapping[str, Any], n: int) -> Sequence[int]:
    return problem["seeds"][:n]

"""Profiles, the user's selection (command line and config file), and the study plan.

A *study* is a list of groups — (problem, optimizer, schedule) — each with a
learning-rate grid, plus a list of seeds.  The protocol for every group:

1. run every lr of the grid (half a decade apart, centred on the problem's
   guess for that optimizer family) on seed 0, for the full number of steps;
2. pick the lr with the lowest final validation loss (diverged runs count as
   infinitely bad);
3. run that lr on the other seeds.  Its seed-0 run is the grid run itself.

Which groups a profile runs: every selected optimizer with the base schedule
(``constant`` when selected), and on the problems where the profile compares
schedules, the profile's schedule optimizers with each of those schedules.
Selecting ``--schedules`` compares those schedules on every selected problem;
``--cross`` runs every optimizer with every schedule everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from . import catalog, problems, train

__all__ = ["PROFILES", "ConfigError", "Profile", "Selection", "build_plan", "load_config_file"]

TWO_D = ("rosenbrock", "beale", "saddle", "ill_conditioned", "rastrigin")
ALL_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adam_nobc", "adamw")
SWEEP = ("step", "cosine", "linear", "inv_sqrt")


class ConfigError(ValueError):
    """A bad name, value or config file; the message is one line for the user."""


@dataclass(frozen=True)
class Profile:
    name: str
    help: str
    problems: tuple[str, ...]
    steps: Mapping[str, int]
    seeds: tuple[int, ...]
    grid_points: int
    optimizers: tuple[str, ...] = ALL_OPTIMIZERS
    schedules: tuple[str, ...] = tuple(catalog.SCHEDULES)
    #: problem -> the optimizers run there (default: all selected), to fit the budget
    problem_optimizers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: problem -> fewer seeds or grid points where runs are expensive (the transformer)
    problem_seeds: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    problem_grid: Mapping[str, int] = field(default_factory=dict)
    #: problem -> (schedules compared there, optimizers used for the comparison)
    sweeps: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)


def _steps(two_d: int, quad: int, digits: int, mnist: int, lm: int) -> dict[str, int]:
    out = {n: two_d for base in TWO_D for n in (base, f"{base}_noisy")}
    out.update(quadratic_deep=quad, digits_logreg=digits, digits_mlp=digits)
    out.update(mnist1d_cnn=mnist, charlm=lm)
    return out


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "quick",
            "about 2 minutes on 2 cores: the 2-D functions, the quadratic, the digits MLP, "
            "MNIST-1D and the LM, short runs, 3 seeds, a 5-point lr grid (3 for MNIST-1D, LM)",
            problems=(*TWO_D, "quadratic_deep", "digits_mlp", "mnist1d_cnn", "charlm"),
            steps=_steps(200, 300, 300, 250, 100),
            seeds=(0, 1, 2),
            grid_points=5,
            problem_grid={"mnist1d_cnn": 3, "charlm": 3},
            problem_optimizers={
                "mnist1d_cnn": ("sgd", "momentum", "nesterov", "adam"),
                "charlm": ("adam",),
            },
            sweeps={
                "digits_mlp": (SWEEP, ("momentum",)),
                "charlm": (("warmup_constant",), ("adam",)),
            },
        ),
        Profile(
            "default",
            "about 10 minutes on 2 cores: every problem and optimizer, schedules compared on "
            "the quadratic, digits MLP, MNIST-1D and the LM, 5 seeds (LM 3), a 5-point lr grid",
            problems=tuple(problems.names()),
            steps=_steps(250, 500, 400, 600, 200),
            seeds=(0, 1, 2, 3, 4),
            grid_points=5,
            problem_optimizers={"charlm": ("sgd", "momentum", "adam", "adam_nobc", "adamw")},
            problem_seeds={"charlm": (0, 1, 2)},
            problem_grid={"charlm": 5},
            sweeps={
                "quadratic_deep": (SWEEP, ("momentum", "adam")),
                "digits_mlp": (SWEEP, ("momentum", "adam")),
                "mnist1d_cnn": (SWEEP + ("warmup_cosine",), ("momentum",)),
                "charlm": (("warmup_constant", "cosine", "warmup_cosine"), ("adam",)),
            },
        ),
        Profile(
            "full",
            "about an hour on 2 cores: longer runs, every optimizer on every problem, every "
            "schedule with momentum and Adam, 5 seeds (LM 3), a 7-point grid (LM 5)",
            problems=tuple(problems.names()),
            steps=_steps(500, 1000, 1500, 2000, 600),
            seeds=(0, 1, 2, 3, 4),
            grid_points=7,
            problem_seeds={"charlm": (0, 1, 2)},
            problem_grid={"charlm": 5},
            sweeps={
                name: (tuple(catalog.SCHEDULES)[1:], ("momentum", "adam"))
                for name in (
                    "quadratic_deep",
                    "digits_logreg",
                    "digits_mlp",
                    "mnist1d_cnn",
                    "charlm",
                )
            },
        ),
    )
}


@dataclass(frozen=True)
class Selection:
    """What the user chose; ``None`` means "the profile's default"."""

    profile: str = "default"
    problems: tuple[str, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    schedules: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    grid_points: int | None = None
    steps: Mapping[str, int] = field(default_factory=dict)
    cross: bool = False


def _names(kind: str, value: Any, choices: Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{kind}s must be a comma-separated list of names, got {value!r}")
    out = []
    for item in items:
        name = str(item).strip()
        if name not in choices:
            raise ConfigError(f"unknown {kind} {name!r}; choose from: {', '.join(choices)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"no {kind} selected; choose from: {', '.join(choices)}")
    return tuple(out)


def _seeds(value: Any) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        seeds = tuple(dict.fromkeys(int(str(s).strip()) for s in items))
    except (TypeError, ValueError):
        raise ConfigError(
            f"seeds must be non-negative integers like 0,1,2, got {value!r}"
        ) from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"seeds must be non-negative integers like 0,1,2, got {value!r}")
    if 0 not in seeds:
        raise ConfigError("seeds must include 0 (the learning rate is tuned on seed 0)")
    return tuple(sorted(seeds))


def _positive_int(name: str, value: Any, odd: bool = False) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 1
        or (odd and value % 2 == 0)
    ):
        kind = "an odd positive integer" if odd else "a positive integer"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return value


def make_selection(
    profile: str = "default",
    problems_: Any = None,
    optimizers: Any = None,
    schedules: Any = None,
    seeds: Any = None,
    grid_points: Any = None,
    steps: Any = None,
    cross: bool = False,
) -> Selection:
    """Validate the user's choices (from the command line or a file) into a :class:`Selection`."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from: {', '.join(PROFILES)}")
    known = problems.names()
    step_map: dict[str, int] = {}
    if isinstance(steps, int) and not isinstance(steps, bool):
        step_map = {n: _positive_int("steps", steps) for n in known}
    elif isinstance(steps, Mapping):
        for name, n in steps.items():
            _names("problem", [name], known)
            step_map[name] = _positive_int(f"steps for {name}", n)
    elif steps is not None:
        raise ConfigError(f"steps must be an integer or a table problem = steps, got {steps!r}")
    return Selection(
        profile=profile,
        problems=None if problems_ is None else _names("problem", problems_, known),
        optimizers=None
        if optimizers is None
        else _names("optimizer", optimizers, list(catalog.OPTIMIZERS)),
        schedules=None
        if schedules is None
        else _names("schedule", schedules, list(catalog.SCHEDULES)),
        seeds=None if seeds is None else _seeds(seeds),
        grid_points=None
        if grid_points is None
        else _positive_int("grid_points", grid_points, True),
        steps=step_map,
        cross=bool(cross),
    )


#: keys a config file may hold (besides these: out, db, gif, which the CLI reads)
FILE_KEYS = ("profile", "problems", "optimizers", "schedules", "seeds", "grid_points", "steps",
             "cross", "out", "db", "gif")  # fmt: skip


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a .json or .toml config file into a dict of known keys; ConfigError otherwise."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text.decode())
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .json or .toml")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"bad config file {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"bad config file {path}: expected a table/object of settings")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(
            f"bad config file {path}: unknown key {unknown[0]!r}; accepted: {', '.join(FILE_KEYS)}"
        )
    return data


def lr_grid(center: float, points: int) -> list[float]:
    """``points`` learning rates half a decade apart around ``center``, to 3 significant digits."""
    half = (points - 1) / 2
    return [float(f"{center * 10 ** (0.5 * (k - half)):.3g}") for k in range(points)]


def _groups(profile: Profile, sel: Selection, problem: str) -> list[tuple[str, str]]:
    optimizers = sel.optimizers or profile.problem_optimizers.get(problem, profile.optimizers)
    schedules = sel.schedules or profile.schedules
    base = "constant" if "constant" in schedules else schedules[0]
    if sel.cross:
        return [(o, s) for o in optimizers for s in schedules]
    if sel.schedules is not None:
        sweep_schedules = schedules
        sweep_optimizers: Sequence[str] = profile.sweeps.get(problem, ((), ("momentum", "adam")))[1]
    else:
        sweep_schedules, sweep_optimizers = profile.sweeps.get(problem, ((), ()))
    chosen = [o for o in sweep_optimizers if o in optimizers] or (
        list(optimizers[:1]) if sel.schedules is not None else []
    )
    groups = [(o, base) for o in optimizers]
    groups += [(o, s) for o in chosen for s in sweep_schedules if s != base and s in schedules]
    return groups


def build_plan(sel: Selection) -> dict[str, Any]:
    """The study for a selection: JSON-ready, stored with the study, read back by the report."""
    profile = PROFILES[sel.profile]
    plan_problems = []
    for name in sel.problems or profile.problems:
        problem = problems.get(name)
        steps = sel.steps.get(name, profile.steps[name])
        seeds = sel.seeds or profile.problem_seeds.get(name, profile.seeds)
        points = sel.grid_points or profile.problem_grid.get(name, profile.grid_points)
        settings = dict(problem.settings)
        groups = []
        for optimizer, schedule in _groups(profile, sel, name):
            config = train.group_config(name, settings, optimizer, schedule, steps)
            family = catalog.OPTIMIZERS[optimizer].family
            groups.append(
                {
                    "optimizer": optimizer,
                    "schedule": schedule,
                    "group_key": train.run_key(config),
                    "grid": lr_grid(problem.lr_center[family], points),
                    "config": config,
                }
            )
        plan_problems.append({"name": name, "steps": steps, "seeds": list(seeds), "groups": groups})
    return {
        "profile": profile.name,
        "seeds": list(sel.seeds or profile.seeds),
        "problems": plan_problems,
    }


def study_key(plan: Mapping[str, Any]) -> str:
    return hashlib.sha256(train.canonical(plan).encode()).hexdigest()[:16]


def count_runs(plan: Mapping[str, Any]) -> int:
    return sum(len(g["grid"]) + len(p["seeds"]) - 1 for p in plan["problems"] for g in p["groups"])


def estimate_seconds(plan: Mapping[str, Any]) -> float:
    """A rough duration from each problem's cost per step (measured on one core)."""
    total = 0.0
    for p in plan["problems"]:
        cost = problems.get(p["name"]).step_ms * p["steps"] / 1000 + 0.02
        total += cost * sum(len(g["grid"]) + len(p["seeds"]) - 1 for g in p["groups"])
    return total

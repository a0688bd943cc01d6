"""The three studies the lab ships: quick, default and full.

A profile says which problems run, for how many steps, with which optimizers,
where schedules are compared, where the lecture's forms run beside torch's,
and how many seeds a comparison may use: ``looks`` are the seed counts at
which a comparison is decided if it can be (see :mod:`optimlab.lab.stats`).
How long a profile takes is measured, not written here: ``optimlab lab
--dry-run`` times a few steps of every problem on this machine and says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import catalog, problems

__all__ = ["ALL_OPTIMIZERS", "PROFILES", "Profile", "SWEEP", "TWO_D"]

TWO_D = ("rosenbrock", "beale", "saddle", "ill_conditioned", "rastrigin")
ALL_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adam_nobc", "adamw")
SWEEP = ("step", "cosine", "linear", "inv_sqrt")
ALL_FORMS = tuple(catalog.FORMS)
STATE = tuple(n for n, (_, stored) in catalog.PRECISIONS.items() if stored == "state")
PARAMS = tuple(n for n, (_, stored) in catalog.PRECISIONS.items() if stored == "params")
#: MNIST-1D's CNN has no tensor of 4,096 elements, the smallest optimlab quantizes: its 8-bit
#: state would be float32 state, the same runs again; the transformer's is quantized
MNIST1D_PRECISIONS = ("adam_bf16_state", *PARAMS)


@dataclass(frozen=True)
class Profile:
    name: str
    help: str
    problems: tuple[str, ...]
    steps: Mapping[str, int]
    #: seed counts at which a comparison is looked at; the last is the most seeds it gets
    looks: tuple[int, ...]
    grid_points: int
    optimizers: tuple[str, ...] = ALL_OPTIMIZERS
    schedules: tuple[str, ...] = tuple(catalog.SCHEDULES)
    #: problem -> the optimizers run there (default: all selected), to fit the budget
    problem_optimizers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: problem -> fewer looks or grid points where runs are expensive (the transformer)
    problem_looks: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    problem_grid: Mapping[str, int] = field(default_factory=dict)
    #: problem -> (schedules compared there, optimizers used for the comparison)
    sweeps: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    #: problem -> the lecture's forms run there beside torch's (catalog.FORMS)
    forms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: problem -> low-precision variants of Adam run there beside float32 Adam
    #: (catalog.PRECISIONS)
    precisions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: problem -> settings that differ from the problem's own (the paper's batch size)
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


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
            "a first look: the exact 2-D functions, the quadratic, the digits MLP, MNIST-1D "
            "and the transformer, short runs, 3 seeds (6 where a comparison needs them)",
            problems=(*TWO_D, "quadratic_deep", "digits_mlp", "mnist1d_cnn", "charlm"),
            steps=_steps(200, 300, 300, 300, 100),
            looks=(3, 6),
            grid_points=5,
            problem_grid={"mnist1d_cnn": 3, "charlm": 3},
            problem_looks={"charlm": (3,)},
            problem_optimizers={
                "mnist1d_cnn": ("sgd", "momentum", "nesterov", "adam"),
                "charlm": ("adam",),
            },
            sweeps={
                "digits_mlp": (SWEEP, ("momentum",)),
                "charlm": (("warmup_constant",), ("adam",)),
            },
            forms={"ill_conditioned": ALL_FORMS[:2], "digits_mlp": ALL_FORMS},
            precisions={"mnist1d_cnn": MNIST1D_PRECISIONS, "charlm": ("adam_8bit_state",)},
        ),
        Profile(
            "default",
            "every problem and optimizer; schedules compared on the quadratic, the digits MLP, "
            "MNIST-1D and the transformer (600 steps: shorter runs hide the schedules' effect); "
            "Adam's state and weights in low precision on MNIST-1D and the transformer; 3 seeds, "
            "then 5, 10, 15 while a comparison is undecided (MNIST-1D 5, 10, 15; transformer 3, "
            "6)",
            problems=tuple(problems.names()),
            steps=_steps(250, 500, 400, 600, 600),
            # a first look at 3 seeds: replayed on the runs of a study with looks 5, 10, 15,
            # 14 of the 20 sequential comparisons outside MNIST-1D and the transformer decide
            # there (47 s less); none of MNIST-1D's did, so it keeps its first look at 5
            looks=(3, 5, 10, 15),
            grid_points=5,
            problem_grid={"charlm": 3},
            problem_looks={"charlm": (3, 6), "mnist1d_cnn": (5, 10, 15)},
            problem_optimizers={"charlm": ("adam",)},
            sweeps={
                "quadratic_deep": (SWEEP, ("momentum", "adam")),
                "digits_mlp": (SWEEP, ("momentum", "adam")),
                "mnist1d_cnn": (SWEEP, ("momentum",)),
                "charlm": (("cosine", "warmup_constant"), ("adam",)),
            },
            forms={
                "ill_conditioned": ALL_FORMS[:2],
                "digits_mlp": ALL_FORMS[2:],
                "mnist1d_cnn": ALL_FORMS[:2],
            },
            precisions={"mnist1d_cnn": MNIST1D_PRECISIONS, "charlm": STATE},
        ),
        Profile(
            "full",
            "longer runs (MNIST-1D: 6,000 steps of batches of 100, as its paper trains), every "
            "optimizer on every problem, more schedules, a 7-point lr grid, 5 seeds, up to 30",
            problems=tuple(problems.names()),
            steps=_steps(500, 1000, 1500, 6000, 1500),
            looks=(5, 10, 20, 30),
            grid_points=7,
            problem_grid={"charlm": 3, "mnist1d_cnn": 5},
            problem_looks={"charlm": (3, 6, 10), "mnist1d_cnn": (5, 10, 15)},
            problem_optimizers={"charlm": ("sgd", "momentum", "adam", "adam_nobc", "adamw")},
            sweeps={
                "quadratic_deep": (tuple(catalog.SCHEDULES)[1:], ("momentum", "adam")),
                "digits_logreg": (SWEEP, ("momentum", "adam")),
                "digits_mlp": (tuple(catalog.SCHEDULES)[1:], ("momentum", "adam")),
                "mnist1d_cnn": (SWEEP + ("warmup_cosine",), ("momentum", "adam")),
                "charlm": (("cosine", "warmup_constant", "warmup_cosine"), ("adam",)),
            },
            forms={
                "ill_conditioned": ALL_FORMS[:2],
                "digits_mlp": ALL_FORMS[2:],
                "mnist1d_cnn": ALL_FORMS,
            },
            precisions={"mnist1d_cnn": MNIST1D_PRECISIONS, "charlm": STATE},
            settings={"mnist1d_cnn": {"batch_size": 100}},
        ),
    )
}

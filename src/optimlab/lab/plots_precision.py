"""The low-precision figures: each variant beside float32 Adam, and how far each one ends
from it, seed by seed, against the margin of the equivalence rule (claims P and P2)."""

from __future__ import annotations

from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from . import problems
from .analysis import Group, Study
from .compare import Comparison, study_comparisons
from .plots import _PALETTE, color, figure_bytes, finish, legend_outside, plot_group
from .store import Store

__all__ = ["equivalence"]

#: one colour and a short name per variant; float32 Adam keeps its colour of every figure
VARIANTS = {
    "adam_bf16_state": (_PALETTE[0], "bf16 state"),
    "adam_8bit_state": (_PALETTE[2], "8-bit state"),
    "adam_bf16_nearest": (_PALETTE[3], "nearest"),
    "adam_bf16_stochastic": (_PALETTE[4], "stochastic"),
    "adam_bf16_kahan": (_PALETTE[9], "Kahan"),
}


def equivalence(study: Study, store: Store, claim: str) -> bytes | None:
    """A row per problem: the validation loss of float32 Adam and each variant over the run;
    beside it each variant's final loss minus float32's per seed, the interval of the mean
    difference, and the margin it is judged against."""
    found = [c for c in study_comparisons(study) if c.claim == claim and c.pairs(store)]
    if not found:
        return None
    by_problem: dict[str, list[Comparison]] = {}
    for c in found:
        by_problem.setdefault(c.problem, []).append(c)
    rows = len(by_problem)
    fig, grid = plt.subplots(rows, 2, figsize=(11.0, 3.1 * rows), squeeze=False,
                             layout="constrained", width_ratios=(1.5, 1))  # fmt: skip
    for (ax_curve, ax_diff), (problem, cs) in zip(grid, by_problem.items(), strict=True):
        _curves(ax_curve, store, problem, cs)
        _differences(ax_diff, store, problem, cs)
    legend_outside(fig, [ax for row in grid for ax in row])
    return figure_bytes(fig)


def _curves(ax, store: Store, problem: str, cs: list[Comparison]) -> None:
    p = problems.get(problem)
    n = min(len(c.pairs(store)) for c in cs)
    fp32 = cs[0].b
    plot_group(ax, store, _first(fp32, n), "val_loss", f"{fp32.label} (float32)",
               color(fp32.optimizer), scale=p.loss_scale)  # fmt: skip
    for c in cs:  # dashed: a variant that matches float32 leaves it visible
        plot_group(ax, store, _first(c.a, n), "val_loss", c.a.label, VARIANTS[c.a.optimizer][0],
                   scale=p.loss_scale, band=False, linestyle="--")  # fmt: skip
    unit = f" ({p.loss_unit})" if p.loss_unit else ""
    finish(ax, "step", f"validation loss{unit}", log=True)
    steps = cs[0].a.steps
    ax.set_xlim(0, steps * 1.02)
    ax.set_title(f"{p.title.split(' (')[0]} — mean of {n} seeds, lr {fp32.best_lr:g}", fontsize=9)


def _first(group: Group, n: int) -> Group:
    """The group with only its first ``n`` seeds (those every variant ran too)."""
    return replace(group, seeds=group.seeds[:n])


def _differences(ax, store: Store, problem: str, cs: list[Comparison]) -> None:
    scale = problems.get(problem).loss_scale
    for x, c in enumerate(cs):
        d = c.decision(store)
        diffs = np.array([a - b for a, b in c.pairs(store)]) * scale
        jitter = np.linspace(-0.12, 0.12, len(diffs)) if len(diffs) > 1 else np.zeros(1)
        colour = VARIANTS[c.a.optimizer][0]
        ax.plot(x + jitter, diffs, "o", ms=3.5, color=colour, alpha=0.7)
        if not diffs.any():
            ax.annotate("the same runs", (x, 0), xytext=(0, 6), textcoords="offset points",
                        ha="center", fontsize=8)  # fmt: skip
        if d is None:
            continue
        m = d.margin * scale
        if np.isfinite(m):
            ax.add_patch(Rectangle((x - 0.4, -m), 0.8, 2 * m, color="0.88", zorder=0, lw=0))
        iv = d.interval
        if np.isfinite(iv.lo):
            ax.plot([x + 0.25] * 2, [iv.lo * scale, iv.hi * scale], color=colour, lw=3,
                    solid_capstyle="butt")  # fmt: skip
        ax.plot([x + 0.25], [iv.mean * scale], "_", ms=12, mew=2, color="k")
    ax.axhline(0, color="k", lw=0.8)
    finish(ax, "", "final validation loss − float32's")
    ax.set_xticks(range(len(cs)), [VARIANTS[c.a.optimizer][1] for c in cs], fontsize=8)
    ax.set_xlim(-0.5, len(cs) - 0.5)

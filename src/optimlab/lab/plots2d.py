"""The report's 2-D figures: paths over contours, claim 1's comparison, the lecture's forms."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from . import catalog, problems
from .analysis import Group, Study
from .claims.forms import decay_step
from .plots import (
    color,
    figure_bytes,
    finish,
    legend_outside,
    loss_label,
    new_figure,
    plot_group,
    shift_of,
    style,
)
from .store import Store

__all__ = ["claim1", "contour", "form_eps", "form_nesterov", "form_velocity", "trajectories"]


def contour(ax: plt.Axes, p: problems.Problem) -> None:
    x0, x1, y0, y1 = p.bounds
    xs, ys = np.meshgrid(np.linspace(x0, x1, 160), np.linspace(y0, y1, 160))
    z = p.function(torch.from_numpy(xs), torch.from_numpy(ys)).numpy()
    z = z - z.min() + 1e-3
    ax.contour(xs, ys, z, levels=np.geomspace(z.min() * 10, z.max(), 16), colors="0.75",
               linewidths=0.6)  # fmt: skip
    for m in p.minima:
        ax.plot(*m, "*", color="gold", ms=11, mec="k", mew=0.6, zorder=5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.tick_params(labelsize=7)


def _path(store: Store, group: Group | None, seed: int = 0) -> np.ndarray | None:
    run = group.seed_runs.get(seed) if group is not None else None
    if run is None:
        return None
    return store.array(run.key, "trajectory")


def _draw_path(ax: plt.Axes, traj: np.ndarray, colour, label: str | None = None,
               ls: str = "-", steps: int | None = None) -> None:  # fmt: skip
    traj = traj if steps is None else traj[: steps + 1]
    for k in range(traj.shape[1]):
        ax.plot(traj[:, k, 0], traj[:, k, 1], ls, color=colour, lw=1.1, marker=".", ms=2.5,
                label=label if k == 0 else None)  # fmt: skip
        ax.plot(traj[0, k, 0], traj[0, k, 1], "s", color="k", ms=3)
        ax.plot(traj[-1, k, 0], traj[-1, k, 1], "o", color=colour, ms=4, mec="k", mew=0.4)


def trajectories(study: Study, store: Store, problem: str) -> bytes | None:
    """One contour panel per optimizer (tuned, constant lr) with its seed-0 path(s)."""
    p = problems.get(problem)
    groups = [g for g in study.of(problem)
              if g.schedule == "constant" and g.tuned and _path(store, g) is not None]  # fmt: skip
    if not groups or not p.is_2d:
        return None
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.5 * rows), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")  # fmt: skip
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    for ax, g in zip(axes.flat, groups, strict=False):
        contour(ax, p)
        _draw_path(ax, _path(store, g), color(g.optimizer))
        status = " (diverged)" if g.seed_runs[0].diverged else ""
        ax.set_title(f"{g.label}, lr {g.best_lr:g}{status}", fontsize=8)
    return figure_bytes(fig)


def claim1(study: Study, store: Store, problem: str = "ill_conditioned") -> bytes | None:
    """SGD and momentum at the same lr, at the same long-run step, and each at its tuned lr."""
    p = problems.get(problem)
    sgd, momentum = study.find(problem, "sgd"), study.find(problem, "momentum")
    same = study.group(problem, "momentum/constant@sgd")
    tenth = study.group(problem, "momentum/constant@sgd*0.1")
    if sgd is None or momentum is None or _path(store, sgd) is None:
        return None
    panels = [
        (lambda: f"the same lr, {sgd.best_lr:g}", sgd, same),
        (lambda: f"momentum at lr/10 = {tenth.best_lr:g}: the same long-run step", sgd, tenth),
        (lambda: "each at its tuned lr", sgd, momentum),
    ]
    panels = [(t(), a, b) for t, a, b in panels if b is not None and _path(store, b) is not None]
    if same is not None and abs(momentum.best_lr / sgd.best_lr - 1) < 0.2:
        panels = panels[1:]  # the tuned lrs are (nearly) the same: the last panel shows it
    fig, axes = new_figure(3.5 * len(panels) + 1.6, 2.9, len(panels), sharey=True)
    steps = 80
    for ax, (title, a, b) in zip(axes, panels, strict=True):
        contour(ax, p)
        for g in (a, b):
            name = "SGD" if g.optimizer == "sgd" else "SGD + momentum"
            _draw_path(ax, _path(store, g), color(g.optimizer), name, steps=steps)
        ax.set_title(f"{title}\n(SGD lr {a.best_lr:g}, momentum lr {b.best_lr:g})", fontsize=8)
    legend_outside(fig, axes)
    fig.suptitle(f"{p.title}: the first {steps} steps from the black square", fontsize=9)
    return figure_bytes(fig)


def _pick(study: Study, problem: str, names: tuple[str, str]) -> tuple[Group | None, ...]:
    return tuple(study.group(problem, n) for n in names)


def _real_problem(study: Study, section: str) -> str | None:
    for p in study.plan["problems"]:
        if any(c["claim"] == section for c in p.get("comparisons", ())):
            return p["name"]
    return None


def form_velocity(study: Study, store: Store, problem: str) -> bytes | None:
    """L1: both momentum forms with a step decay: distance, step length, a real model."""
    torch_form, lecture = _pick(study, problem, ("momentum/step", "momentum_lecture/step"))
    a, b = _path(store, torch_form), _path(store, lecture)
    if a is None or b is None:
        return None
    real = _real_problem(study, "L1")
    fig, axes = new_figure(11.5 if real else 8.4, 2.9, 3 if real else 2)
    d = decay_step(torch_form.steps)
    p = problems.get(problem)
    for g, traj in ((torch_form, a), (lecture, b)):
        w = torch.tensor(traj[:, 0, :])
        gap = p.value(w).numpy() - (p.optimum or 0.0)
        steps = np.linalg.norm(np.diff(traj[:, 0, :], axis=0), axis=1)
        axes[0].plot(gap, ls=style(g.optimizer), color=_form_color(g), lw=1.3, label=g.label)
        axes[1].plot(steps, ls=style(g.optimizer), color=_form_color(g), lw=1.3)
    finish(axes[0], "step", "f − f*", log=True)
    finish(axes[1], "step", "step length |Δw|", log=True)
    axes[0].set_title(p.title, fontsize=9)
    axes[1].set_title(p.title, fontsize=9)
    if real:
        groups = _pick(study, real, ("momentum/step", "momentum_lecture/step"))
        rp = problems.get(real)
        for g in groups:
            if g is not None:
                plot_group(axes[2], store, g, "val_loss", g.label, _form_color(g),
                           shift_of(real), rp.loss_scale, linestyle=style(g.optimizer))  # fmt: skip
        finish(axes[2], "step", loss_label(real), log=True)
        axes[2].set_title(rp.title, fontsize=9)
        for x in (decay_step(groups[0].steps), 2 * decay_step(groups[0].steps)):
            axes[2].axvline(x, color="k", ls=":", lw=0.8)
    for ax in axes[:2]:
        for x in (d, 2 * d):
            ax.axvline(x, color="k", ls=":", lw=0.8)
    legend_outside(fig, axes)
    return figure_bytes(fig)


def _form_color(g: Group):
    """Torch's form in black, the lecture's in its optimizer's colour: two lines to tell apart."""
    return color(g.optimizer) if g.optimizer in catalog.FORMS else "0.2"


def form_nesterov(study: Study, store: Store, problem: str) -> bytes | None:
    """L2: torch's Nesterov path with the lecture's look-ahead points on it; a real model."""
    reform, look = _pick(study, problem, ("nesterov/constant", "nesterov_lookahead/constant"))
    a, b = _path(store, reform), _path(store, look)
    if a is None or b is None:
        return None
    real = _real_problem(study, "L2")
    fig, axes = new_figure(9.6 if real else 5.8, 3.0, 2 if real else 1)
    p = problems.get(problem)
    contour(axes[0], p)
    steps = 40
    w = b[: steps + 1, 0, :]
    ahead = w[1:] + 0.9 * (w[1:] - w[:-1])
    axes[0].plot(
        a[: steps + 1, 0, 0],
        a[: steps + 1, 0, 1],
        "-",
        color="0.2",
        lw=1.2,
        label=f"torch's form: its weights ({reform.label}, lr {reform.best_lr:g})",
    )
    axes[0].plot(
        w[:, 0],
        w[:, 1],
        "--",
        color=color("nesterov_lookahead"),
        lw=1.2,
        label="the lecture's form: its weights w",
    )
    axes[0].plot(ahead[:, 0], ahead[:, 1], "x", color=color("nesterov_lookahead"), ms=5,
                 label="the lecture's look-ahead points w + βv")  # fmt: skip
    axes[0].set_title(f"{p.title}: the first {steps} steps", fontsize=9)
    if real:
        rp = problems.get(real)
        for g in _pick(study, real, ("nesterov/constant", "nesterov_lookahead/constant")):
            if g is not None:
                plot_group(axes[1], store, g, "val_loss", g.label, _form_color(g),
                           shift_of(real), rp.loss_scale, linestyle=style(g.optimizer))  # fmt: skip
        finish(axes[1], "step", loss_label(real), log=True)
        axes[1].set_title(rp.title, fontsize=9)
    legend_outside(fig, axes)
    return figure_bytes(fig)


def form_eps(study: Study, store: Store, problem: str) -> bytes | None:
    """L3: the step multiplier of both ε placements, and the paired final losses."""
    pairs = [
        _pick(study, problem, (f"{o}/constant", f"{o}_eps_inside/constant"))
        for o in ("adagrad", "rmsprop")
    ]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None and a.runs and b.runs]
    if not pairs:
        return None
    fig, axes = new_figure(10.5, 3.0, 2)
    root_s = np.geomspace(1e-7, 1e-1, 300)
    for name, eps in (("adagrad", 1e-10), ("rmsprop", 1e-8)):
        c = color(name)
        axes[0].plot(
            root_s,
            1 / (root_s + eps),
            color=c,
            lw=1.2,
            label=f"{catalog.OPTIMIZERS[name].label}, ε = {eps:g}: 1/(√s + ε)",
        )
        axes[0].plot(
            root_s,
            1 / np.sqrt(root_s**2 + eps),
            "--",
            color=c,
            lw=1.2,
            label=f"{catalog.OPTIMIZERS[name].label}, ε = {eps:g}: 1/√(s + ε)",
        )
    axes[0].set_xscale("log")
    finish(axes[0], "√s: the gradients' scale", "step multiplier", log=True)
    p = problems.get(problem)
    x = 0
    ticks, names = [], []
    for a, b in pairs:
        va = [r.final_train_loss * p.loss_scale for r in a.runs if not r.diverged]
        vb = [r.final_train_loss * p.loss_scale for r in b.runs if not r.diverged]
        for ya, yb in zip(va, vb, strict=False):
            axes[1].plot([x, x + 1], [ya, yb], "-o", color=color(a.optimizer), ms=3, lw=0.8)
        ticks += [x, x + 1]
        names += [f"{catalog.OPTIMIZERS[a.optimizer].label}\nε outside", "ε inside"]
        x += 3
    axes[1].set_xticks(ticks, names, fontsize=8)
    axes[1].set_xlim(-0.6, x - 1.4)
    axes[1].set_ylabel("final training loss", fontsize=9)
    axes[1].tick_params(labelsize=8)
    axes[1].grid(alpha=0.3)
    axes[1].set_title(f"{p.title}: one line per seed", fontsize=9)
    legend_outside(fig, [axes[0]])
    return figure_bytes(fig)

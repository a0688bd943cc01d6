"""The report's figures, drawn with matplotlib (Agg) from the stored runs; each is PNG bytes.

Curves over seeds are the mean with a band from the lowest to the highest seed
(seeds that diverged are left out of the band and said so in the legend).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from . import catalog, problems  # noqa: E402
from .analysis import Group, Study  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["COLORS", "figure_bytes", "loss_curves", "lr_sensitivity", "schedule_curves",
           "schedule_shapes", "trajectories"]  # fmt: skip

COLORS = dict(zip(catalog.OPTIMIZERS, plt.get_cmap("tab10").colors, strict=False))
SCHEDULE_COLORS = dict(zip(catalog.SCHEDULES, plt.get_cmap("tab10").colors, strict=False))
DPI = 90


def figure_bytes(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _band(store: Store, group: Group, metric: str) -> tuple[np.ndarray, ...] | None:
    """(steps, mean, lo, hi, diverged seeds) of ``metric`` over the group's tuned runs."""
    curves = [store.series(r.key, metric) for r in group.runs if not r.diverged]
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return None
    n = min(len(c[0]) for c in curves)
    values = np.stack([c[1][:n] for c in curves])
    return (
        curves[0][0][:n],
        values.mean(0),
        values.min(0),
        values.max(0),
        len(group.runs) - len(curves),
    )


def _plot_band(ax: plt.Axes, store: Store, group: Group, metric: str, label: str, color,
               shift: float = 0.0) -> None:  # fmt: skip
    band = _band(store, group, metric)
    if band is None:
        ax.plot([], [], color=color, label=f"{label} (diverged)")
        return
    steps, mean, lo, hi, bad = band
    note = f", {bad} seed(s) diverged" if bad else ""
    ax.plot(steps, mean - shift, color=color, lw=1.4, label=f"{label}{note}")
    if len(group.runs) > 1:
        ax.fill_between(steps, lo - shift, hi - shift, color=color, alpha=0.2, lw=0)


def _finish(ax: plt.Axes, xlabel: str, ylabel: str, log: bool) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def _shift(problem: str) -> float:
    """The known optimum, subtracted so that a log axis shows the approach to it."""
    return problems.get(problem).optimum or 0.0


def _val_label(problem: str, final: bool = False) -> str:
    p = problems.get(problem)
    text = "f(w) − f*" if p.is_2d else "validation loss"
    if p.optimum is not None and not p.is_2d:
        text += " − optimum"
    return ("final " if final else "") + text


def loss_curves(study: Study, store: Store, problem: str, groups: Sequence[Group]) -> bytes:
    """Training and validation loss (and accuracy) per optimizer, mean and seed band."""
    p = problems.get(problem)
    panels = [("val_loss", _val_label(problem))]
    if not p.is_2d:
        panels.insert(0, ("train_loss", "training loss (mini-batch)"))
    if p.has_accuracy:
        panels.append(("val_acc", "validation accuracy"))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(6.4, 4.6 * len(panels)), 3.4),
        squeeze=False,
        layout="constrained",
    )
    shift = _shift(problem)
    for ax, (metric, ylabel) in zip(axes[0], panels, strict=True):
        for g in groups:
            label = catalog.OPTIMIZERS[g.optimizer].label
            if g.schedule != "constant":
                label += f", {g.schedule}"
            _plot_band(ax, store, g, metric, label, COLORS[g.optimizer],
                       shift if metric == "val_loss" else 0.0)  # fmt: skip
        _finish(ax, "step", ylabel, log=metric != "val_acc")
        if metric == "val_loss" and p.target is not None:
            ax.axhline(p.target - shift, color="k", ls=":", lw=1, label="target")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{p.title}: tuned lr, {_seed_note(groups)}", fontsize=10)
    return figure_bytes(fig)


def _seed_note(groups: Sequence[Group]) -> str:
    n = max((len(g.runs) for g in groups), default=0)
    return f"mean and min–max over {n} seeds" if n > 1 else "one seed"


def schedule_curves(study: Study, store: Store, problem: str) -> bytes | None:
    """Validation loss per schedule, one panel per optimizer that was run with several schedules."""
    by_opt: dict[str, list[Group]] = {}
    for g in study.of(problem):
        by_opt.setdefault(g.optimizer, []).append(g)
    swept = {o: gs for o, gs in by_opt.items() if len(gs) > 1}
    if not swept:
        return None
    fig, axes = plt.subplots(
        1,
        len(swept),
        figsize=(max(6.4, 5 * len(swept)), 3.4),
        squeeze=False,
        layout="constrained",
    )
    for ax, (optimizer, groups) in zip(axes[0], swept.items(), strict=True):
        for g in groups:
            _plot_band(ax, store, g, "val_loss", f"{g.schedule} (lr {g.best_lr})",
                       SCHEDULE_COLORS[g.schedule], _shift(problem))  # fmt: skip
        _finish(ax, "step", _val_label(problem), log=True)
        ax.set_title(catalog.OPTIMIZERS[optimizer].label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{problems.get(problem).title}: schedules, peak lr tuned for each", fontsize=10)
    return figure_bytes(fig)


def lr_sensitivity(study: Study, problem: str) -> bytes | None:
    """Final validation loss against the learning rate (seed 0), diverged runs marked x."""
    groups = [g for g in study.of(problem) if g.schedule == "constant" and g.grid_runs]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    finite = [r.final_val_loss for g in groups for r in g.grid_runs.values()
              if r is not None and not r.diverged and r.final_val_loss is not None]  # fmt: skip
    shift = _shift(problem)
    top = max(finite) - shift if finite else 1.0
    for g in groups:
        color = COLORS[g.optimizer]
        ok = [(lr, r.final_val_loss - shift) for lr, r in g.grid_runs.items()
              if r is not None and not r.diverged and r.final_val_loss is not None]  # fmt: skip
        bad = [lr for lr, r in g.grid_runs.items() if r is not None and r.diverged]
        if ok:
            ax.plot(*zip(*ok, strict=True), "o-", color=color, ms=3,
                    label=catalog.OPTIMIZERS[g.optimizer].label)  # fmt: skip
        if bad:
            ax.plot(bad, [top * 1.5] * len(bad), "x", color=color)
    ax.set_xscale("log")
    _finish(ax, "learning rate", _val_label(problem, final=True), log=True)
    ax.set_title(
        f"{problems.get(problem).title}: lr sensitivity (seed 0; x = diverged)", fontsize=9
    )
    ax.legend(fontsize=7)
    return figure_bytes(fig)


def _contour(ax: plt.Axes, p: problems.Problem) -> None:
    x0, x1, y0, y1 = p.bounds
    xs, ys = np.meshgrid(np.linspace(x0, x1, 120), np.linspace(y0, y1, 120))
    z = p.function(torch.from_numpy(xs), torch.from_numpy(ys)).numpy()
    z = z - z.min() + 1e-3
    ax.contour(xs, ys, z, levels=np.geomspace(z.min() * 10, z.max(), 18), cmap="Greys",
               linewidths=0.6)  # fmt: skip
    for m in p.minima:
        ax.plot(*m, "*", color="gold", ms=10, mec="k", mew=0.5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def trajectories(study: Study, store: Store, problem: str) -> bytes | None:
    """One contour panel per optimizer with the path(s) of its tuned seed-0 run."""
    p = problems.get(problem)
    groups = [g for g in study.of(problem) if g.schedule == "constant" and g.seed_runs.get(0)]
    if not groups or not p.is_2d:
        return None
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    for ax, g in zip(axes.flat, groups, strict=False):
        _contour(ax, p)
        traj = store.array(g.seed_runs[0].key, "trajectory")
        if traj is not None:
            for k in range(traj.shape[1]):
                ax.plot(traj[:, k, 0], traj[:, k, 1], "-", color=COLORS[g.optimizer], lw=1)
                ax.plot(traj[0, k, 0], traj[0, k, 1], "o", color="k", ms=2.5)
                ax.plot(traj[-1, k, 0], traj[-1, k, 1], "o", color=COLORS[g.optimizer], ms=3)
        status = " (diverged)" if g.seed_runs[0].diverged else ""
        ax.set_title(
            f"{catalog.OPTIMIZERS[g.optimizer].label}, lr {g.best_lr:g}{status}", fontsize=8
        )
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{p.title}: {g.steps} steps from the black dot(s), seed 0", fontsize=10)
    return figure_bytes(fig)


def schedule_shapes(names: Sequence[str], steps: int = 1000) -> bytes:
    """The learning rate over a run, relative to the tuned peak, for each schedule used."""
    fig, ax = plt.subplots(figsize=(9.5, 3.4), layout="constrained")
    t = np.arange(steps + 1)
    for name in names:
        spec = catalog.SCHEDULES[name]
        schedule = spec.make(1.0, steps)
        ax.plot(
            t / steps,
            [schedule(int(i)) for i in t],
            color=SCHEDULE_COLORS[name],
            label=f"{name}: {spec.text}",
        )
    _finish(ax, "fraction of the run", "lr / tuned lr", log=False)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Schedules as run, relative to the tuned peak lr", fontsize=9)
    return figure_bytes(fig)


def eff_lr(study: Study, store: Store, problem: str) -> bytes | None:
    """Claim 4: Adagrad's and RMSProp's per-weight step multiplier over the run."""
    groups = [g for o in ("sgd", "adagrad", "rmsprop") if (g := study.find(problem, o)) and g.runs]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.4), layout="constrained")
    for g in groups:
        _plot_band(ax, store, g, "eff_lr", f"{catalog.OPTIMIZERS[g.optimizer].label} "
                   f"(lr {g.best_lr:g})", COLORS[g.optimizer])  # fmt: skip
    _finish(ax, "step", "median |Δw| / (lr |g|)", log=True)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.legend(fontsize=7)
    ax.set_title(f"{problems.get(problem).title}: effective step multiplier", fontsize=9)
    return figure_bytes(fig)


def early_update(study: Study, store: Store, problem: str) -> bytes | None:
    """Claim 5: step size over the first steps, Adam with and without bias correction, same lr."""
    adam, nobc = study.find(problem, "adam"), study.find(problem, "adam_nobc")
    if adam is None or nobc is None or adam.best_lr is None:
        return None
    lr = adam.best_lr
    runs = [(g, g.grid_runs.get(lr)) for g in (adam, nobc)]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.3), layout="constrained")
    for g, r in runs:
        if r is None:
            continue
        label = catalog.OPTIMIZERS[g.optimizer].label
        s, v = store.series(r.key, "update")
        axes[0].plot(s[s < 60], v[s < 60], "o-", ms=2, color=COLORS[g.optimizer], label=label)
        s, v = store.series(r.key, "train_loss")
        axes[1].plot(s, v, color=COLORS[g.optimizer], label=label)
    _finish(axes[0], "step", "mean |Δw| / lr", log=False)
    _finish(axes[1], "step", "training loss", log=True)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{problems.get(problem).title}: Adam's first steps at lr {lr:g} (seed 0)",
                 fontsize=10)  # fmt: skip
    return figure_bytes(fig)

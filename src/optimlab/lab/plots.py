"""The report's curves, drawn with matplotlib (Agg) from the stored runs; each is PNG bytes.

Readability rules every figure follows: legends outside the axes; a band (the
lowest to the highest seed) only where few curves share an axis — with more, the
seed range shows as a bar at the end of the run, where the claims measure; one
colour per optimizer everywhere (a lecture form: its torch form's colour,
dashed); losses in the problem's unit.  2-D figures are in :mod:`.plots2d`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import catalog, problems  # noqa: E402
from .analysis import Group, Study  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["color", "figure_bytes", "loss_curves", "lr_sensitivity", "perf_profile",
           "schedule_curves", "schedule_shapes"]  # fmt: skip

_PALETTE = plt.get_cmap("tab10").colors
BASE_COLORS = {
    "sgd": _PALETTE[0], "momentum": _PALETTE[1], "nesterov": _PALETTE[2],
    "adagrad": _PALETTE[3], "rmsprop": _PALETTE[4], "adam": _PALETTE[5],
    "adam_nobc": _PALETTE[6], "adamw": _PALETTE[7], "nadam": _PALETTE[8],
}  # fmt: skip
SCHEDULE_COLORS = dict(zip(catalog.SCHEDULES, _PALETTE, strict=False))
DPI = 100
#: with more curves than this on one axis, seed ranges are bars at the end, not bands
MAX_BANDS = 3


def color(optimizer: str) -> tuple:
    return BASE_COLORS.get(catalog.FORMS.get(optimizer, optimizer), _PALETTE[9])


def style(optimizer: str) -> str:
    return "--" if optimizer in catalog.FORMS else "-"


def new_figure(width: float, height: float, cols: int = 1, **kwargs) -> tuple:
    fig, axes = plt.subplots(
        1, cols, figsize=(width, height), squeeze=False, layout="constrained", **kwargs
    )
    return fig, axes[0]


def figure_bytes(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def legend_outside(fig: plt.Figure, axes: Sequence[plt.Axes]) -> None:
    handles, labels = [], []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)


def finish(ax: plt.Axes, xlabel: str, ylabel: str, log: bool = False) -> None:
    """Labels, grid and ticks; ``log``: a log y axis if the data spans a factor of 10 or more
    (on less, a log axis has one or no labelled tick and reads worse than a linear one)."""
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if log and _span(ax) >= 10:
        ax.set_yscale("log")
    else:
        ax.yaxis.set_major_locator(MaxNLocator(6))
    if ax.get_xscale() == "linear":
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def _span(ax: plt.Axes) -> float:
    """max / min of the positive y values drawn on ``ax`` (lines; bands left out)."""
    ys = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if not len(ys):
        return math.inf
    decades = np.log10(ys.max()) - np.log10(ys.min())
    return math.inf if decades > 300 else float(10**decades)


def _curves(store: Store, group: Group, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values over seeds x steps) of ``metric`` for the group's finished runs."""
    curves = [store.series(r.key, metric) for r in group.runs if not r.diverged]
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return None
    n = min(len(c[0]) for c in curves)
    return curves[0][0][:n], np.stack([c[1][:n] for c in curves])


def plot_group(ax: plt.Axes, store: Store, group: Group, metric: str, label: str, colour,
               shift: float = 0.0, scale: float = 1.0, band: bool = True,
               end_bar: float | None = None, linestyle: str = "-") -> None:  # fmt: skip
    """The mean over seeds; the seed range as a band, or as a bar at x = ``end_bar``."""
    data = _curves(store, group, metric)
    bad = sum(r.diverged for r in group.runs)
    note = f" ({bad} of {len(group.runs)} seeds diverged)" if bad else ""
    if data is None:
        ax.plot([], [], color=colour, ls=linestyle, label=f"{label} (diverged)")
        return
    steps, values = data
    values = (values - shift) * scale
    ax.plot(steps, values.mean(0), color=colour, lw=1.4, ls=linestyle, label=label + note)
    if len(values) < 2:
        return
    if band:
        ax.fill_between(steps, values.min(0), values.max(0), color=colour, alpha=0.15, lw=0)
    elif end_bar is not None:
        ax.plot([end_bar, end_bar], [values[:, -1].min(), values[:, -1].max()], color=colour,
                lw=3, solid_capstyle="butt")  # fmt: skip


def shift_of(problem: str) -> float:
    """The known optimum, subtracted so that a log axis shows the approach to it."""
    return problems.get(problem).optimum or 0.0


def loss_label(problem: str, final: bool = False) -> str:
    p = problems.get(problem)
    if p.is_2d:
        text = "f − f*"
    elif p.optimum is not None:
        text = "validation loss − optimum"
    else:
        text = "validation loss" + (f" ({p.loss_unit})" if p.loss_unit else "")
    return ("final " if final else "") + text


def loss_curves(store: Store, problem: str, groups: Sequence[Group]) -> bytes | None:
    """Training loss, validation loss (and accuracy) of ``groups``: mean and seed range."""
    groups = [g for g in groups if g.runs]
    if not groups:
        return None
    p = problems.get(problem)
    panels = [("val_loss", loss_label(problem))]
    if not p.is_2d:
        panels.insert(0, ("train_loss", "training loss (mini-batches)"))
    if p.has_accuracy:
        panels.append(("val_acc", "validation accuracy (%)"))
    fig, axes = new_figure(max(8.0, 3.6 * len(panels) + 2.4), 3.0, len(panels))
    band = len(groups) <= MAX_BANDS
    steps = max(g.steps for g in groups)
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        for k, g in enumerate(groups):
            shift = shift_of(problem) if metric == "val_loss" else 0.0
            scale = 100.0 if metric == "val_acc" else p.loss_scale
            end = steps * (1.01 + 0.012 * k)
            plot_group(ax, store, g, metric, g.label, color(g.optimizer), shift, scale, band,
                       end, style(g.optimizer))  # fmt: skip
        finish(ax, "step", ylabel, log=metric != "val_acc")
        if metric == "val_loss":
            ax.axhline((p.target - shift_of(problem)) * p.loss_scale, color="k", ls=":", lw=1,
                       label="target")  # fmt: skip
    legend_outside(fig, axes)
    return figure_bytes(fig)


def schedule_curves(study: Study, store: Store, problem: str) -> bytes | None:
    """Training loss per schedule for each optimizer run with several (what claim 6 compares):
    the whole run, and its last 40 % on a linear axis, with each schedule's seed range."""
    by_optimizer: dict[str, list[Group]] = {}
    for g in study.of(problem):
        if g.tuned and g.runs:
            by_optimizer.setdefault(g.optimizer, []).append(g)
    swept = {o: gs for o, gs in by_optimizer.items() if len(gs) > 1}
    if not swept:
        return None
    p = problems.get(problem)
    fig, axes = plt.subplots(len(swept), 2, figsize=(10, 2.9 * len(swept)), squeeze=False,
                             layout="constrained")  # fmt: skip
    for row, (optimizer, groups) in zip(axes, swept.items(), strict=True):
        for ax, zoom in zip(row, (False, True), strict=True):
            for k, g in enumerate(groups):
                label = f"{catalog.SCHEDULES[g.schedule].label} (lr {g.best_lr:g})"
                plot_group(ax, store, g, "train_loss", label, SCHEDULE_COLORS[g.schedule],
                           0.0, p.loss_scale, band=False,
                           end_bar=g.steps * (1.01 + 0.012 * k))  # fmt: skip
            unit = f" ({p.loss_unit})" if p.loss_unit else ""
            finish(ax, "step", f"training loss{unit}", log=not zoom)
            name = catalog.OPTIMIZERS[optimizer].label
            ax.set_title(f"{name}: last 40 % of the run" if zoom else name, fontsize=9)
            if zoom:
                steps = groups[0].steps
                ax.set_xlim(0.6 * steps, 1.08 * steps)
                _fit_y(ax, 0.6 * steps)
        legend_outside(fig, [row[0]])
    return figure_bytes(fig)


def _fit_y(ax: plt.Axes, x0: float) -> None:
    """Scale the y axis to the data right of ``x0``."""
    ys = []
    for line in ax.get_lines():
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        if len(x):
            ys.extend(y[(x >= x0) & np.isfinite(y)])
    if ys:
        lo, hi = min(ys), max(ys)
        pad = 0.08 * (hi - lo or abs(hi) or 1)
        ax.set_ylim(lo - pad, hi + pad)


def lr_sensitivity(study: Study, problem: str) -> bytes | None:
    """Final validation loss against the learning rate (seed 0); diverged runs marked ×."""
    groups = [g for g in study.of(problem) if g.schedule == "constant" and g.tuned]
    groups = [g for g in groups if any(g.grid_runs.values())]
    if not groups:
        return None
    p = problems.get(problem)
    fig, (ax,) = new_figure(7.6, 3.0)
    shift = shift_of(problem)
    finite = [r.final_val_loss - shift for g in groups for r in g.grid_runs.values()
              if r is not None and not r.diverged and r.final_val_loss is not None]  # fmt: skip
    top = (max(finite) if finite else 1.0) * p.loss_scale
    for g in groups:
        ok = sorted(
            (lr, (r.final_val_loss - shift) * p.loss_scale)
            for lr, r in g.grid_runs.items()
            if r is not None and not r.diverged and r.final_val_loss is not None
        )
        bad = [lr for lr, r in g.grid_runs.items() if r is not None and r.diverged]
        if ok:
            ax.plot(*zip(*ok, strict=True), "o-", color=color(g.optimizer), ms=3, label=g.label)
        if bad:
            ax.plot(bad, [top * 3] * len(bad), "x", color=color(g.optimizer), ms=6)
        if g.best_lr is not None and (best := g.grid_runs.get(g.best_lr)) is not None:
            ax.plot([g.best_lr], [(best.final_val_loss - shift) * p.loss_scale], "o", ms=7,
                    mfc="none", mec=color(g.optimizer))  # fmt: skip
    ax.set_xscale("log")
    finish(ax, "learning rate", loss_label(problem, final=True), log=True)
    legend_outside(fig, [ax])
    return figure_bytes(fig)


def eff_lr(study: Study, store: Store, problem: str) -> bytes | None:
    """Claim 4: the per-weight step multiplier of SGD, Adagrad and RMSProp over the run."""
    groups = [g for o in ("sgd", "adagrad", "rmsprop") if (g := study.find(problem, o)) and g.runs]
    if not groups:
        return None
    fig, (ax,) = new_figure(7.6, 3.0)
    for g in groups:
        plot_group(ax, store, g, "eff_lr", f"{g.label} (lr {g.best_lr:g})", color(g.optimizer))
    finish(ax, "step", "step multiplier |Δw| / (lr·|g|)", log=True)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    legend_outside(fig, [ax])
    return figure_bytes(fig)


def early_update(study: Study, store: Store, problem: str) -> bytes | None:
    """Claim 5: step size over the first steps, Adam with and without bias correction, same lr."""
    adam, nobc = study.find(problem, "adam"), study.find(problem, "adam_nobc")
    if adam is None or nobc is None or adam.best_lr is None:
        return None
    lr = adam.best_lr
    fig, axes = new_figure(9.6, 3.0, 2)
    for g in (adam, nobc):
        run = g.grid_runs.get(lr)
        if run is None:
            continue
        label = f"{g.label} (lr {lr:g})"
        s, v = store.series(run.key, "update")
        axes[0].plot(s[s < 60], v[s < 60], "o-", ms=2, color=color(g.optimizer), label=label)
        s, v = store.series(run.key, "train_loss")
        axes[1].plot(s, v, color=color(g.optimizer), lw=1, label=label)
    finish(axes[0], "step", "step size: mean |Δw| / lr")
    finish(axes[1], "step", "training loss (mini-batches)", log=True)
    legend_outside(fig, axes)
    return figure_bytes(fig)


def schedule_shapes(names: Sequence[str], steps: int = 1000) -> bytes:
    """The learning rate over a run, relative to the tuned peak, for each schedule used."""
    fig, (ax,) = new_figure(9.6, 3.0)
    t = np.arange(steps + 1)
    for name in names:
        spec = catalog.SCHEDULES[name]
        schedule = spec.make(1.0, steps)
        ax.plot(t / steps, [schedule(int(i)) for i in t], color=SCHEDULE_COLORS[name],
                label=f"{spec.label}: {spec.text}")  # fmt: skip
    finish(ax, "fraction of the run", "lr / tuned peak lr")
    ax.xaxis.set_major_locator(MaxNLocator(6))
    legend_outside(fig, [ax])
    return figure_bytes(fig)


def perf_profile(profile: dict[str, dict[str, float]], labels: dict[str, str]) -> bytes | None:
    """Dolan & Moré's performance profile: for each optimizer, the share of problems on which
    its steps to target are within a factor τ of the fastest optimizer's."""
    if not profile:
        return None
    optimizers = list(next(iter(profile.values())))
    ratios = {o: [] for o in optimizers}
    for times in profile.values():
        best = min(times.values())
        for o, t in times.items():
            ratios[o].append(t / best if math.isfinite(t) and math.isfinite(best) else math.inf)
    finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    tau_max = max(2.0, max(finite, default=2.0) * 1.3)
    taus = np.geomspace(1, tau_max, 400)
    fig, (ax,) = new_figure(8.0, 3.2)
    for o in optimizers:
        r = np.asarray(ratios[o])
        share = [(r <= tau).mean() for tau in taus]
        ax.step(taus, share, where="post", color=color(o), ls=style(o), label=labels[o])
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    finish(ax, "τ: within this factor of the fastest optimizer's steps",
           "share of problems")  # fmt: skip
    ax.set_xlim(1, tau_max)
    legend_outside(fig, [ax])
    return figure_bytes(fig)

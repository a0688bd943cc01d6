"""The report: one self-contained HTML file (figures embedded) plus the PNGs, from the store alone.

:func:`write_report` reads the latest study of a database, checks the
lecture's claims, draws the figures and writes ``report.html`` and
``plots/*.png`` into the output directory, each file atomically (a temporary
file renamed into place), so a report is never half-written.  It trains
nothing: ``optimlab lab report`` calls it on an existing database.
"""

from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..checkpoint import atomic_write
from . import catalog, claims, plots, problems
from .analysis import Group, Study, final_spread, load_study, target_spread
from .store import Store

__all__ = ["ReportError", "write_report"]


class ReportError(Exception):
    """Nothing to report; the message is one line for the user."""


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.held{background:#d9f2d9}.did-not-hold{background:#f8d7d7}.inconclusive{background:#fff3cd}
.v{font-weight:600;white-space:nowrap}img{max-width:100%;margin:.4em 0}
.note{color:#555;font-size:13px}ul{margin:.3em 0}code{background:#f4f4f4;padding:0 3px}
"""


def _write(path: Path, data: bytes) -> None:
    def write(file) -> None:
        os.fchmod(file.fileno(), 0o644)  # a report is for reading; mkstemp's default is 0600
        file.write(data)

    atomic_write(path, write)


class _Figures:
    """Figures by name: drawn once, written to ``plots/``, embedded as base64."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "plots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cache: dict[str, tuple[str, str] | None] = {}

    def get(self, name: str, draw: Callable[[], bytes | None], ext: str = "png") -> str:
        if name not in self.cache:
            data = draw()
            if data is None:
                self.cache[name] = None
            else:
                file = f"{name.replace(':', '-')}.{ext}"
                _write(self.dir / file, data)
                mime = "image/gif" if ext == "gif" else "image/png"
                self.cache[name] = (file, f"data:{mime};base64,{base64.b64encode(data).decode()}")
        item = self.cache[name]
        if item is None:
            return ""
        file, uri = item
        return f'<img src="{uri}" alt="{html.escape(file)}" title="plots/{html.escape(file)}">'


def _claim_figure(figs: _Figures, study: Study, store: Store, name: str) -> str:
    kind, _, problem = name.partition(":")
    draw = {
        "trajectories": lambda: plots.trajectories(study, store, problem),
        "loss": lambda: plots.loss_curves(study, store, problem, _constant(study, problem)),
        "schedules": lambda: plots.schedule_curves(study, store, problem),
        "eff_lr": lambda: plots.eff_lr(study, store, problem),
        "early_update": lambda: plots.early_update(study, store, problem),
    }[kind]
    return figs.get(name, draw)


def _constant(study: Study, problem: str) -> list[Group]:
    groups = study.of(problem)
    base = [g for g in groups if g.schedule == "constant"]
    return base or groups


def _e(text: object) -> str:
    return html.escape(str(text))


def _claims_html(figs: _Figures, study: Study, store: Store, checked: list[claims.Claim]) -> str:
    rows = []
    for c in checked:
        css = c.verdict.replace(" ", "-")
        numbers = "".join(f"<li>{_e(n)}</li>" for n in c.numbers)
        why = f"<br><span class=note>{_e(c.why)}</span>" if c.why else ""
        rows.append(
            f"<tr><td>{_e(c.number)}</td><td>{_e(c.statement)}<br><span class=note>{_e(c.source)}"
            f"</span></td><td>{_e(c.experiment)}<ul>{numbers}</ul><span class=note>Rule: "
            f"{_e(c.rule)}</span></td><td class='v {css}'>{_e(c.verdict)}{why}</td></tr>"
        )
    table = (
        "<table><tr><th>#</th><th>The lecture says</th><th>Experiment and numbers</th>"
        f"<th>Verdict</th></tr>{''.join(rows)}</table>"
    )
    shown = []
    for c in checked:
        if c.figure and c.figure not in shown:
            shown.append(c.figure)
    images = "".join(
        f"<h3>Claim {', '.join(c.number for c in checked if c.figure == name)}</h3>"
        + _claim_figure(figs, study, store, name)
        for name in shown
    )
    return table + images


def _fmt_steps(store: Store, g: Group) -> str:
    if not g.runs:
        return "–"
    spread, hits = target_spread(store, g)
    if hits == 0:
        return "not reached"
    text = f"{spread.mean:.0f} [{spread.lo:.0f}–{spread.hi:.0f}]"
    return text + (f" ({hits}/{spread.n})" if hits < spread.n else "")


def _table(store: Store, groups: list[Group]) -> str:
    head = ("optimizer", "schedule", "lr grid", "tuned lr", "final train loss",
            "final val loss", "val accuracy", "steps to target", "ms / step", "seeds")  # fmt: skip
    rows = []
    for g in groups:
        if g.best_lr is None:
            lr = "all diverged" if g.grid_complete else "tuning…"
        else:
            lr = f"{g.best_lr:g}" + (" (grid edge)" if g.best_at_edge else "")
        acc = final_spread(g, "val_acc")
        ms = [r.step_ms for r in g.runs]
        cells = (
            catalog.OPTIMIZERS[g.optimizer].label, g.schedule,
            f"{g.grid[0]:g} … {g.grid[-1]:g} ({len(g.grid)})", lr,
            final_spread(g, "train_loss").fmt(), final_spread(g).fmt(),
            acc.fmt(3, pct=True) if acc.finite else "–", _fmt_steps(store, g),
            f"{sum(ms) / len(ms):.2f}" if ms else "–", f"{len(g.runs)}/{len(g.seeds)}",
        )  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return (
        "<table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def _best_html(groups: list[Group]) -> str:
    """The best mean final result of the study on this problem, said plainly."""
    scored = [(final_spread(g, "val_acc"), g) for g in groups if g.runs]
    scored = [(s, g) for s, g in scored if s.finite]
    if scored:
        s, g = max(scored, key=lambda item: item[0].mean)
        what = f"best mean validation accuracy: {s.fmt(3, pct=True)}"
    else:
        scored = [(final_spread(g), g) for g in groups if g.runs]
        scored = [(s, g) for s, g in scored if s.finite]
        if not scored:
            return ""
        s, g = min(scored, key=lambda item: item[0].mean)
        what = f"lowest mean final validation loss: {s.fmt()}"
    return (
        f"<p><b>In this study, {what}</b> ({_e(catalog.OPTIMIZERS[g.optimizer].label)}, "
        f"{_e(g.schedule)}, lr {g.best_lr:g}, {g.steps} steps, {len(g.runs)} seeds).</p>"
    )


def _problem_html(figs: _Figures, study: Study, store: Store, name: str, gif: bool) -> str:
    p = problems.get(name)
    groups = study.of(name)
    parts = [
        f"<h2 id='{_e(name)}'>{_e(p.title)} <code>{_e(name)}</code></h2>",
        f"<p>{_e(p.description)} Steps to target: first evaluation with {_e(p.target_text)}.</p>",
        _best_html(groups),
        _table(store, groups),
        figs.get(
            f"loss:{name}", lambda: plots.loss_curves(study, store, name, _constant(study, name))
        ),
        figs.get(f"schedules:{name}", lambda: plots.schedule_curves(study, store, name)),
        figs.get(f"lr:{name}", lambda: plots.lr_sensitivity(study, name)),
        figs.get(f"trajectories:{name}", lambda: plots.trajectories(study, store, name)),
    ]
    if gif and p.is_2d and not name.endswith("_noisy"):
        from .animate import trajectory_gif

        parts.append(figs.get(f"anim:{name}", lambda: trajectory_gif(study, store, name), "gif"))
    return "\n".join(parts)


def _method_html(study: Study) -> str:
    seeds = study.plan["seeds"]
    fewer = [
        f"{p['name']} {len(p['seeds'])}" for p in study.plan["problems"] if p["seeds"] != seeds
    ]
    seeds_text = ", ".join(map(str, seeds))
    seeds_text += f" (fewer where runs are costly: {', '.join(fewer)})" if fewer else ""
    optimizers = "; ".join(
        f"{o.name} = {o.label} ({o.lecture})" for o in catalog.OPTIMIZERS.values()
    )
    return f"""<h2>Method</h2><ul>
<li>Profile <code>{_e(study.profile)}</code>; seeds {_e(seeds_text)}. For every
(problem, optimizer, schedule) group the learning rate was tuned on a log grid (half a decade
apart) with seed 0 and the full number of steps; the lr with the lowest final validation loss
won (diverged runs count as infinitely bad); that lr was then run on the other seeds. The seed-0
run of the winner is its grid run, so the reported seed 0 was also used for the choice (a small
optimistic bias, the same for every optimizer). "(grid edge)" marks a winner at the end of the
grid: a wider grid might do better.</li>
<li>Final training loss: mean mini-batch loss over the last 10 % of the steps. Final validation
loss/accuracy: at the last step. ± is the standard deviation over seeds; bands in the figures
span the lowest to the highest seed.</li>
<li>Steps to target: the first evaluation step at which the validation loss reaches the
problem's target (evaluations every step for the 2-D functions, 25 (LM: 10) per run otherwise),
mean [min–max] over seeds; a seed that never reaches it is counted as steps + 1 in comparisons
and shown as (reached/seeds).</li>
<li>Optimizers: {_e(optimizers)}.
Hyperparameters other than lr are the torch defaults.</li>
<li>Every number here is recomputed from the per-step series in the database; each run's full
configuration is stored with it (table <code>runs</code>, column <code>config</code>).</li>
</ul>"""


def write_report(store: Store, out: Path, *, gif: bool = False) -> Path:
    """Write ``out/report.html`` and ``out/plots/*`` for the latest study in ``store``."""
    study = load_study(store)
    if study is None:
        raise ReportError(f"{store.path} holds no study yet; run `optimlab lab` first")
    out.mkdir(parents=True, exist_ok=True)
    figs = _Figures(out)
    checked = claims.check_all(study, store)
    names = study.problems()
    used = [s for s in catalog.SCHEDULES if any(g.schedule == s for g in study.groups)]
    env = {}
    runs = [r for g in study.groups for r in (*g.grid_runs.values(), *g.runs) if r is not None]
    if runs:
        env = json.loads(runs[-1].env)
    compute = sum({r.key: r.wall_s for r in runs}.values())
    incomplete = study.runs_done < study.runs_planned
    status = (
        f"<p><b>Incomplete study: {study.runs_done} of {study.runs_planned} runs are in the "
        "database.</b> Run the same command again to finish it.</p>"
        if incomplete
        else ""
    )
    toc = " · ".join(f"<a href='#{_e(n)}'>{_e(n)}</a>" for n in names)
    body = [
        "<h1>optimlab lab: the lecture's claims, checked</h1>",
        f"<p class=note>Generated {time.strftime('%Y-%m-%d %H:%M')} from <code>{_e(store.path)}"
        f"</code> · study {_e(study.key)} · {study.runs_done} runs · {compute / 60:.1f} min of "
        f"training · {_e(', '.join(f'{k} {v}' for k, v in env.items()))}</p>",
        status,
        "<h2>The lecture's claims</h2>",
        "<p class=note>Each verdict is computed from the numbers by the rule shown; "
        "'inconclusive' says why. Short runs and few seeds (the --quick profile) make more "
        "claims inconclusive.</p>",
        _claims_html(figs, study, store, checked),
        f"<h2>Problems</h2><p>{toc}</p>",
        *(_problem_html(figs, study, store, n, gif) for n in names),
        "<h2>Schedules used</h2>",
        figs.get("schedule_shapes", lambda: plots.schedule_shapes(used)) if used else "",
        _method_html(study),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>optimlab lab report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    path = out / "report.html"
    _write(path, page.encode())
    return path

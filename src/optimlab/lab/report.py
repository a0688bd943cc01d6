"""The report: one self-contained HTML file (figures embedded) plus the PNGs, from the store alone.

:func:`write_report` reads the latest study of a database, checks the
lecture's claims and its forms, draws the figures and writes ``report.html``
and ``plots/*.png`` into the output directory, each file atomically (a
temporary file renamed into place), so a report is never half-written.  It
trains nothing: ``optimlab lab report`` calls it on an existing database.
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
from . import catalog, claims, playground, plots, plots2d, plots_precision, problems, sections
from .analysis import Study, load_study
from .plan import study_key
from .store import Store

__all__ = ["ReportError", "write_report"]


class ReportError(Exception):
    """Nothing to report; the message is one line for the user."""


_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:2.2em}h3{font-size:1.05em;margin:1.6em 0 .4em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.claims td:nth-child(3){max-width:34em}
.held{background:#e3f4e3}.not-held{background:#f8dede}.undecided{background:#fff5d6}
.v{font-weight:600;white-space:nowrap}.note{color:#555;font-size:13px}
figure{margin:.8em 0 1.4em}figure img{max-width:100%;display:block}
figcaption{color:#444;font-size:13px;max-width:62em;margin-top:.2em}
section.claim{border-left:3px solid #e5e5e5;padding-left:1em;margin:1.2em 0}
ul{margin:.3em 0}code{background:#f4f4f4;padding:0 3px}dt{font-weight:600;margin-top:.4em}
dd{margin-left:1.2em}nav a{margin-right:.8em}
dl.terms{columns:2 28em;column-gap:2.5em;font-size:14px}dl.terms dd{break-inside:avoid;
break-before:avoid}dl.terms dt{break-after:avoid}
.playground{border:1px solid #ddd;padding:.8em;border-radius:4px}
.pg-controls{display:flex;flex-wrap:wrap;gap:.3em 1.2em;font-size:13px;margin-bottom:.6em}
.pg-controls input[type=number]{width:6.5em}.pg-plots{display:flex;flex-wrap:wrap;gap:1em}
.pg-plots canvas{border:1px solid #ccc;max-width:100%}canvas.contour{cursor:crosshair}
"""


def _write(path: Path, data: bytes) -> None:
    def write(file) -> None:
        os.fchmod(file.fileno(), 0o644)  # a report is for reading; mkstemp's default is 0600
        file.write(data)

    atomic_write(path, write)


class _Figures:
    """Figures by name: drawn once, written to ``plots/``, embedded as base64 with a caption."""

    def __init__(self, out: Path, study: Study, store: Store) -> None:
        self.dir = out / "plots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.study, self.store = study, store
        self.cache: dict[str, tuple[str, str] | None] = {}

    def __call__(self, name: str, caption: str) -> str:
        if name not in self.cache:
            data = self._draw(name)
            if data is None:
                self.cache[name] = None
            else:
                ext = "gif" if data.startswith(b"GIF8") else "png"
                file = f"{name.replace(':', '-').replace(',', '-')}.{ext}"
                _write(self.dir / file, data)
                uri = f"data:image/{ext};base64,{base64.b64encode(data).decode()}"
                self.cache[name] = (file, uri)
        item = self.cache[name]
        if item is None:
            return ""
        file, uri = item
        return (
            f'<figure><img src="{uri}" alt="{html.escape(caption or file)}" '
            f'title="plots/{html.escape(file)}"><figcaption>{html.escape(caption)}</figcaption>'
            "</figure>"
        )

    def _draw(self, name: str) -> bytes | None:
        study, store = self.study, self.store
        kind, _, rest = name.partition(":")
        problem, _, which = rest.partition(":")
        draw: dict[str, Callable[[], bytes | None]] = {
            "loss": lambda: plots.loss_curves(store, problem, _loss_groups(study, problem, which)),
            "schedules": lambda: plots.schedule_curves(study, store, problem),
            "lr": lambda: plots.lr_sensitivity(study, problem),
            "eff_lr": lambda: plots.eff_lr(study, store, problem),
            "early_update": lambda: plots.early_update(study, store, problem),
            "trajectories": lambda: plots2d.trajectories(study, store, problem),
            "claim1": lambda: plots2d.claim1(study, store, problem),
            "form_velocity": lambda: plots2d.form_velocity(study, store, problem),
            "form_nesterov": lambda: plots2d.form_nesterov(study, store, problem),
            "form_eps": lambda: plots2d.form_eps(study, store, problem),
            "precision": lambda: plots_precision.equivalence(study, store, problem),
            "perf_profile": lambda: _profile(study, store),
            "schedule_shapes": lambda: plots.schedule_shapes(
                [s for s in catalog.SCHEDULES if any(g.schedule == s for g in study.groups)]
            ),
            "anim": lambda: _gif(study, store, problem),
        }
        return draw[kind]()


def _loss_groups(study: Study, problem: str, which: str) -> list:
    groups = [g for g in study.of(problem) if g.tuned and g.schedule == "constant"]
    if which:
        names = which.split(",")
        groups = sorted((g for g in groups if g.optimizer in names),
                        key=lambda g: names.index(g.optimizer))  # fmt: skip
    return groups


def _profile(study: Study, store: Store) -> bytes | None:
    times, optimizers = sections.profile_times(study, store)
    labels = {o: catalog.OPTIMIZERS[o].label for o in optimizers}
    return plots.perf_profile(times, labels) if len(times) >= 2 else None


def _gif(study: Study, store: Store, problem: str) -> bytes | None:
    from .animate import trajectory_gif

    return trajectory_gif(study, store, problem)


def _timing(study: Study, store: Store) -> str:
    runs = study.all_runs().values()
    compute = sum(r.wall_s for r in runs)
    text = f"Training time, summed over the {len(runs)} runs: {compute / 60:.1f} min"
    timing = store.get_meta(f"timing:{study_key(study.plan)}")
    if timing:
        low, high = timing["estimate_min"]
        text += (
            f". The last `optimlab lab` on this database trained {timing['trained_here']} runs in "
            f"{timing['took_min']:.1f} min; before it started, it estimated {low:.1f}–{high:.1f} "
            "min from short runs timed on the same machine"
        )
    return html.escape(text) + "."


def write_report(store: Store, out: Path, *, gif: bool = False) -> Path:
    """Write ``out/report.html`` and ``out/plots/*`` for the latest study in ``store``."""
    study = load_study(store)
    if study is None:
        raise ReportError(f"{store.path} holds no study yet; run `optimlab lab` first")
    out.mkdir(parents=True, exist_ok=True)
    figure = _Figures(out, study, store)
    checked = claims.check_all(study, store)
    forms = claims.check_forms(study, store)
    precision = claims.check_precision(study, store)
    env = {}
    runs = list(study.all_runs().values())
    if runs:
        env = json.loads(max(runs, key=lambda r: r.finished).env)
    planned = sum(len(g.grid) + _first_look(study, g.problem) - (1 if g.grid else 0)
                  for g in study.groups)  # fmt: skip
    incomplete = len(runs) < planned
    status = (
        f"<p><b>Incomplete study: {len(runs)} runs are in the database, at least {planned} are "
        "planned.</b> Run the same command again to finish it.</p>"
        if incomplete
        else ""
    )
    names = study.problems()
    toc = " · ".join(f"<a href='#{sections.e(n)}'>{sections.e(problems.get(n).title)}</a>"
                     for n in names)  # fmt: skip
    held = sum(c.verdict == claims.HELD for c in checked)
    body = [
        "<h1>optimlab lab: the lecture's claims, checked</h1>",
        f"<p class=note>Generated {time.strftime('%Y-%m-%d %H:%M')} from <code>"
        f"{sections.e(store.path)}</code> · study {sections.e(study.key)} · {len(runs)} runs · "
        f"{sections.e(', '.join(f'{k} {v}' for k, v in env.items()))}</p>",
        "<nav><a href='#claims'>claims</a><a href='#forms'>the lecture's forms</a>"
        "<a href='#precision'>low precision</a>"
        "<a href='#summary'>across problems</a><a href='#play'>playground</a>"
        "<a href='#problems'>problems</a><a href='#reading'>how to read</a>"
        "<a href='#method'>method</a></nav>",
        status,
        sections.GLOSSARY,
        "<h2 id=claims>The lecture's claims</h2>",
        f"<p>{held} of the lecture's {len(checked)} claims held in this study. Each verdict "
        "follows from the numbers by the rule given with it; an undecided one says how large an "
        "effect it could have seen. The last rows are optimlab's own claims about storing "
        "state and weights in fewer bits (<a href='#precision'>low precision</a>).</p>",
        sections.claims_table(checked + precision),
        *(sections.claim_section(c, figure) for c in checked),
        "<h2 id=forms>The lecture's forms of the optimizers</h2>",
        "<p>The lecture writes three updates differently from torch. Each is run here beside "
        "torch's form at the same hyperparameters: where the forms agree, where they part, and "
        "by how much.</p>",
        sections.claims_table(forms),
        *(sections.claim_section(c, figure, "Section") for c in forms),
        sections.precision_section(study, precision, figure),
        sections.profile_section(study, store, figure),
        "<h2 id=play>Playground</h2><p>Pick a function and an optimizer, set its "
        "hyperparameters, and watch its path; click the contour plot to start from there. Each "
        "run stays on the plot (up to four) to compare. The updates are optimlab's, transcribed "
        "to JavaScript and checked against it by the test suite (float64, to 1e-9).</p>",
        playground.fragment(),
        f"<h2 id=problems>Problems</h2><p>{toc}</p>",
        *(
            sections.problem_section(
                study,
                store,
                n,
                figure,
                figure(f"anim:{n}", "The paths, step by step (seed 0).")
                if gif and problems.get(n).is_2d
                else "",
            )
            for n in names
        ),  # fmt: skip
        "<h2>Schedules used</h2>",
        figure("schedule_shapes", "The learning rate over a run, as a share of the tuned peak."),
        sections.method_section(study, _timing(study, store)),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>optimlab lab report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    path = out / "report.html"
    _write(path, page.encode())
    return path


def _first_look(study: Study, problem: str) -> int:
    return int(study.problem_plan(problem)["looks"][0])

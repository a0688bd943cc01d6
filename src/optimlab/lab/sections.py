"""The report's sections as HTML: claims, the lecture's forms, the summary, problems, method.

Each function returns a string of HTML; figures come from a ``figure(name,
caption)`` callable (see :mod:`.report`) that draws, saves and embeds them.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Callable

from . import catalog, problems
from .analysis import Group, Study, final_spread, steps_to_target, target_spread
from .claims import Claim
from .claims.common import plural
from .claims.precision import state_bytes
from .store import Store

Figure = Callable[[str, str], str]


def e(text: object) -> str:
    return html.escape(str(text))


def _verdict(c: Claim) -> str:
    css = c.verdict.replace(" ", "-")
    return f"<span class='v {css}'>{e(c.verdict)}</span>"


def claims_table(checked: list[Claim]) -> str:
    rows = []
    for c in checked:
        result = e(c.summary or (c.numbers[0] if c.numbers else ""))
        why = f"<br><span class=note>{e(c.why)}</span>" if c.why else ""
        rows.append(
            f"<tr><td><a href='#claim-{e(c.number)}'>{e(c.number)}</a></td><td>{e(c.statement)}"
            f"<br><span class=note>{e(c.source)}</span></td><td>{result}</td>"
            f"<td class='{c.verdict.replace(' ', '-')}'>{_verdict(c)}{why}</td></tr>"
        )
    return (
        "<table class=claims><tr><th>#</th><th>The claim</th><th>What we measured "
        f"(the main number; details below)</th><th>Verdict</th></tr>{''.join(rows)}</table>"
    )


def claim_section(c: Claim, figure: Figure, title: str = "Claim") -> str:
    numbers = "".join(f"<li>{e(n)}</li>" for n in c.numbers)
    why = f" — {e(c.why)}" if c.why else ""
    image = figure(c.figure, c.caption) if c.figure else ""
    return (
        f"<section class=claim id='claim-{e(c.number)}'><h3>{title} {e(c.number)}: "
        f"{e(c.statement)} <span class=note>({e(c.source)})</span></h3>"
        f"<p><b>Experiment.</b> {e(c.experiment)}</p><ul>{numbers}</ul>"
        f"<p class=note><b>Rule.</b> {e(c.rule)}</p>"
        f"<p><b>Verdict:</b> {_verdict(c)}{why}</p>{image}</section>"
    )


# --- low precision -------------------------------------------------------------------


def precision_section(study: Study, checked: list[Claim], figure: Figure) -> str:
    """Adam's state and a model's weights in fewer bits, against float32: the bytes each
    takes, then the claim and the bfloat16-weights section."""
    names = [p for p in study.problems()
             if any(g.optimizer in catalog.PRECISIONS for g in study.of(p))]  # fmt: skip
    if not names:
        return ""
    columns = [("adam", "float32 Adam state"), ("adam_bf16_state", "bf16 state"),
               ("adam_8bit_state", "8-bit state"), ("adam_bf16_kahan", "bf16 weights: "
               "weights + state (float32, Kahan buffer)")]  # fmt: skip
    rows = []
    for name in names:
        fp32, weights = state_bytes(name, "adam")  # float32 weights: 4 bytes per parameter
        cells = [f"{fp32:,}"]
        for optimizer, _ in columns[1:]:
            state, stored = state_bytes(name, optimizer)
            kahan = optimizer == "adam_bf16_kahan"
            cells.append(
                f"{stored:,} + {state:,}" if kahan else f"{state:,} ({100 * state / fp32:.0f} %)"
            )
        rows.append(
            f"<tr><td>{e(problems.get(name).title)}</td><td class=n>{weights // 4:,}</td>"
            f"<td class=n>{weights:,}</td>"
            + "".join(f"<td class=n>{e(c)}</td>" for c in cells)
            + "</tr>"
        )
    head = "".join(f"<th>{e(text)}</th>" for _, text in columns)
    return (
        "<h2 id=precision>Low precision: as well as float32?</h2>"
        "<p>optimlab stores an optimizer's state in float32, in bfloat16 (stochastic "
        "rounding) or in 8 bits (blocks of 256 with a float32 absmax each, also "
        "rounded stochastically; tensors under 4,096 elements stay float32), and rounds "
        "bfloat16 weights to nearest, stochastically or with a Kahan buffer. Here each "
        "variant of Adam runs beside float32 Adam at its tuned lr on the same seeds. Bytes "
        "measured from the optimizer's state dict after one step (step counters "
        "included):</p>"
        f"<table><tr><th>model</th><th>parameters</th><th>float32 weights</th>{head}</tr>"
        f"{''.join(rows)}</table>" + "".join(claim_section(c, figure) for c in checked)
    )


# --- the summary across problems ------------------------------------------------------


def profile_times(study: Study, store: Store) -> tuple[dict[str, dict[str, float]], list[str]]:
    """problem -> optimizer -> median steps to target over seeds (inf: not reached by half).

    The optimizers: those run with a constant tuned lr on at least half of the problems; the
    problems: those where every one of them ran (a profile compares like with like).
    """
    tuned = {
        p: {g.optimizer: g for g in study.of(p) if g.tuned and g.schedule == "constant" and g.runs}
        for p in study.problems()
    }
    tuned = {p: groups for p, groups in tuned.items() if groups}
    common = [
        o
        for o in catalog.OPTIMIZERS
        if o not in catalog.FORMS and 2 * sum(o in g for g in tuned.values()) >= len(tuned)
    ]
    times = {
        p: {o: _median_steps(store, groups[o]) for o in common}
        for p, groups in tuned.items()
        if all(o in groups for o in common)
    }
    return times, common


def _median_steps(store: Store, g: Group) -> float:
    target = problems.get(g.problem).target
    values = [
        math.inf if r.diverged else (steps_to_target(store, r, target) or math.inf) for r in g.runs
    ]
    return statistics.median(values) if values else math.inf


def profile_section(study: Study, store: Store, figure: Figure) -> str:
    times, optimizers = profile_times(study, store)
    if len(times) < 2:
        return ""
    skipped = [p for p in study.problems() if p not in times]
    rows = []
    for o in optimizers:
        ratios = []
        for per in times.values():
            best = min(per.values())
            ratios.append(per[o] / best if math.isfinite(per[o]) else math.inf)
        fastest = sum(r <= 1.0 for r in ratios)
        solved = sum(math.isfinite(r) for r in ratios)
        within2 = sum(r <= 2.0 for r in ratios)
        rows.append(
            f"<tr><td>{e(catalog.OPTIMIZERS[o].label)}</td><td class=n>{fastest}</td>"
            f"<td class=n>{within2}</td><td class=n>{solved}</td></tr>"
        )
    caption = (
        "Read a curve from left to right: at τ = 1 its height is the share of problems on which "
        "that optimizer was the fastest to the target; at τ = 2, the share on which it needed at "
        "most twice the fastest one's steps; its height at the right end is the share it solved "
        "at all. Higher and further left is better."
    )
    note = (
        f" Left out, because not all of these optimizers ran there: {', '.join(skipped)}."
        if skipped
        else ""
    )
    return (
        "<h2 id=summary>Across problems: a performance profile</h2>"
        f"<p>One picture for the {len(times)} problems on which all of these optimizers ran with "
        "a constant tuned lr (Dolan &amp; Moré 2002, the summary AlgoPerf uses): each "
        "optimizer's steps to the problem's target (the median over seeds; not reached counts "
        f"as never) divided by the fastest optimizer's on that problem.{note}</p>"
        + figure("perf_profile", caption)
        + "<table><tr><th>optimizer</th><th>fastest on</th><th>within 2× of the fastest</th>"
        f"<th>reached the target on</th></tr>{''.join(rows)}</table>"
        f"<p class=note>Counts of {len(times)} problems.</p>"
    )


# --- problems ----------------------------------------------------------------------------


def _steps_cell(store: Store, g: Group) -> str:
    if not g.runs:
        return "–"
    spread, hits = target_spread(store, g)
    if hits == 0:
        return "not reached"
    reached = [v for v in spread.values if v <= g.steps]
    text = f"{statistics.fmean(reached):.0f}"
    return text + (f" ({hits} of {spread.n} seeds)" if hits < spread.n else "")


def _lr_cells(g: Group) -> tuple[str, str]:
    if g.lr_from:
        optimizer, schedule = g.lr_from["group"].split("/")
        source = catalog.OPTIMIZERS[optimizer].label
        if schedule != "constant":
            source += f", {catalog.SCHEDULES[schedule].label}"
        scale = g.lr_from["scale"]
        how = f"the tuned lr of {source}" + (f" × {scale:g}" if scale != 1 else "")
        return f"not tuned: {how}", "–" if g.best_lr is None else f"{g.best_lr:g}"
    grid = g.tuning.grid if g.tuning else g.grid
    widened = len(grid) - len(g.grid)
    text = f"{grid[0]:g} … {grid[-1]:g} ({len(grid)})"
    text += f", widened by {widened}" if widened else ""
    if g.best_lr is None:
        return text, "all diverged" if g.tuning and g.tuning.missing is None else "tuning…"
    return text, f"{g.best_lr:g}" + (" (edge)" if g.best_at_edge else "")


def problem_table(store: Store, groups: list[Group]) -> str:
    if not groups:
        return ""
    p = problems.get(groups[0].problem)
    unit = f" ({p.loss_unit})" if p.loss_unit else ""
    columns = [
        ("optimizer", lambda g: g.label),
        ("lr grid (points)", lambda g: _lr_cells(g)[0]),
        ("tuned lr", lambda g: _lr_cells(g)[1]),
        ("final training loss" + unit,
         lambda g: final_spread(g, "train_loss").fmt(scale=p.loss_scale)),
        ("final f" if p.is_2d else "final validation loss" + unit,
         lambda g: final_spread(g).fmt(scale=p.loss_scale)),
        ("validation accuracy", lambda g: final_spread(g, "val_acc").fmt(3, pct=True)),
        ("steps to target", lambda g: _steps_cell(store, g)),
        ("ms per step", lambda g: f"{statistics.fmean(r.step_ms for r in g.runs):.2f}"
         if g.runs else "–"),
        ("seeds", lambda g: str(len(g.runs))),
    ]  # fmt: skip
    if p.is_2d:
        columns = [c for c in columns if not c[0].startswith("final training")]
    if not p.has_accuracy:
        columns = [c for c in columns if c[0] != "validation accuracy"]
    table = [[fn(g) for _, fn in columns] for g in groups]
    keep = [i for i in range(len(columns)) if any(row[i] not in ("–", "") for row in table)]
    head = "".join(f"<th>{e(columns[i][0])}</th>" for i in keep)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(row[i])}</td>" for i in keep) + "</tr>" for row in table
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def best_result(groups: list[Group]) -> str:
    """The best mean final result on the problem, said plainly (and a published one beside)."""
    p = problems.get(groups[0].problem) if groups else None
    if p is None:
        return ""
    scored = [(final_spread(g, "val_acc"), g) for g in groups if g.runs and g.tuned]
    scored = [(s, g) for s, g in scored if s.finite]
    if scored:
        s, g = max(scored, key=lambda item: item[0].mean)
        what = f"best mean validation accuracy {s.fmt(3, pct=True)}"
    else:
        scored = [(final_spread(g), g) for g in groups if g.runs and g.tuned]
        scored = [(s, g) for s, g in scored if s.finite]
        if not scored:
            return ""
        s, g = min(scored, key=lambda item: item[0].mean)
        name = "final f" if p.is_2d else "final validation loss"
        unit = f" {p.loss_unit}" if p.loss_unit else ""
        what = f"lowest mean {name} {s.fmt(scale=p.loss_scale)}{unit}"
    text = (
        f"<p><b>Best in this study: {what}</b> ({e(g.label)}, lr {g.best_lr:g}, "
        f"{g.steps} steps, {plural(len(g.runs), 'seed')})."
    )
    if p.published:
        accuracy, source = p.published
        text += f" <b>Published: about {100 * accuracy:.0f} %</b> ({e(source)})."
    return text + "</p>"


def problem_section(study: Study, store: Store, name: str, figure: Figure, gif: str) -> str:
    p = problems.get(name)
    groups = study.of(name)
    base = [g for g in groups if g.tuned and g.schedule == "constant"]
    loss_caption = (
        "Each optimizer at its tuned constant lr: the mean over seeds"
        + (", with the range from the lowest to the highest seed as a band" if len(base) <= 3
           else ", the range of the seeds as a bar just right of the last step")
        + ". The dotted line is the target."
    )  # fmt: skip
    if p.is_2d:
        loss_caption += " f − f* is the distance of the function value from the minimum's."
    parts = [
        f"<h2 id='{e(name)}'>{e(p.title)} <code>{e(name)}</code></h2>",
        f"<p>{e(p.description)} Steps to target: until {e(p.target_text)}.</p>",
        best_result(groups),
        problem_table(store, groups),
        figure(f"loss:{name}", loss_caption),
        figure(f"schedules:{name}", "Training loss for each schedule at its tuned peak lr (the "
               "mean over seeds); right: the last 40 % of the run, with each schedule's seed range "
               "as a bar right of the last step."),
        figure(f"lr:{name}", "The final loss of each lr of the grid (seed 0; × = diverged; "
               "the circle is the lr the tuning chose). A flat bottom means the choice is safe; "
               "a winner at the end of the grid would mean a better lr may lie beyond."),
        figure(f"trajectories:{name}", "Seed 0's path of each optimizer at its tuned lr, from "
               "the black square to the coloured dot; the star is the minimum."),
        gif,
    ]  # fmt: skip
    return "\n".join(x for x in parts if x)


GLOSSARY = """<h2 id=reading>How to read this report</h2><dl class=terms>
<dt>seed</dt><dd>One repetition of a run: the seed fixes the initial weights, the order of the
mini-batches and the gradient noise. Two runs with the same seed differ only in the optimizer or
schedule, so comparisons pair them by seed.</dd>
<dt>tuned lr</dt><dd>Each (problem, optimizer, schedule) tries learning rates half a decade apart
(×3.16) on seed 0 and keeps the one with the lowest final validation loss. If the winner is at an
end of the grid, the next lr beyond it is tried too (up to two per side): "widened". The other
seeds then run at the winner.</dd>
<dt>steps to target</dt><dd>How many steps until the validation loss first reaches the problem's
target (between two evaluations, read off the straight line joining them).</dd>
<dt>difference and confidence interval (CI)</dt><dd>For a claim "A is better than B", the
per-seed difference A − B of the measure, averaged over seeds, with a 95 % Student's t interval.
Negative means A is lower (fewer steps, lower loss).</dd>
<dt>held · not held · undecided</dt><dd>Held: the interval lies entirely on the side the lecture
claims. Not held: entirely on the other side. Undecided: it contains 0 after all the seeds the
comparison could use; the report then says how large a true difference it would have detected
80 % of the time — smaller effects may exist.</dd>
<dt>step multiplier</dt><dd>How far a weight moves per unit of lr and of its gradient, |Δw| /
(lr·|g|), the median over the weights: 1 for SGD, 1/(√Σg² + ε) for Adagrad.</dd>
<dt>losses</dt><dd>Cross-entropy in nats (natural log) for the classifiers; for the transformer in
bits per character (nats / ln 2); for the 2-D functions and the quadratic, the function itself.
f* is a function's minimum.</dd></dl>"""


def method_section(study: Study, timing: str) -> str:
    looks = sorted({tuple(p["looks"]) for p in study.plan["problems"]})
    looks_text = "; ".join("/".join(map(str, x)) for x in looks)
    optimizers = "; ".join(f"{o.label}: {o.lecture}" for o in catalog.OPTIMIZERS.values())
    return f"""<h2 id=method>Method</h2><ul>
<li>Profile <code>{e(study.profile)}</code>. Seeds per comparison, at its looks: {e(looks_text)}
(a comparison stops at the first look that decides it). Seed 0 both tunes the lr and counts as a
seed of the comparison — a small optimistic bias, the same for every optimizer.</li>
<li>Final training loss: the mean mini-batch loss over the last 10 % of the steps. Final
validation loss and accuracy: at the last step. ± is the standard deviation over seeds.</li>
<li>Comparisons: Student's t interval of the mean paired difference (exact if the differences
are normal; not a bootstrap, whose intervals are too narrow at 5–20 seeds), at confidence
1 − 0.05/K at each of K planned looks (Bonferroni), so that 95 % holds for the whole sequence.
A run that diverged counts as its starting loss; one that never reaches the target counts as the
run's length + 1, so a difference in steps is then a lower bound.</li>
<li>Optimizers: {e(optimizers)}. Hyperparameters other than lr are torch's defaults.</li>
<li>{timing}</li>
<li>Every number here is recomputed from the per-step series in the database; each run's full
configuration is stored with it (table <code>runs</code>, column <code>config</code>).</li>
</ul>"""

"""Claims 6a and 6b: decaying schedules, and warmup on the transformer (slide 11)."""

from __future__ import annotations

from .. import catalog
from ..analysis import Study
from ..compare import Comparison
from ..problems import get
from ..store import Store
from .common import (
    COMBINE_RULE,
    HELD,
    Claim,
    combine,
    comparison_rule,
    comparisons,
    decide,
    missing,
    plural,
)


def _many(claim: Claim, found: list[Comparison], study: Study, store: Store) -> Claim:
    """Decide each comparison; the claim's verdict combines them (common.combine), and the
    summary counts the held ones per schedule."""
    verdicts = []
    by_schedule: dict[str, list[str]] = {}
    for c in found:
        one = Claim(claim.number, "", "")
        decide(one, c, store)
        verdicts.append(one.verdict)
        name = catalog.SCHEDULES[c.a.schedule.removeprefix("warmup_")].label
        by_schedule.setdefault(name, []).append(one.verdict)
        note = f" — {one.verdict}" + (f": {one.why}" if one.why else "")
        title = get(c.problem).title.split(" (")[0]
        claim.numbers.append(f"{title}: {one.numbers[0]}{note}")
    claim.verdict, claim.summary = combine(verdicts)
    if len(verdicts) == 1:
        claim.summary = ""  # the table shows the one comparison's numbers
    elif len(by_schedule) > 1:
        claim.summary += (
            " (held: "
            + ", ".join(f"{name} {v.count(HELD)} of {len(v)}" for name, v in by_schedule.items())
            + ")"
        )
    looks = max((c.looks for c in found), key=len)
    claim.rule = (
        f"each comparison: {comparison_rule('final_train_loss', study.confidence, looks)} "
        "(the transformer: fewer looks, its runs are costly); " + COMBINE_RULE
    )
    return claim


def claim_schedules(study: Study, store: Store) -> Claim:
    claim = Claim(
        "6a",
        "Decaying the learning rate (step, cosine, linear, inverse square root) ends training "
        "at a lower loss than keeping it constant.",
        "slide 11",
    )
    found = comparisons(study, "6a")
    if not found:
        return missing(claim, "a constant and a decaying schedule for one optimizer")
    problems = list(dict.fromkeys(c.problem for c in found))
    claim.experiment = (
        f"{plural(len(found), 'comparison')} on {', '.join(get(p).title for p in problems)}: "
        "the final training loss (the mean mini-batch loss over the last 10 % of the run) with "
        "each decaying schedule against the constant lr (both with warmup where the schedule "
        "has one), the peak lr tuned for each schedule"
    )
    _many(claim, found, study, store)
    figure = "charlm" if "charlm" in problems else problems[0]
    claim.figure = f"schedules:{figure}"
    claim.caption = _caption(figure)
    return claim


def claim_warmup(study: Study, store: Store) -> Claim:
    claim = Claim(
        "6b", "A linear warmup helps training the transformer.", "slide 11",
        figure="schedules:charlm",
    )  # fmt: skip
    found = comparisons(study, "6b")
    if not found:
        return missing(claim, "a schedule with and without warmup on charlm")
    steps = found[0].a.steps
    claim.experiment = (
        f"{get('charlm').title}, Adam, {steps} steps: the final training loss (bits per "
        "character, the mean over the last 10 % of the run) with and without a linear warmup "
        "over the first 10 % of the run, the peak lr tuned for each"
    )
    _many(claim, found, study, store)
    claim.caption = _caption("charlm")
    return claim


def _caption(problem: str) -> str:
    text = (
        "Training loss over the run for each schedule (the mean over seeds; the bars right of "
        "the last step are the seed range), each at its own tuned peak lr; right: the last 40 % "
        "of the run. The schedules' shapes are drawn at the end of the report."
    )
    if problem == "charlm":
        text += (
            " The default study trains the transformer for 600 steps: at 200 (the lab's first "
            "edition) the schedules had not separated yet and the constant lr was ahead."
        )
    return text

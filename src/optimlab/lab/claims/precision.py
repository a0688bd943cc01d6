"""Low precision (issue 12): does Adam train as well with its state, or its weights, stored
in fewer bits?

Each low-precision variant runs beside float32 Adam at Adam's tuned lr, on the same seeds
(same initial weights and batches), and is compared with it by an *equivalence* rule
(:func:`optimlab.lab.stats.equivalence`): "as well as" means the final validation loss
differs by less than float32's seed spread — the standard deviation of float32 Adam's
final validation loss over the same seeds, i.e. less than changing the seed changes it.
The state bytes are measured from the optimizer's ``state_dict`` on each model.
"""

from __future__ import annotations

from functools import cache

import torch

from .. import catalog, train
from ..analysis import Study
from ..compare import Comparison
from ..problems import get
from ..stats import POWER, SAME
from ..store import Store
from .common import HELD, NOT_HELD, UNDECIDED, Claim, comparisons, effect_text, fmt_value, plural

#: the variants whose state bytes claim P lists, in this order
STATE_VARIANTS = ("adam", "adam_bf16_state", "adam_8bit_state")


@cache
def state_bytes(problem: str, optimizer: str) -> tuple[int, int]:
    """(optimizer state bytes, parameter bytes) of ``optimizer`` on seed 0's model of
    ``problem``: every tensor in its ``state_dict`` after one step (state is created then)."""
    p = get(problem)
    config = train.group_config(problem, p.settings, optimizer, "constant", 1)
    torch.manual_seed(0)
    task = p.make(0, config["settings"])
    if "param_dtype" in config:
        task.cast(getattr(torch, config["param_dtype"]))
    opt = catalog.build_optimizer(optimizer, task.params, 1e-3)
    for param in task.params:
        param.grad = torch.zeros_like(param)
    opt.step()
    state = opt.state_dict()["state"].values()
    tensors = [v for s in state for v in s.values() if torch.is_tensor(v)]
    return sum(t.nbytes for t in tensors), sum(t.nbytes for t in task.params)


def identical(c: Comparison, store: Store) -> bool:
    """Both groups stored their state alike and every paired run ended the same: nothing
    was compared (8-bit state on a model whose tensors are all too small to quantize)."""
    pairs = c.pairs(store)
    same_bytes = state_bytes(c.problem, c.a.optimizer) == state_bytes(c.problem, c.b.optimizer)
    return same_bytes and bool(pairs) and all(x == y for x, y in pairs)


def _margin_text(c: Comparison, value: float) -> str:
    return "±" + fmt_value(value, "final_loss", c.problem)


def verdict(c: Comparison, store: Store) -> tuple[str, str]:
    """One comparison's verdict and a line of why: held (within the margin), not held
    (beyond it), undecided (the interval reaches past it)."""
    d = c.decision(store)
    if d is None:
        return UNDECIDED, "the runs are not finished"
    n, iv = d.interval.n, d.interval
    if d.better == SAME:
        return HELD, f"the interval lies within {_margin_text(c, d.margin)}"
    if d.better is not None:
        side = "worse" if d.better == "b" else "better"
        return NOT_HELD, f"{c.a.label} ends {side} than float32 by more than the margin"
    if not d.final:
        return UNDECIDED, f"after {plural(n, 'seed')}; the study stopped before its next look"
    reach = max(abs(iv.lo), abs(iv.hi))
    detectable = fmt_value(d.detectable, "final_loss", c.problem) if d.detectable else "?"
    return UNDECIDED, (
        f"after {plural(n, 'seed')} the interval reaches {_margin_text(c, reach)}, beyond the "
        f"margin {_margin_text(c, d.margin)}; a true difference of {detectable} would have been "
        f"detected {100 * POWER:.0f} % of the time"
    )


def _compare(claim: Claim, found: list[Comparison], store: Store) -> None:
    """Each comparison's line; the claim held if every one that compared something held, not
    held if any did not, undecided otherwise."""
    verdicts = []
    for c in found:
        title = _title(c.problem)
        if identical(c, store):
            claim.numbers.append(
                f"{title}: {c.a.label} — the same runs as float32 "
                f"({plural(len(c.pairs(store)), 'seed')}, every final loss equal): the model has "
                "no tensor of 4,096 elements or more, so its 8-bit state stays float32 (the "
                "bytes below); not counted"
            )
            continue
        v, why = verdict(c, store)
        verdicts.append((v, f"{title}, {c.a.label.removeprefix('Adam, ')}"))
        d = c.decision(store)
        margin = "" if d is None else f"; margin {_margin_text(c, d.margin)}"
        claim.numbers.append(f"{title}: {effect_text(c, d, store)}{margin} — {v}: {why}")
    held = [name for v, name in verdicts if v == HELD]
    not_held = [name for v, name in verdicts if v == NOT_HELD]
    if not verdicts:
        claim.verdict, claim.why = UNDECIDED, "no comparison compared anything"
    elif not_held:
        claim.verdict, claim.why = NOT_HELD, "beyond the margin: " + ", ".join(not_held)
    elif len(held) == len(verdicts):
        claim.verdict = HELD
    else:
        open_ = [name for v, name in verdicts if v == UNDECIDED]
        claim.verdict, claim.why = UNDECIDED, "undecided: " + ", ".join(open_)
    claim.summary = (
        f"within float32's seed spread in {len(held)} of {plural(len(verdicts), 'comparison')}"
        + (f" ({', '.join(held)})" if held else "")
        + f"; beyond it in {len(not_held)}"
    )


def rule(study: Study, found: list[Comparison]) -> str:
    looks = sorted({c.looks for c in found}, key=len)
    looks_text = " or ".join("/".join(map(str, x)) for x in looks)
    return (
        "each low-precision variant runs beside float32 Adam at Adam's tuned lr, on the same "
        "seeds (same initial weights and batches); the margin is float32's seed spread: the "
        "standard deviation of its final validation loss over those seeds — a precision that "
        "moves the loss by less than changing the seed does trains as well. Held if the "
        f"{100 * study.confidence:.0f} % interval of the mean paired difference lies within "
        "± the margin, not held if it lies entirely beyond it, undecided otherwise (two "
        "one-sided tests, each side at 1 − (1 − confidence)/K for K looks). Seeds are added "
        f"while undecided, with looks after {looks_text} seeds. The claim held if every "
        "comparison held, was not held if any was not held; a comparison of two identical "
        "sets of runs is shown but not counted"
    )


def _bytes_line(problem: str) -> str:
    fp32, _ = state_bytes(problem, "adam")
    parts = []
    for name in STATE_VARIANTS:
        b, _ = state_bytes(problem, name)
        share = "" if name == "adam" else f" ({100 * b / fp32:.0f} %)"
        label = {"adam": "float32", "adam_bf16_state": "bf16", "adam_8bit_state": "8-bit"}[name]
        parts.append(f"{label} {b:,}{share}")
    return f"{_title(problem)}, Adam's state in bytes: " + ", ".join(parts)


def _title(problem: str) -> str:
    """The problem's title, short: "MNIST-1D", "Character-level transformer LM"."""
    return get(problem).title.split(" (")[0].split(":")[0]


def _claim(
    study: Study, store: Store, number: str, text: str, source: str, missing: str,
    experiment: str,
) -> tuple[Claim, list[str]]:  # fmt: skip
    """Claim ``number``'s comparisons judged (see :func:`_compare`), and the problems they
    ran on; ``missing`` says why when the study has none."""
    claim = Claim(number, text, source, figure=f"precision:{number}")
    found = comparisons(study, number)
    if not found:
        claim.why = missing
        return claim, []
    problems = list(dict.fromkeys(c.problem for c in found))
    claim.experiment = f"{', '.join(get(p).title for p in problems)}: {experiment}"
    _compare(claim, found, store)
    claim.rule = rule(study, found)
    claim.caption = caption(problems)
    return claim, problems


def claim_precision(study: Study, store: Store) -> Claim:
    claim, problems = _claim(
        study, store, "P",
        "Adam's state stored in bfloat16 or in 8 bits trains as well as float32 state "
        "(the final validation loss differs by less than float32's seed spread).",
        "optimlab's claim (issue 12), not the lecture's",
        "the study has no low-precision state runs (the default and quick have)",
        "Adam with its two moments stored in bfloat16 (stochastic rounding) and in 8-bit "
        "blocks, at float32 Adam's tuned lr; the final validation loss against float32 "
        "Adam's, seed by seed",
    )  # fmt: skip
    claim.numbers += [_bytes_line(p) + " (measured from the state dict)" for p in problems]
    return claim


def section_params(study: Study, store: Store) -> Claim:
    claim, problems = _claim(
        study, store, "P2",
        "A model stored in bfloat16 trains as well as in float32, whichever way the optimizer "
        "rounds the updated weights: to the nearest bfloat16, stochastically, or to nearest "
        "with a Kahan compensation buffer.",
        "issue 12: bfloat16 parameters, measured side by side",
        "the study has no bfloat16-parameter runs (the default and quick have)",
        "the model's weights, activations and gradients in bfloat16 (float32 Adam state and "
        "loss), at float32 Adam's tuned lr, three ways to round the updated weights; the final "
        "validation loss against the float32 model's, seed by seed. The three share everything "
        "but the rounding",
    )  # fmt: skip
    for p in problems:
        fp32, params = state_bytes(p, "adam")
        kahan, half = state_bytes(p, "adam_bf16_kahan")
        claim.numbers.append(
            f"{_title(p)}: weights {params:,} B in float32, {half:,} B in "
            f"bfloat16; state {fp32:,} B (float32), {kahan:,} B with Kahan's buffer"
        )
    return claim


def caption(problems: list[str]) -> str:
    unit = " (bits per character for the transformer)" if "charlm" in problems else ""
    return (
        "Left: validation loss over the run, mean over seeds (float32 Adam's seed range as a "
        "band). Right: each seed's final validation loss minus float32's on the same seed "
        f"(dots){unit}; the bar is the interval of the mean difference, the grey box ± the "
        "margin (float32's seed spread). A bar inside its box: as well as float32."
    )

"""Low precision in the lab (issue 12): the plan's groups, the equivalence verdicts on
numbers chosen here, the state bytes against a formula, the report's section, and a
tiny study end to end.

Oracles: the bytes from the formats' definition (8 bytes per float32 Adam parameter,
4 in bfloat16, 1 + 1 per 8-bit parameter plus a float32 absmax per 256, tensors under
4,096 elements unquantized, a float32 step counter per tensor); a bfloat16 run against a
training loop written here with optimlab's public options; the margins against
``statistics.stdev``.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

import optimlab
from optimlab.lab import analysis, catalog, claims, config, plan, problems, report, runner, train
from optimlab.lab.claims.precision import state_bytes
from optimlab.lab.progress import Progress
from optimlab.lab.store import Store

STATE = ("adam_bf16_state", "adam_8bit_state")
PARAMS = ("adam_bf16_nearest", "adam_bf16_stochastic", "adam_bf16_kahan")


@pytest.mark.parametrize(
    ("profile", "where"),
    [
        ("quick", {"mnist1d_cnn": STATE[:1] + PARAMS, "charlm": STATE[1:]}),
        ("default", {"mnist1d_cnn": STATE[:1] + PARAMS, "charlm": STATE}),
        ("full", {"mnist1d_cnn": STATE[:1] + PARAMS, "charlm": STATE}),
    ],
)
def test_each_profile_runs_the_variants_beside_float32_adam(profile, where):
    study = plan.build_plan(config.make_selection(profile))
    for p in study["problems"]:
        variants = where.get(p["name"], ())
        groups = plan.groups_by_name(p)
        for v in variants:
            g = groups[f"{v}/constant"]
            assert g["lr_from"] == {"group": "adam/constant", "scale": 1.0} and g["grid"] == []
            assert g["config"]["optimizer_kwargs"] == catalog.OPTIMIZERS[v].kwargs
            assert ("param_dtype" in g["config"]) == (v in PARAMS)
        rows = [c for c in p["comparisons"] if c.get("margin")]
        assert sorted(c["a"] for c in rows) == sorted(f"{v}/constant" for v in variants)
        for c in rows:
            assert (c["b"], c["metric"], c["margin"]) == ("adam/constant", "final_loss", "seed_sd")
            assert c["claim"] == ("P2" if c["a"].split("/")[0] in PARAMS else "P")
            # the transformer adds seeds only where its looks reach 10 (the full profile's)
            one_look = p["name"] == "charlm" and p["looks"][-1] < 10
            assert c["looks"] == p["looks"][: 1 if one_look else None]


def test_a_float32_group_keeps_the_configuration_it_had():
    """Runs stored before the variants existed keep their keys: no new key for float32."""
    p = problems.get("mnist1d_cnn")
    old = {"lab", "problem", "settings", "optimizer", "optimizer_class", "optimizer_kwargs",
           "schedule", "steps", "eval_every", "log_every"}  # fmt: skip
    assert set(train.group_config(p.name, p.settings, "adam", "constant", 10)) == old
    bf16 = train.group_config(p.name, p.settings, "adam_bf16_kahan", "constant", 10)
    assert set(bf16) == old | {"param_dtype"} and bf16["param_dtype"] == "bfloat16"


def _adam_state_bytes(shapes, fmt):
    """The formula: two moments per tensor and a float32 step counter."""
    total = 0
    for shape in shapes:
        n = math.prod(shape)
        if fmt == "8bit" and n >= 4096:
            total += 2 * (n + 4 * math.ceil(n / 256))
        else:
            total += 2 * n * {"fp32": 4, "bf16": 2, "8bit": 4}[fmt]
        total += 4
    return total


@pytest.mark.parametrize("problem", ["mnist1d_cnn", "charlm"])
def test_state_bytes_are_the_formats_bytes(problem):
    p = problems.get(problem)
    shapes = [tuple(t.shape) for t in p.make(0, p.settings).params]
    weights = 4 * sum(math.prod(s) for s in shapes)
    assert state_bytes(problem, "adam") == (_adam_state_bytes(shapes, "fp32"), weights)
    assert state_bytes(problem, "adam_bf16_state")[0] == _adam_state_bytes(shapes, "bf16")
    assert state_bytes(problem, "adam_8bit_state")[0] == _adam_state_bytes(shapes, "8bit")
    kahan, half = state_bytes(problem, "adam_bf16_kahan")  # float32 state + a bf16 buffer
    assert (kahan, half) == (_adam_state_bytes(shapes, "fp32") + weights // 2, weights // 2)
    if problem == "mnist1d_cnn":  # every tensor is under 4,096 elements: nothing quantized
        assert state_bytes(problem, "adam_8bit_state") == state_bytes(problem, "adam")


def test_a_bf16_run_is_the_loop_written_by_hand():
    p = problems.get("mnist1d_cnn")
    group = train.group_config(p.name, p.settings, "adam_bf16_stochastic", "constant", 12)
    result = train.train(train.run_config(group, 0.01, 3))
    torch.manual_seed(3)
    task = p.make(3, p.settings)
    model = task.model.to(torch.bfloat16)
    opt = optimlab.Adam(model.parameters(), lr=0.01, state_precision="fp32",
                        param_rounding="stochastic", rounding_seed=3)  # fmt: skip
    for _ in range(12):
        batch = task.draw()
        opt.zero_grad()
        logits = model(task.x[batch].to(torch.bfloat16)).float()
        torch.nn.functional.cross_entropy(logits, task.y[batch]).backward()
        opt.step()
    assert all(q.dtype == torch.bfloat16 for q in model.parameters())
    with torch.no_grad():
        logits = model(task.x_val.to(torch.bfloat16)).float()
    expected = torch.nn.functional.cross_entropy(logits, task.y_val).item()
    assert result.last("val_loss") == expected


# --- verdicts on numbers chosen here ----------------------------------------------------

FP32 = [1.0, 1.2, 0.9, 1.1, 1.0, 0.95]  # sd 0.105: the margin
SHIFTS = {
    "adam_bf16_state": [0.01, -0.01, 0.0, 0.01, -0.01, 0.0],  # well within: held
    "adam_8bit_state": [0.0] * 6,  # the same runs (nothing quantized on this model)
    "adam_bf16_nearest": [0.5, 0.52, 0.48, 0.5, 0.51, 0.49],  # beyond: not held
    "adam_bf16_stochastic": [0.2, -0.2, 0.15, -0.1, 0.2, -0.1],  # undecided
    "adam_bf16_kahan": [0.0, 0.01, -0.01, 0.0, 0.01, -0.01],  # held
}
STEPS = 50


def _fixture(store: Store, shifts=SHIFTS) -> analysis.Study:
    """MNIST-1D with float32 Adam (lr tuned on a one-point grid) and the variants beside it,
    whose final validation losses are FP32 plus the shifts, seed by seed."""
    p = problems.get("mnist1d_cnn")
    seeds = list(range(len(FP32)))
    entry = {"name": p.name, "steps": STEPS, "seeds": seeds, "looks": [len(seeds)],
             "groups": [], "comparisons": []}  # fmt: skip
    for name, values in (("adam", FP32), *((v, np.add(FP32, s)) for v, s in shifts.items())):
        cfg = train.group_config(p.name, p.settings, name, "constant", STEPS)
        lr_from = None if name == "adam" else {"group": "adam/constant", "scale": 1.0}
        entry["groups"].append({"name": f"{name}/constant", "optimizer": name,
                                "schedule": "constant", "group_key": train.run_key(cfg),
                                "grid": [] if lr_from else [0.01], "lr_from": lr_from,
                                "config": cfg})  # fmt: skip
        for seed, final in zip(seeds, values, strict=True):
            run = train.run_config(cfg, 0.01, seed)
            val = [(0, 2.3), (STEPS, float(final))]
            train_loss = [(s, 2.3 - s / STEPS) for s in range(STEPS)]
            row = dict(
                key=train.run_key(run), group_key=train.run_key(cfg), problem=p.name,
                optimizer=name, schedule="constant", lr=0.01, seed=seed, steps=STEPS,
                status="finished", steps_done=STEPS, final_train_loss=1.3,
                final_val_loss=float(final), final_val_acc=0.5, wall_s=0.1, step_ms=1.0,
                finished=float(len(store.run_keys())), config=train.canonical(run),
                env='{"test": true}',
            )  # fmt: skip
            store.add_run(row, {"val_loss": val, "train_loss": train_loss, "val_acc": [(0, 0.1)]})
    study = {"profile": "fixture", "confidence": 0.95, "problems": [entry]}
    plan._comparisons(study["problems"])
    store.save_study(plan.study_key(study), "fixture", study)
    return analysis.load_study(store)


def test_verdicts_follow_the_margin_of_float32s_seed_spread(store):
    study = _fixture(store)
    state, params = claims.check_precision(study, store)
    margin = f"±{statistics.stdev(FP32):.3g}"
    assert state.verdict == claims.HELD  # bf16 held; 8-bit compared nothing and is not counted
    assert "the same runs as float32" in " ".join(state.numbers)
    assert f"margin {margin} — held" in state.numbers[0]
    assert "1 of 1 comparison" in state.summary
    assert params.verdict == claims.NOT_HELD and "round to nearest" in params.why
    lines = {n.split("weights, ")[1].split(" ")[0]: n for n in params.numbers if "vs Adam" in n}
    assert "— not held" in lines["round"]
    assert "— undecided" in lines["stochastic"] and "would have been" in lines["stochastic"]
    assert "— held" in lines["Kahan"]


def test_an_interval_reaching_past_the_margin_leaves_the_claim_undecided(store):
    shifts = {"adam_bf16_state": [0.2, -0.2, 0.15, -0.1, 0.2, -0.1]}
    state, params = claims.check_precision(_fixture(store, shifts), store)
    assert state.verdict == claims.UNDECIDED and "bf16 state" in state.why
    assert params.verdict == claims.UNDECIDED and "no bfloat16-parameter runs" in params.why


def test_the_section_renders_with_bytes_figures_and_both_rows(store, tmp_path):
    _fixture(store)
    html = report.write_report(store, tmp_path / "out").read_text()
    for number in ("P", "P2"):
        assert f"<a href='#claim-{number}'>{number}</a>" in html  # the claims table's rows
        assert f"id='claim-{number}'" in html
        assert (tmp_path / "out" / "plots" / f"precision-{number}.png").read_bytes()[:4] == (
            b"\x89PNG"
        )
    section = html[html.index("id=precision") :]
    fp32, weights = state_bytes("mnist1d_cnn", "adam")
    assert f"<td class=n>{weights:,}</td><td class=n>{fp32:,}</td>" in section
    assert f"{state_bytes('mnist1d_cnn', 'adam_bf16_state')[0]:,} (50 %)" in section


@pytest.mark.slow
def test_a_tiny_study_end_to_end(tmp_path):
    sel = config.make_selection("quick", problems_="mnist1d_cnn", seeds="0,1,2", steps=30,
                                grid_points=1)  # fmt: skip
    study = plan.build_plan(sel)
    with Store.open(tmp_path / "lab.sqlite") as store:
        store.save_study(plan.study_key(study), sel.profile, study)
        runner.run_study(store, study, Progress(1, bars=False))
        loaded = analysis.load_study(store)
        lr = loaded.find("mnist1d_cnn", "adam").best_lr
        for v in STATE[:1] + PARAMS:  # (8-bit state runs on the transformer)
            group = loaded.find("mnist1d_cnn", v)
            assert len(group.runs) == 3 and group.best_lr == lr
        state, params = claims.check_precision(loaded, store)
        assert all(c.numbers and c.rule for c in (state, params))
        html = report.write_report(store, tmp_path).read_text()
    assert "Claim P2:" in html and (tmp_path / "plots" / "precision-P.png").exists()

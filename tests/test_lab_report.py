"""Claims and report from a fixture database built here, with numbers chosen by the test.

Nothing in this file trains: the runs are written into a store directly, so
each claim's verdict follows from numbers the test controls, and the report is
checked against them.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from optimlab.lab import analysis, claims, problems, report, train
from optimlab.lab.store import Store

STEPS = 100
GRID = (0.01, 0.1, 1.0)
BEST = 0.1


def _decay(start: float, end: float, steps: int = STEPS, every: int = 4) -> list[tuple[int, float]]:
    """A smooth curve from start to end over the run, sampled like an evaluation series."""
    t = np.arange(0, steps + 1, every)
    return [(int(s), float(end + (start - end) * np.exp(-5 * s / steps))) for s in t]


def _reach(target: float, at: int, steps: int = STEPS) -> list[tuple[int, float]]:
    """A linear curve that crosses ``target`` exactly at step ``at`` (every step evaluated)."""
    return [(s, target * (1 + (at - s) / at)) for s in range(steps + 1)]


class Fixture:
    def __init__(self, store: Store, seeds=(0, 1, 2)) -> None:
        self.store = store
        self.plan = {"profile": "fixture", "seeds": list(seeds), "problems": []}

    def group(self, problem, optimizer, make, schedule="constant", skip=(), best=BEST):
        """``make(seed, lr) -> (series, arrays)``; grid lrs other than ``best`` end higher."""
        p = problems.get(problem)
        config = train.group_config(problem, p.settings, optimizer, schedule, STEPS)
        key = train.run_key(config)
        entry = next((e for e in self.plan["problems"] if e["name"] == problem), None)
        if entry is None:
            entry = {"name": problem, "steps": STEPS, "seeds": self.plan["seeds"], "groups": []}
            self.plan["problems"].append(entry)
        entry["groups"].append({"optimizer": optimizer, "schedule": schedule, "group_key": key,
                                "grid": list(GRID), "config": config})  # fmt: skip
        runs = [(lr, 0) for lr in GRID] + [(best, s) for s in self.plan["seeds"][1:]]
        for lr, seed in runs:
            if (lr, seed) in skip:
                continue
            series, arrays = make(seed, lr)
            if lr != best:
                series = {**series, "val_loss": [(s, 2 * v + 1) for s, v in series["val_loss"]]}
            run = train.run_config(config, lr, seed)
            last = {name: values[-1][1] for name, values in series.items()}
            row = dict(
                key=train.run_key(run), group_key=key, problem=problem, optimizer=optimizer,
                schedule=schedule, lr=lr, seed=seed, steps=STEPS, status="finished",
                steps_done=STEPS, final_train_loss=last.get("train_loss", last["val_loss"]),
                final_val_loss=last["val_loss"], final_val_acc=last.get("val_acc"), wall_s=0.1,
                step_ms=0.5, finished=float(len(self.store.run_keys())),
                config=train.canonical(run), env='{"test": true}',
            )  # fmt: skip
            self.store.add_run(row, series, arrays)

    def save(self):
        from optimlab.lab import config

        self.store.save_study(config.study_key(self.plan), "fixture", self.plan)
        return analysis.load_study(self.store)


def _zigzag(seed, lr):
    t = np.arange(STEPS + 1)
    traj = np.stack([-4 * 0.97**t, 1.5 * (-0.5) ** t], axis=1)[:, None, :]
    return {"val_loss": _reach(1e-3, 150 + seed)}, {"trajectory": traj}  # never reached in 100


def _smooth(seed, lr):
    t = np.arange(STEPS + 1)
    traj = np.stack([-4 * 0.9**t, 1.5 * 0.9**t], axis=1)[:, None, :]
    return {"val_loss": _reach(1e-3, 40 + seed)}, {"trajectory": traj}


def _classifier(at: int, final: float = 0.05, eff=None, update=1.0):
    def make(seed, lr):
        val = [(s, v) for s, v in _reach(0.1, at + 10 * seed) if s % 10 == 0]
        val[-1] = (STEPS, final + 0.001 * seed)
        steps = range(STEPS)
        series = {
            "val_loss": val,
            "val_acc": [(s, 0.9 + 0.0001 * s) for s, _ in val],
            "train_loss": [(s, 2.0 / (1 + s)) for s in steps],
            "update": [(s, update) for s in steps],
            "eff_lr": [(s, eff(s) if eff else 1.0) for s in steps],
        }
        return series, {}

    return make


def _final(value: float):
    def make(seed, lr):
        series = {"val_loss": _decay(3.0, value + 0.01 * seed), "train_loss": _decay(3.0, value)}
        return series, {}

    return make


def _stuck(seed, lr):
    rng = np.random.default_rng(seed)
    start = rng.uniform(-3, 3, (16, 2))
    end = np.round(start)
    end[0] = 0.0  # one of 16 points finds the global minimum
    traj = np.stack([start, (start + end) / 2, end])
    return {"val_loss": _decay(20, 5)}, {"trajectory": traj}


def build(store: Store, seeds=(0, 1, 2)) -> analysis.Study:
    f = Fixture(store, seeds)
    f.group("ill_conditioned", "sgd", _zigzag)
    f.group("ill_conditioned", "momentum", _smooth)
    f.group("digits_mlp", "sgd", _classifier(at=80))
    f.group("digits_mlp", "momentum", _classifier(at=30))
    f.group("digits_mlp", "nesterov", _classifier(at=30))
    f.group("digits_mlp", "adagrad", _classifier(at=50, eff=lambda s: 1 / np.sqrt(s + 1)))
    f.group("digits_mlp", "rmsprop", _classifier(at=50))
    f.group("digits_mlp", "adam", _classifier(at=40))
    f.group("digits_mlp", "adam_nobc", _classifier(at=40, update=3.0))
    f.group("digits_mlp", "momentum", _classifier(at=30, final=0.01), schedule="cosine")
    f.group("charlm", "adam", _final(1.5))
    f.group("charlm", "adam", _final(1.6), schedule="warmup_constant")
    f.group("rastrigin", "sgd", _stuck)
    return f.save()


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "lab.sqlite") as s:
        yield s


def test_claims_follow_from_the_numbers(store):
    study = build(store)
    verdicts = {c.number: c.verdict for c in claims.check_all(study, store)}
    assert verdicts == {
        "1": claims.HELD,  # SGD zig-zags and never reaches 1e-3; momentum does at 40-42
        "2": claims.HELD,  # momentum at 30-50 steps vs SGD at 80-100
        "3": claims.INCONCLUSIVE,  # Nesterov's numbers equal momentum's: ranges overlap
        "4": claims.HELD,  # Adagrad's multiplier ~ 1/sqrt(t), RMSProp's flat
        "5": claims.HELD,  # uncorrected steps 3x larger
        "6a": claims.HELD,  # cosine ends at 0.01 vs constant 0.05
        "6b": claims.NOT_HELD,  # warmup ends higher in every seed
        "7": claims.HELD,  # 1 of 16 starts reaches the global minimum
    }


def test_claim_numbers_are_the_fixture_numbers(store):
    study = build(store)
    checked = {c.number: c for c in claims.check_all(study, store)}
    momentum = checked["2"].numbers[0]
    assert "steps to target 40 [30–50]" in momentum, momentum
    assert "not reached in 100 steps" in checked["1"].numbers[1]
    assert "100–100 % of steps across the steep y axis" in checked["1"].numbers[2]
    assert "3.0x" in checked["5"].numbers[0]
    assert "3/48 starts reached the global minimum" in checked["7"].numbers[0]


def test_too_few_seeds_make_stochastic_claims_inconclusive(store):
    study = build(store, seeds=(0, 1))
    checked = {c.number: c for c in claims.check_all(study, store)}
    assert checked["2"].verdict == claims.INCONCLUSIVE
    assert checked["2"].why == "only 2 seeds"
    assert checked["1"].verdict == claims.HELD  # exact gradients: seeds only move the start


def test_a_comparison_with_a_tuned_lr_at_the_grid_edge_is_inconclusive(store):
    f = Fixture(store)
    f.group("digits_mlp", "sgd", _classifier(at=80))
    f.group("digits_mlp", "momentum", _classifier(at=30), best=GRID[-1])
    study = f.save()
    claim = claims.check_all(study, store)[1]
    assert claim.number == "2" and claim.verdict == claims.INCONCLUSIVE
    assert claim.why == "the tuned lr of momentum/constant lies at the edge of its grid"
    assert "lr 1, at the grid edge" in claim.numbers[0]


def test_an_empty_study_makes_every_claim_inconclusive(store):
    study = Fixture(store).save()
    for claim in claims.check_all(study, store):
        assert claim.verdict == claims.INCONCLUSIVE
        assert claim.why.startswith("the study has no finished runs of")


def test_best_lr_is_chosen_from_the_grid_and_diverged_runs_lose(store):
    study = build(store)
    group = study.find("digits_mlp", "sgd")
    assert group.best_lr == BEST and not group.best_at_edge
    assert group.complete and len(group.runs) == 3
    rows = {lr: None for lr in GRID}
    assert analysis.choose_lr(GRID, rows) is None


def test_report_from_the_fixture(store, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("the report trained"))
    build(store)
    out = tmp_path / "report"
    path = report.write_report(store, out)
    html = path.read_text()
    assert path == out / "report.html"
    assert html.index("The lecture's claims") < html.index("<h2>Problems")
    for number in ("1", "2", "3", "4", "5", "6a", "6b", "7"):
        assert f"<td>{number}</td>" in html
    assert html.count("class='v held'") == 6
    assert "class='v did-not-hold'" in html and "class='v inconclusive'" in html
    for name in ("ill_conditioned", "digits_mlp", "charlm", "rastrigin"):
        assert f"id='{name}'" in html
        assert (out / "plots" / f"loss-{name}.png").exists()
    for png in ("trajectories-ill_conditioned", "lr-digits_mlp", "schedules-digits_mlp",
                "eff_lr-digits_mlp", "early_update-digits_mlp", "schedule_shapes"):  # fmt: skip
        assert (out / "plots" / f"{png}.png").read_bytes().startswith(b"\x89PNG")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 10
    assert base64.b64decode(images[0]).startswith(b"\x89PNG")
    assert 'src="http' not in html  # self-contained
    assert "Incomplete study" not in html
    assert "40 [30–50]" in html  # steps to target in the table
    assert not [p for p in out.rglob("*.tmp")]


def test_report_of_an_incomplete_study_says_so(store, tmp_path):
    f = Fixture(store)
    f.group("digits_mlp", "sgd", _classifier(at=80), skip={(BEST, 2)})
    f.save()
    html = report.write_report(store, tmp_path).read_text()
    assert "Incomplete study: 4 of 5 runs" in html


@pytest.mark.slow
def test_gif_of_the_trajectories(store, tmp_path):
    build(store)
    report.write_report(store, tmp_path, gif=True)
    assert (tmp_path / "plots" / "anim-ill_conditioned.gif").read_bytes().startswith(b"GIF8")

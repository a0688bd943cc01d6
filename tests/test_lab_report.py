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

from optimlab.lab import analysis, claims, plan, problems, report, train
from optimlab.lab.store import Store

STEPS = 100
GRID = (0.0316, 0.1, 0.316)  # half a decade apart, as plan.lr_grid(0.1, 3)
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
        self.seeds = list(seeds)
        self.plan = {"profile": "fixture", "confidence": 0.95, "problems": []}

    def group(self, problem, optimizer, make, schedule="constant", skip=(), best=BEST,
              extra=()):  # fmt: skip
        """``make(seed, lr) -> (series, arrays)``; grid lrs other than ``best`` end higher.

        ``extra``: learning rates beyond the grid that the tuning may widen it to."""
        p = problems.get(problem)
        config = train.group_config(problem, p.settings, optimizer, schedule, STEPS)
        key = train.run_key(config)
        entry = next((e for e in self.plan["problems"] if e["name"] == problem), None)
        if entry is None:
            entry = {"name": problem, "steps": STEPS, "seeds": self.seeds,
                     "looks": [len(self.seeds)], "groups": [], "comparisons": []}  # fmt: skip
            self.plan["problems"].append(entry)
        entry["groups"].append({"name": f"{optimizer}/{schedule}", "optimizer": optimizer,
                                "schedule": schedule, "group_key": key, "grid": list(GRID),
                                "lr_from": None, "config": config})  # fmt: skip
        runs = [(lr, 0) for lr in (*GRID, *extra)] + [(best, s) for s in self.seeds[1:]]
        for lr, seed in runs:
            if (lr, seed) in skip:
                continue
            series, arrays = make(seed, lr)
            if lr != best:  # worse, the further from the best lr
                worse = 1 + abs(np.log10(lr / best))
                val = [(s, worse * (v + 1)) for s, v in series["val_loss"]]
                series = {**series, "val_loss": val}
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
        plan._comparisons(self.plan["problems"])
        self.store.save_study(plan.study_key(self.plan), "fixture", self.plan)
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
            "train_loss": [(s, final + 2.0 / (1 + s)) for s in steps],
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


def test_claims_follow_from_the_numbers(store):
    study = build(store)
    verdicts = {c.number: c.verdict for c in claims.check_all(study, store)}
    assert verdicts == {
        "1": claims.HELD,  # SGD zig-zags and never reaches 1e-3; momentum does at 40-42
        "2": claims.HELD,  # momentum at 30-50 steps vs SGD at 80-92: 50 fewer, every seed
        "3": claims.UNDECIDED,  # Nesterov's numbers equal momentum's: a difference of 0
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
    # momentum 30, 40, 50 steps; SGD 80, 90 and 91.7 (its last seed crosses between the
    # evaluations at 90 (0.11) and 100 (0.052)): differences -50, -50, -41.7
    assert "SGD + momentum 40 steps vs SGD 87 steps (means over 3 seeds)" in momentum, momentum
    assert "difference −47 steps, 95 % CI [" in momentum
    assert checked["1"].numbers[0].startswith("SGD + momentum 41 steps vs SGD 101 steps")
    assert "100 % of its steps across the steep valley" in checked["1"].numbers[1]
    assert "3.0×" in checked["5"].numbers[0]
    rastrigin = checked["7"].numbers[0]
    assert "3 of 48 starts reach the global minimum (6 %, 95 % CI 1–17 %)" in rastrigin
    assert checked["3"].why.startswith("after 3 seeds, a true difference of 0 steps")


def test_an_effect_inside_the_noise_is_undecided_with_the_size_it_could_detect(store):
    f = Fixture(store, seeds=(0, 1, 2, 3, 4))

    def noisy(at, offsets):  # seed-to-seed noise of ±20 steps, different for each optimizer
        def make(seed, lr):
            return _classifier(at=at + offsets[seed])(0, lr)

        return make

    f.group("digits_mlp", "sgd", noisy(50, (21, -15, 9, -18, 3)))
    f.group("digits_mlp", "momentum", noisy(49, (-12, 18, -6, 15, -9)))
    study = f.save()
    claim = claims.check_all(study, store)[1]
    assert claim.verdict == claims.UNDECIDED
    assert claim.why.startswith("after 5 seeds, a true difference of") and "80 %" in claim.why


def test_a_tuned_lr_at_the_edge_widens_the_grid(store):
    f = Fixture(store)
    f.group("digits_mlp", "sgd", _classifier(at=80))
    f.group("digits_mlp", "momentum", _classifier(at=30), best=GRID[-1], extra=(1.0,))
    study = f.save()
    momentum = study.find("digits_mlp", "momentum")
    assert momentum.tuning.grid == [*GRID, 1.0] and momentum.best_lr == GRID[-1]
    assert not momentum.best_at_edge
    assert claims.check_all(study, store)[1].verdict == claims.HELD


def test_tuning_widens_the_grid_from_its_centre_twice_per_side_at_most():
    grid = plan.lr_grid(1e-4, 5)  # 1e-05 ... 0.001
    runs = {}

    def run_at(lr):  # the lower the lr's loss, the larger the lr: the winner is always on top
        if lr not in runs:
            runs[lr] = _Row(lr, final_val_loss=1.0 / lr)
        return runs[lr]

    tuning = analysis.tune(grid, run_at)
    assert tuning.grid == [*grid, 0.00316, 0.01]  # not 0.00999: no rounding piled up
    assert tuning.best == 0.01 and tuning.at_edge
    assert analysis.tune(grid, lambda lr: None).missing == grid[0]


class _Row:
    diverged = False

    def __init__(self, lr, final_val_loss):
        self.lr, self.final_val_loss = lr, final_val_loss


def test_a_tuned_lr_still_at_the_edge_after_widening_is_undecided(store):
    f = Fixture(store)
    f.group("digits_mlp", "sgd", _classifier(at=80))
    up, further = analysis.grid_lr(0.1, 2), analysis.grid_lr(0.1, 3)
    assert (up, further) == (1.0, 3.16)  # the grid's half-decades, continued from its centre
    f.group("digits_mlp", "momentum", _classifier(at=30), best=further, extra=(up, further))
    study = f.save()
    claim = claims.check_all(study, store)[1]
    assert claim.number == "2" and claim.verdict == claims.UNDECIDED
    assert claim.why.startswith("the tuned lr of SGD + momentum is at the edge of its grid")


def test_an_empty_study_makes_every_claim_undecided(store):
    study = Fixture(store).save()
    for claim in claims.check_all(study, store) + claims.check_forms(study, store):
        assert claim.verdict == claims.UNDECIDED
        assert claim.why.startswith("the study has no finished runs of")


def test_best_lr_is_chosen_from_the_grid_and_diverged_runs_lose(store):
    study = build(store)
    group = study.find("digits_mlp", "sgd")
    assert group.best_lr == BEST and not group.best_at_edge
    assert len(group.runs) == 3
    rows = {lr: None for lr in GRID}
    assert analysis.choose_lr(GRID, rows) is None


def test_report_from_the_fixture(store, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("the report trained"))
    build(store)
    out = tmp_path / "report"
    path = report.write_report(store, out)
    html = path.read_text()
    assert path == out / "report.html"
    assert html.index("The lecture's claims") < html.index("<h2 id=problems>")
    for number in ("1", "2", "3", "4", "5", "6a", "6b", "7", "L1", "L2", "L3"):
        assert f"<a href='#claim-{number}'>{number}</a>" in html
        assert f"id='claim-{number}'" in html
    assert "6 of the lecture's 8 claims held" in html
    assert "<span class='v not-held'>not held</span>" in html
    assert "<span class='v undecided'>undecided</span>" in html
    for name in ("ill_conditioned", "digits_mlp", "charlm", "rastrigin"):
        assert f"id='{name}'" in html
        assert (out / "plots" / f"loss-{name}.png").exists()
    for png in ("claim1-ill_conditioned", "lr-digits_mlp", "schedules-digits_mlp",
                "eff_lr-digits_mlp", "early_update-digits_mlp", "schedule_shapes",
                "loss-digits_mlp-sgd-momentum", "trajectories-rastrigin"):  # fmt: skip
        assert (out / "plots" / f"{png}.png").read_bytes().startswith(b"\x89PNG"), png
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 10
    assert base64.b64decode(images[0]).startswith(b"\x89PNG")
    assert html.count("<figcaption>") == len(images)  # every figure has a caption
    assert 'src="http' not in html and "<script src" not in html  # self-contained
    assert 'id="playground"' in html and "Playground.mount" in html
    assert ":math:" not in html
    assert "Incomplete study" not in html
    assert "<th>validation accuracy</th>" not in html.split("id='rastrigin'")[1].split("<h2")[0]
    assert not [p for p in out.rglob("*.tmp")]


def test_report_of_an_incomplete_study_says_so(store, tmp_path):
    f = Fixture(store)
    f.group("digits_mlp", "sgd", _classifier(at=80), skip={(BEST, 2)})
    f.save()
    html = report.write_report(store, tmp_path).read_text()
    assert "Incomplete study: 4 runs are in the database, at least 5 are planned" in html


def test_a_first_edition_study_still_reports(store, tmp_path):
    """A database from the lab's first edition: its plan has no group names, looks or
    comparisons (and the database schema 1); the report reads it as a study of today's."""
    f = Fixture(store)
    f.group("digits_mlp", "sgd", _classifier(at=80))
    f.group("digits_mlp", "momentum", _classifier(at=30))
    for p in f.plan["problems"]:
        del p["looks"], p["comparisons"]
        for g in p["groups"]:
            del g["name"], g["lr_from"]
    del f.plan["confidence"]
    store.save_study("old", "default", f.plan)
    checked = {c.number: c for c in claims.check_all(analysis.load_study(store), store)}
    assert checked["2"].verdict == claims.HELD
    assert "id='claim-2'" in report.write_report(store, tmp_path).read_text()


@pytest.mark.slow
def test_gif_of_the_trajectories(store, tmp_path):
    build(store)
    report.write_report(store, tmp_path, gif=True)
    assert (tmp_path / "plots" / "anim-ill_conditioned.gif").read_bytes().startswith(b"GIF8")

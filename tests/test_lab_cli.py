"""``optimlab lab`` on bad input: one line naming the problem and what is accepted, exit 2."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3

import pytest

from optimlab.cli import main
from optimlab.lab import config, plan
from optimlab.lab.progress import Progress


def _lab(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["lab", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--optimizers", "sgd,adamm"],
            "error: unknown optimizer 'adamm'; choose from: sgd, momentum,",
        ),
        (["--problems", "mnist"], "error: unknown problem 'mnist'; choose from: rosenbrock,"),
        (
            ["--schedules", "cosine,cosin"],
            "error: unknown schedule 'cosin'; choose from: constant,",
        ),
        (["--seeds", "1,2"], "error: seeds must include 0"),
        (["--seeds", "0,x"], "error: seeds must be integers from 0 to 2147483647"),
        (["--grid", "4"], "error: grid_points must be an odd integer from 1 to 21, got 4"),
        (["--threads", "0"], "error: --threads must be from 1 to"),
    ],
)
def test_bad_selection_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    code, out, err = _lab(capsys, *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.toml", "profile = 'quick'\nseeds = [0, 1", "bad config file"),
        ("bad.json", '{"profile": "quick",}', "bad config file"),
        ("keys.toml", "profil = 'quick'", "unknown key 'profil'; accepted: profile, problems,"),
        (
            "prof.toml",
            "profile = 'huge'",
            "unknown profile 'huge'; choose from: quick, default, full",
        ),
        ("steps.toml", "steps = {charlm = -3}", "steps for charlm must be an integer from 1"),
        ("steps2.toml", "steps = {nope = 3}", "unknown problem 'nope'"),
        ("list.json", "[1, 2]", "expected a table/object"),
        ("cfg.yaml", "profile: quick", "must end in .json or .toml"),
        ("opt.json", '{"optimizers": ["sgd", "lion"]}', "unknown optimizer 'lion'"),
    ],
)
def test_bad_config_file_is_one_line_and_exit_2(capsys, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    code, _, err = _lab(capsys, "--config", str(path), "--out", str(tmp_path / "out"))
    assert code == 2, err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_config_file(capsys, tmp_path):
    code, _, err = _lab(capsys, "--config", str(tmp_path / "none.toml"))
    assert code == 2 and "cannot read config file" in err


def test_config_file_and_command_line_merge(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(
        'profile = "quick"\nproblems = ["digits_mlp", "rosenbrock"]\nseeds = [0, 3]\n'
        "steps = {digits_mlp = 77}\ngrid_points = 5\n"
    )
    data = config.load_config_file(path)
    sel = config.make_selection(data["profile"], data["problems"], "sgd,adam", None,
                                data["seeds"], data["grid_points"], data["steps"])  # fmt: skip
    study = plan.build_plan(sel)
    assert [p["seeds"] for p in study["problems"]] == [[0, 3], [0, 3]]
    assert [p["looks"] for p in study["problems"]] == [[2], [2]]  # fixed seeds: one look
    assert [p["name"] for p in study["problems"]] == ["digits_mlp", "rosenbrock"]
    assert study["problems"][0]["steps"] == 77
    groups = {(g["optimizer"], g["schedule"]) for g in study["problems"][0]["groups"]}
    # --optimizers alone: those optimizers with the constant schedule, no schedules, no forms
    assert groups == {("sgd", "constant"), ("adam", "constant")}
    assert all(len(g["grid"]) == 5 for p in study["problems"] for g in p["groups"])


def test_cross_and_explicit_schedules():
    sel = config.make_selection("quick", "digits_logreg", "sgd,adam", "constant,cosine")
    study = plan.build_plan(sel)
    groups = [(g["optimizer"], g["schedule"]) for g in study["problems"][0]["groups"]]
    assert groups == [("sgd", "constant"), ("adam", "constant"), ("adam", "cosine")]
    comparisons = study["problems"][0]["comparisons"]
    assert [(c["claim"], c["a"], c["b"]) for c in comparisons] == [
        ("6a", "adam/cosine", "adam/constant")
    ]
    sel = config.make_selection("quick", "digits_logreg", "sgd,adam", "constant,cosine", cross=True)
    assert len(plan.build_plan(sel)["problems"][0]["groups"]) == 4


def test_the_default_plan_compares_what_the_claims_need():
    study = plan.build_plan(config.make_selection("default"))
    found = {(p["name"], c["claim"], c["a"], c["b"], c["metric"])
             for p in study["problems"] for c in p["comparisons"]}  # fmt: skip
    for row in [
        ("ill_conditioned", "1", "momentum/constant", "sgd/constant", "steps"),
        ("mnist1d_cnn", "2", "momentum/constant", "sgd/constant", "steps"),
        ("mnist1d_cnn", "3", "nesterov/constant", "momentum/constant", "steps"),
        ("digits_mlp", "4", "adagrad/constant", "rmsprop/constant", "decay"),
        ("charlm", "6b", "adam/warmup_constant", "adam/constant", "final_train_loss"),
        ("mnist1d_cnn", "6a", "momentum/cosine", "momentum/constant", "final_train_loss"),
        ("mnist1d_cnn", "L1", "momentum_lecture/step", "momentum/step", "final_train_loss"),
        ("digits_mlp", "L3", "rmsprop_eps_inside/constant", "rmsprop/constant", "final_train_loss"),
    ]:
        assert row in found, row
    ill = next(p for p in study["problems"] if p["name"] == "ill_conditioned")
    forms = {g["name"]: g["lr_from"] for g in ill["groups"] if g["lr_from"]}
    assert forms["momentum_lecture/step"] == {"group": "momentum/step", "scale": 1.0}
    assert forms["momentum/constant@sgd*0.1"] == {"group": "sgd/constant", "scale": 0.1}
    charlm = next(p for p in study["problems"] if p["name"] == "charlm")
    assert charlm["steps"] >= 600 and charlm["looks"] == [3, 6]


def test_unwritable_output_directory(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _lab(capsys, "--out", str(blocker / "out"), "--problems", "rosenbrock")
    assert code == 2
    assert err.startswith("error: cannot make output directory")
    assert err.count("\n") == 1


def test_foreign_database_is_refused_before_training_and_left_untouched(capsys, tmp_path):
    db = tmp_path / "other.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    code, _, err = _lab(capsys, "--db", str(db), "--out", str(tmp_path / "out"),
                        "--problems", "rosenbrock")  # fmt: skip
    assert code == 2 and "another program" in err and err.count("\n") == 1
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    code, _, err = _lab(capsys, "report", "--db", str(db), "--out", str(tmp_path / "out"))
    assert code == 2 and "another program" in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_report_without_a_database(capsys, tmp_path):
    code, _, err = _lab(capsys, "report", "--out", str(tmp_path))
    assert code == 2 and "no lab database" in err
    assert not (tmp_path / "lab.sqlite").exists()


def test_unknown_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["lab", "--quik"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: --quik") and err.count("\n") == 1


def test_list_and_dry_run(capsys, tmp_path):
    code, out, _ = _lab(capsys, "--list")
    assert code == 0
    for word in ("quick", "mnist1d_cnn", "adam_nobc", "warmup_cosine"):
        assert word in out
    code, out, _ = _lab(capsys, "--quick", "--dry-run", "--problems", "rosenbrock,charlm",
                        "--out", str(tmp_path / "o"))  # fmt: skip
    assert code == 0 and "runs, about" in out and "min on this machine" in out
    assert "charlm (100 steps, seeds 3): adam/constant, adam/warmup_constant" in out
    assert not (tmp_path / "o").exists()


def test_help_explains_the_main_commands(capsys):
    with pytest.raises(SystemExit):
        main(["lab", "--help"])
    out = capsys.readouterr().out
    for text in ("optimlab lab --quick", "optimlab lab report", "resumes", "config file"):
        assert text in out


def test_plan_is_json_and_its_key_is_stable():
    study = plan.build_plan(config.make_selection("quick"))
    assert json.loads(json.dumps(study)) == study
    assert plan.study_key(study) == plan.study_key(plan.build_plan(config.make_selection("quick")))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:  # a terminal that reports no size, like a pty under `script`
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_on_a_terminal_plain_lines_otherwise(terminal):
    stream = _Terminal() if terminal else io.StringIO()
    progress = Progress(2, stream=stream)
    update = progress.start_run("digits_mlp sgd/constant lr=0.1 seed=0", 100)
    if update is not None:
        update(100)
    progress.end_run()
    progress.skip()
    progress.problem_done("digits_mlp", 1, 0.5, [])
    progress.close()
    text = stream.getvalue()
    assert "lab: digits_mlp: done (1 run trained in 0 s)" in text
    assert ("study: 100%|" in text and "sgd/constant lr=0.1" in text) == terminal
    assert ("\r" in text) == terminal

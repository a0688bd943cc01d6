"""Every bad input to ``optimlab lab`` and ``optimlab lab report``: one ``error:`` line, exit 2.

Flags, config files (syntax, unknown keys, a value of the wrong type), paths
(missing, a directory where a file goes, a file where a directory goes, a
damaged or foreign database) and numbers (negative, too large for torch).  Each
case runs the real command line in this process and checks: exit status 2, one
line on stderr that starts with ``error:``, nothing on stdout, and nothing
created — neither the output directory nor the database.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from optimlab.cli import main
from optimlab.lab.store import Store


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's errors end the parse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _damaged(path):
    with Store.open(path) as store:
        store.save_study("s", "quick", {"problems": []})
    with path.open("r+b") as file:  # the first page: the schema's b-tree root
        file.seek(100)
        file.write(b"\xff" * 16)


def _foreign(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()


def _no_study(path):
    with Store.open(path):
        pass


# (id, arguments after `optimlab lab`, config file (name, text) or None, a file to make)
STUDY = [
    ("unknown option", ["--quik"], None, None),
    ("grid not a number", ["--grid", "x"], None, None),
    ("grid missing its value", ["--grid"], None, None),
    ("grid even", ["--grid", "4"], None, None),
    ("grid too large", ["--grid", "101"], None, None),
    ("threads negative", ["--threads", "-1"], None, None),
    ("threads absurd", ["--threads", "100000"], None, None),
    ("two profiles", ["--quick", "--full"], None, None),
    ("negative seed", ["--seeds", "0,-1"], None, None),
    ("seed too large for torch", ["--seeds", "0,99999999999999999999"], None, None),
    ("seed not an integer", ["--seeds", "0,1.5"], None, None),
    ("no seeds", ["--seeds", ""], None, None),
    ("empty problem name", ["--problems", "rosenbrock,"], None, None),
    ("unknown schedule", ["--schedules", "cosine,cosin"], None, None),
    ("bf16 weights, no model", ["--problems=saddle", "--optimizers=adam_bf16_kahan"], None, None),
    ("stray argument", ["rosenbrock"], None, None),
    ("toml syntax", [], ("a.toml", "seeds = [0, 1"), None),
    ("json syntax", [], ("a.json", '{"profile": "quick",}'), None),
    ("json not an object", [], ("a.json", "null"), None),
    ("not utf-8", [], ("a.toml", b"profile = '\xff'"), None),
    ("unknown key", [], ("a.toml", "profil = 'quick'"), None),
    ("profile a number", [], ("a.toml", "profile = 3"), None),
    ("profile a list", [], ("a.json", '{"profile": ["quick"]}'), None),
    ("problems a number", [], ("a.toml", "problems = 3"), None),
    ("problems of numbers", [], ("a.json", '{"problems": [1, 2]}'), None),
    ("optimizers a nested list", [], ("a.json", '{"optimizers": [["sgd"]]}'), None),
    ("seeds a string", [], ("a.toml", "seeds = 'abc'"), None),
    ("seeds a number", [], ("a.toml", "seeds = 5"), None),
    ("seeds of floats", [], ("a.toml", "seeds = [0, 1.5]"), None),
    ("seeds of booleans", [], ("a.json", '{"seeds": [0, true]}'), None),
    ("grid a string", [], ("a.toml", "grid_points = '5'"), None),
    ("grid a float", [], ("a.toml", "grid_points = 5.0"), None),
    ("grid a boolean", [], ("a.json", '{"grid_points": true}'), None),
    ("steps a string", [], ("a.toml", "steps = '100'"), None),
    ("steps a float", [], ("a.toml", "steps = 1.5"), None),
    ("steps too many", [], ("a.toml", "steps = 10000000"), None),
    ("steps per problem a string", [], ("a.toml", "steps = {charlm = '5'}"), None),
    ("steps of an unknown problem", [], ("a.toml", "steps = {nope = 3}"), None),
    ("cross a string", [], ("a.toml", "cross = 'yes'"), None),
    ("gif a number", [], ("a.json", '{"gif": 1}'), None),
    ("out a list", [], ("a.json", '{"out": ["a"]}'), None),
    ("out empty", [], ("a.toml", "out = ''"), None),
    ("db a number", [], ("a.toml", "db = 3"), None),
    ("config missing", ["--config", "{tmp}/none.toml"], None, None),
    ("config a directory", ["--config", "{tmp}/dir.toml"], None, "dir.toml/"),
    ("config not toml or json", [], ("a.yaml", "profile: quick"), None),
    ("out is a file", ["--out", "{tmp}/file"], None, "file"),
    ("out inside a file", ["--out", "{tmp}/file/out"], None, "file"),
    ("db is a directory", ["--db", "{tmp}/dir"], None, "dir/"),
    ("db inside a file", ["--db", "{tmp}/file/lab.sqlite"], None, "file"),
    ("db random bytes", ["--db", "{tmp}/bytes.sqlite"], None, "bytes.sqlite"),
    ("db damaged", ["--db", "{tmp}/damaged.sqlite"], None, "damaged.sqlite"),
    ("db another program's", ["--db", "{tmp}/foreign.sqlite"], None, "foreign.sqlite"),
]
REPORT = [
    ("no database", [], None),
    ("db is a directory", ["--db", "{tmp}/dir"], "dir/"),
    ("db damaged", ["--db", "{tmp}/damaged.sqlite"], "damaged.sqlite"),
    ("db another program's", ["--db", "{tmp}/foreign.sqlite"], "foreign.sqlite"),
    ("db random bytes", ["--db", "{tmp}/bytes.sqlite"], "bytes.sqlite"),
    ("db without a study", ["--db", "{tmp}/empty.sqlite"], "empty.sqlite"),
    ("out is a file", ["--db", "{tmp}/empty.sqlite", "--out", "{tmp}/file"], "file"),
    ("unknown option", ["--quik"], None),
    ("stray argument", ["extra"], None),
]
MAKERS = {
    "file": lambda p: p.write_text("x"),
    "bytes.sqlite": lambda p: p.write_bytes(b"\x89PNG not a database" * 50),
    "damaged.sqlite": _damaged,
    "foreign.sqlite": _foreign,
    "empty.sqlite": _no_study,
}


def _prepare(tmp_path, make: str | None) -> None:
    if make is None:
        return
    if make.endswith("/"):
        (tmp_path / make).mkdir()
    elif make == "file" or make.endswith(".sqlite"):
        MAKERS[make](tmp_path / make)
    if make == "empty.sqlite":
        MAKERS["file"](tmp_path / "file")


def _check(code: int, out: str, err: str, tmp_path, before: set) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    assert set(tmp_path.iterdir()) == before  # nothing created: no output, no database


@pytest.mark.parametrize("case, argv, config, make", STUDY, ids=[c[0] for c in STUDY])
def test_a_bad_study_input_is_one_line_and_exit_2(capsys, tmp_path, case, argv, config, make):
    _prepare(tmp_path, make)
    if config is not None:
        name, text = config
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        argv = [*argv, "--config", str(path)]
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    # a small selection, unless the case is about it: if a case wrongly passed, it trains little
    if "--problems" not in argv and "problems" not in str(config) and case != "stray argument":
        argv += ["--problems", "rosenbrock"]
    before = set(tmp_path.iterdir())
    _check(*_run(capsys, ["lab", *argv]), tmp_path, before)


@pytest.mark.parametrize("case, argv, make", REPORT, ids=[c[0] for c in REPORT])
def test_a_bad_report_input_is_one_line_and_exit_2(capsys, tmp_path, case, argv, make):
    _prepare(tmp_path, make)
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    before = set(tmp_path.iterdir())
    _check(*_run(capsys, ["lab", "report", *argv]), tmp_path, before)


def test_report_refuses_the_options_that_choose_a_study(capsys, tmp_path):
    code, _, err = _run(capsys, ["lab", "--quick", "report", "--out", str(tmp_path)])
    assert code == 2 and err.startswith("error: --profile chooses a study")


@pytest.mark.parametrize("command", [["lab", "--problems", "rosenbrock"], ["lab", "report"]])
def test_missing_lab_dependencies_say_what_to_install_before_anything_is_made(tmp_path, command):
    """As after a plain `pip install optimlab`: matplotlib and mnist1d cannot be imported."""
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = sys.modules['mnist1d'] = None  # as if not installed\n"
        "from optimlab.cli import main\n"
        f"sys.exit(main({command!r} + ['--out', 'out']))\n"
    )
    if command[-1] == "report":
        _no_study(tmp_path / "lab.sqlite")
        code = code.replace("['--out', 'out']", "['--db', 'lab.sqlite', '--out', 'out']")
    before = set(tmp_path.iterdir())
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "matplotlib, mnist1d" in done.stderr
    assert 'pip install "optimlab[lab]"' in done.stderr
    assert set(tmp_path.iterdir()) == before

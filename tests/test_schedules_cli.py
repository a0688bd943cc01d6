"""``optimlab schedule``: printing, plotting, and one-line errors with exit code 2."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from optimlab.cli import main


def _rows(out):
    lines = out.strip().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def test_print_chosen_steps(capsys):
    assert main(["schedule", "cosine(1, 100)", "linear(1, 100)", "--print", "0,50,99,100,101"]) == 0
    header, rows = _rows(capsys.readouterr().out)
    assert header == ["step", "cosine(1.0, 100)", "linear(1.0, 100)"]
    expected = {
        0: (1.0, 1.0),
        50: (0.5, 0.5),
        99: ((1 + math.cos(0.99 * math.pi)) / 2, 0.01),
        100: (0.0, 0.0),
        101: (0.0, 0.0),
    }
    assert [int(r[0]) for r in rows] == list(expected)
    for row in rows:
        assert [float(v) for v in row[1:]] == pytest.approx(expected[int(row[0])], rel=1e-7)


def test_print_every(capsys):
    spec = "warmup(10, constant(0.5))"
    assert main(["schedule", spec, "--steps", "25", "--print", "--every", "10"]) == 0
    _, rows = _rows(capsys.readouterr().out)
    assert rows == [["0", "0"], ["10", "0.5"], ["20", "0.5"], ["25", "0.5"]]


def test_prints_a_table_when_nothing_is_asked(capsys):
    assert main(["schedule", "step_decay(1, 30, 0.5)", "--steps", "100"]) == 0
    _, rows = _rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == [str(t) for t in range(0, 101, 10)]
    assert rows[3] == ["30", "0.5"]


def test_plot_overlays_specs(tmp_path, capsys):
    out = tmp_path / "lr.png"
    args = ["schedule", "cosine(0.1, 200)", "warmup(20, cosine(0.1, 180))", "--steps", "200"]
    assert main([*args, "--out", str(out), "--log"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert captured.out == ""  # --out alone prints no table
    assert str(out) in captured.err


def test_plot_and_print_together(tmp_path, capsys):
    out = tmp_path / "lr.png"
    assert main(["schedule", "constant(1)", "--out", str(out), "--print", "3"]) == 0
    assert out.exists()
    assert _rows(capsys.readouterr().out)[1] == [["3", "1"]]


def test_missing_matplotlib_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "lr.png"
    assert main(["schedule", "constant(1)", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert 'pip install "optimlab[plot]"' in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cosine(3e-4, 10", "expected ')' at position 15"),
        ("cosine(1, 0)", "steps must be a positive integer, got steps=0"),
        ("nope(1)", "unknown schedule 'nope'"),
    ],
)
def test_bad_spec_is_a_one_line_error(spec, message, capsys):
    assert main(["schedule", "constant(1)", spec]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("optimlab schedule: error: ")
    assert message in captured.err and captured.err.count("\n") == 1


def _outcome(argv):
    """(exit status, stdout, stderr) of ``optimlab schedule ARGV`` run in this process."""
    try:
        code = main(["schedule", *argv])
    except SystemExit as exit_:  # argparse's errors leave through sys.exit
        code = exit_.code
    return code


TOO_LONG = "x" * 300 + ".png"  # a name no file system takes: the write itself fails

# (args after "optimlab schedule", what the one error line says); "{tmp}" is a fresh directory
BAD_INPUTS = [
    ([], "the following arguments are required: SPEC"),
    (["constant(1)", "--bogus"], "unrecognized arguments: --bogus"),
    (["--bogus", "constant(1)"], "unrecognized arguments: --bogus"),
    (["constant(1)", "-x", "3"], "unrecognized arguments: -x"),
    (["constant(1)", "--steps"], "argument --steps: expected one argument"),
    (
        ["constant(1)", "--steps", "0"],
        "argument --steps: expected an integer from 1 to 1e15, got '0'",
    ),
    (["constant(1)", "--steps", "ten"], "argument --steps: expected an integer from 1 to 1e15"),
    (["constant(1)", "--steps", "2.5"], "got '2.5'"),
    (["constant(1)", "--steps", "nan"], "got 'nan'"),
    (["constant(1)", "--steps", "inf"], "got 'inf'"),
    (["constant(1)", "--steps", "1e16"], "got '1e16'"),
    (["constant(1)", "--steps", "9" * 5000], "argument --steps: expected an integer from 1"),
    (["constant(1)", "--print", "1,x"], "argument --print: expected an integer from 0 to 1e15"),
    (["constant(1)", "--print", "-5"], "argument --print: expected an integer from 0 to 1e15"),
    (["constant(1)", "--print", ""], "argument --print: expected comma-separated steps"),
    (["inverse_sqrt(1, 1)", "--print", "1" + "0" * 400], "argument --print: expected an integer"),
    (["constant(1)", "--every", "0"], "argument --every: expected an integer from 1 to 1e15"),
    (["constant(1)", "--every", "5", "--print", "0,10"], "--every spaces the steps of a table"),
    (["constant(1)", "--every", "5", "--out", "{tmp}/a.png"], "--every spaces the steps"),
    (["constant(1)", "--log"], "--log sets the plot's y axis; give --out FILE to plot"),
    (["constant(1)", "--out", "{tmp}/missing/a.png"], "directory '{tmp}/missing' does not exist"),
    (["constant(1)", "--out", "{tmp}/a.xyz"], "unknown extension '.xyz'; the extension picks"),
    (["constant(1)", "--out", "{tmp}/plot"], "no extension; the extension picks the format, one"),
    (["constant(1)", "--out", "{tmp}"], "no extension"),
    (["constant(1)", "--out", "{tmp}/dir.png"], "--out '{tmp}/dir.png' is a directory"),
    (["constant(1)", "--out", "{tmp}/" + TOO_LONG], "cannot write --out '{tmp}/" + TOO_LONG),
    (["cosine(1e999, 10)"], "number 1e999 is too large for a float (max 1.8e308) at position 7"),
    (["cosine(1, " + "9" * 400 + ")"], "(400 characters) is too large for a float"),
    (["cosine(1, 0)"], "cosine(): steps must be a positive integer, got steps=0 at position 0"),
    (["cosine(3e-4, 10"], "expected ')' at position 15"),
    (["nope(1)"], "unknown schedule 'nope'"),
    (
        ["constant(1)", "scale(constant(1e308), 10)"],
        "scale(constant(1e+308), 10.0) at step 0 is inf",
    ),
    (
        ["join([constant(1), scale(constant(1e308), 10)], [50])"],
        "join([constant(1.0), scale(constant(1e+308), 10.0)], [50]) at step 100 is inf",
    ),
    (
        ["join([constant(1), scale(constant(1e308), 10)], [50])", "--out", "{tmp}/a.png"],
        "at step 50 is inf: the value overflows a float",  # no plot is written
    ),
]


@pytest.mark.parametrize(
    ("args", "message"), BAD_INPUTS, ids=[" ".join(a)[:60] for a, _ in BAD_INPUTS]
)
def test_every_bad_input_is_one_error_line_and_exit_2(args, message, tmp_path, capsys):
    (tmp_path / "dir.png").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert _outcome(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("optimlab schedule: error: ") and err.count("\n") == 1, err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err
    assert not (tmp_path / "a.png").exists()


def test_step_counts_may_be_written_like_1e4(capsys):
    assert (
        main(["schedule", "linear(1, 1e4)", "--steps", "1e4", "--print", "--every", "2.5e3"]) == 0
    )
    _, rows = _rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["0", "2500", "5000", "7500", "10000"]


def test_a_cycle_longer_than_a_float_counts(capsys):
    # mult=1e300 makes the second cycle 1e304 steps long; the value is cos(~0) = lr
    assert main(["schedule", "cosine_restarts(1, 1e4, mult=1e300)", "--print", "10000,10001"]) == 0
    _, rows = _rows(capsys.readouterr().out)
    assert rows == [["10000", "1"], ["10001", "1"]]


def test_help_documents_the_grammar(capsys):
    with pytest.raises(SystemExit) as info:
        main(["schedule", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "SPEC grammar" in out
    assert "warmup(steps, then, start_lr=0.0)" in out


@pytest.mark.slow  # fresh interpreters importing torch: ~2-4 s each
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["warmup(10, cosine(1, 10)"],
            "optimlab schedule: error: expected ')' at position 24 in "
            "'warmup(10, cosine(1, 10)' (found end of text)",
        ),
        (
            ["cosine(1e999, 10)", "--bogus"],
            "optimlab schedule: error: unrecognized arguments: --bogus "
            "(see optimlab schedule --help)",
        ),
        (
            ["cosine(1e999, 10)"],
            "optimlab schedule: error: number 1e999 is too large for a float (max 1.8e308) "
            "at position 7 in 'cosine(1e999, 10)'",
        ),
    ],
    ids=["bad spec", "unknown flag", "huge number"],
)
def test_command_line_end_to_end(args, line):
    # Real processes, as the shell runs them (python -m optimlab): exit 2, one line,
    # no traceback; and matplotlib is not imported by `import optimlab.schedules`.
    code = (
        "import sys, runpy, optimlab.schedules; assert 'matplotlib' not in sys.modules; "
        "sys.argv[0] = 'optimlab'; runpy.run_module('optimlab', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "schedule", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [line]


@pytest.mark.slow  # a fresh interpreter importing torch: ~2-4 s
def test_a_reader_that_stops_early_gets_no_traceback():
    # `optimlab schedule ... --every 1 | head -1`: the pipe closes long before the table ends
    code = "import sys; from optimlab.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["schedule", "constant(1)", "--steps", "1000000", "--print", "--every", "1"]
    with subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout.readline() == "step\tconstant(1.0)\n"
        process.stdout.close()
        err = process.stderr.read()
        assert process.wait(timeout=120) == 0
    assert err == ""

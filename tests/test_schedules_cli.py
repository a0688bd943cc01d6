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


@pytest.mark.parametrize(
    "args",
    [
        ["constant(1)", "--steps", "0"],
        ["constant(1)", "--steps", "ten"],
        ["constant(1)", "--print", "1,x"],
        ["constant(1)", "--print", "-5"],
        ["constant(1)", "--every", "0"],
        [],
    ],
)
def test_bad_options_exit_2(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(["schedule", *args])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_documents_the_grammar(capsys):
    with pytest.raises(SystemExit) as info:
        main(["schedule", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "SPEC grammar" in out
    assert "warmup(steps, then, start_lr=0.0)" in out


@pytest.mark.slow  # a fresh interpreter importing torch: ~2-4 s
def test_command_line_end_to_end():
    # One real process: the entry point, no traceback, exit 2; and matplotlib is
    # not imported by `import optimlab.schedules`.
    code = (
        "import sys, optimlab.schedules; assert 'matplotlib' not in sys.modules; "
        "from optimlab.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "schedule", "warmup(10, cosine(1, 10)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "optimlab schedule: error: expected ')' at position 24 in "
        "'warmup(10, cosine(1, 10)' (found end of text)"
    ]

"""``optimlab``: every argparse mistake, in every subcommand, is one error line and exit 2."""

from __future__ import annotations

import re

import pytest

from optimlab import cli


@pytest.mark.parametrize(
    "argv,prog,message",
    [
        ([], "optimlab", "the following arguments are required: COMMAND"),
        (["benhc"], "optimlab", "invalid choice: 'benhc'"),
        (["bench", "--quik"], "optimlab bench", "unrecognized arguments: --quik"),
        (["bench", "Adam"], "optimlab bench", "unrecognized arguments: Adam"),
        (["schedule"], "optimlab schedule", "the following arguments are required: SPEC"),
        (["schedule", "cosine(0.1, 10)", "--stesp", "5"], "optimlab schedule",
         "unrecognized arguments: --stesp 5"),
        (["lab", "--quik"], "", "unrecognized arguments: --quik"),
        (["lab", "report", "--bogus"], "", "unrecognized arguments: --bogus"),
    ],
)  # fmt: skip
def test_argparse_errors_are_one_line(capsys, argv, prog, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert message in err and "usage:" not in err
    # lab words its own errors (``error: ...`` or ``optimlab lab...: error: ...``)
    assert re.match(
        rf"{re.escape(prog)}: error: " if prog else r"(optimlab lab\b.*: )?error: ", err
    )


def test_every_subcommand_parser_is_one_line():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(cli.COMMANDS)
    for command in commands.values():
        assert isinstance(command, cli.OneLineParser) or "error" in vars(type(command))


def test_help_still_prints_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: optimlab bench")

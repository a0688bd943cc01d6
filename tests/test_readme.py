"""The README's promises: CI runs its test command verbatim, and its usage example runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    commands = [b.strip() for b in _blocks("bash") if "pytest" in b]
    assert len(commands) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0] in ci.splitlines()


def test_readme_main_command_runs_the_lab():
    assert "optimlab lab --quick" in _blocks("bash")[0]


def test_usage_example_runs(capsys):
    exec(compile(_blocks("python")[0], "README.md", "exec"), {})
    assert re.match(r"loss \d+\.\d{4}, lr 3\.0\de-04", capsys.readouterr().out)

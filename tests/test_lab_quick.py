"""``optimlab lab --quick`` end to end, as the README runs it, then ``optimlab lab report``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from optimlab.lab import config, plan

pytestmark = pytest.mark.slow


def test_quick_profile_end_to_end(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    lab = [sys.executable, "-m", "optimlab", "lab"]
    done = subprocess.run([*lab, "--quick"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = tmp_path / "optimlab-lab"
    assert done.stdout.strip() == f"report: {out.relative_to(tmp_path) / 'report.html'}"
    study = plan.build_plan(config.make_selection("quick"))
    # stderr is not a terminal: no bars, a line per problem
    assert "\r" not in done.stderr
    assert done.stderr.count("lab: ") == len(study["problems"]) + 2
    assert "min on this machine" in done.stderr.splitlines()[0]
    html = (out / "report.html").read_text()
    for number in ("1", "2", "3", "4", "5", "6a", "6b", "7", "L1", "L2", "L3"):
        assert f"<a href='#claim-{number}'>{number}</a>" in html
    assert "Incomplete study" not in html
    for p in study["problems"]:
        assert f"id='{p['name']}'" in html
        assert (out / "plots" / f"loss-{p['name']}.png").exists()

    before = (out / "report.html").stat().st_mtime_ns
    again = subprocess.run([*lab, "report"], cwd=tmp_path, capture_output=True, text=True,
                           env=env, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (out / "report.html").stat().st_mtime_ns > before

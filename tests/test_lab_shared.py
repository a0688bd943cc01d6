"""Two lab processes on one database share the runs, and a dead process's claim is taken over."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

STUDY = ["--problems", "digits_mlp", "--optimizers", "sgd,momentum,adam,adagrad",
         "--seeds", "0,1,2,3,4", "--grid", "3"]  # fmt: skip
PLANNED = 4 * (3 + 4)  # groups x (grid + the other seeds)


def _command(tmp_path, steps: int) -> list[str]:
    config = tmp_path / "study.toml"
    config.write_text(f"steps = {steps}\n")
    return [sys.executable, "-m", "optimlab", "lab", *STUDY, "--config", str(config),
            "--db", str(tmp_path / "lab.sqlite")]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _counts(stderr: str) -> tuple[int, int, int]:
    """(trained here, by another process, already done) from a study's last line."""
    line = re.search(r"lab: (\d+) runs? trained here(?:, (\d+) by another process[^,]*)?, "
                     r"(\d+) already done", stderr)  # fmt: skip
    assert line, stderr
    return int(line[1]), int(line[2] or 0), int(line[3])


def _db(tmp_path, sql: str) -> list:
    conn = sqlite3.connect(tmp_path / "lab.sqlite", timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_two_processes_share_one_database(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [
        subprocess.Popen(
            [*_command(tmp_path, 400), "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )  # fmt: skip
        for out in outs
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    counts = [_counts(err) for _, err in results]
    here = [c[0] for c in counts]
    assert sum(here) == PLANNED  # every run trained once, by one of them
    assert all(n > 0 for n in here), counts  # and both worked
    for (mine, other, before), theirs in zip(counts, reversed(here), strict=True):
        assert mine + other + before == PLANNED
        # the other process's runs: stored before this one started, or trained meanwhile
        assert other + before == theirs
    assert len(_db(tmp_path, "SELECT key FROM runs")) == PLANNED
    assert _db(tmp_path, "SELECT count(*) FROM claims") == [(0,)]
    for out in outs:
        assert (out / "report.html").exists()


def test_a_run_claimed_by_a_killed_process_is_taken_over(tmp_path):
    config = tmp_path / "study.toml"
    config.write_text("steps = 1500\n")
    command = [sys.executable, "-m", "optimlab", "lab", "--problems", "digits_mlp",
               "--optimizers", "sgd", "--seeds", "0,1", "--grid", "1", "--config", str(config),
               "--db", str(tmp_path / "lab.sqlite")]  # fmt: skip
    first = subprocess.Popen([*command, "--out", str(tmp_path / "a")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    deadline = time.monotonic() + 180
    claimed: list = []
    while not claimed:
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline, "no run was claimed in time"
        time.sleep(0.05)
        if (tmp_path / "lab.sqlite").exists():
            try:
                claimed = _db(tmp_path, "SELECT key, pid FROM claims")
            except sqlite3.OperationalError:  # the tables are being created
                claimed = []
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    ((key, pid),) = claimed
    assert pid == first.pid and _db(tmp_path, "SELECT key FROM runs") == []
    second = subprocess.run([*command, "--out", str(tmp_path / "b")], capture_output=True,
                            text=True, env=_env(), timeout=600)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert _counts(second.stderr) == (2, 0, 0)
    assert (key,) in _db(tmp_path, "SELECT key FROM runs")  # the dead claim's run, trained
    assert _db(tmp_path, "SELECT count(*) FROM claims") == [(0,)]

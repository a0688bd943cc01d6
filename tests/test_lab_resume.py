"""A study killed at any moment resumes: no finished run lost, duplicated or half-written."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

STUDY = ["--problems", "digits_mlp", "--optimizers", "sgd,momentum,adam,adagrad",
         "--schedules", "constant", "--seeds", "0,1,2", "--grid", "3"]  # fmt: skip
PLANNED = 4 * (3 + 2)  # groups x (grid + other seeds)


def _command(tmp_path, steps: int = 200) -> list[str]:
    config = tmp_path / "study.toml"
    config.write_text(f"steps = {steps}\n")
    out = tmp_path / "out"
    return [sys.executable, "-m", "optimlab", "lab", *STUDY, "--config", str(config),
            "--out", str(out)]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _runs(db) -> dict[str, tuple]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT key, final_val_loss, steps_done, wall_s FROM runs").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        conn.close()
    return {r[0]: r[1:] for r in rows}


def _terminal_like() -> None:
    """Let the child take Ctrl-C as it would at a terminal.  A job started in the background
    by a non-interactive shell (nohup, `cmd &` in a CI script) inherits SIGINT *ignored*, and
    Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_stop(tmp_path, sig: int, at_least: int, steps: int = 200) -> subprocess.Popen:
    db = tmp_path / "out" / "lab.sqlite"
    proc = subprocess.Popen(_command(tmp_path, steps), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=_terminal_like)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(_runs(db)) < at_least:
        assert proc.poll() is None, (
            f"the study ended before it could be stopped: {proc.stderr.read()}"
        )
        assert time.monotonic() < deadline, "no runs were committed in time"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc


def test_kill_9_mid_study_then_resume(tmp_path):
    db = tmp_path / "out" / "lab.sqlite"
    proc = _start_and_stop(tmp_path, signal.SIGKILL, at_least=4)
    assert proc.returncode == -signal.SIGKILL
    before = _runs(db)
    assert 4 <= len(before) < PLANNED

    # nothing half-written: every stored run has its whole validation series
    conn = sqlite3.connect(db)
    for key, (_, steps_done, _) in before.items():
        steps = [s for (s,) in conn.execute(
            "SELECT step FROM metrics WHERE run = ? AND name = 'val_loss'", (key,))]  # fmt: skip
        assert steps and max(steps) == steps_done
    conn.close()

    done = subprocess.run(
        _command(tmp_path), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} already in" in done.stderr
    assert f"{PLANNED - len(before)} runs trained here, {len(before)} already done" in done.stderr
    after = _runs(db)
    assert len(after) == PLANNED
    for key, row in before.items():  # every finished run kept, exactly as it was
        assert after[key] == row
    assert (tmp_path / "out" / "report.html").exists()

    again = subprocess.run(
        _command(tmp_path), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert again.returncode == 0
    assert f"0 runs trained here, {PLANNED} already done" in again.stderr
    assert _runs(db) == after


def test_ctrl_c_keeps_finished_runs_and_says_how_to_resume(tmp_path):
    db = tmp_path / "out" / "lab.sqlite"
    # runs 10x longer than the kill test's: the study must not finish before the signal lands
    proc = _start_and_stop(tmp_path, signal.SIGINT, at_least=2, steps=2000)
    stderr = proc.stderr.read()
    assert proc.returncode == 130, stderr
    assert "interrupted:" in stderr and "resume with: optimlab lab" in stderr
    assert "Traceback" not in stderr
    kept = _runs(db)
    assert len(kept) >= 2
    assert not (tmp_path / "out" / "report.html").exists()

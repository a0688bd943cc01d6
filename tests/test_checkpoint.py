"""optimlab.checkpoint: atomic writes, damaged files refused, RNG captured."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import optimlab
import optimlab.checkpoint as ckpt


def _state(value: float) -> dict:
    model = torch.nn.Linear(4, 2)
    opt = optimlab.Adam(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "value": value}


def test_round_trip_loads_with_weights_only(tmp_path):
    path = tmp_path / "run.ckpt"
    state = _state(1.5)
    ckpt.save(path, state)
    loaded = ckpt.load(path)
    assert loaded["value"] == 1.5
    torch.testing.assert_close(loaded["model"]["weight"], state["model"]["weight"], rtol=0, atol=0)
    assert loaded["optimizer"]["state"][0].keys() == {"step", "exp_avg", "exp_avg_sq"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temporary left behind


def test_failed_save_leaves_the_previous_checkpoint_and_no_debris(tmp_path):
    path = tmp_path / "run.ckpt"
    ckpt.save(path, _state(1.0))
    before = path.read_bytes()

    def write_half_then_fail(file):
        file.write(b"partial bytes")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write(path, write_half_then_fail)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


SAVER = """
import sys, torch, optimlab.checkpoint as ckpt
path, i = sys.argv[1], 0
print("ready", flush=True)
while True:
    i += 1
    ckpt.save(path, {"i": i, "payload": torch.full((300_000,), float(i))})
"""


@pytest.mark.slow
def test_kill_during_saves_never_leaves_a_damaged_checkpoint(tmp_path):
    """kill -9 a process that saves in a loop, at arbitrary moments: what is on
    disk is always a complete checkpoint (an older or a newer one)."""
    path = tmp_path / "run.ckpt"
    ckpt.save(path, {"i": 0, "payload": torch.zeros(300_000)})
    rng = random.Random(0)
    seen = set()
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = ckpt.load(path)  # never raises
        assert torch.all(state["payload"] == float(state["i"]))
        seen.add(state["i"])
    assert len(seen) > 1  # the loop did overwrite the file between kills
    ckpt.save(path, {"i": -1})  # and the next save removes what the kills left
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


# writes half a checkpoint, then waits (to be killed) with its temporary file open
HALF_WRITER = """
import sys, time, optimlab.checkpoint as ckpt
def write(file):
    file.write(b"half a checkpoint")
    file.flush()
    print("writing", flush=True)
    time.sleep(600)
ckpt.atomic_write(sys.argv[1], write)
"""


def _temporaries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _half_writer(path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HALF_WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    return proc


@pytest.mark.slow
def test_next_save_removes_a_killed_saves_debris_but_not_a_live_writers_file(tmp_path):
    path = tmp_path / "run.ckpt"
    ckpt.save(path, {"i": 0})
    live = _half_writer(path)  # another process saving the same path right now
    try:
        killed = _half_writer(path)  # (whose own save left the live writer's file alone)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        debris, writing = (
            [name for name in _temporaries(tmp_path) if f".{proc.pid}-" in name]
            for proc in (killed, live)
        )
        assert len(debris) == 1 and len(writing) == 1
        ckpt.save(path, {"i": 1})
        assert _temporaries(tmp_path) == writing  # the live writer's file is still there
        assert ckpt.load(path)["i"] == 1
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    ckpt.save(path, {"i": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


def test_temporaries_whose_writer_cannot_be_asked_go_when_a_day_old(tmp_path):
    """A writer on another host (or a name without a writer, from an older optimlab)
    cannot be checked: its file goes once untouched for STALE_AFTER_SECONDS."""
    path = tmp_path / "run.ckpt"
    other_host = "1234-" + ("0" * 8 if ckpt._HOST != "0" * 8 else "1" * 8)
    names = {
        f".run.ckpt.{other_host}.abcd_123.tmp": "old",  # removed
        f".run.ckpt.{other_host}.efgh_456.tmp": "new",  # kept: may be writing
        ".run.ckpt.ijkl_789.tmp": "old",  # removed (an older optimlab's name)
        ".run.ckpt.mnop_012.tmp": "new",  # kept
        f".run.ckpt.{os.getpid()}-{ckpt._HOST}.qrst_345.tmp": "new",  # kept: this process
        f".run.ckpt.old.{other_host}.uvwx_678.tmp": "old",  # kept: another target's
        ".notes.tmp": "old",  # kept: not a checkpoint's temporary
    }
    day_and_a_bit = ckpt.STALE_AFTER_SECONDS + 60
    for name, age in names.items():
        (tmp_path / name).write_bytes(b"x")
        if age == "old":
            mtime = time.time() - day_and_a_bit
            os.utime(tmp_path / name, (mtime, mtime))
    removed = ckpt.remove_stale_temporaries(path)
    assert sorted(p.name for p in removed) == sorted(
        [f".run.ckpt.{other_host}.abcd_123.tmp", ".run.ckpt.ijkl_789.tmp"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        name for name in names if tmp_path.joinpath(name) not in removed
    )


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\0", "padded"),
        (lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:], "checksum"),
        (lambda b: b[: len(b) - 50] + bytes([b[-50] ^ 1]) + b[len(b) - 49 :], "checksum"),
        (lambda b: b"PK\x03\x04" + b[4:], "not an optimlab checkpoint"),
        (lambda b: b"", "not an optimlab checkpoint"),
    ],
    ids=["half", "one-byte-short", "padded", "flipped-header-byte", "flipped-payload-bit",
         "bad-magic", "empty"],
)  # fmt: skip
def test_damaged_checkpoint_is_refused_clearly(tmp_path, damage, message):
    path = tmp_path / "run.ckpt"
    ckpt.save(path, _state(2.0))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load(path)


def test_missing_checkpoint_and_plain_torch_file_are_refused(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at"):
        ckpt.load(tmp_path / "absent.ckpt")
    torch.save({"a": 1}, tmp_path / "plain.pt")
    with pytest.raises(ckpt.CheckpointError, match="not an optimlab checkpoint"):
        ckpt.load(tmp_path / "plain.pt")


def test_rng_state_restores_every_generator(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    ckpt.save(tmp_path / "rng.ckpt", {"rng": ckpt.rng_state()})
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())
    ckpt.set_rng_state(ckpt.load(tmp_path / "rng.ckpt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2:] == again[2:]


def test_save_target_directory_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError):
        ckpt.save(tmp_path / "missing" / "run.ckpt", {"a": 1})
    assert not os.path.exists(tmp_path / "missing")

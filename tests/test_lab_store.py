"""The lab's SQLite store: one transaction per run, and foreign or damaged files left untouched."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from optimlab.lab import store as store_module
from optimlab.lab.store import APPLICATION_ID, SCHEMA_VERSION, Store, StoreError


def _row(key: str, **over) -> dict:
    row = dict(
        key=key, group_key="g", problem="digits_mlp", optimizer="sgd", schedule="constant",
        lr=0.1, seed=0, steps=10, status="finished", steps_done=10, final_train_loss=0.5,
        final_val_loss=0.6, final_val_acc=0.9, wall_s=1.0, step_ms=0.1, finished=1.0,
        config="{}", env="{}",
    )  # fmt: skip
    row.update(over)
    return row


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_database_is_marked_as_ours_and_reopens(tmp_path):
    path = tmp_path / "lab.sqlite"
    with Store.open(path) as store:
        store.add_run(_row("a"), {"val_loss": [(0, 1.0), (10, 0.5)]},
                      {"trajectory": np.arange(6.0).reshape(3, 1, 2)})  # fmt: skip
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with Store.open(path) as store:
        assert store.run_keys() == {"a"}
        steps, values = store.series("a", "val_loss")
        assert steps.tolist() == [0, 10] and values.tolist() == [1.0, 0.5]
        assert store.array("a", "trajectory").tolist() == np.arange(6.0).reshape(3, 1, 2).tolist()
        assert store.runs()[0].final_val_acc == 0.9


def test_a_run_is_all_or_nothing(tmp_path):
    with Store.open(tmp_path / "lab.sqlite") as store:
        store.add_run(_row("a"), {"val_loss": [(0, 1.0)]})

        def series():  # fails half-way through writing the metrics
            yield 0, 1.0
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            store.add_run(_row("b"), {"val_loss": series()})
        assert store.run_keys() == {"a"}
        rows = store.conn.execute("SELECT DISTINCT run FROM metrics").fetchall()
        assert rows == [("a",)]
        assert store.add_run(_row("a", lr=9.0), {"val_loss": [(0, 5.0)]}) is False  # stored once
        assert len(store.runs()) == 1 and store.runs()[0].lr == 0.1
        assert store.series("a", "val_loss")[1].tolist() == [1.0]


def test_latest_study_is_the_last_one_saved(tmp_path):
    with Store.open(tmp_path / "lab.sqlite") as store:
        assert store.latest_study() is None
        store.save_study("s1", "quick", {"x": 1})
        store.save_study("s2", "default", {"x": 2})
        assert store.latest_study() == ("s2", "default", {"x": 2})


def _foreign_sqlite(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()


def _newer(path):
    with Store.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"\x89PNG not a database" * 100), "not an SQLite database"),
        (_foreign_sqlite, "another program"),
        (_newer, "newer than this optimlab"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20), "damaged"),
    ],
    ids=["random-bytes", "foreign-sqlite", "newer-schema", "corrupt-sqlite"],
)
def test_a_file_that_is_not_our_database_is_refused_and_left_untouched(tmp_path, make, message):
    path = tmp_path / "lab.sqlite"
    make(path)
    before = _digest(path)
    with pytest.raises(StoreError, match=message) as error:
        Store.open(path)
    assert "\n" not in str(error.value)
    assert _digest(path) == before
    if make is not _newer:  # (a WAL database read read-only may get its -shm beside it)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.sqlite"]


def test_an_empty_file_becomes_a_database(tmp_path):
    path = tmp_path / "lab.sqlite"
    path.write_bytes(b"")
    with Store.open(path) as store:
        assert store.run_keys() == set()


def test_a_directory_or_a_missing_file_for_reading_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="directory"):
        Store.open(tmp_path)
    with pytest.raises(StoreError, match="no lab database"):
        Store.open(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


def _filled(path, runs: int = 40) -> int:
    """A lab database with ``runs`` runs of 300 metric rows each; returns its page size."""
    with Store.open(path) as store:
        for i in range(runs):
            store.add_run(_row(f"r{i}"), {"val_loss": [(s, 1.0 / (s + 1)) for s in range(300)]})
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return store.conn.execute("PRAGMA page_size").fetchone()[0]


def _truncate(path, page_size):
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size // 2 // page_size * page_size + 100)


def _flip_page(path, page_size):
    with path.open("r+b") as file:  # the header of a b-tree page in the middle of the file
        page = path.stat().st_size // page_size // 2
        file.seek(page * page_size)
        data = file.read(16)
        file.seek(page * page_size)
        file.write(bytes(b ^ 0xFF for b in data))


@pytest.mark.parametrize("damage", [_truncate, _flip_page], ids=["truncated", "flipped-page"])
def test_a_damaged_lab_database_is_refused_in_one_line_and_left_as_it_was(tmp_path, damage):
    """The integrity check (PRAGMA quick_check) on open: a damaged file never reaches a report."""
    path = tmp_path / "lab.sqlite"
    damage(path, _filled(path))
    before = _digest(path)
    with pytest.raises(StoreError, match="is damaged") as error:
        Store.open(path)
    assert "\n" not in str(error.value) and "another --db" in str(error.value)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.sqlite"]  # no -wal, no -shm


def test_a_schema_1_database_gets_the_claims_table(tmp_path):
    path = tmp_path / "lab.sqlite"
    with Store.open(path) as store:
        store.add_run(_row("a"), {"val_loss": [(0, 1.0)]})
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE claims")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        assert store.run_keys() == {"a"}
        assert store.claim("b") == "mine"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_claims_between_two_stores(tmp_path):
    path = tmp_path / "lab.sqlite"
    with Store.open(path) as one, Store.open(path) as two:
        assert one.claim("k") == "mine"
        assert one.claim("k") == "mine"  # its own claim again
        assert two.claim("k") == "busy" and two.claim_state("k") == "busy"
        one.heartbeat()
        one.add_run(_row("k"), {"val_loss": [(0, 1.0)]})  # storing a run drops its claim
        assert two.claim("k") == "done" and two.claim_state("k") == "done"
        assert one.conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
        assert one.claim("x") == "mine"
        one.release("x")
        assert two.claim("x") == "mine"


def test_a_claim_of_a_killed_process_is_taken_over(tmp_path):
    path = tmp_path / "lab.sqlite"
    Store.open(path).close()
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from optimlab.lab.store import Store\n"
         f"s = Store.open({str(path)!r})\n"
         "print(s.claim('k'), flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "mine"
        with Store.open(path) as store:
            assert store.claim("k") == "busy"  # its process is alive
            child.kill()
            child.wait(timeout=30)
            assert store.claim_state("k") == "free"
            assert store.claim("k") == "mine"  # taken over
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_claim_without_heartbeat_for_long_counts_as_abandoned(tmp_path, monkeypatch):
    path = tmp_path / "lab.sqlite"
    with Store.open(path) as one, Store.open(path) as two:
        assert one.claim("k") == "mine"
        assert two.claim("k") == "busy"  # same host, live pid, fresh heartbeat
        now = store_module.time.time()
        monkeypatch.setattr(store_module.time, "time", lambda: now + 1 + store_module.STALE_CLAIM)
        assert two.claim("k") == "mine"  # a live pid that stopped beating (pid reused, hung)

"""The results store: one SQLite file (standard-library ``sqlite3``), one transaction per run.

Tables::

    meta(key, value)                  application name and schema version
    studies(key, created, updated, profile, plan)   a study's plan as JSON
    runs(key, group_key, problem, optimizer, schedule, lr, seed, steps, status,
         steps_done, final_train_loss, final_val_loss, final_val_acc,
         wall_s, step_ms, finished, config, env)
    metrics(run, name, step, value)   the per-step series (train_loss, val_loss, lr, ...)
    arrays(run, name, dtype, shape, data)   2-D trajectories, raw little-endian bytes
    claims(key, owner, pid, host, started, heartbeat)   runs being trained right now

A row in ``runs`` exists only for a run that ended (``finished`` or
``diverged``): :meth:`Store.add_run` writes the row, its metrics and its arrays
in a single transaction, so a process killed at any moment leaves either the
whole run or nothing of it.  The file is in WAL mode (readers never block the
writer, a crash never corrupts it).

Opening checks that the file is ours — the SQLite header, ``PRAGMA
application_id`` and ``PRAGMA user_version`` — and that it is whole (``PRAGMA
quick_check``: every page and index readable and consistent) *before* writing
anything; any other file (random bytes, another program's database, a newer
schema, a truncated or damaged file) raises :class:`StoreError` with one line
saying so, and the file is left untouched.  (SQLite keeps no checksums: a byte
changed inside a stored number is not detectable; a damaged page structure is.)

Several processes may share one database.  A process *claims* a run before it
trains it (:meth:`Store.claim`); the others skip a run claimed by a live
process and wait for its result when they need it.  A claim whose process has
died (its pid is gone on this host, or it has not refreshed its heartbeat for
:data:`STALE_CLAIM` seconds) is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "RunRow", "Store", "StoreError", "inspect"]

APPLICATION_ID = 0x4F4C4142  # "OLAB"
SCHEMA_VERSION = 2
#: seconds without a heartbeat after which a claim counts as abandoned (a live process
#: refreshes its claim every few seconds while it trains; see Store.heartbeat)
STALE_CLAIM = 120.0
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE studies (
    key TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,
    profile TEXT NOT NULL, plan TEXT NOT NULL
);
CREATE TABLE runs (
    key TEXT PRIMARY KEY, group_key TEXT NOT NULL,
    problem TEXT NOT NULL, optimizer TEXT NOT NULL, schedule TEXT NOT NULL,
    lr REAL NOT NULL, seed INTEGER NOT NULL, steps INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('finished', 'diverged')),
    steps_done INTEGER NOT NULL,
    final_train_loss REAL, final_val_loss REAL, final_val_acc REAL,
    wall_s REAL NOT NULL, step_ms REAL NOT NULL, finished REAL NOT NULL,
    config TEXT NOT NULL, env TEXT NOT NULL
);
CREATE INDEX runs_group ON runs (group_key, seed);
CREATE TABLE metrics (
    run TEXT NOT NULL REFERENCES runs (key), name TEXT NOT NULL,
    step INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (run, name, step)
) WITHOUT ROWID;
CREATE TABLE arrays (
    run TEXT NOT NULL REFERENCES runs (key), name TEXT NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (run, name)
);
"""
#: schema 2 added the claims; a schema-1 database gets the table when it is opened
_CLAIMS = """
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    started REAL NOT NULL, heartbeat REAL NOT NULL
)
"""

_RUN_COLUMNS = (
    "key", "group_key", "problem", "optimizer", "schedule", "lr", "seed", "steps", "status",
    "steps_done", "final_train_loss", "final_val_loss", "final_val_acc", "wall_s", "step_ms",
    "finished", "config", "env",
)  # fmt: skip


class StoreError(Exception):
    """The database file cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class RunRow:
    key: str
    group_key: str
    problem: str
    optimizer: str
    schedule: str
    lr: float
    seed: int
    steps: int
    status: str
    steps_done: int
    final_train_loss: float | None
    final_val_loss: float | None
    final_val_acc: float | None
    wall_s: float
    step_ms: float
    finished: float
    config: str
    env: str

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"


def _check_file(path: Path) -> int:
    """The schema version of the database at ``path``, 0 if there is none yet (absent or empty).

    Raises :class:`StoreError` for anything but a whole lab database this optimlab can use.
    """
    try:
        with path.open("rb") as file:
            head = file.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return 0
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a database file") from None
    except OSError as error:
        raise StoreError(f"cannot read {path}: {error.strerror}") from None
    if not head:
        return 0
    if head != _SQLITE_MAGIC:
        raise StoreError(f"{path} is not an SQLite database (not written by optimlab lab)")
    # read-only: a foreign, newer or damaged database is never modified; without a -wal file
    # beside it (no process has it open, nothing to replay) also "immutable", so that SQLite
    # leaves no -wal and -shm files beside a file it then refuses
    wal = path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if wal else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30)
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{path} is damaged ({error}); move it away or use another --db") from None
    if app == 0 and tables == 0 and problems == ["ok"]:
        return 0  # an empty database (e.g. killed while being created): nothing to lose
    if app != APPLICATION_ID:
        raise StoreError(
            f"{path} is an SQLite database of another program (application_id {app:#x}), "
            "not an optimlab lab database"
        )
    if problems != ["ok"]:
        detail = " ".join(problems[0].split())[:200]
        raise StoreError(
            f"{path} is damaged (SQLite's integrity check: {detail}); "
            "move it away or use another --db"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has lab schema {version}, newer than this optimlab's {SCHEMA_VERSION}; "
            "upgrade optimlab"
        )
    if version < 1:
        raise StoreError(f"{path} has no lab schema version; use a new --db file")
    return version


def inspect(path: str | Path) -> int:
    """Check the file at ``path`` without changing it: its lab schema version, 0 if there is
    no database yet; :class:`StoreError` if it is not a whole lab database."""
    return _check_file(Path(path))


def _alive(pid: int, host: str, heartbeat: float) -> bool:
    """Whether the process that wrote a claim may still be working on it."""
    if time.time() - heartbeat > STALE_CLAIM:
        return False
    if host != socket.gethostname():
        return True  # cannot look: trust the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _write_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";")[:-1]:
        conn.execute(statement)
    conn.execute(_CLAIMS)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("application", "optimlab lab"), ("schema", str(SCHEMA_VERSION))],
    )


def _create(path: Path) -> None:
    """A new database at ``path``, built beside it and linked into place only if nothing is
    there yet: two processes starting on one new file both end up with the one that got
    there first, and neither ever opens the other's half-made file (which SQLite would
    report as locked, or as a database of another program)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {path}: {error}") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
        with _transaction(conn):
            _write_schema(conn)
        conn.close()  # the last connection: its -wal file goes
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process's database got there first
    except (sqlite3.Error, OSError) as error:
        raise StoreError(f"cannot create {path}: {error}") from None
    finally:
        conn.close()
        tmp.unlink(missing_ok=True)


def _has_runs_table(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone())


class Store:
    """The lab's database: :meth:`open` it, then use it as a context manager or :meth:`close` it."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.pid = os.getpid()
        self.host = socket.gethostname()
        #: identifies this process's claims, also against a later process with the same pid
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> Store:
        path = Path(path)
        version = _check_file(path)
        exists = version > 0
        if not exists and not create:
            raise StoreError(f"no lab database at {path} (run `optimlab lab` first)")
        if not exists and not path.exists():
            _create(path)  # whole, or another process's whole one: never half-made
            exists, version = True, SCHEMA_VERSION
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open {path}: {error}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable up to the last commit
            conn.execute("PRAGMA foreign_keys=ON")
            if not exists:  # an empty file there already: the schema goes into it
                with _transaction(conn):  # another process may have created it meanwhile
                    if not _has_runs_table(conn):
                        _write_schema(conn)
            if exists and version < SCHEMA_VERSION:
                with _transaction(conn):
                    conn.execute(_CLAIMS)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                    )
        except sqlite3.Error as error:
            conn.close()
            raise StoreError(f"cannot use {path}: {error}") from None
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- studies ---------------------------------------------------------------

    def save_study(self, key: str, profile: str, plan: Mapping[str, Any]) -> None:
        now = time.time()
        with _transaction(self.conn):
            self.conn.execute(
                "INSERT INTO studies VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET updated = excluded.updated",
                (key, now, now, profile, json.dumps(plan, sort_keys=True)),
            )

    def set_meta(self, key: str, value: Any) -> None:
        with _transaction(self.conn):
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        try:
            return None if row is None else json.loads(row[0])
        except ValueError:
            return None

    def latest_study(self) -> tuple[str, str, dict[str, Any]] | None:
        row = self.conn.execute(
            "SELECT key, profile, plan FROM studies ORDER BY updated DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2]))

    # --- runs ------------------------------------------------------------------

    def add_run(
        self,
        row: Mapping[str, Any],
        series: Mapping[str, Iterable[tuple[int, float]]],
        arrays: Mapping[str, np.ndarray] | None = None,
    ) -> bool:
        """Write one ended run — its row, metrics and arrays — in one transaction.

        Returns False, writing nothing, if a run with this key is already stored (another
        process sharing the database finished it first: ``BEGIN IMMEDIATE`` serializes writers).
        """
        values = [row[c] for c in _RUN_COLUMNS]
        with _transaction(self.conn):
            self.conn.execute(
                "DELETE FROM claims WHERE key = ? AND owner = ?", (row["key"], self.owner)
            )
            if self.conn.execute("SELECT 1 FROM runs WHERE key = ?", (row["key"],)).fetchone():
                return False
            self.conn.execute(
                f"INSERT INTO runs VALUES ({', '.join('?' * len(_RUN_COLUMNS))})", values
            )
            self.conn.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?)",
                (
                    (row["key"], name, step, value)
                    for name, s in series.items()
                    for step, value in s
                ),
            )
            for name, array in (arrays or {}).items():
                array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
                self.conn.execute(
                    "INSERT INTO arrays VALUES (?, ?, ?, ?, ?)",
                    (row["key"], name, array.dtype.str, json.dumps(array.shape), array.tobytes()),
                )
        return True

    # --- claims: several processes on one database -------------------------------

    def claim(self, key: str) -> str:
        """Claim run ``key`` for this process: "mine" (train it), "done" (stored already) or
        "busy" (a live process has claimed it).  A dead process's claim is taken over."""
        with _transaction(self.conn):
            if self.conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone():
                return "done"
            other = self.conn.execute(
                "SELECT owner, pid, host, heartbeat FROM claims WHERE key = ?", (key,)
            ).fetchone()
            if other and other[0] != self.owner and _alive(*other[1:]):
                return "busy"
            now = time.time()
            self.conn.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                (key, self.owner, self.pid, self.host, now, now),
            )
        return "mine"

    def claim_state(self, key: str) -> str:
        """ "done", "busy" (claimed by a live process, this one included) or "free"."""
        if self.conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone():
            return "done"
        other = self.conn.execute(
            "SELECT pid, host, heartbeat FROM claims WHERE key = ?", (key,)
        ).fetchone()
        return "busy" if other and _alive(*other) else "free"

    def release(self, key: str) -> None:
        """Drop this process's claim on ``key`` (the run was not finished)."""
        with _transaction(self.conn):
            self.conn.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def heartbeat(self) -> None:
        """Tell the other processes that this one's claims are still being worked on."""
        with _transaction(self.conn):
            self.conn.execute(
                "UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), self.owner)
            )

    # --- reading -----------------------------------------------------------------

    def run_keys(self) -> set[str]:
        return {k for (k,) in self.conn.execute("SELECT key FROM runs")}

    def runs(self, group_key: str | None = None) -> list[RunRow]:
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
        args: tuple = ()
        if group_key is not None:
            sql, args = sql + " WHERE group_key = ?", (group_key,)
        return [RunRow(*r) for r in self.conn.execute(sql + " ORDER BY finished", args)]

    def series(self, run: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.conn.execute(
            "SELECT step, value FROM metrics WHERE run = ? AND name = ? ORDER BY step", (run, name)
        ).fetchall()
        data = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        return data[:, 0].astype(np.int64), data[:, 1]

    def array(self, run: str, name: str) -> np.ndarray | None:
        row = self.conn.execute(
            "SELECT dtype, shape, data FROM arrays WHERE run = ? AND name = ?", (run, name)
        ).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[2], dtype=np.dtype(row[0])).reshape(json.loads(row[1]))


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (KeyboardInterrupt included)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type | None, *rest: object) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")

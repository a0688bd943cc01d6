"""Checkpoints that are written atomically and refused when damaged.

A checkpoint file is a small header (magic, format version, payload length,
SHA-256 of the payload) followed by the bytes of ``torch.save``.  ``save``
writes to a temporary file in the same directory, flushes it to disk and then
renames it over the target, so a crash at any moment leaves either the old
checkpoint or the new one, never half of one.  ``load`` checks the length and
the hash before unpickling anything, so a truncated or corrupted file raises
:class:`CheckpointError` saying what is wrong, instead of an obscure zip error.

A save killed mid-write (``kill -9``, a lost node) leaves its temporary file
behind; the next save of the same target removes such debris (see
:func:`remove_stale_temporaries`).

    >>> import optimlab.checkpoint as ckpt
    >>> ckpt.save("run.ckpt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
    ...                        "schedule": sched.state_dict(), "rng": ckpt.rng_state()})
    >>> state = ckpt.load("run.ckpt")
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import socket
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "atomic_write",
    "load",
    "remove_stale_temporaries",
    "rng_state",
    "save",
    "set_rng_state",
]

MAGIC = b"OPTIMLAB-CKPT\n"
VERSION = 1
_HEADER = struct.Struct(f"<{len(MAGIC)}sHQ32s")  # magic, version, payload length, sha256


class CheckpointError(RuntimeError):
    """The file is not a complete, intact optimlab checkpoint."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file, then move it to ``path`` in one step.

    The temporary file lives in the target's directory (a rename is only atomic
    within one file system) and is removed if ``write`` raises.  Its name says who
    writes it (``.<name>.<pid>-<host>.<random>.tmp``), so that a later call can
    tell the debris of a killed writer from a live one's file.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    owner = f"{os.getpid()}-{_HOST}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{owner}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# A temporary file nobody has touched for this long is debris even when its writer cannot
# be checked (another host, a pid reused since): writing moves the mtime at least every
# 2 GiB (Linux's largest write), and no fsync of a checkpoint stalls for a day.
STALE_AFTER_SECONDS = 24 * 3600
# The host in a temporary's name: a pid says nothing about a writer on another machine
# that shares the directory (NFS).  A hash keeps the name parseable (hosts have dots).
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"


def remove_stale_temporaries(path: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Remove the temporary files that killed saves of ``path`` left; return them.

    A temporary is stale when its writer, on this host, is no longer running, or
    when it has not changed for :data:`STALE_AFTER_SECONDS` (writers on other hosts,
    files of optimlab versions that named no writer).  The files of a live writer
    are left alone: two processes may save the same path at once.
    """
    path = Path(path)
    pattern = re.compile(
        rf"\.{re.escape(path.name)}\.(?:(\d+)-([0-9a-f]{{8}})\.)?[a-z0-9_]{{8}}\.tmp"
    )
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed  # a missing directory is the caller's error to raise
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid, host = match.groups()
        try:
            dead = pid is not None and host == _HOST and not _running(int(pid))
            if dead or now - entry.stat().st_mtime > STALE_AFTER_SECONDS:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # renamed by its writer or removed by another saver meanwhile;
            continue  # or not ours to remove: cleaning up never fails a save
    return removed


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists here (True where that cannot be asked)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # Windows' os.kill(pid, 0) would end the process: fall back on age
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def save(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (anything ``torch.save`` takes) to ``path`` atomically, with a checksum."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getbuffer()
    header = _HEADER.pack(MAGIC, VERSION, len(payload), hashlib.sha256(payload).digest())

    def write(file: BinaryIO) -> None:
        file.write(header)
        file.write(payload)

    atomic_write(path, write)


def load(path: str | os.PathLike, *, map_location: Any = None, weights_only: bool = True) -> Any:
    """Read a checkpoint written by :func:`save`; :class:`CheckpointError` if it is damaged."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    if len(data) < _HEADER.size or not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not an optimlab checkpoint (bad header)")
    _, version, length, digest = _HEADER.unpack_from(data)
    if version != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}; this optimlab reads {VERSION}"
        )
    payload = memoryview(data)[_HEADER.size :]
    if len(payload) != length:
        raise CheckpointError(
            f"{path} is truncated or padded: {len(payload)} payload bytes, expected {length}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is corrupt: its checksum does not match its contents")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=weights_only)


def rng_state() -> dict[str, Any]:
    """Every random generator a CPU training loop commonly draws from, for exact resume."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": _python_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {
        "key": numpy_state["state"]["key"].numpy().astype(np.uint32),
        "pos": numpy_state["state"]["pos"],
    }
    np.random.set_state(numpy_state)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# weights_only loading accepts tensors, lists and numbers, but not numpy arrays
# or tuples of them: the generators' states are converted to those.


def _numpy_state() -> dict[str, Any]:
    state = np.random.get_state(legacy=False)
    key = torch.from_numpy(state["state"]["key"].astype(np.int64))
    return {**state, "state": {"key": key, "pos": int(state["state"]["pos"])}}


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]

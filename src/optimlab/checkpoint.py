"""Checkpoints that are written atomically and refused when damaged.

A checkpoint file is a small header (magic, format version, payload length,
SHA-256 of the payload) followed by the bytes of ``torch.save``.  ``save``
writes to a temporary file in the same directory, flushes it to disk and then
renames it over the target, so a crash at any moment leaves either the old
checkpoint or the new one, never half of one.  ``load`` checks the length and
the hash before unpickling anything, so a truncated or corrupted file raises
:class:`CheckpointError` saying what is wrong, instead of an obscure zip error.

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
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = ["CheckpointError", "atomic_write", "load", "rng_state", "save", "set_rng_state"]

MAGIC = b"OPTIMLAB-CKPT\n"
VERSION = 1
_HEADER = struct.Struct(f"<{len(MAGIC)}sHQ32s")  # magic, version, payload length, sha256


class CheckpointError(RuntimeError):
    """The file is not a complete, intact optimlab checkpoint."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file, then move it to ``path`` in one step.

    The temporary file lives in the target's directory (a rename is only atomic
    within one file system) and is removed if ``write`` raises.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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

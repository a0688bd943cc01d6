"""What ``optimlab lab`` checks before it makes anything: its dependencies and its paths.

A study that cannot finish should fail before it has created an output
directory or a database, with one line saying why.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

__all__ = ["EXTRAS", "check_paths", "extras_problem", "make_folders", "missing_extras"]

#: module -> the package that provides it; all come with `pip install "optimlab[lab]"`
EXTRAS = {"matplotlib": "matplotlib", "sklearn": "scikit-learn", "scipy": "scipy",
          "mnist1d": "mnist1d", "tqdm": "tqdm"}  # fmt: skip


def missing_extras() -> list[str]:
    """The lab's dependencies that are not installed (by their package names)."""
    missing = []
    for module, package in EXTRAS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(package)
    return missing


def extras_problem() -> str | None:
    missing = missing_extras()
    if not missing:
        return None
    return (
        f"optimlab lab needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
        'not installed; install the lab\'s dependencies with: pip install "optimlab[lab]"'
    )


def check_paths(out: Path, db: Path | None = None) -> str | None:
    """None if the report can be written in ``out`` and the database at ``db``, else why.

    Nothing is made here (a bad path creates nothing); :func:`make_folders` makes them.
    """
    if db is not None and db.is_dir():
        return f"--db {db} is a directory, not a database file"
    if db is not None and db.exists() and not os.access(db, os.R_OK | os.W_OK):
        return f"cannot write to database {db}: permission denied"
    for folder, what in _folders(out, db):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            if existing == folder:
                return f"{what} {folder} is a file, not a directory"
            return f"cannot make {what} {folder}: {existing} is a file"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"cannot write to {what} {folder}: permission denied"
    return None


def _folders(out: Path, db: Path | None) -> list[tuple[Path, str]]:
    return [(out, "output directory")] + ([(db.parent, "database folder")] if db else [])


def make_folders(out: Path, db: Path | None = None) -> str | None:
    for folder, what in _folders(out, db):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            return f"cannot write to {what} {folder}: {error.strerror or error}"
    return None

"""Fixtures shared by test files."""

from __future__ import annotations

import pytest

from optimlab.lab.store import Store


@pytest.fixture
def store(tmp_path):
    """An empty lab database (the lab's tests fill it with runs of their own)."""
    with Store.open(tmp_path / "lab.sqlite") as s:
        yield s

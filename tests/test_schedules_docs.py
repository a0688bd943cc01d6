"""The examples in the docstrings run and print what they say."""

from __future__ import annotations

import doctest

import pytest

import optimlab.schedules
from optimlab.schedules import adapter, composite, core, spec

MODULES = [optimlab.schedules, core, composite, spec, adapter]


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__ for m in MODULES])
def test_docstring_examples(module):
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0

"""The docstring examples of flowfields.gflownet run (as tests/test_doctests.py does for the
shared floor)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import flowfields.gflownet as pkg

MODULES = sorted(m.name for m in pkgutil.walk_packages(pkg.__path__, prefix="flowfields.gflownet."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_exist() -> None:
    mod = importlib.import_module("flowfields.gflownet.hypergrid")
    assert doctest.testmod(mod).attempted >= 1

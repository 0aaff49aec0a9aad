"""The docstring examples of the shared numerics and the paper packages run as doctests.

Each module's examples run in that module's namespace (``doctest.testmod``); a module with
no example passes trivially, a wrong example fails here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

#: Packages (and modules) whose docstring examples must run.
DOCTESTED = (
    "flowfields.integrate",
    "flowfields.divergence",
    "flowfields.linalg",
    "flowfields.paths",
    "flowfields.nn",
    "flowfields.matching",
    "flowfields.data",
    "flowfields.quantum",
    "flowfields.conservation",
    "flowfields.density",
)


def _modules() -> list[str]:
    out = []
    for name in DOCTESTED:
        mod = importlib.import_module(name)
        out.append(name)
        if hasattr(mod, "__path__"):
            out += [m.name for m in pkgutil.walk_packages(mod.__path__, prefix=name + ".")]
    return sorted(set(out))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_exist() -> None:
    """The seams' examples are there (the test above would pass vacuously without them)."""
    attempted = 0
    for name in (
        "flowfields.integrate.ode",
        "flowfields.integrate.options",
        "flowfields.density",
        "flowfields.paths.base",
        "flowfields.nn.layers",
        "flowfields.linalg.kmeans",
        "flowfields.integrate.quadrature",
        "flowfields.matching.cnf",
    ):
        attempted += doctest.testmod(importlib.import_module(name)).attempted
    assert attempted >= 30

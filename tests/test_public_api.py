"""Every name in every module's ``__all__`` imports, and every module declares ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import flowfields


def _modules() -> list[str]:
    out = ["flowfields"]
    for info in pkgutil.walk_packages(flowfields.__path__, prefix="flowfields."):
        out.append(info.name)
    return out


@pytest.mark.parametrize("name", _modules())
def test_all_entries_import(name: str) -> None:
    mod = importlib.import_module(name)
    if name.endswith("__main__"):
        return
    assert hasattr(mod, "__all__"), f"{name} has no __all__"
    for entry in mod.__all__:
        assert getattr(mod, entry) is not None, f"{name}.{entry}"

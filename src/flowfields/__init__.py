"""flowfields: continuous-time generative models and differentiable dynamics in PyTorch.

Importing the package is cheap: subpackages are imported on first attribute access.

Subpackages (shared numerics): ``integrate``, ``divergence``, ``linalg``,
``paths``, ``nn``, ``data``; ``density`` holds the density-model contract. One package per
paper: ``matching`` (arXiv:2210.02747),
``conservation`` (arXiv:2210.01741), ``quantum`` (arXiv:2103.12604), ``sdebnn``
(arXiv:2102.06559), ... Running things:
``engine``, ``experiments``, ``report``, ``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = (
    "errors",
    "density",
    "integrate",
    "divergence",
    "linalg",
    "paths",
    "nn",
    "data",
    "matching",
    "conservation",
    "quantum",
    "sdebnn",
    "engine",
    "experiments",
    "report",
)

__all__ = ["__version__", "load", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"flowfields.{name}")
    if name == "load":
        from flowfields.experiments import load

        return load
    raise AttributeError(f"module 'flowfields' has no attribute {name!r}")

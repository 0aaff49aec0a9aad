"""Experiments: one module per paper claim set, each with a ``Config`` and ``run``.

Contract of an experiment module (see ``docs/design.md``):

- ``NAME: str`` (the CLI name) and ``PAPER: str`` (title + arXiv id).
- ``Config``: a dataclass with ``quick()`` and ``full()`` classmethods; fields ``seed: int`` and
  ``device: str`` are set by the CLI; ``--set key=value`` overrides any other field.
- ``run(cfg, out_dir, *, resume=False, progress=True) -> flowfields.report.Result``: trains and
  evaluates, writing figures and ``checkpoint.pt`` into ``out_dir``; the runner writes
  ``metrics.json``, ``config.json`` and ``report.html``.
- ``load_model(run_dir, variant=None)`` (optional): the trained model of a finished run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["REGISTRY", "get", "names"]

#: CLI name -> module path. Modules are imported only when used.
REGISTRY: dict[str, str] = {
    "flow-matching-2d": "flowfields.experiments.flow_matching_2d",
    "flow-matching-digits": "flowfields.experiments.flow_matching_digits",
    "conservation-ot": "flowfields.experiments.conservation_ot",
    "conservation-hodge": "flowfields.experiments.conservation_hodge",
    "conservation-fluid": "flowfields.experiments.conservation_fluid",
    "steady-state-heat": "flowfields.experiments.steady_state_heat",
    "steady-state-light": "flowfields.experiments.steady_state_light",
}


def names() -> list[str]:
    """Names of the registered experiments whose module is present, in registry order."""
    import importlib.util

    return [n for n, m in REGISTRY.items() if importlib.util.find_spec(m) is not None]


def get(name: str) -> ModuleType:
    """The experiment module registered as ``name``.

    Raises:
        FlowfieldsError: if ``name`` is not registered.
    """
    from flowfields.errors import FlowfieldsError

    if name not in REGISTRY:
        raise FlowfieldsError(
            f"experiment: got {name!r}, expected one of {', '.join(REGISTRY)}. "
            "Run `flowfields list` to see them."
        )
    return importlib.import_module(REGISTRY[name])

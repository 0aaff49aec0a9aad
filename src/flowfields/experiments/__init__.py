"""Experiments: one module per paper claim set, each with a ``Config`` and ``run``.

Contract of an experiment module (see ``docs/design.md``):

- ``NAME: str`` (the CLI name) and ``PAPER: str`` (title + arXiv id).
- ``Config``: a dataclass with ``quick()`` and ``full()`` classmethods; fields ``seed: int`` and
  ``device: str`` are set by the CLI; ``--set key=value`` overrides any other field.
- ``run(cfg, out_dir, *, resume=False, progress=True) -> flowfields.report.Result``: trains and
  evaluates, writing figures and ``checkpoint.pt`` into ``out_dir``; the runner writes
  ``metrics.json``, ``config.json`` and ``report.html``.
- ``load_model(run_dir, variant=None)`` (optional): the trained model of a finished run.

Run directories (written by :mod:`flowfields.experiments.runner`) hold ``run.json`` (which
experiment, preset, status), ``config.json`` (the ``Config`` fields, flat; rebuild it with
:func:`load_config`), ``metrics.json``, ``report.html``, figures and ``checkpoint.pt``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["REGISTRY", "describe", "get", "load", "load_config", "names"]

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


def describe(name: str) -> str:
    """One-line description of an experiment: the first line of its module docstring."""
    doc = (get(name).__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def load_config(run_dir: str | Path) -> Any:
    """The ``Config`` instance a run directory was run with (tuples restored from JSON lists).

    Raises:
        FlowfieldsError: if ``run_dir`` is not a run directory.
    """
    import json

    from flowfields.experiments.runner import config_from_dict, read_run_info

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    module = get(info["experiment"])
    return config_from_dict(module.Config, json.loads((run_dir / "config.json").read_text()))


def load(run_dir: str | Path, variant: str | None = None) -> Any:
    """The trained model of a finished run, for use from Python (``flowfields.load``).

    Reads the run directory's ``run.json`` / ``config.json``, imports the experiment and calls
    its ``load_model(run_dir, variant)``. For runs that train several variants the experiment
    returns its primary one unless ``variant`` names another.

    Args:
        run_dir: a directory written by ``flowfields run`` (``runs/NAME/<timestamp>``).
        variant: which of the run's models, e.g. ``"vp"`` (experiment specific).

    Returns:
        The model (density models offer ``sample`` and ``log_prob``).

    Raises:
        FlowfieldsError: if ``run_dir`` is not a run directory, or the experiment cannot load
            models.

    Example:
        >>> model = flowfields.load("runs/flow-matching-2d/20260101-120000")
        >>> x = model.sample(1000)
    """
    from flowfields.errors import FlowfieldsError
    from flowfields.experiments.runner import read_run_info

    info = read_run_info(run_dir)
    module = get(info["experiment"])
    loader = getattr(module, "load_model", None)
    if loader is None:
        raise FlowfieldsError(
            f"run_dir: {str(run_dir)!r} is a run of {info['experiment']!r}, which does not "
            "offer load_model; read its metrics.json / checkpoint.pt instead."
        )
    return loader(Path(run_dir), variant)

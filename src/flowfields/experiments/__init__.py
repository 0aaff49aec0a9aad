"""Experiments: one module per paper claim set, each an :class:`Experiment` subclass.

Contract of an experiment module (see ``docs/design.md`` and :mod:`flowfields.experiments.base`):
it defines a subclass of :class:`~flowfields.experiments.base.Experiment` with ``NAME``, ``PAPER``
and ``Config`` (a dataclass with ``quick()`` / ``full()`` and the fields ``seed`` and
``device``; ``--set key=value`` overrides any field), supplies its own steps (``check_config``,
``train``, ``evaluate``, ``claims``, ``figures``, ``build_model``) and ends with
``EXPERIMENT = TheClass``. The registry below maps CLI names to modules, imported lazily.

Run directories (written by :mod:`flowfields.experiments.runner`) hold ``run.json`` (which
experiment, preset, status), ``config.json`` (the ``Config`` fields; rebuild it with
:func:`load_config`), ``metrics.json``, ``report.html``, figures and ``checkpoint.pt`` (every
trained model; :func:`load` rebuilds any of them).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from flowfields.experiments.base import Experiment

__all__ = ["REGISTRY", "Experiment", "describe", "get", "load", "load_config", "names"]

#: CLI name -> module path. Modules are imported only when used.
REGISTRY: dict[str, str] = {
    "flow-matching-2d": "flowfields.experiments.flow_matching_2d",
    "flow-matching-digits": "flowfields.experiments.flow_matching_digits",
    "conservation-ot": "flowfields.experiments.conservation_ot",
    "conservation-hodge": "flowfields.experiments.conservation_hodge",
    "conservation-fluid": "flowfields.experiments.conservation_fluid",
    "steady-state-heat": "flowfields.experiments.steady_state_heat",
    "steady-state-light": "flowfields.experiments.steady_state_light",
    "sdebnn-toy1d": "flowfields.experiments.sdebnn_toy1d",
    "sdebnn-digits": "flowfields.experiments.sdebnn_digits",
    "sdebnn-stl": "flowfields.experiments.sdebnn_stl",
    "smac-pendulum": "flowfields.experiments.smac_pendulum",
    "smac-mountaincar": "flowfields.experiments.smac_mountaincar",
    "smac-pomdp": "flowfields.experiments.smac_pomdp",
    "smac-halfcheetah": "flowfields.experiments.smac_halfcheetah",
    "gflownet-hypergrid": "flowfields.experiments.gflownet_hypergrid",
    "gflownet-unify": "flowfields.experiments.gflownet_unify",
    "gflownet-mle": "flowfields.experiments.gflownet_mle",
    "compression-jumps": "flowfields.experiments.compression_jumps",
    "compression-video": "flowfields.experiments.compression_video",
    "compression-mocap": "flowfields.experiments.compression_mocap",
    "voronoi-discrete2d": "flowfields.experiments.voronoi_discrete2d",
    "voronoi-categorical": "flowfields.experiments.voronoi_categorical",
    "voronoi-mixture": "flowfields.experiments.voronoi_mixture",
    "ppd-sphere": "flowfields.experiments.ppd_sphere",
    "ppd-torus": "flowfields.experiments.ppd_torus",
    "cpflow-toy": "flowfields.experiments.cpflow_toy",
    "cpflow-ot": "flowfields.experiments.cpflow_ot",
    "cpflow-tabular": "flowfields.experiments.cpflow_tabular",
    "cpflow-vi": "flowfields.experiments.cpflow_vi",
}


def names() -> list[str]:
    """Names of the registered experiments whose module is present, in registry order."""
    import importlib.util

    return [n for n, m in REGISTRY.items() if importlib.util.find_spec(m) is not None]


def get(name: str) -> type[Experiment]:
    """The experiment class registered as ``name`` (its module's ``EXPERIMENT``).

    Raises:
        FlowfieldsError: if ``name`` is not registered.
    """
    from flowfields.errors import FlowfieldsError

    if name not in REGISTRY:
        raise FlowfieldsError(
            f"experiment: got {name!r}, expected one of {', '.join(REGISTRY)}. "
            "Run `flowfields list` to see them."
        )
    module = importlib.import_module(REGISTRY[name])
    cls = getattr(module, "EXPERIMENT", None)
    if not (isinstance(cls, type) and issubclass(cls, Experiment)):
        raise FlowfieldsError(
            f"experiment: module {REGISTRY[name]!r} defines no EXPERIMENT (an Experiment subclass)."
        )
    return cls


def describe(name: str) -> str:
    """One-line description of an experiment: the first line of its module docstring."""
    import sys

    doc = (sys.modules[get(name).__module__].__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def load_config(run_dir: str | Path) -> Any:
    """The ``Config`` instance a run directory was run with (verified, tuples restored).

    Raises:
        FlowfieldsError: if ``run_dir`` is not a run directory or its config is damaged.
    """
    from flowfields.experiments.config import config_from_dict
    from flowfields.experiments.rundir import read_run_info
    from flowfields.report.records import read_json

    info = read_run_info(run_dir)
    cfg_file = Path(run_dir) / "config.json"
    return config_from_dict(get(info["experiment"]).Config, read_json(cfg_file), str(cfg_file))


def load(run_dir: str | Path, variant: str | None = None) -> Any:
    """The trained model of a finished run, for use from Python (``flowfields.load``).

    Reads the run directory's ``run.json``, finds the experiment and rebuilds the model from
    the weights and config stored in ``checkpoint.pt`` (checksummed: a damaged file raises).
    Runs that train several variants return their primary one unless ``variant`` names another.

    Args:
        run_dir: a directory written by ``flowfields run`` (``runs/NAME/<timestamp>``).
        variant: which of the run's models, e.g. ``"vp"`` (experiment specific).

    Returns:
        The model in eval mode (density models offer ``sample`` and ``log_prob``).

    Raises:
        FlowfieldsError: if ``run_dir`` is not a finished run directory, its files are damaged,
            or the experiment saves no models.

    Example:
        >>> model = flowfields.load("runs/flow-matching-2d/20260101-120000")  # doctest: +SKIP
        >>> x = model.sample(1000)  # doctest: +SKIP
    """
    from flowfields.experiments.rundir import read_run_info

    info = read_run_info(run_dir)
    return get(info["experiment"]).load_model(Path(str(run_dir)), variant)

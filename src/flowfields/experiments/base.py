"""The one base every experiment stands on: :class:`Experiment`.

An experiment module defines a subclass ``class MyExperiment(Experiment, config=Config)`` (a
dataclass with ``quick()`` / ``full()`` and the fields ``seed`` and ``device``) that sets
``NAME`` and ``PAPER`` and supplies the steps it owns; the base owns everything around them:

- the run directory, seeding (once at the start, :meth:`Experiment.reseed` for variants that
  must start from the same weights: ``seed_everything(cfg.seed + offset)``, i.e. torch, NumPy
  and Python), timing, the matplotlib backend (Agg) and :class:`~flowfields.report.Result`
  assembly;
- training through :func:`flowfields.engine.fit` (:meth:`Experiment.fit` places the checkpoint
  at ``run_dir/train_<name>.pt``, passes ``resume`` / ``progress`` and labels the bar);
- saving every trained model in one checksummed ``checkpoint.pt`` (through
  :mod:`flowfields.engine.checkpoint`) and loading any of them back generically
  (:meth:`Experiment.load_model`, behind ``flowfields.load(run_dir, variant)``).

The steps, called in this order by :meth:`Experiment.execute`:

1. ``check_config()``: refuse bad settings (``FlowfieldsError``) before anything is written.
2. ``train() -> {variant: module}``: the trained models (may be empty).
3. ``evaluate(models)``: fill ``self.metrics`` and ``self.tables``; keep on ``self`` what the
   claims and figures need.
4. ``claims() -> list[Claim]``.
5. ``figures(models)``: draw with ``self.plt`` and save with :meth:`Experiment.save_figure`.

``build_model(cfg, variant)`` (a classmethod) builds an untrained model of a variant: the base
uses it to load saved weights back. Each experiment module ends with ``EXPERIMENT = TheClass``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Config:
    ...     seed: int = 0
    ...     device: str = "cpu"
    ...     @classmethod
    ...     def quick(cls): return cls()
    ...     @classmethod
    ...     def full(cls): return cls()
    >>> class Tiny(Experiment, config=Config):
    ...     NAME, PAPER = "tiny", "A paper (arXiv:0000.00000)"
    ...     def evaluate(self, models):
    ...         self.metrics["answer"] = 42
    >>> import tempfile
    >>> Tiny(Config(), tempfile.mkdtemp()).execute().metrics
    {'answer': 42}
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from flowfields.engine.checkpoint import load_checkpoint, save_checkpoint
from flowfields.engine.loop import FitResult, fit
from flowfields.engine.seeding import seed_everything
from flowfields.engine.state import TrainState
from flowfields.errors import CheckpointError, FlowfieldsError, check
from flowfields.report.figures import save_figure
from flowfields.report.result import Claim, Result

__all__ = ["MODEL_FILE", "Experiment"]

#: The file in a run directory holding every trained model of the run.
MODEL_FILE = "checkpoint.pt"


class Experiment:
    """Base of every experiment: a paper's claims reproduced in one run directory.

    Args:
        cfg: the experiment's ``Config`` instance.
        run_dir: the run directory (created if needed).
        resume: continue training from the checkpoints in ``run_dir``.
        progress: show progress bars.

    Attributes:
        cfg, run_dir, resume, progress: as given.
        device: ``torch.device(cfg.device)`` (CPU when the config has no device).
        metrics: flat metrics (``"variant/name"`` keys), written to ``metrics.json``.
        tables: named tables (lists of row dicts) for the report.
        figure_paths: figures saved so far, relative to ``run_dir``.
        artifacts: plain values / tensors saved with the models in ``checkpoint.pt`` (e.g. the
            best designs of an experiment that trains no network).
    """

    NAME: ClassVar[str] = ""
    PAPER: ClassVar[str] = ""
    #: The configuration dataclass, given as ``class MyExperiment(Experiment, config=Config)``.
    Config: ClassVar[type[Any]]
    #: The variants ``flowfields.load`` may ask for; the first is the default.
    VARIANTS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, config: type[Any] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if config is not None:
            check(
                dataclasses.is_dataclass(config) and isinstance(config, type),
                "config",
                config,
                "a Config dataclass (class MyExperiment(Experiment, config=Config))",
            )
            cls.Config = config

    def __init__(
        self, cfg: Any, run_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True
    ) -> None:
        check(
            isinstance(cfg, self.Config),
            "cfg",
            cfg,
            f"an instance of {type(self).__name__}.Config",
        )
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = bool(resume)
        self.progress = bool(progress)
        self.device = torch.device(getattr(cfg, "device", "cpu"))
        self.metrics: dict[str, Any] = {}
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.figure_paths: list[Path] = []
        self.artifacts: dict[str, Any] = {}

    # ------------------------------------------------------------------ steps to supply
    def check_config(self) -> None:
        """Raise :class:`FlowfieldsError` for settings the experiment cannot run."""

    def train(self) -> dict[str, nn.Module]:
        """Train and return the models to save, by variant name (default: none)."""
        return {}

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        """Fill :attr:`metrics` and :attr:`tables` from the trained ``models``."""

    def claims(self) -> list[Claim]:
        """The paper's claims checked against :attr:`metrics`."""
        return []

    def figures(self, models: dict[str, nn.Module]) -> None:
        """Draw the run's figures with :attr:`plt` and :meth:`save_figure`."""

    @classmethod
    def build_model(cls, cfg: Any, variant: str) -> nn.Module:
        """An untrained model of ``variant`` (override to make the run's models loadable)."""
        raise FlowfieldsError(
            f"experiment {cls.NAME!r} saves no loadable models; read its metrics.json instead."
        )

    # ------------------------------------------------------------------ provided
    @classmethod
    def run(
        cls, cfg: Any, run_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True
    ) -> Result:
        """``cls(cfg, run_dir, resume=..., progress=...).execute()``: one run, from Python.

        The CLI (``flowfields run``) wraps this with the run directory's records
        (``run.json``, ``config.json``, ``metrics.json``, ``report.html``) and its lock.
        """
        return cls(cfg, run_dir, resume=resume, progress=progress).execute()

    def execute(self) -> Result:
        """Run the steps and assemble the :class:`~flowfields.report.Result`."""
        t0 = time.perf_counter()
        self.check_config()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.reseed()
        models = self.train()
        self.evaluate(models)
        claims = self.claims()
        self.figures(models)
        if models or self.artifacts:
            self.save_models(models, self.artifacts)
        return Result(
            name=self.NAME,
            paper=self.PAPER,
            config=dataclasses.asdict(self.cfg),
            metrics=self.metrics,
            claims=claims,
            figures=list(self.figure_paths),
            tables=self.tables,
            wall_s=time.perf_counter() - t0,
        )

    def reseed(self, offset: int = 0) -> None:
        """``seed_everything(cfg.seed + offset)``: torch (CPU and CUDA), NumPy and Python."""
        seed_everything((int(getattr(self.cfg, "seed", 0)) + offset) % 2**32)

    def fit(
        self,
        name: str,
        target: TrainState | nn.Module,
        step_fn: Callable[..., Any],
        *,
        steps: int,
        **kwargs: Any,
    ) -> FitResult:
        """:func:`flowfields.engine.fit` with this run's checkpoint, resume and progress.

        Args:
            name: the training's name: checkpoint ``run_dir/train_<name>.pt``, bar label
                ``NAME:name``.
            target, step_fn, steps, kwargs: as in :func:`flowfields.engine.fit`.
        """
        return fit(
            target,
            step_fn,
            steps=steps,
            checkpoint=self.run_dir / f"train_{name}.pt",
            resume=self.resume,
            progress=self.progress,
            desc=f"{self.NAME}:{name}",
            **kwargs,
        )

    @property
    def plt(self) -> Any:
        """``matplotlib.pyplot`` on the non-interactive Agg backend."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt

    def save_figure(self, fig: Any, filename: str) -> Path:
        """Save ``fig`` as ``run_dir/filename`` (PNG) and list it in the report."""
        path = save_figure(fig, self.run_dir / filename)
        rel = path.relative_to(self.run_dir)
        if rel not in self.figure_paths:
            self.figure_paths.append(rel)
        return path

    def save_models(
        self, models: Mapping[str, nn.Module], extra: Mapping[str, Any] | None = None
    ) -> Path:
        """Write every model's weights (and ``extra`` values) to ``run_dir/checkpoint.pt``.

        The file is written atomically with a checksum (:func:`engine.save_checkpoint`);
        ``flowfields.load`` verifies it before use.
        """
        state = {
            "experiment": self.NAME,
            "config": dataclasses.asdict(self.cfg),
            "models": {k: m.state_dict() for k, m in models.items()},
            "extra": dict(extra or {}),
        }
        return save_checkpoint(state, self.run_dir / MODEL_FILE, keep_previous=False)

    @classmethod
    def load_model(cls, run_dir: str | os.PathLike, variant: str | None = None) -> Any:
        """The trained model ``variant`` of a finished run (default: the first of
        :attr:`VARIANTS` that was saved), rebuilt from the config stored with the weights, in
        eval mode.

        Raises:
            CheckpointError: no, damaged or foreign ``checkpoint.pt``.
            FlowfieldsError: a variant the run did not save.
        """
        path = Path(run_dir) / MODEL_FILE
        if not path.is_file():
            raise CheckpointError(
                f"run_dir: {str(run_dir)!r} has no {MODEL_FILE}, expected a finished "
                f"{cls.NAME} run directory (did the run finish?)."
            )
        state = load_checkpoint(path)
        if state.get("experiment") != cls.NAME or "models" not in state:
            raise CheckpointError(
                f"run_dir: {str(path)!r} is not a model file of a {cls.NAME} run."
            )
        saved = tuple(state["models"])
        if variant is None:
            variant = next((v for v in cls.VARIANTS if v in saved), saved[0] if saved else None)
        check(variant in saved, "variant", variant, f"one of the saved variants {saved}")
        assert variant is not None
        from flowfields.experiments.runner import config_from_dict

        model = cls.build_model(config_from_dict(cls.Config, state["config"]), variant)
        try:
            model.load_state_dict(state["models"][variant])
        except RuntimeError as err:
            raise CheckpointError(
                f"run_dir: the {variant!r} weights in {str(path)!r} do not fit the model built "
                f"from its config.json ({str(err).splitlines()[0][:160]})."
            ) from err
        return model.eval()

"""The train state: every module, optimizer, schedule, average and extra state one run changes.

:class:`TrainState` is what :func:`flowfields.engine.fit` trains and checkpoints. It holds any
number of modules and optimizers (SAC: actor, twin critics, target networks, temperature;
GFlowNets: the policies and log Z at its own learning rate), each optimizer with its own learning
rate and schedule, EMA copies of chosen modules, and extra objects with ``state_dict`` (a replay
buffer, an environment's RNG). A step function updates it through :meth:`TrainState.update`, which
owns the backward pass, gradient clipping, the NaN/Inf guard and the optimizer step.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(2, 1)
    >>> state = TrainState({"net": net}, {"net": torch.optim.SGD(net.parameters(), lr=0.1)})
    >>> loss = state.update("net", net(torch.ones(4, 2)).pow(2).mean())
    >>> loss.shape
    torch.Size([])
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from flowfields.engine.ema import EMA
from flowfields.errors import CheckpointError, FlowfieldsError, check, describe

__all__ = ["BestRecord", "GeneratorState", "Stateful", "TrainState"]

#: How many of the latest losses of each optimizer a non-finite error reports.
RECENT = 20


@runtime_checkable
class Stateful(Protocol):
    """Anything the train state can checkpoint: ``state_dict()`` and ``load_state_dict(d)``."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class GeneratorState:
    """A ``torch.Generator`` as a :class:`Stateful` extra, so that resume restores its stream.

    Args:
        generator: the generator to checkpoint (e.g. an environment's or a sampler's own).
    """

    def __init__(self, generator: torch.Generator) -> None:
        check(isinstance(generator, torch.Generator), "generator", generator, "a torch.Generator")
        self.generator = generator

    def state_dict(self) -> dict[str, Tensor]:
        """``{"state": generator.get_state()}``."""
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore the generator's state."""
        self.generator.set_state(state["state"])


@dataclass
class BestRecord:
    """The best evaluation so far (``fit(..., best=(key, mode))``).

    Attributes:
        step: completed steps at that evaluation.
        value: the evaluated value of ``key``.
        weights: module name -> state dict of :meth:`TrainState.averaged` at that evaluation.
    """

    step: int
    value: float
    weights: dict[str, dict[str, Tensor]] = field(default_factory=dict)


class NonFiniteSignal(Exception):
    """Raised inside :meth:`TrainState.update` when the guard trips; ``fit`` turns it into a
    :class:`~flowfields.errors.NonFiniteLossError` with the run's context."""

    def __init__(self, name: str, step: int, what: str, loss: float, grad_norm: float) -> None:
        super().__init__(f"{what} of optimizer {name!r} at step {step}")
        self.name, self.step, self.what = name, step, what
        self.loss, self.grad_norm = loss, grad_norm


def _grad_norm(params: list[Tensor], clip: float | None) -> Tensor:
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else None)
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(grads, clip)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total_norm is None:
        return torch.nn.utils.clip_grad_norm_(grads, float("inf"))
    return total_norm([p.grad for p in grads if p.grad is not None])


def _finite_norm(tensors: list[Tensor]) -> Tensor:
    """A 0-d tensor that is finite iff every tensor is (one reduction per dtype group)."""
    norms = torch._foreach_norm([t.detach() for t in tensors if t.is_floating_point()])
    return torch.stack([n.double() for n in norms]).sum() if norms else torch.zeros(())


class _Guard:
    """The NaN/Inf guard of :meth:`TrainState.update`.

    With ``sync`` (CPU, where reading a value costs nothing) a non-finite loss or gradient norm
    raises before the optimizer steps, and non-finite weights right after it. Without ``sync``
    (CUDA) nothing is read per step: a non-finite step's gradients are zeroed on the device (so
    the weights stay finite) and the first bad step is recorded there; :meth:`flush`, called by
    ``fit`` at every logging interval and before every checkpoint, reads it and raises.
    """

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.recent: dict[str, deque[Any]] = {}
        self.pending: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def _remember(self, name: str, value: Any) -> None:
        self.recent.setdefault(name, deque(maxlen=RECENT)).append(value)

    def recent_losses(self, name: str) -> list[float]:
        return [float(v) for v in self.recent.get(name, ())]

    def before_step(
        self, name: str, step: int, loss: Tensor, gnorm: Tensor, params: list[Tensor]
    ) -> None:
        if self.sync:
            lv, gv = float(loss), float(gnorm)
            self._remember(name, lv)
            if not (math.isfinite(lv) and math.isfinite(gv)):
                what = "loss" if not math.isfinite(lv) else "gradient norm"
                raise NonFiniteSignal(name, step, what, lv, gv)
            return
        self._remember(name, loss)
        ok = torch.isfinite(loss) & torch.isfinite(gnorm)
        grads = [p.grad for p in params if p.grad is not None]
        for g in grads:  # zero the step's gradients on the device when it is not finite
            torch.where(ok, g, torch.zeros((), dtype=g.dtype, device=g.device), out=g)
        self._record(name, step, ok, loss, gnorm)

    def after_step(self, name: str, step: int, loss: Tensor, params: list[Tensor]) -> None:
        norm = _finite_norm(params)
        if self.sync:
            if not math.isfinite(float(norm)):
                what = "weights after the optimizer step"
                raise NonFiniteSignal(name, step, what, float(loss), float("nan"))
            return
        self._record(name, step, torch.isfinite(norm), loss, norm)

    def _record(self, name: str, step: int, ok: Tensor, loss: Tensor, gnorm: Tensor) -> None:
        first = self.pending.get(name)
        code = torch.full((), step, device=ok.device)
        if first is None:
            none = torch.full((), -1, device=ok.device)
            first = (none, loss.detach().double(), gnorm.detach().double(), none)
        bad_step, bad_loss, bad_norm, _ = first
        new = (~ok) & (bad_step < 0)
        self.pending[name] = (
            torch.where(new, code, bad_step),
            torch.where(new, loss.detach().double(), bad_loss),
            torch.where(new, gnorm.detach().double(), bad_norm),
            code,
        )

    def flush(self) -> None:
        """Raise :class:`NonFiniteSignal` for the first recorded non-finite step, if any."""
        for name, (bad_step, bad_loss, bad_norm, _) in self.pending.items():
            s = int(bad_step)
            if s >= 0:
                lv, gv = float(bad_loss), float(bad_norm)
                what = "loss" if not math.isfinite(lv) else "gradient norm or weights"
                raise NonFiniteSignal(name, s, what, lv, gv)


class TrainState:
    """Modules, optimizers, schedulers, EMA copies, extra state and counters of one run.

    Args:
        modules: name -> module. Every module the run trains or tracks (target networks too);
            each is checkpointed.
        optimizers: name -> optimizer; :meth:`update` steps one by name. An optimizer named like
            a module is that module's; others (e.g. ``"alpha"`` for a temperature held in a
            module) are free-standing.
        schedulers: optimizer name -> LR scheduler, stepped after each step of that optimizer.
        ema: module name -> EMA decay in [0, 1); the averages are updated by ``fit`` after every
            step and returned by :meth:`averaged`.
        extra: name -> :class:`Stateful` object (replay buffer, environment RNG, ...).
        grad_clip: clip the gradient norm of every optimizer to this value, or a mapping
            optimizer name -> value (``None``: no clipping).

    Attributes:
        step: completed steps. train_s: training seconds, evaluation excluded, summed over
        resumed segments. wall_s: wall-clock seconds including evaluation. cpu_s: this
        process's CPU seconds (``time.process_time``) including evaluation and all checkpoints
        but the last, summed over resumed segments (NaN when resumed from a checkpoint without
        it).
        history: metric name -> every logged value in order. evals: ``(step, value)`` per
        evaluation. best: the :class:`BestRecord` of ``fit(..., best=...)`` or ``None``.
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        *,
        schedulers: Mapping[str, Any] | None = None,
        ema: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
        grad_clip: float | Mapping[str, float | None] | None = None,
    ) -> None:
        self.modules = _checked_modules(modules)
        self.optimizers = _checked_optimizers(optimizers or {})
        self.schedulers = dict(schedulers or {})
        for key in self.schedulers:
            check(key in self.optimizers, "schedulers", key, "the name of one of the optimizers")
        ema = dict(ema or {})
        for key in ema:
            check(key in self.modules, "ema", key, f"one of the modules {list(self.modules)}")
        self.emas = {k: EMA(self.modules[k], d) for k, d in ema.items()}
        self.extra = dict(extra or {})
        for key, obj in self.extra.items():
            check(isinstance(obj, Stateful), f"extra[{key!r}]", obj, "an object with state_dict()")
        self.grad_clip = _checked_clip(grad_clip, self.optimizers)
        self.step = 0
        self.train_s = 0.0
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.history: dict[str, list[float]] = {}
        self.evals: list[tuple[int, Any]] = []
        self.best: BestRecord | None = None
        self._views: dict[str, nn.Module] = {}
        self._params = {k: _opt_params(o) for k, o in self.optimizers.items()}
        self._guard = _Guard(sync=all(p.device.type == "cpu" for p in self._all_params()))

    @classmethod
    def single(
        cls,
        model: nn.Module,
        *,
        lr: float = 1e-3,
        optimizer: Callable[[Iterable[Tensor]], torch.optim.Optimizer] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        ema_decay: float | None = 0.999,
        grad_clip: float | None = None,
    ) -> TrainState:
        """One module and one optimizer, both named ``"model"`` (Adam at ``lr`` by default)."""
        check(isinstance(model, nn.Module), "model", model, "a torch.nn.Module")
        params = [p for p in model.parameters() if p.requires_grad]
        check(len(params) > 0, "model", model, "a module with trainable parameters")
        if optimizer is None:
            check(
                isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0,
                "lr",
                lr,
                "a positive finite number",
            )
            opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
        else:
            opt = optimizer(params)
        check(
            isinstance(opt, torch.optim.Optimizer),
            "optimizer",
            opt,
            "a factory returning a torch.optim.Optimizer",
        )
        schedulers = {"model": scheduler(opt)} if scheduler is not None else None
        return cls(
            {"model": model},
            {"model": opt},
            schedulers=schedulers,
            ema={"model": ema_decay} if ema_decay is not None else None,
            grad_clip=grad_clip,
        )

    # ------------------------------------------------------------------ training
    def __getitem__(self, name: str) -> nn.Module:
        """The module to call during training (its DDP wrapper under ``torchrun``)."""
        check(name in self.modules, "name", name, f"one of the modules {list(self.modules)}")
        return self._views.get(name, self.modules[name])

    def averaged(self, name: str) -> nn.Module:
        """The EMA copy of module ``name`` if it has one, else the module itself."""
        check(name in self.modules, "name", name, f"one of the modules {list(self.modules)}")
        ema = self.emas.get(name)
        return ema.model if ema is not None else self.modules[name]

    def update(self, name: str, loss: Tensor) -> Tensor:
        """Backward ``loss`` and step optimizer ``name`` (and its scheduler), guarded.

        Zeroes the optimizer's gradients, backpropagates, clips (``grad_clip``), checks the loss
        and the gradient norm for NaN/Inf *before* the optimizer steps and the optimizer's
        weights after it (see :class:`_Guard`: at once on CPU, at the next logging interval on
        CUDA, where a non-finite step's gradients are zeroed instead).

        Args:
            name: which optimizer.
            loss: a scalar tensor depending on that optimizer's parameters.

        Returns:
            The detached loss, shape ``()``.
        """
        names = list(self.optimizers)
        check(name in self.optimizers, "name", name, f"one of the optimizers {names}")
        if not (isinstance(loss, Tensor) and loss.numel() == 1):
            raise FlowfieldsError(
                f"loss: got {describe(loss)} for optimizer {name!r} at step {self.step}, "
                "expected a scalar tensor."
            )
        opt, params = self.optimizers[name], self._params[name]
        opt.zero_grad(set_to_none=True)
        loss = loss.reshape(())
        loss.backward()
        gnorm = _grad_norm(params, self.grad_clip.get(name))
        value = loss.detach()
        self._guard.before_step(name, self.step, value, gnorm, params)
        opt.step()
        sched = self.schedulers.get(name)
        if sched is not None:
            sched.step()
        self._guard.after_step(name, self.step, value, params)
        return value

    def update_averages(self) -> None:
        """Move every EMA one step towards its module (``fit`` calls it after each step)."""
        for key, ema in self.emas.items():
            ema.update(self.modules[key])

    def load_best(self) -> None:
        """Load the weights of the best evaluation into :meth:`averaged` of each module."""
        check(self.best is not None, "best", None, "a recorded best evaluation (fit(best=...))")
        assert self.best is not None
        for key, weights in self.best.weights.items():
            self.averaged(key).load_state_dict(weights)

    def record_best(self, step: int, value: float) -> None:
        """Keep a copy of the averaged weights of every trained module as the best."""
        weights = {
            k: copy.deepcopy(self.averaged(k).state_dict())
            for k in self.modules
            if any(p.requires_grad for p in self.modules[k].parameters())
        }
        self.best = BestRecord(step=step, value=float(value), weights=weights)

    def _all_params(self) -> list[Tensor]:
        return [p for ps in self._params.values() for p in ps]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit (RNG states are added by ``fit``)."""
        return {
            "step": self.step,
            "train_s": self.train_s,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "emas": {k: e.state_dict() for k, e in self.emas.items()},
            "extra": {k: x.state_dict() for k, x in self.extra.items()},
            "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()},
            "evals": list(self.evals),
            "best": None if self.best is None else vars(self.best),
        }

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Restore :meth:`state_dict` output; a mismatch raises :class:`CheckpointError`."""
        try:
            _load_parts(self, state)
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise CheckpointError(
                f"checkpoint: {source!r} does not match this train state's modules / optimizers "
                f"/ EMAs / extras ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
                "Start a fresh run (resume=False or another checkpoint path)."
            ) from err
        self.step = int(state["step"])
        self.train_s = float(state["train_s"])
        self.wall_s = float(state.get("wall_s", state["train_s"]))
        self.cpu_s = float(state.get("cpu_s", math.nan))  # unknown for older checkpoints
        self.history = {k: v.tolist() for k, v in state["history"].items()}
        self.evals = list(state["evals"])
        best = state.get("best")
        self.best = None if best is None else BestRecord(**best)


def _load_parts(ts: TrainState, state: Mapping[str, Any]) -> None:
    for group, own in (
        ("modules", ts.modules),
        ("optimizers", ts.optimizers),
        ("schedulers", ts.schedulers),
        ("emas", ts.emas),
        ("extra", ts.extra),
    ):
        saved = state[group]
        if set(saved) != set(own):
            raise KeyError(f"{group}: saved {sorted(saved)}, this state has {sorted(own)}")
        for key, obj in own.items():
            obj.load_state_dict(saved[key])
    for ema in ts.emas.values():
        ema.num_updates = int(state["step"])  # one update per completed step


def _checked_modules(modules: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    check(isinstance(modules, Mapping) and len(modules) > 0, "modules", modules, "a non-empty dict")
    for key, m in modules.items():
        check(isinstance(key, str), "modules", key, "string names")
        check(isinstance(m, nn.Module), f"modules[{key!r}]", m, "a torch.nn.Module")
    return dict(modules)


def _checked_optimizers(optimizers: Mapping[str, Any]) -> dict[str, torch.optim.Optimizer]:
    check(isinstance(optimizers, Mapping), "optimizers", optimizers, "a dict name -> optimizer")
    for key, o in optimizers.items():
        check(isinstance(o, torch.optim.Optimizer), f"optimizers[{key!r}]", o, "an Optimizer")
    return dict(optimizers)


def _checked_clip(clip: Any, optimizers: Mapping[str, Any]) -> dict[str, float | None]:
    values = clip if isinstance(clip, Mapping) else dict.fromkeys(optimizers, clip)
    for key, v in values.items():
        check(
            v is None or (isinstance(v, (int, float)) and v > 0),
            "grad_clip",
            v,
            "None or a positive number",
        )
        check(key in optimizers, "grad_clip", key, "the name of one of the optimizers")
    return {k: values.get(k) for k in optimizers}


def _opt_params(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]

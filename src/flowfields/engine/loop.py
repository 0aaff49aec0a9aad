"""The training loop every experiment uses: :func:`fit` over a :class:`TrainState`.

``fit(state, step_fn, steps=...)`` runs ``step_fn(state, step)`` for each step; the step
function updates the state through :meth:`TrainState.update` (one call per optimizer, in the
order the algorithm needs) and returns its named losses / metrics. ``fit`` owns everything
around that: seeding, resuming bit for bit from atomic checksummed checkpoints, the EMAs, the
NaN/Inf guard's reports, periodic evaluation with the RNG states saved and restored, best-on-
validation selection, a training-time budget, logging and the progress bar, and DDP under
``torchrun``.

``fit(model, loss_fn, steps=..., lr=...)`` is the one-model shorthand: it builds
:meth:`TrainState.single` and a step function that calls ``update("model", loss_fn(model, step))``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from flowfields.engine import fit
    >>> net = nn.Linear(2, 2)
    >>> def loss_fn(model, step):
    ...     x = torch.randn(64, 2)
    ...     return ((model(x) - x.sin()) ** 2).mean()
    >>> res = fit(net, loss_fn, steps=20, progress=False)
    >>> len(res.losses), res.steps
    (20, 20)
"""

from __future__ import annotations

import inspect
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from flowfields.engine.checkpoint import load_latest_checkpoint, save_checkpoint
from flowfields.engine.distributed import init_distributed, is_distributed, rank, world_size
from flowfields.engine.seeding import get_rng_state, seed_everything, set_rng_state
from flowfields.engine.state import NonFiniteSignal, TrainState
from flowfields.errors import CheckpointError, FlowfieldsError, NonFiniteLossError, check, describe

__all__ = ["FitResult", "StepFn", "fit"]

#: ``step_fn(state, step) -> {name: scalar tensor or number}``.
StepFn = Callable[[TrainState, int], Mapping[str, Any] | None]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        state: the trained :class:`TrainState` (modules, optimizers, history, evaluations).
        model: ``state.modules["model"]`` when there is one (the one-model shorthand), else None.
        ema: its EMA copy (eval mode), or None.
        losses: ``state.history["loss"]``: the loss of every step (mean over ranks under DDP).
        evals: ``(step, value)`` for each evaluation, ``step`` counting completed steps.
        wall_s: wall-clock seconds (evaluation included), summed over resumed segments.
        cpu_s: this process's CPU seconds (evaluation and checkpoints but the last included),
            summed over resumed segments (``state.cpu_s``; NaN after resuming an older
            checkpoint that does not hold it).
        steps: completed optimisation steps.
    """

    state: TrainState
    model: nn.Module | None
    ema: nn.Module | None
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    steps: int = 0

    @property
    def train_s(self) -> float:
        """Training seconds, evaluation excluded (``state.train_s``)."""
        return self.state.train_s


@dataclass
class _Settings:
    steps: int
    checkpoint: Path | None
    checkpoint_every: int
    resume: bool
    eval_fn: Callable[[TrainState, int], Any] | None
    eval_every: int
    best: tuple[str, str] | None
    time_budget_s: float | None
    clock: Callable[[], float] | None
    log_every: int
    progress: bool
    desc: str
    seed: int | None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _as_eval_value(value: Any) -> Any:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, Mapping):
        return {k: _as_eval_value(v) for k, v in value.items()}
    return value


def fit(
    target: TrainState | nn.Module,
    step_fn: Callable[..., Any],
    *,
    steps: int,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    eval_fn: Callable[..., Any] | None = None,
    eval_every: int = 0,
    best: tuple[str, str] | None = None,
    time_budget_s: float | None = None,
    clock: Callable[[], float] | None = None,
    log_every: int = 50,
    progress: bool = True,
    desc: str = "train",
    seed: int | None = None,
    lr: float | None = None,
    optimizer: Callable[[Iterable[Tensor]], torch.optim.Optimizer] | None = None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    ema_decay: float | None = 0.999,
    grad_clip: float | None = None,
) -> FitResult:
    """Train ``target`` for ``steps`` steps of ``step_fn``.

    The loop is deterministic given the global RNG states: the step function draws its batch
    from torch's (or NumPy's / Python's) *global* RNG (private generators go into
    ``state.extra`` as :class:`~flowfields.engine.GeneratorState`), and every checkpoint stores
    all RNG states with the whole train state, so a run resumed from a checkpoint continues bit
    for bit as if never stopped. Evaluations run with the RNG states saved and restored, every
    module in eval mode, and their time excluded from ``state.train_s``.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised from the
    environment (gloo on CPU, nccl on CUDA), every module an optimizer trains is wrapped in
    ``DistributedDataParallel`` (``state[name]`` returns the wrapper), each rank draws its own
    batches (ranks above 0 re-seeded with ``seed + rank``), logged metrics are averaged over
    ranks, and only rank 0 writes checkpoints (holding every rank's RNG state) and shows progress.

    Args:
        target: a :class:`TrainState`, or a module for the one-model shorthand.
        step_fn: ``step_fn(state, step) -> {name: scalar}`` (``state`` form), or
            ``loss_fn(model, step) -> scalar tensor`` (module form).
        steps: total number of steps (a resumed run continues up to it).
        checkpoint: path of the training checkpoint, written atomically every
            ``checkpoint_every`` steps, at the end and when the time budget stops the run; the
            one before is kept as ``<stem>.prev<suffix>``. ``None``: no checkpoints.
        checkpoint_every: steps between checkpoints.
        resume: continue from ``checkpoint`` (or its previous copy if it is corrupt) when one
            exists; start fresh otherwise.
        eval_fn: ``eval_fn(state, step)`` (module form: ``eval_fn(model, step)`` or
            ``eval_fn(model, step, ema)``) returning a number or a dict (``None``: nothing to
            record this time), every ``eval_every`` steps and at the last step.
        eval_every: steps between evaluations (0: never).
        best: ``(key, "min" | "max")``: keep the averaged weights of the best evaluation
            (``state.best``, ``state.load_best()``); ``key`` indexes a dict evaluation.
        time_budget_s: stop once this many seconds of training (evaluation excluded, resumed
            segments included) are spent; ``steps`` is then an upper bound.
        clock: what ``time_budget_s`` (and ``state.train_s``) counts: a callable returning
            seconds, whose advance over each step is added. ``None`` (default): wall-clock
            (``time.perf_counter``). ``time.thread_time`` counts this thread's CPU time,
            which the load of other processes does not inflate (with one torch thread on a
            CPU all of a step's work runs in the calling thread). ``state.wall_s`` stays
            wall-clock.
        log_every: steps between moves of the step metrics into ``state.history`` (the only
            host synchronisation on GPUs; on CPUs the NaN guard checks every step).
        progress: show a tqdm bar (rank 0 only) with the latest metrics; with a time budget
            it counts seconds.
        desc: label of the progress bar and of error messages.
        seed: if given, :func:`seed_everything` with ``seed + rank`` before a fresh start.
        lr, optimizer, scheduler, ema_decay, grad_clip: module form only, as in
            :meth:`TrainState.single` (``lr`` default 1e-3; ``ema_decay`` None: no EMA).

    Returns:
        A :class:`FitResult`.

    Raises:
        FlowfieldsError: bad arguments, or a step function returning something that is not a
            mapping of scalars.
        CheckpointError: ``resume=True`` but the checkpoint(s) are corrupt or do not fit.
        NonFiniteLossError: a loss, gradient norm or the weights became NaN/Inf; carries the
            step, the recent losses and the path of the last good checkpoint. Training stops.
    """
    if isinstance(target, TrainState):
        given = {"lr": lr, "optimizer": optimizer, "scheduler": scheduler, "grad_clip": grad_clip}
        for name, value in given.items():
            check(value is None, name, value, "None with a TrainState (set it on the state)")
        check(ema_decay == 0.999, "ema_decay", ema_decay, "unset with a TrainState (ema=...)")
        state, fn, evaluate = target, step_fn, eval_fn
    else:
        check(isinstance(target, nn.Module), "target", target, "a TrainState or an nn.Module")
        check(callable(step_fn), "loss_fn", step_fn, "a callable loss_fn(model, step) -> tensor")
        state = TrainState.single(
            target,
            lr=1e-3 if lr is None else lr,
            optimizer=optimizer,
            scheduler=scheduler,
            ema_decay=ema_decay,
            grad_clip=grad_clip,
        )
        fn, evaluate = _single_step(step_fn), _single_eval(eval_fn)
    settings = _settings(
        steps, checkpoint, checkpoint_every, resume, evaluate, eval_every, best,
        time_budget_s, clock, log_every, progress, desc, seed,
    )  # fmt: skip
    check(callable(fn), "step_fn", fn, "a callable step_fn(state, step) -> dict")
    _Loop(state, fn, settings).run()
    model = state.modules.get("model")
    ema = state.emas.get("model")
    return FitResult(
        state=state,
        model=model,
        ema=ema.model if ema is not None else None,
        losses=list(state.history.get("loss", [])),
        evals=list(state.evals),
        wall_s=state.wall_s,
        cpu_s=state.cpu_s,
        steps=state.step,
    )


def _settings(
    steps: Any, checkpoint: Any, checkpoint_every: Any, resume: Any, eval_fn: Any,
    eval_every: Any, best: Any, time_budget_s: Any, clock: Any, log_every: Any, progress: Any,
    desc: Any, seed: Any,
) -> _Settings:  # fmt: skip
    check(_is_int(steps) and steps >= 0, "steps", steps, "a non-negative integer")
    for name, value, low in (
        ("checkpoint_every", checkpoint_every, 1),
        ("eval_every", eval_every, 0),
        ("log_every", log_every, 1),
    ):
        check(_is_int(value) and value >= low, name, value, f"an integer >= {low}")
    check(eval_fn is None or callable(eval_fn), "eval_fn", eval_fn, "None or a callable")
    check(
        best is None or (isinstance(best, tuple) and len(best) == 2 and best[1] in ("min", "max")),
        "best",
        best,
        "None or (key, 'min' | 'max')",
    )
    check(best is None or eval_fn is not None, "best", best, "an eval_fn to select on")
    check(
        time_budget_s is None or (isinstance(time_budget_s, (int, float)) and time_budget_s > 0),
        "time_budget_s",
        time_budget_s,
        "None or a positive number of seconds",
    )
    check(clock is None or callable(clock), "clock", clock, "None or a callable -> seconds")
    check(seed is None or _is_int(seed), "seed", seed, "None or an integer")
    return _Settings(
        steps=steps,
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        checkpoint_every=checkpoint_every,
        resume=bool(resume),
        eval_fn=eval_fn,
        eval_every=eval_every,
        best=best,
        time_budget_s=float(time_budget_s) if time_budget_s is not None else None,
        clock=clock,
        log_every=log_every,
        progress=bool(progress),
        desc=str(desc),
        seed=seed,
    )


def _single_step(loss_fn: Callable[[nn.Module, int], Tensor]) -> StepFn:
    def step_fn(state: TrainState, step: int) -> dict[str, Tensor]:
        loss = loss_fn(state["model"], step)
        if not (isinstance(loss, Tensor) and loss.numel() == 1):
            raise FlowfieldsError(
                f"loss_fn: returned {describe(loss)} at step {step}, expected a scalar tensor."
            )
        return {"loss": state.update("model", loss)}

    return step_fn


def _single_eval(eval_fn: Callable[..., Any] | None) -> Callable[[TrainState, int], Any] | None:
    if eval_fn is None:
        return None
    check(callable(eval_fn), "eval_fn", eval_fn, "None or a callable")
    try:
        params = inspect.signature(eval_fn).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        takes_ema = sum(1 for p in params if p.kind in kinds) >= 3 or any(
            p.kind is inspect.Parameter.VAR_POSITIONAL for p in params
        )
    except (TypeError, ValueError):
        takes_ema = False

    def evaluate(state: TrainState, step: int) -> Any:
        model = state.modules["model"]
        if not takes_ema:
            return eval_fn(model, step)
        ema = state.emas.get("model")
        return eval_fn(model, step, ema.model if ema is not None else None)

    return evaluate


class _Loop:
    """One call of :func:`fit`: restore or seed, step, log, evaluate, checkpoint."""

    def __init__(self, state: TrainState, step_fn: StepFn, s: _Settings) -> None:
        self.state, self.step_fn, self.s = state, step_fn, s
        self.pending: list[dict[str, Any]] = []
        self.last_good: Path | None = None
        self.rank, self.n_ranks = 0, 1
        self.distributed = False
        self.bar: Any = None

    # ------------------------------------------------------------------ driver
    def run(self) -> None:
        params = self.state._all_params()
        device = params[0].device if params else torch.device("cpu")
        self.distributed = init_distributed(device)
        self.rank, self.n_ranks = rank(), world_size()
        self._restore_or_seed()
        if self.distributed:
            self._wrap_ddp(device)
        for key in self.state.optimizers:
            if key in self.state.modules:
                self.state.modules[key].train()
        self.bar = self._make_bar()
        try:
            self._train()
        except NonFiniteSignal as sig:
            raise self._non_finite(sig) from None
        finally:
            self.bar.close()
            self.state._views.clear()

    def _train(self) -> None:
        st, s = self.state, self.s
        clock = s.clock or time.perf_counter
        mark, cpu_mark = time.perf_counter(), time.process_time()
        budget_mark = mark if s.clock is None else clock()
        stopped_by_budget = False
        while st.step < s.steps:
            if s.time_budget_s is not None and st.train_s >= s.time_budget_s:
                stopped_by_budget = True
                break
            self.pending.append(self._checked(self.step_fn(st, st.step), st.step))
            st.update_averages()
            st.step += 1
            now = time.perf_counter()
            st.train_s += (now if s.clock is None else clock()) - budget_mark
            st.wall_s += now - mark
            mark = now
            self._advance_bar(st.step)
            if st.step % s.log_every == 0:
                self._flush()
            if s.eval_fn is not None and s.eval_every > 0:
                if st.step % s.eval_every == 0 or st.step == s.steps:
                    self._evaluate()
            later, cpu_later = time.perf_counter(), time.process_time()
            st.wall_s += later - mark  # before saving: a resume restores this step's totals
            st.cpu_s += cpu_later - cpu_mark
            mark, cpu_mark = later, cpu_later
            if s.checkpoint is not None and (
                st.step % s.checkpoint_every == 0 or st.step == s.steps
            ):
                self._save()  # its time counts in the next step's totals
            budget_mark = time.perf_counter() if s.clock is None else clock()
        self._flush()
        if stopped_by_budget and s.checkpoint is not None:
            self._save()

    # ------------------------------------------------------------------ pieces
    def _checked(self, metrics: Any, step: int) -> dict[str, Any]:
        if metrics is None:
            return {}
        if not isinstance(metrics, Mapping):
            raise FlowfieldsError(
                f"step_fn: returned {describe(metrics)} at step {step}, expected a dict of "
                "named scalar losses / metrics (or None)."
            )
        out: dict[str, Any] = {}
        for key, value in metrics.items():
            ok = isinstance(value, (int, float)) or (
                isinstance(value, Tensor) and value.numel() == 1
            )
            if not ok:
                raise FlowfieldsError(
                    f"step_fn: metric {key!r} at step {step} is {describe(value)}, expected a "
                    "scalar tensor or a number."
                )
            out[key] = value.detach().reshape(()) if isinstance(value, Tensor) else float(value)
        return out

    def _flush(self) -> None:
        """Move pending metrics into ``history`` (one host read) and read the guard's flags."""
        pending, self.pending = self.pending, []
        self.state._guard.flush()
        keys: list[str] = []
        for row in pending:
            keys.extend(k for k in row if k not in keys)
        last: dict[str, float] = {}
        for key in keys:
            stacked = _stack([row[key] for row in pending if key in row])
            if self.distributed:
                dist.all_reduce(stacked)
                stacked = stacked / self.n_ranks
            floats = stacked.tolist()
            self.state.history.setdefault(key, []).extend(floats)
            bad = next((i for i, v in enumerate(floats) if not math.isfinite(v)), None)
            if bad is not None:
                step = self.state.step - len(pending) + bad
                raise NonFiniteSignal(key, step, f"metric {key!r}", floats[bad], float("nan"))
            last[key] = floats[-1]
        if last and self.bar is not None and self.s.progress:
            text = " ".join(f"{k}={v:.4g}" for k, v in list(last.items())[:3])
            self.bar.set_postfix_str(text, refresh=False)

    def _evaluate(self) -> None:
        st, s = self.state, self.s
        assert s.eval_fn is not None
        self._flush()
        rng_saved = get_rng_state()
        modes = {k: m.training for k, m in st.modules.items()}
        for m in st.modules.values():
            m.eval()
        try:
            value = _as_eval_value(s.eval_fn(st, st.step))
        finally:
            for k, m in st.modules.items():
                m.train(modes[k])
            set_rng_state(rng_saved)
        if value is None:  # nothing to record at this step
            return
        st.evals.append((st.step, value))
        if s.best is not None:
            key, mode = s.best
            score = value[key] if isinstance(value, Mapping) else value
            check(
                isinstance(score, (int, float)),
                "best",
                s.best,
                f"a key of the evaluation {describe(value)} holding a number",
            )
            better = st.best is None or (
                score < st.best.value if mode == "min" else score > st.best.value
            )
            if better and math.isfinite(float(score)):
                st.record_best(st.step, float(score))

    def _rng_states(self) -> list[Any]:
        if not is_distributed():
            return [get_rng_state()]
        # Tensors inside all_gather_object do not round-trip in every torch release:
        # gather each rank's state as torch.save bytes instead.
        buf = io.BytesIO()
        torch.save(get_rng_state(), buf)
        blobs: list[Any] = [None] * self.n_ranks
        dist.all_gather_object(blobs, buf.getvalue())
        return [torch.load(io.BytesIO(b), weights_only=False) for b in blobs]

    def _save(self) -> None:
        """Checkpoint, after the guard has confirmed that every step so far was finite."""
        self._flush()
        rng_states = self._rng_states()
        assert self.s.checkpoint is not None
        if self.rank != 0:
            dist.barrier()  # wait until rank 0 has written it: every rank then sees one file
            self.last_good = self.s.checkpoint
            return
        save_checkpoint(
            {
                "step": self.state.step,
                "desc": self.s.desc,
                "train_state": self.state.state_dict(),
                "rng": rng_states,
                "world_size": self.n_ranks,
            },
            self.s.checkpoint,
        )
        self.last_good = self.s.checkpoint
        if is_distributed():
            dist.barrier()

    def _restore_or_seed(self) -> None:
        st, s = self.state, self.s
        found = None
        if s.resume and s.checkpoint is not None:
            # CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest.
            found = load_latest_checkpoint(s.checkpoint, map_location="cpu")
        if found is None:
            if s.seed is not None:
                seed_everything((s.seed + self.rank) % 2**32)
            elif self.distributed and self.rank > 0:
                seed_everything((torch.initial_seed() + self.rank) % 2**32)
            return
        saved, read_from = found
        if "train_state" not in saved:
            raise CheckpointError(
                f"checkpoint: {str(read_from)!r} was not written by flowfields.engine.fit "
                "(no train state). Start a fresh run or pass another checkpoint path."
            )
        st.load_state_dict(saved["train_state"], source=str(read_from))
        if st.step > s.steps:
            raise CheckpointError(
                f"checkpoint: {str(read_from)!r} is at step {st.step}, beyond steps={s.steps}. "
                "Ask for at least that many steps."
            )
        self._restore_rng(saved["rng"], read_from)
        self.last_good = read_from

    def _restore_rng(self, rng: list[Any], read_from: Path) -> None:
        if len(rng) == self.n_ranks:
            set_rng_state(rng[self.rank])
            return
        warnings.warn(
            f"checkpoint {str(read_from)!r} was written by {len(rng)} process(es), this run "
            f"has {self.n_ranks}: continuing with re-seeded RNGs (not bit-for-bit).",
            stacklevel=4,
        )
        seed_everything((self.state.step * 1000003 + self.rank) % 2**32)

    def _wrap_ddp(self, device: torch.device) -> None:
        from torch.nn.parallel import DistributedDataParallel

        for key, module in self.state.modules.items():
            if key in self.state.optimizers and any(p.requires_grad for p in module.parameters()):
                self.state._views[key] = DistributedDataParallel(
                    module, device_ids=[device.index] if device.type == "cuda" else None
                )

    def _make_bar(self) -> Any:
        from tqdm.auto import tqdm

        disable = not (self.s.progress and self.rank == 0)
        if self.s.time_budget_s is not None:
            return tqdm(
                total=round(self.s.time_budget_s, 1),
                initial=round(min(self.state.train_s, self.s.time_budget_s), 1),
                desc=self.s.desc,
                disable=disable,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}{postfix}]",
            )
        return tqdm(
            total=self.s.steps,
            initial=self.state.step,
            desc=self.s.desc,
            disable=disable,
            dynamic_ncols=True,
        )

    def _advance_bar(self, step: int) -> None:
        if self.s.time_budget_s is None:
            self.bar.update(1)
            return
        spent = round(min(self.state.train_s, self.s.time_budget_s), 1)
        self.bar.update(spent - self.bar.n)

    def _non_finite(self, sig: NonFiniteSignal) -> NonFiniteLossError:
        recent = self.state._guard.recent_losses(sig.name) or list(
            self.state.history.get(sig.name, [])[-20:]
        )
        where = str(self.last_good) if self.last_good is not None else None
        return NonFiniteLossError(
            f"{self.s.desc}: non-finite {sig.what} of {sig.name!r} at step {sig.step} (loss "
            f"{sig.loss}, gradient norm {sig.grad_norm}); recent losses "
            f"{[round(x, 6) for x in recent]}; last good checkpoint: "
            f"{where or 'none (no checkpoint written yet)'}. Lower the learning rate, set "
            "grad_clip, or check the data; resume from the checkpoint with resume=True.",
            step=sig.step,
            recent_losses=recent,
            last_checkpoint=where,
        )


def _stack(values: list[Any]) -> Tensor:
    """Scalars (tensors on one device, or numbers) as one float64 tensor on that device."""
    ref = next((v for v in values if isinstance(v, Tensor)), None)
    device = ref.device if ref is not None else None
    as64 = [
        v.double() if isinstance(v, Tensor) else torch.tensor(v, dtype=torch.float64, device=device)
        for v in values
    ]
    return torch.stack(as64)

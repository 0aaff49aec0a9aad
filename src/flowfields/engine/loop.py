"""The training loop every experiment uses: :func:`fit`."""

from __future__ import annotations

import inspect
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from flowfields.engine.checkpoint import load_latest_checkpoint, save_checkpoint
from flowfields.engine.distributed import init_distributed, is_distributed, rank, world_size
from flowfields.engine.ema import EMA
from flowfields.engine.seeding import get_rng_state, seed_everything, set_rng_state
from flowfields.errors import CheckpointError, FlowfieldsError, NonFiniteLossError, check

__all__ = ["FitResult", "fit"]

#: How many of the latest losses a :class:`NonFiniteLossError` carries.
RECENT = 20


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (the plain module, never the DDP wrapper).
        ema: the exponential-moving-average copy of ``model`` (eval mode), or ``None``.
        losses: the training loss of every step, ``losses[i]`` at step ``i`` (mean over ranks
            under DDP).
        evals: ``(step, value)`` for each evaluation, ``step`` counting completed steps.
        wall_s: training wall-clock in seconds, summed over resumed segments.
        steps: number of completed optimisation steps.
    """

    model: nn.Module
    ema: nn.Module | None
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    steps: int = 0


def _grad_norm(params: list[torch.Tensor], grad_clip: float | None) -> torch.Tensor:
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if grad_clip is not None:
        return torch.nn.utils.clip_grad_norm_(grads, grad_clip)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total_norm is None:
        return torch.nn.utils.clip_grad_norm_(grads, float("inf"))
    return total_norm([p.grad for p in grads])


def _as_eval_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, dict):
        return {k: _as_eval_value(v) for k, v in value.items()}
    return value


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, int], torch.Tensor],
    *,
    steps: int,
    lr: float = 1e-3,
    optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer] | None = None,
    ema_decay: float | None = 0.999,
    grad_clip: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    eval_fn: Callable[..., Any] | None = None,
    eval_every: int = 0,
    progress: bool = True,
    desc: str = "train",
    seed: int | None = None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
) -> FitResult:
    """Train ``model`` by minimising ``loss_fn`` for ``steps`` optimiser steps.

    The loop is deterministic given the global RNG states: ``loss_fn(model, step)`` draws its
    own batch from torch's (or NumPy's / Python's) *global* RNG, and every checkpoint stores all
    RNG states with the model, optimizer, scheduler, EMA, losses, evaluations and elapsed time,
    so a run resumed from a checkpoint continues bit-for-bit as if never stopped. Evaluations
    run with the RNG states saved and restored around them, so ``eval_every`` never changes
    the training trajectory.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised from the
    environment (gloo on CPU, nccl on CUDA), the model is wrapped in
    ``DistributedDataParallel`` (``loss_fn`` receives the wrapper; call it like the model),
    each rank draws its own batches (ranks above 0 are re-seeded with ``base + rank``), only
    rank 0 writes checkpoints (holding every rank's RNG state) and shows progress.

    Args:
        model: the network, already on its device; trained in place.
        loss_fn: ``loss_fn(model, step) -> scalar tensor``.
        steps: total number of optimiser steps (a resumed run continues up to it).
        lr: learning rate of the default optimizer ``torch.optim.Adam``.
        optimizer: factory ``params -> Optimizer`` (the trainable parameters); overrides ``lr``.
        ema_decay: decay of the EMA weights in [0, 1), or ``None`` for no EMA.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        checkpoint: path of the training checkpoint, written atomically every
            ``checkpoint_every`` steps and at the end; the one before is kept as
            ``<stem>.prev<suffix>``. ``None``: no checkpoints.
        checkpoint_every: steps between checkpoints.
        resume: continue from ``checkpoint`` (or its previous copy if it is corrupt) when one
            exists; start fresh otherwise.
        eval_fn: ``eval_fn(model, step)`` or ``eval_fn(model, step, ema)`` returning a number
            or a dict; called with the plain model in eval mode every ``eval_every`` steps and
            at the last step.
        eval_every: steps between evaluations (0: never).
        progress: show a tqdm bar with the loss (rank 0 only).
        desc: label of the progress bar and of error messages.
        seed: if given, :func:`seed_everything` with ``seed + rank`` before a fresh start.
        scheduler: factory ``optimizer -> LR scheduler`` stepped after every optimiser step.

    Returns:
        A :class:`FitResult`.

    Raises:
        FlowfieldsError: bad arguments, or a loss that is not a scalar tensor.
        CheckpointError: ``resume=True`` but the checkpoint(s) are corrupt or do not fit.
        NonFiniteLossError: the loss or the gradient norm became NaN/Inf; carries the step,
            the recent losses and the path of the last good checkpoint. Training stops.

    Example:
        >>> def loss_fn(model, step):
        ...     x = torch.randn(256, 2)
        ...     return ((model(x) - x.sin()) ** 2).mean()
        >>> result = fit(net, loss_fn, steps=1000, checkpoint="run/checkpoint.pt")
    """
    check(isinstance(model, nn.Module), "model", model, "a torch.nn.Module")
    check(callable(loss_fn), "loss_fn", loss_fn, "a callable loss_fn(model, step) -> tensor")
    check(_is_int(steps) and steps >= 0, "steps", steps, "a non-negative integer")
    check(
        _is_int(checkpoint_every) and checkpoint_every >= 1,
        "checkpoint_every",
        checkpoint_every,
        "a positive integer",
    )
    check(
        _is_int(eval_every) and eval_every >= 0,
        "eval_every",
        eval_every,
        "a non-negative integer (0 disables evaluation)",
    )
    check(
        grad_clip is None or (isinstance(grad_clip, (int, float)) and grad_clip > 0),
        "grad_clip",
        grad_clip,
        "None or a positive number",
    )
    check(eval_fn is None or callable(eval_fn), "eval_fn", eval_fn, "None or a callable")
    params = [p for p in model.parameters() if p.requires_grad]
    check(len(params) > 0, "model", model, "a module with trainable parameters")
    if optimizer is None:
        check(isinstance(lr, (int, float)) and lr > 0, "lr", lr, "a positive number")
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    eval_takes_ema = False
    if eval_fn is not None:
        try:
            n_pos = sum(
                1
                for p in inspect.signature(eval_fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            )
            eval_takes_ema = n_pos >= 3
        except (TypeError, ValueError):
            eval_takes_ema = False

    device = params[0].device
    distributed = init_distributed(device)
    my_rank, n_ranks = rank(), world_size()
    main = my_rank == 0

    opt = optimizer(params) if optimizer is not None else torch.optim.Adam(params, lr=lr)
    check(
        isinstance(opt, torch.optim.Optimizer),
        "optimizer",
        opt,
        "a factory returning a torch.optim.Optimizer",
    )
    sched = scheduler(opt) if scheduler is not None else None
    ema = EMA(model, ema_decay) if ema_decay is not None else None

    start, losses, evals, prior_wall = 0, [], [], 0.0
    last_good: Path | None = None
    resumed = None
    if resume and ckpt_path is not None:
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest.
        resumed = load_latest_checkpoint(ckpt_path, map_location="cpu")
    if resumed is not None:
        state, read_from = resumed
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if sched is not None and state.get("scheduler") is not None:
                sched.load_state_dict(state["scheduler"])
            if ema is not None:
                if state.get("ema") is None:
                    raise KeyError("ema")
                ema.load_state_dict(state["ema"])
                ema.num_updates = int(state["step"])  # one update per completed step
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint: {str(read_from)!r} does not match this model / optimizer / EMA "
                f"set-up ({type(err).__name__}: {str(err).splitlines()[0][:200]}). Start a "
                "fresh run (resume=False or another checkpoint path)."
            ) from err
        start = int(state["step"])
        if start > steps:
            raise CheckpointError(
                f"checkpoint: {str(read_from)!r} is at step {start}, beyond steps={steps}. "
                "Ask for at least that many steps."
            )
        losses, evals = list(state["losses"]), list(state["evals"])
        prior_wall = float(state["wall_s"])
        rng = state["rng"]
        if len(rng) == n_ranks:
            set_rng_state(rng[my_rank])
        else:
            warnings.warn(
                f"checkpoint {str(read_from)!r} was written by {len(rng)} process(es), this run "
                f"has {n_ranks}: continuing with re-seeded RNGs (not bit-for-bit).",
                stacklevel=2,
            )
            seed_everything((int(state["step"]) * 1000003 + my_rank) % 2**32)
        last_good = read_from
    else:
        if seed is not None:
            seed_everything((seed + my_rank) % 2**32)
        elif distributed and my_rank > 0:
            seed_everything((torch.initial_seed() + my_rank) % 2**32)

    train_model: nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def save(step_done: int, wall: float) -> None:
        nonlocal last_good
        rng_states = [get_rng_state()]
        if is_distributed():
            # Tensors inside all_gather_object do not round-trip in every torch release:
            # gather each rank's state as torch.save bytes instead.
            buf = io.BytesIO()
            torch.save(get_rng_state(), buf)
            blobs: list[Any] = [None] * n_ranks
            dist.all_gather_object(blobs, buf.getvalue())
            rng_states = [torch.load(io.BytesIO(b), weights_only=False) for b in blobs]
        if ckpt_path is None:
            return
        if not main:
            dist.barrier()  # wait until rank 0 has written it: every rank then sees one file
            last_good = ckpt_path
            return
        save_checkpoint(
            {
                "step": step_done,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
                "ema_decay": ema_decay,
                "losses": losses,
                "evals": evals,
                "wall_s": wall,
                "rng": rng_states,
                "world_size": n_ranks,
            },
            ckpt_path,
        )
        last_good = ckpt_path
        if is_distributed():
            dist.barrier()

    from tqdm.auto import tqdm

    bar = tqdm(
        total=steps,
        initial=start,
        desc=desc,
        disable=not (progress and main),
        dynamic_ncols=True,
        leave=True,
    )
    model.train()
    t0 = time.perf_counter()
    try:
        for step in range(start, steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(train_model, step)
            if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
                raise FlowfieldsError(
                    f"loss_fn: returned {loss!r} at step {step}, expected a scalar tensor."
                )
            loss = loss.reshape(())
            loss.backward()
            gnorm = _grad_norm(params, grad_clip)
            value = loss.detach()
            if distributed:
                value = value.clone()
                dist.all_reduce(value)
                value = value / n_ranks
            lv, gv = float(value), float(gnorm)
            if not (math.isfinite(lv) and math.isfinite(gv)):
                recent = [*losses[-RECENT:], lv]
                where = (
                    str(last_good) if last_good is not None else "none (no checkpoint written yet)"
                )
                raise NonFiniteLossError(
                    f"{desc}: non-finite training signal at step {step} (loss {lv}, gradient "
                    f"norm {gv}); recent losses {[round(x, 6) for x in recent]}; last good "
                    f"checkpoint: {where}. Lower the learning rate, set grad_clip, or check the "
                    "data; resume from the checkpoint with resume=True.",
                    step=step,
                    recent_losses=recent,
                    last_checkpoint=str(last_good) if last_good is not None else None,
                )
            opt.step()
            if sched is not None:
                sched.step()
            if ema is not None:
                ema.update(model)
            losses.append(lv)
            done = step + 1
            bar.update(1)
            bar.set_postfix_str(f"loss={lv:.4g}", refresh=False)
            if eval_fn is not None and eval_every > 0 and (done % eval_every == 0 or done == steps):
                rng_saved = get_rng_state()
                model.eval()
                try:
                    if eval_takes_ema:
                        out = eval_fn(model, done, ema.model if ema is not None else None)
                    else:
                        out = eval_fn(model, done)
                finally:
                    model.train()
                    set_rng_state(rng_saved)
                evals.append((done, _as_eval_value(out)))
            if ckpt_path is not None and (done % checkpoint_every == 0 or done == steps):
                save(done, prior_wall + time.perf_counter() - t0)
    finally:
        bar.close()
    wall = prior_wall + time.perf_counter() - t0
    return FitResult(
        model=model,
        ema=ema.model if ema is not None else None,
        losses=losses,
        evals=evals,
        wall_s=wall,
        steps=max(start, steps),
    )

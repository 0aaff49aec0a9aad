"""Training steps shared by the SDE-BNN experiments (sdebnn-toy1d, sdebnn-digits).

Every model of :mod:`flowfields.sdebnn` returns a :class:`~flowfields.sdebnn.BNNOutput`;
one step draws a mini-batch from torch's global RNG, evaluates the negative ELBO per data
point (:func:`~flowfields.sdebnn.elbo_loss`) and updates through the engine's
:class:`~flowfields.engine.TrainState`, with Adam and a cosine learning-rate decay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.engine import TrainState
from flowfields.sdebnn import elbo_loss

__all__ = ["TrainedModel", "elbo_step", "train_state"]


@dataclass
class TrainedModel:
    """A trained model and what its training cost.

    Attributes:
        model: the trained module (eval mode).
        cpu_s: process CPU seconds of the training (one thread).
        train_s: the engine's training seconds (wall-clock, evaluations excluded).
        final: the last logged step metrics.
    """

    model: nn.Module
    cpu_s: float
    train_s: float
    final: dict[str, float]


def train_state(model: nn.Module, lr: float, steps: int) -> TrainState:
    """Adam at ``lr`` with a cosine decay to 0 over ``steps``, no EMA."""

    def cosine(opt: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))

    return TrainState.single(model, lr=lr, scheduler=cosine, ema_decay=None)


def elbo_step(
    x: Tensor,
    y: Tensor,
    *,
    task: str,
    batch_size: int,
    n_samples: int,
    noise_std: float | None = None,
    kl_weight: float = 1.0,
) -> Callable[[TrainState, int], dict[str, Tensor]]:
    """A ``step_fn`` for :func:`flowfields.engine.fit`: one mini-batch of the negative ELBO.

    The batch indices come from torch's global RNG (checkpointed by the engine); a batch as
    large as the data set uses all of it.
    """
    n = x.shape[0]

    def step(state: TrainState, _: int) -> dict[str, Tensor]:
        if batch_size >= n:
            xb, yb = x, y
        else:
            idx = torch.randint(0, n, (batch_size,), device=x.device)
            xb, yb = x[idx], y[idx]
        res = state["model"](xb, n_samples)
        e = elbo_loss(
            res.out, res.kl, yb, task=task, n_data=n, noise_std=noise_std, kl_weight=kl_weight
        )
        loss = state.update("model", e.loss)
        return {"loss": loss, "nll": e.nll.detach(), "kl": e.kl.detach()}

    return step

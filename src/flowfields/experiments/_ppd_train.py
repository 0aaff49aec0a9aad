"""Training steps of the PPD experiments: PPD, Riemannian flow matching, maximum likelihood.

Each returns a ``step_fn(state, step)`` for :func:`flowfields.engine.fit` training the
``"model"`` module of the state, a :class:`~flowfields.matching.CNF` on a manifold; batches
and times come from torch's global RNG (checkpointed by the engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from flowfields.engine import TrainState
from flowfields.integrate import ODEOptions
from flowfields.ppd import KernelPath, ppd_loss, rfm_loss

__all__ = ["METHODS", "cpu_timer", "method_step", "test_nll"]

#: The training methods compared on the same network.
METHODS = ("ppd", "rfm", "mlcnf")

StepFn = Callable[[TrainState, int], dict[str, Tensor]]


def cpu_timer() -> Callable[[], float]:
    """A function returning the process CPU seconds since this call."""
    start = time.process_time()
    return lambda: time.process_time() - start


def method_step(
    method: str,
    x_train: Tensor,
    path: KernelPath,
    *,
    batch_size: int,
    ppd_centers: int | None,
    ml_steps: int,
) -> StepFn:
    """One training step of ``method`` ("ppd", "rfm" or "mlcnf") on ``x_train``."""
    n = x_train.shape[0]
    m = path.manifold
    ml_solver = ODEOptions("rk4", step_size=1 / ml_steps)

    def step(state: TrainState, _: int) -> dict[str, Tensor]:
        cnf: Any = state["model"]
        if method == "ppd":
            loss = ppd_loss(
                cnf.vector_field, path, x_train, l=2, batch=ppd_centers, n_points=batch_size
            )
        else:
            idx = torch.randint(0, n, (batch_size,), device=x_train.device)
            xb = x_train[idx]
            if method == "rfm":
                loss = rfm_loss(cnf.vector_field, m, xb)
            else:
                loss = -cnf.log_prob(xb, solver=ml_solver).mean()
        return {"loss": state.update("model", loss)}

    return step


def test_nll(cnf: Any, x: Tensor, steps: int, chunk: int = 1024) -> float:
    """Mean negative log-likelihood of ``x`` under ``cnf`` (rk4 with ``steps`` steps, exact
    divergence), nats."""
    solver = ODEOptions("rk4", step_size=1 / steps)
    total = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk]
            total += float(cnf.log_prob(xb, solver=solver).sum())
    return -total / x.shape[0]

"""Training steps of the PPD experiments: PPD, Riemannian flow matching, maximum likelihood.

Each returns a ``step_fn(state, step)`` for :func:`flowfields.engine.fit` training the
``"model"`` module of the state, a :class:`~flowfields.matching.CNF` on a manifold; batches
and times come from torch's global RNG (checkpointed by the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowfields.engine import TrainState
from flowfields.integrate import ODEOptions
from flowfields.ppd import KernelPath, ppd_loss, rfm_loss

__all__ = [
    "METHODS",
    "SolverCheck",
    "method_step",
    "solver_check",
    "solver_guard",
    "test_nll",
]

#: The training methods compared on the same network.
METHODS = ("ppd", "rfm", "mlcnf")

StepFn = Callable[[TrainState, int], dict[str, Tensor]]


def method_step(
    method: str,
    x_train: Tensor,
    path: KernelPath,
    *,
    batch_size: int,
    ppd_centers: int | None,
    ml_steps: int,
    ml_solver: ODEOptions | None = None,
) -> StepFn:
    """One training step of ``method`` ("ppd", "rfm" or "mlcnf") on ``x_train``.

    The maximum-likelihood CNF backpropagates through ``ml_solver`` (default: rk4 with
    ``ml_steps`` steps)."""
    n = x_train.shape[0]
    m = path.manifold
    if ml_solver is None:
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


def test_nll(cnf: Any, x: Tensor, steps: int | ODEOptions, chunk: int = 1024) -> float:
    """Mean negative log-likelihood of ``x`` under ``cnf`` (rk4 with ``steps`` steps, or the
    solver ``steps`` if it is an ODEOptions; exact divergence), nats."""
    solver = steps if isinstance(steps, ODEOptions) else ODEOptions("rk4", step_size=1 / steps)
    total = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk]
            total += float(cnf.log_prob(xb, solver=solver).sum())
    return -total / x.shape[0]


@dataclass(frozen=True)
class SolverCheck:
    """Test NLLs of one model under three solvers (same points), nats.

    Attributes:
        train: with the solver the model was trained through.
        eval: with the evaluation solver (the reported test NLL's).
        fine: with a finer reference solver.
    """

    train: float
    eval: float
    fine: float

    @property
    def exploit_gap(self) -> float:
        """``fine - train``: how much better the training solver makes the model look (> 0
        when the model learned that solver's discretisation error)."""
        return self.fine - self.train

    @property
    def eval_gap(self) -> float:
        """``|fine - eval|``: the evaluation solver's own error."""
        return abs(self.fine - self.eval)


def solver_check(
    cnf: Any, x: Tensor, train: ODEOptions, eval_steps: int, fine: ODEOptions
) -> SolverCheck:
    """:class:`SolverCheck` of ``cnf`` on ``x`` (rk4 with ``eval_steps`` steps as the
    evaluation solver)."""
    return SolverCheck(
        train=test_nll(cnf, x, train),
        eval=test_nll(cnf, x, eval_steps),
        fine=test_nll(cnf, x, fine),
    )


def solver_guard(check: SolverCheck, tol: float) -> str | None:
    """None if ``check`` shows a solver-independent NLL (both ``|exploit_gap|`` and
    ``eval_gap`` at most ``tol`` nats), else the reason as a sentence."""
    reasons = []
    if not abs(check.exploit_gap) <= tol:  # NaN fails too
        reasons.append(
            f"NLL with the training solver {check.train:.3f} vs the fine solver "
            f"{check.fine:.3f} (gap {check.exploit_gap:+.3f} > {tol:g} nats: the model "
            "exploits its training solver's error)"
        )
    if not check.eval_gap <= tol:
        reasons.append(
            f"NLL with the evaluation solver {check.eval:.3f} vs the fine solver "
            f"{check.fine:.3f} (|gap| {check.eval_gap:.3f} > {tol:g} nats: not converged)"
        )
    return "; ".join(reasons) if reasons else None

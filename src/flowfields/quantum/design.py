"""Inverse design helpers: box-bounded parameters, brute-force grid search, projected ascent.

The paper compares gradient-based inverse design of steady-state devices with the brute-force
grid search it replaces. Both explore the same box of parameters; here each parameter is a
coordinate ``u in [0, 1]`` mapped linearly or logarithmically onto its physical range, the grid
is a regular grid in ``u``, and gradient ascent is Adam on ``u`` projected back into the box
after every step. Every call of the objective is counted, so the two can be compared by the
number of steady-state solves they need.

Paper: Vargas-Hernández, Chen, Jung, Brumer, "Fully differentiable optimization protocols for
non-equilibrium steady states" (arXiv:2103.12604).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from flowfields.errors import check

__all__ = ["AscentResult", "Box", "GridResult", "grid_search", "projected_ascent"]


@dataclass(frozen=True)
class Box:
    """Named parameters with ranges; ``log`` marks log-uniform coordinates.

    Attributes:
        names: parameter names.
        low, high: range of each parameter (``low < high``; both > 0 where ``log``).
        log: whether each parameter's coordinate is logarithmic.
    """

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    log: tuple[bool, ...]

    def __post_init__(self) -> None:
        k = len(self.names)
        check(
            len(self.low) == len(self.high) == len(self.log) == k,
            "Box",
            self,
            "names, low, high and log of equal lengths",
        )
        for n, lo, hi, lg in zip(self.names, self.low, self.high, self.log):
            check(math.isfinite(lo) and math.isfinite(hi), n, (lo, hi), "finite bounds")
            check(lo < hi, n, (lo, hi), "low < high")
            check(not lg or lo > 0, n, (lo, hi), "a positive range for a log coordinate")

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return len(self.names)

    def to_params(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Physical parameters from box coordinates ``u`` (..., dim) in [0, 1] (differentiable)."""
        out = {}
        for i, (n, lo, hi, lg) in enumerate(zip(self.names, self.low, self.high, self.log)):
            ui = u[..., i]
            if lg:
                out[n] = torch.exp(math.log(lo) + ui * (math.log(hi) - math.log(lo)))
            else:
                out[n] = lo + ui * (hi - lo)
        return out


@dataclass
class GridResult:
    """Outcome of :func:`grid_search`: values on the grid (shape ``(points,) * dim``)."""

    values: torch.Tensor
    axes: list[torch.Tensor]
    best_u: torch.Tensor
    best_value: float
    solves: int


@dataclass
class AscentResult:
    """Outcome of :func:`projected_ascent` (all starts).

    Attributes:
        best_u, best_value: best point visited and its objective.
        trajectories: per start, the visited ``u`` (steps + 1, dim).
        values: per start, the objective at each visited point.
        solves: steady-state solves used (forward and adjoint both count).
        solves_to_target: solves used when the running best first reached ``target``, or -1.
    """

    best_u: torch.Tensor
    best_value: float
    trajectories: list[torch.Tensor] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)
    solves: int = 0
    solves_to_target: int = -1


def grid_search(
    objective: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    points: int,
    *,
    solves_per_call: int = 1,
) -> GridResult:
    """Evaluate ``objective(u)`` (no gradient) on a regular ``points^dim`` grid of [0, 1]^dim."""
    check(isinstance(points, int) and points >= 2, "points", points, "at least 2 points per axis")
    check(isinstance(dim, int) and dim >= 1, "dim", dim, "an integer >= 1")
    ax = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    vals = torch.empty((points,) * dim, dtype=torch.float64)
    with torch.no_grad():
        for idx in itertools.product(range(points), repeat=dim):
            vals[idx] = float(objective(torch.stack([ax[i] for i in idx])))
    flat = int(torch.argmax(vals))
    best = torch.unravel_index(torch.tensor(flat), vals.shape)
    best_u = torch.stack([ax[int(i)] for i in best])
    return GridResult(vals, [ax] * dim, best_u, float(vals.max()), vals.numel() * solves_per_call)


def projected_ascent(
    objective: Callable[[torch.Tensor], torch.Tensor],
    starts: Sequence[torch.Tensor],
    *,
    steps: int,
    lr: float = 0.05,
    solves_per_step: int = 2,
    target: float | None = None,
) -> AscentResult:
    """Maximise ``objective(u)`` over [0, 1]^dim by Adam, projecting onto the box each step.

    Args:
        objective: differentiable scalar function of ``u`` (dim,).
        starts: initial points in [0, 1]^dim.
        steps: Adam steps per start.
        lr: Adam learning rate (in box units).
        solves_per_step: linear solves per objective + gradient evaluation (one forward and one
            adjoint per steady state in the objective: 2 per steady state); the final
            evaluation of each start has no backward and counts half.
        target: running-best value whose first attainment is recorded in solves.
    """
    check(isinstance(steps, int) and steps >= 1, "steps", steps, "at least one step")
    check(isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0, "lr", lr, "lr > 0")
    for i, u0 in enumerate(starts):
        check(
            isinstance(u0, torch.Tensor) and bool(torch.isfinite(u0).all()),
            f"starts[{i}]",
            u0,
            "a finite tensor of box coordinates in [0, 1]",
        )
    best_u, best_val = None, -math.inf
    res = AscentResult(torch.empty(0), -math.inf)
    for u0 in starts:
        u = u0.detach().clone().to(torch.float64).clamp(0, 1).requires_grad_()
        opt = torch.optim.Adam([u], lr=lr)
        traj, vals = [u.detach().clone()], []
        for _ in range(steps + 1):
            opt.zero_grad()
            val = objective(u)
            res.solves += solves_per_step // 2  # forward solves
            v = float(val.detach())
            vals.append(v)
            if v > best_val:
                best_val, best_u = v, u.detach().clone()
            if target is not None and res.solves_to_target < 0 and best_val >= target:
                res.solves_to_target = res.solves
            if len(vals) == steps + 1:
                break
            (-val).backward()
            res.solves += solves_per_step - solves_per_step // 2  # adjoint solves
            opt.step()
            with torch.no_grad():
                u.clamp_(0.0, 1.0)
            traj.append(u.detach().clone())
        res.trajectories.append(torch.stack(traj))
        res.values.append(vals)
    res.best_u = best_u if best_u is not None else torch.empty(0)
    res.best_value = best_val
    return res

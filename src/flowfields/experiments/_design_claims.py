"""The claim shared by the steady-state design experiments: gradient ascent vs grid search.

Vargas-Hernández et al., "Fully differentiable optimization protocols for non-equilibrium
steady states" (arXiv:2103.12604): gradient ascent through the implicitly differentiated
steady state should reach the grid-search optimum with far fewer steady-state solves.
"""

from __future__ import annotations

from flowfields.quantum import AscentResult, GridResult
from flowfields.report import Claim

__all__ = ["ascent_vs_grid_claim"]


def ascent_vs_grid_claim(
    ga: AscentResult, grid: GridResult, *, task: str, what: str, fmt: str, scale: float = 1.0
) -> Claim:
    """Claim ``ga-beats-grid-<task>``: the ascent's running best reaches the grid's best
    (relative tolerance 1e-6) within a third of the grid's solves.

    Args:
        ga, grid: the two searches over the same box (``ga.solves_to_target`` counted
            against ``grid.best_value``; -1 when never reached).
        task: claim id suffix; what: the objective as named in the statement.
        fmt: format spec of the reported values (e.g. ``".6g"``); scale: their display scale.
    """
    reached = ga.best_value >= grid.best_value * (1 - 1e-6)
    fewer = 0 < ga.solves_to_target <= grid.solves / 3
    when = (
        f"reached the grid's best after {ga.solves_to_target} solves; "
        if ga.solves_to_target > 0
        else "never reached the grid's best; "
    )
    note = "Forward and adjoint linear solves both count."
    if ga.solves_to_target < 0:
        note += (
            " -1 means never reached: the landscape has several local maxima and the ascent"
            " ended in another one."
        )
    return Claim(
        id=f"ga-beats-grid-{task}",
        statement=(
            f"Gradient ascent reaches at least the grid-search optimum of the {what} "
            "with far fewer steady-state solves."
        ),
        measured=(
            f"GA best {ga.best_value * scale:{fmt}} ({when}{ga.solves} in its whole budget) "
            f"vs grid {grid.best_value * scale:{fmt}} in {grid.solves} solves"
        ),
        threshold="GA running best >= grid best (rel. tol 1e-6) within 1/3 of the grid's solves",
        holds=bool(reached and fewer),
        note=note,
    )

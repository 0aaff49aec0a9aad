"""Seeded training on a small grid: every objective learns R / Z (measured against exact P_T)."""

from __future__ import annotations

import pytest
import torch

from flowfields.engine import fit
from flowfields.experiments._gflownet_train import gfn_state, reward_step
from flowfields.gflownet import (
    HyperGrid,
    MLPPolicy,
    exact_terminal_distribution,
    l1_error,
    target_distribution,
)

# measured at seed 0 (200 iterations of 64, MLP 32 x 2): tb 0.014, db 0.028, subtb 0.024,
# fm 0.17, zvar 0.010; the tolerances are about twice that, from an initial L1 of 1.06
TOLERANCE = {"tb": 0.04, "db": 0.06, "subtb": 0.06, "fm": 0.35, "zvar": 0.03}


def _train(loss: str, epsilon: float = 0.0) -> tuple[float, float]:
    env = HyperGrid(2, 5)
    torch.manual_seed(0)
    policy = MLPPolicy(env, 32, 2, flow=loss in ("db", "subtb"))
    state = gfn_state(policy, 3e-3, 0.1)
    fit(state, reward_step(loss, 64, epsilon=epsilon), steps=200, progress=False, seed=0)
    l1 = l1_error(exact_terminal_distribution(env, policy), target_distribution(env))
    return l1, abs(float(policy.log_z.detach()) - env.log_partition())


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(TOLERANCE))
def test_every_objective_learns_the_target(loss) -> None:
    l1, dlogz = _train(loss)
    assert l1 < TOLERANCE[loss]
    if loss == "tb":
        assert dlogz < 0.02


@pytest.mark.slow
def test_off_policy_tb_learns_and_training_is_reproducible() -> None:
    l1, dlogz = _train("tb", epsilon=0.1)
    assert l1 < 0.05 and dlogz < 0.05
    assert _train("tb", epsilon=0.1) == (l1, dlogz)

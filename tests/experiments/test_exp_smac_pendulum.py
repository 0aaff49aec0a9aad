"""smac-pendulum: a tiny CLI run (both algorithms, with the POMDP variant) whose models load."""

from __future__ import annotations

import json

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.rl import LatentPolicy, TanhGaussianPolicy


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "smac"
    sets = [
        "seeds=2",
        "steps=40",
        "hidden=8",
        "head_hidden=8",
        "latent_dim=2",
        "learning_starts=20",
        "batch_size=8",
        "eval_every=20",
        "eval_episodes=1",
        "pomdp=true",
        "pomdp_flicker=0.1",
        "pomdp_noise=0.05",
        "cost_hidden=16",
        "cost_batch=16",
        "cost_repeats=1",
        "claim_steps=0",  # make the return claims at this tiny budget
    ]
    assert main(["run", "smac-pendulum", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    claims = {c["id"]: c for c in metrics["claims"]}
    assert set(claims) == {
        "estimator-lower-bound",
        "sac-matches-sb3",
        "smac-at-least-sac",
        "smac-low-cost",
        "smac-pomdp-robust",
    }
    assert claims["estimator-lower-bound"]["holds"]  # 16,000 actions: a statistical check
    assert abs(metrics["entropy_K1024"] - metrics["entropy_exact"]) < 0.02
    for prefix in ("", "pomdp_"):
        for algo in ("sac", "smac"):
            finals = [metrics[f"{prefix}{algo}_seed{k}/final_return"] for k in (0, 1)]
            assert all(-2000 < r < 0 for r in finals)  # Pendulum returns are in [-16.3 * 200, 0]
            assert metrics[f"{prefix}{algo}/return_mean"] == sum(finals) / 2
    assert {p.name for p in out.glob("*.png")} == {"learning_curves.png"}
    smac = flowfields.load(out, "smac_seed1")
    assert isinstance(smac, LatentPolicy) and smac.obs_dim == 3
    sac = flowfields.load(out, "pomdp_sac_seed0")
    assert isinstance(sac, TanhGaussianPolicy) and sac.obs_dim == 2
    assert smac.act(torch.zeros(4, 3), deterministic=True).shape == (4, 1)

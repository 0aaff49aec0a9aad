"""smac-mountaincar: a tiny CLI run, its claim and goal fractions, and a model that loads."""

from __future__ import annotations

import json

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.experiments.smac_mountaincar import Config
from flowfields.rl import LatentPolicy


def test_presets() -> None:
    assert Config().env_id == "MountainCarContinuous-v0" and Config().steps == 50_000
    assert Config.quick().seeds == 2 and Config.full().seeds == 5
    assert Config.quick().steps < Config().claim_steps <= Config.full().steps  # smoke vs full


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "mc"
    sets = ["seeds=1", "steps=30", "hidden=8", "head_hidden=8", "learning_starts=10",
            "batch_size=8", "eval_every=30", "eval_episodes=1", "claim_steps=0"]  # fmt: skip
    assert (
        main(["run", "smac-mountaincar", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == ["smac-explores-mountaincar"]
    for algo in ("sac", "smac"):
        reached = metrics[f"{algo}_seed0/final_return"] > 90
        assert metrics[f"{algo}/goal_fraction"] == float(reached)
    policy = flowfields.load(out, "smac_seed0")
    assert isinstance(policy, LatentPolicy) and policy.obs_dim == 2
    assert policy.act(torch.zeros(3, 2), deterministic=True).shape == (3, 1)

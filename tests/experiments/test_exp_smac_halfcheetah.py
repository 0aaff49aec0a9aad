"""smac-halfcheetah: the full-only preset's settings, and a tiny MuJoCo smoke run (skipped
where the MuJoCo environment cannot be made)."""

from __future__ import annotations

import json

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.experiments.smac_halfcheetah import Config
from flowfields.rl import LatentPolicy


def _mujoco_or_skip() -> None:
    try:
        from flowfields.rl import make_env

        make_env("HalfCheetah-v5").close()
    except Exception as err:  # no MuJoCo build here
        pytest.skip(f"HalfCheetah-v5 cannot be made: {err}")


def test_presets() -> None:
    full = Config.full()
    assert full.env_id == "HalfCheetah-v5" and full.steps == 100_000 and not full.pomdp
    assert full.steps >= full.claim_steps > Config.quick().steps  # claims: full preset only


@pytest.mark.slow
def test_cli_smoke_run(tmp_path) -> None:
    _mujoco_or_skip()
    out = tmp_path / "hc"
    sets = ["steps=40", "learning_starts=20", "hidden=8", "head_hidden=8", "batch_size=8",
            "eval_every=40", "eval_episodes=1"]  # fmt: skip
    argv = ["run", "smac-halfcheetah", "--quick", "--no-progress", "--out", str(out)]
    assert main([*argv, "--set", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["claims"] == []  # a smoke run makes no return claim
    assert "full preset only" in (out / "report.html").read_text()
    for algo in ("sac", "smac"):  # 1,000-step episodes, reward per step within about +-10
        assert abs(metrics[f"{algo}_seed0/final_return"]) < 1e4
    policy = flowfields.load(out, "smac_seed0")
    assert isinstance(policy, LatentPolicy) and policy.obs_dim == 17 and policy.act_dim == 6
    assert policy.act(torch.zeros(2, 17), deterministic=True).shape == (2, 6)

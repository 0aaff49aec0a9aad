"""smac-pomdp: a tiny CLI run (memoryless and recurrent-filter agents), the smoke-budget claims
(cost only; the return claims listed as full preset only), and models that load."""

from __future__ import annotations

import json

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.experiments.smac_pomdp import Config
from flowfields.rl import BeliefFilter, LatentPolicy, TanhGaussianPolicy

SETS = ["seeds=2", "steps=30", "hidden=8", "head_hidden=8", "latent_dim=2",
        "learning_starts=15", "batch_size=8", "eval_every=30", "eval_episodes=1",
        "filter_window=3", "filter_hidden=8", "cost_hidden=16", "cost_batch=16",
        "cost_repeats=1"]  # fmt: skip


def test_presets() -> None:
    q, f = Config.quick(), Config.full()
    assert q.env_id == f.env_id == "Pendulum-v1" and q.pomdp and f.pomdp
    assert q.steps < q.claim_steps <= f.steps and f.seeds == 3 and f.filter_window >= 2


@pytest.mark.slow
def test_cli_tiny_run_claims_and_load(tmp_path) -> None:
    out = tmp_path / "pomdp"
    assert main(["run", "smac-pomdp", "--no-progress", "--out", str(out), "--set", *SETS]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == ["smac-low-cost"]
    assert metrics["cost_ratio_K8"] > 0 and metrics["update_ms/smac_K32"] > 0
    report = (out / "report.html").read_text()
    assert "full preset only" in report and "belief-filter-helps" in report
    for prefix in ("pomdp_", "belief_"):
        for algo in ("sac", "smac"):
            finals = [metrics[f"{prefix}{algo}_seed{k}/final_return"] for k in (0, 1)]
            assert all(-2000 < r < 0 for r in finals)
            assert metrics[f"{prefix}{algo}/return_mean"] == sum(finals) / 2
    smac = flowfields.load(out, "belief_smac_seed1")
    assert isinstance(smac, LatentPolicy) and smac.obs_dim == 3 * 4  # window x (2 + 1 + 1)
    assert isinstance(smac.trunk[0], BeliefFilter)
    sac = flowfields.load(out, "pomdp_sac_seed0")
    assert isinstance(sac, TanhGaussianPolicy) and sac.obs_dim == 2
    assert smac.act(torch.zeros(4, 12), deterministic=True).shape == (4, 1)


@pytest.mark.slow
def test_return_claims_at_full_scale_settings(tmp_path) -> None:
    """claim_steps=0 makes the full-preset claims at the tiny budget (their code path); with
    the filter's auxiliary loss, whose predictor is saved with the actor and loads back."""
    out = tmp_path / "pomdp_full"
    sets = [*SETS, "seeds=1", "claim_steps=0", "filter_aux=0.5"]
    assert main(["run", "smac-pomdp", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    claims = {c["id"]: c for c in json.loads((out / "metrics.json").read_text())["claims"]}
    assert set(claims) == {"smac-low-cost", "smac-pomdp-robust", "belief-filter-helps"}
    m = json.loads((out / "metrics.json").read_text())
    assert claims["smac-pomdp-robust"]["holds"] == (
        m["belief_smac/return_mean"] > m["belief_sac/return_mean"]
    )
    assert "auxiliary loss weight 0.5" in claims["smac-low-cost"]["note"]
    smac = flowfields.load(out, "belief_smac_seed0")
    assert isinstance(smac.obs_model, torch.nn.Sequential)
    assert not hasattr(flowfields.load(out, "pomdp_smac_seed0"), "obs_model")


def test_bad_filter_window(tmp_path) -> None:
    from flowfields.errors import FlowfieldsError
    from flowfields.experiments.smac_pomdp import SMACPOMDP

    with pytest.raises(FlowfieldsError, match="filter_window"):
        SMACPOMDP.run(Config(filter_window=0), tmp_path, progress=False)
    with pytest.raises(FlowfieldsError, match="filter_aux"):
        SMACPOMDP.run(Config(filter_aux=-0.5), tmp_path, progress=False)

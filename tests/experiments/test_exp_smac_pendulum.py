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
    curves = json.loads((out / "learning_curves.json").read_text())
    for k in (0, 1):  # evaluations at steps 20 and 40; the last one is the final return
        curve = curves[f"pomdp_smac_seed{k}"]
        assert [s for s, _ in curve] == [20, 40]
        assert curve[-1][1] == metrics[f"pomdp_smac_seed{k}/final_return"]
    assert {p.name for p in out.glob("*.png")} == {"learning_curves.png"}
    smac = flowfields.load(out, "smac_seed1")
    assert isinstance(smac, LatentPolicy) and smac.obs_dim == 3
    sac = flowfields.load(out, "pomdp_sac_seed0")
    assert isinstance(sac, TanhGaussianPolicy) and sac.obs_dim == 2
    assert smac.act(torch.zeros(4, 3), deterministic=True).shape == (4, 1)


@pytest.mark.slow
def test_jobs_parallel_runs_bit_identical(tmp_path) -> None:
    """``jobs=2`` (spawned workers, one torch thread) trains the same actors, curves and final
    returns as ``jobs=1``, in the same order, with one checkpoint per run; a resume from the
    parallel run's checkpoints gives them back too, with their training CPU seconds."""
    from flowfields.experiments.smac_pendulum import Config, SMACPendulum

    tiny = {"seeds": 2, "steps": 300, "hidden": 16, "head_hidden": 8, "latent_dim": 2,
            "learning_starts": 50, "batch_size": 16, "eval_every": 150, "eval_episodes": 1,
            "checkpoint_every": 150}  # fmt: skip
    torch.set_num_threads(1)
    trained, cpu = {}, {}
    for jobs, resume in ((1, False), (2, False), (2, True)):
        run_dir = tmp_path / f"jobs{jobs}"
        exp = SMACPendulum(Config(**tiny, jobs=jobs), run_dir, resume=resume, progress=False)
        exp.reseed()
        models = exp.train()
        finals = {k: v for k, v in exp.metrics.items() if k.endswith("/final_return")}
        trained[jobs, resume] = (models, exp.curves, finals)
        cpu[jobs, resume] = {k: v for k, v in exp.metrics.items() if k.endswith("/train_cpu_s")}
        assert list(models) == ["sac_seed0", "sac_seed1", "smac_seed0", "smac_seed1"]
        assert all((run_dir / f"train_{v}.pt").is_file() for v in models)
    models1, curves1, finals1 = trained[1, False]
    assert len(curves1["sac_seed0"]) == 2 and curves1["sac_seed0"] != curves1["sac_seed1"]
    for key in ((2, False), (2, True)):
        models2, curves2, finals2 = trained[key]
        assert curves2 == curves1 and finals2 == finals1
        for variant, actor in models1.items():
            sd1, sd2 = actor.state_dict(), models2[variant].state_dict()
            assert type(models2[variant]) is type(actor) and not models2[variant].training
            assert list(sd1) == list(sd2)
            assert all(torch.equal(sd1[k], sd2[k]) for k in sd1), variant
    # the resume of the finished runs keeps the CPU seconds they were trained with
    assert cpu[2, True] == cpu[2, False] and min(cpu[2, False].values()) > 0.1


def test_jobs_must_be_positive(tmp_path) -> None:
    from flowfields.errors import FlowfieldsError
    from flowfields.experiments.smac_pendulum import Config, SMACPendulum

    with pytest.raises(FlowfieldsError, match="jobs"):
        SMACPendulum(Config(jobs=0), tmp_path).check_config()

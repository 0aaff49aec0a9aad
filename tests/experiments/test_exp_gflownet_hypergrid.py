"""gflownet-hypergrid: a tiny CLI run (two objectives, two grids) whose models load back."""

from __future__ import annotations

import json

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.errors import FlowfieldsError
from flowfields.experiments.gflownet_hypergrid import Config, GFlowNetHyperGrid, parse_grids
from flowfields.gflownet import exact_terminal_distribution, l1_error, target_distribution


def test_parse_grids() -> None:
    assert parse_grids(("2x8", "4X3")) == [(2, 8), (4, 3)]
    with pytest.raises(FlowfieldsError, match="grids"):
        parse_grids(("2-8",))
    with pytest.raises(FlowfieldsError, match="grids"):
        parse_grids(("2x8", "2x4"))


def test_bad_config_refused_before_writing(tmp_path) -> None:
    with pytest.raises(FlowfieldsError, match="losses"):
        GFlowNetHyperGrid.run(Config(losses=("tb", "kl")), tmp_path / "a", progress=False)
    with pytest.raises(FlowfieldsError, match="height"):
        GFlowNetHyperGrid.run(Config(grids=("2x1",), iters=(5,)), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "hg"
    sets = [
        "grids=2x4,3x3",
        "iters=40,10",
        "losses=tb,db",
        "hidden=16",
        "batch=16",
        "eval_every=10",
        "zvar_batch=64",
    ]
    assert (
        main(["run", "gflownet-hypergrid", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    ids = [c["id"] for c in metrics["claims"]]
    assert ids == ["tb-2d", "objectives-2d", "objectives-3d"]
    assert metrics["claims"][0]["holds"] is False  # H = 4 is not the reference grid
    for v in ("d2_tb", "d2_db", "d3_tb", "d3_db"):
        assert 0 <= metrics[f"{v}/l1"] <= 2
    assert {p.name for p in out.glob("*.png")} == {"curves.png", "distributions_2d.png"}
    policy = flowfields.load(out, "d2_db")
    env = policy.env
    l1 = l1_error(exact_terminal_distribution(env, policy), target_distribution(env))
    assert l1 == pytest.approx(metrics["d2_db/l1"], abs=1e-9)
    assert policy.log_flow(env.initial(2)).shape == (2,)
    # seeded training is reproducible: a second run gives the same numbers
    out2 = tmp_path / "hg2"
    assert (
        main(["run", "gflownet-hypergrid", "--no-progress", "--out", str(out2), "--set", *sets])
        == 0
    )
    again = json.loads((out2 / "metrics.json").read_text())
    assert again["d2_tb/l1"] == metrics["d2_tb/l1"] and again["d3_db/l1"] == metrics["d3_db/l1"]
    assert torch.equal(flowfields.load(out2, "d2_tb").log_z, flowfields.load(out, "d2_tb").log_z)


def test_fm_policy_has_no_backward_policy() -> None:
    """FM reads P_F's logits as log edge flows and never uses P_B: the experiment builds none
    (an unused P_B MLP would take a share of the RNG stream, so FM's trajectories would differ
    from torchgfn's FMGFlowNet, which has only the edge-flow network, from the same seed)."""
    cfg = Config(grids=("2x4",), iters=(5,), hidden=8)
    fm = GFlowNetHyperGrid.build_model(cfg, "d2_fm")
    assert set(fm.heads) == {"pf"} and fm.learn_pb is False
    assert set(GFlowNetHyperGrid.build_model(cfg, "d2_tb").heads) == {"pf", "pb"}
    assert set(GFlowNetHyperGrid.build_model(cfg, "d2_db").heads) == {"pf", "pb", "flow"}
    # same seed, same P_F weights as any other objective's policy (built first)
    torch.manual_seed(3)
    a = GFlowNetHyperGrid.build_model(cfg, "d2_fm")
    torch.manual_seed(3)
    b = GFlowNetHyperGrid.build_model(cfg, "d2_tb")
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.heads["pf"].parameters(), b.heads["pf"].parameters(), strict=True)
    )

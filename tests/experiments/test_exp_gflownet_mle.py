"""gflownet-mle: a tiny CLI run whose models load back and reproduce the exact metrics."""

from __future__ import annotations

import json

import pytest

import flowfields
from flowfields.cli import main
from flowfields.errors import FlowfieldsError
from flowfields.experiments.gflownet_mle import Config, GFlowNetMLE, paired
from flowfields.gflownet import exact_data_bounds


def test_paired_differences() -> None:
    assert paired([3.0, 5.0], [1.0, 2.0]) == (2.5, pytest.approx(0.5))
    assert paired([1.0], [4.0]) == (-3.0, 0.0)


def test_bad_config_refused_before_writing(tmp_path) -> None:
    with pytest.raises(FlowfieldsError, match="k"):
        GFlowNetMLE.run(Config(k=1), tmp_path / "a", progress=False)
    with pytest.raises(FlowfieldsError, match="tbc_weight"):
        GFlowNetMLE.run(Config(tbc_weight=0.0), tmp_path / "b", progress=False)
    with pytest.raises(FlowfieldsError, match="sizes"):
        GFlowNetMLE.run(Config(sizes=(2, 0, 4)), tmp_path / "c", progress=False)
    assert not any((tmp_path / n).exists() for n in "abc")


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "mle"
    sets = ["steps=15", "batch=8", "hidden=8", "n_seeds=2", "n_test=256", "n_data=64"]
    assert main(["run", "gflownet-mle", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == [
        "tbc-better-test-ll",
        "tbc-tighter-elbo-gap",
        "tbc-helps-mle",
    ]
    for name in ("tbc_s0", "elbo_s0", "tbc_s1", "elbo_s1"):
        # Gibbs' inequality: no model beats the entropy of p* in expectation
        assert metrics["entropy_p_star"] <= metrics[f"{name}/cross_entropy"]
        assert metrics[f"{name}/mean_elbo_gap"] >= 0
    assert metrics["identity_max_err"] < 1e-9
    d = metrics["tbc_s0/cross_entropy"] - metrics["elbo_s0/cross_entropy"]
    d += metrics["tbc_s1/cross_entropy"] - metrics["elbo_s1/cross_entropy"]
    assert metrics["diff/cross_entropy"] == pytest.approx(d / 2, abs=1e-12)
    assert (out / "mle.png").is_file()
    policy = flowfields.load(out, "elbo_s1").double()
    log_pt, _elbo, _kl = exact_data_bounds(policy.env, policy)
    last = policy.env.all_states()[0][:, 0] == policy.env.layers
    p_star = policy.env.table.exp()
    assert float(-(p_star * log_pt[last]).sum()) == pytest.approx(
        metrics["elbo_s1/cross_entropy"], abs=1e-9
    )
    assert flowfields.load(out).env.sizes == (4, 4, 16)  # the default variant: tbc_s0

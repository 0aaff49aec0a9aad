"""gflownet-unify: a tiny CLI run; the identities hold whatever the training budget."""

from __future__ import annotations

import json

import pytest

import flowfields
from flowfields.cli import main
from flowfields.gflownet import exact_data_bounds


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "unify"
    sets = ["steps=20", "batch=8", "hidden=8", "iw_draws=512", "iw_ks=1,4,16", "bits=4"]
    sets += ["diff_steps=4", "diff_iters=5", "diff_batch=8", "diff_samples=200"]
    assert main(["run", "gflownet-unify", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    claims = {c["id"]: c for c in metrics["claims"]}
    assert list(claims) == [
        "hvae-gap-is-kl",
        "iw-bound-increases",
        "autoregressive-elbo-exact",
        "diffusion-tb",
        "diffusion-data-mode",
        "tb-gradient-is-kl-gradient",
        "tbc-helps-mle",
    ]
    # exact identities: independent of the (tiny) training
    for cid in ("hvae-gap-is-kl", "autoregressive-elbo-exact", "tb-gradient-is-kl-gradient"):
        assert claims[cid]["holds"], cid
    assert metrics["tbc/entropy_p_star"] <= metrics["tbc/cross_entropy"]  # Gibbs' inequality
    assert (out / "unify.png").is_file()
    sampler = flowfields.load(out, "diffusion_tb")
    assert sampler.sample(3).shape == (5, 3, 1)
    assert float(sampler.log_z) == pytest.approx(metrics["diffusion_tb/log_z"], abs=1e-6)
    policy = flowfields.load(out, "elbo").double()
    log_pt, elbo, kl = exact_data_bounds(policy.env, policy)
    last = policy.env.all_states()[0][:, 0] == policy.env.layers
    p_star = policy.env.table.exp()
    assert float(-(p_star * log_pt[last]).sum()) == pytest.approx(
        metrics["elbo/cross_entropy"], abs=1e-9
    )
    assert float((log_pt - elbo - kl)[last].abs().max()) < 1e-9

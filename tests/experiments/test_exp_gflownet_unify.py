"""gflownet-unify: a tiny CLI run; the identities hold whatever the training budget."""

from __future__ import annotations

import json

import pytest

import flowfields
from flowfields.cli import main


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "unify"
    sets = ["hidden=8", "iw_draws=512", "iw_ks=1,4,16", "bits=4"]
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
    ]
    # exact identities: independent of the (tiny) training
    for cid in ("hvae-gap-is-kl", "autoregressive-elbo-exact", "tb-gradient-is-kl-gradient"):
        assert claims[cid]["holds"], cid
    assert metrics["hvae/min_mean_kl"] > 1e-4  # the encoders are not the posterior: a real gap
    assert (out / "unify.png").is_file()
    sampler = flowfields.load(out, "diffusion_tb")
    assert sampler.sample(3).shape == (5, 3, 1)
    assert float(sampler.log_z) == pytest.approx(metrics["diffusion_tb/log_z"], abs=1e-6)
    data = flowfields.load(out)  # the default variant
    assert data.steps == 4

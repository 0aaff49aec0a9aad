"""cpflow-vi: the binarised digits, each posterior's log q against an autograd Jacobian, the
IWAE bound above the ELBO, and a tiny CLI run."""

from __future__ import annotations

import json
import math

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.errors import FlowfieldsError
from flowfields.experiments.cpflow_vi import VAE, Config, CPFlowVI, binary_digits

F64 = torch.float64


def test_binary_digits_split() -> None:
    train, test = binary_digits()
    assert train.shape == (1438, 64) and test.shape == (359, 64)
    assert set(torch.unique(train).tolist()) == {0.0, 1.0}
    assert torch.equal(binary_digits()[1], test)


@pytest.mark.parametrize("posterior", ["gaussian", "cpflow", "iaf"])
def test_log_q_is_the_density_of_the_draws(posterior: str) -> None:
    """log q from ``posterior_sample`` = log N(z0; mu, sigma) - log|det dz/dz0| by autograd."""
    torch.manual_seed(0)
    vae = VAE(posterior, latent=3, hidden=16, context=4, flow_hidden=8, iaf_width=8).double()
    x = binary_digits()[1][:2].double()
    torch.manual_seed(5)
    z, log_q = vae.posterior_sample(x, 2)
    a = vae.encoder(x)
    mu, sigma = vae.mu(a), vae.log_sigma(a).clamp(-8.0, 4.0).exp()
    torch.manual_seed(5)
    eps = torch.randn(2, 2, 3, dtype=F64)
    z0 = mu + sigma * eps
    h = torch.tanh(vae.features(a))
    for s in range(2):
        for i in range(2):

            def push(u: torch.Tensor, i: int = i) -> torch.Tensor:
                if vae.flow is None:
                    return u
                if posterior == "cpflow":
                    return vae.flow(u[None], h[i : i + 1])[0][0]
                return vae.flow(h[i : i + 1]).transform(u[None])[0]

            assert torch.allclose(push(z0[s, i]), z[s, i], atol=1e-10)
            J = torch.autograd.functional.jacobian(push, z0[s, i])
            log_n = torch.distributions.Normal(mu[i], sigma[i]).log_prob(z0[s, i]).sum()
            ref = log_n - torch.linalg.slogdet(J)[1]
            assert abs(float(log_q[s, i].detach()) - float(ref.detach())) < 1e-9


def test_iwae_bound_above_elbo_and_below_zero() -> None:
    torch.manual_seed(0)
    vae = VAE("cpflow", latent=2, hidden=16, context=4, flow_hidden=8)
    x = binary_digits()[1][:20]
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = vae.elbo(x, 200).mean()
        iwae = vae.iwae(x, 200).mean()
    assert float(elbo) < float(iwae) < 0.0
    assert math.isfinite(float(elbo))
    with pytest.raises(FlowfieldsError, match="posterior"):
        VAE("normal")


def test_warmup_objective_scales_only_the_kl_part(tmp_path) -> None:
    """``elbo(x, n, beta)`` = E[log p(x | z)] + beta E[log p(z) - log q(z | x)] on the same
    draws; beta = 1 is the ELBO. Bad warm-up fractions and activations raise."""
    torch.manual_seed(0)
    vae = VAE("cpflow", latent=3, hidden=16, context=4, flow_hidden=8).double()
    x = binary_digits()[1][:6].double()
    with torch.no_grad():
        vae.elbo(x, 4)  # the ActNorm data init, so later calls see the same flow
        torch.manual_seed(7)
        z, log_q = vae.posterior_sample(x, 4)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_px = vae.log_joint(x, z) - log_pz
        for beta in (0.0, 0.3, 1.0):
            torch.manual_seed(7)
            ours = vae.elbo(x, 4, beta=beta)
            ref = (log_px + beta * (log_pz - log_q)).mean(0)
            assert torch.allclose(ours, ref, atol=1e-10)
    for bad in ({"warmup": 1.0}, {"warmup": -0.1}, {"flow_activation": "tanh"}):
        with pytest.raises(FlowfieldsError, match=next(iter(bad))):
            CPFlowVI(Config(**bad), tmp_path).check_config()  # type: ignore[arg-type]


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path, capsys) -> None:
    out = tmp_path / "vi"
    sets = ["steps=4", "hidden=16", "context=4", "flow_hidden=8", "iwae_k=8", "n_test=10"]
    assert main(["run", "cpflow-vi", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    m = json.loads((out / "metrics.json").read_text())
    ids = [c["id"] for c in m["claims"]]
    assert ids == ["vi-tighter-than-gaussian", "vi-within-autoregressive"]
    tighter = m["claims"][0]["holds"]
    assert tighter == (
        m["cpflow/neg_elbo"] < m["gaussian/neg_elbo"]
        and m["cpflow/iwae_nll"] < m["gaussian/iwae_nll"]
    )
    assert m["iaf/posterior_params"] >= m["cpflow/posterior_params"]
    for v in ("gaussian", "cpflow", "iaf"):
        assert m[f"{v}/iwae_nll"] <= m[f"{v}/neg_elbo"] + 1e-9
    vae = flowfields.load(out, "cpflow")
    assert vae.elbo(binary_digits()[1][:3]).shape == (3,)
    assert {p.name for p in out.glob("*.png")} == {"bounds.png", "posterior_samples.png"}
    assert main(["run", "cpflow-vi", "--out", str(tmp_path / "b"), "--set", "n_test=0"]) != 0
    assert "n_test" in capsys.readouterr().err
    assert isinstance(CPFlowVI.build_model(Config(), "iaf"), VAE)

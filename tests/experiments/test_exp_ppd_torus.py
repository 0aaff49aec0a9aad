"""ppd-torus: the data's exact density, and a tiny CLI run whose model loads back."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import stats

import flowfields
from flowfields.cli import main
from flowfields.errors import FlowfieldsError
from flowfields.manifolds import torus_quadrature, wrap
from flowfields.ppd import random_von_mises_mixture


def test_von_mises_mixture_density_and_sampler_agree() -> None:
    gen = torch.Generator().manual_seed(0)
    mix = random_von_mises_mixture(2, 3, 5.0, gen)
    pts, w = torus_quadrature(2, 128)
    assert abs(float((w * mix.log_prob(pts).exp()).sum()) - 1) < 1e-9
    one = random_von_mises_mixture(1, 1, 2.5, gen)
    x = wrap(one.sample(5000, gen)[:, 0] - one.mus[0, 0])  # centred: scipy's support [-pi, pi)
    assert stats.kstest(x.numpy(), stats.vonmises(2.5).cdf).pvalue > 1e-3
    # the density in 10-D: log_prob of one component equals the sum of 1-D von Mises terms
    mix10 = random_von_mises_mixture(10, 1, 3.0, gen)
    y = mix10.sample(4, gen)
    ref = stats.vonmises(3.0, loc=mix10.mus[0].numpy()).logpdf(y.numpy()).sum(-1)
    torch.testing.assert_close(mix10.log_prob(y), torch.as_tensor(ref), rtol=0, atol=1e-9)
    assert math.isfinite(float(mix10.log_prob(y).sum()))


def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "ppdt"
    sets = [
        "dims=2,3",
        "n_train=100",
        "n_test=50",
        "n_val=50",
        "em_sizes=1,2",
        "hidden=16",
        "depth=2",
        "steps=10",
        "batch_size=32",
        "eval_steps=4",
        "probes=2",
    ]
    assert main(["run", "ppd-torus", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ids = [c["id"] for c in metrics["claims"]]
    assert ids == ["nll-gap-per-dim", "cost-linear-in-d", "beats-mixture", "comparable-to-rfm"]
    assert metrics["em/k"] in (1, 2) and math.isfinite(metrics["baseline/rfm_test_nll"])
    assert metrics["d2/kappa_1"] in (2.0, 4.0, 8.0, 16.0)
    for d in (2, 3):
        # the uniform density's gap is an upper reference a near-uniform CNF sits near
        assert metrics[f"d{d}/uniform_gap_per_dim"] > 0
        assert math.isfinite(metrics[f"d{d}/gap_per_dim"])
    assert {p.name for p in out.glob("*.png")} == {"scaling.png", "torus_t2.png"}
    assert flowfields.load(out, "rfm-d2").sample(2).shape == (2, 2)
    model = flowfields.load(out, "d3")
    x = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3) and bool((x.abs() <= math.pi).all())


def test_bad_probes_config_raises(tmp_path) -> None:
    from flowfields.experiments.ppd_torus import Config, PPDTorus

    with pytest.raises(FlowfieldsError, match="probes"):
        PPDTorus(Config(probes=3), tmp_path / "a").check_config()
    with pytest.raises(FlowfieldsError, match="probes"):
        PPDTorus(Config(probes=2, divergence="exact"), tmp_path / "b").check_config()

"""cpflow-tabular: the seeded standardised splits, parameter matching, and a tiny CLI run."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import multivariate_normal

import flowfields
from flowfields.cli import main
from flowfields.errors import FlowfieldsError
from flowfields.experiments.cpflow_tabular import (
    Config,
    CPFlowTabular,
    _nll_per_point,
    load_tabular,
    matched_width,
    n_params,
)
from flowfields.matching import FullCovarianceGaussian


def test_load_tabular_split_standardised_and_seeded() -> None:
    train, val, test = load_tabular("wine")
    assert (len(train), len(val), len(test)) == (124, 18, 36) and train.shape[1] == 13
    assert train.dtype == torch.float32
    assert torch.allclose(train.mean(0), torch.zeros(13), atol=1e-5)
    assert torch.allclose(train.std(0), torch.ones(13), atol=1e-5)
    assert torch.equal(load_tabular("wine")[2], test)
    assert not torch.equal(load_tabular("wine", seed=1)[2], test)
    d_train, _, d_test = load_tabular("digits")
    assert d_train.shape[1] == 64 and bool(torch.isfinite(d_test).all())
    # dequantised: no pixel is constant, and values are no longer on the integer lattice
    assert bool((d_train.std(0) > 0.1).all())
    with pytest.raises(FlowfieldsError, match="name"):
        load_tabular("iris")
    with pytest.raises(FlowfieldsError, match="test_fraction"):
        load_tabular("wine", test_fraction=0.7)


def test_digits_blank_pixels_are_uniform_and_every_model_sees_the_same_data() -> None:
    """Pixels 0, 32, 39 are 0 in every image: dequantised first, standardised after, they are
    uniform on [-sqrt 3, sqrt 3] (unit variance), not degenerate; the noise is seeded, so two
    loads (the models of a run share one) are identical."""
    from scipy.stats import kstest

    from flowfields.data import load_digits

    raw = torch.as_tensor(load_digits()).reshape(-1, 64)
    blank = (raw == 0).all(0).nonzero().flatten().tolist()
    assert blank == [0, 32, 39]
    train, val, test = load_tabular("digits")
    a = 3.0**0.5  # U(0, 1) standardised: half-width sqrt(3)
    for c in blank:
        col = train[:, c].double().numpy()
        lo, width = col.min(), col.max() - col.min()
        assert abs(width - 2 * a) < 0.1 and abs(lo + a) < 0.15 and abs(col.std() - 1) < 1e-3
        assert kstest(col, "uniform", args=(lo, width)).pvalue > 1e-3  # 3 columns, seeded
    # control: a central (inked) pixel is far from uniform on its range
    ink = train[:, 36].double().numpy()
    assert kstest(ink, "uniform", args=(ink.min(), ink.max() - ink.min())).pvalue < 1e-6
    again = load_tabular("digits")
    assert all(torch.equal(p, q) for p, q in zip((train, val, test), again, strict=True))


def test_matched_width_is_smallest_reaching_target() -> None:
    def build(w: int) -> torch.nn.Module:
        return torch.nn.Linear(10, w)

    w = matched_width(build, 500)
    assert n_params(build(w)) >= 500 and n_params(build(w - 8)) < 500
    cfg = Config(blocks=2, hidden=16)
    cp = n_params(CPFlowTabular.build_model(cfg, "cpflow-wine"))
    for peer in ("maf", "nsf"):
        assert n_params(CPFlowTabular.build_model(cfg, f"{peer}-wine")) >= cp
    with pytest.raises(FlowfieldsError, match="variant"):
        CPFlowTabular.build_model(cfg, "realnvp-wine")


def test_exact_max_dim_routes_digits_to_the_exact_loss(tmp_path) -> None:
    """``exact_max_dim=64`` trains digits on the exact NLL (= -mean log_prob); the default
    (32) on the CG surrogate, whose value is not the NLL."""
    train = load_tabular("digits")[0][:64]
    for emd, exact in ((64, True), (32, False)):
        cfg = Config(datasets=("digits",), blocks=1, hidden=8, depth=2, exact_max_dim=emd)
        exp = CPFlowTabular(cfg, tmp_path)
        flow = CPFlowTabular.build_model(cfg, "cpflow-digits")
        flow.initialize(train)
        loss = float(exp._loss_fn("cpflow", 64)(flow, train).detach())
        nll = float(-flow.log_prob(train).mean().detach())
        assert (abs(loss - nll) < 1e-3) == exact
    bad = Config(datasets=("digits",), exact_max_dim=0)
    with pytest.raises(FlowfieldsError, match="exact_max_dim"):
        CPFlowTabular(bad, tmp_path).check_config()


def test_activation_reaches_every_icnn_and_bad_names_raise(tmp_path) -> None:
    """``activation=gaussian_softplus`` builds every block's ICNN on ``x Φ(x) + φ(x)`` (its
    potential differs from the softplus flow's at the same weights); other names raise."""
    from flowfields.nn import gaussian_softplus

    cfg = Config(datasets=("wine",), blocks=2, hidden=8, depth=2, activation="gaussian_softplus")
    torch.manual_seed(0)
    gs = CPFlowTabular.build_model(cfg, "cpflow-wine")
    torch.manual_seed(0)
    sp = CPFlowTabular.build_model(Config(blocks=2, hidden=8, depth=2), "cpflow-wine")
    assert [b.icnn.act for b in gs.blocks] == [gaussian_softplus] * 2
    assert [b.icnn.activation for b in sp.blocks] == ["softplus"] * 2
    x = load_tabular("wine")[0][:16]
    pot = [float(m.blocks[0].potential(x).sum().detach()) for m in (gs, sp)]
    assert abs(pot[0] - pot[1]) > 1e-3
    bad = Config(datasets=("wine",), activation="relu")
    with pytest.raises(FlowfieldsError, match="activation"):
        CPFlowTabular(bad, tmp_path).check_config()


def test_gaussian_nll_against_scipy() -> None:
    train, _, test = load_tabular("wine")
    gauss = FullCovarianceGaussian((13,)).fit(train)
    ours = _nll_per_point(gauss, test)
    mu, cov = gauss.mean.numpy(), (gauss.scale_tril @ gauss.scale_tril.T).numpy()
    ref = -multivariate_normal(mu, cov).logpdf(test.double().numpy())
    assert torch.allclose(ours, torch.tensor(ref), atol=1e-8)


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "tab"
    sets = ["datasets=wine", "blocks=1", "hidden=8", "depth=2", "steps=6", "eval_every=3"]
    assert main(["run", "cpflow-tabular", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    m = json.loads((out / "metrics.json").read_text())
    (claim,) = m["claims"]
    assert claim["id"] == "competitive-wine"
    worst = max(m["maf-wine/test_nll"], m["nsf-wine/test_nll"])
    assert claim["holds"] == (m["cpflow-wine/test_nll"] <= worst)
    assert m["cpflow-wine/params"] <= min(m["maf-wine/params"], m["nsf-wine/params"])
    assert m["cpflow-wine/best_step"] in (3, 6)
    flow = flowfields.load(out, "cpflow-wine")
    test = load_tabular("wine")[2]
    assert abs(float(_nll_per_point(flow, test).mean()) - m["cpflow-wine/test_nll"]) < 1e-4
    assert (out / "validation_nll.png").is_file()

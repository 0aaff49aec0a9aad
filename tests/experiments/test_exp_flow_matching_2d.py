"""End-to-end: a tiny flow-matching-2d run, its metrics/claims/figures, resume, load_model."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.experiments import flow_matching_2d as exp

Exp = exp.EXPERIMENT


def tiny(**kw) -> exp.Config:
    cfg = exp.Config(
        steps=6,
        batch_size=64,
        mlcnf_steps=2,
        mlcnf_rtol=1e-2,
        hidden=16,
        depth=2,
        n_test=100,
        nll_rtol=1e-4,
        n_samples=200,
        sample_steps=(2, 4, 8),
        curve_points=2,
        n_curve=50,
        curve_rtol=1e-3,
        grid=8,
        checkpoint_every=3,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_tiny_run_metrics_claims_resume_and_load(tmp_path):
    cfg = tiny()
    res = Exp.run(cfg, tmp_path, progress=False)
    for v in exp.VARIANTS:
        for key in ("nll_nats", "nll_se", "nfe_dopri5", "train_s", "sw_dopri5", "support_dopri5"):
            assert f"{v}/{key}" in res.metrics, f"{v}/{key}"
        for method in ("euler", "midpoint"):
            for k in cfg.sample_steps:
                assert math.isfinite(res.metrics[f"{v}/sw_{method}_{k}"]) or v == "ve"
                assert 0 <= res.metrics[f"{v}/support_{method}_{k}"] <= 1
        assert res.metrics[f"{v}/nfe_dopri5"] > 0
        assert res.metrics[f"{v}/steps"] == (2 if v == "mlcnf" else 6)
    ids = [c.id for c in res.claims]
    assert ids == [
        "ot-fewer-nfe",
        "ot-nll-no-worse",
        "fm-faster-than-ml",
        "ot-low-nfe-quality",
        "checkerboard-nll-target",
    ]
    assert all(isinstance(c.holds, bool) for c in res.claims)
    # the checkerboard target cannot hold after 6 steps: claims are not forced
    assert res.claims[-1].holds is False
    assert {p.name for p in res.figures} == {"samples.png", "nll_vs_wallclock.png", "density.png"}
    assert all(
        (tmp_path / p).is_file() and (tmp_path / p).stat().st_size > 1000 for p in res.figures
    )
    for v in exp.VARIANTS:
        assert (tmp_path / f"train_{v}.pt").is_file()

    # load_model round trip: the loaded CNF reproduces the reported test NLL exactly
    gen = torch.Generator().manual_seed(cfg.seed + 1000)
    from flowfields.data import get_toy
    from flowfields.integrate import ODEOptions

    test_x = get_toy(cfg.data).sample(cfg.n_test, generator=gen)
    for v in ("condot", "ve", "mlcnf"):
        cnf = Exp.load_model(tmp_path, None if v == "condot" else v)
        with torch.no_grad():
            tol = ODEOptions(rtol=cfg.nll_rtol, atol=cfg.nll_rtol)
            nll = -cnf.log_prob(test_x, solver=tol).double().mean()
        assert abs(nll.item() - res.metrics[f"{v}/nll_nats"]) < 1e-6
    assert Exp.load_model(tmp_path).sample(5).shape == (5, 2)

    # resume=True on a finished run re-uses the checkpoints: the same models and numbers
    again = Exp.run(cfg, tmp_path, resume=True, progress=False)
    for v in exp.VARIANTS:
        assert again.metrics[f"{v}/nll_nats"] == res.metrics[f"{v}/nll_nats"]
        assert again.metrics[f"{v}/train_s"] == pytest.approx(res.metrics[f"{v}/train_s"])

    # resume=True with a larger budget continues each variant from its checkpoint
    more = Exp.run(
        tiny(steps=9, variants=("condot",), curve_points=3), tmp_path, resume=True, progress=False
    )
    assert more.metrics["condot/steps"] == 9
    assert more.metrics["condot/train_s"] > res.metrics["condot/train_s"]
    # the NLL-vs-wall-clock curve stays cumulative across the resumed segments
    curve = more.tables["nll_vs_wallclock"]
    assert [c["step"] for c in curve] == [3, 6, 9]
    assert curve[0]["train_s"] < curve[1]["train_s"] < curve[2]["train_s"]
    assert curve[-1]["train_s"] == more.metrics["condot/train_s"]
    assert more.metrics["condot/nll_nats"] != res.metrics["condot/nll_nats"]


def test_other_toys_and_bad_config(tmp_path):
    res = Exp.run(tiny(data="moons", variants=("condot",)), tmp_path, progress=False)
    assert "condot/support_dopri5" not in res.metrics  # support is a checkerboard metric
    assert [c.id for c in res.claims] == []
    with pytest.raises(FlowfieldsError, match="variant"):
        Exp.load_model(tmp_path, "vp")
    with pytest.raises(FlowfieldsError, match="data"):
        Exp.run(tiny(data="swissroll"), tmp_path / "x", progress=False)
    with pytest.raises(FlowfieldsError, match="variants"):
        Exp.run(tiny(variants=("condot", "rf")), tmp_path / "x", progress=False)
    with pytest.raises(FlowfieldsError, match="run_dir"):
        Exp.load_model(tmp_path / "nothing-here")


def test_time_max_frequency_reaches_every_variant_and_is_checked(tmp_path):
    cfg = tiny(variants=("condot", "vp"), time_max_frequency=25.0, curve_points=1)
    Exp.run(cfg, tmp_path, progress=False)
    for variant in ("condot", "vp"):
        freqs = Exp.load_model(tmp_path, variant).vector_field.time_embedding.frequencies
        assert float(freqs.max()) == pytest.approx(25.0, rel=1e-6)
        assert float(freqs.min()) == pytest.approx(1.0, rel=1e-6)
    assert exp.Config().time_max_frequency == 100.0
    for bad in (0.5, float("nan"), "20"):
        with pytest.raises(FlowfieldsError, match="time_max_frequency"):
            Exp.run(tiny(time_max_frequency=bad), tmp_path / "x", progress=False)

"""End-to-end: a tiny flow-matching-digits run, baselines in the same bits/dim, load_model."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.data import DIGITS_LEVELS, load_digits, split_train_test
from flowfields.engine import load_checkpoint
from flowfields.errors import FlowfieldsError
from flowfields.experiments import flow_matching_digits as exp
from flowfields.integrate import ODEOptions
from flowfields.matching import bits_per_dim

Exp = exp.EXPERIMENT


def tiny(**kw) -> exp.Config:
    cfg = exp.Config(
        hidden=32,
        depth=2,
        steps=4,
        batch_size=32,
        n_eval=8,
        K=2,
        bpd_rtol=1e-2,
        curve_points=2,
        n_curve=2,
        checkpoint_every=2,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_tiny_run_metrics_claims_and_load(tmp_path):
    cfg = tiny()
    res = Exp.run(cfg, tmp_path, progress=False)
    m = res.metrics
    for key in ("condot", "vp", "histogram", "gaussian"):
        assert math.isfinite(m[f"{key}/bpd"]) and m[f"{key}/bpd"] > 0
        assert m[f"{key}/bpd"] <= m[f"{key}/bpd_k1"] + 1e-12  # IW bound is never looser
    assert m["condot/nfe_dopri5"] > 0 and m["estimator"] == "exact"
    # early stopping picked one of the two curve points (validation images, not test ones)
    assert m["condot/selected_step"] in (2, 4) and m["n_train"] + m["n_val"] == 1438
    best = load_checkpoint(tmp_path / "train_condot.pt")["train_state"]["best"]
    assert best["step"] == m["condot/selected_step"]
    assert best["value"] == min(v["nll"] for _, v in res_evals(tmp_path, "condot"))
    assert [c.id for c in res.claims] == [
        "fm-beats-histogram",
        "fm-beats-gaussian",
        "ot-bpd-no-worse",
    ]
    assert {p.name for p in res.figures} == {"samples.png", "bpd_vs_wallclock.png"}

    # the histogram baseline's bits/dim is the discrete model's exact value (hand computed)
    x = load_digits()
    train, test = split_train_test(x, test_fraction=cfg.test_fraction, seed=cfg.seed)
    train, _ = split_train_test(train, test_fraction=cfg.val_fraction, seed=cfg.seed + 1)
    flat_tr = train.reshape(train.shape[0], 64).long()
    flat_te = test[: cfg.n_eval].reshape(cfg.n_eval, 64).long()
    logp = torch.zeros(cfg.n_eval, dtype=torch.float64)
    for d in range(64):
        counts = torch.bincount(flat_tr[:, d], minlength=DIGITS_LEVELS).double() + 1.0
        logp += (counts[flat_te[:, d]] / counts.sum()).log()
    assert abs(m["histogram/bpd"] - (-logp.mean().item() / (64 * math.log(2)))) < 1e-9

    # load_model round trip reproduces the reported bits/dim with the same dequantization noise
    cnf = Exp.load_model(tmp_path)
    g = torch.Generator().manual_seed(cfg.seed + 3000)
    b = bits_per_dim(
        cnf,
        test[: cfg.n_eval],
        DIGITS_LEVELS,
        K=cfg.K,
        generator=g,
        scale=2.0,
        shift=-1.0,
        solver=ODEOptions(rtol=cfg.bpd_rtol, atol=cfg.bpd_rtol),
    )
    assert abs(b.bpd - m["condot/bpd"]) < 1e-6
    euler = ODEOptions("euler", step_size=0.5)
    assert Exp.load_model(tmp_path, "vp").sample(3, solver=euler).shape == (3, 1, 8, 8)


def res_evals(run_dir, variant):
    return load_checkpoint(run_dir / f"train_{variant}.pt")["train_state"]["evals"]


def test_bad_config_and_missing_variant(tmp_path):
    for kw, match in (
        ({"dataset": "cifar"}, "dataset"),
        ({"model": "resnet"}, "model"),
        ({"variants": ("ve",)}, "variants"),
        ({"estimator": "hutch++"}, "estimator"),
        ({"K": 0}, "K"),
    ):
        with pytest.raises(FlowfieldsError, match=match):
            Exp.run(tiny(**kw), tmp_path, progress=False)
    Exp.run(tiny(variants=("vp",), steps=2, n_eval=4), tmp_path, progress=False)
    with pytest.raises(FlowfieldsError, match="variant"):
        Exp.load_model(tmp_path, "condot")

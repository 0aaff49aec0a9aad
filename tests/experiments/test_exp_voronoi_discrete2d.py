"""voronoi-discrete2d: a tiny CLI run, its metrics and claims, and its models load back."""

from __future__ import annotations

import json
import math

import torch

import flowfields
from flowfields.cli import main


def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "vor"
    sets = [
        "pmfs=8gaussians,perm-clusters",
        "n_classes=4",
        "transforms=1",
        "hidden=8",
        "cond_hidden=8",
        "steps=4",
        "batch=16",
        "iwae_k=4",
    ]
    args = ["run", "voronoi-discrete2d", "--no-progress", "--out", str(out), "--set", *sets]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == [
        "learned-boundaries-help",
        "exact-likelihood",
    ]
    h = metrics["entropy_bits_per_var"]
    for pmf in ("8gaussians", "perm-clusters"):
        for kind in ("voronoi", "argmax", "uniform"):
            bits = metrics[f"{pmf}/{kind}_bits_per_var"]
            assert math.isfinite(bits)
            assert abs(metrics[f"{pmf}/{kind}_gap"] - (bits - h[pmf])) < 1e-9
        # the anchors moved (Adam steps), and the measures of it are consistent
        shift, top = metrics[f"{pmf}/anchor_shift_mean"], metrics[f"{pmf}/anchor_shift_max"]
        assert 0 < shift <= top and metrics[f"{pmf}/anchor_nn_dist_init"] > 0
        assert metrics[f"{pmf}/box_half_width"] > 0
    assert {p.name for p in out.glob("*.png")} == {"dequantization.png"}
    model = flowfields.load(out, "perm-clusters-voronoi")
    x = torch.tensor([[0, 3], [2, 1]])
    z, _ = model.dequantizer.sample(x, 2)
    assert torch.equal(model.dequantizer.decode(z), x.expand(2, 2, 2))
    # p lives on the tessellation's box: zero density outside it
    z_out = torch.full((1, model.dequantizer.features), 1e3)
    assert torch.isneginf(model.log_prob_z(z_out)).all()

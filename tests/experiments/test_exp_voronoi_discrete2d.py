"""voronoi-dequantization: a tiny CLI run, its metrics and claims, and its models load back."""

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
        "mixture_cells=3",
        "mixture_steps=4",
        "n_test=64",
        "mixture_ks=2,8",
        "timing_batch=8",
        "timing_reps=1",
    ]
    args = ["run", "voronoi-dequantization", "--no-progress", "--out", str(out), "--set", *sets]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == [
        "learned-boundaries-help",
        "exact-likelihood",
        "mixture-cost-flat-in-K",
        "mixture-gain",
    ]
    h = metrics["entropy_bits_per_var"]
    for pmf in ("8gaussians", "perm-clusters"):
        for kind in ("voronoi", "argmax", "uniform"):
            bits = metrics[f"{pmf}/{kind}_bits_per_var"]
            assert math.isfinite(bits)
            assert abs(metrics[f"{pmf}/{kind}_gap"] - (bits - h[pmf])) < 1e-9
    assert abs(metrics["mixture/mass"] - 1.0) < 5e-3
    assert {p.name for p in out.glob("*.png")} == {"dequantization.png", "mixture.png"}
    model = flowfields.load(out, "perm-clusters-voronoi")
    x = torch.tensor([[0, 3], [2, 1]])
    z, _ = model.dequantizer.sample(x, 2)
    assert torch.equal(model.dequantizer.decode(z), x.expand(2, 2, 2))
    mix = flowfields.load(out, "mixture")
    assert mix.log_prob(torch.zeros(3, 2)).shape == (3,)

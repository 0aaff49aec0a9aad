"""sdebnn-toy1d: the data generator, and a tiny CLI run whose model loads back."""

from __future__ import annotations

import json
import math

import torch

import flowfields
from flowfields.cli import main
from flowfields.experiments.sdebnn_toy1d import cosine_gap_data


def test_cosine_gap_data() -> None:
    """Half the inputs in [0, 2], half in [6, 8]; residuals ~ N(0, 0.1²) (4-SE tests)."""
    x, y = cosine_gap_data(4000, 0.1, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4000, 1)
    left = (x >= 0) & (x <= 2)
    right = (x >= 6) & (x <= 8)
    assert int(left.sum()) == 2000 and int(right.sum()) == 2000
    r = (y - torch.cos(x))[:, 0]
    n = r.numel()
    assert abs(float(r.mean())) < 4 * 0.1 / math.sqrt(n)
    assert abs(float(r.std()) / 0.1 - 1) < 4 * math.sqrt(1 / (2 * n))


def test_cli_tiny_run_and_load(tmp_path, capsys) -> None:
    out = tmp_path / "toy"
    sets = [
        "seeds=2",
        "steps=15",
        "width=4",
        "hidden=4",
        "drift_hidden=4",
        "solver_steps=3",
        "n_samples=2",
        "eval_samples=8",
        "grid=21",
        "n_data=10",
    ]
    assert main(["run", "sdebnn-toy1d", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == ["uncertainty-grows-in-gap"]
    for k in (0, 1):
        # the predictive std includes the likelihood noise, so it is never below it
        assert metrics[f"seed{k}/train_std"] >= 0.1 and metrics[f"seed{k}/gap_std"] >= 0.1
    assert metrics["ratio_min"] == min(metrics["seed0/ratio"], metrics["seed1/ratio"])
    assert {p.name for p in out.glob("*.png")} == {"predictive_bands.png", "predictive_std.png"}
    model = flowfields.load(out, "seed1")
    res = model(torch.zeros(3, 1), n_samples=4)
    assert res.out.shape == (4, 3, 1) and res.kl.shape == (4,)

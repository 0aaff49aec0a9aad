"""sdebnn-digits: a tiny CLI run of all four models; every model loads back and predicts."""

from __future__ import annotations

import json

import torch

import flowfields
from flowfields.cli import main
from flowfields.experiments.sdebnn_digits import MODELS, digits_split


def test_digits_split_is_fixed_and_scaled() -> None:
    x_train, x_test, _, y_test = digits_split()
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64)
    assert float(x_train.min()) == 0.0 and float(x_train.max()) == 1.0
    assert torch.equal(digits_split()[1], x_test)  # deterministic
    assert set(y_test.tolist()) == set(range(10))


def test_cli_tiny_run_and_load(tmp_path, capsys) -> None:
    out = tmp_path / "digits"
    sets = [
        "steps=3",
        "width=4",
        "hidden=4",
        "drift_hidden=4",
        "solver_steps=2",
        "ensemble_size=2",
        "eval_samples=2",
        "batch_size=32",
    ]
    assert main(["run", "sdebnn-digits", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == ["digits-accuracy", "digits-calibration"]
    for v in MODELS:
        assert 0.0 <= metrics[f"{v}/ece"] <= 1.0 and 0.0 <= metrics[f"{v}/accuracy"] <= 1.0
        assert metrics[f"{v}/train_cpu_s"] > 0
    calibration = next(c for c in metrics["claims"] if c["id"] == "digits-calibration")
    assert calibration["holds"] == (metrics["sdebnn/ece"] <= metrics["ode/ece"])
    assert (out / "reliability.png").is_file()
    x = digits_split()[1][:5]
    for v in MODELS:
        res = flowfields.load(out, v)(x, 3)
        assert res.out.shape[1:] == (5, 10)
    assert flowfields.load(out, "ensemble")(x).out.shape == (2, 5, 10)

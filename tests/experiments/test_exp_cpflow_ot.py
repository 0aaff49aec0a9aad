"""cpflow-ot: the OT half of cpflow-toy on its own (d = 2 and d = 8), a tiny CLI run."""

from __future__ import annotations

import json

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.cpflow import gaussian_w2
from flowfields.experiments.cpflow_toy import gaussian_problem


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path, capsys) -> None:
    out = tmp_path / "ot"
    sets = ["ot_hidden=6", "ot_depth=2", "ot_steps=5", "ot_batch=32", "n_test=200", "pot_n=50"]
    assert main(["run", "cpflow-ot", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    m = json.loads((out / "metrics.json").read_text())
    claims = {c["id"]: c for c in m["claims"]}
    assert list(claims) == [
        "ot-cost",
        "ot-brenier",
        "ot-baseline-higher-cost",
        "surrogate-unbiased",
        "ot-cost-d8",
    ]
    assert claims["surrogate-unbiased"]["holds"]  # numerics: holds even untrained
    assert claims["ot-cost-d8"]["holds"] == (abs(m["ot8/cost_rel_err"]) < 0.05)
    assert m["ot8/w2_closed_form"] == pytest.approx(gaussian_w2(*gaussian_problem(8)))
    assert not any(k.startswith("density/") for k in m)
    assert {p.name for p in out.glob("*.png")} == {"ot_map.png"}
    flow = flowfields.load(out, "ot8")
    assert flow.log_prob(torch.zeros(3, 8)).shape == (3,)
    assert main(["run", "cpflow-ot", "--out", str(tmp_path / "b"), "--set", "ot_dims=2"]) != 0
    assert "ot_dims" in capsys.readouterr().err

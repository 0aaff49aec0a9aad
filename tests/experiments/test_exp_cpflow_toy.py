"""cpflow-toy: the Gaussian OT problem, and a tiny CLI run whose models load back."""

from __future__ import annotations

import json

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.cpflow import TriangularGaussianFlow, gaussian_brenier_map, gaussian_w2
from flowfields.errors import FlowfieldsError
from flowfields.experiments.cpflow_toy import gaussian_problem

F64 = torch.float64


def test_gaussian_problem_and_closed_forms() -> None:
    m, C = gaussian_problem(2)
    assert torch.equal(m, torch.tensor([1.5, 1.0], dtype=F64))
    _, C8 = gaussian_problem(8)
    assert C8.shape == (8, 8) and bool((torch.linalg.eigvalsh(C8) > 0).all())
    # the Brenier map pushes N(m, C) onto N(0, I) exactly (covariance) and costs W2^2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(C).T + m
    y = gaussian_brenier_map(x, m, C)
    assert torch.allclose(torch.cov(y.T), torch.eye(2, dtype=F64), atol=2e-2)
    cost = float(((x - y) ** 2).sum(-1).mean())
    assert abs(cost - gaussian_w2(m, C)) < 0.03
    # the triangular flow also reaches N(0, I) but pays more (Knothe-Rosenblatt > Brenier)
    tri = TriangularGaussianFlow(2).double().fit(x)
    z = tri(x)
    assert torch.allclose(torch.cov(z.T), torch.eye(2, dtype=F64), atol=1e-10)
    assert float(((x - z) ** 2).sum(-1).mean()) > 1.05 * gaussian_w2(m, C)
    with pytest.raises(FlowfieldsError, match="d"):
        gaussian_problem(1)


@pytest.mark.slow
def test_cli_tiny_run_and_load(tmp_path, capsys) -> None:
    out = tmp_path / "cp"
    sets = [
        "blocks=1",
        "hidden=6",
        "depth=2",
        "steps=5",
        "batch=32",
        "ot_hidden=6",
        "ot_depth=2",
        "ot_steps=5",
        "ot_batch=32",
        "n_test=200",
        "pot_n=50",
        "grid=16",
    ]
    assert main(["run", "cpflow-toy", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ids = [c["id"] for c in metrics["claims"]]
    assert ids == [
        "invertible",
        "ot-cost",
        "ot-brenier",
        "ot-baseline-higher-cost",
        "surrogate-unbiased",
        "density-fit",
    ]
    # exact checks hold even untrained: the inverse and the estimator are numerics
    claims = {c["id"]: c for c in metrics["claims"]}
    assert claims["invertible"]["holds"] and claims["surrogate-unbiased"]["holds"]
    assert metrics["ot2/w2_closed_form"] == pytest.approx(gaussian_w2(*gaussian_problem(2)))
    assert {p.name for p in out.glob("*.png")} == {"density.png", "ot_map.png"}
    flow = flowfields.load(out, "ot2")
    assert flow.log_prob(torch.zeros(3, 2)).shape == (3,)
    assert main(["run", "cpflow-toy", "--out", str(tmp_path / "b"), "--set", "ot_dims=8"]) != 0
    assert "ot_dims" in capsys.readouterr().err

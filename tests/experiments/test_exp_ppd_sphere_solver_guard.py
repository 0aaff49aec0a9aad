"""ppd-sphere's solver guard: a CNF whose NLL depends on the solver is flagged, and the
claim that uses the ML-CNF's NLL is then reported as not held, with the reason."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowfields.experiments._ppd_train import SolverCheck, solver_check, solver_guard
from flowfields.experiments._ppd_train import test_nll as nll_of
from flowfields.experiments.ppd_sphere import Config, PPDSphere
from flowfields.integrate import ODEOptions
from flowfields.manifolds import Sphere
from flowfields.matching import CNF


class _Returning(nn.Module):
    """``v(t, x) = A cos(2 pi t) (e - <e, x> x)``: the gradient of the height <e, x> on S^2
    with a speed whose time integral over [0, 1] is 0, so the exact flow map is the identity
    and every exact log-density is the uniform one, -log(4 pi). rk4 with one step samples
    the speed at t = 0, 1/2, 1/2, 1 (weights 1, 2, 2, 1 / 6): a net speed -A / 3, so its flow
    moves points towards -e (A > 0) and its log-density is wrong."""

    def __init__(self, amplitude: float) -> None:
        super().__init__()
        self.register_buffer("e", torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
        self.amplitude = amplitude

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        speed = self.amplitude * torch.cos(2 * math.pi * t)
        speed = speed.reshape(-1, 1) if speed.dim() else speed
        return speed * (self.e - (x @ self.e).unsqueeze(-1) * x)


def _exploited(amplitude: float = 6.0) -> CNF:
    return CNF(_Returning(amplitude), 3, manifold=Sphere(2)).double()


def _data_near_minus_e(n: int = 256) -> Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.3
    x[:, 2] -= 1.0
    return Sphere(2).projx(x)


def test_fine_solver_recovers_the_exact_nll_and_rk4x1_does_not() -> None:
    cnf, x = _exploited(), _data_near_minus_e()
    exact = math.log(4 * math.pi)
    assert abs(nll_of(cnf, x, 128) - exact) < 1e-4  # identity map: uniform density
    coarse = nll_of(cnf, x, 1)
    # data near -e, the coarse flow pushes mass there: the coarse NLL looks better
    assert coarse < exact - 1.0


def test_guard_fires_on_the_exploited_solver_and_passes_a_converged_one() -> None:
    cnf, x = _exploited(), _data_near_minus_e()
    fine = ODEOptions("rk4", step_size=1 / 128)
    c = solver_check(cnf, x, ODEOptions("rk4", step_size=1.0), 32, fine)
    assert c.exploit_gap > 0.5 and c.eval_gap < 1e-3
    reason = solver_guard(c, 0.1)
    assert reason is not None and "exploits its training solver" in reason
    assert solver_guard(solver_check(cnf, x, fine, 32, fine), 0.1) is None
    # an unconverged evaluation solver is flagged too, and NaN never passes
    c = solver_check(cnf, x, fine, 1, fine)
    reason = solver_guard(c, 0.1)
    assert reason is not None and "not converged" in reason
    assert solver_guard(SolverCheck(math.nan, 1.0, 1.0), 0.1) is not None


def _experiment_with(cnf: CNF, tmp_path, **kw) -> PPDSphere:
    cfg = Config(n_test=256, eval_steps=16, fine_steps=128, solver_tol=0.1, **kw)
    exp = PPDSphere(cfg, tmp_path)
    exp.x_test = _data_near_minus_e()
    m = exp.metrics
    # the metrics and tables the claims read, besides the ML-CNF's (as a run would leave them)
    for k in ("ppd", "rfm", "mlcnf"):
        m[f"{k}/s_per_step"], m[f"{k}/test_nll"] = 1e-3, 1.0
    m["mlcnf/s_per_step"], m["mlcnf/train_cpu_s"] = 1.0, 100.0
    m |= {"em/test_nll": 2.0, "em/k": 2, "true/test_nll": 1.0, "target_kde/test_nll": 1.0}
    m |= {"cost_ratio_ppd_over_ml": 1e-3, "ppd/time_to_ml_nll_s": 1.0, "tv/max_ratio": 0.5}
    exp.tables["minibatch_bias"] = [{"batch": 2, "bias": -1.0, "stderr": 0.1}]
    exp.tables["minibatch_gradient_bias"] = [{"batch": 2, "relative_bias": 1.0, "stderr": 0.1}]
    exp.tables["tv_bound"] = []
    exp._solver_checks({"mlcnf": cnf})
    return exp


def test_experiment_reports_the_ml_claim_not_held_when_the_solver_is_exploited(tmp_path) -> None:
    exp = _experiment_with(_exploited(), tmp_path / "bad", ml_solver="rk4", ml_solver_steps=1)
    m = exp.metrics
    assert m["mlcnf/solver_guard_ok"] is False and m["mlcnf/exploit_gap"] > 0.5
    # the evaluation and the reference are the fine solves, not the training one
    assert abs(m["mlcnf/nll_eval_solver"] - math.log(4 * math.pi)) < 1e-3
    assert abs(m["mlcnf/nll_fine_solver"] - math.log(4 * math.pi)) < 1e-4
    claim = {c.id: c for c in exp.claims()}["faster-than-ml"]
    assert claim.holds is False  # though PPD was "faster" (1 s < 100 s)
    assert "NOT HELD" in (claim.note or "") and "exploits" in (claim.note or "")
    # the same model trained through a converged solver passes the guard and the claim holds
    exp = _experiment_with(_exploited(), tmp_path / "ok", ml_solver="dopri5", ml_tol=1e-6)
    assert exp.metrics["mlcnf/solver_guard_ok"] is True
    assert {c.id: c for c in exp.claims()}["faster-than-ml"].holds is True


def test_bad_solver_settings_raise(tmp_path) -> None:
    import pytest

    from flowfields.errors import FlowfieldsError

    for kw, name in (
        ({"ml_solver": "euler"}, "ml_solver"),
        ({"fine_steps": 16, "eval_steps": 16}, "fine_steps"),
        ({"solver_tol": 0.0}, "solver_tol"),
        ({"ml_tol": 0.0}, "ml_tol"),
    ):
        with pytest.raises(FlowfieldsError, match=name):
            PPDSphere(Config(**kw), tmp_path).check_config()

"""Tiny runs of the three conservation experiments: contract, invariants, resume."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.conservation import FluidModel, KnownHodgeField, taylor_green
from flowfields.experiments import conservation_fluid, conservation_hodge, conservation_ot

OT, HODGE, FLUID = (m.EXPERIMENT for m in (conservation_ot, conservation_hodge, conservation_fluid))


def test_ot_tiny_run_respects_benamou_brenier_lower_bound(tmp_path):
    cfg = conservation_ot.Config(
        gauss_steps=30,
        toy_steps=10,
        toys=["8gaussians"],
        toy_components=4,
        n_t=4,
        n_x=32,
        batch=64,
        eval_n_t=8,
        eval_n_x=4000,
        n_ot=200,
        ode_steps=4,
    )
    res = OT.run(cfg, tmp_path, progress=False)
    assert res.name == "conservation-ot"
    assert {c.id for c in res.claims} == {
        "ot-gauss-1d-within-5pct",
        "ot-gauss-2d-within-5pct",
        "ot-toy-8gaussians-vs-exact",
    }
    for case in ("gauss-1d", "gauss-2d"):
        exact = res.metrics[f"{case}/w2sq_closed_form"]
        fitted = res.metrics[f"{case}/w2sq_fitted_endpoints"]
        ke = res.metrics[f"{case}/kinetic_energy"]
        # endpoints start from sample moments: already close to the truth
        assert abs(fitted - exact) / exact < 0.1
        # any path between the fitted endpoints costs at least their W2² (Benamou–Brenier);
        # the Monte Carlo estimate (8 x 4000 samples) is allowed 3% of noise
        assert ke >= 0.97 * fitted
    assert res.metrics["toy-8gaussians/exact_ot_cost"] > 0
    assert all((tmp_path / p).exists() for p in res.figures)
    model = OT.load_model(tmp_path, "gauss-2d")
    x = torch.randn(5, 2)
    assert torch.isfinite(model.velocity(0.5, x)).all()


def test_hodge_tiny_run(tmp_path):
    cfg = conservation_hodge.Config(dims=[2, 3], steps=15, batch=64, hidden=16, n_eval=256)
    res = HODGE.run(cfg, tmp_path, progress=False)
    claims = {c.id: c for c in res.claims}
    assert claims["hodge-divergence-exact"].holds
    assert res.metrics["d3/max_abs_div_w_float64"] < 1e-12
    for d in (2, 3):  # the reported errors are those of the saved models on fresh points
        model = HODGE.load_model(tmp_path, f"d{d}")
        x = conservation_hodge.evaluation_points(cfg, d)
        known = KnownHodgeField(d, cfg.seed)
        with torch.no_grad():
            gp, w = model(x)
        ref, est = known(x), gp.double() + w.double()
        err = float(((est - ref) ** 2).sum(-1).mean().sqrt() / (ref**2).sum(-1).mean().sqrt())
        assert res.metrics[f"d{d}/rel_err_F"] == pytest.approx(err, rel=1e-12)
        assert res.metrics[f"d{d}/rel_err_F"] < 1.0  # better than predicting zero
    model = HODGE.load_model(tmp_path, "d3")
    gp, w = model(torch.randn(4, 3))
    assert gp.shape == w.shape == (4, 3)


def test_known_hodge_field_parts():
    from flowfields.divergence import divergence_exact

    known = KnownHodgeField(5)
    x = torch.randn(64, 5, dtype=torch.float64)
    _, div = divergence_exact(lambda t, y: known.w(y), 0.0, x)
    assert div.abs().max() < 1e-13
    jac = torch.func.vmap(torch.func.jacrev(lambda y: known.grad_phi(y[None])[0]))(x)
    torch.testing.assert_close(jac, jac.transpose(1, 2))  # a gradient: symmetric Jacobian
    assert known.w(x).abs().max() > 0.1 and known.grad_phi(x).abs().max() > 0.1


def test_taylor_green_solves_navier_stokes():
    """The reference itself: momentum residual of the exact solution is zero."""
    nu = 0.3
    t = torch.rand(32, dtype=torch.float64)
    x = 2 * math.pi * torch.rand(32, 2, dtype=torch.float64)

    def u_of(s, y):
        return taylor_green(s, y, nu)[0]

    _, du_dt = torch.func.jvp(lambda s: u_of(s, x), (t,), (torch.ones_like(t),))
    cols, lap = [], 0
    for j in range(2):
        e = torch.zeros_like(x)
        e[:, j] = 1
        first, second = torch.func.jvp(
            lambda y, e=e: torch.func.jvp(lambda z: u_of(t, z), (y,), (e,))[1], (x,), (e,)
        )
        cols.append(first)
        lap = lap + second
    p_of = lambda y: taylor_green(t, y, nu)[1]  # noqa: E731
    grad_p = torch.func.vjp(p_of, x)[1](torch.ones(32, dtype=torch.float64))[0]
    u = u_of(t, x)
    advect = u[:, :1] * cols[0] + u[:, 1:] * cols[1]
    res = du_dt + advect + grad_p - nu * lap
    assert res.abs().max() < 1e-12
    assert (cols[0][:, 0] + cols[1][:, 1]).abs().max() < 1e-12


def test_fluid_tiny_run_and_resume(tmp_path):
    cfg = conservation_fluid.Config(
        budget_s=1.0, eval_every_s=0.5, batch=32, ic_batch=32, hidden=16, depth=2, grid=8
    )
    res = FLUID.run(cfg, tmp_path, progress=False)
    assert res.metrics["ncl/mean_abs_div"] < 1e-5
    assert res.metrics["pinn/mean_abs_div"] > 1e-4
    assert {c.id for c in res.claims} == {"fluid-ncl-beats-pinn", "fluid-ncl-divergence-zero"}
    steps = res.metrics["ncl/steps"]
    assert 0 <= res.metrics["pinn/steps_compared"] <= steps
    ratio = res.metrics["ncl/rel_l2_velocity"] / res.metrics["pinn/rel_l2_at_ncl_steps"]
    assert res.metrics["ncl_over_pinn_rel_l2_equal_steps"] == pytest.approx(ratio)
    again = FLUID.run(cfg, tmp_path, resume=True, progress=False)
    assert again.metrics["ncl/steps"] == steps  # budget already spent: nothing more to train
    model = FLUID.load_model(tmp_path, "ncl")
    assert model.velocity(torch.zeros(3), torch.rand(3, 2)).shape == (3, 2)


def test_fluid_model_rejects_unknown_method():
    from flowfields.errors import FlowfieldsError

    with pytest.raises(FlowfieldsError, match="method"):
        FluidModel("spectral")


def test_fluid_methods_train_on_identical_collocation_points(tmp_path, monkeypatch):
    """Fair comparison: step k of the NCL and step k of the PINN see the same batch."""
    seen: dict[str, list[torch.Tensor]] = {"ncl": [], "pinn": []}
    original = conservation_fluid._loss

    def recording(model, cfg, points):
        seen[model.method].append(
            torch.cat([points["t"], points["x"].flatten(), points["x0"].flatten()])
        )
        return original(model, cfg, points)

    monkeypatch.setattr(conservation_fluid, "_loss", recording)
    rates: list[float] = []
    original_lr = conservation_fluid.learning_rate

    def recording_lr(cfg, spent_s):
        rates.append(original_lr(cfg, spent_s))
        return rates[-1]

    monkeypatch.setattr(conservation_fluid, "learning_rate", recording_lr)
    cfg = conservation_fluid.Config(
        budget_s=0.6,
        eval_every_s=10.0,
        batch=16,
        ic_batch=8,
        hidden=8,
        depth=1,
        grid=4,
        lr_schedule="cosine",
    )
    FLUID.run(cfg, tmp_path, progress=False)
    n = min(len(seen["ncl"]), len(seen["pinn"]))
    assert n >= 2
    for a, b in zip(seen["ncl"][:n], seen["pinn"][:n], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (seen["ncl"][0] - seen["ncl"][1]).abs().max() > 0  # fresh points every step
    assert len(rates) == len(seen["ncl"]) + len(seen["pinn"])  # the schedule sets every step
    assert rates[0] == cfg.lr and min(rates) < cfg.lr


def test_mccann_path_error_of_a_geometric_scale_path():
    """Linear mean, geometric σ (zero network): closed-form distance from McCann's path."""
    from flowfields.conservation import PositiveDensityFlux

    m0, s0, m1, s1 = [-1.0, 0.5], 0.5, [1.5, -1.0], 2.0
    model = PositiveDensityFlux(2, n_components=1, correction=False).double()
    with torch.no_grad():
        model.mean_0.copy_(torch.tensor([m0]))
        model.mean_1.copy_(torch.tensor([m1]))
        model.log_std_0.fill_(math.log(s0))
        model.log_std_1.fill_(math.log(s1))
        model.time_net[-1].weight.zero_()
        model.time_net[-1].bias.zero_()
    mean_err, std_err = conservation_ot.mccann_path_error(model, m0, s0, m1, s1, n_t=101)
    assert mean_err < 1e-12
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    gap = (s0 ** (1 - t) * s1**t - ((1 - t) * s0 + t * s1)).abs().max().item()
    assert gap > 0.1  # the geometric path really differs
    assert std_err == pytest.approx(gap / s1, rel=1e-12)
    with torch.no_grad():
        model.mean_1.add_(0.1)  # a wrong endpoint: off by 0.1 * √2 at t = 1
    mean_err, _ = conservation_ot.mccann_path_error(model, m0, s0, m1, s1, n_t=101)
    assert mean_err == pytest.approx(0.1 * math.sqrt(2) / math.hypot(2.5, 1.5), rel=1e-12)


def test_fluid_learning_rate_rule_and_bad_schedule(tmp_path):
    from flowfields.errors import FlowfieldsError

    cfg = conservation_fluid.Config(budget_s=10.0, lr=2e-3, lr_floor=0.05, lr_schedule="cosine")
    lr = conservation_fluid.learning_rate
    assert lr(cfg, 0.0) == pytest.approx(2e-3)
    assert lr(cfg, 5.0) == pytest.approx(2e-3 * (0.05 + 0.95 * 0.5))
    assert lr(cfg, 10.0) == pytest.approx(2e-3 * 0.05)
    assert lr(cfg, 99.0) == pytest.approx(2e-3 * 0.05)  # past the budget: stays at the floor
    assert lr(cfg, 2.0) > lr(cfg, 7.0)
    cfg.lr_schedule = "constant"
    assert lr(cfg, 7.0) == 2e-3
    cfg.lr_schedule = "step"
    with pytest.raises(FlowfieldsError, match="lr_schedule"):
        FLUID.run(cfg, tmp_path, progress=False)


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_fluid_budget_counts_cpu_time_not_waiting(tmp_path, monkeypatch, clock):
    """The equal-time race is load-independent: time the training thread does not run (here a
    sleep inside every step, as when other processes hold the core) is not spent budget."""
    import time

    original = conservation_fluid.collocation_points

    def slow_points(cfg, generator, device="cpu"):
        time.sleep(0.05)
        return original(cfg, generator, device)

    monkeypatch.setattr(conservation_fluid, "collocation_points", slow_points)
    cfg = conservation_fluid.Config(
        budget_s=0.25, clock=clock, eval_every_s=10.0, batch=16, ic_batch=8, hidden=8, depth=1,
        grid=4,
    )  # fmt: skip
    res = FLUID.run(cfg, tmp_path, progress=False)
    m = res.metrics
    assert m["clock"] == clock
    for k in ("ncl", "pinn"):
        assert m[f"{k}/train_s"] >= cfg.budget_s  # each method spent its whole budget
    if clock == "wall":  # 50 ms of sleep per step: at most 0.25 / 0.05 + 1 steps
        assert m["pinn/steps"] <= 6 and m["ncl/steps"] <= 6
        assert m["pinn/ms_per_step"] > 50
    else:  # sleeping costs no CPU time: the PINN's ~10 ms steps fit many times in 0.25 s
        assert m["pinn/steps"] >= 12
        assert m["pinn/ms_per_step"] < 25


def test_fluid_budget_clock_choices(tmp_path):
    import time

    from flowfields.errors import FlowfieldsError

    assert conservation_fluid.budget_clock("auto", "cpu") is time.thread_time
    assert conservation_fluid.budget_clock("cpu") is time.thread_time
    assert conservation_fluid.budget_clock("wall", "cpu") is time.perf_counter
    a = time.thread_time()
    time.sleep(0.05)
    assert time.thread_time() - a < 0.02  # the premise: waiting is not CPU time
    with pytest.raises(FlowfieldsError, match="clock"):
        conservation_fluid.budget_clock("process")
    with pytest.raises(FlowfieldsError, match="clock"):
        FLUID.run(conservation_fluid.Config(clock="gpu"), tmp_path, progress=False)

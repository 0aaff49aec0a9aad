"""Voronoi dequantizer with a Student-t latent (base="student"): q(z | x) normalised over
x's cell (float64 polar quadrature), exact log q at the samples, samples in the cell and
t-distributed, the face asymptotics g^(nu - 1), a learnable df, bad df / base errors."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.voronoi import (
    DequantizedFlow,
    VoronoiDequantizer,
    cell_map_inverse,
    make_dequantizer,
    make_flow,
    polar_cell_nodes,
    ray_length,
)

F64 = torch.float64
K = 6


def _deq(df: float = 1.0, *, base: str = "student", learn_df: bool = False, n_vars: int = 1):
    """A float64 Voronoi dequantizer (D = 2) with random anchors, box half-width 2.5 and a
    random conditional MLP (so m(x), s(x) differ per class), seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        d = VoronoiDequantizer(
            n_vars, K, 2, hidden=16, box=2.5, base=base, df=df, learn_df=learn_df
        ).to(F64)
        with torch.no_grad():
            d.tess.raw.copy_(0.8 * torch.randn_like(d.tess.raw))
            for p in d.net.parameters():
                p.mul_(1.5)
    return d


def _cell_masses(d: VoronoiDequantizer, n_phi: int, n_alpha: int) -> torch.Tensor:
    """int_{cell c} q(z | x = c) dz for every class c (n_vars = 1), by polar_cell_nodes."""
    t = d.tess
    a, lo, hi = t.anchors[0].detach(), t.lower[0].detach(), t.upper[0].detach()
    out = []
    with torch.no_grad():
        for c in range(K):
            y, w = polar_cell_nodes(a, lo, hi, c, n_phi, n_alpha)
            lq = d.log_q(y[:, None, :], torch.tensor([[c]]))[:, 0]
            out.append(float((lq.exp() * w).sum()))
    return torch.tensor(out, dtype=F64)


@pytest.mark.parametrize("df", [0.5, 1.0, 3.0])
def test_student_q_has_mass_one_over_the_cell_of_x(df) -> None:
    """q(. | c) integrates to 1 over cell c for every class at 1000 x 200 nodes: to 1e-10
    for df 1, 3 and the normal q (measured 6e-15), to 1e-7 for df 0.5 (measured 2.6e-8, the
    same at 2000 angles: the radial rule, the integrand ~ g^-0.5 at the face). A log q off
    by 0.01 nats reads e^0.01 (the check can fail)."""
    d = _deq(df)
    masses = _cell_masses(d, 1000, 200)
    tol = 1e-7 if df < 1 else 1e-10
    torch.testing.assert_close(masses, torch.ones(K, dtype=F64), rtol=0, atol=tol)
    normal = _cell_masses(_deq(base="normal"), 1000, 200)
    torch.testing.assert_close(normal, torch.ones(K, dtype=F64), rtol=0, atol=1e-10)
    import flowfields.voronoi.dequantization as dq

    exact = dq.multivariate_t_log_prob
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dq, "multivariate_t_log_prob", lambda z, nu: exact(z, nu) + 0.01)
        wrong = _cell_masses(d, 1000, 200)
    torch.testing.assert_close(wrong, torch.full((K,), math.exp(0.01), dtype=F64))


def test_student_samples_lie_in_the_cell_and_are_t() -> None:
    """Samples decode to x inside the box; the returned log q equals log_q at the samples
    (1e-10); the standardised latents t = (f^-1(z) - m) / s are multivariate t, so
    |t|^2 / D ~ F(D, nu) (KS, 4000 draws per class pair, p > 1e-3), and a wrong nu is
    rejected (p < 1e-6); a seeded generator repeats the draws."""
    from scipy.stats import f as fisher
    from scipy.stats import kstest

    nu = 2.5
    d = _deq(nu, n_vars=2)
    x = torch.tensor([[0, 3], [5, 1]])
    z, lq = d.sample(x, 2000, generator=torch.Generator().manual_seed(11))
    z2, _ = d.sample(x, 2000, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    assert (d.decode_in_box(z) == x).all()
    with torch.no_grad():
        torch.testing.assert_close(d.log_q(z, x), lq, rtol=0, atol=1e-10)
        t = d.tess
        zz = z.unflatten(-1, (2, 2))
        eps, _ = cell_map_inverse(zz, x.expand(zz.shape[:-1]), t.anchors, t.lower, t.upper)
        m, log_s = d._gauss(x)
        r2 = (((eps - m) / log_s.exp()) ** 2).sum(-1).flatten() / 2
    assert kstest(r2.numpy(), fisher(2, nu).cdf).pvalue > 1e-3
    assert kstest(r2.numpy(), fisher(2, 8.0).cdf).pvalue < 1e-6


def test_student_q_at_the_faces_is_polynomial_in_the_gap() -> None:
    """Along a ray of cell c at relative gap g from its face, log q(z | c) falls like
    (nu - 1) log g with the t (slope to 2e-3 between g = 1e-5 and 1e-6) and like -c / g^2
    with the normal (below -1e4 at g = 1e-3)."""
    dirs = torch.tensor([[0.6, 0.8], [-1.0, 0.2], [0.1, -1.0]], dtype=F64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    c = torch.tensor([0, 3, 2])
    for nu in (0.5, 1.0, 3.0):
        d = _deq(nu)
        t = d.tess
        a, lo, hi = t.anchors[0], t.lower[0], t.upper[0]
        with torch.no_grad():
            lam = ray_length(dirs, c, a, lo, hi)
            lp = []
            for g in (1e-5, 1e-6):
                y = a[c] + ((1 - g) * lam)[:, None] * dirs
                lp.append(d.log_q(y, c[:, None]))
            slope = (lp[0] - lp[1]) / math.log(10)
            assert torch.isfinite(lp[1]).all()
            assert ((slope - (nu - 1)).abs() < 2e-3).all(), (nu, slope)
    d = _deq(base="normal")
    with torch.no_grad():
        y = a[c] + ((1 - 1e-3) * lam)[:, None] * dirs
        assert (d.log_q(y, c[:, None]) < -1e4).all()


def test_learned_df_gets_a_gradient_from_the_elbo() -> None:
    d = _deq(1.0, learn_df=True, n_vars=2)
    model = DequantizedFlow(d, make_flow(4, transforms=1, hidden=(8,)).to(F64))
    x = torch.tensor([[0, 1], [2, 5], [4, 4]])
    loss = -model.elbo(x, 4, generator=torch.Generator().manual_seed(0)).mean()
    loss.backward()
    assert d.log_df.grad is not None and torch.isfinite(d.log_df.grad) and d.log_df.grad != 0
    assert float(d.df.detach()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"df": 0.0}, "df"),
        ({"df": -1.0}, "df"),
        ({"df": float("nan")}, "df"),
        ({"df": float("inf")}, "df"),
        ({"df": "3"}, "df"),
        ({"df": True}, "df"),
        ({"base": "cauchy"}, "base"),
        ({"base": "normal", "learn_df": True}, "learn_df"),
        ({"learn_df": 1}, "learn_df"),
    ],
)
def test_bad_student_options_raise(kw, name) -> None:
    """A bad df / base / learn_df raises FlowfieldsError naming the argument, for Voronoi
    and, through make_dequantizer, for every kind."""
    args = {"base": "student", "df": 1.0, **kw}
    with pytest.raises(FlowfieldsError, match=name):
        VoronoiDequantizer(1, 4, 2, **args)
    with pytest.raises(FlowfieldsError, match=name):
        make_dequantizer("argmax", 1, 4, **args)


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"q_df": 0.0}, "q_df"),
        ({"q_base": "t"}, "q_base"),
        ({"q_base": "normal", "q_learn_df": True}, "q_learn_df"),
    ],
)
def test_experiment_configs_check_the_q_options(bad, field, tmp_path) -> None:
    """voronoi-discrete2d and voronoi-categorical reject a bad q law, naming the field; their
    default is the t with nu learned from 1."""
    from flowfields.experiments.voronoi_categorical import VoronoiCategorical
    from flowfields.experiments.voronoi_discrete2d import VoronoiDiscrete2d

    for exp in (VoronoiDiscrete2d, VoronoiCategorical):
        cfg = exp.Config()
        assert (cfg.q_base, cfg.q_df, cfg.q_learn_df) == ("student", 1.0, True)
    for exp in (VoronoiDiscrete2d, VoronoiCategorical):
        cfg = exp.Config(**bad)
        with pytest.raises(FlowfieldsError, match=field):
            exp(cfg, tmp_path).check_config()
        exp(exp.Config(q_base="student", q_df=2.0, q_learn_df=True), tmp_path).check_config()

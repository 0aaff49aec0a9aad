"""Dynamical optimal transport (Benamou–Brenier) with exact continuity.

Paper: "Neural Conservation Laws: A Divergence-Free Perspective" (arXiv:2210.01741), the
dynamical OT experiment. A :class:`~flowfields.conservation.PositiveDensityFlux` gives a
density/flux pair ``(ρ, j)`` that satisfies ``∂_t ρ + div j = 0`` by construction, with ``ρ >= 0``;
training minimises the kinetic energy ``∫∫ ρ |v|² dx dt`` (``v = j / ρ``) plus ``λ`` times the
negative log-likelihood of samples of the two endpoint densities under ``ρ_0`` and ``ρ_1``.
At the optimum the kinetic energy is the squared 2-Wasserstein distance ``W2²``.

Cases:
- ``gauss-1d``, ``gauss-2d``: isotropic Gaussian endpoints, where
  ``W2² = |m0 - m1|² + d (s0 - s1)²`` (claim: the kinetic energy is within 5%), and the optimal
  path is McCann's interpolant ``N((1-t) m0 + t m1, ((1-t) s0 + t s1)² I)``: the learned
  component path is compared with it (:func:`mccann_path_error`).
- ``toy-<name>``: N(0, I) -> a 2-D toy of :mod:`flowfields.data`. The ODE ``dx/dt = v`` moves
  N(0, I) samples; ``E|x_1 - x_0|²`` is compared with the exact discrete OT cost (``ot.emd2``)
  between the source samples and as many toy samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from flowfields.conservation import PositiveDensityFlux
from flowfields.errors import check
from flowfields.experiments.base import Experiment
from flowfields.report import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "ConservationOT", "mccann_path_error"]

NAME = "conservation-ot"
PAPER = "Neural Conservation Laws: A Divergence-Free Perspective (arXiv:2210.01741)"

#: Gaussian cases: (mean_0, std_0, mean_1, std_1).
GAUSS_CASES: dict[str, tuple[list[float], float, list[float], float]] = {
    "gauss-1d": ([-1.5], 0.5, [2.0], 1.2),
    "gauss-2d": ([-1.0, 0.5], 0.5, [1.5, -1.0], 1.0),
}


@dataclass
class Config:
    """Configuration of the dynamical OT experiment.

    Attributes:
        seed, device: set by the CLI.
        gauss_steps: optimiser steps per Gaussian case.
        toy_steps: optimiser steps per toy case.
        toys: 2-D toys of :mod:`flowfields.data` transported from N(0, I).
        toy_components: mixture components of ρ for the toys.
        lam: weight of the endpoint negative log-likelihoods.
        n_t, n_x: stratified times and samples per time in the training kinetic energy.
        batch: endpoint samples per step (each end).
        lr: Adam learning rate.
        hidden: width of the network of t (and of the divergence-free correction).
        eval_n_t, eval_n_x: Gauss-Legendre nodes and samples per node for the final energy.
        n_ot: samples for the exact discrete OT cost and the ODE transport (10k in full).
        n_gap: samples (at most ``n_ot``) of the diagnostic W2² between the pushforward and
            the toy, reported in the claim's note (``None``: ``n_ot``). An exact OT solve on 2k
            samples of 8gaussians takes 1.8 s against 0.1 s on 1k, so the quick preset uses 1k.
        ode_steps: RK4 steps of the transport ODE.
    """

    seed: int = 0
    device: str = "cpu"
    gauss_steps: int = 150
    toy_steps: int = 900
    toys: list[str] = field(default_factory=lambda: ["8gaussians", "moons"])
    toy_components: int = 12
    lam: float = 1000.0
    n_t: int = 16
    n_x: int = 64
    batch: int = 256
    lr: float = 5e-3
    hidden: int = 32
    eval_n_t: int = 24
    eval_n_x: int = 4000
    n_ot: int = 2000
    n_gap: int | None = 1000
    ode_steps: int = 40

    @classmethod
    def quick(cls) -> Config:
        """About 33 s on one free CPU core (one thread); 90% of it training (a toy step
        costs about 14 ms, a 2-D Gaussian step 13 ms, a 1-D one 7 ms)."""
        return cls()

    @classmethod
    def full(cls) -> Config:
        """Longer training, three toys, 10k-sample exact OT. Estimated (not timed end to end)
        at roughly 45 min on one CPU core, most of it the 10k x 10k ``ot.emd2`` solves (~1 GB
        of memory each); the training part is a few minutes on a GPU."""
        return cls(
            gauss_steps=3000,
            toy_steps=6000,
            toys=["8gaussians", "moons", "checkerboard"],
            toy_components=32,
            n_t=32,
            n_x=128,
            batch=1024,
            lr=3e-3,
            hidden=64,
            eval_n_x=20000,
            n_ot=10000,
            n_gap=None,
            ode_steps=100,
        )


def _gaussian_w2sq(m0: list[float], s0: float, m1: list[float], s1: float) -> float:
    d = len(m0)
    return sum((a - b) ** 2 for a, b in zip(m0, m1, strict=True)) + d * (s0 - s1) ** 2


def mccann_path_error(
    model: PositiveDensityFlux,
    m0: list[float],
    s0: float,
    m1: list[float],
    s1: float,
    n_t: int = 21,
) -> tuple[float, float]:
    """Distance of a one-component model's path from McCann's displacement interpolant.

    Between ``N(m0, s0² I)`` and ``N(m1, s1² I)`` the W2 geodesic is
    ``N((1-t) m0 + t m1, ((1-t) s0 + t s1)² I)``.

    Args:
        model: a :class:`PositiveDensityFlux` with one component.
        m0, s0, m1, s1: the true endpoint means and standard deviations.
        n_t: number of equally spaced times in [0, 1].

    Returns:
        ``(max_t |μ(t) - μ*(t)| / |m1 - m0|, max_t |σ(t) - σ*(t)| / max(s0, s1))``.
    """
    dtype = model.mean_0.dtype
    t = torch.linspace(0.0, 1.0, n_t, dtype=dtype)
    with torch.no_grad():
        c = model.components(t)
    a, b = torch.tensor(m0, dtype=dtype), torch.tensor(m1, dtype=dtype)
    mu_star = (1 - t)[:, None] * a + t[:, None] * b
    std_star = (1 - t) * s0 + t * s1
    mean_err = (c["mu"][:, 0] - mu_star).norm(dim=-1).max() / (b - a).norm()
    std_err = (c["std"][:, 0] - std_star).abs().max() / max(s0, s1)
    return float(mean_err), float(std_err)


def _build(dim: int, k: int, hidden: int) -> PositiveDensityFlux:
    return PositiveDensityFlux(
        dim,
        n_components=k,
        hidden=hidden,
        depth=2,
        correction=dim >= 2,
        correction_hidden=hidden,
        correction_depth=2,
        init_mean_scale=0.5,
    )


def _objective(cfg: Config, sample_0: Any, sample_1: Any) -> Any:
    """Kinetic energy plus λ times the endpoint NLLs (the Benamou–Brenier relaxation)."""

    def loss_fn(m: Any, step: int) -> torch.Tensor:
        ke = m.kinetic_energy(cfg.n_t, cfg.n_x, quadrature="stratified")
        x_0, x_1 = sample_0(cfg.batch), sample_1(cfg.batch)
        # both endpoints in one call (t = 0 for the first half, 1 for the second): the mean
        # over the 2 * batch points is (nll_0 + nll_1) / 2, at 0.7x the cost of two calls
        t = torch.cat([x_0.new_zeros(cfg.batch), x_1.new_ones(cfg.batch)])
        nll = -m.log_rho(t, torch.cat([x_0, x_1])).mean()
        return ke + cfg.lam * 2 * nll

    return loss_fn


def _transport(model: PositiveDensityFlux, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """Trajectories of dx/dt = v(t, x) from t = 0 to 1 with RK4: (steps + 1, n, d)."""
    from flowfields.integrate import odeint

    t = torch.linspace(0.0, 1.0, steps + 1, dtype=x0.dtype)
    with torch.no_grad():
        traj = odeint(lambda s, x: model.velocity(s, x), x0, t, method="rk4").x
    assert isinstance(traj, torch.Tensor)
    return traj


def _exact_ot(x: torch.Tensor, y: torch.Tensor) -> float:
    import numpy as np
    import ot

    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    cost = ot.dist(x.double().numpy(), y.double().numpy())  # squared Euclidean
    return float(ot.emd2(a, b, cost, numItermax=10_000_000))


class ConservationOT(Experiment, config=Config):
    """Dynamical OT with exact continuity: Gaussian endpoints (closed form) and 2-D toys
    (exact discrete OT by POT). Models saved: one :class:`PositiveDensityFlux` per case
    (``gauss-1d``, ``gauss-2d``, ``toy-<name>``); ``gauss-2d`` by default."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("gauss-2d", "gauss-1d")

    def check_config(self) -> None:
        n_gap = self.cfg.n_gap
        ok = n_gap is None or (isinstance(n_gap, int) and not isinstance(n_gap, bool) and n_gap > 1)
        check(ok, "n_gap", n_gap, "None or an integer > 1")

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        if variant in GAUSS_CASES:
            return _build(len(GAUSS_CASES[variant][0]), 1, cfg.hidden)
        return _build(2, cfg.toy_components, cfg.hidden)

    def _train_case(self, case: str, model: PositiveDensityFlux, sample_0: Any, sample_1: Any,
                    steps: int) -> PositiveDensityFlux:  # fmt: skip
        cfg = self.cfg
        if not (self.resume and (self.run_dir / f"train_{case}.pt").exists()):
            model.init_endpoints(sample_0(4096), sample_1(4096))
        res = self.fit(
            case,
            model,
            _objective(cfg, sample_0, sample_1),
            steps=steps,
            lr=cfg.lr,
            ema_decay=None,
            checkpoint_every=max(steps // 4, 50),
            scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1)),
        )
        self.losses[case] = res.losses
        self.metrics[f"{case}/train_s"] = res.train_s
        return model

    def train(self) -> dict[str, nn.Module]:
        from flowfields.data import get_toy

        cfg = self.cfg
        models: dict[str, nn.Module] = {}
        self.losses: dict[str, list[float]] = {}
        for i, (case, (m0, s0, m1, s1)) in enumerate(GAUSS_CASES.items()):
            self.reseed(i)
            mean_0, mean_1 = torch.tensor(m0), torch.tensor(m1)
            models[case] = self._train_case(
                case,
                _build(len(m0), 1, cfg.hidden),
                lambda n, m=mean_0, s=s0: m + s * torch.randn(n, m.shape[0]),
                lambda n, m=mean_1, s=s1: m + s * torch.randn(n, m.shape[0]),
                cfg.gauss_steps,
            )
        for i, name in enumerate(cfg.toys):
            self.reseed(10 + i)
            toy = get_toy(name)
            models[f"toy-{name}"] = self._train_case(
                f"toy-{name}",
                _build(2, cfg.toy_components, cfg.hidden),
                lambda n: torch.randn(n, 2),
                lambda n, toy=toy: toy.sample(n, dtype=torch.float32),
                cfg.toy_steps,
            )
        return models

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        self.rows: list[dict[str, Any]] = []
        self.transports: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for case in GAUSS_CASES:
            self._evaluate_gauss(case, models[case])
        for i, name in enumerate(self.cfg.toys):
            self._evaluate_toy(i, name, models[f"toy-{name}"])
        self.tables["dynamical_ot"] = self.rows

    def _evaluate_gauss(self, case: str, model: Any) -> None:
        cfg, m = self.cfg, self.metrics
        m0, s0, m1, s1 = GAUSS_CASES[case]
        gen = torch.Generator().manual_seed(cfg.seed + 100)
        with torch.no_grad():
            ke = model.kinetic_energy(cfg.eval_n_t, cfg.eval_n_x, generator=gen).item()
            c0, c1 = model.components(0.0), model.components(1.0)
        exact = _gaussian_w2sq(m0, s0, m1, s1)
        fitted = _gaussian_w2sq(
            c0["mu"][0, 0].tolist(), c0["std"][0, 0].item(),
            c1["mu"][0, 0].tolist(), c1["std"][0, 0].item(),
        )  # fmt: skip
        rel = abs(ke - exact) / exact
        mean_err, std_err = mccann_path_error(model, m0, s0, m1, s1)
        m[f"{case}/mccann_mean_max_rel_err"], m[f"{case}/mccann_std_max_rel_err"] = (
            mean_err,
            std_err,
        )
        m[f"{case}/kinetic_energy"], m[f"{case}/w2sq_closed_form"] = ke, exact
        m[f"{case}/w2sq_fitted_endpoints"], m[f"{case}/rel_error"] = fitted, rel
        self._row(case, ke, exact, rel)

    def _evaluate_toy(self, i: int, name: str, model: Any) -> None:
        from flowfields.data import get_toy

        cfg, m, case = self.cfg, self.metrics, f"toy-{name}"
        gen = torch.Generator().manual_seed(cfg.seed + 200 + i)
        x0 = torch.randn(cfg.n_ot, 2, generator=gen)
        target = get_toy(name).sample(cfg.n_ot, generator=gen, dtype=torch.float32)
        traj = _transport(model, x0, cfg.ode_steps)
        ode_cost = ((traj[-1] - traj[0]) ** 2).sum(-1).mean().item()
        with torch.no_grad():
            ke = model.kinetic_energy(cfg.eval_n_t, cfg.eval_n_x // 4, generator=gen).item()
        t_ot = time.perf_counter()
        exact = _exact_ot(x0, target)
        n_gap = cfg.n_ot if cfg.n_gap is None else min(cfg.n_gap, cfg.n_ot)
        fit_gap = _exact_ot(traj[-1][:n_gap], target[:n_gap])  # pushforward vs the toy
        m[f"{case}/emd_s"] = time.perf_counter() - t_ot
        rel = abs(ode_cost - exact) / exact
        m[f"{case}/ode_cost"], m[f"{case}/kinetic_energy"] = ode_cost, ke
        m[f"{case}/exact_ot_cost"], m[f"{case}/rel_error"] = exact, rel
        m[f"{case}/pushforward_w2sq_to_target"], m[f"{case}/n_gap"] = fit_gap, n_gap
        self._row(case, ode_cost, exact, rel)
        self.transports[name] = (traj, target)

    def _row(self, case: str, estimate: float, reference: float, rel: float) -> None:
        train_s = self.metrics[f"{case}/train_s"]
        self.rows.append(
            {"case": case, "estimate": estimate, "reference": reference, "rel_error": rel,
             "train_s": train_s}
        )  # fmt: skip

    def claims(self) -> list[Claim]:
        m, cfg = self.metrics, self.cfg
        claims = []
        for case in GAUSS_CASES:
            rel, ke, exact = (
                m[f"{case}/rel_error"],
                m[f"{case}/kinetic_energy"],
                m[f"{case}/w2sq_closed_form"],
            )
            claims.append(
                Claim(
                    id=f"ot-{case}-within-5pct",
                    statement=f"Dynamical OT between Gaussians ({case}): the learned kinetic "
                    "energy equals W2² = |m0 - m1|² + d (s0 - s1)² within 5%.",
                    measured=rel,
                    threshold=0.05,
                    holds=rel <= 0.05,
                    note=f"kinetic energy {ke:.4f} vs closed form {exact:.4f}; W2² between the "
                    f"fitted endpoints {m[f'{case}/w2sq_fitted_endpoints']:.4f} (endpoint-fit "
                    "error included in the estimate). Path vs McCann's interpolant: mean off by "
                    f"at most {m[f'{case}/mccann_mean_max_rel_err']:.1%} of |m1 - m0|, std by at "
                    f"most {m[f'{case}/mccann_std_max_rel_err']:.1%} of max(s0, s1).",
                )
            )
        for name in cfg.toys:
            case = f"toy-{name}"
            rel, gap = m[f"{case}/rel_error"], m[f"{case}/pushforward_w2sq_to_target"]
            claims.append(
                Claim(
                    id=f"ot-{case}-vs-exact",
                    statement=f"N(0, I) -> {name}: the ODE-transported cost E|x_1 - x_0|² "
                    f"matches the exact discrete OT cost (ot.emd2, {cfg.n_ot} samples).",
                    measured=rel,
                    threshold=0.10,
                    holds=rel <= 0.10,
                    note="Threshold 10% is ours (the paper reports costs, not a tolerance). The "
                    f"pushforward is W2²={gap:.3f} from the target ({m[f'{case}/n_gap']} "
                    "samples); a Gaussian-mixture ρ with "
                    f"{cfg.toy_components} components limits the fit of sharp toys.",
                )
            )
        return claims

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        self.save_figure(_plot_density_1d(models["gauss-1d"], plt), "ot_gauss_1d_density.png")
        for name, (traj, target) in self.transports.items():
            self.save_figure(_plot_transport(traj, target, name, plt), f"ot_{name}.png")
        self.save_figure(_plot_losses(self.losses, plt), "ot_losses.png")


def _plot_density_1d(model: Any, plt: Any) -> Any:
    ts = torch.linspace(0, 1, 101)
    xs = torch.linspace(-4, 6, 201)
    with torch.no_grad():
        grid = torch.stack([torch.exp(model.log_rho(float(t), xs[:, None])) for t in ts])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.imshow(grid.T.numpy(), origin="lower", aspect="auto", extent=[0, 1, -4, 6], cmap="magma")
    ax.set_xlabel("t")
    ax.set_ylabel("x")
    ax.set_title("ρ(t, x): learned 1-D Gaussian transport (continuity exact)")
    return fig


def _plot_transport(traj: torch.Tensor, target: torch.Tensor, name: str, plt: Any) -> Any:
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    n_steps = traj.shape[0] - 1
    for ax, frac in zip(axes[:3], (0.0, 0.5, 1.0), strict=True):
        pts = traj[round(frac * n_steps)][:2000]
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_title(f"ODE samples, t = {frac:.1f}")
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
    ax = axes[3]
    ax.scatter(target[:2000, 0], target[:2000, 1], s=1, alpha=0.4, color="k")
    for k in range(min(60, traj.shape[1])):
        ax.plot(traj[:, k, 0], traj[:, k, 1], lw=0.6)
    ax.set_title(f"{name}: target and paths")
    ax.set_xlim(-4.5, 4.5)
    ax.set_ylim(-4.5, 4.5)
    return fig


def _plot_losses(losses: dict[str, list[float]], plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for case, ls in losses.items():
        if ls:
            ax.plot(ls, label=case, lw=0.8)
    ax.set_yscale("symlog")
    ax.set_xlabel("step")
    ax.set_ylabel("KE + λ NLL")
    ax.legend(fontsize=7)
    return fig


EXPERIMENT = ConservationOT

"""Inverse design of a quantum heat-transfer device by differentiating its steady state.

Paper: Vargas-Hernández, Chen, Jung, Brumer, "Fully differentiable optimization protocols for
non-equilibrium steady states" (arXiv:2103.12604), the heat-transfer example.

Device: the three-level V-system of :func:`flowfields.quantum.v_system_heat` between a hot
(T_h = 2) and a cold (T_c = 0.5) bosonic bath (ε₁ = 1, γ_h = 0.01 fixed). Two design tasks over
the same box for grid search and gradient ascent:

- ``current``: maximise the heat current J_h over ε₂ ∈ [0.5, 2] (linear), Δ ∈ [1e-3, 0.3] (log),
  γ_φ ∈ [1e-4, 1] (log), γ_c = 0.01.
- ``rectification``: maximise R = |J_f + J_r| / max(|J_f|, |J_r|) (J of the g↔1 bath with the
  bias forward and reversed) over ε₂ ∈ [0.5, 2], γ_c ∈ [1e-3, 0.1] (log), Δ ∈ [1e-3, 0.3] (log),
  γ_φ = 0.005.

Grid search evaluates ``grid_points³`` designs (1 steady state each for the current, 2 for
the rectification); gradient ascent runs Adam in box coordinates from ``ga_starts`` random
starts, each step costing one forward and one adjoint solve per steady state. Also measured:
the sensitivity dJ_h/dε₂ over a scan against central finite differences, the same gradient from
all four forward methods, and the time of one gradient with P = 4 vs P = 256 Hamiltonian
parameters (against the 2P solves of finite differences).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from flowfields.experiments._design_claims import ascent_vs_grid, ascent_vs_grid_claim
from flowfields.experiments.base import Experiment
from flowfields.quantum import (
    STEADY_METHODS,
    Box,
    expect,
    heat_current,
    lindbladian,
    rectification,
    steady_state,
    v_system_heat,
)
from flowfields.report import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "SteadyStateHeat"]

NAME = "steady-state-heat"
PAPER = (
    "Fully differentiable optimization protocols for non-equilibrium steady states "
    "(arXiv:2103.12604)"
)

CURRENT_BOX = Box(
    ("eps_2", "delta", "gamma_phi"), (0.5, 1e-3, 1e-4), (2.0, 0.3, 1.0), (False, True, True)
)
RECT_BOX = Box(
    ("eps_2", "gamma_c", "delta"), (0.5, 1e-3, 1e-3), (2.0, 0.1, 0.3), (False, True, True)
)


@dataclass
class Config:
    """Configuration of the heat-device experiment.

    Attributes:
        seed, device: set by the CLI (numerics run on CPU in complex128 whatever the device).
        grid_points: grid points per axis of the brute-force search (3 axes).
        ga_starts: random starts of gradient ascent.
        ga_steps: Adam steps per start.
        lr: Adam learning rate in box units.
        scan_points: points of the sensitivity scan over ε₂.
        timing_reps: repetitions of the P = 4 / P = 256 gradient timing.
        T_h, T_c: bath temperatures (forward bias).
        method: steady-state forward method used by the designs.
    """

    seed: int = 0
    device: str = "cpu"
    grid_points: int = 10
    ga_starts: int = 3
    ga_steps: int = 40
    lr: float = 0.08
    scan_points: int = 41
    timing_reps: int = 15
    T_h: float = 2.0
    T_c: float = 0.5
    method: str = "dense"

    @classmethod
    def quick(cls) -> Config:
        """About 10 s on one CPU thread (1,000 + 2,000 grid solves)."""
        return cls()

    @classmethod
    def full(cls) -> Config:
        """25³ grid (15,625 + 31,250 solves) and 8 starts x 100 steps: ~1.5 min on one CPU core."""
        return cls(grid_points=25, ga_starts=8, ga_steps=100, scan_points=101, timing_reps=50)


def _current(cfg: Config, u: torch.Tensor) -> torch.Tensor:
    p = CURRENT_BOX.to_params(u)
    dev = v_system_heat(
        eps_2=p["eps_2"], delta=p["delta"], gamma_phi=p["gamma_phi"], T_h=cfg.T_h, T_c=cfg.T_c
    )
    return dev.currents(cfg.method)[0] * 100.0  # in units of 0.01 (γ_h)


def _rect(cfg: Config, u: torch.Tensor) -> torch.Tensor:
    p = RECT_BOX.to_params(u)
    kw = {"eps_2": p["eps_2"], "gamma_c": p["gamma_c"], "delta": p["delta"]}
    J_f = v_system_heat(**kw, T_h=cfg.T_h, T_c=cfg.T_c).currents(cfg.method)[0]
    J_r = v_system_heat(**kw, T_h=cfg.T_c, T_c=cfg.T_h).currents(cfg.method)[0]
    return rectification(J_f, J_r)


def _gradient_time(P: int, reps: int) -> float:
    """Median seconds of one value + gradient of ⟨H0⟩_ss w.r.t. P Hamiltonian parameters."""
    base = v_system_heat()
    g = torch.Generator().manual_seed(P)
    G = torch.randn(P, 3, 3, dtype=torch.complex128, generator=g)
    G = 0.01 * (G + G.mH) / 2
    theta = torch.zeros(P, dtype=torch.float64, requires_grad=True)
    L0 = base.lindbladian
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        H = L0.H + (theta.to(torch.complex128)[:, None, None] * G).sum(0)
        val = expect(base.H, steady_state(lindbladian(H, L0.C, L0.rates), "dense"))
        torch.autograd.grad(val, theta)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _design(cfg: Config, task: str, metrics: dict[str, Any], log: Any) -> tuple[Any, Claim]:
    """Grid search vs gradient ascent for one task; its metrics and claim."""
    obj, n_ss, box = {
        "current": (lambda u: _current(cfg, u), 1, CURRENT_BOX),
        "rectification": (lambda u: _rect(cfg, u), 2, RECT_BOX),
    }[task]
    scale = 0.01 if task == "current" else 1.0
    grid, ga = ascent_vs_grid(obj, box, cfg, metrics, task, solves_per_call=n_ss, scale=scale)
    log(
        f"{task}: grid best {grid.best_value * scale:.6g} ({grid.solves} solves), "
        f"gradient ascent best {ga.best_value * scale:.6g} ({ga.solves} solves)"
    )
    claim = ascent_vs_grid_claim(ga, grid, task=task, what=task, fmt=".6g", scale=scale)
    return (grid, ga, box), claim


def _sensitivity(cfg: Config, metrics: dict[str, Any]) -> tuple[dict[str, Any], Claim]:
    """J_h and dJ_h/dε₂ (implicit) over a scan against central finite differences."""
    eps2 = torch.linspace(0.5, 2.0, cfg.scan_points, dtype=torch.float64)
    J_scan, dJ, dJ_fd, dP = [], [], [], []
    h = 1e-6
    for e in eps2:
        x = e.clone().requires_grad_()
        dev = v_system_heat(eps_2=x, delta=0.05, T_h=cfg.T_h, T_c=cfg.T_c)
        rho = steady_state(dev.lindbladian, cfg.method)
        J = heat_current(dev.H, *dev.hot, rho)
        outs = [J, rho[1, 1].real, rho[2, 2].real]
        g, *dpop = (
            float(torch.autograd.grad(o, x, retain_graph=i < 2)[0]) for i, o in enumerate(outs)
        )
        with torch.no_grad():
            jp = v_system_heat(eps_2=e + h, delta=0.05, T_h=cfg.T_h, T_c=cfg.T_c).currents()[0]
            jm = v_system_heat(eps_2=e - h, delta=0.05, T_h=cfg.T_h, T_c=cfg.T_c).currents()[0]
        J_scan.append(float(J.detach()))
        dJ.append(float(g))
        dJ_fd.append(float((jp - jm) / (2 * h)))
        dP.append(dpop)
    dJ_t, dJ_fd_t = torch.tensor(dJ, dtype=torch.float64), torch.tensor(dJ_fd, dtype=torch.float64)
    fd_rel = float((dJ_t - dJ_fd_t).abs().max() / dJ_fd_t.abs().max())
    metrics["sensitivity/max_rel_err_vs_fd"] = fd_rel
    claim = Claim(
        id="grad-matches-fd",
        statement="Implicit gradients of the steady state agree with finite differences.",
        measured=fd_rel,
        threshold="<= 1e-6 (max over the scan, relative to max |dJ/dε₂|)",
        holds=fd_rel <= 1e-6,
        note="Central differences, h = 1e-6, float64 / complex128.",
    )
    return {"eps2": eps2.numpy(), "J": J_scan, "dJ": dJ, "dJ_fd": dJ_fd, "dP": dP}, claim


def _method_agreement(cfg: Config, u_best: torch.Tensor, metrics: dict[str, Any]) -> Claim:
    """The same gradient from every forward method, at the best current design."""
    grads = {}
    for m in STEADY_METHODS:
        u = u_best.clone().requires_grad_()
        p = CURRENT_BOX.to_params(u)
        dev = v_system_heat(
            eps_2=p["eps_2"], delta=p["delta"], gamma_phi=p["gamma_phi"], T_h=cfg.T_h, T_c=cfg.T_c
        )
        (grads[m],) = torch.autograd.grad(dev.currents(m)[0], u)
    ref = grads["dense"]
    diffs = {m: float((grads[m] - ref).abs().max()) for m in STEADY_METHODS}
    spread = max(diffs.values())
    spread_rel = spread / max(float(ref.abs().max()), 1e-300)
    metrics["methods/evolve_grad_diff_rel"] = diffs["evolve"] / max(float(ref.abs().max()), 1e-300)
    metrics["methods/max_grad_diff"] = spread
    metrics["methods/max_grad_diff_rel"] = spread_rel
    return Claim(
        id="same-grad-all-methods",
        statement="The gradient is the same whatever forward method found the steady state.",
        measured=spread_rel,
        threshold="<= 1e-8 (relative), dense vs sparse / krylov / evolve",
        holds=spread_rel <= 1e-8,
    )


def _gradient_cost(cfg: Config, metrics: dict[str, Any]) -> Claim:
    """The cost of one gradient with P = 4 vs P = 256 Hamiltonian parameters."""
    t4, t256 = _gradient_time(4, cfg.timing_reps), _gradient_time(256, cfg.timing_reps)
    metrics["cost/grad_ms_P4"] = t4 * 1e3
    metrics["cost/grad_ms_P256"] = t256 * 1e3
    metrics["cost/ratio_P256_P4"] = t256 / t4
    return Claim(
        id="grad-cost-independent-of-P",
        statement="The cost of one gradient does not grow with the number of parameters "
        "(finite differences need 2P solves).",
        measured=t256 / t4,
        threshold="time(P=256) / time(P=4) <= 3",
        holds=t256 / t4 <= 3.0,
        note=f"median of {cfg.timing_reps} runs each; shared 2-core machine, timings noisy.",
    )


class SteadyStateHeat(Experiment, config=Config):
    """Grid search vs gradient ascent for J_h and R, sensitivity scan, gradient checks.

    Trains no network: ``checkpoint.pt`` holds the best designs (box coordinates) as artifacts.
    """

    NAME, PAPER = NAME, PAPER

    def _log(self, msg: str) -> None:
        if self.progress:
            print(f"[{NAME}] {msg}", flush=True)

    def evaluate(self, models: dict[str, Any]) -> None:
        cfg, m = self.cfg, self.metrics
        self.outcomes: dict[str, Any] = {}
        self._claims: list[Claim] = []
        for task in ("current", "rectification"):
            self.outcomes[task], claim = _design(cfg, task, m, self._log)
            self._claims.append(claim)
        self.scan, claim = _sensitivity(cfg, m)
        self._claims.append(claim)
        self._claims.append(_method_agreement(cfg, self.outcomes["current"][1].best_u, m))
        self._claims.append(_gradient_cost(cfg, m))
        self.artifacts = {f"{t}_best_u": o[1].best_u for t, o in self.outcomes.items()}
        self.tables["designs"] = [
            {
                "task": t,
                "search": s,
                "best": m[f"{t}/{s}_best"],
                "solves": m[f"{t}/{s}_solves"],
                **{k: m[f"{t}/{s}_best_{k}"] for k in b.names},
            }
            for t, (_, _, b) in self.outcomes.items()
            for s in ("grid", "ga")
        ]

    def claims(self) -> list[Claim]:
        return self._claims

    def figures(self, models: dict[str, Any]) -> None:
        plt = self.plt
        self.save_figure(_plot_ascent(plt, self.outcomes), "ascent_vs_grid.png")
        self.save_figure(_plot_landscape(plt, self.cfg, self.outcomes), "current_landscape.png")
        self.save_figure(_plot_sensitivity(plt, self.scan), "sensitivity.png")


def _plot_ascent(plt: Any, outcomes: dict[str, Any]) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (task, (grid, ga, _)) in zip(axes, outcomes.items()):
        scale = 0.01 if task == "current" else 1.0
        for vals in ga.values:
            best = torch.tensor(vals).cummax(0).values * scale
            per = 2 * (1 if task == "current" else 2)
            x = torch.arange(1, len(vals) + 1) * per
            ax.plot(x.numpy(), best.numpy(), alpha=0.8)
        ax.axhline(
            grid.best_value * scale, color="k", ls="--", label=f"grid best ({grid.solves} solves)"
        )
        ax.set_xlabel("solves (per start)")
        ax.set_ylabel("J_h" if task == "current" else "R")
        ax.set_title(f"{task}: gradient ascent (running best)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_landscape(plt: Any, cfg: Config, outcomes: dict[str, Any]) -> Any:
    grid, ga, _ = outcomes["current"]
    fig, ax = plt.subplots(figsize=(5, 4))
    k = int(grid.best_u[2] * (cfg.grid_points - 1) + 0.5)
    sl = (grid.values[:, :, k].T * 0.01).numpy()
    im = ax.imshow(sl, origin="lower", extent=(0, 1, 0, 1), aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label="J_h")
    for tr in ga.trajectories:
        ax.plot(tr[:, 0].numpy(), tr[:, 1].numpy(), "w.-", ms=3, lw=0.8)
    ax.set_xlabel("ε₂ (0.5 → 2)")
    ax.set_ylabel("log Δ (1e-3 → 0.3)")
    ax.set_title("J_h at the grid's best γ_φ, with ascent paths")
    fig.tight_layout()
    return fig


def _plot_sensitivity(plt: Any, scan: dict[str, Any]) -> Any:
    e_np, dJ_fd = scan["eps2"], scan["dJ_fd"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].plot(e_np, scan["J"])
    axes[0].set_xlabel("ε₂")
    axes[0].set_ylabel("J_h")
    axes[0].set_title("heat current (Δ = 0.05)")
    axes[1].plot(e_np, scan["dJ"], label="implicit dJ_h/dε₂")
    axes[1].plot(e_np[::4], dJ_fd[::4], "o", ms=4, mfc="none", label="finite differences")
    dP_t = torch.tensor(scan["dP"], dtype=torch.float64)
    axes[1].plot(e_np, dP_t[:, 0].numpy() * 0.01, ":", label="0.01 dρ₁₁/dε₂")
    axes[1].plot(e_np, dP_t[:, 1].numpy() * 0.01, ":", label="0.01 dρ₂₂/dε₂")
    axes[1].set_xlabel("ε₂")
    axes[1].legend(fontsize=8)
    axes[1].set_title("sensitivity of the steady state")
    fig.tight_layout()
    return fig


EXPERIMENT = SteadyStateHeat

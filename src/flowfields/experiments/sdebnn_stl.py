"""Sticking the landing, and the adjoint: the SDE-BNN's gradient estimators measured.

Xu, Chen, Li, Duvenaud, "Infinitely Deep Bayesian Neural Networks with Stochastic
Differential Equations" (arXiv:2102.06559), section 4 (the STL estimator) and the
memory-efficient adjoint.

1. A scalar OU weight ``dw = -theta w dt + sigma dB``, ``w(0) = w_0``, observed through
   ``y ~ N(w(1), s^2)``. Its exact posterior is an SDE with the prior's diffusion and drift
   ``-theta w + sigma^2 d/dw log h(t, w)``, ``h(t, w) = p(y | w(t) = w)`` (Doob's
   h-transform), here ``NN*(t, w) = sigma^2 a(t) (y - a(t) w) / (c(t) + s^2)`` with the OU
   transition ``w(1) | w(t) ~ N(a(t) w, c(t))``. The variational family
   ``NN_phi = phi_0 alpha(t) + phi_1 beta(t) w`` contains it at ``phi* = (1, 1)``; the
   per-path gradient of the negative ELBO w.r.t. phi (one parameter row per path, one
   backward) is measured for ckl, fmc and stl at ``phi = phi* + eps delta``, through
   :class:`~flowfields.sdebnn.AugmentedSDE` and :func:`flowfields.integrate.sdeint` (Euler).
2. On a digits-sized :class:`~flowfields.sdebnn.SDEBNN`: the memory autograd holds for the
   backward at 20 and 200 solver steps, adjoint vs backprop
   (:class:`SavedTensorMeter`), and the adjoint's gradient against backprop's (float64,
   one fixed Brownian motion, reversible Heun, whose adjoint is exact for the discretised
   SDE).

Nothing is trained: the experiment saves no model.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check
from flowfields.experiments.base import Experiment
from flowfields.integrate.ou import ou_variance
from flowfields.report.result import Claim

__all__ = [
    "EXPERIMENT",
    "NAME",
    "PAPER",
    "SDEBNNSTL",
    "Config",
    "LinearDriftFamily",
    "SavedTensorMeter",
    "per_path_gradients",
]

NAME = "sdebnn-stl"
PAPER = (
    "Infinitely Deep Bayesian Neural Networks with Stochastic Differential Equations "
    "(Xu et al., arXiv:2102.06559)"
)
F64 = torch.float64


@dataclass
class Config:
    """Settings of ``sdebnn-stl``.

    Attributes:
        theta, sigma, w_0: the scalar OU prior; y, obs_std: the observation ``N(w(1), s^2)``.
        n_paths: paths per gradient estimate (the spread is their standard deviation).
        steps: Euler step counts at the true posterior; eps: distances along ``direction``
            from phi* for the variance curve (solved at ``curve_steps``).
        away: the eps at which the estimators' means are compared.
        memory_steps: solver steps for the adjoint-vs-backprop memory measurement;
            grad_steps: steps of the float64 gradient comparison.
        seed, device: set by the CLI (everything here runs in float64 on the CPU).
    """

    theta: float = 1.0
    sigma: float = 1.0
    w_0: float = 0.0
    y: float = 1.5
    obs_std: float = 0.3
    n_paths: int = 4000
    steps: tuple[int, ...] = (20, 100, 500)
    eps: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1, 0.05, 0.0)
    direction: tuple[float, float] = (-0.6, 0.8)
    curve_steps: int = 100
    away: float = 1.0
    memory_steps: tuple[int, int] = (20, 200)
    grad_steps: int = 25
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """2000 paths, 4 points on the variance curve: about 15 s of CPU."""
        return cls(n_paths=2000, eps=(1.0, 0.3, 0.1, 0.0))

    @classmethod
    def full(cls) -> Config:
        """4000 paths, 6 points on the curve: about 1 min of CPU."""
        return cls()


# ---------------------------------------------------------------- measurement helpers


class SavedTensorMeter:
    """Bytes of tensors autograd holds for backward: current and peak, over a ``with`` block.

    Counts distinct storages (a storage saved twice counts once) while they are alive, so the
    peak covers the forward's graph *and* any graph built during the backward (torchsde's
    adjoint rebuilds one step at a time). The pack hook keeps a detached alias, never the
    tensor itself: holding a saved output together with its ``grad_fn`` would make a
    reference cycle through the C++ graph that keeps retained graphs alive forever.

    Example:
        >>> x = torch.ones(1000, requires_grad=True)
        >>> with SavedTensorMeter() as meter:
        ...     (x.exp() * 2).sum().backward()
        >>> meter.peak_bytes >= 4000, meter.current_bytes
        (True, 0)
    """

    def __init__(self) -> None:
        self._live: dict[int, list[int]] = {}
        self.current_bytes = 0
        self.peak_bytes = 0

    def _pack(self, t: Tensor) -> _Held:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [0, storage.nbytes()]
            self.current_bytes += entry[1]
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        entry[0] += 1
        return _Held(t.detach(), self, key)

    def _release(self, key: int) -> None:
        entry = self._live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current_bytes -= entry[1]
            del self._live[key]

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


class _Held:
    __slots__ = ("key", "meter", "tensor")

    def __init__(self, tensor: Tensor, meter: SavedTensorMeter, key: int) -> None:
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self) -> None:
        self.meter._release(self.key)


def _unpack(held: _Held) -> Tensor:
    return held.tensor


# ------------------------------------------------------------------ the scalar OU model
def posterior_coefficients(t: float, cfg: Config) -> tuple[float, float]:
    """``(alpha(t), beta(t))`` with the exact posterior drift correction
    ``NN*(t, w) = alpha(t) + beta(t) w`` (Doob's h-transform of the OU prior given y)."""
    a = math.exp(-cfg.theta * (1.0 - t))  # w(1) | w(t) = w  ~  N(a w, c)
    c = float(ou_variance(1.0 - t, cfg.theta, cfg.sigma))
    scale = cfg.sigma**2 * a / (c + cfg.obs_std**2)
    return scale * cfg.y, -scale * a


class LinearDriftFamily(nn.Module):
    """``NN_phi(t, w) = phi_0 alpha(t) + phi_1 beta(t) w``, one row of phi per path.

    At ``phi = (1, 1)`` it is the exact posterior drift correction of the scalar OU model
    (:func:`posterior_coefficients`). One parameter row per path makes a single backward
    return every path's own gradient.

    Args:
        phi: (n_paths, 2) initial parameters. cfg: the model's settings.
    """

    def __init__(self, phi: Tensor, cfg: Config) -> None:
        super().__init__()
        self.phi = nn.Parameter(phi.clone())
        self.cfg = cfg
        self.n_weights = 1

    def forward(self, t: Tensor, w: Tensor) -> Tensor:
        alpha, beta = posterior_coefficients(float(t), self.cfg)
        return self.phi[:, :1] * alpha + self.phi[:, 1:] * beta * w


def per_path_gradients(
    cfg: Config, estimator: str, phi: Tensor, steps: int, entropy: int
) -> Tensor:
    """Gradient w.r.t. phi of each path's negative ELBO ``-log N(y; w(1), s^2) + KL_est``.

    Args:
        estimator: ckl, fmc or stl. phi: (2,) where to evaluate. steps: Euler steps.
        entropy: the Brownian motion's seed (the same seed gives the same paths for every
            estimator).

    Returns:
        (n_paths, 2) float64 per-path gradients.
    """
    import torchsde

    from flowfields.integrate import sdeint
    from flowfields.sdebnn import AugmentedSDE, OUPrior, PaddedBrownian

    n = cfg.n_paths
    family = LinearDriftFamily(phi.to(F64).expand(n, 2), cfg)
    sde = AugmentedSDE(OUPrior(cfg.sigma, cfg.theta), family, estimator=estimator)
    bm: Any = torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=(n, 1), dtype=F64, entropy=entropy, dt=1.0 / steps
    )
    if sde.noise_type == "diagonal":
        bm = PaddedBrownian(bm, before=0, after=1)
    y_0 = sde.pack(None, torch.full((n, 1), cfg.w_0, dtype=F64))
    y_1 = sdeint(sde, y_0, [0.0, 1.0], method="euler", dt=1.0 / steps, bm=bm).x[-1]
    _, w_1, kl = sde.unpack(y_1)
    nll = 0.5 * ((cfg.y - w_1[:, 0]) / cfg.obs_std) ** 2
    (grad,) = torch.autograd.grad((nll + kl).sum(), family.phi)
    return grad


def _spread(g: Tensor) -> float:
    """Norm over the parameters of the per-parameter standard deviations over paths."""
    return float(g.std(0).norm())


# ------------------------------------------------------------------ the adjoint
def _digits_sized(steps: int, adjoint: bool, dtype: torch.dtype) -> Any:
    from flowfields.sdebnn import SDEBNN

    torch.manual_seed(0)
    net: Any = SDEBNN(
        64,
        10,
        width=32,
        hidden=32,
        drift_hidden=(32,),
        steps=steps,
        adjoint=adjoint,
        method="reversible_heun",
        task="classification",
        sigma=0.1,
    ).to(dtype)
    with torch.no_grad():  # a posterior away from the prior
        net.drift.net[-1].weight.normal_(0, 0.05)
    return net


def held_for_backward_mib(steps: int, adjoint: bool) -> float:
    """Peak MiB autograd holds during one forward + backward (batch 128, 4 weight paths)."""
    from flowfields.sdebnn import elbo_loss

    net = _digits_sized(steps, adjoint, torch.float32)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 64, generator=g), torch.randint(0, 10, (128,), generator=g)
    with SavedTensorMeter() as meter:
        res = net(x, 4)
        elbo_loss(res.out, res.kl, y, task="classification", n_data=1437).loss.backward()
    return meter.peak_bytes / 2**20


def adjoint_gradient_error(steps: int) -> float:
    """Largest |adjoint - backprop| over all parameters, relative to each parameter's
    largest backprop gradient (float64, one fixed Brownian motion)."""
    adj, direct = _digits_sized(steps, True, F64), _digits_sized(steps, False, F64)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 64, generator=g, dtype=F64)
    y = torch.randint(0, 10, (16,), generator=g)
    bm = adj.brownian_motion(3, dtype=F64)
    grads = []
    for net in (adj, direct):
        res = net(x, 3, bm=bm)
        loss = torch.nn.functional.cross_entropy(res.out.reshape(-1, 10), y.repeat(3))
        grads.append(torch.autograd.grad(loss + res.kl.mean(), list(net.parameters())))
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(*grads, strict=True))


# ------------------------------------------------------------------ the experiment
class SDEBNNSTL(Experiment, config=Config):
    """Gradient variance of ckl / fmc / stl near the true posterior; adjoint memory and
    exactness. Reproduces the STL analysis of Xu et al. (arXiv:2102.06559)."""

    NAME, PAPER = NAME, PAPER

    def check_config(self) -> None:
        cfg = self.cfg
        check(
            cfg.sigma > 0 and cfg.theta > 0 and cfg.obs_std > 0,
            "sigma/theta/obs_std",
            (cfg.sigma, cfg.theta, cfg.obs_std),
            "floats > 0",
        )
        check(cfg.n_paths >= 10, "n_paths", cfg.n_paths, "an integer >= 10")
        check(
            len(cfg.steps) >= 2 and all(s >= 1 for s in cfg.steps),
            "steps",
            cfg.steps,
            "at least two positive step counts",
        )
        check(cfg.away in cfg.eps or cfg.away > 0, "away", cfg.away, "a distance > 0")

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        from flowfields.sdebnn import ESTIMATORS

        cfg, m = self.cfg, self.metrics
        star = torch.tensor([1.0, 1.0], dtype=F64)
        delta = torch.tensor(cfg.direction, dtype=F64)
        self.at_star: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
        for k, steps in enumerate(cfg.steps):
            for e in ESTIMATORS:
                spread = _spread(per_path_gradients(cfg, e, star, steps, cfg.seed * 100 + k))
                self.at_star[e].append(spread)
                m[f"{e}/spread_at_posterior_{steps}"] = spread
        self.curve: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
        for j, eps in enumerate(cfg.eps):
            for e in ESTIMATORS:
                g = per_path_gradients(cfg, e, star + eps * delta, cfg.curve_steps, 7000 + j)
                self.curve[e].append(_spread(g))
        self._unbiased(star + cfg.away * delta)
        for steps in cfg.memory_steps:
            for adjoint in (False, True):
                key = f"{'adjoint' if adjoint else 'backprop'}/held_mib_{steps}"
                m[key] = held_for_backward_mib(steps, adjoint)
        m["adjoint/relative_gradient_error"] = adjoint_gradient_error(cfg.grad_steps)
        self.tables["spread_at_posterior"] = [
            {"steps": s, **{e: self.at_star[e][i] for e in ESTIMATORS}}
            for i, s in enumerate(cfg.steps)
        ]
        self.tables["spread_vs_eps"] = [
            {"eps": eps, **{e: self.curve[e][i] for e in ESTIMATORS}}
            for i, eps in enumerate(cfg.eps)
        ]

    def _unbiased(self, phi: Tensor) -> None:
        """Paired z-scores of the mean gradients (fmc - ckl, stl - ckl), common noise."""
        grads = {
            e: per_path_gradients(self.cfg, e, phi, self.cfg.curve_steps, 9000)
            for e in ("ckl", "fmc", "stl")
        }
        n = self.cfg.n_paths
        z = []
        for e in ("fmc", "stl"):
            d = grads[e] - grads["ckl"]
            zs = (d.mean(0) / (d.std(0) / math.sqrt(n))).abs()
            z.append(float(zs.max()))
            self.metrics[f"{e}/mean_gradient"] = grads[e].mean(0).tolist()
        self.metrics["ckl/mean_gradient"] = grads["ckl"].mean(0).tolist()
        self.metrics["max_abs_z_vs_ckl"] = max(z)

    def claims(self) -> list[Claim]:
        cfg, m = self.cfg, self.metrics
        last = cfg.steps[-1]
        stl, fmc = self.at_star["stl"], self.at_star["fmc"]
        ratio = stl[-1] / fmc[-1]
        m["stl_over_fmc_at_posterior"] = ratio
        lo, hi = cfg.memory_steps
        adj_growth = m[f"adjoint/held_mib_{hi}"] / m[f"adjoint/held_mib_{lo}"]
        bp_growth = m[f"backprop/held_mib_{hi}"] / m[f"backprop/held_mib_{lo}"]
        err = m["adjoint/relative_gradient_error"]
        return [
            Claim(
                id="stl-zero-variance",
                statement="At the true posterior STL's per-path gradient spread vanishes: "
                f"at {last} Euler steps it is below 0.05x that of fmc.",
                measured=f"stl {stl[-1]:.4g} vs fmc {fmc[-1]:.4g} (ratio {ratio:.4f}); "
                f"ckl {self.at_star['ckl'][-1]:.4g}",
                threshold="stl / fmc < 0.05",
                holds=bool(ratio < 0.05),
                note=f"{cfg.n_paths} paths; spread = norm of the per-parameter std.",
            ),
            Claim(
                id="stl-decreasing",
                statement="STL's spread at the posterior decreases as the Euler steps go "
                + " -> ".join(str(s) for s in cfg.steps)
                + ".",
                measured=" -> ".join(f"{v:.4g}" for v in stl),
                threshold="strictly decreasing",
                holds=bool(all(a > b for a, b in itertools.pairwise(stl))),
                note="In continuous time it is exactly 0; Euler's discrete posterior "
                "differs from the h-transform by O(dt).",
            ),
            Claim(
                id="estimators-unbiased",
                statement=f"Away from the posterior (eps = {cfg.away}) the three estimators "
                "agree in mean gradient.",
                measured=f"largest paired |z| (fmc - ckl, stl - ckl) {m['max_abs_z_vs_ckl']:.2f}",
                threshold="|z| < 4 (false-alarm rate about 2.5e-4 for the 4 tests)",
                holds=bool(m["max_abs_z_vs_ckl"] < 4),
                note="Common random numbers: one Brownian motion for all three.",
            ),
            Claim(
                id="adjoint-memory",
                statement=f"With the adjoint, memory does not grow from {lo} to {hi} steps.",
                measured=f"adjoint {m[f'adjoint/held_mib_{lo}']:.2f} -> "
                f"{m[f'adjoint/held_mib_{hi}']:.2f} MiB (x{adj_growth:.3f}); backprop "
                f"{m[f'backprop/held_mib_{lo}']:.2f} -> {m[f'backprop/held_mib_{hi}']:.2f} MiB "
                f"(x{bp_growth:.2f})",
                threshold="adjoint growth <= 1.05x",
                holds=bool(adj_growth <= 1.05),
                note="Peak of the tensors autograd holds (forward graph and the graphs the "
                "adjoint builds while stepping back); peak RSS in BENCHMARKS.md.",
            ),
            Claim(
                id="adjoint-exact",
                statement="Adjoint gradients match direct backprop (fixed Brownian motion, "
                "float64) to about 1e-6.",
                measured=f"largest relative difference {err:.2e}",
                threshold="<= 1e-6",
                holds=bool(err <= 1e-6),
                note=f"Reversible Heun, {cfg.grad_steps} steps, every parameter.",
            ),
        ]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt, cfg = self.plt, self.cfg
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
        for k, e in enumerate(self.curve):
            eps = [max(x, 1e-3) for x in cfg.eps]
            a1.plot(eps, self.curve[e], "o-", color=f"C{k}", label=e)
            a2.plot(cfg.steps, self.at_star[e], "o-", color=f"C{k}", label=e)
        a1.set_xscale("log")
        a1.set_yscale("log")
        a1.set_xlabel("distance to the true posterior, eps (0 plotted at 1e-3)")
        a1.set_ylabel("per-path gradient std")
        a1.set_title(f"{cfg.curve_steps} Euler steps")
        a2.set_xscale("log")
        a2.set_yscale("log")
        a2.minorticks_off()
        a2.set_xticks(list(cfg.steps), [str(s) for s in cfg.steps])
        a2.set_xlabel("Euler steps")
        a2.set_title("at the true posterior")
        a1.legend()
        fig.tight_layout()
        self.save_figure(fig, "gradient_variance.png")


EXPERIMENT = SDEBNNSTL

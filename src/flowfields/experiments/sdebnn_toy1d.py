"""SDE-BNN on the 1-D toy with a gap: does the predictive uncertainty grow away from data?

Xu, Chen, Li, Duvenaud, "Infinitely Deep Bayesian Neural Networks with Stochastic
Differential Equations" (arXiv:2102.06559), 1-D regression: ``y = cos x + noise`` on
``x in [0, 2] U [6, 8]`` (generated here; inputs centred on the gap, ``x - 4``: the paper's
code also divides by 4, which fits worse at this budget), a Gaussian likelihood with the
known noise scale. Several seeds (model initialisation
and data draw) are trained through :func:`flowfields.engine.fit`; for each, the predictive
standard deviation ``sqrt(Var_w[f(x)] + noise_std^2)`` is averaged over a grid in the gap
``(2, 6)`` and over the training inputs. Models saved: one :class:`~flowfields.sdebnn.SDEBNN`
per seed (``seed0``, ``seed1``, ...; ``flowfields.load(run_dir)`` returns ``seed0``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_positive_ints
from flowfields.experiments._sdebnn_train import elbo_step, train_state
from flowfields.experiments.base import Experiment
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "SDEBNNToy1D", "cosine_gap_data"]

NAME = "sdebnn-toy1d"
PAPER = (
    "Infinitely Deep Bayesian Neural Networks with Stochastic Differential Equations "
    "(Xu et al., arXiv:2102.06559)"
)
GAP = (2.0, 6.0)


def cosine_gap_data(n: int, noise_std: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points ``(x, cos x + noise)``, half uniform on [0, 2], half on [6, 8].

    Returns:
        ``x`` (n, 1) and ``y`` (n, 1), float32, in the original (unscaled) coordinates.
    """
    check(isinstance(n, int) and n >= 2, "n", n, "an integer >= 2")
    half = n // 2
    x = torch.cat(
        [
            2 * torch.rand(half, generator=generator),
            6 + 2 * torch.rand(n - half, generator=generator),
        ]
    )
    y = torch.cos(x) + noise_std * torch.randn(n, generator=generator)
    return x[:, None], y[:, None]


def _scale(x: Tensor) -> Tensor:
    return x - 4.0


@dataclass
class Config:
    """Settings of ``sdebnn-toy1d``.

    Attributes:
        n_data, noise_std: the training set (``noise_std`` is also the likelihood's scale).
        seeds: how many seeds (initialisation and data) to train.
        width, hidden, drift_hidden, sigma, solver_steps, estimator: the SDE-BNN
            (:class:`~flowfields.sdebnn.SDEBNN`, linear encoder and readout, Euler).
        steps, lr, n_samples, kl_weight: training (full batch, Adam with cosine decay).
        eval_samples: weight paths drawn for the predictive; grid: points on [-1, 9].
        checkpoint_every, seed, device: engine and CLI settings.
    """

    n_data: int = 40
    noise_std: float = 0.1
    seeds: int = 5
    width: int = 32
    hidden: int = 32
    drift_hidden: tuple[int, ...] = (32,)
    sigma: float = 0.2
    solver_steps: int = 20
    estimator: str = "ckl"
    steps: int = 3000
    lr: float = 1e-2
    n_samples: int = 8
    kl_weight: float = 1.0
    eval_samples: int = 200
    grid: int = 201
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """3 seeds x 300 full-batch steps, width 16, 10 Euler steps: 25 s of CPU (measured)."""
        return cls(
            seeds=3,
            width=16,
            hidden=16,
            drift_hidden=(16,),
            solver_steps=10,
            steps=300,
            n_samples=4,
            eval_samples=64,
            grid=101,
        )

    @classmethod
    def full(cls) -> Config:
        """5 seeds x 3000 steps, width 32, 8 weight paths, 20 Euler steps.

        Expected run time: about 20 min of CPU on one core (the quick preset's measured cost
        per step scaled by width, paths and solver steps; not run here), a few minutes on a
        GPU.
        """
        return cls()


class SDEBNNToy1D(Experiment, config=Config):
    """Predictive uncertainty of the SDE-BNN in and around a gap in 1-D data.

    Reproduces the 1-D regression of Xu et al. (arXiv:2102.06559) on
    :class:`~flowfields.sdebnn.SDEBNN`; see the module docstring.
    """

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("seed0",)

    def check_config(self) -> None:
        cfg = self.cfg
        check_positive_ints(cfg, "n_data", "seeds", "steps", "n_samples", "eval_samples", "grid")
        check(cfg.noise_std > 0, "noise_std", cfg.noise_std, "a float > 0")
        self.build_model(cfg, "seed0")  # the model's own checks (sigma, estimator, sizes)

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.sdebnn import SDEBNN

        return SDEBNN(
            1,
            1,
            width=cfg.width,
            hidden=cfg.hidden,
            drift_hidden=cfg.drift_hidden,
            sigma=cfg.sigma,
            steps=cfg.solver_steps,
            estimator=cfg.estimator,
        )

    def train(self) -> dict[str, nn.Module]:
        cfg = self.cfg
        self.data: dict[str, tuple[Tensor, Tensor]] = {}
        models = {}
        for k in range(cfg.seeds):
            variant = f"seed{k}"
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + k)
            x, y = cosine_gap_data(cfg.n_data, cfg.noise_std, gen)
            self.data[variant] = (x, y)
            self.reseed(k)
            model = self.build_model(cfg, variant).to(self.device)
            step = elbo_step(
                _scale(x).to(self.device),
                y.to(self.device),
                task="regression",
                batch_size=cfg.n_data,
                n_samples=cfg.n_samples,
                noise_std=cfg.noise_std,
                kl_weight=cfg.kl_weight,
            )
            state = train_state(model, cfg.lr, cfg.steps)
            res = self.fit(
                variant, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every
            )
            self.metrics[f"{variant}/train_cpu_s"] = res.cpu_s  # all segments of a resumed run
            for key in ("nll", "kl"):
                self.metrics[f"{variant}/final_{key}"] = state.history[key][-1]
            models[variant] = model.eval()
        return models

    def _predict(self, model: nn.Module, x: Tensor, seed: int) -> Any:
        from flowfields.sdebnn import predictive_interval

        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            out = model(_scale(x).to(self.device), self.cfg.eval_samples, generator=gen).out
        return predictive_interval(out.cpu(), self.cfg.noise_std, level=0.95)

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        cfg, m = self.cfg, self.metrics
        self.grid_x = torch.linspace(-1.0, 9.0, cfg.grid)[:, None]
        gap = (self.grid_x[:, 0] > GAP[0]) & (self.grid_x[:, 0] < GAP[1])
        self.bands: dict[str, Any] = {}
        rows = []
        for k, (variant, model) in enumerate(models.items()):
            x, y = self.data[variant]
            on_grid = self._predict(model, self.grid_x, 10_000 + k)
            on_data = self._predict(model, x, 20_000 + k)
            self.bands[variant] = on_grid
            ratio = float(on_grid.std[gap].mean() / on_data.std.mean())
            epi = float(on_grid.epistemic_std[gap].mean() / on_data.epistemic_std.mean())
            rmse = float((on_data.mean - y).pow(2).mean().sqrt())
            covered = ((y >= on_data.lower) & (y <= on_data.upper)).float().mean()
            row = {
                "seed": k,
                "gap_std": float(on_grid.std[gap].mean()),
                "train_std": float(on_data.std.mean()),
                "ratio": ratio,
                "epistemic_ratio": epi,
                "train_rmse": rmse,
                "coverage_95": float(covered),
                "train_cpu_s": m[f"{variant}/train_cpu_s"],
            }
            rows.append(row)
            for key, value in row.items():
                if key != "seed":
                    m[f"{variant}/{key}"] = value
        self.tables["seeds"] = rows
        ratios = [r["ratio"] for r in rows]
        m["ratio_min"], m["ratio_mean"] = min(ratios), statistics.fmean(ratios)
        m["epistemic_ratio_mean"] = statistics.fmean(r["epistemic_ratio"] for r in rows)

    def claims(self) -> list[Claim]:
        m = self.metrics
        per_seed = ", ".join(f"{r['ratio']:.2f}" for r in self.tables["seeds"])
        return [
            Claim(
                id="uncertainty-grows-in-gap",
                statement="The predictive uncertainty grows away from the data: the mean "
                "predictive std over the gap (2, 6) is at least 1.15x the mean over the training "
                "inputs.",
                measured=f"smallest ratio over {len(self.tables['seeds'])} seeds "
                f"{m['ratio_min']:.3f} (per seed: {per_seed}; mean {m['ratio_mean']:.3f})",
                threshold="ratio >= 1.15 for every seed",
                holds=bool(m["ratio_min"] >= 1.15),
                note=f"Predictive std sqrt(Var_w f + noise_std^2), {self.cfg.eval_samples} weight "
                f"paths; without the likelihood noise (epistemic only) the mean ratio is "
                f"{m['epistemic_ratio_mean']:.3f}.",
            )
        ]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        first = next(iter(self.bands))
        band, (x, y) = self.bands[first], self.data[first]
        gx = self.grid_x[:, 0].numpy()
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.axvspan(*GAP, color="0.93", label="gap")
        ax.fill_between(
            gx,
            band.lower[:, 0].numpy(),
            band.upper[:, 0].numpy(),
            alpha=0.3,
            color="C0",
            label="95% predictive",
        )
        ax.plot(gx, band.mean[:, 0].numpy(), color="C0", label="predictive mean")
        ax.plot(gx, torch.cos(self.grid_x[:, 0]).numpy(), "k--", lw=1, label="cos x")
        ax.scatter(x[:, 0].numpy(), y[:, 0].numpy(), s=10, color="k", zorder=3, label="data")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_ylim(-2.5, 2.5)
        ax.legend(fontsize=7, ncol=3, loc="lower left")
        ax.set_title(f"SDE-BNN predictive ({first}, sigma = {self.cfg.sigma})")
        self.save_figure(fig, "predictive_bands.png")
        fig, ax = plt.subplots(figsize=(7, 3))
        for k, (variant, b) in enumerate(self.bands.items()):
            ax.plot(gx, b.std[:, 0].numpy(), color=f"C{k}", lw=1, label=variant)
        ax.axvspan(*GAP, color="0.93")
        ax.axhline(self.cfg.noise_std, color="k", lw=0.8, ls=":", label="noise std")
        ax.set_xlabel("x")
        ax.set_ylabel("predictive std")
        ax.legend(fontsize=7)
        self.save_figure(fig, "predictive_std.png")


EXPERIMENT = SDEBNNToy1D

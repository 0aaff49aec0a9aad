"""PPD on T^d: does it scale to moderately high-dimensional tori?

Ben-Hamu et al. (arXiv:2207.04711), claim: PPD with a Hutchinson divergence trains manifold
CNFs in higher dimensions at a cost per step that grows at most linearly in d. Data generated
here with an exact density: a mixture of ``k`` products of von Mises on T^d
(:func:`~flowfields.ppd.random_von_mises_mixture`), for each d in ``dims``. For each d the
same :class:`~flowfields.ppd.ManifoldField` (periodic features) is trained by ``ppd_loss``
(Hutchinson divergence, the von Mises kernel path over the training set) and
evaluated by test NLL (rk4 solve, exact divergence). Reported per d: (NLL - true NLL) / d,
the same gap of the target path's t = 1 density (the KDE PPD regresses onto), the CPU cost
per step, and the exponent a of cost ~ d^a. Models saved: ``d<d>`` for each d
(``flowfields.load(run_dir)`` returns the first).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flowfields.errors import check
from flowfields.experiments._ppd_train import cpu_timer, test_nll
from flowfields.experiments.base import Experiment
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "PPDTorus"]

NAME = "ppd-torus"
PAPER = (
    "Matching Normalizing Flows and Probability Paths on Manifolds "
    "(Ben-Hamu et al., ICML 2022, arXiv:2207.04711)"
)


@dataclass
class Config:
    """Settings of ``ppd-torus``.

    Attributes:
        dims: torus dimensions d.
        k, kappa: the data mixture (components, von Mises concentration per angle).
        n_train, n_test: data sizes.
        kappa_1, power: the target path's schedule; hidden, depth: the network.
        steps, batch_size, lr, divergence: PPD training ("hutchinson" or "exact").
        eval_steps: rk4 steps of the test likelihood (exact divergence).
        gap_threshold: the claimed bound on (NLL - true NLL) / d, nats.
        seed, device, checkpoint_every.
    """

    dims: tuple[int, ...] = (2, 10, 50)
    k: int = 4
    kappa: float = 4.0
    n_train: int = 4000
    n_test: int = 1000
    kappa_1: float = 4.0
    power: float = 1.0
    hidden: int = 128
    depth: int = 3
    steps: int = 3000
    batch_size: int = 256
    divergence: str = "hutchinson"
    lr: float = 3e-3
    eval_steps: int = 16
    gap_threshold: float = 0.1
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """d = 2 and 10, 1,000 points, 600 steps of a 64 x 3 network (~25 s of CPU)."""
        return cls(
            dims=(2, 10),
            n_train=1000,
            n_test=400,
            hidden=64,
            steps=600,
            batch_size=128,
            eval_steps=8,
        )

    @classmethod
    def full(cls) -> Config:
        """d = 2, 10, 50, 4,000 points, 3,000 steps of a 128 x 3 network (GPU scale; not run
        here)."""
        return cls()


class PPDTorus(Experiment, config=Config):
    """PPD on wrapped von Mises mixtures on T^d (see the module docstring)."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("d2", "d10", "d50")

    def check_config(self) -> None:
        cfg = self.cfg
        check(
            len(cfg.dims) >= 1 and all(isinstance(d, int) and d >= 1 for d in cfg.dims),
            "dims",
            cfg.dims,
            "torus dimensions >= 1",
        )
        for name in ("k", "n_train", "n_test", "steps", "batch_size", "eval_steps"):
            value = getattr(cfg, name)
            check(isinstance(value, int) and value >= 1, name, value, "a positive integer")

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.integrate import ODEOptions
        from flowfields.manifolds import FlatTorus
        from flowfields.matching import CNF
        from flowfields.ppd import ManifoldField

        d = int(variant[1:])
        torus = FlatTorus(d)
        field = ManifoldField(torus, hidden=cfg.hidden, depth=cfg.depth)
        return CNF(field, d, manifold=torus, solver=ODEOptions("rk4", step_size=1 / cfg.eval_steps))

    def train(self) -> dict[str, nn.Module]:
        from flowfields.experiments._sdebnn_train import train_state
        from flowfields.manifolds import FlatTorus
        from flowfields.ppd import KappaSchedule, VonMisesMixturePath, ppd_loss
        from flowfields.ppd import random_von_mises_mixture as mixture

        cfg, m = self.cfg, self.metrics
        self.data: dict[str, Any] = {}
        models = {}
        for i, d in enumerate(cfg.dims):
            variant = f"d{d}"
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + d)
            truth = mixture(d, cfg.k, cfg.kappa, gen)
            x = truth.sample(cfg.n_train + cfg.n_test, gen).float()
            x_train, x_test = x[: cfg.n_train].to(self.device), x[cfg.n_train :]
            path = VonMisesMixturePath(FlatTorus(d), KappaSchedule(cfg.kappa_1, cfg.power))
            self.data[variant] = (truth, x_train, x_test, path)
            self.reseed(i)
            model = self.build_model(cfg, variant).to(self.device)

            def step(state: Any, _: int, x_train: Any = x_train, path: Any = path) -> dict:
                field = state["model"].vector_field
                loss = ppd_loss(
                    field, path, x_train, n_points=cfg.batch_size, divergence=cfg.divergence
                )
                return {"loss": state.update("model", loss)}

            elapsed = cpu_timer()
            state = train_state(model, cfg.lr, cfg.steps)
            self.fit(variant, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every)
            m[f"{variant}/train_cpu_s"] = elapsed()
            m[f"{variant}/s_per_step"] = m[f"{variant}/train_cpu_s"] / cfg.steps
            m[f"{variant}/final_loss"] = state.history["loss"][-1]
            models[variant] = model.eval()
        return models

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        cfg, m = self.cfg, self.metrics
        rows = []
        for variant, model in models.items():
            truth, x_train, x_test, path = self.data[variant]
            d = x_test.shape[1]
            nll = test_nll(model, x_test.to(self.device), cfg.eval_steps)
            x64 = x_test.double()
            true = -float(truth.log_prob(x64).mean())
            with torch.no_grad():
                ones = torch.ones(x64.shape[0], dtype=torch.float64)
                kde = -float(path.log_prob(ones, x64, x_train.cpu().double()).mean())
            row = {
                "d": d,
                "test_nll": nll,
                "true_nll": true,
                "gap_per_dim": (nll - true) / d,
                "kde_gap_per_dim": (kde - true) / d,
                "uniform_gap_per_dim": (d * math.log(2 * math.pi) - true) / d,
                "s_per_step": m[f"{variant}/s_per_step"],
            }
            rows.append(row)
            for key, value in row.items():
                if key != "d":
                    m[f"{variant}/{key}"] = value
        self.tables["dims"] = rows
        m["max_gap_per_dim"] = max(r["gap_per_dim"] for r in rows)
        if len(rows) >= 2:
            lx = [math.log(r["d"]) for r in rows]
            ly = [math.log(r["s_per_step"]) for r in rows]
            mx, my = statistics.fmean(lx), statistics.fmean(ly)
            den = sum((a - mx) ** 2 for a in lx)
            m["cost_exponent"] = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den
        else:
            m["cost_exponent"] = float("nan")

    def claims(self) -> list[Claim]:
        m, rows = self.metrics, self.tables["dims"]
        per_d = ", ".join(
            f"d = {r['d']}: {r['gap_per_dim']:.3f} (KDE target {r['kde_gap_per_dim']:.3f}, "
            f"uniform {r['uniform_gap_per_dim']:.3f})"
            for r in rows
        )
        costs = ", ".join(f"d = {r['d']}: {r['s_per_step'] * 1e3:.1f} ms" for r in rows)
        thr = self.cfg.gap_threshold
        return [
            Claim(
                id="nll-gap-per-dim",
                statement="On von Mises mixtures on T^d, the PPD-trained CNF's test NLL minus the "
                "true entropy, per dimension, stays small as d grows.",
                measured=f"(NLL - true) / d: {per_d}",
                threshold=f"<= {thr} nats per dimension for every d",
                holds=bool(m["max_gap_per_dim"] <= thr),
            ),
            Claim(
                id="cost-linear-in-d",
                statement="With the Hutchinson divergence, the cost of a PPD step grows at most "
                "linearly in d.",
                measured=f"CPU per step {costs}; fitted exponent a = {m['cost_exponent']:.2f}",
                threshold="a <= 1",
                holds=bool(m["cost_exponent"] <= 1.0),
            ),
        ]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        rows = self.tables["dims"]
        fig, ax = plt.subplots(1, 2, figsize=(8, 3))
        ds = [r["d"] for r in rows]
        ax[0].plot(ds, [r["gap_per_dim"] for r in rows], "o-", label="PPD CNF")
        ax[0].plot(ds, [r["kde_gap_per_dim"] for r in rows], "s--", label="target KDE")
        ax[0].set_xscale("log")
        ax[0].set_xlabel("d")
        ax[0].set_ylabel("(NLL - true) / d")
        ax[0].legend(fontsize=7)
        ax[1].loglog(ds, [r["s_per_step"] * 1e3 for r in rows], "o-")
        ax[1].set_xlabel("d")
        ax[1].set_ylabel("CPU ms per PPD step")
        self.save_figure(fig, "scaling.png")
        first = next(iter(models))
        if first == "d2":
            cnf: Any = models[first]
            g = torch.linspace(-math.pi, math.pi, 81)
            xx, yy = torch.meshgrid(g, g, indexing="ij")
            pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
            truth = self.data[first][0]
            with torch.no_grad():
                lp = cnf.log_prob(pts.to(device=self.device)).cpu()
            fig, ax = plt.subplots(1, 2, figsize=(7, 3.2))
            for a, (name, z) in zip(ax, [("true", truth.log_prob(pts.double())), ("PPD", lp)]):
                a.pcolormesh(
                    g.numpy(), g.numpy(), z.exp().reshape(81, 81).T.numpy(), shading="auto"
                )
                a.set_title(f"{name} density on T^2", fontsize=9)
                a.set_xlabel("phi")
                a.set_ylabel("psi")
            self.save_figure(fig, "torus_t2.png")


EXPERIMENT = PPDTorus

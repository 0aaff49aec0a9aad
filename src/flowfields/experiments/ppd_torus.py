"""PPD on T^d: does it scale to moderately high-dimensional tori, and how does it compare?

Ben-Hamu et al. (arXiv:2207.04711), claims: PPD with a Hutchinson divergence trains manifold
CNFs in higher dimensions at a cost per step that grows at most linearly in d, and reaches
test NLLs better than a classical mixture and comparable to Riemannian flow matching. Data
generated here with an exact density: a mixture of ``k`` products of wrapped normals on T^d
(:func:`~flowfields.ppd.random_wrapped_normal_mixture`; ``data=von-mises`` for products of
von Mises), for each d in ``dims``. For each d:

- the target path is the von Mises kernel path over the training set, ``kappa_t = kappa_1
  t^power``, with ``kappa_1`` chosen from ``kappa_grid`` by the validation NLL of its t = 1
  member (the kernel density estimate PPD regresses onto);
- the same :class:`~flowfields.ppd.ManifoldField` (periodic features) is trained by
  ``ppd_loss`` (Hutchinson divergence) and evaluated by test NLL (rk4 solve, exact
  divergence).

Reported per d: (NLL - true NLL) / d (the true NLL estimates the entropy), the same gap of the
target KDE and of the uniform density, the CPU cost per step, and the exponent a of cost ~ d^a.
At the smallest d (T^2 in both presets), two baselines: Riemannian flow matching on the same
network and step budget (``rfm_loss``, geodesic path), and an EM-fitted von Mises mixture
(:func:`~flowfields.ppd.fit_von_mises_mixture`, size chosen on the validation set). Models
saved: ``d<d>`` for each d and ``rfm-d<d>`` (``flowfields.load(run_dir)`` returns the first).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_positive_ints
from flowfields.experiments._ppd_train import test_nll
from flowfields.experiments.base import Experiment
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "PPDTorus"]

NAME = "ppd-torus"
PAPER = (
    "Matching Normalizing Flows and Probability Paths on Manifolds "
    "(Ben-Hamu et al., ICML 2022, arXiv:2207.04711)"
)
DATA = ("wrapped-normal", "von-mises")


@dataclass
class Config:
    """Settings of ``ppd-torus``.

    Attributes:
        dims: torus dimensions d (the baselines run at the first).
        data: "wrapped-normal" or "von-mises" mixtures with ``k`` equal components, scale
            ``sigma`` (wrapped normal) or concentration ``kappa`` (von Mises) per angle.
        n_train, n_val, n_test: data sizes (the validation set picks ``kappa_1`` and the EM
            mixture size).
        kappa_grid, power: the target path's ``kappa_1`` candidates and exponent.
        hidden, depth: the network; steps: PPD and RFM steps per d (Adam, cosine decay);
        batch_size, lr, divergence: PPD training ("hutchinson" or "exact").
        probes: Hutchinson probes per point of PPD_2 (1: ``r_hat^2``, biased up by the probe
            variance; 2: ``r_hat_1 r_hat_2``, unbiased; see :func:`~flowfields.ppd.ppd_loss`).
        eval_steps: rk4 steps of the test likelihood (exact divergence).
        em_sizes: EM mixture sizes tried at the first d.
        gap_threshold: the claimed bound on (NLL - true NLL) / d, nats; rfm_margin: "comparable".
        seed, device, checkpoint_every.
    """

    dims: tuple[int, ...] = (2, 10, 50)
    data: str = "wrapped-normal"
    k: int = 4
    sigma: float = 0.5
    kappa: float = 4.0
    n_train: int = 4000
    n_val: int = 1000
    n_test: int = 1000
    kappa_grid: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    power: float = 1.0
    hidden: int = 128
    depth: int = 3
    steps: int = 3000
    batch_size: int = 256
    divergence: str = "hutchinson"
    probes: int = 1
    lr: float = 3e-3
    eval_steps: int = 16
    em_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    gap_threshold: float = 0.1
    rfm_margin: float = 0.1
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """d = 2, 10, 50, 1,000 points, 400 steps of a 64 x 3 network (~35 s of CPU)."""
        return cls(
            n_train=1000,
            n_val=400,
            n_test=400,
            hidden=64,
            steps=400,
            batch_size=128,
            eval_steps=8,
            em_sizes=(1, 2, 4, 8),
        )

    @classmethod
    def full(cls) -> Config:
        """d = 2, 10, 50, 2,000 points, 2,000 steps of a 128 x 3 network (sized for one shared
        CPU core: a few CPU minutes; the class defaults are the GPU scale)."""
        return cls(n_train=2000, n_val=500, n_test=500, steps=2000, batch_size=256)


class PPDTorus(Experiment, config=Config):
    """PPD on wrapped-normal mixtures on T^d (see the module docstring)."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("d2", "d10", "d50", "rfm-d2")

    def check_config(self) -> None:
        cfg = self.cfg
        check(
            len(cfg.dims) >= 1 and all(isinstance(d, int) and d >= 1 for d in cfg.dims),
            "dims",
            cfg.dims,
            "torus dimensions >= 1",
        )
        check_positive_ints(
            cfg, "k", "n_train", "n_val", "n_test", "steps", "batch_size", "eval_steps"
        )
        check(cfg.data in DATA, "data", cfg.data, f"one of {DATA}")
        check(cfg.probes in (1, 2), "probes", cfg.probes, "1 or 2")
        check(
            cfg.probes == 1 or cfg.divergence == "hutchinson",
            "probes",
            cfg.probes,
            "1 with divergence='exact'",
        )
        check(
            len(cfg.kappa_grid) >= 1 and all(k > 0 for k in cfg.kappa_grid),
            "kappa_grid",
            cfg.kappa_grid,
            "concentrations > 0",
        )
        check(
            all(isinstance(k, int) and 1 <= k <= cfg.n_train for k in cfg.em_sizes),
            "em_sizes",
            cfg.em_sizes,
            f"mixture sizes in [1, {cfg.n_train}]",
        )

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.integrate import ODEOptions
        from flowfields.manifolds import FlatTorus
        from flowfields.matching import CNF
        from flowfields.ppd import ManifoldField

        d = int(variant.rsplit("d", 1)[1])
        torus = FlatTorus(d)
        field = ManifoldField(torus, hidden=cfg.hidden, depth=cfg.depth)
        return CNF(field, d, manifold=torus, solver=ODEOptions("rk4", step_size=1 / cfg.eval_steps))

    def _data(self, d: int) -> tuple[Any, Tensor, Tensor, Tensor]:
        from flowfields import ppd

        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + d)
        if cfg.data == "wrapped-normal":
            truth: Any = ppd.random_wrapped_normal_mixture(d, cfg.k, cfg.sigma, gen)
        else:
            truth = ppd.random_von_mises_mixture(d, cfg.k, cfg.kappa, gen)
        x = truth.sample(cfg.n_train + cfg.n_val + cfg.n_test, gen)
        a, b = cfg.n_train, cfg.n_train + cfg.n_val
        return truth, x[:a], x[a:b], x[b:]

    def _path(self, d: int, x_train: Tensor, x_val: Tensor) -> tuple[Any, dict[float, float]]:
        """The kernel path with ``kappa_1`` of least validation NLL (float64 KDEs)."""
        from flowfields.manifolds import FlatTorus
        from flowfields.ppd import KappaSchedule, VonMisesMixturePath

        ones = torch.ones(x_val.shape[0], dtype=torch.float64)
        scores = {}
        for k1 in self.cfg.kappa_grid:
            path = VonMisesMixturePath(FlatTorus(d), KappaSchedule(k1, self.cfg.power))
            with torch.no_grad():
                scores[k1] = -float(path.log_prob(ones, x_val, x_train).mean())
        best = min(scores, key=lambda k: scores[k])
        return VonMisesMixturePath(FlatTorus(d), KappaSchedule(best, self.cfg.power)), scores

    def _train_one(self, variant: str, x_train: Tensor, path: Any, method: str) -> nn.Module:
        from flowfields.experiments._sdebnn_train import train_state
        from flowfields.ppd import ppd_loss, rfm_loss

        cfg, m = self.cfg, self.metrics
        model = self.build_model(cfg, variant).to(self.device)
        n = x_train.shape[0]

        def step(state: Any, _: int) -> dict:
            field = state["model"].vector_field
            if method == "ppd":
                loss = ppd_loss(
                    field,
                    path,
                    x_train,
                    n_points=cfg.batch_size,
                    divergence=cfg.divergence,
                    probes=cfg.probes,
                )
            else:
                idx = torch.randint(0, n, (cfg.batch_size,), device=x_train.device)
                loss = rfm_loss(field, path.manifold, x_train[idx])
            return {"loss": state.update("model", loss)}

        state = train_state(model, cfg.lr, cfg.steps)
        res = self.fit(variant, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every)
        m[f"{variant}/train_cpu_s"] = res.cpu_s  # all segments of a resumed run
        m[f"{variant}/s_per_step"] = m[f"{variant}/train_cpu_s"] / cfg.steps
        m[f"{variant}/final_loss"] = state.history["loss"][-1]
        return model.eval()

    def train(self) -> dict[str, nn.Module]:
        cfg, m = self.cfg, self.metrics
        self.data: dict[str, Any] = {}
        models = {}
        for i, d in enumerate(cfg.dims):
            variant = f"d{d}"
            truth, x_train, x_val, x_test = self._data(d)
            path, scores = self._path(d, x_train, x_val)
            m[f"{variant}/kappa_1"] = path.schedule.kappa_1
            for k1, val in scores.items():
                m[f"{variant}/kde_val_nll/kappa{k1:g}"] = val
            x_tr = x_train.float().to(self.device)
            self.data[variant] = (truth, x_train, x_val, x_test, path)
            self.reseed(i)
            models[variant] = self._train_one(variant, x_tr, path, "ppd")
            if i == 0:  # RFM on the same network (same initialisation) and budget
                self.reseed(i)
                models[f"rfm-{variant}"] = self._train_one(f"rfm-{variant}", x_tr, path, "rfm")
        return models

    def _em(self, variant: str) -> float:
        """Test NLL of the EM von Mises mixture whose size has the least validation NLL."""
        from flowfields.ppd import fit_von_mises_mixture

        cfg, m = self.cfg, self.metrics
        _, x_train, x_val, x_test, _ = self.data[variant]
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        best = None
        for k in cfg.em_sizes:
            mix = fit_von_mises_mixture(x_train, k, iters=100, generator=gen)
            val = -float(mix.log_prob(x_val).mean())
            m[f"em/k{k}/val_nll"] = val
            if best is None or val < best[0]:
                best = (val, k, mix)
        assert best is not None
        m["em/k"] = best[1]
        return -float(best[2].log_prob(x_test).mean())

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        cfg, m = self.cfg, self.metrics
        rows = []
        for variant in (f"d{d}" for d in cfg.dims):
            truth, x_train, _, x_test, path = self.data[variant]
            d = x_test.shape[1]
            nll = test_nll(models[variant], x_test.float().to(self.device), cfg.eval_steps)
            true = -float(truth.log_prob(x_test).mean())
            with torch.no_grad():
                ones = torch.ones(x_test.shape[0], dtype=torch.float64)
                kde = -float(path.log_prob(ones, x_test, x_train).mean())
            row = {
                "d": d,
                "test_nll": nll,
                "true_nll": true,
                "gap_per_dim": (nll - true) / d,
                "kde_gap_per_dim": (kde - true) / d,
                "uniform_gap_per_dim": (d * math.log(2 * math.pi) - true) / d,
                "kappa_1": path.schedule.kappa_1,
                "s_per_step": m[f"{variant}/s_per_step"],
            }
            rows.append(row)
            for key, value in row.items():
                if key != "d":
                    m[f"{variant}/{key}"] = value
        self.tables["dims"] = rows
        m["max_gap_per_dim"] = max(r["gap_per_dim"] for r in rows)
        m["cost_exponent"] = _slope([r["d"] for r in rows], [r["s_per_step"] for r in rows])
        first = f"d{cfg.dims[0]}"
        x_test = self.data[first][3]
        rfm = test_nll(models[f"rfm-{first}"], x_test.float().to(self.device), cfg.eval_steps)
        m["baseline/rfm_test_nll"] = rfm
        m["baseline/em_test_nll"] = self._em(first)
        m["baseline/ppd_test_nll"] = m[f"{first}/test_nll"]
        m["baseline/true_test_nll"] = m[f"{first}/true_nll"]
        m["baseline/kde_test_nll"] = (
            m[f"{first}/true_nll"] + cfg.dims[0] * m[f"{first}/kde_gap_per_dim"]
        )
        self.tables["baselines"] = [
            {"model": name, "test_nll": m[f"baseline/{name}_test_nll"]}
            for name in ("ppd", "rfm", "em", "kde", "true")
        ]

    def claims(self) -> list[Claim]:
        m, rows, cfg = self.metrics, self.tables["dims"], self.cfg
        per_d = ", ".join(
            f"d = {r['d']}: {r['gap_per_dim']:.3f} (KDE target {r['kde_gap_per_dim']:.3f} at "
            f"kappa_1 = {r['kappa_1']:g}, uniform {r['uniform_gap_per_dim']:.3f})"
            for r in rows
        )
        costs = ", ".join(f"d = {r['d']}: {r['s_per_step'] * 1e3:.1f} ms" for r in rows)
        ppd, rfm, em = (m[f"baseline/{k}_test_nll"] for k in ("ppd", "rfm", "em"))
        d0 = cfg.dims[0]
        return [
            Claim(
                id="nll-gap-per-dim",
                statement=f"On {cfg.data} mixtures on T^d, the PPD-trained CNF's test NLL minus "
                "the true entropy, per dimension, stays small as d grows.",
                measured=f"(NLL - true) / d: {per_d}",
                threshold=f"<= {cfg.gap_threshold} nats per dimension for every d",
                holds=bool(m["max_gap_per_dim"] <= cfg.gap_threshold),
            ),
            Claim(
                id="cost-linear-in-d",
                statement="With the Hutchinson divergence, the cost of a PPD step grows at most "
                "linearly in d.",
                measured=f"CPU per step {costs}; fitted exponent a = {m['cost_exponent']:.2f}",
                threshold="a <= 1",
                holds=bool(m["cost_exponent"] <= 1.0),
                note=f"divergence: {cfg.divergence} ({cfg.probes} probe(s)); the kernel "
                f"log-sum-exp over {cfg.n_train} centers is part of each step.",
            ),
            Claim(
                id="beats-mixture",
                statement=f"On T^{d0}, the PPD-trained CNF reaches a better test NLL than a "
                "classical von Mises mixture fitted by EM (size chosen on held-out data).",
                measured=f"PPD {ppd:.3f} vs EM (K = {m['em/k']}) {em:.3f} nats (true "
                f"{m['baseline/true_test_nll']:.3f}, target KDE {m['baseline/kde_test_nll']:.3f})",
                threshold="NLL_PPD < NLL_EM",
                holds=bool(ppd < em),
            ),
            Claim(
                id="comparable-to-rfm",
                statement=f"On T^{d0}, PPD's test NLL is comparable to Riemannian flow matching "
                "on the same network, data and step budget.",
                measured=f"PPD {ppd:.3f} vs RFM {rfm:.3f} nats ({cfg.steps} steps each)",
                threshold=f"NLL_PPD <= NLL_RFM + {cfg.rfm_margin}",
                holds=bool(ppd <= rfm + cfg.rfm_margin),
            ),
        ]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        rows = self.tables["dims"]
        fig, ax = plt.subplots(1, 2, figsize=(8, 3))
        ds = [r["d"] for r in rows]
        ax[0].plot(ds, [r["gap_per_dim"] for r in rows], "o-", label="PPD CNF")
        ax[0].plot(ds, [r["kde_gap_per_dim"] for r in rows], "s--", label="target KDE")
        ax[0].plot(ds, [r["uniform_gap_per_dim"] for r in rows], ":", label="uniform")
        ax[0].set_xscale("log")
        ax[0].set_xlabel("d")
        ax[0].set_ylabel("(NLL - true) / d")
        ax[0].legend(fontsize=7)
        ax[1].loglog(ds, [r["s_per_step"] * 1e3 for r in rows], "o-")
        ax[1].set_xlabel("d")
        ax[1].set_ylabel("CPU ms per PPD step")
        self.save_figure(fig, "scaling.png")
        if "d2" in models:
            self._torus_figure(models)

    def _torus_figure(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        g = torch.linspace(-math.pi, math.pi, 81)
        xx, yy = torch.meshgrid(g, g, indexing="ij")
        pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
        panels = [("true", self.data["d2"][0].log_prob(pts.double()).float())]
        for name in ("d2", "rfm-d2"):
            if name in models:
                cnf: Any = models[name]
                with torch.no_grad():
                    lp = cnf.log_prob(pts.to(device=self.device)).cpu()
                panels.append(("PPD" if name == "d2" else "RFM", lp))
        fig, ax = plt.subplots(1, len(panels), figsize=(3.5 * len(panels), 3.2))
        for a, (name, z) in zip(ax, panels):
            a.pcolormesh(g.numpy(), g.numpy(), z.exp().reshape(81, 81).T.numpy(), shading="auto")
            a.set_title(f"{name} density on T^2", fontsize=9)
            a.set_xlabel("phi")
            a.set_ylabel("psi")
        self.save_figure(fig, "torus_t2.png")


def _slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of log y on log x (nan with fewer than two distinct x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    den = sum((a - mx) ** 2 for a in lx)
    if den == 0:
        return float("nan")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den


EXPERIMENT = PPDTorus

"""Voronoi dequantization vs argmax and uniform on 2-D discrete PMFs; Voronoi mixture claims.

Chen, Amos, Nickel, "Semi-Discrete Normalizing Flows through Differentiable Tessellation"
(arXiv:2203.06832). Four measurements, one run:

1. **Dequantization** (claim "learned-boundaries-help"): for each PMF of
   :func:`~flowfields.voronoi.grid_pmf` (two categorical variables with K classes, exact
   entropy), the same zuko NSF ``p(z)`` is trained by the ELBO under three dequantizers:
   Voronoi (embedding dimension ``dim`` per variable, smaller than ``ceil(log2 K)``), binary
   argmax (``D = ceil(log2 K)``) and uniform (ordinal, D = 1), with the same conditional MLP
   for Voronoi and argmax, the same steps, batch and learning rate. Training draws fresh
   batches from the PMF (no overfitting); the evaluation is the exact cross-entropy
   ``-sum_x P(x) IWAE_k(x)`` over all K^2 classes, in bits per variable, against the
   entropy.
2. **Exact likelihood** ("exact-likelihood"): ``sum_x P_hat(x) <= 1`` for the trained Voronoi
   model (``E_q[p/q] = P_hat(x)``, summed over all classes), and a trained Voronoi mixture's
   density integrates to 1 over its box (midpoint rule).
3. **Mixture cost flat in K** ("mixture-cost-flat-in-K"): likelihood time of
   :class:`~flowfields.voronoi.VoronoiMixture` vs a standard K-component
   :class:`~flowfields.voronoi.FlowMixture` of the same conditional flow, K in ``mixture_ks``.
4. **Mixture gain** ("mixture-gain"): on a continuous 2-D toy, the NSF alone vs a Voronoi
   mixture (k-means anchors) whose cells carry the same NSF, same steps; test NLL.

Models saved: ``<pmf>-<kind>`` (a :class:`~flowfields.voronoi.DequantizedFlow`), ``flow`` and
``mixture`` (the continuous toy).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.engine import TrainState
from flowfields.errors import check
from flowfields.experiments.base import Experiment
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "VoronoiDequantization"]

NAME = "voronoi-dequantization"
PAPER = (
    "Semi-Discrete Normalizing Flows through Differentiable Tessellation "
    "(Chen, Amos, Nickel, arXiv:2203.06832)"
)
KINDS = ("voronoi", "argmax", "uniform")


@dataclass
class Config:
    """Settings of ``voronoi-dequantization``.

    Attributes:
        pmfs, n_classes: the grid PMFs (:data:`~flowfields.voronoi.PMF_NAMES`, ``perm-`` for
            the label-permuted, purely categorical version) and K.
        dim: the Voronoi embedding dimension per variable.
        transforms, hidden, cond_hidden: the NSF ``p(z)`` and the conditional MLP of q.
        steps, batch, lr: training of every dequantized model (Adam, cosine decay).
        iwae_k: importance samples per class in the evaluation.
        toy, mixture_cells, mixture_steps, n_test: the continuous mixture comparison.
        mixture_ks, timing_batch, timing_reps: the likelihood-cost measurement.
        checkpoint_every, seed, device: engine and CLI settings.
    """

    pmfs: tuple[str, ...] = (
        "8gaussians",
        "pinwheel",
        "clusters",
        "perm-8gaussians",
        "perm-pinwheel",
        "perm-clusters",
    )
    n_classes: int = 32
    dim: int = 2
    transforms: int = 4
    hidden: tuple[int, ...] = (64, 64)
    cond_hidden: int = 64
    steps: int = 3000
    batch: int = 512
    lr: float = 1e-2
    iwae_k: int = 256
    toy: str = "8gaussians"
    mixture_cells: int = 16
    mixture_steps: int = 3000
    n_test: int = 20000
    mixture_ks: tuple[int, ...] = (4, 64, 1024)
    timing_batch: int = 256
    timing_reps: int = 5
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """8gaussians ordinal and label-permuted, K = 16, 300 steps per model, small flows:
        about 30 s of CPU (measured)."""
        return cls(
            pmfs=("8gaussians", "perm-8gaussians"),
            n_classes=16,
            transforms=2,
            hidden=(32, 32),
            cond_hidden=32,
            steps=300,
            batch=256,
            iwae_k=32,
            mixture_cells=8,
            mixture_steps=300,
            n_test=4000,
            timing_batch=128,
            timing_reps=3,
        )

    @classmethod
    def full(cls) -> Config:
        """Five PMFs, K = 32, 3000 steps, NSF 4 x (64, 64). Expected: about 30 min of CPU on
        one core (quick preset's cost per step scaled; not run here), minutes on a GPU."""
        return cls()


class VoronoiDequantization(Experiment, config=Config):
    """Voronoi vs argmax vs uniform dequantization, and the Voronoi mixture's claims.

    Reproduces the discrete 2-D experiments and the mixture claims of Chen, Amos, Nickel
    (arXiv:2203.06832) on :mod:`flowfields.voronoi`; see the module docstring.
    """

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("8gaussians-voronoi",)

    def check_config(self) -> None:
        from flowfields.voronoi import PMF_NAMES

        cfg = self.cfg
        check(len(cfg.pmfs) >= 1, "pmfs", cfg.pmfs, "at least one PMF name")
        for p in cfg.pmfs:
            base = p[5:] if p.startswith("perm-") else p
            check(base in PMF_NAMES, "pmfs", p, f"names from {PMF_NAMES}, or 'perm-<name>'")
        for name in ("n_classes", "dim", "steps", "batch", "iwae_k", "mixture_cells"):
            value = getattr(cfg, name)
            check(isinstance(value, int) and value >= 1, name, value, "a positive integer")
        check(cfg.n_classes >= 2, "n_classes", cfg.n_classes, "K >= 2")
        check(all(k >= 2 for k in cfg.mixture_ks), "mixture_ks", cfg.mixture_ks, "K >= 2 each")

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.voronoi import (
            DequantizedFlow,
            VoronoiMixture,
            VoronoiTessellation,
            make_dequantizer,
            make_flow,
        )

        if variant in ("flow", "mixture"):
            flow = make_flow(2, 0, transforms=cfg.transforms, hidden=cfg.hidden)
            if variant == "flow":
                return flow
            # placeholder anchors: train() sets k-means ones, load() the saved ones
            g = torch.Generator().manual_seed(0)
            tess = VoronoiTessellation(1.8 * torch.rand(cfg.mixture_cells, 2, generator=g) - 0.9)
            return VoronoiMixture(tess, context=0, flow=flow)
        kind = variant.rsplit("-", 1)[-1]
        check(kind in KINDS, "variant", variant, f"'<pmf>-<kind>' with kind in {KINDS}")
        deq = make_dequantizer(kind, 2, cfg.n_classes, dim=cfg.dim, hidden=cfg.cond_hidden)
        flow = make_flow(deq.features, transforms=cfg.transforms, hidden=cfg.hidden)
        return DequantizedFlow(deq, flow)

    # ------------------------------------------------------------------ training
    def _state(self, model: nn.Module, steps: int) -> TrainState:
        def cosine(opt: torch.optim.Optimizer) -> Any:
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))

        return TrainState.single(
            model, lr=self.cfg.lr, scheduler=cosine, ema_decay=None, grad_clip=10.0
        )

    def _train_dequantized(self, pmf_name: str, kind: str, offset: int) -> nn.Module:
        from flowfields.voronoi import grid_pmf, sample_pmf

        cfg = self.cfg
        pmf = grid_pmf(pmf_name, cfg.n_classes)
        self.reseed(offset)
        variant = f"{pmf_name}-{kind}"
        model = self.build_model(cfg, variant).to(self.device)

        def step(state: TrainState, _: int) -> dict[str, Tensor]:
            x = sample_pmf(pmf, cfg.batch).to(self.device)
            m: Any = state["model"]
            loss = -m.elbo(x, 1).mean() / (2 * math.log(2))
            return {"loss": state.update("model", loss)}

        t0 = time.process_time()
        state = self._state(model, cfg.steps)
        self.fit(variant, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every)
        self.metrics[f"{variant}/train_cpu_s"] = time.process_time() - t0
        return model.eval()

    def _toy_data(self, n: int, seed: int) -> Tensor:
        from flowfields.data import get_toy

        g = torch.Generator().manual_seed(seed)
        return get_toy(self.cfg.toy).sample(n, g, dtype=torch.float32) / 2.0

    def _train_continuous(self) -> dict[str, nn.Module]:
        from flowfields.voronoi import VoronoiTessellation

        cfg = self.cfg
        data = self._toy_data(50_000, self.cfg.seed + 1)
        out: dict[str, nn.Module] = {}
        for j, variant in enumerate(("flow", "mixture")):
            self.reseed(100 + j)
            model: Any = self.build_model(cfg, variant)
            if variant == "mixture":  # k-means anchors, the data's box widened by 25%
                tess = VoronoiTessellation.from_points(
                    data[:5000],
                    cfg.mixture_cells,
                    margin=0.25,
                    generator=torch.Generator().manual_seed(cfg.seed),
                )
                model.tess.load_state_dict(tess.state_dict())
            model = model.to(self.device)
            gen_data = data.to(self.device)

            def step(state: TrainState, _: int, data: Tensor = gen_data) -> dict[str, Tensor]:
                idx = torch.randint(0, data.shape[0], (cfg.batch,), device=self.device)
                x = data[idx]
                m: Any = state["model"]
                # the mixture is a density model; a zuko flow is called for its distribution
                lp = m.log_prob(x) if hasattr(m, "log_prob") else m().log_prob(x)
                return {"loss": state.update("model", -lp.mean())}

            t0 = time.process_time()
            state = self._state(model, cfg.mixture_steps)
            self.fit(
                variant, state, step, steps=cfg.mixture_steps, checkpoint_every=cfg.checkpoint_every
            )
            self.metrics[f"{variant}/train_cpu_s"] = time.process_time() - t0
            out[variant] = model.eval()
        return out

    def train(self) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {}
        for i, pmf_name in enumerate(self.cfg.pmfs):
            for j, kind in enumerate(KINDS):
                models[f"{pmf_name}-{kind}"] = self._train_dequantized(pmf_name, kind, 10 * i + j)
        models.update(self._train_continuous())
        return models

    # ------------------------------------------------------------------ evaluation
    def _cross_entropy(self, model: Any, pmf: Tensor) -> tuple[float, float, float]:
        """``-sum_x P(x) IWAE_k(x)`` in bits per variable, ``sum_x P_hat(x)`` and its SE."""
        cfg, K = self.cfg, self.cfg.n_classes
        xs = torch.cartesian_prod(torch.arange(K), torch.arange(K)).to(self.device)
        g = torch.Generator(device=self.device).manual_seed(cfg.seed + 7)
        with torch.no_grad():
            w = torch.cat(
                [model.log_weights(xb, cfg.iwae_k, generator=g).double() for xb in xs.split(64)], 1
            ).cpu()  # (k, K^2)
        iwae = torch.logsumexp(w, 0) - math.log(cfg.iwae_k)
        ce = float(-(pmf.reshape(-1) * iwae).sum()) / (2 * math.log(2))
        ratio = w.exp()
        total = float(ratio.mean(0).sum())
        se = float((ratio.var(0) / cfg.iwae_k).sum().sqrt())
        return ce, total, se

    def _eval_dequantization(self, models: dict[str, nn.Module]) -> None:
        from flowfields.voronoi import entropy_bits, grid_pmf

        cfg, m = self.cfg, self.metrics
        rows = []
        for pmf_name in cfg.pmfs:
            pmf = grid_pmf(pmf_name, cfg.n_classes)
            h = entropy_bits(pmf) / 2
            row: dict[str, Any] = {"pmf": pmf_name, "entropy_bits_per_var": h}
            for kind in KINDS:
                ce, total, se = self._cross_entropy(models[f"{pmf_name}-{kind}"], pmf)
                row[f"{kind}_bits_per_var"] = ce
                row[f"{kind}_gap"] = ce - h
                m[f"{pmf_name}/{kind}_bits_per_var"] = ce
                m[f"{pmf_name}/{kind}_gap"] = ce - h
                if kind == "voronoi":
                    m[f"{pmf_name}/voronoi_total_mass"] = total
                    m[f"{pmf_name}/voronoi_total_mass_se"] = se
            rows.append(row)
        self.tables["dequantization"] = rows
        m["entropy_bits_per_var"] = {r["pmf"]: r["entropy_bits_per_var"] for r in rows}

    def _eval_mixture(self, models: dict[str, Any]) -> None:
        cfg, m = self.cfg, self.metrics
        test = self._toy_data(cfg.n_test, cfg.seed + 2).to(self.device)
        mix = models["mixture"]
        with torch.no_grad():
            nll_flow = float(-models["flow"]().log_prob(test).mean())
            lp = mix.log_prob(test)
            inside = torch.isfinite(lp)
            m["mixture/test_outside_box"] = float(1 - inside.float().mean())
            nll_mix = float(-lp[inside].mean()) if bool(inside.any()) else math.inf
            # normalisation of the trained mixture: midpoint rule, 400^2 cells on its box
            lo, hi = mix.tess.lower.double().cpu(), mix.tess.upper.double().cpu()
            n = 400
            axes = [
                lo[d] + (hi[d] - lo[d]) * (torch.arange(n, dtype=torch.float64) + 0.5) / n
                for d in range(2)
            ]
            pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
            area = float((hi - lo).prod()) / n**2
            mass = (
                sum(
                    float(mix.log_prob(p.to(self.device, torch.float32)).exp().sum())
                    for p in pts.split(40_000)
                )
                * area
            )
        m["mixture/test_nll_flow"], m["mixture/test_nll_mixture"] = nll_flow, nll_mix
        m["mixture/mass"] = mass

    def _eval_cost(self) -> None:
        from flowfields.voronoi import FlowMixture, VoronoiMixture, VoronoiTessellation, make_flow

        cfg = self.cfg
        self.reseed(500)
        y = torch.rand(cfg.timing_batch, 2, device=self.device) * 1.6 - 0.8
        rows = []
        for K in cfg.mixture_ks:
            flow = make_flow(2, 4, transforms=cfg.transforms, hidden=cfg.hidden)
            tess = VoronoiTessellation(torch.rand(K, 2) * 1.8 - 0.9)
            vor = VoronoiMixture(tess, context=4, flow=flow).to(self.device)
            naive = FlowMixture(2, K, context=4, flow=flow).to(self.device)
            times = {}
            with torch.no_grad():
                for name, model in (("voronoi", vor), ("naive", naive)):
                    model.log_prob(y)  # warm-up
                    best = math.inf
                    for _ in range(cfg.timing_reps):
                        t0 = time.perf_counter()
                        model.log_prob(y)
                        best = min(best, time.perf_counter() - t0)
                    times[name] = best * 1e3
            rows.append(
                {
                    "K": K,
                    "voronoi_ms": times["voronoi"],
                    "naive_ms": times["naive"],
                    "naive_over_voronoi": times["naive"] / times["voronoi"],
                }
            )
        self.tables["mixture_cost"] = rows
        first, last = rows[0], rows[-1]
        self.metrics["cost/voronoi_growth"] = last["voronoi_ms"] / first["voronoi_ms"]
        self.metrics["cost/naive_growth"] = last["naive_ms"] / first["naive_ms"]

    def evaluate(self, models: dict[str, Any]) -> None:
        self._eval_dequantization(models)
        self._eval_mixture(models)
        self._eval_cost()

    # ------------------------------------------------------------------ claims
    def claims(self) -> list[Claim]:
        cfg, m = self.cfg, self.metrics
        D_argmax = math.ceil(math.log2(cfg.n_classes))
        wins = [
            r["pmf"]
            for r in self.tables["dequantization"]
            if r["voronoi_gap"] < min(r["argmax_gap"], r["uniform_gap"])
        ]
        gaps = "; ".join(
            f"{r['pmf']}: V {r['voronoi_gap']:.3f} / A {r['argmax_gap']:.3f} / "
            f"U {r['uniform_gap']:.3f}"
            for r in self.tables["dequantization"]
        )
        masses = [(m[f"{p}/voronoi_total_mass"], m[f"{p}/voronoi_total_mass_se"]) for p in cfg.pmfs]
        mass_ok = all(t <= 1 + 3 * se for t, se in masses) and abs(m["mixture/mass"] - 1) < 5e-3
        cost = self.tables["mixture_cost"]
        ks = "/".join(str(r["K"]) for r in cost)
        vg, ng = m["cost/voronoi_growth"], m["cost/naive_growth"]
        nf, nm = m["mixture/test_nll_flow"], m["mixture/test_nll_mixture"]
        return [
            Claim(
                id="learned-boundaries-help",
                statement="Voronoi dequantization reaches a cross-entropy closer to the exact "
                f"entropy than argmax (D = {D_argmax}) and uniform dequantization at equal "
                f"flow and budget, with D = {cfg.dim} per variable.",
                measured=f"Voronoi best on {len(wins)}/{len(cfg.pmfs)} PMFs (gap to entropy, "
                f"bits/var: {gaps})",
                threshold="Voronoi's gap smallest on every PMF",
                holds=len(wins) == len(cfg.pmfs),
                note=f"K = {cfg.n_classes}, {cfg.steps} steps of batch {cfg.batch}, IWAE with "
                f"k = {cfg.iwae_k} over all K^2 classes weighted by the exact PMF.",
            ),
            Claim(
                id="exact-likelihood",
                statement="The likelihoods are exact: the dequantized model's sum_x P_hat(x) "
                "<= 1 and the Voronoi mixture's density integrates to 1.",
                measured="sum_x P_hat(x): "
                + ", ".join(f"{t:.4f} +- {se:.4f}" for t, se in masses)
                + f"; mixture mass {m['mixture/mass']:.5f}",
                threshold="sum <= 1 + 3 SE; |mass - 1| < 5e-3",
                holds=bool(mass_ok),
                note="P_hat(x) = E_q[p/q] estimated with iwae_k samples per class; mass by the "
                "midpoint rule on 400^2 cells of the learned box (first order at the faces).",
            ),
            Claim(
                id="mixture-cost-flat-in-K",
                statement="A Voronoi mixture's likelihood time grows far slower in K than a "
                "standard K-component mixture of the same flow.",
                measured=f"time(K={cost[-1]['K']}) / time(K={cost[0]['K']}): Voronoi {vg:.2f}, "
                f"naive {ng:.1f}; naive/Voronoi at K = {ks}: "
                + "/".join(f"{r['naive_over_voronoi']:.1f}" for r in cost),
                threshold="naive growth >= 10 x Voronoi growth",
                holds=bool(ng >= 10 * vg),
                note=f"batch {cfg.timing_batch}, best of {cfg.timing_reps}, wall-clock, one "
                "thread; same conditional NSF in both.",
            ),
            Claim(
                id="mixture-gain",
                statement="Adding a Voronoi mixture layer to a baseline flow gives a significant "
                f"gain in NLL on the 2-D toy ({cfg.toy}).",
                measured=f"test NLL flow {nf:.3f} vs flow + Voronoi mixture {nm:.3f} nats "
                f"({m['mixture/test_outside_box']:.4f} of test points outside the box)",
                threshold="mixture NLL lower by >= 0.05 nats, no test point outside the box",
                holds=bool(nm <= nf - 0.05 and m["mixture/test_outside_box"] == 0),
                note=f"{cfg.mixture_cells} cells (k-means anchors), {cfg.mixture_steps} steps "
                "each, the same NSF inside the cells as the baseline.",
            ),
        ]

    # ------------------------------------------------------------------ figures
    def figures(self, models: dict[str, Any]) -> None:
        plt = self.plt
        from flowfields.voronoi import grid_pmf

        cfg = self.cfg
        pmf_name = cfg.pmfs[0]
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.3))
        axes[0].imshow(grid_pmf(pmf_name, cfg.n_classes).numpy(), cmap="viridis")
        axes[0].set_title(f"{pmf_name} PMF (K = {cfg.n_classes})")
        for ax, kind in zip(axes[1:], KINDS, strict=True):
            model = models[f"{pmf_name}-{kind}"]
            z = self._samples(model, 2000)
            ax.scatter(z[:, 0], z[:, 1], s=1, alpha=0.4)
            ax.set_title(f"{kind}: z of variable 1")
            if kind == "voronoi":
                self._draw_cells(ax, model.dequantizer.tess, group=0)
        self.save_figure(fig, "dequantization.png")
        self._figure_mixture(models)

    def _samples(self, model: Any, n: int) -> Any:
        from flowfields.voronoi import grid_pmf, sample_pmf

        x = sample_pmf(
            grid_pmf(self.cfg.pmfs[0], self.cfg.n_classes),
            n,
            generator=torch.Generator().manual_seed(0),
        ).to(self.device)
        with torch.no_grad():
            z, _ = model.dequantizer.sample(x, 1)
        d = model.dequantizer.dim
        z = z[0, :, :d].cpu()
        return torch.cat([z, torch.zeros_like(z)], 1) if d == 1 else z

    def _draw_cells(self, ax: Any, tess: Any, group: int | None) -> None:
        a = tess.anchors.detach().cpu()
        lo, hi = tess.lower.detach().cpu(), tess.upper.detach().cpu()
        if group is not None:
            a, lo, hi = a[group], lo[group], hi[group]
        if a.shape[-1] != 2:
            return
        n = 300
        gx = torch.linspace(float(lo[0]), float(hi[0]), n)
        gy = torch.linspace(float(lo[1]), float(hi[1]), n)
        pts = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
        k = ((pts[:, None] - a) ** 2).sum(-1).argmin(-1).reshape(n, n)
        # cell boundaries: the grid points whose right or upper neighbour is in another cell
        edge = torch.zeros(n, n, dtype=torch.bool)
        edge[:, :-1] |= k[:, 1:] != k[:, :-1]
        edge[:-1, :] |= k[1:, :] != k[:-1, :]
        ax.imshow(
            edge.float().numpy(),
            origin="lower",
            cmap="Greys",
            vmax=1.5,
            extent=(float(gx[0]), float(gx[-1]), float(gy[0]), float(gy[-1])),
            interpolation="nearest",
            zorder=0,
        )
        ax.plot(a[:, 0].numpy(), a[:, 1].numpy(), "r.", ms=3)

    def _figure_mixture(self, models: dict[str, Any]) -> None:
        plt = self.plt
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
        mix = models["mixture"]
        lo, hi = mix.tess.lower.detach().cpu(), mix.tess.upper.detach().cpu()
        n = 200
        gx = torch.linspace(float(lo[0]), float(hi[0]), n)
        gy = torch.linspace(float(lo[1]), float(hi[1]), n)
        pts = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
        with torch.no_grad():
            p_flow = models["flow"]().log_prob(pts.to(self.device)).exp().cpu().reshape(n, n)
            p_mix = mix.log_prob(pts.to(self.device)).exp().cpu().reshape(n, n)
        data = self._toy_data(3000, 0)
        axes[0].scatter(data[:, 0], data[:, 1], s=1)
        axes[0].set_title(f"{self.cfg.toy} data")
        extent = (float(gx[0]), float(gx[-1]), float(gy[0]), float(gy[-1]))
        axes[1].imshow(p_flow.numpy(), origin="lower", extent=extent)
        axes[1].set_title("NSF alone")
        axes[2].imshow(p_mix.numpy(), origin="lower", extent=extent)
        self._draw_cells(axes[2], mix.tess, None)
        axes[2].set_title("NSF + Voronoi mixture")
        self.save_figure(fig, "mixture.png")


EXPERIMENT = VoronoiDequantization

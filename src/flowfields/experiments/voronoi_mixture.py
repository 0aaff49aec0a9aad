"""voronoi-mixture: a flow with and without a Voronoi mixture layer on 2-D toys; exactness, cost.

Chen, Amos, Nickel, "Semi-Discrete Normalizing Flows through Differentiable Tessellation"
(arXiv:2203.06832), section 5. Three measurements:

1. **Mixture gain** (claim "mixture-gain"): on each continuous 2-D toy, a zuko NSF alone
   (``transforms`` transforms) vs the same budget split around a Voronoi mixture layer
   (:class:`~flowfields.voronoi.VoronoiMixtureFlow`: an NSF with ``transforms // 2``
   transforms, a sigmoid onto the box, the layer with ``cells`` k-means anchors, and an NSF
   conditioned on the cell's embedding with the remaining transforms); same steps, batch and
   learning rate; test NLL (mean and median, nats).
2. **Exact likelihood** ("exact-likelihood"): the trained layer's density integrates to 1 over
   its box and each component's mass over its own cell is pi_k (midpoint rule).
3. **Mixture cost flat in K** ("mixture-cost-flat-in-K"): likelihood time of
   :class:`~flowfields.voronoi.VoronoiMixture` vs a standard K-component
   :class:`~flowfields.voronoi.FlowMixture` of the same conditional flow, K in ``mixture_ks``.

Models saved: ``<toy>-flow`` (a zuko flow) and ``<toy>-mixture`` (a VoronoiMixtureFlow).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.engine import TrainState
from flowfields.errors import check, check_positive_ints
from flowfields.experiments.base import Experiment
from flowfields.report.result import Claim

__all__ = [
    "EXPERIMENT",
    "NAME",
    "PAPER",
    "Config",
    "VoronoiMixtureExperiment",
    "cosine_state",
    "draw_cells",
]

NAME = "voronoi-mixture"
PAPER = (
    "Semi-Discrete Normalizing Flows through Differentiable Tessellation "
    "(Chen, Amos, Nickel, arXiv:2203.06832)"
)


@dataclass
class Config:
    """Settings of ``voronoi-mixture``.

    Attributes:
        toys: 2-D toys of :func:`flowfields.data.get_toy` (scaled by 1/2).
        cells, context: the mixture's K and the size of its per-cell embedding.
        transforms, hidden: the baseline NSF (the stack splits the transforms).
        steps, batch, lr: training of every model (Adam, cosine decay).
        n_train, n_test: data sizes; mass_cells: midpoint cells per side for the masses (a
            trained layer has sharp shells at its faces: pinwheel's mass read 0.971 at 400
            cells per side, 1.0006 at 1600 and 1.0004 at 3200, measured; a sharper layer
            read 1.0025 at 1600); mass_polar: (angles, radial nodes) per cell of the float64
            polar quadrature (:func:`~flowfields.voronoi.polar_component_masses`) the
            exact-likelihood claim uses (that layer: 0.99999 at 2000 x 300).
        base, df, learn_df: the base of the per-cell flow (:class:`~flowfields.voronoi.
            VoronoiMixture`): ``"normal"`` (default) or ``"student"``, a multivariate
            Student-t with ``df`` degrees of freedom (learned if ``learn_df``), whose cell
            density stays positive (``~ g^(df - 1)``) at the faces. The default stays the
            normal: the t-base made the quick test NLL finite and stable in the test size
            but did not win (docs/voronoi.md).
        mixture_ks, timing_batch, timing_reps: the likelihood-cost measurement.
        checkpoint_every, seed, device: engine and CLI settings.
    """

    toys: tuple[str, ...] = ("8gaussians", "pinwheel", "checkerboard")
    cells: int = 16
    context: int = 4
    transforms: int = 4
    hidden: tuple[int, ...] = (64, 64)
    steps: int = 2000
    batch: int = 256
    lr: float = 1e-3
    n_train: int = 50_000
    n_test: int = 20_000
    mass_cells: int = 1600
    mass_polar: tuple[int, ...] = (2000, 400)
    base: str = "normal"
    df: float = 1.0
    learn_df: bool = False
    mixture_ks: tuple[int, ...] = (4, 64, 1024)
    timing_batch: int = 256
    timing_reps: int = 5
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """Two toys, 8 cells, NSF 2 x (32, 32), 300 steps per model at lr 2e-3."""
        return cls(
            toys=("8gaussians", "pinwheel"),
            cells=8,
            transforms=2,
            hidden=(32, 32),
            steps=300,
            lr=2e-3,
            n_test=4000,
            mass_cells=300,
            mass_polar=(500, 200),
            timing_batch=128,
            timing_reps=3,
        )

    @classmethod
    def full(cls) -> Config:
        """Three toys, 16 cells, NSF 4 x (64, 64), 2000 steps per model at lr 1e-3 (the
        paper's rate)."""
        return cls()


def cosine_state(model: nn.Module, lr: float, steps: int) -> TrainState:
    """Adam at ``lr`` with cosine decay over ``steps``, gradient clip 10, no EMA: the training
    state of every Voronoi experiment."""

    def cosine(opt: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))

    return TrainState.single(model, lr=lr, scheduler=cosine, ema_decay=None, grad_clip=10.0)


def draw_cells(ax: Any, cell_of: Any, lo: Any, hi: Any, anchors: Any = None, n: int = 300) -> None:
    """Draw the faces of a tessellation on ``ax``: ``cell_of`` maps grid points (M, 2) of the
    rectangle ``[lo, hi]`` to cell indices (M,); a face is where a neighbour's cell differs."""
    gx = torch.linspace(float(lo[0]), float(hi[0]), n)
    gy = torch.linspace(float(lo[1]), float(hi[1]), n)
    pts = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
    k = cell_of(pts).reshape(n, n)
    edge = torch.zeros(n, n, dtype=torch.bool)
    edge[:, :-1] |= k[:, 1:] != k[:, :-1]
    edge[:-1, :] |= k[1:, :] != k[:-1, :]
    alpha = edge.float().numpy()
    ax.imshow(
        alpha,
        origin="lower",
        cmap="Greys",
        alpha=alpha,
        extent=(float(gx[0]), float(gx[-1]), float(gy[0]), float(gy[-1])),
        interpolation="nearest",
    )
    if anchors is not None:
        ax.plot(anchors[:, 0], anchors[:, 1], "r.", ms=3)


class VoronoiMixtureExperiment(Experiment, config=Config):
    """A flow with and without a Voronoi mixture layer; the layer's exactness and cost.

    Reproduces the mixture claims of Chen, Amos, Nickel (arXiv:2203.06832) on
    :mod:`flowfields.voronoi`; see the module docstring.
    """

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("8gaussians-mixture",)

    def check_config(self) -> None:
        from flowfields.data import TOYS

        cfg = self.cfg
        check(len(cfg.toys) >= 1, "toys", cfg.toys, "at least one toy")
        for t in cfg.toys:
            check(t in TOYS, "toys", t, f"names from {TOYS}")
        check_positive_ints(
            cfg, "cells", "context", "transforms", "steps", "batch", "n_test", "mass_cells"
        )
        check(
            len(cfg.mass_polar) == 2 and all(int(v) >= 1 for v in cfg.mass_polar),
            "mass_polar",
            cfg.mass_polar,
            "(angles, radial nodes), two integers >= 1",
        )
        check(cfg.cells >= 2, "cells", cfg.cells, "K >= 2")
        from flowfields.voronoi import check_student_base

        check_student_base(cfg.base, cfg.df, cfg.learn_df)
        check(cfg.transforms >= 2, "transforms", cfg.transforms, ">= 2 (split around the layer)")
        check(all(k >= 2 for k in cfg.mixture_ks), "mixture_ks", cfg.mixture_ks, "K >= 2 each")

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.voronoi import (
            VoronoiMixture,
            VoronoiMixtureFlow,
            VoronoiTessellation,
            make_flow,
        )

        kind = variant.rsplit("-", 1)[-1]
        check(kind in ("flow", "mixture"), "variant", variant, "'<toy>-flow' or '<toy>-mixture'")
        T = cfg.transforms
        if kind == "flow":
            return make_flow(2, 0, transforms=T, hidden=cfg.hidden)
        # placeholder anchors: train() sets k-means ones, load() the saved ones
        g = torch.Generator().manual_seed(0)
        tess = VoronoiTessellation(1.8 * torch.rand(cfg.cells, 2, generator=g) - 0.9, -1.0, 1.0)
        inner = make_flow(2, cfg.context, transforms=T - T // 2, hidden=cfg.hidden)
        mix = VoronoiMixture(
            tess,
            context=cfg.context,
            flow=inner,
            base=cfg.base,
            df=float(cfg.df),
            learn_df=bool(cfg.learn_df),
        )
        return VoronoiMixtureFlow(mix, make_flow(2, 0, transforms=T // 2, hidden=cfg.hidden))

    # ------------------------------------------------------------------ training
    def _data(self, toy: str, n: int, seed: int) -> Tensor:
        from flowfields.data import get_toy

        g = torch.Generator().manual_seed(seed)
        return get_toy(toy).sample(n, g, dtype=torch.float32) / 2.0

    def _train_one(self, toy: str, kind: str, offset: int) -> nn.Module:
        cfg = self.cfg
        data = self._data(toy, cfg.n_train, cfg.seed + 1).to(self.device)
        self.reseed(offset)
        variant = f"{toy}-{kind}"
        model: Any = self.build_model(cfg, variant).to(self.device)
        if kind == "mixture":  # k-means anchors of the data's images in the box
            model.init_anchors(data[:5000], generator=torch.Generator().manual_seed(cfg.seed))

        def step(state: TrainState, _: int) -> dict[str, Tensor]:
            idx = torch.randint(0, data.shape[0], (cfg.batch,), device=data.device)
            m: Any = state["model"]
            x = data[idx]
            lp = m.log_prob(x) if kind == "mixture" else m().log_prob(x)
            return {"loss": state.update("model", -lp.mean())}

        state = cosine_state(model, cfg.lr, cfg.steps)
        res = self.fit(variant, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every)
        self.metrics[f"{variant}/train_cpu_s"] = res.cpu_s  # all segments of a resumed run
        self.metrics[f"{variant}/parameters"] = sum(p.numel() for p in model.parameters())
        return model.eval()

    def train(self) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {}
        for i, toy in enumerate(self.cfg.toys):
            for j, kind in enumerate(("flow", "mixture")):
                models[f"{toy}-{kind}"] = self._train_one(toy, kind, 10 * i + j)
        return models

    # ------------------------------------------------------------------ evaluation
    def _layer_masses(self, mix: Any) -> tuple[float, float]:
        """The layer's total mass over its box and max_k |mass of cell k - pi_k| (midpoint)."""
        lo, hi = mix.tess.lower.detach().double().cpu(), mix.tess.upper.detach().double().cpu()
        n = self.cfg.mass_cells
        axes = [
            lo[d] + (hi[d] - lo[d]) * (torch.arange(n, dtype=torch.float64) + 0.5) / n
            for d in (0, 1)
        ]
        pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        area = float((hi - lo).prod()) / n**2
        per = torch.zeros(mix.n_cells, dtype=torch.float64)
        with torch.no_grad():
            for p in pts.split(40_000):
                p = p.to(self.device, torch.float32)
                w = mix.log_prob(p).exp().double().cpu() * area
                per.index_add_(0, mix.tess.nearest(p).cpu(), w)
            pi = mix.log_pi().exp().double().cpu()
        return float(per.sum()), float((per - pi).abs().max())

    def _polar_masses(self, mix: Any) -> tuple[float, float]:
        """The layer's mass ``sum_k pi_k m_k`` and max_k ``|pi_k m_k - pi_k|`` by float64
        polar quadrature cell by cell (``cfg.mass_polar`` nodes)."""
        from flowfields.voronoi import polar_component_masses

        n_phi, n_alpha = self.cfg.mass_polar
        masses = polar_component_masses(mix, n_phi, n_alpha)
        with torch.no_grad():
            pi = mix.log_pi().exp().double().cpu()
        return float((pi * masses).sum()), float((pi * (masses - 1)).abs().max())

    def _face_gap(self, model: Any, y: Tensor) -> Tensor:
        """``1 - alpha`` of every point ``y`` (B, D) in the mixture layer: its relative distance
        to its cell's boundary along the ray from the anchor (0 at a face), float64 (B,).

        With a Gaussian-tailed per-cell flow, ``-log p ~ e^(-2 theta) lam*^2 / (2 g^2)`` at
        ``g = 1 - alpha``: if the data put a density > 0 on g near 0 (any smooth ``pre`` flow
        does), the expected NLL is infinite and the test mean grows with the test size. With
        the Student-t base (``cfg.base = "student"``), ``-log p ~ -(df - 1) log g``: finite."""
        from flowfields.voronoi import cell_mu

        with torch.no_grad():
            b = model.to_box(y)
            t = model.mixture.tess
            k = t.nearest(b)
            alpha = cell_mu(b - t.anchors[k], k, t.anchors, t.lower, t.upper)
        return (1.0 - alpha.double()).cpu()

    def _eval_toys(self, models: dict[str, Any]) -> None:
        cfg, m = self.cfg, self.metrics
        rows = []
        for toy in cfg.toys:
            test = self._data(toy, cfg.n_test, cfg.seed + 2).to(self.device)
            with torch.no_grad():
                lp_f = models[f"{toy}-flow"]().log_prob(test).double().cpu()
                lp_m = models[f"{toy}-mixture"].log_prob(test).double().cpu()
            mass, dev = self._layer_masses(models[f"{toy}-mixture"].mixture)
            pmass, pdev = self._polar_masses(models[f"{toy}-mixture"].mixture)
            gap = self._face_gap(models[f"{toy}-mixture"], test)
            near = gap < 1e-2
            quarter = max(1, cfg.n_test // 4)
            row = {
                "toy": toy,
                "nll_flow": float(-lp_f.mean()),
                "nll_mixture": float(-lp_m.mean()),
                "median_nll_flow": float(-lp_f.median()),
                "median_nll_mixture": float(-lp_m.median()),
                "layer_mass": mass,
                "max_cell_mass_error": dev,
                "layer_mass_polar": pmass,
                "max_cell_mass_error_polar": pdev,
                # the face diagnosis (see the docs): 1 - alpha < 1e-2 near a face
                "face_fraction": float(near.double().mean()),
                "face_nll_share": float(lp_m[near].sum() / lp_m.sum()),
                "nll_mixture_off_faces": float(-lp_m[~near].mean()),
                "nll_flow_off_faces": float(-lp_f[~near].mean()),
                "nll_mixture_first_quarter": float(-lp_m[:quarter].mean()),
                "max_nll_mixture": float(-lp_m.min()),
            }
            for key, value in row.items():
                if key != "toy":
                    m[f"{toy}/{key}"] = value
            rows.append(row)
        self.tables["mixture_gain"] = rows

    def _eval_cost(self) -> None:
        from flowfields.voronoi import FlowMixture, VoronoiMixture, VoronoiTessellation, make_flow

        cfg = self.cfg
        self.reseed(500)
        y = torch.rand(cfg.timing_batch, 2, device=self.device) * 1.6 - 0.8
        rows = []
        for K in cfg.mixture_ks:
            flow = make_flow(2, 4, transforms=2, hidden=(32, 32))
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
        self._eval_toys(models)
        self._eval_cost()

    # ------------------------------------------------------------------ claims
    def claims(self) -> list[Claim]:
        cfg, m = self.cfg, self.metrics
        rows = self.tables["mixture_gain"]
        gains = "; ".join(
            f"{r['toy']}: {r['nll_flow']:.3f} vs {r['nll_mixture']:.3f} "
            f"(medians {r['median_nll_flow']:.3f} vs {r['median_nll_mixture']:.3f})"
            for r in rows
        )
        faces = "; ".join(
            f"{r['toy']}: {r['face_fraction']:.4f} of the points carry "
            f"{r['face_nll_share']:.3f} of the NLL, the rest {r['nll_mixture_off_faces']:.3f} "
            f"vs the flow's {r['nll_flow_off_faces']:.3f}; mean over the first quarter "
            f"{r['nll_mixture_first_quarter']:.3g}, max {r['max_nll_mixture']:.3g}"
            for r in rows
        )
        masses = ", ".join(f"{r['layer_mass_polar']:.5f}" for r in rows)
        devs = max(r["max_cell_mass_error_polar"] for r in rows)
        mid = ", ".join(f"{r['layer_mass']:.5f}" for r in rows)
        mid_dev = max(r["max_cell_mass_error"] for r in rows)
        mass_ok = all(abs(r["layer_mass_polar"] - 1) < 5e-3 for r in rows) and devs < 5e-3
        if cfg.base == "normal":
            base = "normal base"
            tail = (
                "A Gaussian-tailed per-cell density vanishes like exp(-c / (1 - alpha)^2) at "
                "the faces, so the expected NLL of data with density at the faces is infinite."
            )
        else:
            base = f"Student-t base (df {cfg.df:g}{', learned' if cfg.learn_df else ''})"
            tail = (
                "The t-base's per-cell density behaves like (1 - alpha)^(df - 1) at the faces, "
                "so the expected NLL stays finite."
            )
        cost = self.tables["mixture_cost"]
        ks = "/".join(str(r["K"]) for r in cost)
        vg, ng = m["cost/voronoi_growth"], m["cost/naive_growth"]
        return [
            Claim(
                id="mixture-gain",
                statement="Adding a Voronoi mixture layer to a baseline flow gives a significant "
                "gain in test NLL on the 2-D toys, at the same budget.",
                measured=f"test NLL (nats) flow vs flow + Voronoi mixture: {gains}",
                threshold="mixture's mean NLL lower by >= 0.05 nats on every toy",
                holds=all(r["nll_mixture"] <= r["nll_flow"] - 0.05 for r in rows),
                note=f"{cfg.cells} cells (k-means anchors), {cfg.steps} steps of batch "
                f"{cfg.batch} each, NSF {cfg.transforms} x {cfg.hidden} alone vs "
                f"{cfg.transforms // 2} before and {cfg.transforms - cfg.transforms // 2} "
                f"inside the cells, {base}. Faces (1 - alpha < 1e-2): " + faces + ". " + tail,
            ),
            Claim(
                id="exact-likelihood",
                statement="The Voronoi mixture's density integrates to 1 and each component's "
                "mass over its own cell equals pi_k.",
                measured=f"layer mass over its box {masses}; max |cell mass - pi_k| {devs:.1e}",
                threshold="|mass - 1| < 5e-3 and |cell mass - pi_k| < 5e-3",
                holds=bool(mass_ok),
                note=f"float64 polar quadrature per cell, {cfg.mass_polar[0]} angles x "
                f"{cfg.mass_polar[1]} radial nodes; the midpoint rule ({cfg.mass_cells}^2 "
                f"cells, float32, first order at the faces) reads {mid}, max dev "
                f"{mid_dev:.1e}.",
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
                "thread; same conditional NSF (2 x (32, 32)) in both.",
            ),
        ]

    # ------------------------------------------------------------------ figures
    def figures(self, models: dict[str, Any]) -> None:
        plt = self.plt
        toys = self.cfg.toys
        fig, axes = plt.subplots(len(toys), 3, figsize=(10, 3.4 * len(toys)), squeeze=False)
        n, L = 200, 2.5
        g = torch.linspace(-L, L, n)
        pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
        extent = (-L, L, -L, L)
        for row, toy in zip(axes, toys, strict=True):
            mix = models[f"{toy}-mixture"]
            with torch.no_grad():
                p_flow = models[f"{toy}-flow"]().log_prob(pts.to(self.device)).exp()
                p_mix = mix.log_prob(pts.to(self.device)).exp()
            data = self._data(toy, 3000, 0)
            row[0].scatter(data[:, 0], data[:, 1], s=1)
            row[0].set_xlim(-L, L)
            row[0].set_ylim(-L, L)
            row[0].set_title(f"{toy} data")
            row[1].imshow(p_flow.cpu().reshape(n, n).numpy(), origin="lower", extent=extent)
            row[1].set_title("NSF alone")
            row[2].imshow(p_mix.cpu().reshape(n, n).numpy(), origin="lower", extent=extent)

            def cell_of(y: Tensor, mix: Any = mix) -> Tensor:
                with torch.no_grad():
                    return mix.mixture.tess.nearest(mix.to_box(y.to(self.device))).cpu()

            draw_cells(row[2], cell_of, (-L, -L), (L, L))
            row[2].set_title("NSF + Voronoi mixture layer (cells)")
        self.save_figure(fig, "mixture.png")


EXPERIMENT = VoronoiMixtureExperiment

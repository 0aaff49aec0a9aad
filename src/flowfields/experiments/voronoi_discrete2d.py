"""voronoi-discrete2d: Voronoi vs argmax vs uniform dequantization on 2-D discrete PMFs.

Chen, Amos, Nickel, "Semi-Discrete Normalizing Flows through Differentiable Tessellation"
(arXiv:2203.06832), section 4 (their discrete 2-D toys). Two measurements, one run:

1. **Dequantization** (claim "learned-boundaries-help"): for each PMF of
   :func:`~flowfields.voronoi.grid_pmf` (two categorical variables with K classes, exact
   entropy), the same zuko NSF ``p(z)`` is trained by the ELBO under three dequantizers:
   Voronoi (embedding dimension ``dim`` per variable, smaller than ``ceil(log2 K)``), binary
   argmax (``D = ceil(log2 K)``) and uniform (ordinal, D = 1), with the same conditional MLP
   for Voronoi and argmax, the same steps, batch and learning rate. Where the regions tile a
   box (Voronoi, uniform) the flow lives on that box (a logit layer), as in the paper.
   Training draws fresh batches from the PMF (no overfitting); the evaluation is the exact
   cross-entropy ``-sum_x P(x) IWAE_k(x)`` over all K^2 classes, in bits per variable,
   against the entropy.
2. **Exact likelihood** ("exact-likelihood"): ``sum_x P_hat(x) <= 1`` for the trained Voronoi
   models (``E_q[p/q] = P_hat(x)``, summed over all classes).

``seeds = n`` repeats both for the seeds ``seed, ..., seed + n - 1`` (each exactly the
single-seed run at that seed, :mod:`flowfields.experiments._voronoi_seeds`); claim 1 is then
decided on the mean gaps over the seeds (standard errors and per-seed wins in its text), claim
2 on every seed's models.

The mixture claims are in ``voronoi-mixture``. Models saved: ``<pmf>-<kind>`` (a
:class:`~flowfields.voronoi.DequantizedFlow`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.engine import TrainState
from flowfields.errors import check, check_positive_ints
from flowfields.experiments._voronoi_seeds import (
    evaluate_over_seeds,
    fmt_mean,
    lowest_on_mean,
    seed_scope,
    seeds_text,
    strip_seed,
)
from flowfields.experiments.base import Experiment
from flowfields.experiments.voronoi_mixture import cosine_state, draw_cells
from flowfields.report.result import Claim
from flowfields.voronoi.tessellation import nearest_anchor

__all__ = [
    "EXPERIMENT",
    "KINDS",
    "NAME",
    "PAPER",
    "Config",
    "VoronoiDiscrete2d",
    "class_weights",
    "dequantized_flow",
]

NAME = "voronoi-discrete2d"
PAPER = (
    "Semi-Discrete Normalizing Flows through Differentiable Tessellation "
    "(Chen, Amos, Nickel, arXiv:2203.06832)"
)
KINDS = ("voronoi", "argmax", "uniform")


def dequantized_flow(kind: str, n_vars: int, n_classes: int, cfg: Any) -> nn.Module:
    """A :class:`~flowfields.voronoi.DequantizedFlow`: dequantizer ``kind`` (Voronoi with
    ``cfg.dim`` and the law ``cfg.q_base`` / ``q_df`` / ``q_learn_df`` of its q; the
    conditional MLP ``cfg.cond_hidden`` wide) and a zuko NSF
    (``cfg.transforms`` x ``cfg.hidden``) on its space."""
    from flowfields.voronoi import DequantizedFlow, make_dequantizer, make_flow

    deq = make_dequantizer(
        kind,
        n_vars,
        n_classes,
        dim=cfg.dim,
        hidden=cfg.cond_hidden,
        base=cfg.q_base,
        df=float(cfg.q_df),
        learn_df=bool(cfg.q_learn_df),
    )
    flow = make_flow(deq.features, transforms=cfg.transforms, hidden=cfg.hidden)
    return DequantizedFlow(deq, flow)


def check_q_base(cfg: Any) -> None:
    """Raise FlowfieldsError unless ``cfg.q_base``, ``q_df``, ``q_learn_df`` are valid
    (:func:`~flowfields.voronoi.check_student_base`)."""
    from flowfields.voronoi import check_student_base

    check_student_base(cfg.q_base, cfg.q_df, cfg.q_learn_df, ("q_base", "q_df", "q_learn_df"))


def q_law(cfg: Any) -> str:
    """The Voronoi q's latent law, in words (for claims' notes)."""
    if cfg.q_base == "normal":
        return "Voronoi q: normal latent"
    learned = ", learned" if cfg.q_learn_df else ""
    return f"Voronoi q: Student-t latent (df {cfg.q_df:g}{learned})"


def train_dequantized(
    exp: Experiment,
    variant: str,
    model: nn.Module,
    sample: Callable[[int], Tensor],
    *,
    suffix: str = "",
) -> nn.Module:
    """Train ``model`` (a DequantizedFlow) by the one-sample ELBO on batches ``sample(batch)``
    (B, N) for ``exp.cfg.steps`` steps (Adam at ``cfg.lr``, cosine decay, gradient clip 10);
    records the CPU time as ``<variant>/train_cpu_s``. The checkpoint is
    ``train_<variant><suffix>.pt`` (``suffix``: a seed's, :func:`seed_scope`)."""
    cfg = exp.cfg
    m: Any = model
    n_vars = m.dequantizer.n_vars

    def step(state: TrainState, _: int) -> dict[str, Tensor]:
        x = sample(cfg.batch).to(exp.device)
        trained: Any = state["model"]
        loss = -trained.elbo(x, 1).mean() / (n_vars * math.log(2))
        return {"loss": state.update("model", loss)}

    state = cosine_state(model, cfg.lr, cfg.steps)
    res = exp.fit(
        variant + suffix, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every
    )
    exp.metrics[f"{variant}/train_cpu_s"] = res.cpu_s  # all segments of a resumed run
    return model.eval()


def class_weights(model: Any, xs: Tensor, k: int, *, seed: int, device: Any) -> Tensor:
    """``log p(z_i) - log q(z_i | x)``, ``k`` draws per row of ``xs`` (M, N): (k, M) float64
    on the CPU (batches of 64 rows, one seeded generator)."""
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        parts = [model.log_weights(xb.to(device), k, generator=g).double() for xb in xs.split(64)]
    return torch.cat(parts, 1).cpu()


def anchor_motion(start: Tensor, tess: Any) -> dict[str, float]:
    """How far training moved a tessellation's anchors from ``start`` (*groups, K, D): the
    mean and max shift, the initial mean nearest-neighbour distance between anchors (the
    cells' scale) and the box's mean half-width now."""
    a = tess.anchors.detach()
    shift = (a - start).norm(dim=-1)
    dist = torch.cdist(start, start)
    dist = dist + torch.diag_embed(torch.full(dist.shape[:-1], math.inf, dtype=dist.dtype))
    return {
        "anchor_shift_mean": float(shift.mean()),
        "anchor_shift_max": float(shift.max()),
        "anchor_nn_dist_init": float(dist.amin(-1).mean()),
        "box_half_width": float(tess.half_width.detach().mean()),
    }


@dataclass
class Config:
    """Settings of ``voronoi-discrete2d``.

    Attributes:
        pmfs, n_classes: the grid PMFs (:data:`~flowfields.voronoi.PMF_NAMES`, ``perm-`` for
            the label-permuted, purely categorical version) and K.
        dim: the Voronoi embedding dimension per variable.
        q_base, q_df, q_learn_df: the law of the Voronoi q's latent before the cell map:
            ``"student"`` (multivariate t with ``q_df`` degrees of freedom, learned if
            ``q_learn_df``; q behaves like ``g^(q_df - 1)`` at the faces) or ``"normal"``
            (the paper's; ``exp(-c / g^2)`` at the faces). Default: the t, nu learned from 1,
            which cut Voronoi's gap 2-3.5x in both presets and brought ``sum_x P_hat(x)``
            from 0.71 to 1.00 (docs/voronoi.md). Argmax and uniform ignore them.
        transforms, hidden, cond_hidden: the NSF ``p(z)`` and the conditional MLP of q.
        steps, batch, lr: training of every dequantized model (Adam, cosine decay).
        iwae_k: importance samples per class in the evaluation.
        seeds: how many seeds (``seed``, ``seed + 1``, ...) to train and evaluate; the
            claims use the means over them (1 in both presets: one full-preset seed takes
            6.5-7 min of CPU; docs/voronoi.md has the three-seed study).
        checkpoint_every, seed, device: engine and CLI settings.
    """

    pmfs: tuple[str, ...] = ("8gaussians", "perm-8gaussians")
    n_classes: int = 32
    dim: int = 2
    q_base: str = "student"
    q_df: float = 1.0
    q_learn_df: bool = True
    transforms: int = 4
    hidden: tuple[int, ...] = (64, 64)
    cond_hidden: int = 64
    steps: int = 2000
    batch: int = 512
    lr: float = 1e-2
    iwae_k: int = 256
    seeds: int = 1
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
        )

    @classmethod
    def full(cls) -> Config:
        """8gaussians ordinal and label-permuted, K = 32 (argmax D = 5), 2000 steps of batch
        512, NSF 4 x (64, 64): 7.5 min of CPU (measured, one thread); more PMFs by
        ``--set pmfs=...``."""
        return cls()


class VoronoiDiscrete2d(Experiment, config=Config):
    """Voronoi vs argmax vs uniform dequantization on 2-D discrete PMFs.

    Reproduces the discrete 2-D experiments of Chen, Amos, Nickel
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
        check_positive_ints(cfg, "n_classes", "dim", "steps", "batch", "iwae_k", "seeds")
        check(cfg.n_classes >= 2, "n_classes", cfg.n_classes, "K >= 2")
        check_q_base(cfg)

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        kind = strip_seed(variant).rsplit("-", 1)[-1]
        check(
            kind in KINDS,
            "variant",
            variant,
            f"'<pmf>-<kind>[-seed<N>]' with kind in {KINDS}",
        )
        return dequantized_flow(kind, 2, cfg.n_classes, cfg)

    # ------------------------------------------------------------------ training
    def _train_dequantized(
        self, pmf_name: str, kind: str, offset: int, suffix: str = ""
    ) -> nn.Module:
        from flowfields.voronoi import grid_pmf, sample_pmf

        pmf = grid_pmf(pmf_name, self.cfg.n_classes)
        self.reseed(offset)
        variant = f"{pmf_name}-{kind}"
        model: Any = self.build_model(self.cfg, variant).to(self.device)

        def sample(n: int) -> Tensor:
            return sample_pmf(pmf, n)

        if kind != "voronoi":
            return train_dequantized(self, variant, model, sample, suffix=suffix)
        tess = model.dequantizer.tess
        start = tess.anchors.detach().clone()
        trained = train_dequantized(self, variant, model, sample, suffix=suffix)
        self.metrics.update(
            {f"{pmf_name}/{key}": v for key, v in anchor_motion(start, tess).items()}
        )
        if self.cfg.q_base == "student":
            self.metrics[f"{pmf_name}/voronoi_q_df"] = float(model.dequantizer.df.detach())
        return trained

    def train(self) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {}
        for k in range(self.cfg.seeds):
            with seed_scope(self, k) as sfx:
                for i, pmf_name in enumerate(self.cfg.pmfs):
                    for j, kind in enumerate(KINDS):
                        models[f"{pmf_name}-{kind}{sfx}"] = self._train_dequantized(
                            pmf_name, kind, 10 * i + j, sfx
                        )
        return models

    # ------------------------------------------------------------------ evaluation
    def _cross_entropy(self, model: Any, pmf: Tensor) -> tuple[float, float, float]:
        """``-sum_x P(x) IWAE_k(x)`` in bits per variable, ``sum_x P_hat(x)`` and its SE."""
        cfg, K = self.cfg, self.cfg.n_classes
        xs = torch.cartesian_prod(torch.arange(K), torch.arange(K))
        w = class_weights(model, xs, cfg.iwae_k, seed=cfg.seed + 7, device=self.device)
        iwae = torch.logsumexp(w, 0) - math.log(cfg.iwae_k)
        ce = float(-(pmf.reshape(-1) * iwae).sum()) / (2 * math.log(2))
        ratio = w.exp()
        total = float(ratio.mean(0).sum())
        se = float((ratio.var(0) / cfg.iwae_k).sum().sqrt())
        return ce, total, se

    def _eval_dequantization(self, models: dict[str, nn.Module], suffix: str) -> list[Any]:
        """One seed's rows (the models ``<pmf>-<kind><suffix>``, ``self.cfg`` that seed's)."""
        from flowfields.voronoi import entropy_bits, grid_pmf

        cfg, m = self.cfg, self.metrics
        rows = []
        for pmf_name in cfg.pmfs:
            pmf = grid_pmf(pmf_name, cfg.n_classes)
            h = entropy_bits(pmf) / 2
            row: dict[str, Any] = {"seed": cfg.seed, "pmf": pmf_name, "entropy_bits_per_var": h}
            for kind in KINDS:
                ce, total, se = self._cross_entropy(models[f"{pmf_name}-{kind}{suffix}"], pmf)
                row[f"{kind}_bits_per_var"] = ce
                row[f"{kind}_gap"] = ce - h
                m[f"{pmf_name}/{kind}_bits_per_var"] = ce
                m[f"{pmf_name}/{kind}_gap"] = ce - h
                if kind == "voronoi":
                    row["voronoi_total_mass"] = m[f"{pmf_name}/voronoi_total_mass"] = total
                    row["voronoi_total_mass_se"] = m[f"{pmf_name}/voronoi_total_mass_se"] = se
            rows.append(row)
        m["entropy_bits_per_var"] = {r["pmf"]: r["entropy_bits_per_var"] for r in rows}
        return rows

    def evaluate(self, models: dict[str, Any]) -> None:
        self._summary = evaluate_over_seeds(
            self,
            lambda sfx: self._eval_dequantization(models, sfx),
            "dequantization",
            "pmf",
            "gap",
            KINDS,
        )

    # ------------------------------------------------------------------ claims
    def claims(self) -> list[Claim]:
        cfg, m = self.cfg, self.metrics
        D_argmax = math.ceil(math.log2(cfg.n_classes))
        summary = self._summary
        wins = [s["pmf"] for s in summary if lowest_on_mean(s, "gap", KINDS)]
        gaps = "; ".join(
            f"{s['pmf']}: "
            + " / ".join(
                f"{kind[0].upper()} {fmt_mean(s[f'{kind}_gap'], s[f'{kind}_gap_se'])}"
                for kind in KINDS
            )
            for s in summary
        )
        several = cfg.seeds > 1
        over = f" (mean +- SE over seeds {cfg.seed}-{cfg.seed + cfg.seeds - 1})" if several else ""
        per_seed = seeds_text(summary, "pmf", KINDS)
        rows = self.tables["dequantization"]
        masses = [(r["voronoi_total_mass"], r["voronoi_total_mass_se"]) for r in rows]
        mass_ok = all(t <= 1 + 3 * se for t, se in masses)
        mass_text = ", ".join(
            (f"seed {r['seed']} {r['pmf']} " if several else "")
            + f"{r['voronoi_total_mass']:.4f} +- {r['voronoi_total_mass_se']:.4f}"
            for r in rows
        )
        first = " (first seed)" if several else ""
        return [
            Claim(
                id="learned-boundaries-help",
                statement="Voronoi dequantization reaches a cross-entropy closer to the exact "
                f"entropy than argmax (D = {D_argmax}) and uniform dequantization at equal "
                f"flow and budget, with D = {cfg.dim} per variable.",
                measured=f"Voronoi best on {len(wins)}/{len(cfg.pmfs)} PMFs (gap to entropy, "
                f"bits/var{over}: {gaps})" + (f"; per seed: {per_seed}" if per_seed else ""),
                threshold="Voronoi's gap smallest on every PMF"
                + (" (by the mean over the seeds)" if several else ""),
                holds=len(wins) == len(cfg.pmfs),
                note=f"{q_law(cfg)}; K = {cfg.n_classes}, {cfg.steps} steps of batch "
                f"{cfg.batch}, IWAE with "
                f"k = {cfg.iwae_k} over all K^2 classes weighted by the exact PMF; gap = "
                "cross-entropy - entropy (>= 0, lower is better). Anchors moved"
                f"{first} (mean / max "
                "vs the initial nearest-neighbour distance; box half-width from 3): "
                + "; ".join(
                    f"{p}: {m[f'{p}/anchor_shift_mean']:.2f} / {m[f'{p}/anchor_shift_max']:.2f}"
                    f" vs {m[f'{p}/anchor_nn_dist_init']:.2f}; {m[f'{p}/box_half_width']:.2f}"
                    for p in cfg.pmfs
                ),
            ),
            Claim(
                id="exact-likelihood",
                statement="The dequantized model's likelihood is a proper bound: "
                "sum_x P_hat(x) <= 1 (P_hat(x) = E_q[p / q]).",
                measured=f"sum_x P_hat(x) (Voronoi): {mass_text}",
                threshold="sum <= 1 + 3 SE" + (" for every seed" if several else ""),
                holds=bool(mass_ok),
                note=f"{q_law(cfg)}; estimated with iwae_k samples per class; p lives on "
                "the tessellation's box, so the exact sum is 1 and a shortfall is the weights' "
                "heavy tail (a normal q vanishes at the faces faster than p; a t-q with "
                "df <= 1 keeps p / q bounded there).",
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

    def _draw_cells(self, ax: Any, tess: Any, group: int) -> None:
        a = tess.anchors.detach().cpu()[group]
        lo, hi = tess.lower.detach().cpu()[group], tess.upper.detach().cpu()[group]
        if a.shape[-1] == 2:
            draw_cells(ax, lambda y: nearest_anchor(y, a), lo, hi, a.numpy())


EXPERIMENT = VoronoiDiscrete2d

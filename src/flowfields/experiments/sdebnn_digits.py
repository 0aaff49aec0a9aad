"""SDE-BNN classification of scikit-learn's 8x8 digits, calibration against three baselines.

Xu, Chen, Li, Duvenaud, "Infinitely Deep Bayesian Neural Networks with Stochastic
Differential Equations" (arXiv:2102.06559), classification with calibration (their MNIST /
CIFAR-10 tables, here on the 1,797 8x8 digits that ship with scikit-learn, pixels / 16,
a fixed 80/20 split). Trained through :func:`flowfields.engine.fit`, each with the same
steps, batch and learning-rate schedule:

- ``sdebnn``: :class:`~flowfields.sdebnn.SDEBNN` (encoder 64 -> H, continuous-depth block
  with diffusing weights, readout H -> 10), negative ELBO;
- ``ode``: the same network with sigma = 0 (:class:`~flowfields.sdebnn.ODENet`), maximum
  likelihood;
- ``mfvi``: a mean-field variational MLP 64 -> H -> K -> H -> 10
  (:class:`~flowfields.sdebnn.MeanFieldMLP`), negative ELBO;
- ``ensemble``: five ODE nets from different initialisations
  (:class:`~flowfields.sdebnn.DeepEnsemble`).

Predictions are Bayesian model averages of softmax probabilities
(:func:`~flowfields.sdebnn.bayes_model_average`); calibration is the 15-bin ECE on
probabilities (:func:`flowfields.data.expected_calibration_error`). Models saved: all four
(``flowfields.load(run_dir)`` returns ``sdebnn``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_positive_ints
from flowfields.experiments._sdebnn_train import elbo_step, train_state
from flowfields.experiments.base import Experiment
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "MODELS", "NAME", "PAPER", "Config", "SDEBNNDigits", "digits_split"]

NAME = "sdebnn-digits"
PAPER = (
    "Infinitely Deep Bayesian Neural Networks with Stochastic Differential Equations "
    "(Xu et al., arXiv:2102.06559)"
)
#: The four models, in report order.
MODELS = ("sdebnn", "ode", "mfvi", "ensemble")
_LABEL = {
    "sdebnn": "SDE-BNN",
    "ode": "ODE net (sigma = 0)",
    "mfvi": "mean-field VI MLP",
    "ensemble": "deep ensemble (5 ODE nets)",
}


def digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, ...]:
    """scikit-learn's digits as (x_train, x_test, y_train, y_test): x (N, 64) in [0, 1]."""
    from flowfields.data import load_digits, split_train_test

    x, y = load_digits(return_labels=True)
    x = x.reshape(-1, 64).float() / 16.0
    return split_train_test(x, y, test_fraction=test_fraction, seed=seed)


@dataclass
class Config:
    """Settings of ``sdebnn-digits``.

    Attributes:
        width, hidden, drift_hidden, sigma, solver_steps: the SDE-BNN and ODE nets (H, K).
        steps, batch_size, lr, n_samples, kl_weight: training, the same for every model
            (``mfvi_lr`` for the mean-field MLP, whose variances need a larger step).
        ensemble_size: members of the deep ensemble.
        eval_samples: weight samples averaged at test time (SDE-BNN, MFVI).
        bins: ECE bins. test_fraction, split_seed: the fixed split.
        checkpoint_every, seed, device: engine and CLI settings.
    """

    width: int = 32
    hidden: int = 32
    drift_hidden: tuple[int, ...] = (32,)
    sigma: float = 0.1
    solver_steps: int = 20
    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-3
    mfvi_lr: float = 1e-2
    n_samples: int = 2
    kl_weight: float = 1.0
    ensemble_size: int = 5
    eval_samples: int = 32
    bins: int = 15
    test_fraction: float = 0.2
    split_seed: int = 0
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """150 steps of batch 128 (about 13 epochs), 10 Euler steps: about 25 s of CPU."""
        return cls(steps=150, solver_steps=10, eval_samples=16)

    @classmethod
    def full(cls) -> Config:
        """3000 steps (about 270 epochs), 20 Euler steps: 903 s of CPU measured (one thread; the
        ensemble 565 s, the SDE-BNN 201 s), 76 min wall on the shared 2-core machine."""
        return cls()


class SDEBNNDigits(Experiment, config=Config):
    """SDE-BNN vs ODE net, mean-field VI and a deep ensemble on 8x8 digits: accuracy and ECE.

    Reproduces the calibrated classification of Xu et al. (arXiv:2102.06559) at small scale;
    see the module docstring.
    """

    NAME, PAPER = NAME, PAPER
    VARIANTS = MODELS

    def check_config(self) -> None:
        cfg = self.cfg
        check_positive_ints(
            cfg, "steps", "batch_size", "n_samples", "ensemble_size", "eval_samples", "bins"
        )
        for variant in MODELS:
            self.build_model(cfg, variant)

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.sdebnn import SDEBNN, DeepEnsemble, MeanFieldMLP, ODENet

        check(variant in MODELS, "variant", variant, f"one of {MODELS}")
        size: dict[str, Any] = dict(
            width=cfg.width,
            hidden=cfg.hidden,
            drift_hidden=cfg.drift_hidden,
            steps=cfg.solver_steps,
            task="classification",
        )
        if variant == "sdebnn":
            return SDEBNN(64, 10, sigma=cfg.sigma, **size)
        if variant == "ode":
            return ODENet(64, 10, **size)
        if variant == "mfvi":
            return MeanFieldMLP(64, 10, widths=(cfg.width, cfg.hidden, cfg.width))
        return DeepEnsemble([ODENet(64, 10, **size) for _ in range(cfg.ensemble_size)])

    def train(self) -> dict[str, nn.Module]:
        cfg = self.cfg
        self.split = [t.to(self.device) for t in digits_split(cfg.test_fraction, cfg.split_seed)]
        self.cpu_s: dict[str, float] = {}
        models: dict[str, nn.Module] = {}
        for k, variant in enumerate(("sdebnn", "ode", "mfvi")):
            self.reseed(k)
            models[variant] = self._train_one(variant, self.build_model(cfg, variant))
        ensemble: Any = self.build_model(cfg, "ensemble")
        for j, member in enumerate(ensemble.members):
            self.reseed(100 + j)
            member.load_state_dict(self.build_model(cfg, "ode").state_dict())  # fresh init
            self._train_one(f"ensemble{j}", member, label="ode")
        self.cpu_s["ensemble"] = sum(
            self.cpu_s[f"ensemble{j}"] for j in range(len(ensemble.members))
        )
        models["ensemble"] = ensemble.eval()
        return models

    def _train_one(self, name: str, model: nn.Module, label: str | None = None) -> nn.Module:
        cfg = self.cfg
        x_train, _, y_train, _ = self.split
        kind = label or name
        step = elbo_step(
            x_train,
            y_train,
            task="classification",
            batch_size=cfg.batch_size,
            n_samples=1 if kind == "ode" else cfg.n_samples,
            kl_weight=cfg.kl_weight,
        )
        lr = cfg.mfvi_lr if kind == "mfvi" else cfg.lr
        state = train_state(model.to(self.device), lr, cfg.steps)
        res = self.fit(name, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every)
        self.cpu_s[name] = res.cpu_s  # all segments of a resumed run
        return model.eval()

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        from flowfields.data import expected_calibration_error
        from flowfields.sdebnn import bayes_model_average

        cfg, m = self.cfg, self.metrics
        _, x_test, _, y_test = self.split
        self.calibration: dict[str, Any] = {}
        rows = []
        for variant, model in models.items():
            gen = torch.Generator().manual_seed(cfg.seed + 7)
            with torch.no_grad():
                out = model(x_test, cfg.eval_samples, generator=gen).out
            probs = bayes_model_average(out.double()).cpu()
            cal = expected_calibration_error(probs, y_test.cpu(), bins=cfg.bins)
            self.calibration[variant] = cal
            p_true = probs[torch.arange(len(y_test)), y_test.cpu()]
            row = {
                "model": _LABEL[variant],
                "accuracy": float((probs.argmax(-1) == y_test.cpu()).double().mean()),
                "ece": float(cal.ece),
                "nll": float(-p_true.clamp_min(1e-12).log().mean()),
                "train_cpu_s": self.cpu_s[variant],
            }
            rows.append(row)
            for key, value in row.items():
                if key != "model":
                    m[f"{variant}/{key}"] = value
        self.tables["models"] = rows

    def claims(self) -> list[Claim]:
        m = self.metrics
        others = ", ".join(f"{v} {m[f'{v}/ece']:.4f}" for v in ("ode", "mfvi", "ensemble"))
        accs = ", ".join(f"{v} {m[f'{v}/accuracy']:.4f}" for v in ("ode", "mfvi", "ensemble"))
        return [
            Claim(
                id="digits-accuracy",
                statement="The SDE-BNN classifies the held-out digits with accuracy >= 0.90.",
                measured=f"{m['sdebnn/accuracy']:.4f} (baselines: {accs})",
                threshold="test accuracy >= 0.90",
                holds=bool(m["sdebnn/accuracy"] >= 0.90),
                note=f"{len(self.split[1])} test digits; Bayesian model average of "
                f"{self.cfg.eval_samples} weight paths.",
            ),
            Claim(
                id="digits-calibration",
                statement="The SDE-BNN is calibrated no worse than the same network with "
                "sigma = 0 (the ODE net): ECE(SDE-BNN) <= ECE(ODE net).",
                measured=f"SDE-BNN {m['sdebnn/ece']:.4f} vs {others}",
                threshold="ECE(SDE-BNN) <= ECE(ODE net), 15 equal-width bins",
                holds=bool(m["sdebnn/ece"] <= m["ode/ece"]),
                note="ECE on probabilities (never logits); the ECE of a few hundred test points "
                "moves by about 0.01 between seeds, so small gaps are within noise.",
            ),
        ]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        fig, axes = plt.subplots(1, len(self.calibration), figsize=(3 * len(self.calibration), 3.2))
        for ax, (variant, cal) in zip(axes, self.calibration.items(), strict=True):
            centers = 0.5 * (cal.edges[1:] + cal.edges[:-1]).numpy()
            full = (cal.count > 0).numpy()
            width = float(cal.edges[1] - cal.edges[0])
            ax.bar(
                centers[full],
                cal.accuracy.numpy()[full],
                width=width,
                color="C0",
                edgecolor="k",
                lw=0.5,
                label="accuracy",
            )
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            ax.set_title(f"{_LABEL[variant]}\nECE {float(cal.ece):.3f}", fontsize=8)
            ax.set_xlabel("confidence")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        axes[0].set_ylabel("accuracy")
        fig.tight_layout()
        self.save_figure(fig, "reliability.png")


EXPERIMENT = SDEBNNDigits

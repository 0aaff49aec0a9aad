"""voronoi-categorical: Voronoi vs argmax vs uniform dequantization on categorical data sets.

Chen, Amos, Nickel, "Semi-Discrete Normalizing Flows through Differentiable Tessellation"
(arXiv:2203.06832), section 4 (their categorical benchmarks), on data shipped in code or
packages:

- ``titanic``: the Titanic table (Class x Sex x Age x Survived, 2201 people;
  :func:`~flowfields.voronoi.titanic_pmf`), 4 variables with K = 4 classes (the binary ones use
  two of them: a dequantizer with a common K). Training draws fresh batches from the exact
  PMF; the evaluation is the exact cross-entropy ``-sum_x P(x) IWAE_k(x)`` over the 4^4
  classes, against the entropy.
- ``digits``: the 8x8 digits of scikit-learn as 64 variables with 17 levels
  (:func:`~flowfields.voronoi.digits_levels`), a seeded train/test split; the evaluation is the
  test set's ``-IWAE_k`` in bits per variable (no exact entropy).

The three dequantizers share the flow (zuko NSF), the conditional MLP (Voronoi, argmax), the
steps, batch and learning rate; Voronoi embeds each variable in D = ``dim`` dimensions, argmax
in ``ceil(log2 K)`` (5 for the digits), uniform in 1. Claim "learned-boundaries-help": Voronoi
reaches the lowest bits per variable on every data set. Models saved: ``<data>-<kind>``.

``seeds = n`` repeats the run for the seeds ``seed, ..., seed + n - 1`` (each exactly the
single-seed run at that seed, the digits' split included; models ``<data>-<kind>-seed<N>``
after the first); the claim is then decided on the mean bits per variable over the seeds,
with the standard errors and per-seed wins in its text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

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
from flowfields.experiments.voronoi_discrete2d import (
    KINDS,
    check_q_base,
    class_weights,
    dequantized_flow,
    q_law,
    train_dequantized,
)
from flowfields.report.result import Claim

__all__ = ["DATASETS", "EXPERIMENT", "NAME", "PAPER", "Config", "VoronoiCategorical"]

NAME = "voronoi-categorical"
PAPER = (
    "Semi-Discrete Normalizing Flows through Differentiable Tessellation "
    "(Chen, Amos, Nickel, arXiv:2203.06832)"
)
#: The data sets and their (N variables, K classes).
DATASETS = {"titanic": (4, 4), "digits": (64, 17)}


@dataclass
class Config:
    """Settings of ``voronoi-categorical``.

    Attributes:
        datasets: names from :data:`DATASETS`.
        dim: the Voronoi embedding dimension per variable.
        q_base, q_df, q_learn_df: the law of the Voronoi q's latent (as in
            ``voronoi-discrete2d``: ``"student"``, the default, nu learned from 1, or the
            paper's ``"normal"``).
        transforms, hidden, cond_hidden: the NSF ``p(z)`` and the conditional MLP of q.
        steps, batch, lr: training of every model (Adam, cosine decay).
        iwae_k: importance samples per evaluated row; n_test: the digits' test rows.
        seeds: how many seeds (``seed``, ``seed + 1``, ...) to train and evaluate; the claim
            uses the means over them (1 in both presets).
        checkpoint_every, seed, device: engine and CLI settings.
    """

    datasets: tuple[str, ...] = ("titanic", "digits")
    dim: int = 2
    q_base: str = "student"
    q_df: float = 1.0
    q_learn_df: bool = True
    transforms: int = 4
    hidden: tuple[int, ...] = (64, 64)
    cond_hidden: int = 64
    steps: int = 1000
    batch: int = 128
    lr: float = 3e-3
    iwae_k: int = 64
    n_test: int = 297
    seeds: int = 1
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """Both data sets, 120 steps of batch 64 per model, NSF 2 x (32, 32)."""
        return cls(
            transforms=2,
            hidden=(32, 32),
            cond_hidden=32,
            steps=120,
            batch=64,
            lr=5e-3,
            iwae_k=16,
        )

    @classmethod
    def full(cls) -> Config:
        """Both data sets, 1000 steps of batch 128 per model, NSF 4 x (64, 64) (sized for a
        shared CPU: the digits' 320-dimensional argmax flow dominates)."""
        return cls()


class VoronoiCategorical(Experiment, config=Config):
    """Voronoi vs argmax vs uniform dequantization on the Titanic table and the digits.

    Reproduces the categorical experiments of Chen, Amos, Nickel (arXiv:2203.06832) on
    :mod:`flowfields.voronoi`; see the module docstring.
    """

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("titanic-voronoi",)

    def check_config(self) -> None:
        cfg = self.cfg
        check(len(cfg.datasets) >= 1, "datasets", cfg.datasets, "at least one data set")
        for d in cfg.datasets:
            check(d in DATASETS, "datasets", d, f"names from {tuple(DATASETS)}")
        check_positive_ints(cfg, "dim", "transforms", "steps", "batch", "iwae_k", "n_test", "seeds")
        check(cfg.n_test < 1797, "n_test", cfg.n_test, "fewer than the 1797 digits")
        check_q_base(cfg)

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        data, _, kind = strip_seed(variant).rpartition("-")
        check(data in DATASETS and kind in KINDS, "variant", variant, "'<data>-<kind>[-seed<N>]'")
        n_vars, n_classes = DATASETS[data]
        return dequantized_flow(kind, n_vars, n_classes, cfg)

    # ------------------------------------------------------------------ data
    def _digits(self) -> tuple[Tensor, Tensor]:
        from flowfields.voronoi import digits_levels

        x = digits_levels()
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.cfg.seed))
        n = self.cfg.n_test
        return x[perm[n:]], x[perm[:n]]

    def _sampler(self, data: str) -> Any:
        from flowfields.voronoi import sample_table, titanic_pmf

        if data == "titanic":
            pmf = titanic_pmf()
            return lambda n: sample_table(pmf, n)
        train, _ = self._digits()
        return lambda n: train[torch.randint(0, train.shape[0], (n,))]

    def train(self) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {}
        for k in range(self.cfg.seeds):
            with seed_scope(self, k) as sfx:
                for i, data in enumerate(self.cfg.datasets):
                    sample = self._sampler(data)
                    for j, kind in enumerate(KINDS):
                        variant = f"{data}-{kind}"
                        self.reseed(10 * i + j)
                        model = self.build_model(self.cfg, variant).to(self.device)
                        models[variant + sfx] = train_dequantized(
                            self, variant, model, sample, suffix=sfx
                        )
        return models

    # ------------------------------------------------------------------ evaluation
    def _bits(self, model: Any, data: str) -> float:
        """Bits per variable: the exact cross-entropy (titanic) or the test -IWAE (digits)."""
        from flowfields.voronoi import titanic_pmf

        cfg = self.cfg
        n_vars = DATASETS[data][0]
        if data == "titanic":
            pmf = titanic_pmf().reshape(-1)
            shape = titanic_pmf().shape
            xs = torch.stack(torch.unravel_index(torch.arange(pmf.numel()), shape), 1)
            keep = pmf > 0  # zero-probability classes carry no weight
            xs, pmf = xs[keep], pmf[keep]
        else:
            xs = self._digits()[1]
            pmf = torch.full((xs.shape[0],), 1.0 / xs.shape[0], dtype=torch.float64)
        w = class_weights(model, xs, cfg.iwae_k, seed=cfg.seed + 7, device=self.device)
        iwae = torch.logsumexp(w, 0) - math.log(cfg.iwae_k)
        return float(-(pmf * iwae).sum()) / (n_vars * math.log(2))

    def _evaluate_seed(self, models: dict[str, Any], suffix: str) -> list[dict[str, Any]]:
        """One seed's rows (the models ``<data>-<kind><suffix>``, ``self.cfg`` that seed's)."""
        from flowfields.voronoi import entropy_bits, titanic_pmf

        m, rows = self.metrics, []
        for data in self.cfg.datasets:
            row: dict[str, Any] = {"seed": self.cfg.seed, "data": data}
            if data == "titanic":
                row["entropy_bits_per_var"] = entropy_bits(titanic_pmf()) / DATASETS[data][0]
                m["titanic/entropy_bits_per_var"] = row["entropy_bits_per_var"]
            for kind in KINDS:
                bits = self._bits(models[f"{data}-{kind}{suffix}"], data)
                row[f"{kind}_bits_per_var"] = m[f"{data}/{kind}_bits_per_var"] = bits
            rows.append(row)
        return rows

    def evaluate(self, models: dict[str, Any]) -> None:
        self._summary = evaluate_over_seeds(
            self,
            lambda sfx: self._evaluate_seed(models, sfx),
            "categorical",
            "data",
            "bits_per_var",
            KINDS,
        )

    # ------------------------------------------------------------------ claims
    def claims(self) -> list[Claim]:
        cfg, summary = self.cfg, self._summary
        entropy = {
            r["data"]: r["entropy_bits_per_var"]
            for r in self.tables["categorical"]
            if "entropy_bits_per_var" in r
        }
        measured = "; ".join(
            f"{s['data']}: "
            + " / ".join(
                f"{kind[0].upper()} "
                + fmt_mean(s[f"{kind}_bits_per_var"], s[f"{kind}_bits_per_var_se"])
                for kind in KINDS
            )
            + (f" (entropy {entropy[s['data']]:.3f})" if s["data"] in entropy else "")
            for s in summary
        )
        several = cfg.seeds > 1
        if several:
            over = f"mean +- SE over seeds {cfg.seed}-{cfg.seed + cfg.seeds - 1}"
            measured = f"{measured} ({over}); per seed: {seeds_text(summary, 'data', KINDS)}"
        return [
            Claim(
                id="learned-boundaries-help",
                statement="On categorical data, Voronoi dequantization reaches fewer bits per "
                "variable than argmax and uniform dequantization at equal flow and budget.",
                measured=f"bits/var: {measured}",
                threshold="Voronoi lowest on every data set"
                + (" (by the mean over the seeds)" if several else ""),
                holds=all(lowest_on_mean(s, "bits_per_var", KINDS) for s in summary),
                note=f"{q_law(cfg)}; Voronoi D = {cfg.dim}, argmax D = ceil(log2 K); "
                f"{cfg.steps} steps of "
                f"batch {cfg.batch}; IWAE with k = {cfg.iwae_k}; titanic: exact cross-entropy "
                f"over its classes, digits: {cfg.n_test} held-out images.",
            )
        ]

    # ------------------------------------------------------------------ figures
    def figures(self, models: dict[str, Any]) -> None:
        plt = self.plt
        rows = self._summary  # one row per data set: the means over the seeds
        entropy = {
            r["data"]: r["entropy_bits_per_var"]
            for r in self.tables["categorical"]
            if "entropy_bits_per_var" in r
        }
        several = self.cfg.seeds > 1
        fig, ax = plt.subplots(figsize=(5, 3.2))
        width = 0.25
        for j, kind in enumerate(KINDS):
            vals = [r[f"{kind}_bits_per_var"] for r in rows]
            err = [r[f"{kind}_bits_per_var_se"] for r in rows] if several else None
            xs = [i + (j - 1) * width for i in range(len(rows))]
            ax.bar(xs, vals, width, yerr=err, capsize=2, label=kind)
        for i, r in enumerate(rows):
            if r["data"] in entropy:
                h = entropy[r["data"]]
                ax.plot([i - 1.5 * width, i + 1.5 * width], [h, h], "k--", lw=1)
        ax.set_xticks(range(len(rows)), [r["data"] for r in rows])
        ax.set_ylabel("bits per variable")
        ax.legend()
        title = "categorical data (dashed: exact entropy)"
        if several:
            title += f"\nmean +- SE over {self.cfg.seeds} seeds"
        ax.set_title(title)
        self.save_figure(fig, "categorical.png")


EXPERIMENT = VoronoiCategorical

"""MLE-GFN: maximum-likelihood training of a GFlowNet from data, with and without TBC.

Zhang, Chen, Malkin, Bengio, "Unifying Generative Models with GFlowNets and Beyond"
(arXiv:2209.02606), data mode. A discrete hierarchical VAE
(:class:`~flowfields.gflownet.LayeredDAG`, ``s0 -> z1 -> z2 -> x``; ``P_F`` the decoder, a
learned ``P_B`` the encoder, tanh MLPs) is trained on ``n_data`` samples of a known
distribution ``p*`` over 16 objects by MLE-GFN (:func:`~flowfields.gflownet.mle_gfn_loss`:
``-ELBO`` over ``K`` backward trajectories per datum, with a leave-one-out score-function
gradient for ``P_B``), once with the trajectory-balance-consistency (TBC) penalty
(``tbc_weight`` times the variance over the ``K`` of ``log P_F(tau) - log P_B(tau|x)``) and
once without it: the same initial weights, the same minibatches, the same number of steps and
of backward trajectories (equal budget), for each of ``n_seeds`` seeds (the seed changes the
initial weights and the minibatch order; the data set is fixed).

Measured exactly by enumeration (float64): the test negative log-likelihood in expectation,
``-sum_x p*(x) log P_T(x)`` (the cross-entropy to ``p*``; its floor is the entropy of ``p*``),
the mean ELBO gap ``sum_x p*(x) KL(P_B(tau|x) || P_F(tau|x))``, and, as a Monte Carlo check,
the NLL of ``n_test`` fresh held-out samples of ``p*``. The claim compares the two variants
by the paired difference over seeds (TBC minus ELBO-only), mean and standard error.

Models saved: both trained policies of every seed, ``tbc_s0`` (the default), ``elbo_s0``, ...
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.engine import TrainState
from flowfields.errors import check
from flowfields.experiments._gflownet_train import target_logits
from flowfields.experiments.base import Experiment
from flowfields.gflownet.policy import Policy
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "GFlowNetMLE", "paired"]

NAME = "gflownet-mle"
PAPER = "Unifying Generative Models with GFlowNets and Beyond (Zhang et al., arXiv:2209.02606)"
VARIANTS = ("tbc", "elbo")


@dataclass
class Config:
    """Settings of ``gflownet-mle``.

    Attributes:
        sizes: the HVAE's layer sizes ``(K_z1, K_z2, K_x)``; n_data: training samples of p*;
            n_test: held-out samples for the Monte Carlo test NLL.
        target_scale: p* = softmax(target_scale * N(0, 1) logits), seeded.
        hidden, depth: MLPs of P_F and P_B (tanh).
        steps, batch, k, lr: MLE-GFN (steps of ``batch`` data x ``k`` backward trajectories).
        tbc_weight: the TBC penalty's weight in the ``tbc`` variant (0 in ``elbo``).
        n_seeds: seeds (pairs of runs) for the comparison.
        checkpoint_every, seed, device: engine and CLI settings.
    """

    sizes: tuple[int, ...] = (4, 4, 16)
    n_data: int = 512
    n_test: int = 4096
    target_scale: float = 1.5
    hidden: int = 64
    depth: int = 2
    steps: int = 1500
    batch: int = 64
    k: int = 4
    lr: float = 3e-3
    tbc_weight: float = 1.0
    n_seeds: int = 5
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """300 steps per variant, 3 seeds: about 40 s of user CPU on one thread (measured)."""
        return cls(steps=300, n_seeds=3)

    @classmethod
    def full(cls) -> Config:
        """1,500 steps per variant, 5 seeds: about 3 min of CPU."""
        return cls()


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error of the paired differences ``a - b`` (SE 0 for one pair)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return statistics.fmean(d), se


class GFlowNetMLE(Experiment, config=Config):
    """MLE-GFN with vs without the TBC penalty, at equal budget, measured exactly."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("tbc_s0", "elbo_s0")

    def check_config(self) -> None:
        cfg = self.cfg
        names = ("n_data", "n_test", "hidden", "depth", "steps", "batch", "k", "n_seeds")
        for name in names:
            value = getattr(cfg, name)
            check(isinstance(value, int) and value >= 1, name, value, "a positive integer")
        check(cfg.k >= 2, "k", cfg.k, "an integer >= 2 (TBC needs several trajectories)")
        check(cfg.lr > 0, "lr", cfg.lr, "a float > 0")
        check(cfg.tbc_weight > 0, "tbc_weight", cfg.tbc_weight, "a float > 0")
        check(cfg.target_scale >= 0, "target_scale", cfg.target_scale, "a float >= 0")
        self._env(cfg)

    @staticmethod
    def _env(cfg: Config) -> Any:
        from flowfields.gflownet import LayeredDAG

        logits = target_logits(int(cfg.sizes[-1]), cfg.target_scale, cfg.seed + 101)
        return LayeredDAG(tuple(int(s) for s in cfg.sizes), logits.log_softmax(0))

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.gflownet import MLPPolicy

        return MLPPolicy(cls._env(cfg), cfg.hidden, cfg.depth, activation="tanh")

    def _samples(self, n: int, offset: int) -> Tensor:
        """``n`` objects drawn from ``p*`` (seeded), as terminal states ``(n, 2)``."""
        env = self.env
        g = torch.Generator().manual_seed(self.cfg.seed + offset)
        idx = torch.multinomial(env.table.exp(), n, replacement=True, generator=g)
        return torch.stack([torch.full_like(idx, env.layers), idx], 1).to(self.device)

    def train(self) -> dict[str, nn.Module]:
        cfg = self.cfg
        self.env = self._env(cfg)
        self.data = self._samples(cfg.n_data, 7)
        models: dict[str, nn.Module] = {}
        self.elbo_curves: dict[str, list[float]] = {}
        for s in range(cfg.n_seeds):
            for variant in VARIANTS:
                name = f"{variant}_s{s}"
                models[name] = self._train_one(name, cfg.tbc_weight if variant == "tbc" else 0.0, s)
        return models

    def _train_one(self, name: str, weight: float, s: int) -> nn.Module:
        from flowfields.gflownet import data_bounds, mle_gfn_loss

        cfg = self.cfg
        self.reseed(1 + 1000 * s)  # both variants of a seed: the same weights and batches
        policy = self.build_model(cfg, name).to(self.device)
        opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        state = TrainState({"policy": policy}, {"policy": opt})

        def step(state: TrainState, _: int) -> dict[str, Tensor]:
            pol = state["policy"]
            assert isinstance(pol, Policy)
            rows = torch.randint(0, self.data.shape[0], (cfg.batch,), device=self.device)
            bounds = data_bounds(pol.env, pol, self.data[rows], cfg.k)
            loss = state.update("policy", mle_gfn_loss(bounds, tbc_weight=weight))
            return {"loss": loss, "elbo": bounds.elbo.mean().detach()}

        res = self.fit(name, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every)
        self.metrics[f"{name}/train_cpu_s"] = res.cpu_s  # all segments of a resumed run
        self.elbo_curves[name] = list(state.history["elbo"])
        return policy.eval()

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        from flowfields.gflownet import all_trajectories, exact_data_bounds

        m, env, cfg = self.metrics, self.env, self.cfg
        p_star = env.table.exp()
        last = env.all_states()[0][:, 0] == env.layers
        traj = all_trajectories(env)
        test = self._samples(cfg.n_test, 9)[:, 1].cpu()
        self.exact: dict[str, Tensor] = {}
        rows = []
        for name, policy in models.items():
            assert isinstance(policy, Policy)
            log_pt, elbo, kl = (t[last] for t in exact_data_bounds(env, policy.double(), traj))
            policy.float()
            self.exact[name] = log_pt
            row = {
                "variant": name,
                "cross_entropy": float(-(p_star * log_pt).sum()),
                "test_nll": float(-log_pt[test].mean()),
                "mean_elbo_gap": float((p_star * kl).sum()),
                "identity_max_err": float((log_pt - elbo - kl).abs().max()),
                "train_cpu_s": m[f"{name}/train_cpu_s"],
            }
            rows.append(row)
            for key, value in row.items():
                if key != "variant":
                    m[f"{name}/{key}"] = value
        self.tables["mle_gfn"] = rows
        m["entropy_p_star"] = float(-(p_star * p_star.log()).sum())
        emp = torch.bincount(self.data[:, 1].cpu(), minlength=p_star.numel()).double()
        emp = emp / emp.sum()
        m["train_set_cross_entropy"] = float(-(p_star * emp.clamp(min=1e-300).log()).sum())
        for key in ("cross_entropy", "test_nll", "mean_elbo_gap"):
            a = [m[f"tbc_s{s}/{key}"] for s in range(cfg.n_seeds)]
            b = [m[f"elbo_s{s}/{key}"] for s in range(cfg.n_seeds)]
            m[f"tbc/{key}"], m[f"elbo/{key}"] = statistics.fmean(a), statistics.fmean(b)
            m[f"diff/{key}"], m[f"diff/{key}_se"] = paired(a, b)
            m[f"diff/{key}_wins"] = sum(x < y for x, y in zip(a, b, strict=True))
        m["identity_max_err"] = max(r["identity_max_err"] for r in rows)

    def _better(self, key: str) -> bool:
        """TBC lower than ELBO-only by more than 2 paired standard errors (and on average)."""
        m = self.metrics
        d, se = m[f"diff/{key}"], m[f"diff/{key}_se"]
        return bool(d < 0 and d + 2 * se < 0)

    def _measured(self, key: str, digits: int = 4) -> str:
        m, n = self.metrics, self.cfg.n_seeds
        return (
            f"{m[f'tbc/{key}']:.{digits}f} (TBC) vs {m[f'elbo/{key}']:.{digits}f} (ELBO only), "
            f"paired difference {m[f'diff/{key}']:+.{digits}f} +- {m[f'diff/{key}_se']:.{digits}f}"
            f" SE, TBC lower in {m[f'diff/{key}_wins']} of {n} seeds"
        )

    def claims(self) -> list[Claim]:
        m, cfg = self.metrics, self.cfg
        budget = (
            f"{cfg.steps} steps of {cfg.batch} data x K = {cfg.k} backward trajectories for "
            f"each variant, the same initial weights and batches per seed, {cfg.n_seeds} seeds; "
            f"{cfg.n_data} training samples; tbc_weight {cfg.tbc_weight}."
        )
        ll, gap = self._better("cross_entropy"), self._better("mean_elbo_gap")
        return [
            Claim(
                id="tbc-better-test-ll",
                statement="MLE-GFN with the TBC penalty reaches a better test log-likelihood "
                "than the ELBO alone at equal budget.",
                measured="expected test NLL -sum p* log P_T: " + self._measured("cross_entropy"),
                threshold="TBC lower, by more than 2 paired SE",
                holds=ll,
                note=f"{budget} Exact under p* (entropy {m['entropy_p_star']:.4f}); the "
                f"held-out NLL of {cfg.n_test} fresh samples: " + self._measured("test_nll"),
            ),
            Claim(
                id="tbc-tighter-elbo-gap",
                statement="MLE-GFN with the TBC penalty reaches a tighter ELBO gap than the "
                "ELBO alone at equal budget.",
                measured="mean gap sum p* KL(P_B(tau|x) || P_F(tau|x)): "
                + self._measured("mean_elbo_gap"),
                threshold="TBC lower, by more than 2 paired SE",
                holds=gap,
                note=budget + " Exact by enumerating every trajectory.",
            ),
            Claim(
                id="tbc-helps-mle",
                statement="TBC helps maximum-likelihood training: a better test log-likelihood "
                "or a tighter ELBO gap than the ELBO alone at equal budget (the issue's "
                "claim 4).",
                measured=f"test log-likelihood better: {ll}; ELBO gap tighter: {gap}",
                threshold="either of the two claims above",
                holds=bool(ll or gap),
            ),
        ]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt, m, n = self.plt, self.metrics, self.cfg.n_seeds
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
        p_star = self.env.table.exp()
        order = torch.argsort(p_star, descending=True)
        ax[0].bar(range(len(order)), p_star[order].numpy(), color="0.7", label="p*")
        for k, name in enumerate(("tbc_s0", "elbo_s0")):
            p = self.exact[name].exp()[order].numpy()
            ax[0].plot(p, "o-", ms=3, color=f"C{k}", label=name)
        ax[0].set_xlabel("object (by p*)")
        ax[0].set_ylabel("probability")
        ax[0].legend(fontsize=7)
        ax[0].set_title("learned P_T vs data distribution", fontsize=9)
        for name, curve in self.elbo_curves.items():
            color = "C0" if name.startswith("tbc") else "C1"
            label = name.split("_")[0] if name.endswith("_s0") else None
            ax[1].plot(curve, color=color, lw=0.6, alpha=0.7, label=label)
        ax[1].set_xlabel("logged step")
        ax[1].set_ylabel("batch ELBO")
        ax[1].legend(fontsize=7)
        values = []
        for k, (key, title) in enumerate(
            (("cross_entropy", "expected test NLL"), ("mean_elbo_gap", "mean ELBO gap"))
        ):
            xs = [m[f"elbo_s{s}/{key}"] for s in range(n)]
            ys = [m[f"tbc_s{s}/{key}"] for s in range(n)]
            values += xs + ys
            ax[2].scatter(xs, ys, s=14, color=f"C{k + 2}", label=title)
        lo, hi = 0.8 * max(min(values), 1e-8), 1.25 * max(values)
        ax[2].plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax[2].set_xscale("log")
        ax[2].set_yscale("log")
        ax[2].set_xlabel("ELBO only (per seed)")
        ax[2].set_ylabel("with TBC (same seed)")
        ax[2].legend(fontsize=7)
        ax[2].set_title("below the diagonal: TBC better", fontsize=9)
        fig.tight_layout()
        self.save_figure(fig, "mle.png")


EXPERIMENT = GFlowNetMLE

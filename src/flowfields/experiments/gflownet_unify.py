"""Generative models as GFlowNets: the unification's identities, measured, and MLE-GFN.

Zhang, Chen, Malkin, Bengio, "Unifying Generative Models with GFlowNets and Beyond"
(arXiv:2209.02606), sec. 3, on DAGs small enough to enumerate (everything exact):

1. A discrete hierarchical VAE (:class:`~flowfields.gflownet.LayeredDAG`,
   ``s0 -> z1 -> z2 -> x``; P_F the decoder, a learned P_B the encoder) trained from data by
   MLE-GFN (``-ELBO`` with a score-function gradient for P_B, plus the TBC penalty over ``K``
   backward trajectories per datum) on samples of a known distribution ``p*`` over 16 objects;
   once with the TBC penalty and once without, at equal budget and from the same weights.
   Measured exactly: the cross-entropy ``-sum_x p*(x) log P_T(x)`` (the test log-likelihood
   in expectation), the mean ELBO gap ``sum_x p*(x) KL(P_B(tau|x) || P_F(tau|x))``, and the
   identity ``log P_T(x) - ELBO(x) = KL`` for every ``x`` (float64, by enumeration).
2. The importance-weighted bound with ``K`` backward trajectories increases with ``K``
   toward ``log P_T(x)`` (Monte Carlo, seeded; a random tabular HVAE, whose ELBO is loose).
3. An autoregressive model is a GFlowNet on a tree (:class:`~flowfields.gflownet.BitSequences`,
   ``P_B == 1``): ELBO = log-likelihood and TBC = 0 for every string.
4. A diffusion model is a GFlowNet with a fixed ``P_B``
   (:class:`~flowfields.gflownet.DiffusionGFlowNet`: Gaussian steps, Brownian-bridge ``P_B``):
   trained by TB on the unnormalised 1-D Gaussian ``R(x) = e^c N(x; mu, s^2)`` unnormalised
   (``log Z = c + log(sqrt(2 pi) s)``) it recovers ``log Z`` and its samples pass a KS test;
   the same network trained in data mode (ELBO over bridge trajectories from samples of
   ``N(mu, s^2)``) recovers the mean and standard deviation.
5. The on-policy TB gradient's expectation (sampling not differentiated) equals the gradient
   of ``KL(P_F(tau) || R(x) P_B(tau|x) / Z)`` in the parameters of P_F, for any ``log Z``
   (HyperGrid 2-D H = 4, a random tabular policy, every trajectory enumerated).

Models saved: the two trained HVAE policies, ``tbc`` (default) and ``elbo``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.engine import TrainState
from flowfields.errors import check
from flowfields.experiments.base import Experiment
from flowfields.gflownet.diffusion import DiffusionGFlowNet
from flowfields.gflownet.policy import Policy
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "GFlowNetUnify", "target_logits"]

NAME = "gflownet-unify"
PAPER = "Unifying Generative Models with GFlowNets and Beyond (Zhang et al., arXiv:2209.02606)"


@dataclass
class Config:
    """Settings of ``gflownet-unify``.

    Attributes:
        sizes: the HVAE's layer sizes ``(K_z1, K_z2, K_x)``; n_data: training samples of p*.
        target_scale: p* = softmax(target_scale * N(0, 1) logits), seeded.
        hidden, depth: MLPs of P_F and P_B (tanh); steps, batch, k, lr, tbc_weight: MLE-GFN.
        iw_ks, iw_draws: the importance-weighted bound's K values and draws per K.
        bits: string length of the autoregressive check.
        diff_steps, diff_iters, diff_batch: the diffusion sampler (steps N, training
            iterations and batch of each mode); diff_target: ``(mu, s, c)``; diff_samples:
            draws for the KS test and the moments.
        checkpoint_every, seed, device: engine and CLI settings.
    """

    sizes: tuple[int, ...] = (4, 4, 16)
    n_data: int = 512
    target_scale: float = 1.5
    hidden: int = 64
    depth: int = 2
    steps: int = 1500
    batch: int = 64
    k: int = 4
    lr: float = 3e-3
    tbc_weight: float = 1.0
    iw_ks: tuple[int, ...] = (1, 2, 4, 8, 16, 64)
    iw_draws: int = 32768
    bits: int = 8
    diff_steps: int = 20
    diff_iters: int = 1500
    diff_batch: int = 256
    diff_target: tuple[float, float, float] = (1.0, 0.5, 2.0)
    diff_samples: int = 4000
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """400 MLE-GFN steps per variant, 8,192 draws per K, the diffusion sampler at 600
        iterations of 128 per mode: about 20 s of CPU (measured)."""
        return cls(steps=400, iw_draws=8192, bits=6, diff_iters=600, diff_batch=128)

    @classmethod
    def full(cls) -> Config:
        """1,500 steps per variant, 32,768 draws per K, 8-bit strings, the diffusion sampler at
        1,500 iterations of 256 per mode: about 1.5 min of CPU."""
        return cls()


def target_logits(n: int, scale: float, seed: int) -> Tensor:
    """The known data distribution's logits: ``scale * N(0, 1)``, seeded, float64."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, generator=g, dtype=torch.float64)


class GFlowNetUnify(Experiment, config=Config):
    """The unification identities by enumeration, and MLE-GFN with vs without TBC."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("tbc", "elbo", "diffusion_tb", "diffusion_data")

    def check_config(self) -> None:
        cfg = self.cfg
        for name in ("n_data", "hidden", "depth", "steps", "batch", "k", "iw_draws", "bits"):
            value = getattr(cfg, name)
            check(isinstance(value, int) and value >= 1, name, value, "a positive integer")
        check(cfg.k >= 2, "k", cfg.k, "an integer >= 2 (TBC needs several trajectories)")
        check(cfg.bits <= 12, "bits", cfg.bits, "an integer <= 12 (every string is enumerated)")
        check(all(int(k) >= 1 for k in cfg.iw_ks), "iw_ks", cfg.iw_ks, "positive integers")
        self._hvae()

    def _hvae(self) -> Any:
        from flowfields.gflownet import LayeredDAG

        cfg = self.cfg
        logits = target_logits(int(cfg.sizes[-1]), cfg.target_scale, cfg.seed + 101)
        return LayeredDAG(tuple(int(s) for s in cfg.sizes), logits.log_softmax(0))

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.gflownet import DiffusionGFlowNet, LayeredDAG, MLPPolicy

        if variant.startswith("diffusion"):
            return DiffusionGFlowNet(1, cfg.diff_steps, 1.0, cfg.hidden, cfg.depth)
        logits = target_logits(int(cfg.sizes[-1]), cfg.target_scale, cfg.seed + 101)
        env = LayeredDAG(tuple(int(s) for s in cfg.sizes), logits.log_softmax(0))
        return MLPPolicy(env, cfg.hidden, cfg.depth, activation="tanh")

    def train(self) -> dict[str, nn.Module]:
        from flowfields.gflownet import data_bounds, mle_gfn_loss

        cfg = self.cfg
        env = self._hvae()
        self.env = env
        g = torch.Generator().manual_seed(cfg.seed + 7)
        p_star = env.table.exp()
        idx = torch.multinomial(p_star, cfg.n_data, replacement=True, generator=g)
        self.data = torch.stack([torch.full_like(idx, env.layers), idx], 1).to(self.device)
        models: dict[str, nn.Module] = {}
        self.loss_curves: dict[str, list[float]] = {}
        for variant, weight in (("tbc", cfg.tbc_weight), ("elbo", 0.0)):
            self.reseed(1)  # the same initial weights and data order for both variants
            policy = self.build_model(cfg, variant).to(self.device)
            opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
            state = TrainState({"policy": policy}, {"policy": opt})

            def step(state: TrainState, _: int, weight: float = weight) -> dict[str, Tensor]:
                pol = state["policy"]
                assert isinstance(pol, Policy)
                rows = torch.randint(0, self.data.shape[0], (cfg.batch,), device=self.device)
                bounds = data_bounds(pol.env, pol, self.data[rows], cfg.k)
                loss = state.update("policy", mle_gfn_loss(bounds, tbc_weight=weight))
                return {"loss": loss, "elbo": bounds.elbo.mean().detach()}

            t0 = time.process_time()
            self.fit(variant, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every)
            self.metrics[f"{variant}/train_cpu_s"] = time.process_time() - t0
            self.loss_curves[variant] = list(state.history["elbo"])
            models[variant] = policy.eval()
        models.update(self._train_diffusion())
        return models

    def _diffusion_log_reward(self, x: Tensor) -> Tensor:
        mu, s, c = self.cfg.diff_target
        return c - (x[:, 0] - mu) ** 2 / (2 * s * s)

    def _train_diffusion(self) -> dict[str, nn.Module]:
        cfg = self.cfg
        mu, s, _c = cfg.diff_target
        out: dict[str, nn.Module] = {}
        for variant in ("diffusion_tb", "diffusion_data"):
            self.reseed(3)  # the same network initialisation for both modes
            model = self.build_model(cfg, variant).to(self.device)
            assert isinstance(model, DiffusionGFlowNet)
            if variant == "diffusion_tb":
                groups = [
                    {"params": list(model.net.parameters()), "lr": 1e-3},
                    {"params": [model.log_z], "lr": 0.1},
                ]
            else:
                groups = [{"params": list(model.net.parameters()), "lr": 1e-3}]
            state = TrainState({"model": model}, {"model": torch.optim.Adam(groups)})

            def step(state: TrainState, _: int, variant: str = variant) -> dict[str, Tensor]:
                m = state["model"]
                assert isinstance(m, DiffusionGFlowNet)
                if variant == "diffusion_tb":
                    xs = m.sample(cfg.diff_batch)
                    loss = m.tb_loss(xs, self._diffusion_log_reward(xs[-1]))
                else:
                    x = mu + s * torch.randn(cfg.diff_batch, 1, device=self.device)
                    loss = -m.elbo(m.sample_backward(x)).mean()
                return {"loss": state.update("model", loss)}

            t0 = time.process_time()
            self.fit(
                variant, state, step, steps=cfg.diff_iters, checkpoint_every=cfg.checkpoint_every
            )
            self.metrics[f"{variant}/train_cpu_s"] = time.process_time() - t0
            self.loss_curves[variant] = list(state.history["loss"])
            out[variant] = model.eval()
        return out

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        from flowfields.gflownet import all_trajectories, exact_data_bounds

        m, env = self.metrics, self.env
        p_star = env.table.exp()
        last = env.all_states()[0][:, 0] == env.layers
        traj = all_trajectories(env)
        self.exact: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        rows = []
        for variant, policy in models.items():
            if not isinstance(policy, Policy):
                continue
            pol64 = policy.double()
            log_pt, elbo, kl = exact_data_bounds(env, pol64, traj)
            log_pt, elbo, kl = log_pt[last], elbo[last], kl[last]
            self.exact[variant] = (log_pt, elbo, kl)
            row = {
                "variant": variant,
                "cross_entropy": float(-(p_star * log_pt).sum()),
                "entropy_p_star": float(-(p_star * p_star.log()).sum()),
                "mean_elbo_gap": float((p_star * kl).sum()),
                "identity_max_err": float((log_pt - elbo - kl).abs().max()),
                "train_cpu_s": m[f"{variant}/train_cpu_s"],
            }
            policy.float()
            rows.append(row)
            for key, value in row.items():
                if key != "variant":
                    m[f"{variant}/{key}"] = value
        self.tables["mle_gfn"] = rows
        self._iw_bound()
        self._diffusion(models)
        self._tree()
        self._tb_gradient()

    def _iw_bound(self) -> None:
        from flowfields.gflownet import TabularPolicy, data_bounds, exact_data_bounds

        cfg, env = self.cfg, self.env
        # a random tabular HVAE (N(0, 1.5^2) logits): a loose ELBO, so that K matters
        g = torch.Generator().manual_seed(cfg.seed + 21)
        pol64 = TabularPolicy(env)
        for p in (pol64.pf_table, pol64.pb_table):
            p.data = 1.5 * torch.randn(p.shape, generator=g, dtype=torch.float64)
        pol64 = pol64.to(self.device)
        log_pt, elbo, _ = exact_data_bounds(env, pol64)
        # the datum with the loosest ELBO among the 8 likeliest objects
        last = (env.all_states()[0][:, 0] == env.layers).nonzero()[:, 0]
        likely = last[torch.argsort(env.table, descending=True)[:8]]
        row = int(likely[torch.argmax((log_pt - elbo)[likely])])
        x = env.all_states()[0][row : row + 1].to(self.device)
        g = torch.Generator(device=self.device).manual_seed(cfg.seed + 33)
        rows = []
        with torch.no_grad():
            for k in cfg.iw_ks:
                n = max(cfg.iw_draws // int(k), 2)
                b = data_bounds(env, pol64, x.repeat(n, 1), int(k), generator=g)
                iw = b.iw_bound.cpu()
                rows.append(
                    {"k": int(k), "mean": float(iw.mean()), "se": float(iw.std()) / math.sqrt(n)}
                )
        self.tables["iw_bound"] = rows
        self.metrics["iw/log_pt"] = float(log_pt[row])
        self.metrics["iw/elbo_exact"] = float(elbo[row])
        ok = all(
            b["mean"] > a["mean"] - 2 * math.hypot(a["se"], b["se"])
            for a, b in itertools.pairwise(rows)
        )
        self.metrics["iw/monotone"] = bool(ok and rows[-1]["mean"] > rows[0]["mean"])
        self.metrics["iw/below_log_pt"] = bool(
            rows[-1]["mean"] < float(log_pt[row]) + 3 * rows[-1]["se"]
        )
        self.metrics["iw/last_gap"] = float(log_pt[row]) - rows[-1]["mean"]

    def _diffusion(self, models: dict[str, nn.Module]) -> None:
        from scipy import stats

        cfg, m = self.cfg, self.metrics
        mu, s, c = cfg.diff_target
        true_log_z = c + math.log(math.sqrt(2 * math.pi) * s)
        g = torch.Generator(device=self.device).manual_seed(cfg.seed + 41)
        tb, data = models["diffusion_tb"], models["diffusion_data"]
        assert isinstance(tb, DiffusionGFlowNet) and isinstance(data, DiffusionGFlowNet)
        x_tb = tb.sample(cfg.diff_samples, generator=g)[-1, :, 0].cpu()
        x_data = data.sample(cfg.diff_samples, generator=g)[-1, :, 0].cpu()
        self.diffusion_samples = {"diffusion_tb": x_tb, "diffusion_data": x_data}
        ks = stats.kstest(x_tb.double().numpy(), "norm", args=(mu, s))
        m["diffusion_tb/log_z"] = float(tb.log_z)
        m["diffusion_tb/abs_dlogz"] = abs(float(tb.log_z) - true_log_z)
        m["diffusion_tb/ks_stat"] = float(ks.statistic)
        m["diffusion_tb/ks_pvalue"] = float(ks.pvalue)
        m["diffusion_data/mean"] = float(x_data.mean())
        m["diffusion_data/std"] = float(x_data.std())
        m["diffusion_data/rel_err_mean"] = abs(float(x_data.mean()) - mu) / abs(mu)
        m["diffusion_data/rel_err_std"] = abs(float(x_data.std()) - s) / s

    def _tree(self) -> None:
        from flowfields.gflownet import (
            BitSequences,
            MLPPolicy,
            data_bounds,
            exact_terminal_distribution,
        )

        cfg = self.cfg
        n = int(cfg.bits)
        env = BitSequences(n, target_logits(2**n, 1.0, cfg.seed + 5).log_softmax(0))
        self.reseed(2)
        policy = MLPPolicy(env, 32, 2, activation="tanh").double().to(self.device)
        pt = exact_terminal_distribution(env, policy)
        rows = pt.nonzero()[:, 0]
        x = env.all_states()[0][rows].to(self.device)
        g = torch.Generator(device=self.device).manual_seed(cfg.seed + 3)
        with torch.no_grad():
            b = data_bounds(env, policy, x, 4, generator=g)
        self.metrics["tree/elbo_max_err"] = float((b.elbo.cpu() - pt[rows].log()).abs().max())
        self.metrics["tree/tbc_max"] = float(b.tbc.abs().max())
        self.metrics["tree/strings"] = int(rows.numel())

    def _tb_gradient(self) -> None:
        from flowfields.gflownet import (
            HyperGrid,
            TabularPolicy,
            all_trajectories,
            dag_table,
            evaluate,
        )

        env = HyperGrid(2, 4)
        g = torch.Generator().manual_seed(self.cfg.seed + 11)
        pol = TabularPolicy(env)
        for p in (pol.pf_table, pol.pb_table):
            p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
        traj = all_trajectories(env)
        log_z_true = float(torch.logsumexp(dag_table(env).log_reward, 0))
        worst, scale = 0.0, 0.0
        for log_z in (0.0, log_z_true, 5.0):
            pol.log_z.data = torch.tensor(log_z, dtype=torch.float64)
            terms = evaluate(pol, traj)
            log_pf, log_pb = terms.log_pf_total(), terms.log_pb_total()
            delta = pol.log_z + log_pf - terms.log_reward - log_pb
            tb = (log_pf.detach().exp() * 0.5 * delta**2).sum()
            (g_tb,) = torch.autograd.grad(tb, [pol.pf_table], retain_graph=True)
            kl = (log_pf.exp() * (log_pf - terms.log_reward - log_pb + log_z_true)).sum()
            (g_kl,) = torch.autograd.grad(kl, [pol.pf_table])
            worst = max(worst, float((g_tb - g_kl).abs().max()))
            scale = max(scale, float(g_kl.abs().max()))
        self.metrics["tb_grad/max_abs_diff"] = worst
        self.metrics["tb_grad/max_abs_grad"] = scale
        self.metrics["tb_grad/trajectories"] = traj.batch

    def claims(self) -> list[Claim]:
        m, cfg = self.metrics, self.cfg
        worst_id = max(m["tbc/identity_max_err"], m["elbo/identity_max_err"])
        iw = self.tables["iw_bound"]
        iw_text = ", ".join(f"K={r['k']}: {r['mean']:.4f}" for r in iw)
        ce_t, ce_e = m["tbc/cross_entropy"], m["elbo/cross_entropy"]
        gap_t, gap_e = m["tbc/mean_elbo_gap"], m["elbo/mean_elbo_gap"]
        return [
            Claim(
                id="hvae-gap-is-kl",
                statement="For a hierarchical VAE seen as a GFlowNet, log P_T(x) - ELBO(x) = "
                "KL(P_B(tau|x) || P_F(tau|x)) for every x.",
                measured=worst_id,
                threshold=1e-6,
                holds=bool(worst_id <= 1e-6),
                note=f"Both trained HVAEs, all {cfg.sizes[-1]} objects, float64 enumeration of "
                "every trajectory.",
            ),
            Claim(
                id="iw-bound-increases",
                statement="The importance-weighted bound increases with K toward log P_T(x).",
                measured=f"{iw_text}; log P_T(x) = {m['iw/log_pt']:.4f}, ELBO = "
                f"{m['iw/elbo_exact']:.4f}",
                threshold="non-decreasing within 2 SE, and below log P_T(x) + 3 SE",
                holds=bool(m["iw/monotone"] and m["iw/below_log_pt"]),
                note=f"A random tabular HVAE (loose ELBO); Monte Carlo, about {cfg.iw_draws} "
                "trajectories per K, seeded; the datum with the loosest ELBO among the 8 "
                "likeliest.",
            ),
            Claim(
                id="autoregressive-elbo-exact",
                statement="An autoregressive model is a GFlowNet on a tree: ELBO = log P_T(x) "
                "and TBC = 0.",
                measured=f"max |ELBO - log P_T| {m['tree/elbo_max_err']:.2e}, max TBC "
                f"{m['tree/tbc_max']:.2e} over {m['tree/strings']} strings",
                threshold="both <= 1e-12",
                holds=bool(m["tree/elbo_max_err"] <= 1e-12 and m["tree/tbc_max"] <= 1e-12),
            ),
            Claim(
                id="diffusion-tb",
                statement="A diffusion sampler is a GFlowNet with a fixed (Brownian-bridge) "
                "P_B: trained by TB on an unnormalised 1-D Gaussian it recovers log Z within "
                "0.05 and passes a KS test.",
                measured=f"|dlogZ| {m['diffusion_tb/abs_dlogz']:.4f}, KS statistic "
                f"{m['diffusion_tb/ks_stat']:.4f} (p = {m['diffusion_tb/ks_pvalue']:.3f})",
                threshold="|dlogZ| < 0.05 and KS p > 0.01",
                holds=bool(
                    m["diffusion_tb/abs_dlogz"] < 0.05 and m["diffusion_tb/ks_pvalue"] > 0.01
                ),
                note=f"{cfg.diff_steps} steps, sigma = 1, {cfg.diff_iters} iterations of "
                f"{cfg.diff_batch}; KS on {cfg.diff_samples} samples against "
                f"N{cfg.diff_target[:2]}.",
            ),
            Claim(
                id="diffusion-data-mode",
                statement="The same network trained in data mode (ELBO over the fixed noising "
                "P_B) recovers the data's mean and standard deviation within 5%.",
                measured=f"mean {m['diffusion_data/mean']:.4f}, std {m['diffusion_data/std']:.4f} "
                f"(relative errors {m['diffusion_data/rel_err_mean']:.3f}, "
                f"{m['diffusion_data/rel_err_std']:.3f})",
                threshold="both relative errors < 0.05",
                holds=bool(
                    m["diffusion_data/rel_err_mean"] < 0.05
                    and m["diffusion_data/rel_err_std"] < 0.05
                ),
                note=f"Fresh N{cfg.diff_target[:2]} samples every step; {cfg.diff_samples} "
                "generated samples.",
            ),
            Claim(
                id="tb-gradient-is-kl-gradient",
                statement="The on-policy TB gradient's expectation equals the gradient of "
                "KL(P_F(tau) || P_B(tau)) (in P_F's parameters) for any log Z.",
                measured=m["tb_grad/max_abs_diff"],
                threshold=f"<= 1e-9 (gradients of size {m['tb_grad/max_abs_grad']:.3f})",
                holds=bool(m["tb_grad/max_abs_diff"] <= 1e-9),
                note=f"All {m['tb_grad/trajectories']} trajectories of HyperGrid 2-D H = 4, "
                "log Z in {0, true, 5}.",
            ),
            Claim(
                id="tbc-helps-mle",
                statement="MLE-GFN with the TBC penalty reaches a better test log-likelihood "
                "(or a tighter ELBO gap) than the ELBO alone at equal budget.",
                measured=f"cross-entropy {ce_t:.4f} (TBC) vs {ce_e:.4f} (ELBO); mean gap "
                f"{gap_t:.4f} vs {gap_e:.4f}; entropy of p* {m['tbc/entropy_p_star']:.4f}",
                threshold="TBC's cross-entropy or mean gap below the ELBO-only one",
                holds=bool(ce_t < ce_e or gap_t < gap_e),
                note=f"{cfg.steps} steps of {cfg.batch} data x K = {cfg.k} backward "
                f"trajectories each, same initial weights and batches; {cfg.n_data} training "
                "samples; exact quantities under p*.",
            ),
        ]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        fig, ax = plt.subplots(1, 4, figsize=(15, 3.4))
        p_star = self.env.table.exp()
        order = torch.argsort(p_star, descending=True)
        ax[0].bar(range(len(order)), p_star[order].numpy(), color="0.7", label="p*")
        for k, (variant, (log_pt, _e, _kl)) in enumerate(self.exact.items()):
            ax[0].plot(log_pt.exp()[order].numpy(), "o-", ms=3, color=f"C{k}", label=variant)
        ax[0].set_xlabel("object (by p*)")
        ax[0].set_ylabel("probability")
        ax[0].legend(fontsize=7)
        ax[0].set_title("learned P_T vs data distribution", fontsize=9)
        for k, (variant, curve) in enumerate(self.loss_curves.items()):
            if variant.startswith("diffusion"):
                continue
            ax[1].plot(curve, color=f"C{k}", lw=0.8, label=variant)
        ax[1].set_xlabel("logged step")
        ax[1].set_ylabel("batch ELBO")
        ax[1].legend(fontsize=7)
        iw = self.tables["iw_bound"]
        ks = [r["k"] for r in iw]
        ax[2].errorbar(ks, [r["mean"] for r in iw], yerr=[2 * r["se"] for r in iw], fmt="o-")
        ax[2].axhline(self.metrics["iw/log_pt"], color="k", ls="--", lw=1, label="log P_T(x)")
        ax[2].set_xscale("log", base=2)
        ax[2].set_xlabel("K")
        ax[2].set_ylabel("importance-weighted bound")
        ax[2].legend(fontsize=7)
        mu, s, _c = self.cfg.diff_target
        grid = torch.linspace(mu - 4 * s, mu + 4 * s, 200)
        dens = torch.exp(-((grid - mu) ** 2) / (2 * s * s)) / math.sqrt(2 * math.pi * s * s)
        for k, (variant, xs) in enumerate(self.diffusion_samples.items()):
            ax[3].hist(xs.numpy(), bins=60, density=True, alpha=0.4, color=f"C{k}", label=variant)
        ax[3].plot(grid.numpy(), dens.numpy(), "k--", lw=1, label="target")
        ax[3].set_xlabel("x")
        ax[3].legend(fontsize=7)
        ax[3].set_title("diffusion sampler as a GFlowNet", fontsize=9)
        fig.tight_layout()
        self.save_figure(fig, "unify.png")


EXPERIMENT = GFlowNetUnify

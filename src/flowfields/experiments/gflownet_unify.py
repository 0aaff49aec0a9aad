"""Generative models as GFlowNets: the unification's identities, measured, and MLE-GFN.

Zhang, Chen, Malkin, Bengio, "Unifying Generative Models with GFlowNets and Beyond"
(arXiv:2209.02606), sec. 3, on DAGs small enough to enumerate (everything exact):

1. A discrete hierarchical VAE (:class:`~flowfields.gflownet.LayeredDAG`,
   ``s0 -> z1 -> z2 -> x``; P_F the decoder, P_B the encoder): for random tabular and MLP
   HVAEs, ``log P_T(x) - ELBO(x) = KL(P_B(tau|x) || P_F(tau|x))`` for every ``x``, with
   ``log P_T`` by dynamic programming, the ELBO by enumerating every trajectory and the KL
   against the exact posterior chain (:func:`~flowfields.gflownet.posterior_log_pb`), float64.
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

MLE-GFN (training the HVAE from data with and without TBC) is its own experiment,
``gflownet-mle``. Models saved: the two diffusion samplers, ``diffusion_tb`` (the default) and
``diffusion_data``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.engine import TrainState
from flowfields.errors import check, check_positive_ints
from flowfields.experiments._gflownet_train import target_logits
from flowfields.experiments.base import Experiment
from flowfields.gflownet.diffusion import DiffusionGFlowNet
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "Config", "GFlowNetUnify"]

NAME = "gflownet-unify"
PAPER = "Unifying Generative Models with GFlowNets and Beyond (Zhang et al., arXiv:2209.02606)"


@dataclass
class Config:
    """Settings of ``gflownet-unify``.

    Attributes:
        sizes: the HVAE's layer sizes ``(K_z1, K_z2, K_x)``.
        target_scale: its reward, softmax(target_scale * N(0, 1) logits), seeded.
        hidden, depth: the random MLP HVAE (tanh) and the diffusion network (silu).
        iw_ks, iw_draws: the importance-weighted bound's K values and draws per K.
        bits: string length of the autoregressive check.
        diff_steps, diff_iters, diff_batch: the diffusion sampler (steps N, training
            iterations and batch of each mode); diff_target: ``(mu, s, c)``; diff_samples:
            draws for the KS test and the moments.
        checkpoint_every, seed, device: engine and CLI settings.
    """

    sizes: tuple[int, ...] = (4, 4, 16)
    target_scale: float = 1.5
    hidden: int = 64
    depth: int = 2
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
        """8,192 draws per K, 6-bit strings, the diffusion sampler at 600 iterations of 128
        per mode: about 27 s of user CPU on one thread (measured)."""
        return cls(iw_draws=8192, bits=6, diff_iters=600, diff_batch=128)

    @classmethod
    def full(cls) -> Config:
        """32,768 draws per K, 8-bit strings, the diffusion sampler at 1,500 iterations of
        256 per mode: about 76 s of user CPU (measured)."""
        return cls()


class GFlowNetUnify(Experiment, config=Config):
    """The unification identities by enumeration, and the diffusion sampler both ways."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("diffusion_tb", "diffusion_data")

    def check_config(self) -> None:
        cfg = self.cfg
        names = ("hidden", "depth", "iw_draws", "bits", "diff_steps", "diff_iters")
        check_positive_ints(cfg, *names, "diff_batch", "diff_samples")
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
        return DiffusionGFlowNet(1, cfg.diff_steps, 1.0, cfg.hidden, cfg.depth)

    def train(self) -> dict[str, nn.Module]:
        self.env = self._hvae()
        self.loss_curves: dict[str, list[float]] = {}
        return self._train_diffusion()

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

            res = self.fit(
                variant, state, step, steps=cfg.diff_iters, checkpoint_every=cfg.checkpoint_every
            )
            self.metrics[f"{variant}/train_cpu_s"] = res.cpu_s  # all segments of a resumed run
            self.loss_curves[variant] = list(state.history["loss"])
            out[variant] = model.eval()
        return out

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        self._hvae_identity()
        self._iw_bound()
        self._diffusion(models)
        self._tree()
        self._tb_gradient()

    def _hvae_identity(self) -> None:
        from flowfields.gflownet import MLPPolicy, TabularPolicy, exact_data_bounds

        cfg, env, m = self.cfg, self.env, self.metrics
        last = env.all_states()[0][:, 0] == env.layers
        worst, smallest_kl, rows = 0.0, math.inf, []
        for k in range(3):
            g = torch.Generator().manual_seed(cfg.seed + 51 + k)
            tab = TabularPolicy(env)
            for p in (tab.pf_table, tab.pb_table):
                p.data = 1.5 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            self.reseed(60 + k)
            mlp = MLPPolicy(env, cfg.hidden, cfg.depth, activation="tanh").double()
            for name, pol in ((f"tabular_{k}", tab), (f"mlp_{k}", mlp)):
                log_pt, elbo, kl = (t[last] for t in exact_data_bounds(env, pol.to(self.device)))
                err = float((log_pt - elbo - kl).abs().max())
                worst, smallest_kl = max(worst, err), min(smallest_kl, float(kl.mean()))
                rows.append({"hvae": name, "max_abs_err": err, "mean_kl": float(kl.mean())})
        self.tables["hvae_identity"] = rows
        m["hvae/identity_max_err"] = worst
        m["hvae/min_mean_kl"] = smallest_kl
        m["hvae/models"] = len(rows)

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
        m["diffusion_tb/log_z"] = float(tb.log_z.detach())
        m["diffusion_tb/abs_dlogz"] = abs(float(tb.log_z.detach()) - true_log_z)
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
        worst_id = m["hvae/identity_max_err"]
        iw = self.tables["iw_bound"]
        iw_text = ", ".join(f"K={r['k']}: {r['mean']:.4f}" for r in iw)
        return [
            Claim(
                id="hvae-gap-is-kl",
                statement="For a hierarchical VAE seen as a GFlowNet, log P_T(x) - ELBO(x) = "
                "KL(P_B(tau|x) || P_F(tau|x)) for every x.",
                measured=worst_id,
                threshold=1e-6,
                holds=bool(worst_id <= 1e-6),
                note=f"{m['hvae/models']} random HVAEs {tuple(cfg.sizes)} (tabular and MLP), "
                f"all {cfg.sizes[-1]} objects; log P_T by DP, ELBO by enumerating every "
                "trajectory, KL against the exact posterior chain (three separate "
                f"computations, float64); smallest mean KL {m['hvae/min_mean_kl']:.3f}.",
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
        ]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
        iw = self.tables["iw_bound"]
        ks = [r["k"] for r in iw]
        ax[0].errorbar(ks, [r["mean"] for r in iw], yerr=[2 * r["se"] for r in iw], fmt="o-")
        ax[0].axhline(self.metrics["iw/log_pt"], color="k", ls="--", lw=1, label="log P_T(x)")
        ax[0].set_xscale("log", base=2)
        ax[0].set_xlabel("K")
        ax[0].set_ylabel("importance-weighted bound")
        ax[0].legend(fontsize=7)
        for k, (variant, curve) in enumerate(self.loss_curves.items()):
            ax[1].plot(curve, color=f"C{k}", lw=0.8, label=variant)
        ax[1].set_yscale("symlog")
        ax[1].set_xlabel("logged step")
        ax[1].set_ylabel("training loss (TB / -ELBO)")
        ax[1].legend(fontsize=7)
        mu, s, _c = self.cfg.diff_target
        grid = torch.linspace(mu - 4 * s, mu + 4 * s, 200)
        dens = torch.exp(-((grid - mu) ** 2) / (2 * s * s)) / math.sqrt(2 * math.pi * s * s)
        for k, (variant, xs) in enumerate(self.diffusion_samples.items()):
            ax[2].hist(xs.numpy(), bins=60, density=True, alpha=0.4, color=f"C{k}", label=variant)
        ax[2].plot(grid.numpy(), dens.numpy(), "k--", lw=1, label="target")
        ax[2].set_xlabel("x")
        ax[2].legend(fontsize=7)
        ax[2].set_title("diffusion sampler as a GFlowNet", fontsize=9)
        fig.tight_layout()
        self.save_figure(fig, "unify.png")


EXPERIMENT = GFlowNetUnify

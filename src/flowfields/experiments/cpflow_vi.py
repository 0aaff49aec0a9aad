"""Amortised variational inference with a conditional CP-Flow posterior (VAE on 8x8 digits).

Huang, Chen, Tsirigotis, Courville, "Convex Potential Flows: Universal Probability
Distributions with Optimal Transport and Convex Optimization" (ICLR 2021, arXiv:2012.05942),
section 5.3: a VAE whose approximate posterior is a conditional CP-Flow gives a tighter bound
than a Gaussian posterior, on par with autoregressive-flow posteriors. Here on scikit-learn's
8x8 digits binarised at half intensity (1797 images, seeded train / test split; the paper
uses MNIST-scale data), three VAEs with the same encoder, decoder, initialisation, steps,
batch and learning rate, differing only in the posterior ``q(z | x)``:

- ``gaussian``: ``z = μ(x) + σ(x) ε``, ``ε ~ N(0, I)``;
- ``cpflow``: that Gaussian draw pushed through a
  :class:`~flowfields.cpflow.ConditionalCPFlow` (PICNN blocks conditioned on the encoder's
  features ``h(x)``, Gaussian-softplus activations, an ActNorm before every block and after
  the last, as in the official code's VAE posterior):
  ``log q = log N(z0; μ, σ²) - Σ log det ∇²F_k(·; h) - Σ log|det a_k|`` (exact log-det);
- ``iaf``: the same Gaussian draw through zuko's conditional masked autoregressive transform
  used in its one-pass direction (an inverse autoregressive flow, Kingma et al. 2016), width
  matched to at least CP-Flow's parameter count.

Decoder: Bernoulli pixels; prior ``N(0, I)``. Training maximises the ELBO with a linear KL
warm-up (``β`` from 0 to 1 over the first ``warmup`` fraction of the steps, on
``log p(z) - log q(z | x)``; the protocol of van den Berg et al. 2018 that the official
code's VAE script follows), the same for every posterior. Reported on the test set:
``-ELBO`` (averaged over ``elbo_samples`` posterior draws) and the importance-weighted NLL
``-log (1/K) Σ_k p(x, z_k) / q(z_k | x)`` with ``K = iwae_k`` (>= 100), both in nats per image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowfields.errors import check, check_positive_ints
from flowfields.experiments.base import Experiment
from flowfields.experiments.cpflow_tabular import matched_width, n_params
from flowfields.report.result import Claim

__all__ = [
    "EXPERIMENT",
    "NAME",
    "PAPER",
    "POSTERIORS",
    "VAE",
    "CPFlowVI",
    "Config",
    "binary_digits",
]

NAME = "cpflow-vi"
PAPER = (
    "Convex Potential Flows: Universal Probability Distributions with Optimal Transport and "
    "Convex Optimization (Huang et al., ICLR 2021, arXiv:2012.05942)"
)

#: The posterior families compared, in report order.
POSTERIORS = ("gaussian", "cpflow", "iaf")
_LOG2PI = math.log(2 * math.pi)


def binary_digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[Tensor, Tensor]:
    """``(train, test)``: the 8x8 digits binarised (grey level > 8 of 16), float32 (N, 64),
    split by a permutation seeded by ``seed``."""
    from flowfields.data import load_digits, split_train_test

    x = (torch.as_tensor(load_digits()).reshape(-1, 64) > 8).float()
    train, test = split_train_test(x, test_fraction=test_fraction, seed=seed)
    return train, test


class VAE(nn.Module):
    """A Bernoulli VAE on 64 binary pixels with a Gaussian / CP-Flow / IAF posterior.

    Args:
        posterior: one of :data:`POSTERIORS`.
        latent: latent dimension ``k``.
        hidden: width of the encoder and decoder MLPs (two hidden layers each, ELU).
        context: dimension of the encoder features ``h(x)`` the flows are conditioned on.
        blocks, flow_hidden, flow_depth, flow_activation, flow_actnorm: the conditional
            CP-Flow (``posterior="cpflow"``).
        iaf_width: hidden width of the IAF's two layers (``posterior="iaf"``), 2 transforms.

    Shapes:
        x (B, 64) in {0, 1}; ``posterior_sample(x, n)`` -> z (n, B, k), log q (n, B).
    """

    def __init__(
        self,
        posterior: str,
        latent: int = 8,
        hidden: int = 128,
        context: int = 32,
        *,
        blocks: int = 2,
        flow_hidden: int = 32,
        flow_depth: int = 3,
        flow_activation: str = "gaussian_softplus",
        flow_actnorm: bool = True,
        iaf_width: int = 32,
    ) -> None:
        super().__init__()
        check(posterior in POSTERIORS, "posterior", posterior, f"one of {', '.join(POSTERIORS)}")
        self.posterior, self.latent = posterior, latent
        self.encoder = nn.Sequential(
            nn.Linear(64, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU()
        )
        self.features = nn.Linear(hidden, context)
        self.mu, self.log_sigma = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
            nn.Linear(hidden, 64),
        )  # fmt: skip
        self.flow: nn.Module | None = None
        if posterior == "cpflow":
            from flowfields.cpflow import ConditionalCPFlow

            self.flow = ConditionalCPFlow(
                latent,
                context,
                blocks,
                flow_hidden,
                flow_depth,
                flow_activation,
                actnorm=flow_actnorm,
            )
        elif posterior == "iaf":
            import zuko

            self.flow = zuko.flows.MAF(
                latent, context=context, transforms=2, hidden_features=(iaf_width, iaf_width)
            )

    def posterior_sample(self, x: Tensor, n: int = 1) -> tuple[Tensor, Tensor]:
        """``n`` reparameterised draws of ``q(z | x)`` per row and their log-densities,
        (n, B, k) and (n, B)."""
        a = self.encoder(x)
        mu, log_sigma = self.mu(a), self.log_sigma(a).clamp(-8.0, 4.0)
        eps = torch.randn(n, *mu.shape, dtype=mu.dtype, device=mu.device)
        z0 = mu + log_sigma.exp() * eps
        log_q = -0.5 * (eps * eps).sum(-1) - log_sigma.sum(-1) - 0.5 * self.latent * _LOG2PI
        if self.flow is None:
            return z0, log_q
        h = torch.tanh(self.features(a))
        h = h.expand(n, *h.shape).reshape(n * x.shape[0], -1)
        flat = z0.reshape(n * x.shape[0], self.latent)
        if self.posterior == "cpflow":
            z, ld = self.flow(flat, h)
        else:
            z, ld = self.flow(h).transform.call_and_ladj(flat)
        return z.reshape(z0.shape), log_q - ld.reshape(log_q.shape)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z) + log p(z)`` for z (n, B, k) and x (B, 64), (n, B)."""
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        return log_px - 0.5 * (z * z).sum(-1) - 0.5 * self.latent * _LOG2PI

    def elbo(self, x: Tensor, n: int = 1, beta: float = 1.0) -> Tensor:
        """The ELBO per row averaged over ``n`` draws, (B,); ``beta`` < 1 scales its KL
        part ``log p(z) - log q(z | x)`` (a warm-up objective, not a bound)."""
        z, log_q = self.posterior_sample(x, n)
        if beta == 1.0:
            return (self.log_joint(x, z) - log_q).mean(0)
        log_pz = -0.5 * (z * z).sum(-1) - 0.5 * self.latent * _LOG2PI
        log_px = self.log_joint(x, z) - log_pz
        return (log_px + beta * (log_pz - log_q)).mean(0)

    def iwae(self, x: Tensor, k: int) -> Tensor:
        """The ``k``-sample importance-weighted bound on ``log p(x)`` per row, (B,)."""
        z, log_q = self.posterior_sample(x, k)
        return torch.logsumexp(self.log_joint(x, z) - log_q, 0) - math.log(k)


@dataclass
class Config:
    """Settings of ``cpflow-vi``.

    Attributes:
        latent, hidden, context: the VAE (see :class:`VAE`).
        blocks, flow_hidden, flow_depth, flow_activation, flow_actnorm: the CP-Flow
            posterior; the IAF's width is matched.
        steps, batch, lr: Adam (cosine decay), one posterior draw per image, same for all.
        warmup: fraction of the steps with a linear KL warm-up (``β`` 0 → 1; 0 = none), the
            same for all posteriors.
        elbo_samples, iwae_k: evaluation draws per test image (``iwae_k`` >= 100).
        n_test: test images evaluated (<= 359; the first of the seeded split).
        checkpoint_every, seed, device: engine and CLI settings.
    """

    latent: int = 8
    hidden: int = 128
    context: int = 32
    blocks: int = 2
    flow_hidden: int = 32
    flow_depth: int = 3
    flow_activation: str = "gaussian_softplus"
    flow_actnorm: bool = True
    steps: int = 3000
    warmup: float = 0.1
    batch: int = 128
    lr: float = 2e-3
    elbo_samples: int = 10
    iwae_k: int = 200
    n_test: int = 359
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def quick(cls) -> Config:
        """300 steps per posterior, IWAE with K = 100 on 120 test images: about 20 s of CPU
        on one thread (measured)."""
        return cls(steps=300, elbo_samples=5, iwae_k=100, n_test=120)

    @classmethod
    def full(cls) -> Config:
        """3000 steps per posterior, IWAE K = 200 on all 359 test images.

        Expected run time: about 3 min of CPU on one thread (the CP-Flow posterior's
        exact-log-det steps dominate).
        """
        return cls()


class CPFlowVI(Experiment, config=Config):
    """VAE posteriors: Gaussian vs conditional CP-Flow vs IAF (see the module docstring)."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = POSTERIORS

    def check_config(self) -> None:
        cfg = self.cfg
        check_positive_ints(
            cfg, "latent", "hidden", "context", "blocks", "steps", "batch", "elbo_samples"
        )
        check(isinstance(cfg.iwae_k, int) and cfg.iwae_k >= 1, "iwae_k", cfg.iwae_k, "an int >= 1")
        check(1 <= cfg.n_test <= 359, "n_test", cfg.n_test, "an integer in [1, 359]")
        check(cfg.lr > 0, "lr", cfg.lr, "a float > 0")
        check(
            isinstance(cfg.warmup, int | float) and 0 <= cfg.warmup < 1,
            "warmup",
            cfg.warmup,
            "a fraction of the steps in [0, 1)",
        )
        from flowfields.nn import CONVEX_ACTIVATIONS

        check(
            cfg.flow_activation in CONVEX_ACTIVATIONS,
            "flow_activation",
            cfg.flow_activation,
            f"one of {', '.join(CONVEX_ACTIVATIONS)}",
        )

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        check(variant in POSTERIORS, "variant", variant, f"one of {', '.join(POSTERIORS)}")
        kw: dict[str, Any] = dict(
            blocks=cfg.blocks,
            flow_hidden=cfg.flow_hidden,
            flow_depth=cfg.flow_depth,
            flow_activation=cfg.flow_activation,
            flow_actnorm=cfg.flow_actnorm,
        )
        args = (cfg.latent, cfg.hidden, cfg.context)
        if variant != "iaf":
            return VAE(variant, *args, **kw)
        target = n_params(cast(nn.Module, VAE("cpflow", *args, **kw).flow))
        width = matched_width(
            lambda w: cast(nn.Module, VAE("iaf", *args, iaf_width=w).flow), target
        )
        return VAE("iaf", *args, iaf_width=width)

    def _train_one(self, variant: str, train: Tensor) -> nn.Module:
        from flowfields.engine import TrainState

        cfg = self.cfg
        self.reseed(1)  # the same encoder / decoder initialisation for every posterior
        model = cast(VAE, self.build_model(cfg, variant).to(self.device))

        def cosine(opt: torch.optim.Optimizer) -> Any:
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)

        state = TrainState.single(model, lr=cfg.lr, scheduler=cosine, ema_decay=None)
        self.reseed(2)  # the same minibatches for every posterior
        n_warm = round(cfg.warmup * cfg.steps)

        def step(state: TrainState, i: int) -> dict[str, Tensor]:
            idx = torch.randint(0, len(train), (cfg.batch,), device=train.device)
            beta = min(1.0, (i + 1) / n_warm) if n_warm > 0 else 1.0
            loss = -cast(VAE, state["model"]).elbo(train[idx], beta=beta).mean()
            return {"loss": state.update("model", loss)}

        res = self.fit(variant, state, step, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every)
        self.metrics[f"{variant}/train_cpu_s"] = res.cpu_s  # all segments of a resumed run
        self.metrics[f"{variant}/params"] = n_params(model)
        self.metrics[f"{variant}/posterior_params"] = n_params(model.flow) if model.flow else 0
        return model.eval()

    def train(self) -> dict[str, nn.Module]:
        train, test = binary_digits(self.cfg.seed)
        self.train_x, self.test_x = train.to(self.device), test[: self.cfg.n_test].to(self.device)
        return {v: self._train_one(v, self.train_x) for v in POSTERIORS}

    # ------------------------------------------------------------------ evaluation
    def _scores(self, model: VAE) -> tuple[Tensor, Tensor]:
        """Per test image: (-ELBO, IWAE NLL), float64."""
        cfg = self.cfg
        g_state = torch.random.get_rng_state()
        torch.manual_seed(cfg.seed + 500)  # the same evaluation draws for every posterior
        neg_elbo, nll = [], []
        chunk = max(1, 4096 // cfg.iwae_k)
        with torch.no_grad():
            for xb in self.test_x.split(chunk):
                neg_elbo.append(-model.elbo(xb, cfg.elbo_samples).double().cpu())
                nll.append(-model.iwae(xb, cfg.iwae_k).double().cpu())
        torch.random.set_rng_state(g_state)
        return torch.cat(neg_elbo), torch.cat(nll)

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        m = self.metrics
        scores = {}
        for v in POSTERIORS:
            t0 = time.process_time()
            scores[v] = self._scores(cast(VAE, models[v]))
            m[f"{v}/eval_cpu_s"] = time.process_time() - t0
        self._curvature(cast(VAE, models["cpflow"]))
        n = len(self.test_x)
        rows = []
        for v in POSTERIORS:
            ne, nll = scores[v]
            row = {
                "posterior": v,
                "params": m[f"{v}/params"],
                "posterior_params": m[f"{v}/posterior_params"],
                "neg_elbo": float(ne.mean()),
                "iwae_nll": float(nll.mean()),
                "neg_elbo_se": float(ne.std()) / math.sqrt(n),
                "train_cpu_s": m[f"{v}/train_cpu_s"],
            }
            for key in ("neg_elbo", "iwae_nll"):
                m[f"{v}/{key}"] = row[key]
            for other in POSTERIORS:
                if other != v:
                    for j, key in enumerate(("neg_elbo", "iwae_nll")):
                        diff = scores[v][j] - scores[other][j]
                        m[f"{v}/{key}_minus_{other}_se"] = float(diff.std()) / math.sqrt(n)
            rows.append(row)
        self.tables["posteriors"] = rows

    def _curvature(self, model: VAE) -> None:
        """Is the CP-Flow posterior more than an affine map? Per block, on one posterior
        draw per test image: ``softplus(β1)``, ``α``, and the spread over images of
        ``log det ∇²F`` and ``|∇²F - mean ∇²F| / |mean ∇²F|`` (both 0 for an affine map)."""
        from flowfields.cpflow import ConditionalCPFlow

        flow = cast(ConditionalCPFlow, model.flow)
        g_state = torch.random.get_rng_state()
        torch.manual_seed(self.cfg.seed + 501)
        with torch.no_grad():
            a = model.encoder(self.test_x)
            h = torch.tanh(model.features(a))
            z = model.mu(a) + model.log_sigma(a).clamp(-8.0, 4.0).exp() * torch.randn_like(
                model.mu(a)
            )
            for k, (blk, x) in enumerate(zip(flow._blocks(), flow.block_inputs(z, h), strict=True)):
                H = blk.closed_form(x, h)[2]
                Hm = H.mean(0)
                dev = (H - Hm).flatten(1).norm(dim=1) / Hm.norm()
                pre = f"cpflow/block{k}"
                self.metrics[f"{pre}/gain"] = float(F.softplus(blk.beta1))
                self.metrics[f"{pre}/alpha"] = float(blk.alpha)
                self.metrics[f"{pre}/logdet_sd"] = float(torch.logdet(H).std())
                self.metrics[f"{pre}/hessian_rel_dev"] = float(dev.mean())
        torch.random.set_rng_state(g_state)

    # ------------------------------------------------------------------ claims
    def claims(self) -> list[Claim]:
        m, cfg = self.metrics, self.cfg

        def pair(v: str) -> str:
            return f"-ELBO {m[f'{v}/neg_elbo']:.3f}, IWAE NLL {m[f'{v}/iwae_nll']:.3f}"

        tighter = m["cpflow/neg_elbo"] < m["gaussian/neg_elbo"] and (
            m["cpflow/iwae_nll"] < m["gaussian/iwae_nll"]
        )
        slack = {k: 2 * m[f"cpflow/{k}_minus_iaf_se"] for k in ("neg_elbo", "iwae_nll")}
        within = all(m[f"cpflow/{k}"] <= m[f"iaf/{k}"] + slack[k] for k in slack)
        note = (
            f"{len(self.test_x)} binarised test digits, K = {cfg.iwae_k} importance samples, "
            f"{cfg.elbo_samples} ELBO draws; {cfg.steps} Adam steps each (batch {cfg.batch}, "
            f"KL warm-up over {round(cfg.warmup * cfg.steps)} steps); CP-Flow posterior "
            f"{cfg.blocks} blocks, PICNN "
            f"{cfg.flow_hidden} x {cfg.flow_depth} {cfg.flow_activation}, ActNorm "
            f"{'on' if cfg.flow_actnorm else 'off'}; "
            f"posterior parameters CP-Flow {m['cpflow/posterior_params']}, IAF "
            f"{m['iaf/posterior_params']}; training CPU s "
            + ", ".join(f"{v} {m[f'{v}/train_cpu_s']:.1f}" for v in POSTERIORS)
            + "."
        )
        return [
            Claim(
                id="vi-tighter-than-gaussian",
                statement="A conditional CP-Flow posterior gives a tighter -ELBO and "
                "importance-weighted NLL than a Gaussian posterior (same encoder, decoder, "
                "budget).",
                measured=f"CP-Flow {pair('cpflow')}; Gaussian {pair('gaussian')} (nats)",
                threshold="both lower than the Gaussian's",
                holds=bool(tighter),
                note=note + f" Paired standard errors of the differences: -ELBO "
                f"{m['cpflow/neg_elbo_minus_gaussian_se']:.3f}, NLL "
                f"{m['cpflow/iwae_nll_minus_gaussian_se']:.3f}. Not an affine map: per block "
                "sd over test images of log det ∇²F "
                + ", ".join(f"{m[f'cpflow/block{k}/logdet_sd']:.3f}" for k in range(cfg.blocks))
                + ", mean relative deviation of ∇²F from its mean "
                + ", ".join(
                    f"{m[f'cpflow/block{k}/hessian_rel_dev']:.3f}" for k in range(cfg.blocks)
                )
                + ".",
            ),
            Claim(
                id="vi-within-autoregressive",
                statement="The CP-Flow posterior is within the spread of an autoregressive-"
                "flow (IAF) posterior.",
                measured=f"CP-Flow {pair('cpflow')}; IAF {pair('iaf')} (nats)",
                threshold=f"CP-Flow <= IAF + 2 paired SE (-ELBO +{slack['neg_elbo']:.3f}, "
                f"NLL +{slack['iwae_nll']:.3f})",
                holds=bool(within),
                note=note,
            ),
        ]

    # ------------------------------------------------------------------ figures
    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        rows = self.tables["posteriors"]
        for ax, key, title in zip(
            axes,
            ("neg_elbo", "iwae_nll"),
            ("-ELBO", f"IWAE NLL (K={self.cfg.iwae_k})"),
            strict=True,
        ):
            vals = [r[key] for r in rows]
            ax.bar([r["posterior"] for r in rows], vals, color=["C7", "C0", "C1"])
            lo, hi = min(vals), max(vals)
            ax.set_ylim(lo - 0.6 * (hi - lo + 0.1), hi + 0.3 * (hi - lo + 0.1))
            ax.set_title(f"test {title} (nats)")
        self.save_figure(fig, "bounds.png")
        # the CP-Flow posterior of four test digits: 2-D projections of its draws
        model = cast(VAE, models["cpflow"])
        with torch.no_grad():
            z, _ = model.posterior_sample(self.test_x[:4], 300)
        fig, axes = plt.subplots(1, 4, figsize=(11, 2.8))
        for i, ax in enumerate(axes):
            ax.scatter(z[:, i, 0].cpu(), z[:, i, 1].cpu(), s=2, alpha=0.5)
            ax.set_title(f"q(z1, z2 | x_{i}), CP-Flow")
        self.save_figure(fig, "posterior_samples.png")


EXPERIMENT = CPFlowVI

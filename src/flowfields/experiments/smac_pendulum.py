"""SMAC vs SAC on Pendulum-v1 (and without velocity): returns, the entropy bound, update cost.

Zhang, Courville, Bengio, Zheng, Zhang, Chen, "Latent State Marginalization as a Low-cost
Approach for Improving Exploration" (ICLR 2023, arXiv:2210.00999). For each seed, SAC and SMAC
(same seed: network initialisation, warm-up actions and the environment's first reset) are
trained through :func:`flowfields.engine.fit` with the replay buffer and the environment in the
train state, and evaluated every ``eval_every`` steps with deterministic actions on a separate
environment reset from fixed seeds. With ``pomdp`` the same is repeated with the angular velocity
removed from the observations (memoryless agents; :mod:`~flowfields.experiments.smac_pomdp`
is that task with the recurrent belief filter). Runs shorter than ``claim_steps`` are smoke
runs: their return claims are listed as "full preset only" and not made. Two measurements
need no environment: SMAC's entropy estimate on a 1-D latent Gaussian-mixture policy with its
entropy by quadrature, and the CPU cost of one update of SMAC at K = 8 and 32 relative to SAC
(both claims hold at any scale). Models saved: every run's actor
(``sac_seed0``, ``smac_seed0``, ...; ``pomdp_`` prefix for the velocity-free runs).
Learning curves (deterministic return at every evaluation, per run) go to the run directory's
``learning_curves.json``: ``{variant: [[step, return], ...]}``.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flowfields.errors import check, check_positive_ints
from flowfields.experiments._smac_measure import estimator_check, update_cost
from flowfields.experiments.base import Experiment
from flowfields.report.records import write_json
from flowfields.report.result import Claim
from flowfields.report.stats import mean_se

__all__ = [
    "EXPERIMENT",
    "NAME",
    "PAPER",
    "SB3_PENDULUM",
    "Config",
    "ObsSetting",
    "SMACPendulum",
]

NAME = "smac-pendulum"
PAPER = (
    "Latent State Marginalization as a Low-cost Approach for Improving Exploration "
    "(Zhang et al., ICLR 2023, arXiv:2210.00999)"
)
#: rl-baselines3-zoo's SAC on Pendulum-v1 (20k steps): mean and std of the return.
SB3_PENDULUM = (-157.0, 89.0)
ESTIMATOR_KS = (0, 1, 4, 16, 64, 1024)


@dataclass(frozen=True)
class ObsSetting:
    """One observation model the experiment trains SAC and SMAC under.

    Attributes:
        prefix: of the variant names (``""``, ``"pomdp_"``, ``"belief_"``). title: for figures
            and tables. hide_velocity, flicker, obs_noise: :func:`~flowfields.rl.make_env`.
        filter_window, filter_hidden: the agents' recurrent filter (0: none).
        filter_aux: weight of the filter's next-observation prediction loss (0: none).
    """

    prefix: str
    title: str
    hide_velocity: bool = False
    flicker: float = 0.0
    obs_noise: float = 0.0
    filter_window: int = 0
    filter_hidden: int = 64
    filter_aux: float = 0.0

    def env_kwargs(self) -> dict[str, Any]:
        return {"hide_velocity": self.hide_velocity, "flicker": self.flicker,
                "obs_noise": self.obs_noise}  # fmt: skip


@dataclass
class Config:
    """Settings of ``smac-pendulum``.

    Attributes:
        env_id: the gymnasium task. seeds: seeds per algorithm. steps: environment steps per
            run (one gradient step each after ``learning_starts``).
        hidden, depth, lr, batch_size, learning_starts, buffer_size: SAC's settings
            (rl-baselines3-zoo's Pendulum-v1 SAC: lr 1e-3, otherwise the SB3 defaults).
        n_particles, latent_dim, head_hidden, aggregation, critic_latent: SMAC's.
        pomdp: also run both without the velocity observation (memoryless; ``smac-pomdp``
            adds the recurrent filter); pomdp_flicker, pomdp_noise: add dropped frames /
            Gaussian observation noise to those runs.
        claim_steps: runs shorter than this are smoke runs: their return claims are not made
            but listed as "full preset only" (the estimator and cost claims hold at any scale).
        eval_every, eval_episodes: deterministic evaluations during training.
        estimator_samples: actions of the entropy-estimator check.
        cost_hidden, cost_batch, cost_repeats: the update-cost measurement.
        checkpoint_every, seed, device: engine and CLI settings.
        jobs: the (observation setting, algorithm, seed) runs are independent; with
            ``jobs > 1`` they run in that many spawned worker processes, one torch thread each
            (each run keeps its own checkpoint ``train_<variant>.pt``, so ``--resume`` works as
            before). Results are gathered in the sequential order and are bit-identical to
            ``jobs = 1`` run with one torch thread.
    """

    env_id: str = "Pendulum-v1"
    seeds: int = 3
    steps: int = 20_000
    hidden: int = 256
    depth: int = 2
    lr: float = 1e-3
    batch_size: int = 256
    learning_starts: int = 100
    buffer_size: int = 1_000_000
    n_particles: int = 8
    latent_dim: int = 8
    head_hidden: int = 64
    aggregation: str = "mean"
    critic_latent: bool = False
    pomdp: bool = False
    pomdp_flicker: float = 0.0
    pomdp_noise: float = 0.0
    claim_steps: int = 10_000
    eval_every: int = 2000
    eval_episodes: int = 10
    estimator_samples: int = 16_000
    cost_hidden: int = 256
    cost_batch: int = 256
    cost_repeats: int = 6
    checkpoint_every: int = 5000
    seed: int = 0
    device: str = "cpu"
    jobs: int = 1

    @classmethod
    def quick(cls) -> Config:
        """A smoke run: 2 seeds x 1,000 steps, 64 units, batch 64 (about 15 s of CPU).

        Pendulum is not learned in 1,000 steps: the return claims are full preset only; the
        estimator and cost claims are measured in full.
        """
        return cls(
            seeds=2,
            steps=1000,
            hidden=64,
            batch_size=64,
            pomdp=False,
            eval_every=500,
            eval_episodes=3,
            estimator_samples=8000,
            cost_repeats=3,
            checkpoint_every=500,
        )

    @classmethod
    def full(cls) -> Config:
        """3 seeds x 20k steps (the zoo's budget), 256 units (the POMDP runs: ``smac-pomdp``).

        Run time: about 4 ms of CPU per step at 64 units and 12-20 ms at 256 units (measured
        on the shared 2-core machine), so 6 runs x 20k steps take 20-45 min of CPU; with
        ``--set jobs=N`` they run in N processes (docs/rl.md has a run: all 4 claims held).
        """
        return cls()


def _agent_cfg(cfg: Config, setting: ObsSetting | None = None) -> Any:
    from flowfields.rl import AgentConfig

    setting = setting or ObsSetting("", "")
    return AgentConfig(
        filter_window=setting.filter_window,
        filter_hidden=setting.filter_hidden,
        filter_aux=setting.filter_aux,
        hidden=cfg.hidden,
        depth=cfg.depth,
        lr=cfg.lr,
        n_particles=cfg.n_particles,
        latent_dim=cfg.latent_dim,
        head_hidden=cfg.head_hidden,
        aggregation=cfg.aggregation,
        critic_latent=cfg.critic_latent,
    )


def _exit_with_parent() -> None:
    """Wait for the parent process (its sentinel closes when it ends), then end this one."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


#: One finished run: its actor, learning curve ``[(step, return)]`` and training CPU seconds.
_Trained = tuple[nn.Module, list[tuple[int, float]], float]


def _train_in_worker(
    cls: type[SMACPendulum], cfg: Config, run_dir: str, resume: bool,
    run: tuple[str, str, ObsSetting, int],
) -> tuple[bytes, list[tuple[int, float]], float]:  # fmt: skip
    """``cls._train_one(*run)`` in a worker process with one torch thread; the actor's weights
    come back as ``torch.save`` bytes (no shared-memory or CUDA handles across processes).
    The worker exits when its parent does (a killed run must not leave workers writing the
    checkpoints that its ``--resume`` reads)."""
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    torch.set_num_threads(1)
    exp = cls(cfg, run_dir, resume=resume, progress=False)
    actor, curve, cpu_s = exp._train_one(*run)
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in actor.state_dict().items()}, buf)
    return buf.getvalue(), curve, cpu_s


class SMACPendulum(Experiment, config=Config):
    """SMAC vs SAC returns on Pendulum (arXiv:2210.00999); see the module docstring."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("smac_seed0", "sac_seed0")

    @classmethod
    def settings(cls, cfg: Config) -> list[ObsSetting]:
        """The observation models: full observations, and without velocity when ``pomdp``."""
        out = [ObsSetting("", cfg.env_id)]
        if cfg.pomdp:
            out.append(
                ObsSetting(
                    "pomdp_",
                    f"{cfg.env_id} without velocity",
                    True,
                    cfg.pomdp_flicker,
                    cfg.pomdp_noise,
                )
            )
        return out

    def check_config(self) -> None:
        cfg = self.cfg
        check_positive_ints(
            cfg, "seeds", "steps", "eval_every", "eval_episodes", "estimator_samples", "jobs"
        )
        check(
            cfg.learning_starts < cfg.steps,
            "learning_starts",
            cfg.learning_starts,
            f"fewer than steps={cfg.steps}",
        )
        from flowfields.rl import SMAC, make_env

        for st in self.settings(cfg):
            env = make_env(cfg.env_id, **st.env_kwargs(), history=st.filter_window)
            obs_dim = env.observation_space.shape[0]
            env.close()
            SMAC(obs_dim, 1, _agent_cfg(cfg, st))  # the agent's own checks

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        from flowfields.rl import SAC, SMAC, make_env

        *head, algo, _ = variant.split("_")  # "[prefix_]algo_seedK"
        prefix = "".join(f"{h}_" for h in head)
        st = next(s for s in cls.settings(cfg) if s.prefix == prefix)
        env = make_env(cfg.env_id, **st.env_kwargs(), history=st.filter_window)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        env.close()
        agent = SMAC if algo == "smac" else SAC
        return agent(obs_dim, act_dim, _agent_cfg(cfg, st)).actor

    def train(self) -> dict[str, nn.Module]:
        cfg = self.cfg
        runs = [
            (f"{st.prefix}{algo}_seed{k}", algo, st, k)
            for st in self.settings(cfg)
            for algo in ("sac", "smac")
            for k in range(cfg.seeds)
        ]
        if cfg.jobs == 1 or len(runs) == 1:
            done = [self._train_one(*run) for run in runs]
        else:
            done = self._train_parallel(runs)
        self.curves: dict[str, list[tuple[int, float]]] = {}
        models: dict[str, nn.Module] = {}
        for (variant, *_), (actor, curve, cpu_s) in zip(runs, done):
            models[variant], self.curves[variant] = actor, curve
            self.metrics[f"{variant}/train_cpu_s"] = cpu_s
            self.metrics[f"{variant}/final_return"] = curve[-1][1]
        write_json(
            {v: [[int(s), float(r)] for s, r in c] for v, c in self.curves.items()},
            self.run_dir / "learning_curves.json",
        )
        return models

    def _train_parallel(self, runs: list[tuple[str, str, ObsSetting, int]]) -> list[_Trained]:
        """The runs in ``cfg.jobs`` spawned processes (:func:`_train_in_worker`), in order."""
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no inherited torch thread pools or locks
        jobs = min(self.cfg.jobs, len(runs))
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            args = (type(self), self.cfg, str(self.run_dir), self.resume)
            futures = [pool.submit(_train_in_worker, *args, run) for run in runs]
            done = [f.result() for f in futures]
        out = []
        for (variant, *_), (weights, curve, cpu_s) in zip(runs, done):
            actor = self.build_model(self.cfg, variant)
            state = torch.load(io.BytesIO(weights), map_location=self.device, weights_only=True)
            actor.load_state_dict(state)
            out.append((actor.to(self.device).eval(), curve, cpu_s))
        return out

    def _train_one(self, variant: str, algo: str, st: ObsSetting, k: int) -> _Trained:
        """Train one run; returns its actor (eval mode), learning curve and CPU seconds."""
        from flowfields.rl import build_run

        cfg = self.cfg
        run = build_run(
            algo,
            cfg.env_id,
            _agent_cfg(cfg, st),
            seed=cfg.seed + k,
            device=self.device,
            buffer_size=min(cfg.buffer_size, cfg.steps),
            batch_size=cfg.batch_size,
            learning_starts=cfg.learning_starts,
            eval_episodes=cfg.eval_episodes,
            **st.env_kwargs(),
        )
        self.fit(
            variant,
            run.state,
            run.step_fn,
            steps=cfg.steps,
            eval_fn=run.eval_fn,
            eval_every=cfg.eval_every,
            checkpoint_every=cfg.checkpoint_every,
            seed=cfg.seed + k,
            log_every=100,
        )
        curve = [(s, v["return"]) for s, v in run.state.evals]
        # the CPU seconds of every segment of a resumed run (evaluation included)
        return run.agent.actor.eval(), curve, run.state.cpu_s

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        self._evaluate_returns()
        self._measure()

    def _evaluate_returns(self) -> None:
        cfg, m = self.cfg, self.metrics
        rows = []
        for st in self.settings(cfg):
            for algo in ("sac", "smac"):
                prefix = st.prefix
                finals = [m[f"{prefix}{algo}_seed{k}/final_return"] for k in range(cfg.seeds)]
                mean, se = mean_se(finals)
                m[f"{prefix}{algo}/return_mean"], m[f"{prefix}{algo}/return_se"] = mean, se
                rows.append(
                    {
                        "task": st.title,
                        "algo": algo,
                        "return_mean": mean,
                        "return_se": se,
                        "per_seed": [round(x, 1) for x in finals],
                    }
                )
        self.tables["returns"] = rows

    def _measure(self) -> None:
        cfg, m = self.cfg, self.metrics
        est = estimator_check(cfg.estimator_samples, ESTIMATOR_KS, seed=cfg.seed)
        self.estimator = est
        m["entropy_exact"] = est["H"]
        for k, (mean, se) in est["K"].items():
            m[f"entropy_K{k}"], m[f"entropy_K{k}_se"] = mean, se
        m["entropy_naive"] = est["naive"][0]
        self._measure_cost()

    def _measure_cost(self, filter_window: int = 0, filter_aux: float = 0.0) -> None:
        """Update CPU time of SAC and SMAC at K = 8, 32 (with the recurrent filter when
        ``filter_window > 0``, and its auxiliary loss when ``filter_aux > 0``) into the
        metrics."""
        cfg, m = self.cfg, self.metrics
        cost = update_cost((8, 32), cfg.cost_hidden, cfg.cost_batch, cfg.cost_repeats, cfg.seed,
                           filter_window=filter_window, filter_aux=filter_aux)  # fmt: skip
        for name, sec in cost.items():
            m[f"update_ms/{name}"] = 1e3 * sec
        m["cost_ratio_K8"] = cost["smac_K8"] / cost["sac"]
        m["cost_ratio_K32"] = cost["smac_K32"] / cost["sac"]

    def _estimator_claim(self) -> Claim:
        est, H = self.estimator, self.estimator["H"]
        small = [k for k in ESTIMATOR_KS if k <= 64]
        below = all(est["K"][k][0] <= H + 3 * est["K"][k][1] for k in small)
        rising = all(d[0] >= -3 * d[1] for d in est["diff"].values())
        gap = abs(est["K"][1024][0] - H)
        naive_above = est["naive"][0] > H + 3 * est["naive"][1]
        means = ", ".join(f"K={k}: {est['K'][k][0]:.3f}" for k in ESTIMATOR_KS)
        return Claim(
            id="estimator-lower-bound",
            statement="SMAC's entropy estimate H_K is a lower bound, non-decreasing in K and "
            "exact as K grows; the naive variational estimate lies above the entropy.",
            measured=f"H = {H:.4f} (quadrature); {means}; naive {est['naive'][0]:.3f}; "
            f"|H_1024 - H| = {gap:.4f}",
            threshold="mean H_K <= H + 3 s.e. (K <= 64), each increment >= -3 s.e., "
            "|H_1024 - H| <= 0.02, naive > H + 3 s.e.",
            holds=bool(below and rising and gap <= 0.02 and naive_above),
            note=f"s ~ N(0,1), a|s ~ N(1.5 tanh(3s), 0.3^2); {self.cfg.estimator_samples} "
            "actions, common random numbers across K.",
        )

    @property
    def smoke(self) -> bool:
        """A smoke-run budget: the return claims are not made (``cfg.claim_steps``)."""
        return self.cfg.steps < self.cfg.claim_steps

    def _budget(self) -> str:
        cfg = self.cfg
        return f"{cfg.seeds} seeds x {cfg.steps} steps, {cfg.hidden} units"

    def full_only(self, claims: list[Claim]) -> list[Claim]:
        """``claims`` unless this is a smoke run; then they are listed in the ``full_preset_only``
        table (id, statement, what was measured) and not made."""
        if not self.smoke:
            return claims
        self.tables["full_preset_only"] = [
            {
                "claim": c.id,
                "statement": c.statement,
                "measured_at_smoke_budget": c.measured,
                "why": f"full preset only: {self.cfg.steps} steps < claim_steps="
                f"{self.cfg.claim_steps}, the task is not learned yet",
            }
            for c in claims
        ]
        return []

    def _cost_claim(self) -> Claim:
        cfg, m = self.cfg, self.metrics
        return Claim(
            id="smac-low-cost",
            statement="A SMAC update costs <= 1.5x a SAC update at K = 8, <= 2.5x at K = 32.",
            measured=f"K=8: {m['cost_ratio_K8']:.2f}x, K=32: {m['cost_ratio_K32']:.2f}x",
            threshold="<= 1.5 and <= 2.5",
            holds=bool(m["cost_ratio_K8"] <= 1.5 and m["cost_ratio_K32"] <= 2.5),
            note=f"CPU process time, one thread, {cfg.cost_hidden} units, batch "
            f"{cfg.cost_batch}; median of {cfg.cost_repeats} interleaved rounds.",
        )

    def _robust_claim(self, prefix: str, what: str) -> Claim:
        cfg, m = self.cfg, self.metrics
        ps, pm = m[f"{prefix}sac/return_mean"], m[f"{prefix}smac/return_mean"]
        return Claim(
            id="smac-pomdp-robust",
            statement="SMAC is more robust than SAC without velocity observations.",
            measured=f"SMAC {pm:.1f} vs SAC {ps:.1f}",
            threshold="SMAC mean > SAC mean (Pendulum without angular velocity)",
            holds=bool(pm > ps),
            note=f"{self._budget()}; observation (cos, sin) only (flicker {cfg.pomdp_flicker}, "
            f"noise {cfg.pomdp_noise}), {what}.",
        )

    def _return_claims(self) -> list[Claim]:
        m = self.metrics
        lo, hi = SB3_PENDULUM[0] - SB3_PENDULUM[1], SB3_PENDULUM[0] + SB3_PENDULUM[1]
        sac, smac = m["sac/return_mean"], m["smac/return_mean"]
        se_diff = math.hypot(m["sac/return_se"], m["smac/return_se"])
        claims = [
            Claim(
                id="sac-matches-sb3",
                statement="Our SAC matches stable-baselines3 on Pendulum-v1 at 20k steps "
                "(rl-baselines3-zoo: -157 +- 89).",
                measured=round(sac, 1),
                threshold=f"mean final return in [{lo:.0f}, {hi:.0f}]",
                holds=bool(lo <= sac <= hi),
                note=f"{self._budget()}; deterministic evaluation, {self.cfg.eval_episodes} "
                "episodes.",
            ),
            Claim(
                id="smac-at-least-sac",
                statement="SMAC is at least as good as SAC on Pendulum.",
                measured=f"SMAC {smac:.1f} vs SAC {sac:.1f} (s.e. of difference {se_diff:.1f})",
                threshold="SMAC mean >= SAC mean - 2 s.e. of the difference",
                holds=bool(smac >= sac - 2 * se_diff) if math.isfinite(se_diff) else smac >= sac,
                note=f"{self._budget()}.",
            ),
        ]
        if self.cfg.pomdp:
            claims.append(self._robust_claim("pomdp_", "no recurrent filter (see smac-pomdp)"))
        return claims

    def claims(self) -> list[Claim]:
        return [self._estimator_claim(), self._cost_claim(), *self.full_only(self._return_claims())]

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt = self.plt
        settings = self.settings(self.cfg)
        fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 3.5), squeeze=False)
        for ax, st in zip(axes[0], settings):
            prefix = st.prefix
            for algo, color in (("sac", "C0"), ("smac", "C3")):
                curves = [self.curves[f"{prefix}{algo}_seed{k}"] for k in range(self.cfg.seeds)]
                steps = [s for s, _ in curves[0]]
                stats = [mean_se([c[i][1] for c in curves]) for i in range(len(steps))]
                mean = [s[0] for s in stats]
                se = [0.0 if math.isnan(s[1]) else s[1] for s in stats]
                ax.plot(steps, mean, color=color, label=algo.upper())
                ax.fill_between(
                    steps,
                    [a - b for a, b in zip(mean, se)],
                    [a + b for a, b in zip(mean, se)],
                    color=color,
                    alpha=0.2,
                )
            ax.set_xlabel("environment steps")
            ax.set_ylabel("deterministic return")
            ax.set_title(st.title)
            ax.legend()
        fig.tight_layout()
        self.save_figure(fig, "learning_curves.png")
        plt.close(fig)


EXPERIMENT = SMACPendulum

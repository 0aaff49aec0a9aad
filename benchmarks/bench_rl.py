"""SAC / SMAC (arXiv:2210.00999): our SAC vs stable-baselines3's SAC, and SMAC's update cost.

Run: ``python -m benchmarks.bench_rl [--quick] [--steps N --seeds S] [--out PATH]``; writes
``benchmarks/results/rl.md`` (or ``PATH``: a check that leaves the recorded results alone),
keeping the sections other scripts wrote there (``bench_rl_mujoco``'s HalfCheetah returns).

1. One update (temperature, critic, actor, target) on Pendulum-sized inputs, same networks
   (256-256 ReLU), batch 256, Adam lr 1e-3: ``flowfields.rl.SAC.update`` vs stable-baselines3
   ``SAC.train(gradient_steps=1)`` on a filled replay buffer, interleaved
   (:func:`benchmarks.timing.compare`); and SMAC at K = 0, 8, 32 against our SAC.
2. End to end: environment steps per second of training (act, step, store, update), ours
   through :func:`flowfields.engine.fit` vs ``SAC.learn``, interleaved in chunks of 100 steps.
3. Returns at equal step budgets on Pendulum-v1 (rl-baselines3-zoo settings: lr 1e-3, the rest
   SB3 defaults): both trained with the same seeds and evaluated with deterministic actions on
   the same 10 seeded episodes by :func:`flowfields.rl.evaluate_policy`. ``--returns-only``
   measures just this and rewrites its section of the results file.
4. Vector environments: collecting transitions (policy act + environment step) with our
   one-environment :class:`flowfields.rl.EnvCollector` vs gymnasium's ``SyncVectorEnv`` with N
   environments and one batched policy call, per transition, interleaved; and what that would
   save in a training step (one update per transition). ``--collection-only`` measures just
   this and rewrites its section of the results file.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import compare, machine, markdown_table
from flowfields.engine import fit
from flowfields.report import mean_se
from flowfields.rl import SAC, SMAC, AgentConfig, Batch, build_run, evaluate_policy

__all__ = ["main"]

OUT = Path(__file__).resolve().parent / "results" / "rl.md"
ENV = "Pendulum-v1"
HIDDEN, BATCH, LR = 256, 256, 1e-3


def _sb3(seed: int, learning_starts: int = 100, *, env: str = ENV, lr: float = LR) -> Any:
    """SB3's SAC with our networks and batch (256-256, batch 256) on ``env``."""
    from stable_baselines3 import SAC as SB3SAC

    return SB3SAC(
        "MlpPolicy",
        env,
        learning_rate=lr,
        batch_size=BATCH,
        learning_starts=learning_starts,
        policy_kwargs={"net_arch": [HIDDEN, HIDDEN]},
        seed=seed,
        device="cpu",
        verbose=0,
    )


def _batch() -> Batch:
    torch.manual_seed(0)
    return Batch(
        obs=torch.randn(BATCH, 3),
        action=torch.rand(BATCH, 1) * 2 - 1,
        reward=torch.randn(BATCH),
        next_obs=torch.randn(BATCH, 3),
        terminated=torch.zeros(BATCH),
    )


def bench_updates(rounds: int) -> tuple[list[Any], list[Any]]:
    model = _sb3(0, learning_starts=1000)
    model.learn(1000)  # fills the buffer with random actions, no update yet
    model.learning_starts = 0
    cfg = AgentConfig(hidden=HIDDEN, lr=LR)
    sac = SAC(3, 1, cfg)
    st = sac.train_state()
    batch = _batch()
    peer = [
        compare(
            "SAC update, 256-256, batch 256",
            lambda: sac.update(st, batch),
            lambda: model.train(gradient_steps=1, batch_size=BATCH),
            rounds=rounds,
        )
    ]
    smac_rows = []
    for k in (0, 8, 32):
        agent = SMAC(3, 1, AgentConfig(hidden=HIDDEN, lr=LR, n_particles=k))
        sk = agent.train_state()
        smac_rows.append(
            compare(
                f"SMAC K={k} update vs our SAC",
                functools.partial(agent.update, sk, batch),
                lambda: sac.update(st, batch),
                rounds=rounds,
            )
        )
    return peer, smac_rows


def bench_end_to_end(rounds: int, chunk: int = 100) -> Any:
    run = build_run("sac", ENV, AgentConfig(hidden=HIDDEN, lr=LR), seed=0, batch_size=BATCH)
    fit(run.state, run.step_fn, steps=200, progress=False)
    model = _sb3(0)
    model.learn(200)

    def ours() -> None:
        fit(run.state, run.step_fn, steps=run.state.step + chunk, progress=False, log_every=chunk)

    def peer() -> None:
        model.learn(chunk, reset_num_timesteps=False)

    return compare(
        f"training, {chunk} env steps (act + step + store + update)",
        ours,
        peer,
        rounds=rounds,
        inner=1,
        warmup=0,
    )


class _SB3Policy:
    """SB3's actor behind ``act(obs, deterministic)`` with actions in [-1, 1]."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        with torch.no_grad():
            return self.model.policy.actor(obs, deterministic=deterministic)


def bench_returns(steps: int, seeds: int) -> list[dict[str, Any]]:
    rows = []
    for seed in range(seeds):
        t0 = time.process_time()
        run = build_run("sac", ENV, AgentConfig(hidden=HIDDEN, lr=LR), seed=seed, batch_size=BATCH)
        fit(run.state, run.step_fn, steps=steps, progress=False, seed=seed, log_every=500)
        ours_s = time.process_time() - t0
        ours = statistics.fmean(evaluate_policy(run.agent.actor, ENV, 10))
        t0 = time.process_time()
        model = _sb3(seed)
        model.learn(steps)
        peer_s = time.process_time() - t0
        peer = statistics.fmean(evaluate_policy(_SB3Policy(model), ENV, 10))
        rows.append({"seed": seed, "ours": ours, "sb3": peer, "ours_s": ours_s, "sb3_s": peer_s})
    return rows


def bench_collection(rounds: int, n_envs: tuple[int, ...] = (4, 16)) -> list[Any]:
    """Per-transition collection time: our collector (one env) vs ``SyncVectorEnv(N)``."""
    import gymnasium as gym

    from flowfields.rl import EnvCollector, TanhGaussianPolicy

    torch.manual_seed(0)
    policy = TanhGaussianPolicy(3, 1, HIDDEN, 2)
    col = EnvCollector(ENV, seed=0)
    chunk = 64

    def ours() -> None:
        for _ in range(chunk):
            col.step(policy.act(col.obs[None])[0])

    rows = []
    for n in n_envs:
        venv = gym.vector.SyncVectorEnv([lambda: gym.make(ENV) for _ in range(n)])
        state = {"obs": venv.reset(seed=0)[0]}
        space: Any = venv.single_action_space
        bounds = (space.low, space.high)

        def vector(venv: Any = venv, state: dict = state, n: int = n, b: Any = bounds) -> None:
            for _ in range(chunk // n):
                a = policy.act(torch.as_tensor(state["obs"], dtype=torch.float32)).numpy()
                state["obs"] = venv.step(b[0] + (a + 1.0) * 0.5 * (b[1] - b[0]))[0]

        rows.append(
            compare(
                f"collect {chunk} transitions: 1 env vs SyncVectorEnv({n})",
                ours,
                vector,
                rounds=rounds,
            )
        )
        venv.close()
    return rows


def collection_section(rows: list[Any], update_ms: float) -> list[str]:
    """The markdown of the vector-environment measurement."""
    lines = [
        "## Vector environments",
        "",
        f"Collecting transitions on {ENV} (policy 256-256 acting, environment stepping), our "
        "one-environment collector vs gymnasium's `SyncVectorEnv` with one batched policy call "
        "for N environments, interleaved:",
        "",
        markdown_table(rows, "vector"),
        "",
    ]
    for r in rows:
        ours_t, vec_t = r.ours_ms / 64, r.peer_ms / 64
        saved = (ours_t - vec_t) / (ours_t + update_ms)
        lines.append(
            f"- {r.name.split(': ')[1]}: {ours_t:.3f} vs {vec_t:.3f} ms per transition; with "
            f"one {update_ms:.1f} ms update per transition a training step would be "
            f"{100 * saved:.1f}% shorter."
        )
    lines += [
        "",
        "With one gradient update per environment step the update dominates, so the training "
        "loop keeps one environment per process (vector environments would pay off only with "
        "far fewer updates per transition, or slower simulators).",
        "",
    ]
    return lines


def _rewrite_section(text: str, header: str, section: list[str]) -> str:
    """``text`` with the markdown section starting at ``header`` replaced (or appended)."""
    if header not in text:
        return text.rstrip("\n") + "\n\n" + "\n".join(section)
    head, rest = text.split(header, 1)
    tail = rest.split("\n## ", 1)
    after = "\n## " + tail[1] if len(tail) > 1 else ""
    return head + "\n".join(section).rstrip("\n") + "\n" + after


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, 2,000-step returns")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--collection-only", action="store_true", help="only the vector-env part")
    ap.add_argument("--returns-only", action="store_true", help="only the returns at equal steps")
    ap.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT})")
    args = ap.parse_args(argv)
    out: Path = args.out
    torch.set_num_threads(1)
    t_start, load0 = time.perf_counter(), os.getloadavg()[0]
    rounds = 5 if args.quick else 11
    if args.collection_only:
        sac, batch = SAC(3, 1, AgentConfig(hidden=HIDDEN, lr=LR)), _batch()
        st = sac.train_state()
        upd = compare("update", lambda: sac.update(st, batch), lambda: None, rounds=rounds)
        section = collection_section(bench_collection(rounds), upd.ours_ms)
        section.insert(2, f"Command: `python -m benchmarks.bench_rl --collection-only` "
                       f"({time.perf_counter() - t_start:.0f} s, 1-min load average "
                       f"{load0:.1f}).\n")  # fmt: skip
        old = out.read_text() if out.exists() else "# SAC / SMAC (arXiv:2210.00999)\n"
        out.write_text(_rewrite_section(old, "## Vector environments", section))
        print("\n".join(section))
        return 0
    steps = args.steps or (2000 if args.quick else 20_000)
    seeds = args.seeds or (1 if args.quick else 3)
    if args.returns_only:
        rets = bench_returns(steps, seeds)
        section = returns_section(rets, steps, seeds, time.perf_counter() - t_start)
        old = out.read_text() if out.exists() else "# SAC / SMAC (arXiv:2210.00999)\n"
        out.write_text(_rewrite_section(old, section[0], section))
        print("\n".join(section))
        return 0
    peer, smac_rows = bench_updates(rounds)
    e2e = bench_end_to_end(3 if args.quick else 7)
    rets = bench_returns(steps, seeds)
    vec = collection_section(bench_collection(rounds), peer[0].ours_ms)
    load = os.getloadavg()[0]
    lines = [
        "# SAC / SMAC (arXiv:2210.00999) vs stable-baselines3",
        "",
        f"Command: `python -m benchmarks.bench_rl{' --quick' if args.quick else ''} --steps "
        f"{steps} --seeds {seeds}` ({time.perf_counter() - t_start:.0f} s). Machine: "
        f"{machine()}. Shared machine (1-min load average {load0:.1f} at the start, {load:.1f} "
        "at the end): absolute times are noisy; the interleaved ratios less so.",
        "",
        "## Update and training time",
        "",
        "Wall time per call, interleaved (ours / peer below 1: ours faster):",
        "",
        markdown_table([*peer, e2e], "sb3"),
        "",
        f"End to end: ours {100 / e2e.ours_ms * 1e3:.0f} env steps/s, stable-baselines3 "
        f"{100 / e2e.peer_ms * 1e3:.0f} env steps/s (one environment, one update per step).",
        "",
        "## SMAC's update cost",
        "",
        "SMAC's update against our SAC's (same trunk; the K + 1 latents pass only the head):",
        "",
        markdown_table(smac_rows, "our SAC"),
        "",
        *returns_section(rets, steps, seeds),
        *vec,
    ]
    text = "\n".join(lines)
    old = out.read_text() if out.exists() else ""
    for header in _other_sections(old, text):  # e.g. bench_rl_mujoco's HalfCheetah section
        text = _rewrite_section(text, header, _section_of(old, header))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


def returns_section(
    rets: list[dict[str, Any]], steps: int, seeds: int, wall: float | None = None
) -> list[str]:
    """The markdown of the Pendulum returns at equal steps (:func:`bench_returns`)."""
    ours, peer = [r["ours"] for r in rets], [r["sb3"] for r in rets]
    (mo, so), (mp, sp) = mean_se(ours), mean_se(peer)
    diff = mean_se([o - p for o, p in zip(ours, peer)])
    return [
        f"## Returns at equal steps: {ENV}",
        "",
        f"Returns on {ENV} after {steps} steps, {seeds} seeds (deterministic, 10 seeded "
        "episodes; same hyper-parameters: lr 1e-3, batch 256, 256-256, learning_starts 100; "
        f"`python -m benchmarks.bench_rl --returns-only --steps {steps} --seeds {seeds}` "
        + ("" if wall is None else f"({wall:.0f} s) ")
        + "rewrites just this section):",
        "",
        "| seed | ours | stable-baselines3 | ours CPU s | sb3 CPU s |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {r['seed']} | {r['ours']:.1f} | {r['sb3']:.1f} | {r['ours_s']:.0f} | "
            f"{r['sb3_s']:.0f} |"
            for r in rets
        ),
        f"| mean ± s.e. | {mo:.1f} ± {so:.1f} | {mp:.1f} ± {sp:.1f} | | |",
        "",
        f"Ours − stable-baselines3, paired by seed: {diff[0]:.1f} ± {diff[1]:.1f} (s.e.); CPU "
        f"{sum(r['ours_s'] for r in rets) / sum(r['sb3_s'] for r in rets):.2f}x SB3's.",
        "",
    ]


def _headers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("## ")]


def _other_sections(old: str, new: str) -> list[str]:
    """Headers of ``old``'s sections that ``new`` does not have (other scripts wrote them)."""
    return [h for h in _headers(old) if h not in _headers(new)]


def _section_of(text: str, header: str) -> list[str]:
    """The lines of ``text``'s section starting at ``header`` (up to the next ``## ``)."""
    rest = text.split(header + "\n", 1)[1].split("\n## ", 1)[0]
    return [header, *rest.rstrip("\n").split("\n"), ""]


if __name__ == "__main__":
    raise SystemExit(main())

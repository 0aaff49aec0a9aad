"""Our SAC vs stable-baselines3's SAC: returns at equal steps on a MuJoCo task (HalfCheetah-v5).

Run: ``python -m benchmarks.bench_rl_mujoco [--steps N --seeds S] [--ours-from RUN_DIR ...]
[--out PATH]``; rewrites the "Returns at equal steps: <env>" section of
``benchmarks/results/rl.md`` (or ``PATH``).

Both agents use rl-baselines3-zoo's SAC settings for MuJoCo (the ``smac-halfcheetah``
experiment's: lr 3e-4, batch 256, 256-256 ReLU, 10k uniformly random warm-up steps, buffer
1e6, gamma 0.99, tau 0.005, automatic temperature from 1.0 with target entropy -dim(A)), the
same integer seeds, and the same evaluation: every ``eval_every`` steps, 10 episodes with
deterministic actions from ``reset(seed=10_000 + i)`` (:func:`flowfields.rl.evaluate_policy`).

By default ours is trained here too, interleaved with the peer seed by seed (one process, one
torch thread). A 100k-step run costs about 20 CPU minutes per agent and seed on the 2-core
machine, so ``--ours-from`` instead reads our SAC's learning curves from a finished
``flowfields run smac-halfcheetah`` directory (its ``metrics.json``: the same settings and
seeds, trained by the experiment), and only the peer is trained here; the table says which.
``--peer-cache PATH`` keeps the peer's finished seeds in a JSON file, so the peer can be
trained while the experiment still runs and the section assembled once it has finished.
CPU seconds include the evaluations for both agents.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_rl import _rewrite_section, _sb3, _SB3Policy
from flowfields.engine import fit
from flowfields.report import mean_se
from flowfields.rl import AgentConfig, build_run, evaluate_policy

__all__ = ["main"]

OUT = Path(__file__).resolve().parent / "results" / "rl.md"
ENV = "HalfCheetah-v5"
HIDDEN, BATCH, LR, WARMUP, EPISODES = 256, 256, 3e-4, 10_000, 10


def _peer_run(seed: int, steps: int, eval_every: int) -> tuple[list[tuple[int, float]], float]:
    """SB3 SAC trained in ``eval_every`` chunks; its learning curve and training CPU s."""
    model = _sb3(seed, WARMUP, env=ENV, lr=LR)
    curve, t0 = [], time.process_time()
    for done in range(eval_every, steps + 1, eval_every):
        model.learn(eval_every, reset_num_timesteps=False)
        curve.append((done, statistics.fmean(evaluate_policy(_SB3Policy(model), ENV, EPISODES))))
    return curve, time.process_time() - t0


def _our_run(seed: int, steps: int, eval_every: int) -> tuple[list[tuple[int, float]], float]:
    """Our SAC through :func:`flowfields.engine.fit`; its learning curve and training CPU s."""
    run = build_run(
        "sac", ENV, AgentConfig(hidden=HIDDEN, lr=LR), seed=seed, batch_size=BATCH,
        learning_starts=WARMUP, eval_episodes=EPISODES, buffer_size=steps,
    )  # fmt: skip
    res = fit(run.state, run.step_fn, steps=steps, eval_fn=run.eval_fn, eval_every=eval_every,
              progress=False, seed=seed, log_every=1000)  # fmt: skip
    return [(s, v["return"]) for s, v in res.evals], res.cpu_s


def _ours_from(
    run_dirs: list[Path], seeds: int
) -> list[tuple[list[tuple[int, float]], float | None]]:
    """Our SAC's curves and CPU seconds from ``smac-halfcheetah`` run directories.

    Seed ``k`` is read from the first directory whose run has it, so that a run resumed with
    more seeds (whose older seeds were trained in an earlier segment) can be read with the
    directory of that segment first.
    """
    found: dict[int, tuple[list[tuple[int, float]], float | None]] = {}
    for run_dir in run_dirs:
        cfg = json.loads((run_dir / "config.json").read_text())
        if cfg.get("env_id") != ENV:
            raise SystemExit(f"{run_dir} is not a {ENV} run: {cfg}")
        m = json.loads((run_dir / "metrics.json").read_text())
        curves = json.loads((run_dir / "learning_curves.json").read_text())
        for k in range(min(cfg.get("seeds", 0), seeds)):
            curve = [(int(s), float(r)) for s, r in curves[f"sac_seed{k}"]]
            found.setdefault(k, (curve, m.get(f"sac_seed{k}/train_cpu_s")))
    missing = [k for k in range(seeds) if k not in found]
    if missing:
        raise SystemExit(f"seeds {missing} are in none of {[str(d) for d in run_dirs]}")
    return [found[k] for k in range(seeds)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=10_000)
    ap.add_argument(
        "--ours-from",
        type=Path,
        action="append",
        default=None,
        help="a smac-halfcheetah run dir (repeat: seed k from the first that has it)",
    )
    ap.add_argument("--peer-cache", type=Path, default=None, help="JSON of the peer's seeds")
    ap.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT})")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    cache: Path | None = args.peer_cache
    peers = json.loads(cache.read_text()) if cache and cache.exists() else {}
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        mine: Any = None if args.ours_from else _our_run(seed, args.steps, args.eval_every)
        if str(seed) not in peers:
            peers[str(seed)] = _peer_run(seed, args.steps, args.eval_every)
            if cache:
                cache.write_text(json.dumps(peers))
        rows.append({"seed": seed, "ours": mine, "sb3": peers[str(seed)]})
        print(f"seed {seed}: sb3 {peers[str(seed)][0][-1][1]:.1f}", flush=True)
    if args.ours_from:
        for row, mine in zip(rows, _ours_from(args.ours_from, args.seeds)):
            row["ours"] = mine
    section = _section(rows, args, time.perf_counter() - t_start)
    old = args.out.read_text() if args.out.exists() else "# SAC / SMAC (arXiv:2210.00999)\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_rewrite_section(old, f"## Returns at equal steps: {ENV}", section))
    print("\n".join(section))
    return 0


def _section(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> list[str]:
    dirs = ", ".join(f"`{d}`" for d in args.ours_from or [])
    src = (f"ours read from {dirs} (the `smac-halfcheetah` experiment's SAC runs)"
           if args.ours_from else "both trained here, seed by seed")  # fmt: skip
    cmd = f"python -m benchmarks.bench_rl_mujoco --steps {args.steps} --seeds {args.seeds}"
    for _ in args.ours_from or []:
        cmd += " --ours-from RUN_DIR"
    finals = {a: [r[a][0][-1][1] for r in rows] for a in ("ours", "sb3")}
    (mo, so), (mp, sp) = mean_se(finals["ours"]), mean_se(finals["sb3"])
    diff = mean_se([o - p for o, p in zip(finals["ours"], finals["sb3"])])
    steps = [s for s, _ in rows[0]["sb3"][0]]
    lines = [
        f"## Returns at equal steps: {ENV}",
        "",
        f"Command: `{cmd}` ({wall:.0f} s; {src}). rl-baselines3-zoo's MuJoCo SAC settings for "
        "both (lr 3e-4, batch 256, 256-256, 10k random warm-up steps); deterministic "
        f"evaluation on the same {EPISODES} seeded episodes.",
        "",
        "| seed | ours | stable-baselines3 | ours CPU s | sb3 CPU s |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {r['seed']} | {r['ours'][0][-1][1]:.1f} | {r['sb3'][0][-1][1]:.1f} | "
            f"{_s(r['ours'][1])} | {_s(r['sb3'][1])} |"
            for r in rows
        ),
        f"| mean ± s.e. | {mo:.1f} ± {so:.1f} | {mp:.1f} ± {sp:.1f} | | |",
        "",
        f"Ours − stable-baselines3, paired by seed: {diff[0]:.1f} ± {diff[1]:.1f} (s.e.).",
        "",
        "Learning curves (mean over seeds of the 10-episode returns):",
        "",
        "| step | " + " | ".join(str(s) for s in steps) + " |",
        "|---|" + "---:|" * len(steps),
        *(
            f"| {name} | "
            + " | ".join(f"{np.mean([r[a][0][i][1] for r in rows]):.0f}" for i in range(len(steps)))
            + " |"
            for name, a in (("ours", "ours"), ("stable-baselines3", "sb3"))
        ),
        "",
    ]
    return lines


def _s(x: float | None) -> str:
    return "" if x is None else f"{x:.0f}"


if __name__ == "__main__":
    raise SystemExit(main())

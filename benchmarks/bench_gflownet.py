"""GFlowNets (arXiv:2209.02606): our training vs torchgfn 2.4.1 on HyperGrid, interleaved.

Run: ``python -m benchmarks.bench_gflownet [--quick] [--objectives tb,db,...]``; writes
``benchmarks/results/gflownet.md`` (``--out`` elsewhere). Trajectory balance on 2-D (300
iterations) and 4-D (1,000) H = 8 — the issue's budgets — and the other objectives (DB,
SubTB(0.9), FM, ZVar) on 2-D at 300 iterations. ``--all-4d``: every objective on 4-D too
(``--no-2d --all-4d --objectives db,subtb,fm,zvar``: about 13 min of CPU for both sides
together at 1,000 iterations — measured: DB 3.2 min at 1,000, SubTB + FM + ZVar 5 min at
500 —; ``--iters-4d N`` shortens it); ``--hidden`` changes the MLPs' width (default 256) on
both sides.

torchgfn pins ``numpy < 2``, so it lives in its own virtual environment,
``benchmarks/.venv-torchgfn`` (created on first use: ``python -m venv`` then
``pip install torch==2.13.0 numpy==1.26.4`` then ``torchgfn==2.4.1``; gitignored; pip finds
the CPU torch 2.13.0 on this machine's disk and torchgfn on PyPI). Its side runs there as a
persistent worker (``benchmarks/_gflownet_peer.py``) driven from this process over pipes, so
the two trainings advance in alternating chunks of ``chunk`` iterations (the order swapped every
round) and machine drift hits both alike. Each side times its own chunk (the peer inside its
process: pipe latency excluded).

Same problem, same budget: HyperGrid (r0, r1, r2) = (0.1, 0.5, 2.0), K-hot features, P_F,
a learned P_B and (DB / SubTB) the state flow as separate ReLU MLPs (256 wide, 2 hidden
layers; FM: one edge-flow MLP), 128 on-policy trajectories per iteration, Adam 1e-3 with log Z
at 0.1, one torch thread each. After the same number of iterations the exact L1 distance
``sum_x |P_T(x) - R(x)/Z|`` of each trained policy is computed by dynamic programming over the
grid (:func:`flowfields.gflownet.exact_terminal_distribution`; the peer's forward logits,
backward log-probabilities and state flows on all states are sent back, loaded into a
:class:`~flowfields.gflownet.TabularPolicy` and go through the same DP), and each side's
estimate of log Z is read the same way
(:func:`flowfields.experiments.gflownet_hypergrid.log_z_estimate`: TB its log Z, DB / SubTB
``log F(s0)``, FM the log out-flow of ``s0``, ZVar the mean of ``log R + log P_B - log P_F``
over 4,096 fresh trajectories).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.timing import Comparison, machine, markdown_table
from flowfields.experiments._gflownet_train import gfn_state, reward_step
from flowfields.experiments.gflownet_hypergrid import log_z_estimate
from flowfields.gflownet import (
    LOSSES,
    HyperGrid,
    MLPPolicy,
    TabularPolicy,
    dag_table,
    exact_terminal_distribution,
    l1_error,
    target_distribution,
)

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "gflownet.md"
VENV = ROOT / "benchmarks" / ".venv-torchgfn"
PEER = ROOT / "benchmarks" / "_gflownet_peer.py"
NAMES = {"tb": "TB", "db": "DB", "subtb": "SubTB(0.9)", "fm": "FM", "zvar": "ZVar"}
SETTINGS = {"hidden": 256, "depth": 2, "batch": 128, "lr": 1e-3, "lr_log_z": 0.1, "seed": 0}


def ensure_venv() -> Path:
    """The torchgfn venv's python, building the venv if it is missing."""
    py = VENV / "bin" / "python"
    probe = [str(py), "-c", "import gfn, torch; print(torch.__version__)"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0", "numpy==1.26.4"], check=True)
    subprocess.run([*pip, "torchgfn==2.4.1"], check=True)
    return py


class Peer:
    """The torchgfn worker process."""

    def __init__(self, python: Path) -> None:
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen(
            [str(python), "-W", "ignore", str(PEER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, **cmd: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        if "error" in out:
            raise RuntimeError(out["error"])
        return out

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        except Exception:
            pass
        self.proc.wait(timeout=30)


def _ours(env: HyperGrid, loss: str):
    torch.manual_seed(SETTINGS["seed"])
    flow = loss in ("db", "subtb")
    # FM has no P_B (torchgfn's FMGFlowNet neither): building one would shift the RNG stream
    policy = MLPPolicy(
        env,
        int(SETTINGS["hidden"]),
        int(SETTINGS["depth"]),
        activation="relu",
        flow=flow,
        learn_pb=loss != "fm",
    )
    state = gfn_state(policy, SETTINGS["lr"], SETTINGS["lr_log_z"])
    step = reward_step(loss, int(SETTINGS["batch"]), lam=0.9)

    def train(iters: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(iters):
            step(state, state.step)
            state.step += 1
        return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3

    return policy, train


def peer_policy(env: HyperGrid, got: dict) -> TabularPolicy:
    """The peer's trained networks on every state, as a :class:`TabularPolicy`."""
    pol = TabularPolicy(env)
    rows = env.index(torch.tensor(got["states"]))
    pol.pf_table.data[rows] = torch.tensor(got["pf_logits"], dtype=torch.float64)
    if "log_pb" in got:
        pol.pb_table.data[rows] = torch.tensor(got["log_pb"], dtype=torch.float64)
    if "log_f" in got:
        pol.flow_table.data[rows] = torch.tensor(got["log_f"], dtype=torch.float64)
    if got.get("log_z") is not None:
        pol.log_z.data = torch.tensor(float(got["log_z"]), dtype=torch.float64)
    return pol


def run_case(peer: Peer, ndim: int, height: int, iters: int, chunk: int, loss: str) -> dict:
    """Train both sides for ``iters`` iterations of ``loss``, interleaved by ``chunk``."""
    env = HyperGrid(ndim, height)
    peer.ask(cmd="setup", loss=loss, ndim=ndim, height=height, threads=1, **SETTINGS)
    policy, ours_train = _ours(env, loss)
    t_ours, t_peer, ratios = [], [], []
    cpu_ours = cpu_peer = 0.0
    done, r = 0, 0
    while done < iters:
        k = min(chunk, iters - done)
        if r % 2 == 0:
            a, ca = ours_train(k)
            got = peer.ask(cmd="train", iters=k)
        else:
            got = peer.ask(cmd="train", iters=k)
            a, ca = ours_train(k)
        b, cb = got["ms"], got.get("cpu_ms", float("nan"))
        t_ours.append(a / k)
        t_peer.append(b / k)
        ratios.append(a / b)
        cpu_ours, cpu_peer = cpu_ours + ca, cpu_peer + cb
        done, r = done + k, r + 1
    table = dag_table(env)
    target = target_distribution(env, table)
    pt_ours = exact_terminal_distribution(env, policy, table)
    theirs = peer_policy(env, peer.ask(cmd="policy"))
    pt_peer = exact_terminal_distribution(env, theirs, table)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    comp = Comparison(
        name=f"{NAMES[loss]} iteration, HyperGrid {ndim}-D H={height}",
        ours_ms=statistics.median(t_ours),
        peer_ms=statistics.median(t_peer),
        ratio=statistics.median(ratios),
        ratio_q1=q[0],
        ratio_q3=q[2],
        rounds=len(ratios),
    )
    log_z = env.log_partition()
    return {
        "comparison": comp,
        "loss": loss,
        "ndim": ndim,
        "height": height,
        "iters": iters,
        "cpu_s_ours": cpu_ours / 1e3,
        "cpu_s_peer": cpu_peer / 1e3,
        "l1_ours": l1_error(pt_ours, target),
        "l1_peer": l1_error(pt_peer, target),
        "dlogz_ours": abs(log_z_estimate(loss, policy, 4096, 17) - log_z),
        "dlogz_peer": abs(log_z_estimate(loss, theirs, 4096, 17) - log_z),
    }


def cases(
    objectives: list[str],
    quick: bool,
    all_4d: bool,
    iters_4d: int | None = None,
    two_d: bool = True,
) -> list[tuple]:
    """``(ndim, height, iters, chunk, loss)``: each objective on 2-D, TB (``all_4d``: each
    objective) on 4-D; ``iters_4d`` overrides the 4-D budget (1,000; ``quick``: 200)."""
    out = [(2, 8, 300, 20, loss) for loss in objectives] if two_d else []
    four = objectives if all_4d else [x for x in objectives if x == "tb"]
    n4 = iters_4d if iters_4d is not None else (200 if quick else 1000)
    out += [(4, 8, n4, 20, loss) for loss in four]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4-D at 200 iterations only")
    parser.add_argument("--objectives", default=",".join(LOSSES), help="subset of tb,db,...")
    parser.add_argument("--all-4d", action="store_true", help="every objective on 4-D too")
    parser.add_argument("--iters-4d", type=int, default=None, help="4-D budget (default 1000)")
    parser.add_argument("--no-2d", action="store_true", help="skip the 2-D cases")
    parser.add_argument("--hidden", type=int, default=SETTINGS["hidden"], help="MLP width")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seed, both sides")
    parser.add_argument("--out", default=str(OUT), help="results file (markdown)")
    args = parser.parse_args(argv)
    if args.iters_4d is not None and args.iters_4d < 1:
        parser.error(f"--iters-4d: got {args.iters_4d}, expected a positive integer")
    if args.hidden < 1:
        parser.error(f"--hidden: got {args.hidden}, expected a positive integer")
    SETTINGS["hidden"], SETTINGS["seed"] = args.hidden, args.seed
    objectives = [x.strip() for x in args.objectives.split(",") if x.strip()]
    if not objectives or any(x not in LOSSES for x in objectives):
        parser.error(f"--objectives: got {args.objectives!r}, expected names from {LOSSES}")
    torch.set_num_threads(1)
    peer = Peer(ensure_venv())
    t0 = time.process_time()
    try:
        todo = cases(objectives, args.quick, args.all_4d, args.iters_4d, not args.no_2d)
        results = []
        for c in todo:
            results.append(run_case(peer, *c))
            print(
                json.dumps(
                    {**results[-1], "comparison": dataclasses.asdict(results[-1]["comparison"])}
                ),
                file=sys.stderr,
                flush=True,
            )
    finally:
        peer.close()
    print(f"driver CPU {time.process_time() - t0:.0f} s", file=sys.stderr)
    acc = [
        "| grid | objective | iterations x 128 | L1 ours | L1 torchgfn | abs dlogZ ours | "
        "abs dlogZ torchgfn | train CPU s ours | torchgfn | CPU ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        acc.append(
            f"| {res['ndim']}-D H={res['height']} | {NAMES[res['loss']]} | {res['iters']} | "
            f"{res['l1_ours']:.4f} | {res['l1_peer']:.4f} | {res['dlogz_ours']:.4f} | "
            f"{res['dlogz_peer']:.4f} | {res['cpu_s_ours']:.1f} | {res['cpu_s_peer']:.1f} | "
            f"{res['cpu_s_ours'] / res['cpu_s_peer']:.2f} |"
        )
    cmd = " ".join(["python -m benchmarks.bench_gflownet", *(argv or sys.argv[1:])])
    text = "\n".join(
        [
            "# GFlowNets vs torchgfn 2.4.1",
            "",
            f"Command: `{cmd.strip()}`. Machine: {machine()}; torchgfn in its own venv "
            "(`benchmarks/.venv-torchgfn`, torch 2.13.0, numpy 1.26), one thread.",
            "",
            "HyperGrid (0.1, 0.5, 2.0), K-hot features, P_F, a learned P_B and (DB, SubTB) the "
            f"state flow as separate ReLU MLPs {SETTINGS['hidden']} x 2 (FM: one edge-flow MLP), "
            "128 on-policy trajectories per iteration, Adam 1e-3 (TB's log Z 0.1), "
            f"seed {SETTINGS['seed']} on both sides; "
            "torchgfn's TBGFlowNet, DBGFlowNet, SubTBGFlowNet (geometric_within, lambda 0.9), "
            "FMGFlowNet and LogPartitionVarianceGFlowNet. Time per training iteration "
            "(sampling, loss, backward, Adam), median over interleaved chunks of 20 iterations "
            "(wall time on a shared machine: the ratio is the robust number):",
            "",
            markdown_table([r["comparison"] for r in results], "torchgfn"),
            "",
            "Exact L1 `sum_x |P_T(x) - R(x)/Z|` (dynamic programming over the grid, both "
            "policies through the same DP) and `|log Z estimate - log Z_true|` (TB: log Z; DB, "
            "SubTB: log F(s0); FM: log out-flow of s0; ZVar: mean of log R + log P_B - log P_F "
            "over 4,096 fresh trajectories) after the same number of trajectories, and each "
            "side's total CPU time of training (its own process):",
            "",
            *acc,
            "",
        ]
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

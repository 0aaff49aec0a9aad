"""GFlowNets (arXiv:2209.02606): our TB training vs torchgfn 2.4.1 on HyperGrid, interleaved.

Run: ``python -m benchmarks.bench_gflownet [--quick]``; writes
``benchmarks/results/gflownet.md``.

torchgfn pins ``numpy < 2``, so it lives in its own virtual environment,
``benchmarks/.venv-torchgfn`` (created on first use: ``python -m venv`` then
``pip install torch==2.13.0 torchgfn==2.4.1``; gitignored). Its side runs there as a
persistent worker (``benchmarks/_gflownet_peer.py``) driven from this process over pipes, so
the two trainings advance in alternating chunks of ``chunk`` iterations (the order swapped every
round) and machine drift hits both alike. Each side times its own chunk (the peer inside its
process: pipe latency excluded).

Same problem, same budget: HyperGrid (r0, r1, r2) = (0.1, 0.5, 2.0), K-hot features, P_F and
a learned P_B as separate ReLU MLPs (256 wide, 2 hidden layers), TB, 128 on-policy trajectories
per iteration, Adam 1e-3 with log Z at 0.1, one torch thread each. After the same number of
iterations the exact L1 distance ``sum_x |P_T(x) - R(x)/Z|`` of each trained policy is computed
by dynamic programming over the grid (:func:`flowfields.gflownet.exact_terminal_distribution`;
the peer's forward log-probabilities on all states are sent back and go through the same DP).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.timing import Comparison, machine, markdown_table
from flowfields.experiments._gflownet_train import gfn_state, reward_step
from flowfields.gflownet import (
    HyperGrid,
    MLPPolicy,
    dag_table,
    exact_terminal_distribution,
    l1_error,
    target_distribution,
    terminal_distribution_from_log_pf,
)

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "gflownet.md"
VENV = ROOT / "benchmarks" / ".venv-torchgfn"
PEER = ROOT / "benchmarks" / "_gflownet_peer.py"
SETTINGS = {"hidden": 256, "depth": 2, "batch": 128, "lr": 1e-3, "lr_log_z": 0.1, "seed": 0}


def ensure_venv() -> Path:
    """The torchgfn venv's python, building the venv if it is missing."""
    py = VENV / "bin" / "python"
    probe = [str(py), "-c", "import gfn, torch; print(torch.__version__)"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
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


def _ours(env: HyperGrid):
    torch.manual_seed(SETTINGS["seed"])
    policy = MLPPolicy(env, SETTINGS["hidden"], SETTINGS["depth"], activation="relu")
    state = gfn_state(policy, SETTINGS["lr"], SETTINGS["lr_log_z"])
    step = reward_step("tb", SETTINGS["batch"])

    def train(iters: int) -> float:
        t0 = time.perf_counter()
        for _ in range(iters):
            step(state, state.step)
            state.step += 1
        return (time.perf_counter() - t0) * 1e3

    return policy, train


def run_case(peer: Peer, ndim: int, height: int, iters: int, chunk: int) -> dict:
    """Train both sides for ``iters`` TB iterations, interleaved by ``chunk``."""
    env = HyperGrid(ndim, height)
    peer.ask(cmd="setup", ndim=ndim, height=height, threads=1, **SETTINGS)
    policy, ours_train = _ours(env)
    t_ours, t_peer, ratios = [], [], []
    done, r = 0, 0
    while done < iters:
        k = min(chunk, iters - done)
        if r % 2 == 0:
            a = ours_train(k)
            b = peer.ask(cmd="train", iters=k)["ms"]
        else:
            b = peer.ask(cmd="train", iters=k)["ms"]
            a = ours_train(k)
        t_ours.append(a / k)
        t_peer.append(b / k)
        ratios.append(a / b)
        done, r = done + k, r + 1
    table = dag_table(env)
    target = target_distribution(env, table)
    pt_ours = exact_terminal_distribution(env, policy, table)
    got = peer.ask(cmd="policy")
    rows = env.index(torch.tensor(got["states"]))
    log_pf = torch.empty(table.forward_mask.shape, dtype=torch.float64)
    log_pf[rows] = torch.tensor(got["log_pf"], dtype=torch.float64)
    pt_peer = terminal_distribution_from_log_pf(env, log_pf, table)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    comp = Comparison(
        name=f"TB iteration, HyperGrid {ndim}-D H={height}",
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
        "ndim": ndim,
        "height": height,
        "iters": iters,
        "l1_ours": l1_error(pt_ours, target),
        "l1_peer": l1_error(pt_peer, target),
        "dlogz_ours": abs(float(policy.log_z) - log_z),
        "dlogz_peer": abs(got["log_z"] - log_z),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4-D at 200 iterations only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = [(2, 8, 300, 20), (4, 8, 200 if args.quick else 1000, 20)]
    peer = Peer(ensure_venv())
    try:
        results = [run_case(peer, *c) for c in cases]
    finally:
        peer.close()
    acc = [
        "| grid | iterations x 128 | L1 ours | L1 torchgfn | abs dlogZ ours | abs dlogZ torchgfn |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        acc.append(
            f"| {res['ndim']}-D H={res['height']} | {res['iters']} | {res['l1_ours']:.4f} | "
            f"{res['l1_peer']:.4f} | {res['dlogz_ours']:.4f} | {res['dlogz_peer']:.4f} |"
        )
    cmd = "python -m benchmarks.bench_gflownet" + (" --quick" if args.quick else "")
    text = "\n".join(
        [
            "# GFlowNets vs torchgfn 2.4.1",
            "",
            f"Command: `{cmd}`. Machine: {machine()}; torchgfn in its own venv "
            "(`benchmarks/.venv-torchgfn`, torch 2.13.0, numpy 1.26), one thread.",
            "",
            "Trajectory balance on HyperGrid (0.1, 0.5, 2.0), K-hot features, P_F and a learned "
            "P_B as ReLU MLPs 256 x 2, 128 on-policy trajectories per iteration, Adam 1e-3 "
            "(log Z 0.1), seed 0 on both sides. Time per training iteration (sampling, loss, "
            "backward, Adam), median over interleaved chunks of 20 iterations:",
            "",
            markdown_table([r["comparison"] for r in results], "torchgfn"),
            "",
            "Exact L1 `sum_x |P_T(x) - R(x)/Z|` (dynamic programming over the grid, both "
            "policies through the same DP) and `|log Z - log Z_true|` after the same number of "
            "trajectories:",
            "",
            *acc,
            "",
        ]
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

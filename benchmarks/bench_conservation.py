"""Cost of divergence-free networks vs a plain MLP, and NCL vs PINN time-to-accuracy.

Run: ``.venv/bin/python -m benchmarks.bench_conservation [--quick]``; writes
``benchmarks/results/conservation.md``.

1. Per call and per gradient step (loss ``mean |v|²``, backward), batch 256, width 128, depth 3,
   at d = 2, 4, 8, 16, 32: ``DivFreeMatrixField`` and ``DivFreeVectorField`` (default ``jet``
   engine, and ``torch.func`` engine) against a plain MLP ``R^d -> R^d`` of the same width,
   interleaved (:func:`benchmarks.timing.compare`). A naive implementation (autograd loops over
   the outputs: d(d-1)/2 x d gradient calls for the matrix field, d x d x d for the Hessian of the
   vector field) is timed at small d for reference. The growth exponent is the least-squares
   slope of log(time) against log(d).
2. Taylor–Green: the ``conservation-fluid`` experiment (NCL vs penalty PINN, equal interleaved
   wall-clock), its time-to-accuracy table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.timing import Comparison, compare, machine
from flowfields.nn.divfree import DivFreeMatrixField, DivFreeVectorField

__all__ = ["main", "naive_matrix_field", "naive_vector_field"]

WIDTH, DEPTH, BATCH = 128, 3, 256


def _plain(d: int) -> nn.Module:
    layers: list[nn.Module] = []
    width = d
    for _ in range(DEPTH):
        layers += [nn.Linear(width, WIDTH), nn.SiLU()]
        width = WIDTH
    layers.append(nn.Linear(width, d))
    return nn.Sequential(*layers)


def naive_matrix_field(model: DivFreeMatrixField, x: torch.Tensor) -> torch.Tensor:
    """Row-wise divergence of A with one autograd call per (entry, coordinate) pair."""
    x = x.detach().requires_grad_(True)
    a = model.matrix(x)
    d = x.shape[1]
    rows = []
    for i in range(d):
        total = torch.zeros(x.shape[0])
        for j in range(d):
            if i != j:
                g = torch.autograd.grad(a[:, i, j].sum(), x, create_graph=True)[0]
                total = total + g[:, j]
        rows.append(total)
    return torch.stack(rows, 1)


def naive_vector_field(model: DivFreeVectorField, x: torch.Tensor) -> torch.Tensor:
    """``Δb - ∇ div b`` from the full Hessian of b, built with nested autograd loops."""
    x = x.detach().requires_grad_(True)
    b = model.potential(x)
    d = x.shape[1]
    jac = [torch.autograd.grad(b[:, i].sum(), x, create_graph=True)[0] for i in range(d)]
    hess = [
        [torch.autograd.grad(jac[i][:, j].sum(), x, create_graph=True)[0] for j in range(d)]
        for i in range(d)
    ]  # hess[i][j][:, k] = ∂_k ∂_j b_i
    lap = torch.stack([sum(hess[i][j][:, j] for j in range(d)) for i in range(d)], 1)
    grad_div = torch.stack([sum(hess[j][j][:, i] for j in range(d)) for i in range(d)], 1)
    return lap - grad_div


def _step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def go() -> None:
        fn().square().mean().backward()

    return go


def _slope(ds: list[int], ts: list[float]) -> float:
    lx = [math.log(d) for d in ds]
    ly = [math.log(t) for t in ts]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx
    )


def cost_table(dims: list[int], rounds: int, naive_max_d: int) -> tuple[str, dict]:
    rows: list[str] = []
    times: dict[str, dict[str, list[float]]] = {}
    head = (
        "| model | engine | d | mode | ours (ms) | plain MLP (ms) | ours/plain median [IQR] |\n"
        "|---|---|---:|---|---:|---:|---:|"
    )
    for d in dims:
        torch.manual_seed(0)
        x = torch.randn(BATCH, d)
        plain = _plain(d)
        cases = []
        for cls in (DivFreeMatrixField, DivFreeVectorField):
            for engine in ("jet", "func"):
                m = cls(d, hidden=WIDTH, depth=DEPTH, engine=engine)
                cases.append((cls.__name__, engine, (lambda m=m, x=x: m(x))))
            if d <= naive_max_d:
                m = cls(d, hidden=WIDTH, depth=DEPTH)
                naive = naive_matrix_field if cls is DivFreeMatrixField else naive_vector_field
                cases.append((cls.__name__, "naive", (lambda m=m, f=naive, x=x: f(m, x))))
        for name, engine, fn in cases:
            for mode in ("call", "step"):
                if mode == "call":
                    ours, peer = (lambda fn=fn: fn().detach()), (lambda p=plain, x=x: p(x).detach())
                else:
                    ours, peer = _step(fn), _step(lambda p=plain, x=x: p(x))
                c: Comparison = compare(f"{name} {engine} d={d} {mode}", ours, peer, rounds=rounds)
                rows.append(
                    f"| {name} | {engine} | {d} | {mode} | {c.ours_ms:.3f} | {c.peer_ms:.3f} | "
                    f"{c.ratio:.1f} [{c.ratio_q1:.1f}, {c.ratio_q3:.1f}] |"
                )
                key = f"{name} {engine} {mode}"
                times.setdefault(key, {"d": [], "ms": [], "ratio": []})
                times[key]["d"].append(d)
                times[key]["ms"].append(c.ours_ms)
                times[key]["ratio"].append(c.ratio)
                print(rows[-1], flush=True)
    return head + "\n" + "\n".join(rows), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter fluid run")
    parser.add_argument("--out", default="benchmarks/results/conservation.md")
    parser.add_argument("--skip-fluid", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dims = [2, 4, 8, 16, 32]
    rounds = 5 if args.quick else 15
    start = time.perf_counter()
    table, times = cost_table(dims, rounds, naive_max_d=8)
    exp_rows = [
        "| model | engine | mode | exponent of time vs d | ratio, smallest d | ratio, largest d |",
        "|---|---|---|---:|---:|---:|",
    ]
    for key, v in times.items():
        if len(v["d"]) >= 2:
            exp_rows.append(
                f"| {' | '.join(key.split(' '))} | {_slope(v['d'], v['ms']):.2f} "
                f"(d = {v['d'][0]}..{v['d'][-1]}) | {v['ratio'][0]:.1f} (d = {v['d'][0]}) | "
                f"{v['ratio'][-1]:.1f} (d = {v['d'][-1]}) |"
            )

    fluid_md = "(skipped)"
    if not args.skip_fluid:
        from flowfields.experiments import conservation_fluid as fluid

        cfg = fluid.Config.quick()
        cfg.budget_s = 20.0 if args.quick else 120.0
        cfg.eval_every_s = 2.0 if args.quick else 6.0
        out = Path("runs/bench-conservation-fluid")
        res = fluid.run(cfg, out, progress=False)
        rows = res.tables["taylor_green"]
        cols = list(rows[0])
        fluid_md = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
        for r in rows:
            cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
            fluid_md += "| " + " | ".join(cells) + " |\n"
        met = res.metrics
        fluid_md += (
            f"\nBudget {cfg.budget_s:.0f} s of training per method (interleaved step by step, "
            f"identical collocation points, same width, Adam lr {cfg.lr:g}, {cfg.lr_schedule}), "
            f"ν = {cfg.nu}, t in [0, {cfg.t_max}], batch {cfg.batch}, width {cfg.hidden}. "
            f"At equal steps the PINN had rel_l2 {met['pinn/rel_l2_at_ncl_steps']:.3g} after "
            f"{met['pinn/steps_compared']} steps (NCL {met['ncl/rel_l2_velocity']:.3g} after "
            f"{met['ncl/steps']}). "
            f"`s_to_X`: training seconds until the relative L2 velocity error first measured "
            f"<= X (evaluated every {cfg.eval_every_s:.0f} s)."
        )

    cmd = "python -m benchmarks.bench_conservation" + (" --quick" if args.quick else "")
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    text = f"""# Neural conservation laws: cost and time-to-accuracy

Command: `.venv/bin/{cmd}` ({time.perf_counter() - start:.0f} s)
Machine: {machine()}.
Load average at the end (1 / 5 / 15 min): {load}. The machine is shared (2 cores, several
jobs): absolute times are noisy; ratios are taken interleaved, round by round (median and IQR
over {rounds} rounds).

## Cost vs a plain MLP (batch {BATCH}, width {WIDTH}, depth {DEPTH})

`call`: forward only; `step`: forward + backward of `mean |v|²`. `jet` (default engine):
forward-mode jets of the trunk along all d directions as batched matmuls; `func`:
`torch.func.vmap(jvp)`; `naive`: autograd loops over outputs (reference, d <= 8).

{table}

### Growth with d

{chr(10).join(exp_rows)}

## Taylor–Green: NCL vs PINN with a divergence penalty (equal wall-clock)

{fluid_md}
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

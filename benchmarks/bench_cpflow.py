"""Convex potential flows (arXiv:2012.05942): ours vs zuko's MAF / NSF, and our own numerics.

Run: ``python -m benchmarks.bench_cpflow [--quick]``; writes ``benchmarks/results/cpflow.md``.

1. Training step and test NLL per second against zuko's MAF and NSF (the peer) on the
   standardised wine (13-d) and breast-cancer (30-d) sets bundled with scikit-learn, at
   comparable parameter counts, interleaved (:func:`benchmarks.timing.compare`), one thread;
   plus the test NLL each reaches after the same number of Adam steps.
2. Log-det cost vs d (8, 32, 128, 512) for one block: exact (d HVPs + Cholesky) vs SLQ
   (4 probes, 10 Lanczos steps) vs an autograd Jacobian (``torch.func.jacrev`` + slogdet).
3. CG iterations vs conditioning and tolerance (random SPD matrices, d = 256).
4. Inversion: our batched Newton-CG vs ``torch.optim.LBFGS`` (strong Wolfe) vs tolerance and d.
5. Memory vs CG cap: bytes autograd holds for the backward of the log-det term with the CG
   surrogate vs backpropagating through Lanczos (differentiable SLQ) at caps 5 -> 50.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import zuko
from sklearn.datasets import load_breast_cancer, load_wine

from benchmarks.timing import compare, machine, markdown_table, write_result
from flowfields.cpflow import ConvexPotentialBlock, CPFlow
from flowfields.experiments.sdebnn_stl import SavedTensorMeter
from flowfields.linalg import conjugate_gradient, lanczos, logdet_surrogate, rademacher

__all__ = ["main"]

OUT = Path(__file__).resolve().parent / "results" / "cpflow.md"


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def _tabular(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = (load_wine if name == "wine" else load_breast_cancer)().data
    x = torch.tensor(data, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x = x[torch.randperm(len(x), generator=g)]
    n_test = len(x) // 5
    train, test = x[n_test:], x[:n_test]
    mu, sd = train.mean(0), train.std(0)
    return (train - mu) / sd, (test - mu) / sd


def _models(d: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    cp = CPFlow(d, blocks=3, hidden=32, depth=3)
    maf = zuko.flows.MAF(d, transforms=3, hidden_features=(48, 48))
    nsf = zuko.flows.NSF(d, transforms=3, hidden_features=(32, 32))
    return {"cpflow": cp, "maf": maf, "nsf": nsf}


def _nll(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, CPFlow):
        return -model.log_prob(x).mean()
    return -model().log_prob(x).mean()


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, how: str):
    def step() -> None:
        if isinstance(model, CPFlow):
            loss = model.training_loss(x, how) if how != "exact" else model.training_loss(x)
        else:
            loss = -model().log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def bench_tabular(rounds: int, fit_steps: int) -> str:
    rows, fits = [], []
    for name in ("wine", "breast-cancer"):
        train, test = _tabular(name)
        d = train.shape[1]
        models = _models(d)
        models["cpflow"].initialize(train)
        opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
        xb = train[:128]
        counts = {k: _n_params(m) for k, m in models.items()}
        for how in ("exact", "surrogate"):
            ours = _train_step(models["cpflow"], opts["cpflow"], xb, how)
            for peer in ("maf", "nsf"):
                peer_step = _train_step(models[peer], opts[peer], xb, "")
                label = f"{name} (d={d}) train step, cpflow {how} vs {peer}"
                rows.append(compare(label, ours, peer_step, rounds=rounds, inner=2))
        with torch.no_grad():
            for peer in ("maf", "nsf"):
                rows.append(
                    compare(
                        f"{name} test NLL eval ({len(test)} points) vs {peer}",
                        lambda models=models, test=test: _nll(models["cpflow"], test),
                        lambda p=peer, models=models, test=test: _nll(models[p], test),
                        rounds=rounds,
                        inner=2,
                    )
                )
        fits.append(_fit_all(name, train, test, fit_steps, counts))
    head = "| data | model | parameters | test NLL (nats) | train CPU s |\n|---|---|---:|---:|---:|"
    return (
        markdown_table(rows, "zuko") + "\n\nSame Adam steps (lr 1e-3, batch 128, "
        f"{fit_steps} steps) from fresh models:\n\n" + head + "\n" + "\n".join(fits)
    )


def _fit_all(name: str, train: torch.Tensor, test: torch.Tensor, steps: int, counts) -> str:
    out = []
    d = train.shape[1]
    gauss_nll = _gaussian_nll(train, test)
    out.append(
        f"| {name} | full-covariance Gaussian | {d + d * (d + 1) // 2} | {gauss_nll:.3f} | 0 |"
    )
    for key, model in _models(d).items():
        if isinstance(model, CPFlow):
            model.initialize(train)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        t0 = time.process_time()
        for _ in range(steps):
            idx = torch.randint(0, len(train), (128,), generator=g)
            _train_step(model, opt, train[idx], "exact")()
        cpu = time.process_time() - t0
        model.eval()
        with torch.no_grad():
            nll = float(_nll(model, test))
        out.append(f"| {name} | {key} | {counts[key]} | {nll:.3f} | {cpu:.1f} |")
    return "\n".join(out)


def _gaussian_nll(train: torch.Tensor, test: torch.Tensor) -> float:
    mu = train.mean(0)
    C = torch.cov(train.T) + 1e-6 * torch.eye(train.shape[1])
    return float(-torch.distributions.MultivariateNormal(mu, C).log_prob(test).mean())


def _logdet_row(d: int, rounds: int) -> str:
    torch.manual_seed(0)
    blk = ConvexPotentialBlock(d, hidden=64, depth=3)
    x = torch.randn(16, d)
    blk.train()
    blk.potential(x)
    blk.eval()
    gen = torch.Generator().manual_seed(0)

    def exact() -> None:
        with torch.no_grad():
            blk.forward_logdet(x, "exact")

    def slq() -> None:
        with torch.no_grad():
            blk.forward_logdet(x, "slq", n_probes=4, lanczos_steps=min(10, d), generator=gen)

    def jac() -> None:
        J = torch.func.vmap(torch.func.jacrev(lambda z: blk(z[None])[0]))(x)
        torch.linalg.slogdet(J)

    # CPU (process) time medians: on a loaded shared machine wall-clock rounds of these
    # single calls were too noisy to rank (a d = 32 exact log-det "faster" than d = 8)
    t_exact, t_slq, t_jac = (_cpu_ms(fn, rounds) for fn in (exact, slq, jac))
    return (
        f"| {d} | {t_exact:.1f} | {t_slq:.1f} | {t_jac:.1f} | "
        f"{t_slq / t_exact:.3f} | {t_exact / t_jac:.2f} |"
    )


def bench_logdet(dims: list[int], rounds: int) -> str:
    lines = [
        "| d | exact (ms) | SLQ 4x10 (ms) | jacrev + slogdet (ms) | SLQ/exact | exact/jacrev |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_logdet_row(d, rounds) for d in dims]
    return "\n".join(lines)


def bench_cg() -> str:
    d = 256
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    b = torch.randn(1, d, generator=g, dtype=torch.float64)
    lines = ["| condition number | tol 1e-4 | tol 1e-8 | tol 1e-12 |", "|---:|---:|---:|---:|"]
    for cond in (1e1, 1e2, 1e3, 1e4):
        A = (Q * torch.logspace(0, math.log10(cond), d, dtype=torch.float64)) @ Q.T
        its = [
            int(conjugate_gradient(lambda v, A=A: v @ A, b, tol=t, max_iter=5000).iterations)
            for t in (1e-4, 1e-8, 1e-12)
        ]
        lines.append(f"| {cond:.0e} | " + " | ".join(map(str, its)) + " |")
    return "\n".join(lines)


def _lbfgs_inverse(blk: ConvexPotentialBlock, y: torch.Tensor, tol: float) -> torch.Tensor:
    x = y.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        lr=1,
        max_iter=1000,
        tolerance_grad=tol,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (blk.potential(x) - (x * y).sum(-1)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return x.detach()


def bench_inverse(rounds: int) -> str:
    rows, errs = [], []
    for d in (2, 8, 32):
        for tol in (1e-4, 1e-8):
            torch.manual_seed(0)
            blk = ConvexPotentialBlock(d, hidden=32, depth=3).double()
            x = 2 * torch.randn(128, d, dtype=torch.float64)
            blk.train()
            blk.potential(x)
            blk.eval()
            y = blk(x).detach()
            ours = blk.inverse(y, tol=tol)
            lb = _lbfgs_inverse(blk, y, tol)
            lb_res = float((blk(lb) - y).abs().amax().detach())
            errs.append(
                f"| {d} | {tol:.0e} | {float((ours.x - x).abs().max()):.1e} | "
                f"{float((lb - x).abs().max()):.1e} | {lb_res:.1e} | {int(ours.iterations.max())} |"
            )
            rows.append(
                compare(
                    f"d={d}, tol={tol:.0e}, 128 points",
                    lambda blk=blk, y=y, tol=tol: blk.inverse(y, tol=tol),
                    lambda blk=blk, y=y, tol=tol: _lbfgs_inverse(blk, y, tol),
                    rounds=rounds,
                    inner=1,
                    warmup=1,
                )
            )
    head = (
        "| d | tol | ours max error | LBFGS max error | LBFGS max residual | "
        "our Newton iterations |\n|---:|---:|---:|---:|---:|---:|"
    )
    return markdown_table(rows, "LBFGS") + "\n\n" + head + "\n" + "\n".join(errs)


def bench_memory(caps: list[int]) -> str:
    d = 64
    torch.manual_seed(0)
    blk = ConvexPotentialBlock(d, hidden=64, depth=3)
    x = torch.randn(64, d)
    blk.train()
    blk.potential(x)
    v = rademacher((64, d), like=x, generator=torch.Generator().manual_seed(0))
    lines = [
        "| CG / Lanczos cap | surrogate held (MiB) | through Lanczos held (MiB) |",
        "|---:|---:|---:|",
    ]
    for cap in caps:
        with SavedTensorMeter() as m1:
            x_, g = blk._graph(x)
            sur, _ = logdet_surrogate(blk._hvp(x_, g), v, tol=1e-30, max_iter=cap)
            sur.sum().backward()
        with SavedTensorMeter() as m2:
            x_, g = blk._graph(x)
            hvp = blk._hvp(x_, g)
            res = lanczos(lambda u, hvp=hvp: hvp(u, True), v, cap)
            theta, U = torch.linalg.eigh(res.tridiagonal())
            est = d * (U[:, 0, :] ** 2 * torch.log(theta.clamp_min(1e-12))).sum(-1)
            est.sum().backward()
        lines.append(f"| {cap} | {m1.peak_bytes / 2**20:.2f} | {m2.peak_bytes / 2**20:.2f} |")
    return "\n".join(lines)


def _cpu_ms(fn: Callable[[], object], reps: int) -> float:
    """Median CPU (process) time of ``fn`` in ms over ``reps`` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def _aten_ops(fn: Callable[[], object]) -> int:
    """Number of ATen operator calls ``fn`` makes (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def _profile_parts(d: int, reps: int) -> dict[str, Callable[[], object]]:
    """The pieces of one CP-Flow block's training step (batch 128, width 32, depth 3)."""
    torch.manual_seed(0)
    x = torch.randn(128, d)
    blk = ConvexPotentialBlock(d, hidden=32, depth=3)
    blk.train()
    blk.potential(x)
    params = list(blk.parameters())
    v = rademacher(x.shape, like=x, generator=torch.Generator().manual_seed(0))
    blk.hessian_mode = "analytic"
    _, hvp_sweep = blk._operator(x, None)
    blk.hessian_mode = "loop"
    _, hvp_graph = blk._operator(x, None)
    blk.hessian_mode = "auto"

    def F0(z: torch.Tensor) -> torch.Tensor:
        return blk.potential(z[None])[0]

    grad_sum = torch.func.grad(lambda z: blk.potential(z).sum())

    def hvp_func() -> object:
        return torch.func.jvp(grad_sum, (x,), (v,))[1]

    def with_mode(mode: str, method: str) -> Callable[[], object]:
        def run() -> object:
            blk.hessian_mode = mode
            _, ld = blk.forward_logdet(x, method, cg_tol=1e-6)
            blk.hessian_mode = "auto"
            return torch.autograd.grad(ld.sum(), params)

        return run

    def vmap_jacrev() -> object:
        H = torch.func.vmap(torch.func.jacrev(torch.func.grad(F0)))(x)
        ld = 2 * torch.log(torch.linalg.cholesky(H).diagonal(dim1=-2, dim2=-1)).sum()
        return torch.autograd.grad(ld, params)

    parts: dict[str, Callable[[], object]] = {
        "potential F (forward)": lambda: blk.potential(x),
        "∇F with graph (the map)": lambda: blk._graph(x),
        "one HVP, closed-form sweep [default]": lambda: hvp_sweep(v, False),
        "one HVP, autograd through ∇F's graph": lambda: hvp_graph(v, False),
        "one HVP, torch.func.jvp(grad F) (batched)": hvp_func,
        "exact log-det + θ-gradient, closed form [default]": with_mode("analytic", "exact"),
        "exact log-det + θ-gradient, vmap(jacrev(grad F))": vmap_jacrev,
        "exact log-det + θ-gradient, d-HVP loop": with_mode("loop", "exact"),
        "surrogate log-det + θ-gradient (CG tol 1e-6), closed-form HVPs [default]": with_mode(
            "analytic", "surrogate"
        ),
        "surrogate log-det + θ-gradient (CG tol 1e-6), autograd HVPs": with_mode(
            "loop", "surrogate"
        ),
    }
    if d > 32:  # d reverse passes with create_graph: seconds per call, measured at d <= 30
        del parts["exact log-det + θ-gradient, d-HVP loop"]
    return parts


def bench_profile(reps: int) -> str:
    """Where a training step's time goes: per-block pieces, CPU ms and ATen op counts."""
    lines = []
    for d in (13, 30, 64):
        torch.manual_seed(0)
        x = torch.randn(128, d)
        maf = zuko.flows.MAF(d, transforms=3, hidden_features=(48, 48))
        opt = torch.optim.Adam(maf.parameters(), lr=1e-3)
        parts = _profile_parts(d, reps)
        parts["zuko MAF: a whole training step (3 transforms)"] = _train_step(maf, opt, x, "")
        blk = ConvexPotentialBlock(d, hidden=32, depth=3)
        blk.train()
        blk.potential(x)
        cg = logdet_surrogate(blk._operator(x, None)[1], rademacher(x.shape, like=x), tol=1e-6)[1]
        for name, fn in parts.items():
            lines.append(f"| {d} | {name} | {_cpu_ms(fn, reps):.2f} | {_aten_ops(fn)} |")
        lines.append(
            f"| {d} | CG iterations of the surrogate (max over rows) | "
            f"{int(cg.iterations.max())} | |"
        )
    head = "| d | piece (one block, batch 128) | CPU ms (median) | ATen ops |\n|---:|---|---:|---:|"
    return head + "\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and dimensions")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    rounds = 3 if args.quick else 7
    tab = bench_tabular(rounds, 100 if args.quick else 300)
    logdet = bench_logdet([8, 32, 128] if args.quick else [8, 32, 128, 512], rounds)
    cg = bench_cg()
    inv = bench_inverse(rounds)
    mem = bench_memory([5, 10, 20, 50])
    prof = bench_profile(5 if args.quick else 15)
    cmd = "python -m benchmarks.bench_cpflow" + (" --quick" if args.quick else "")
    text = f"""# Convex potential flows (arXiv:2012.05942)

Command: `{cmd}` ({time.perf_counter() - t0:.0f} s). Machine: {machine()}. Shared machine
(1-min load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end):
absolute times are noisy; the interleaved ratios less so. The official CP-Flow code
(CW-Huang/CP-Flow) does not run on current PyTorch (it calls the removed `torch.symeig`), so
the peer is zuko (MAF, NSF) at comparable parameter counts.

## Training step and test-NLL evaluation vs zuko (wine 13-d, breast-cancer 30-d)

CP-Flow: 3 blocks, ICNN width 32, depth 3, ActNorm; "exact" trains with the exact log-det
(closed-form Hessian + Cholesky, differentiated), "surrogate" with the CG surrogate
(one Rademacher probe, CG tol 1e-6, closed-form Hessian-vector products). MAF: 3
transforms, hidden (48, 48); NSF: 3 transforms, hidden (32, 32). Batch 128, Adam, one thread.

{tab}

## Where the training step's time goes (profile, one block, one thread)

CPU process time (median) and the number of ATen operator calls of each piece of one block's
training step (ICNN width 32, depth 3, batch 128); a CP-Flow step is three such blocks plus
ActNorm, Adam and the base density. The tensors are small (128 x 32), so time follows the
operator count rather than FLOPs. "Closed form" is `flowfields.nn.convex_sweep` (a forward
sweep of per-layer Jacobians / tangents and a backward sweep of adjoints, first-order
autograd for θ); the others are nested autograd (`torch.func` or `torch.autograd.grad`).

{prof}

## Log-det of one block vs d (16 points, ICNN width 64, depth 3, no gradient, CPU ms)

Exact: the closed-form Hessian + Cholesky; jacrev: `vmap(jacrev(f))` + slogdet.

{logdet}

## CG iterations vs conditioning and tolerance (d = 256, eigenvalues log-spaced)

{cg}

## Inverse: batched Newton-CG (ours) vs torch.optim.LBFGS on the summed conjugate objective

{inv}

## Memory of the log-det gradient vs the CG / Lanczos cap (d = 64, 64 points)

Bytes autograd holds for the backward (peak, `SavedTensorMeter`): the CG surrogate keeps one
Hessian-vector product whatever the cap; backpropagating through Lanczos keeps every step.

{mem}
"""
    return write_result(OUT, text)


if __name__ == "__main__":
    raise SystemExit(main())

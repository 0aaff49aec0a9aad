"""PPD / manifold flows (arXiv:2207.04711) vs the ``flow_matching`` package, interleaved.

Run: ``python -m benchmarks.bench_ppd [--quick]``; writes ``benchmarks/results/ppd.md``.

Shared rows (same network, same batch, one torch thread, :func:`benchmarks.timing.compare`):
exp/log maps on S^2, geodesic path sampling, one RFM training step, Riemannian ODE sampling
at fixed rk4 steps, likelihood evaluation on T^2 (the peer's Euclidean ``ODESolver`` with its
exact divergence: the flat torus needs no Riemannian correction). Our own rows: PPD step vs
RFM step vs ML-CNF step; PPD step cost vs d on T^d (exact and Hutchinson divergence);
exact vs Hutchinson divergence time and error. The peer is used for timing only (never
copied).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.timing import compare, machine, markdown_table, write_result
from flowfields.divergence import divergence_exact, divergence_hutchinson, sample_probe
from flowfields.integrate import ODEOptions
from flowfields.manifolds import FlatTorus, Sphere
from flowfields.matching import CNF
from flowfields.paths import GeodesicPath
from flowfields.ppd import (
    KappaSchedule,
    ManifoldField,
    VMFMixturePath,
    VonMisesMixturePath,
    ppd_loss,
    rfm_loss,
)

__all__ = ["main"]

OUT = Path(__file__).resolve().parent / "results" / "ppd.md"
BATCH = 512
HIDDEN, DEPTH = 64, 3


class _PeerWrapper(nn.Module):
    """Our field called the way flow_matching calls a velocity model, ``model(x=x, t=t)``."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, x: Tensor, t: Tensor, **extras: object) -> Tensor:
        return self.field(t.reshape(-1)[0] if t.numel() == 1 else t.reshape(-1), x)


def bench_shared(rounds: int) -> str:
    from flow_matching.path import GeodesicProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.solver import ODESolver, RiemannianODESolver
    from flow_matching.utils.manifolds import FlatTorus as PeerTorus
    from flow_matching.utils.manifolds import Sphere as PeerSphere

    torch.manual_seed(0)
    s2, peer_s2 = Sphere(2), PeerSphere()
    x = s2.random_base(BATCH, dtype=torch.float32)
    y = s2.random_base(BATCH, dtype=torch.float32)
    u = s2.proju(x, torch.randn_like(x))
    t = torch.rand(BATCH)
    ours_path, peer_path = GeodesicPath(s2), GeodesicProbPath(CondOTScheduler(), peer_s2)
    field = ManifoldField(s2, HIDDEN, DEPTH)
    opt = torch.optim.SGD(field.parameters(), lr=0.0)

    def ours_step() -> None:
        opt.zero_grad()
        rfm_loss(field, s2, y).backward()

    def peer_step() -> None:
        opt.zero_grad()
        x0 = peer_s2.projx(torch.randn_like(y))
        s = peer_path.sample(x0, y, torch.rand(BATCH))
        diff = peer_s2.proju(s.x_t, field(s.t.reshape(-1), s.x_t)) - s.dx_t
        diff.pow(2).sum(-1).mean().backward()

    cnf = CNF(field, 3, manifold=s2, solver=ODEOptions("rk4", step_size=1 / 32))
    peer_solver = RiemannianODESolver(peer_s2, _PeerWrapper(field))
    torus = FlatTorus(2)
    tfield = ManifoldField(torus, HIDDEN, DEPTH)
    tcnf = CNF(tfield, 2, manifold=torus, solver=ODEOptions("rk4", step_size=1 / 16))
    xt = torus.random_base(256, dtype=torch.float32)
    peer_ode = ODESolver(_PeerWrapper(tfield))
    log_p0 = lambda z: torch.full(z.shape[:1], -2 * math.log(2 * math.pi))  # noqa: E731
    del PeerTorus
    with torch.no_grad():
        rows = [
            compare(
                "S^2 expmap (512)",
                lambda: s2.expmap(x, u),
                lambda: peer_s2.expmap(x, u),
                rounds=rounds,
            ),
            compare(
                "S^2 logmap (512)",
                lambda: s2.logmap(x, y),
                lambda: peer_s2.logmap(x, y),
                rounds=rounds,
            ),
            compare(
                "geodesic path sample (512)",
                lambda: ours_path.sample(x, y, t),
                lambda: peer_path.sample(x, y, t),
                rounds=rounds,
            ),
            compare(
                "S^2 ODE sampling, rk4 x 32 (512)",
                lambda: cnf.sample(BATCH, x_0=x),
                lambda: peer_solver.sample(x, step_size=1 / 32, method="rk4"),
                rounds=rounds,
            ),
            compare(
                "T^2 likelihood, rk4 x 16, exact div (256)",
                lambda: tcnf.log_prob(xt),
                lambda: peer_ode.compute_likelihood(
                    xt, log_p0, step_size=1 / 16, method="rk4", exact_divergence=True
                ),
                rounds=rounds,
            ),
        ]
    rows.append(compare("RFM training step (512)", ours_step, peer_step, rounds=rounds))
    return markdown_table(rows, "flow_matching")


def _median_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_methods(repeats: int) -> str:
    torch.manual_seed(0)
    s2 = Sphere(2)
    data = s2.random_base(1000, dtype=torch.float32)
    path = VMFMixturePath(s2, KappaSchedule(80.0, 2.0))
    cnf = CNF(ManifoldField(s2, HIDDEN, DEPTH), 3, manifold=s2)
    ml = ODEOptions("rk4", step_size=1 / 8)

    def step(loss_fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            cnf.zero_grad()
            loss_fn().backward()

        return run

    rows = {
        "PPD (l = 2, 1,000 centers, exact div)": step(
            lambda: ppd_loss(cnf.vector_field, path, data, n_points=256)
        ),
        "PPD (minibatch of 128 centers)": step(
            lambda: ppd_loss(cnf.vector_field, path, data, batch=128, n_points=256)
        ),
        "RFM": step(lambda: rfm_loss(cnf.vector_field, s2, data[:256])),
        "ML-CNF (rk4 x 8, backprop)": step(lambda: -cnf.log_prob(data[:256], solver=ml).mean()),
    }
    out = ["| training step, S^2, 256 points, 64 x 3 network | ms (median) |", "|---|---:|"]
    for name, fn in rows.items():
        out.append(f"| {name} | {_median_ms(fn, repeats):.1f} |")
    return "\n".join(out)


def bench_dimension(repeats: int) -> tuple[str, float, float]:
    out = ["| d | PPD step, exact div (ms) | PPD step, Hutchinson (ms) |", "|---:|---:|---:|"]
    ds, t_exact, t_hutch = [2, 10, 50], [], []
    for d in ds:
        torch.manual_seed(0)
        torus = FlatTorus(d)
        data = torus.random_base(500)
        path = VonMisesMixturePath(torus, KappaSchedule(float(d) * 2.0, 1.0))
        field = ManifoldField(torus, HIDDEN, DEPTH)
        times = []
        for div in ("exact", "hutchinson"):

            def run(div: str = div, field: nn.Module = field, path=path, data=data) -> None:  # type: ignore[no-untyped-def]
                field.zero_grad()
                ppd_loss(field, path, data, n_points=128, divergence=div).backward()

            times.append(_median_ms(run, repeats))
        t_exact.append(times[0])
        t_hutch.append(times[1])
        out.append(f"| {d} | {times[0]:.1f} | {times[1]:.1f} |")

    def slope(ts: list[float]) -> float:
        lx = [math.log(d) for d in ds]
        ly = [math.log(t) for t in ts]
        mx, my = statistics.fmean(lx), statistics.fmean(ly)
        return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)

    return "\n".join(out), slope(t_exact), slope(t_hutch)


def bench_divergence(repeats: int) -> str:
    torch.manual_seed(0)
    out = [
        "| d | exact (ms) | Hutchinson (ms) | Hutchinson rel. RMS error |",
        "|---:|---:|---:|---:|",
    ]
    for d in (3, 10, 50):
        m = FlatTorus(d)
        field = ManifoldField(m, HIDDEN, DEPTH)
        x = m.random_base(256)
        t = torch.rand(256)
        _, exact = divergence_exact(field, t, x)
        errs = []
        for _ in range(20):
            _, est = divergence_hutchinson(field, t, x, sample_probe(x))
            errs.append(((est - exact) ** 2).mean())
        rel = float(torch.stack(errs).mean().sqrt() / exact.pow(2).mean().sqrt())
        te = _median_ms(lambda: divergence_exact(field, t, x), repeats)  # noqa: B023
        th = _median_ms(
            lambda: divergence_hutchinson(field, t, x, sample_probe(x)),  # noqa: B023
            repeats,
        )
        out.append(f"| {d} | {te:.2f} | {th:.2f} | {rel:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    rounds, repeats = (5, 5) if args.quick else (15, 15)
    shared = bench_shared(rounds)
    methods = bench_methods(repeats)
    dims, s_exact, s_hutch = bench_dimension(repeats)
    div = bench_divergence(repeats)
    cmd = "python -m benchmarks.bench_ppd" + (" --quick" if args.quick else "")
    text = f"""# PPD: flows on manifolds (arXiv:2207.04711)

Command: `{cmd}` ({time.perf_counter() - t0:.0f} s). Machine: {machine()}. Shared machine
(1-min load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end):
absolute times are noisy; the interleaved ratios less so.

## Against `flow_matching` (same network, same inputs)

Our CNF integrates the tangent-projected field in ambient coordinates and projects the
result (the peer projects the field and the point at every rk4 stage); the T^2 likelihood
row runs the peer's Euclidean `ODESolver.compute_likelihood` (exact divergence), equivalent
on the flat torus. The RFM step includes drawing the base points, the path, the loss and the
backward pass.

{shared}

## Cost per training step (ours)

{methods}

## PPD step cost vs dimension on T^d (128 points, 500 centers)

{dims}

Fitted exponent of cost ~ d^a over d = 2, 10, 50: exact a = {s_exact:.2f}, Hutchinson
a = {s_hutch:.2f}.

## Exact vs Hutchinson divergence (256 points, one Rademacher probe)

{div}
"""
    return write_result(OUT, text)


if __name__ == "__main__":
    raise SystemExit(main())

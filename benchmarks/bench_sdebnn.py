"""SDE-BNN (arXiv:2102.06559): our sdeint front door vs torchsde, adjoint vs backprop, digits.

Run: ``python -m benchmarks.bench_sdebnn [--quick]``; writes ``benchmarks/results/sdebnn.md``.

1. Front-door overhead: the SDE-BNN's augmented SDE (digits-sized: 4 weight samples x 128
   inputs, width 32, P = 2144 diffusing weights, 20 Euler steps) solved by
   ``flowfields.integrate.sdeint`` and by ``torchsde.sdeint`` called directly with the same
   Brownian motion, forward only and forward + backward, interleaved
   (:func:`benchmarks.timing.compare`).
2. Adjoint vs backprop per training step (forward + backward of the negative ELBO) at 20, 50,
   100, 200 solver steps: CPU time, the peak of the bytes autograd holds for the backward
   (:class:`flowfields.experiments.sdebnn_stl.SavedTensorMeter`, exact and in-process) and
   the peak resident memory above the baseline of a fresh process (Linux ``VmHWM`` after
   resetting it, glibc's mmap threshold fixed at 64 KiB so that freed tensors leave RSS).
3. Digits: the ``sdebnn-digits`` experiment's table (SDE-BNN and its three baselines on the
   same architecture: accuracy, ECE, NLL, training CPU time), quick or full preset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.timing import compare, machine, markdown_table, write_result
from flowfields.integrate import sdeint
from flowfields.sdebnn import SDEBNN, PaddedBrownian, elbo_loss

__all__ = ["main"]

OUT = Path(__file__).resolve().parent / "results" / "sdebnn.md"
ROOT = Path(__file__).resolve().parent.parent
SIZE = dict(width=32, hidden=32, drift_hidden=(32,))
BATCH, IN_DIM, CLASSES, SAMPLES = 128, 64, 10, 4


def _net(steps: int, *, adjoint: bool, method: str) -> SDEBNN:
    torch.manual_seed(0)
    net = SDEBNN(
        IN_DIM,
        CLASSES,
        steps=steps,
        adjoint=adjoint,
        method=method,
        task="classification",
        sigma=0.1,
        **SIZE,
    )
    with torch.no_grad():  # a posterior away from the prior, so the KL term carries weight
        net.drift.net[-1].weight.normal_(0, 0.05)
    return net


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, IN_DIM, generator=g), torch.randint(0, CLASSES, (BATCH,), generator=g)


def bench_front_door(rounds: int) -> str:
    import torchsde

    net = _net(20, adjoint=False, method="euler")
    x, _ = _data()
    h_0, w_0 = net.encoder(x).unsqueeze(0).expand(SAMPLES, -1, -1), net.w_0.expand(SAMPLES, -1)
    sde = net.augmented_sde(BATCH)
    y_0 = sde.pack(h_0, w_0).detach().requires_grad_()
    bm = PaddedBrownian(net.brownian_motion(SAMPLES), before=sde.n_hidden, after=1)
    # float64 times for both, as our front door hands torchsde: with float32 times, twenty
    # steps of 0.05 end with a step of ~6e-8 and BrownianInterval then builds a search tree
    # for that resolution (seconds per solve)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def ours(backward: bool):
        def run():
            y = sdeint(sde, y_0, ts, method="euler", dt=0.05, bm=bm).x[-1]
            if backward:
                y.square().mean().backward()

        return run

    def peer(backward: bool):
        def run():
            y = torchsde.sdeint(sde, y_0, ts, method="euler", dt=0.05, bm=bm)[-1]
            if backward:
                y.square().mean().backward()

        return run

    rows = [
        compare("solve, forward", ours(False), peer(False), rounds=rounds),
        compare("solve, forward + backward", ours(True), peer(True), rounds=rounds),
    ]
    return markdown_table(rows, "torchsde")


_CHILD = r"""
import re, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from benchmarks.bench_sdebnn import _net, _data, _step
def status(key):
    return int(re.search(key + r':\s+(\d+)', open('/proc/self/status').read()).group(1))
x, y = _data()
_step(_net(2, adjoint={adjoint}, method={method!r}), x, y)  # lazy imports, first-call caches
net = _net({steps}, adjoint={adjoint}, method={method!r})
open('/proc/self/clear_refs', 'w').write('5')
before = status('VmRSS')
_step(net, x, y)
print((status('VmHWM') - before) / 1024)
"""


def _step(net: SDEBNN, x: torch.Tensor, y: torch.Tensor) -> None:
    res = net(x, SAMPLES)
    e = elbo_loss(res.out, res.kl, y, task="classification", n_data=1437)
    e.loss.backward()


def _peak_rss_mib(steps: int, adjoint: bool, method: str) -> float | None:
    if not Path("/proc/self/clear_refs").exists():
        return None
    code = _CHILD.format(root=str(ROOT), steps=steps, adjoint=adjoint, method=method)
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def bench_adjoint(steps_list: list[int], repeats: int) -> str:
    from flowfields.experiments.sdebnn_stl import SavedTensorMeter

    x, y = _data()
    lines = [
        "| mode | method | steps | step CPU (ms) | held for backward (MiB) | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    modes = [
        ("backprop", False, "euler"),
        ("backprop", False, "reversible_heun"),
        ("adjoint", True, "reversible_heun"),
    ]
    for name, adjoint, method in modes:
        for steps in steps_list:
            net = _net(steps, adjoint=adjoint, method=method)
            _step(net, x, y)  # warm-up
            times = []
            for _ in range(repeats):
                c0 = time.thread_time()
                _step(net, x, y)
                times.append((time.thread_time() - c0) * 1e3)
            with SavedTensorMeter() as meter:
                _step(net, x, y)
            rss = _peak_rss_mib(steps, adjoint, method)
            rss_txt = "n/a" if rss is None else f"{rss:.1f}"
            lines.append(
                f"| {name} | {method} | {steps} | {sorted(times)[len(times) // 2]:.0f} | "
                f"{meter.peak_bytes / 2**20:.2f} | {rss_txt} |"
            )
    return "\n".join(lines)


def bench_digits(quick: bool) -> tuple[str, str]:
    from flowfields.experiments import sdebnn_digits

    exp = sdebnn_digits.EXPERIMENT
    cfg = exp.Config.quick() if quick else exp.Config.full()
    with tempfile.TemporaryDirectory() as tmp:
        result = exp.run(cfg, tmp, progress=False)
    rows = result.tables["models"]
    head = (
        "| model | test accuracy | ECE (15 bins) | test NLL | train CPU (s) |\n"
        "|---|---:|---:|---:|---:|"
    )
    body = [
        f"| {r['model']} | {r['accuracy']:.4f} | {r['ece']:.4f} | {r['nll']:.4f} | "
        f"{r['train_cpu_s']:.1f} |"
        for r in rows
    ]
    return "\n".join([head, *body]), json.dumps(result.config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, quick digits preset")
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    front = bench_front_door(5 if args.quick else 15)
    adjoint = bench_adjoint([20, 50, 100, 200], 1 if args.quick else 3)
    digits = ("(skipped)", "") if args.skip_digits else bench_digits(args.quick)
    cmd = "python -m benchmarks.bench_sdebnn" + (" --quick" if args.quick else "")
    preset = "quick" if args.quick else "full"
    text = f"""# SDE-BNN (arXiv:2102.06559)

Command: `{cmd}` ({time.perf_counter() - t0:.0f} s). Machine: {machine()}. Shared machine
(1-min load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end):
absolute times are noisy; the interleaved ratios less so.

## Our `sdeint` front door vs `torchsde.sdeint` called directly

The SDE-BNN's augmented SDE ({SAMPLES} weight samples x {BATCH} inputs, width 32, 2144
diffusing weights, 20 Euler steps, one fixed Brownian motion), the same object handed to
both. Ours adds argument checks and evaluation counting.

{front}

## Adjoint vs backpropagation, per training step

Forward + backward of the negative ELBO on a batch of {BATCH} digits-sized inputs,
{SAMPLES} weight samples. "held for backward": peak of the distinct storages autograd keeps
(forward graph plus any graph the adjoint builds while stepping back); "peak RSS": a fresh
process's peak resident memory during the step above its level before it. Reversible Heun's
adjoint reproduces the direct gradient to rounding (tests/sdebnn, the sdebnn-stl
experiment); Euler with backprop is the default training path.

{adjoint}

## Digits ({preset} preset of `sdebnn-digits`)

{digits[0]}
"""
    return write_result(OUT, text)


if __name__ == "__main__":
    raise SystemExit(main())

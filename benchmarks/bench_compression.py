"""Latent-discretization codec (arXiv:2212.13659) vs general-purpose compressors and baselines.

Run: ``python -m benchmarks.bench_compression [--quick]``; writes
``benchmarks/results/compression.md``.

One :class:`~flowfields.compression.LatentDiscretization` is trained in-process on jump
processes (the ``compression-jumps`` quick settings, beta = 1e-4, seed 0; a few seconds).
Then, on the same contents rendered at T = 32 ... 512 frames:

1. Bits per sequence and MSE: ours (learned discretization, constriction range coder), the
   same model storing every frame, and the peers ``zlib`` (level 9) and ``lzma`` (preset 9)
   on the frames quantised uniformly to the step that gives *the same MSE* as ours
   (``step = sqrt(12 MSE)``, int16), so the comparison is at matched distortion.
2. Encode and decode throughput (frames/s and MB/s of float64 input), ours vs zlib (encode:
   quantise + compress; decode: decompress + dequantise), interleaved
   (:func:`benchmarks.timing.compare`).
3. Coder overhead: payload bits minus the model's rate estimate, per stream.
"""

from __future__ import annotations

import argparse
import lzma
import os
import statistics
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import compare, machine, markdown_table, write_result
from flowfields.compression import Codec, LatentDiscretization
from flowfields.data.sequences import random_jumps
from flowfields.experiments.compression_jumps import jump_batch

__all__ = ["main"]

OUT = Path(__file__).resolve().parent / "results" / "compression.md"
RATES = (32, 64, 128, 256, 512)
DIM = 3


def train(steps: int) -> Codec:
    """The quick preset's beta0 model, trained here (Adam 1e-2, cosine decay)."""
    torch.manual_seed(0)
    model = LatentDiscretization(DIM, DIM, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    times = torch.arange(64, dtype=torch.float64) / 64
    for _ in range(steps):
        seeds = torch.randint(0, 2**31 - 1, (32,)).tolist()
        out = model.loss(torch.as_tensor(jump_batch(seeds, 64, DIM, 6)), times, 1e-4)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        sched.step()
    return Codec(model.eval())


def _quantised(x: np.ndarray, mse: float) -> tuple[bytes, float]:
    """int16 frames at the largest quantiser step whose MSE is <= ``mse`` (bisection on the
    log step from ``sqrt(12 mse)``: the peer gets at most our distortion)."""

    def err(step: float) -> float:
        return float(((np.round(x / step) * step - x) ** 2).mean())

    lo, hi = np.log(1e-6), np.log(max(np.sqrt(12 * mse), 1e-6)) + 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if err(float(np.exp(mid))) <= mse else (lo, mid)
    step = float(np.exp(lo))
    return np.round(x / step).astype(np.int16).tobytes(), step


def bench_bits(codec: Codec, n: int) -> tuple[str, list[dict[str, float]]]:
    rows = []
    for T in RATES:
        acc: dict[str, list[float]] = {}
        for s in range(n):
            x = random_jumps(4, DIM, seed=5_000_000 + s).frames(T)
            data = codec.encode(x)
            ours_bits = codec.last_stats["payload_bits"]
            est = codec.estimate_bits(x)
            mse = float(((codec.decode(data) - x) ** 2).mean())
            codec.encode(x, schedule="every")
            every_bits = codec.last_stats["payload_bits"]
            raw, step = _quantised(x, mse)
            q_mse = float(((np.round(x / step) * step - x) ** 2).mean())
            for key, value in (
                ("ours", ours_bits),
                ("ours_total", 8 * len(data)),
                ("excess", ours_bits - est),
                ("mse", mse),
                ("every", every_bits),
                ("zlib", 8 * len(zlib.compress(raw, 9))),
                ("lzma", 8 * len(lzma.compress(raw, preset=9))),
                ("q_mse", q_mse),
            ):
                acc.setdefault(key, []).append(value)
        rows.append({"T": T, **{k: statistics.fmean(v) for k, v in acc.items()}})
    head = (
        "| T | ours payload bits | ours incl. header | every frame | zlib -9 | lzma -9 | "
        "ours MSE | quantiser MSE | payload - estimate |\n" + "|---:" * 9 + "|"
    )
    lines = [
        f"| {r['T']} | {r['ours']:.0f} | {r['ours_total']:.0f} | {r['every']:.0f} | "
        f"{r['zlib']:.0f} | {r['lzma']:.0f} | {r['mse']:.4f} | {r['q_mse']:.4f} | "
        f"{r['excess']:+.1f} |"
        for r in rows
    ]
    return "\n".join([head, *lines]), rows


def cpu_ms(fn: Callable[[], object], rounds: int = 5, budget_s: float = 0.05) -> float:
    """Median CPU milliseconds per call of ``fn`` (``time.process_time``; one thread): the
    work done, not inflated by other processes on a shared machine as wall time is."""
    fn()
    t = time.process_time()
    fn()
    inner = max(1, int(budget_s / max(time.process_time() - t, 1e-6)))
    out = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(inner):
            fn()
        out.append((time.process_time() - t) / inner)
    return 1e3 * statistics.median(out)


def bench_speed(codec: Codec, rounds: int) -> str:
    enc_rows, dec_rows, tput, cpu = [], [], [], []
    for T in RATES:
        x = random_jumps(4, DIM, seed=6_000_000 + T).frames(T)
        data = codec.encode(x)
        mse = float(((codec.decode(data) - x) ** 2).mean())
        raw, step = _quantised(x, mse)
        packed = zlib.compress(raw, 9)

        def zlib_decode(packed: bytes = packed, step: float = step, T: int = T) -> np.ndarray:
            return np.frombuffer(zlib.decompress(packed), np.int16).reshape(T, DIM) * step

        def zlib_encode(x: np.ndarray = x, step: float = step) -> bytes:
            return zlib.compress(np.round(x / step).astype(np.int16).tobytes(), 9)

        enc = compare(f"encode T={T}", partial(codec.encode, x), zlib_encode, rounds=rounds)
        dec = compare(f"decode T={T}", partial(codec.decode, data), zlib_decode, rounds=rounds)
        enc_rows.append(enc)
        dec_rows.append(dec)
        if T == RATES[-1]:  # every frame stored: the per-point cost (tables, coder calls)
            every = codec.encode(x, schedule="every")
            enc_rows.append(compare(
                f"encode T={T}, every frame", partial(codec.encode, x, schedule="every"),
                zlib_encode, rounds=rounds,
            ))  # fmt: skip
            dec_rows.append(compare(
                f"decode T={T}, every frame", partial(codec.decode, every), zlib_decode,
                rounds=rounds,
            ))  # fmt: skip
        for name, fx, zx, dx, zdx in (
            ("learned", partial(codec.encode, x), zlib_encode, partial(codec.decode, data),
             zlib_decode),
            ("every frame", partial(codec.encode, x, schedule="every"), zlib_encode,
             partial(codec.decode, codec.encode(x, schedule="every")), zlib_decode),
        ):  # fmt: skip
            if name == "every frame" and T != RATES[-1]:
                continue
            e, ze, d, zd = cpu_ms(fx), cpu_ms(zx), cpu_ms(dx), cpu_ms(zdx)
            cpu.append(
                f"| {T} | {name} | {e:.3f} | {ze:.4f} | {e / ze:.0f} | {d:.3f} | {zd:.4f} | "
                f"{d / zd:.0f} |"
            )
        mb = x.nbytes / 1e6
        tput.append(
            f"| {T} | {T / enc.ours_ms * 1e3:.0f} | {mb / enc.ours_ms * 1e3:.3f} | "
            f"{T / dec.ours_ms * 1e3:.0f} | {mb / dec.ours_ms * 1e3:.3f} |"
        )
    head = (
        "| T | encode frames/s | encode MB/s | decode frames/s | decode MB/s |\n"
        + "|---:" * 5
        + "|"
    )
    return (
        markdown_table(enc_rows, "zlib")
        + "\n\n"
        + markdown_table(dec_rows, "zlib")
        + "\n\nOur throughput (float64 input bytes):\n\n"
        + "\n".join([head, *tput])
        + "\n\nCPU time per call (`time.process_time`, median of 5 rounds of ~50 ms; not "
        "inflated by the other processes of a shared machine, unlike the wall times above):\n\n"
        + "| T | stream | ours encode (ms) | zlib encode (ms) | ratio | ours decode (ms) | "
        "zlib decode (ms) | ratio |\n"
        + "|---:|---|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(cpu)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sequences and rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    codec = train(600)
    train_s = time.perf_counter() - t0
    bits, rows = bench_bits(codec, 4 if args.quick else 16)
    speed = bench_speed(codec, 5 if args.quick else 15)
    first, last = rows[0], rows[-1]
    cmd = "python -m benchmarks.bench_compression" + (" --quick" if args.quick else "")
    text = f"""# Latent discretization codec (arXiv:2212.13659)

Command: `{cmd}` ({time.perf_counter() - t0:.0f} s, of which {train_s:.0f} s training the
model). Machine: {machine()}. Shared machine (1-min load average {load0:.1f} at the start,
{os.getloadavg()[0]:.1f} at the end): absolute times are noisy; the interleaved ratios less so.

## Bits per sequence at matched distortion

Jump processes with 4 change points, {DIM} channels, the same content at every T (mean over
sequences). zlib / lzma compress the frames quantised (int16) at the largest step whose
MSE is at most ours.
Ours at T = 512 costs {last["ours"] / first["ours"]:.2f}x its T = 32 bits; every frame
{last["every"] / first["every"]:.1f}x, zlib {last["zlib"] / first["zlib"]:.1f}x, lzma
{last["lzma"] / first["lzma"]:.1f}x. Ours per T = 512 sequence: {last["ours"]:.0f} bits vs
zlib {last["zlib"]:.0f} ({last["zlib"] / last["ours"]:.1f}x more) and lzma {last["lzma"]:.0f}
({last["lzma"] / last["ours"]:.1f}x more). The header ({codec.header_bytes(1)} bytes) is in
"incl. header" only; zlib's and lzma's own headers are in theirs.

{bits}

## Encode / decode time, ours vs zlib (interleaved)

Ours: plan (encoder network, discretization; no rate estimate), tables and range coding
(the shortest termination computed from the coder's final interval, one decode to check it);
decode: range decoding, tables, OU bridge and the frame decoder at every frame. "every
frame": the same model storing all T points (T tables).
zlib: quantise + compress / decompress + dequantise.

{speed}
"""
    return write_result(OUT, text)


if __name__ == "__main__":
    raise SystemExit(main())

"""The Monte Carlo error of the Titanic evaluation of finished ``voronoi-categorical`` runs.

    python -m benchmarks.check_voronoi_titanic_eval RUN [RUN ...] [--k 64] [--big-k 1024]

For each run's three Titanic models (Voronoi, argmax, uniform): ``sum_x P_hat(x)`` over all
``4^4`` classes of the dequantizer (``P_hat(x) = E_q[p / q]``, 512 draws per class, with its
standard error; 1 if the model is normalised), and the exact-PMF cross-entropy
``-sum_x P(x) IWAE_k(x)`` in bits per variable that the experiment reports, under the
evaluation seeds 7, 8, 9 (the experiment uses ``seed + 7``) and with ``--big-k`` samples. The
spread over the evaluation seeds is the evaluation's own Monte Carlo error.
"""

from __future__ import annotations

import argparse
import math

import torch


def main() -> None:
    from flowfields.experiments.voronoi_categorical import VoronoiCategorical
    from flowfields.experiments.voronoi_discrete2d import KINDS, class_weights
    from flowfields.voronoi import entropy_bits, titanic_pmf

    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--big-k", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    table = titanic_pmf()
    pmf, shape = table.reshape(-1), table.shape
    xs = torch.stack(torch.unravel_index(torch.arange(pmf.numel()), shape), 1)
    keep = pmf > 0
    xs, pmf = xs[keep], pmf[keep]
    n_vars = len(shape)
    every = torch.cartesian_prod(*[torch.arange(4)] * n_vars)
    h = entropy_bits(table) / n_vars

    def cross_entropy(model: object, k: int, seed: int) -> float:
        w = class_weights(model, xs, k, seed=seed, device="cpu")
        iwae = torch.logsumexp(w, 0) - math.log(k)
        return float(-(pmf * iwae).sum()) / (n_vars * math.log(2))

    print(f"entropy {h:.4f} bits per variable")
    print(f"| run | kind | sum P_hat | CE k={args.k}, eval seeds 7 / 8 / 9 | CE k={args.big_k} |")
    print("|---|---|---:|---|---:|")
    for run in args.runs:
        for kind in KINDS:
            model = VoronoiCategorical.load_model(run, f"titanic-{kind}")
            ratio = class_weights(model, every, 512, seed=123, device="cpu").exp()
            total = float(ratio.mean(0).sum())
            se = float((ratio.var(0) / ratio.shape[0]).sum().sqrt())
            ces = " / ".join(f"{cross_entropy(model, args.k, s):.4f}" for s in (7, 8, 9))
            big = cross_entropy(model, args.big_k, 11)
            print(f"| {run} | {kind} | {total:.4f} +- {se:.4f} | {ces} | {big:.4f} |")


if __name__ == "__main__":
    main()

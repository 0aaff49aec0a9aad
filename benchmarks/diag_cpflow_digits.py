"""Why CP-Flow loses on 8x8 digits in ``cpflow-tabular`` (issue 9, claim 4): two cheap checks.

Run: ``python -m benchmarks.diag_cpflow_digits [RUN_DIR]`` (one thread, ~10 s CPU); prints.

1. Gradient noise of the CG surrogate (one Rademacher probe per row, the experiment's
   ``cg_tol=1e-4``, ``cg_max_iter=50``) against the exact log-det gradient on one batch of
   128, and the minibatch noise of the exact gradient over 4 batches, all relative to the
   gradient's norm. Without ``RUN_DIR`` at the data-initialised CP-Flow of the experiment's
   defaults; with a finished ``cpflow-tabular`` run directory, at its trained
   ``cpflow-digits``.
2. How much of the digits density is marginal shape: the test NLL of 64 independent
   piecewise-constant marginals (the exact form of a dequantised integer's density, train
   frequencies with +0.5 smoothing), against independent Gaussian marginals and the
   full-covariance Gaussian, in the experiment's standardised units.
"""

from __future__ import annotations

import math
import sys

import torch

from flowfields.cpflow import CPFlow
from flowfields.experiments.cpflow_tabular import _raw, load_tabular
from flowfields.matching import FullCovarianceGaussian


def gradient_noise(run_dir: str | None) -> None:
    torch.manual_seed(0)
    train = load_tabular("digits")[0]
    if run_dir is None:
        flow = CPFlow(64, 3, 32, 3, logdet="exact")
        flow.initialize(train[:1024])
    else:
        import flowfields

        flow = flowfields.load(run_dir, "cpflow-digits").train()
    params = [p for p in flow.parameters() if p.requires_grad]

    def grad(x: torch.Tensor, method: str, seed: int = 0) -> torch.Tensor:
        flow.zero_grad()
        kw: dict = {}
        if method == "surrogate":
            gen = torch.Generator().manual_seed(seed)
            kw = {"cg_tol": 1e-4, "cg_max_iter": 50, "generator": gen}
        flow.training_loss(x, method, **kw).backward()
        return torch.cat([p.grad.flatten() for p in params if p.grad is not None]).clone()

    g = torch.Generator().manual_seed(1)
    batches = [train[torch.randint(0, len(train), (128,), generator=g)] for _ in range(4)]
    exact = torch.stack([grad(b, "exact") for b in batches])
    sur = torch.stack([grad(batches[0], "surrogate", 100 + k) for k in range(8)])
    norm = exact[0].norm()
    per_draw = float(((sur - exact[0]) ** 2).sum(1).mean().sqrt() / norm)
    mean_err = float((sur.mean(0) - exact[0]).norm() / norm)
    mb = float(((exact - exact.mean(0)) ** 2).sum(1).mean().sqrt() / exact.mean(0).norm())
    where = run_dir or "initialisation"
    print(
        f"[{where}] surrogate vs exact gradient, one batch: per-draw rel. deviation "
        f"{per_draw:.3f}; 8-draw mean rel. error {mean_err:.3f} (unbiased: "
        f"{per_draw / math.sqrt(8):.3f}); exact minibatch rel. sd {mb:.3f}"
    )


def marginal_shape() -> None:
    x = _raw("digits", 0)
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
    n_test, n_val = round(len(x) * 0.2), round(len(x) * 0.1)
    test, train = x[:n_test], x[n_test + n_val :]
    mu, sd = train.mean(0), train.std(0)
    nll = torch.zeros(len(test), dtype=torch.float64)
    for c in range(64):
        counts = torch.bincount(train[:, c].floor().long(), minlength=17).double() + 0.5
        p = counts / counts.sum()
        nll -= torch.log(p[test[:, c].floor().long().clamp(0, 16)] * sd[c])
    gauss = FullCovarianceGaussian((64,)).fit(((train - mu) / sd).float())
    full = float(-gauss.log_prob((test - mu) / sd).mean())
    print(
        f"digits test NLL: independent piecewise-constant marginals {float(nll.mean()):.2f}, "
        f"independent Gaussian marginals {64 * 0.5 * math.log(2 * math.pi * math.e):.2f}, "
        f"full-covariance Gaussian {full:.2f}"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    gradient_noise(sys.argv[1] if len(sys.argv) > 1 else None)
    marginal_shape()

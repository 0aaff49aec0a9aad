"""Divergence of a vector field: exact (batched Jacobians via torch.func) and stochastic.

For a field ``v(t, x)`` acting on a batch ``x`` of shape ``(B, D)`` whose samples do not
interact (row ``b`` of the output depends only on row ``b`` of the input), the divergence of
sample ``b`` is ``div v(x_b) = sum_i dv_i/dx_i (x_b)``.

- :func:`divergence_exact` builds the per-sample Jacobian diagonals with ``D`` vector-Jacobian
  (``mode="reverse"``) or Jacobian-vector (``mode="forward"``) products, vectorised with
  ``torch.func.vmap`` over the ``D`` basis directions (one forward pass of ``v``), or with a
  plain loop of ``D`` autograd calls (``mode="loop"``).
- :func:`divergence_hutchinson` is Hutchinson's unbiased estimate ``eps^T (dv/dx) eps`` with
  ``E[eps eps^T] = I`` (Rademacher or Gaussian probes, :func:`sample_probe`): one product.
- :func:`divergence_hutchpp` is Hutch++ (Meyer, Musco, Musco, Woodruff, "Hutch++: Optimal
  Stochastic Trace Estimation", arXiv:2010.09649): ``3k`` products, the top of the spectrum
  taken exactly from a sketch and Hutchinson on the rest; unbiased, exact once ``k >= D``.

Both return ``(v(t, x), div)`` because the field value comes for free. Both are differentiable
with respect to ``x`` and to the parameters of ``v`` (for maximum-likelihood training) when
autograd is recording; under ``torch.no_grad()`` they build no graph.

Reference for the stochastic estimate in CNFs: Grathwohl et al., "FFJORD: Free-form Continuous
Dynamics for Scalable Reversible Generative Models", arXiv:1810.01367.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from flowfields.errors import check, check_shape

__all__ = [
    "DIVERGENCE_MODES",
    "PROBE_KINDS",
    "divergence_exact",
    "divergence_hutchinson",
    "divergence_hutchpp",
    "sample_hutchpp_probes",
    "sample_probe",
]

#: Ways of computing the exact divergence; "auto" picks by dimension (measured, see module doc).
DIVERGENCE_MODES: tuple[str, ...] = ("auto", "reverse", "forward", "loop")
#: Probe distributions for Hutchinson's estimator (both have E[eps eps^T] = I).
PROBE_KINDS: tuple[str, ...] = ("rademacher", "gaussian")

#: ``v(t, x)``; ``t`` is passed through as given (a float or a tensor).
Field = Callable[[Any, Tensor], Tensor]


def _check_batch(x: Tensor, argument: str = "x") -> None:
    check_shape(x, argument, ndim=2)
    check(x.is_floating_point(), argument, x, "a floating-point tensor of shape (batch, dim)")


def _basis(x: Tensor) -> Tensor:
    """Basis directions broadcast over the batch: shape (D, B, D), e_i in every row."""
    b, d = x.shape
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    return eye.unsqueeze(1).expand(d, b, d)


def divergence_exact(
    v: Field,
    t: Tensor | float,
    x: Tensor,
    *,
    mode: Literal["auto", "reverse", "forward", "loop"] = "auto",
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact divergence of ``v(t, .)`` at each sample of ``x``.

    Args:
        v: vector field ``v(t, x)``, ``(B, D) -> (B, D)``, samples independent of each other.
        t: time, a float or 0-d tensor (or whatever ``v`` accepts), passed through unchanged.
        x: points, shape ``(B, D)``.
        mode: "reverse" (vmapped vector-Jacobian products), "forward" (vmapped
            Jacobian-vector products), "loop" (``D`` autograd.grad calls through one graph),
            or "auto": "loop" when autograd is not recording (evaluation), else "reverse"
            (measured fastest on CPU for MLP fields at D = 2, 16, 64; see
            benchmarks/bench_matching.py). "loop" with autograd recording always returns
            tensors attached to a graph (through an internal copy of ``x``).
        chunk_size: process this many basis directions at a time in the vmapped modes
            (bounds memory at ``chunk_size * B * D`` for large ``D``).

    Returns:
        ``(v_tx, div)``: the field ``v(t, x)``, shape ``(B, D)``, and its divergence, shape
        ``(B,)``.

    Raises:
        FlowfieldsError: ``x`` not a floating (B, D) tensor, or an unknown ``mode``.
    """
    _check_batch(x)
    check(mode in DIVERGENCE_MODES, "mode", mode, f"one of: {', '.join(DIVERGENCE_MODES)}")
    if mode == "auto":
        mode = "reverse" if torch.is_grad_enabled() else "loop"
    if mode == "loop":
        return _divergence_loop(v, t, x)

    def f(y: Tensor) -> Tensor:
        return v(t, y)

    basis = _basis(x)
    if mode == "reverse":
        out = torch.func.vjp(f, x)
        v_tx, vjp_fn = out[0], out[1]
        (rows,) = torch.func.vmap(vjp_fn, chunk_size=chunk_size)(basis)  # rows[i, b] = e_i^T J_b
        div = torch.einsum("ibi->b", rows)
        return v_tx, div

    def jvp(e: Tensor) -> Tensor:
        return torch.func.jvp(f, (x,), (e,))[1]

    v_tx = f(x)
    cols = torch.func.vmap(jvp, chunk_size=chunk_size)(basis)  # cols[i, b] = J_b e_i
    div = torch.einsum("ibi->b", cols)
    return v_tx, div


def _attach(v: Field, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Evaluate ``v`` on a version of ``x`` autograd can differentiate with respect to.

    Returns ``(x_g, v_tx, create_graph)``: ``create_graph`` is whether the caller is
    recording (then results must stay differentiable w.r.t. ``x`` and the parameters of v).
    """
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        v_tx = v(t, xg)
    return xg, v_tx, create_graph


def _grad(out: Tensor, xg: Tensor, cotangent: Tensor, create_graph: bool) -> Tensor:
    if not out.requires_grad:  # v does not depend on x (nor on anything differentiable)
        return torch.zeros_like(xg)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(
            out, xg, cotangent, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
    return torch.zeros_like(xg) if g is None else g


def _divergence_loop(v: Field, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
    """D reverse-mode passes through one graph (the classic FFJORD loop)."""
    xg, v_tx, create_graph = _attach(v, t, x)
    div = torch.zeros(x.shape[0], dtype=v_tx.dtype, device=v_tx.device)
    eye = torch.eye(x.shape[1], dtype=v_tx.dtype, device=v_tx.device)
    for i in range(x.shape[1]):
        div = div + _grad(v_tx, xg, eye[i].expand_as(v_tx), create_graph)[:, i]
    if not create_graph:
        return v_tx.detach(), div.detach()
    return v_tx, div


def sample_probe(
    x: Tensor,
    kind: Literal["rademacher", "gaussian"] = "rademacher",
    generator: torch.Generator | None = None,
) -> Tensor:
    """A probe ``eps`` for Hutchinson's estimator, shaped and typed like ``x``.

    Args:
        x: tensor whose shape, dtype and device the probe takes, e.g. ``(B, D)``.
        kind: "rademacher" (entries +-1 with probability 1/2; lowest variance among
            estimators with independent entries) or "gaussian" (standard normal).
        generator: optional torch.Generator for reproducible probes.

    Returns:
        Probe of shape ``x.shape``.
    """
    check(kind in PROBE_KINDS, "kind", kind, f"one of: {', '.join(PROBE_KINDS)}")
    check(
        isinstance(x, Tensor) and (x.is_floating_point() or x.is_complex()),
        "x",
        x,
        "a floating-point tensor (the probe takes its dtype)",
    )
    if kind == "gaussian":
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    bits = torch.randint(0, 2, x.shape, device=x.device, generator=generator)
    return (bits * 2 - 1).to(x.dtype)


def divergence_hutchinson(
    v: Field,
    t: Tensor | float,
    x: Tensor,
    probe: Tensor,
) -> tuple[Tensor, Tensor]:
    """Hutchinson's unbiased divergence estimate ``eps^T (dv/dx) eps`` with a given probe.

    One vector-Jacobian product (``torch.autograd.grad``, which measured about 0.2 ms per call
    cheaper than ``torch.func.vjp`` on small MLPs): about one backward pass of ``v``, whatever
    ``D``. When autograd is recording, the estimate is differentiable (``create_graph``)
    w.r.t. ``x`` and the parameters of ``v``.
    Hold the probe fixed over an ODE solve (see :class:`AugmentedDynamics`) so the solver sees
    a smooth field.

    Args:
        v: vector field ``v(t, x)``, ``(B, D) -> (B, D)``.
        t: time, passed to ``v`` unchanged.
        x: points, shape ``(B, D)``.
        probe: ``eps`` with ``E[eps eps^T] = I``, shape ``(B, D)`` (see :func:`sample_probe`).

    Returns:
        ``(v_tx, div_estimate)`` of shapes ``(B, D)`` and ``(B,)``.

    Raises:
        FlowfieldsError: ``x`` or ``probe`` of the wrong shape.
    """
    _check_batch(x)
    check(
        isinstance(probe, Tensor) and probe.shape == x.shape,
        "probe",
        probe,
        f"a tensor of the same shape as x, {tuple(x.shape)}",
        hint="Draw one with sample_probe(x).",
    )
    xg, v_tx, create_graph = _attach(v, t, x)
    probe = probe.to(v_tx.dtype)
    e_j = _grad(v_tx, xg, probe, create_graph)  # eps^T (dv/dx), one reverse pass
    div = (e_j * probe).sum(dim=1)
    if not create_graph:
        return v_tx.detach(), div.detach()
    return v_tx, div


def sample_hutchpp_probes(
    x: Tensor,
    k: int,
    kind: Literal["rademacher", "gaussian"] = "rademacher",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The sketch ``S`` and probes ``G`` of :func:`divergence_hutchpp`, each ``(B, D, k)``.

    Args:
        x: points, shape ``(B, D)`` (shape, dtype and device are taken from it).
        k: sketch size and number of Hutchinson probes (the estimate costs ``3k`` products).
        kind: entry distribution, "rademacher" or "gaussian".
        generator: optional torch.Generator.
    """
    _check_batch(x)
    check(isinstance(k, int) and not isinstance(k, bool) and k >= 1, "k", k, "an integer >= 1")
    like = x.new_empty(2, x.shape[0], x.shape[1], k)
    both = sample_probe(like, kind, generator)
    return both[0], both[1]


def divergence_hutchpp(
    v: Field,
    t: Tensor | float,
    x: Tensor,
    probes: tuple[Tensor, Tensor],
) -> tuple[Tensor, Tensor]:
    """Hutch++ estimate of the divergence: unbiased, lower variance than Hutchinson.

    With ``A = (dv/dx)^T`` per sample (same trace): ``Q = orth(A S)``, then
    ``tr(Q^T A Q) + tr(G'^T A G') / k`` with ``G' = (I - Q Q^T) G``. It uses ``3k``
    vector-Jacobian products; when ``k >= D`` the sketch spans the space and the result is
    the exact divergence. Hold ``probes`` fixed over an ODE solve.

    Args:
        v: vector field ``v(t, x)``, ``(B, D) -> (B, D)``.
        t: time, passed to ``v`` unchanged.
        x: points, shape ``(B, D)``.
        probes: ``(S, G)``, each of shape ``(B, D, k)`` (see :func:`sample_hutchpp_probes`).

    Returns:
        ``(v_tx, div_estimate)`` of shapes ``(B, D)`` and ``(B,)``.

    Raises:
        FlowfieldsError: ``x`` or ``probes`` of the wrong shape.
    """
    _check_batch(x)
    ok = (
        isinstance(probes, (tuple, list))
        and len(probes) == 2
        and all(isinstance(p, Tensor) and p.ndim == 3 for p in probes)
        and probes[0].shape == probes[1].shape
        and probes[0].shape[:2] == x.shape
    )
    check(
        ok,
        "probes",
        probes,
        f"a pair (S, G) of tensors of shape ({x.shape[0]}, {x.shape[1]}, k)",
        hint="Draw them with sample_hutchpp_probes(x, k).",
    )
    sketch, g = (p.to(x.dtype) for p in probes)
    xg, v_tx, create_graph = _attach(v, t, x)

    def apply(u: Tensor) -> Tensor:  # (B, D, k) -> A u, column by column
        cols = [_grad(v_tx, xg, u[:, :, j], create_graph) for j in range(u.shape[2])]
        return torch.stack(cols, dim=2)

    q, _ = torch.linalg.qr(apply(sketch))  # (B, D, k) orthonormal columns
    exact_part = (q * apply(q)).sum(dim=(1, 2))
    g_rest = g - q @ (q.transpose(1, 2) @ g)
    rest_part = (g_rest * apply(g_rest)).sum(dim=(1, 2)) / g.shape[2]
    div = exact_part + rest_part
    if not create_graph:
        return v_tx.detach(), div.detach()
    return v_tx, div

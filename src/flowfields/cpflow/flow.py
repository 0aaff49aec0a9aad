"""``CPFlow``: convex potential blocks stacked with ActNorm, a density model.

Huang, Chen, Tsirigotis, Courville, "Convex Potential Flows: Universal Probability
Distributions with Optimal Transport and Convex Optimization" (ICLR 2021, arXiv:2012.05942).

The flow maps data to noise (the normalising direction): ``z = f_K ∘ a_K ∘ ... ∘ f_1 ∘ a_1(x)``
with ``a_k`` an elementwise :class:`~flowfields.nn.ActNorm` (data-initialised) and ``f_k`` a
:class:`~flowfields.cpflow.ConvexPotentialBlock`, so
``log p(x) = log N(z; 0, I) + Σ_k (log|det a_k| + log det ∇²F_k)``. Sampling inverts every
block by convex optimisation.

Example:
    >>> import torch
    >>> from flowfields.cpflow import CPFlow
    >>> flow = CPFlow(2, blocks=2, hidden=8, depth=2).double()
    >>> x = flow.sample(3, generator=torch.Generator().manual_seed(0))
    >>> flow.log_prob(x).shape
    torch.Size([3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowfields.cpflow.block import LOGDET_METHODS, ConvexPotentialBlock, InverseResult
from flowfields.density import check_points, check_sample_count, weights_dtype
from flowfields.errors import check
from flowfields.nn import ActNorm

__all__ = ["CPFlow", "ConditionalCPFlow", "SampleDetails"]


def _check_blocks(blocks: int) -> None:
    check(
        isinstance(blocks, int) and not isinstance(blocks, bool) and blocks >= 1,
        "blocks",
        blocks,
        "an integer >= 1",
    )


@dataclass
class SampleDetails:
    """Output of :meth:`CPFlow.sample_details`.

    Attributes:
        x: samples, (n, d).
        z: the base draws, (n, d).
        inverses: one :class:`InverseResult` per block, in the order they were solved
            (last block first).
    """

    x: Tensor
    z: Tensor
    inverses: list[InverseResult]

    @property
    def converged(self) -> bool:
        """Every block's inverse reached its tolerance for every row."""
        return all(bool(r.converged.all()) for r in self.inverses)


def _norm_forward(norm: nn.Module, x: Tensor, ld: Tensor) -> tuple[Tensor, Tensor]:
    """``(a(x), ld + log|det a|)`` for an :class:`ActNorm` ``a``; ``(x, ld)`` for a disabled
    one (``nn.Identity``)."""
    if isinstance(norm, ActNorm):
        return norm(x), ld + norm.log_det()
    return x, ld


def _norm_inverse(norm: nn.Module, x: Tensor) -> Tensor:
    """``a^{-1}(x)`` for an :class:`ActNorm` ``a``; ``x`` for a disabled one."""
    return norm.inverse(x) if isinstance(norm, ActNorm) else x


class CPFlow(nn.Module):
    """A convex potential flow on R^dim with a standard normal base (see the module docs).

    Args:
        dim: dimension ``d``.
        blocks: number of convex potential blocks ``K``, >= 1.
        hidden, depth, activation, augment: each block's ICNN.
        actnorm: an :class:`ActNorm` before every block.
        logdet: how :meth:`log_prob` computes log-determinants: ``"exact"`` or ``"slq"``
            (``"auto"``: exact for ``d <= 32``, else SLQ with ``slq_probes`` probes).
        inverse_tol: residual tolerance of each block's inverse (None: dtype default).

    Shapes:
        ``log_prob`` (B, d) -> (B,); ``sample(n)`` -> (n, d).
    """

    def __init__(
        self,
        dim: int,
        blocks: int = 2,
        hidden: int = 64,
        depth: int = 3,
        activation: str = "softplus",
        *,
        augment: bool = True,
        actnorm: bool = True,
        logdet: str = "auto",
        slq_probes: int = 4,
        inverse_tol: float | None = None,
    ) -> None:
        super().__init__()
        _check_blocks(blocks)
        check(logdet in ("auto", "exact", "slq"), "logdet", logdet, "'auto', 'exact' or 'slq'")
        self.dim = dim
        self.event_shape = (dim,)
        self.logdet = ("exact" if dim <= 32 else "slq") if logdet == "auto" else logdet
        self.slq_probes, self.inverse_tol = slq_probes, inverse_tol
        self.blocks = nn.ModuleList(
            [
                ConvexPotentialBlock(dim, hidden, depth, activation, augment=augment)
                for _ in range(blocks)
            ]
        )
        self.norms = nn.ModuleList(
            [ActNorm(dim) if actnorm else nn.Identity() for _ in range(blocks)]
        )

    def _blocks(self) -> list[ConvexPotentialBlock]:
        return [b for b in self.blocks if isinstance(b, ConvexPotentialBlock)]

    def block(self, k: int) -> ConvexPotentialBlock:
        """The ``k``-th convex potential block (0 = the first applied to data)."""
        return self._blocks()[k]

    def _dtype(self) -> torch.dtype | None:
        return weights_dtype(self)

    def forward(self, x: Tensor, method: str = "exact", **kwargs) -> tuple[Tensor, Tensor]:
        """``(z, Σ log-det terms)`` for data ``x`` (B, d); ``method`` and ``kwargs`` as in
        :meth:`ConvexPotentialBlock.forward_logdet` (``"surrogate"`` for training at large d:
        the sum is then a gradient surrogate, not a log-determinant)."""
        check(method in LOGDET_METHODS, "method", method, f"one of {', '.join(LOGDET_METHODS)}")
        ld = x.new_zeros(x.shape[0])
        for norm, block in zip(self.norms, self._blocks(), strict=True):
            x, ld = _norm_forward(norm, x, ld)
            x, ld_k = block.forward_logdet(x, method, **kwargs)
            ld = ld + ld_k
        return x, ld

    @staticmethod
    def base_log_prob(z: Tensor) -> Tensor:
        """``log N(z; 0, I)``, (B, d) -> (B,)."""
        return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x`` (B, d) in nats, (B,), with the ``logdet`` method set at
        construction (SLQ: a stochastic estimate)."""
        check_points(x, self.event_shape, dtype=self._dtype())
        kwargs = {"n_probes": self.slq_probes} if self.logdet == "slq" else {}
        z, ld = self(x, self.logdet, **kwargs)
        return self.base_log_prob(z) + ld

    def training_loss(self, x: Tensor, method: str = "exact", **kwargs) -> Tensor:
        """Mean negative log-likelihood for training: with ``method="surrogate"`` its value is
        off by a constant (the surrogate's ≈ d per block) but its gradient is unbiased."""
        z, ld = self(x, method, **kwargs)
        return -(self.base_log_prob(z) + ld).mean()

    def inverse(self, z: Tensor) -> SampleDetails:
        """``x = f^{-1}(z)`` block by block (last first), with each solve's record."""
        check_points(z, self.event_shape, "z", dtype=self._dtype())
        x, records = z, []
        pairs = zip(reversed(self.norms), reversed(self._blocks()), strict=True)
        for norm, block in pairs:
            res = block.inverse(x, tol=self.inverse_tol)
            records.append(res)
            x = _norm_inverse(norm, res.x)
        return SampleDetails(x.detach(), z, records)

    def sample_details(self, n: int, *, generator: torch.Generator | None = None) -> SampleDetails:
        """``n`` samples with the base draws and every inverse's convergence record."""
        check_sample_count(n)
        p = next(self.parameters())
        dev = generator.device if generator is not None else p.device
        z = torch.randn(n, self.dim, generator=generator, device=dev, dtype=p.dtype)
        return self.inverse(z.to(p.device))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples, (n, d): base draws pushed through the inverse blocks."""
        return self.sample_details(n, generator=generator).x

    def initialize(self, x: Tensor) -> None:
        """Data-initialise every ActNorm (flow-level and inside the ICNNs) with one forward
        pass of ``x`` in training mode."""
        was = self.training
        self.train()
        self(x)
        self.train(was)


class ConditionalCPFlow(nn.Module):
    """A conditional convex potential flow ``z = f_K(... f_1(z0; c) ...; c)`` on R^dim.

    Every block is a :class:`ConvexPotentialBlock` on a :class:`~flowfields.nn.PICNN`
    (``F_k(·; c)`` strongly convex for every context ``c``), so each ``f_k(·; c) = ∇F_k(·; c)``
    is a bijection with ``log|det| = log det ∇²F_k``. Used in the sampling direction as an
    amortised variational posterior (arXiv:2012.05942, section 5.3): draws ``z0`` from a base
    and pushes them forward, ``log q(z | c) = log q0(z0 | c) - Σ_k log det ∇²F_k`` — no
    inversion is needed for the ELBO.

    With ``actnorm=True`` (default) an elementwise :class:`~flowfields.nn.ActNorm`
    (unconditional, data-initialised on its first training-mode batch) comes before every
    block and one after the last, ``z = a_{K+1} ∘ f_K ∘ a_K ∘ ... ∘ f_1 ∘ a_1(z0)``: the
    layout of the official code's VAE posterior (CW-Huang/CP-Flow, ``train_vae.py``); each
    ``a_k`` adds its constant ``log|det a_k| = Σ s`` to the log-det.

    Args:
        dim: dimension ``d``.
        context_dim: dimension of the context ``c``.
        blocks: number of blocks ``K``, >= 1.
        hidden, depth, activation: each block's PICNN.
        actnorm: the ``K + 1`` ActNorms around the blocks.
        alpha_init, gain_init: each block's initial quadratic and PICNN weights.

    Shapes:
        ``forward(z0 (B, d), context (B, context_dim))`` -> ``(z (B, d), logdet (B,))``.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        blocks: int = 2,
        hidden: int = 64,
        depth: int = 3,
        activation: str = "softplus",
        *,
        actnorm: bool = True,
        alpha_init: float = 1.0,
        gain_init: float = 1.0,
    ) -> None:
        super().__init__()
        _check_blocks(blocks)
        check(isinstance(actnorm, bool), "actnorm", actnorm, "True or False")
        self.dim, self.context_dim = dim, context_dim
        self.blocks = nn.ModuleList(
            [
                ConvexPotentialBlock(
                    dim,
                    hidden,
                    depth,
                    activation,
                    context_dim=context_dim,
                    alpha_init=alpha_init,
                    gain_init=gain_init,
                )
                for _ in range(blocks)
            ]
        )
        self.norms = nn.ModuleList(
            [ActNorm(dim) if actnorm else nn.Identity() for _ in range(blocks + 1)]
        )

    def _blocks(self) -> list[ConvexPotentialBlock]:
        return [b for b in self.blocks if isinstance(b, ConvexPotentialBlock)]

    def forward(
        self, z0: Tensor, context: Tensor, method: str = "exact", **kwargs
    ) -> tuple[Tensor, Tensor]:
        """``(z, Σ_k log det ∇²F_k + Σ_k log|det a_k|)`` pushing ``z0`` (B, d) forward given
        ``context`` (B, context_dim); ``method`` and ``kwargs`` as in
        :meth:`ConvexPotentialBlock.forward_logdet`."""
        check(method in LOGDET_METHODS, "method", method, f"one of {', '.join(LOGDET_METHODS)}")
        ld = z0.new_zeros(z0.shape[0])
        z = z0
        for norm, block in zip(self.norms, self._blocks(), strict=False):
            z, ld = _norm_forward(norm, z, ld)
            z, ld_k = block.forward_logdet(z, method, context=context, **kwargs)
            ld = ld + ld_k
        return _norm_forward(self.norms[-1], z, ld)

    def block_inputs(self, z0: Tensor, context: Tensor) -> list[Tensor]:
        """The input of every block (after its ActNorm) for ``z0`` (B, d), without log-dets
        (for diagnostics: ``[x_1, ..., x_K]``, ``x_k`` what ``f_k`` is applied to)."""
        out, z = [], z0
        for norm, block in zip(self.norms, self._blocks(), strict=False):
            z = norm(z)
            out.append(z)
            z = block(z, context=context)
        return out

    def inverse(self, z: Tensor, context: Tensor, tol: float | None = None) -> SampleDetails:
        """``z0`` with ``forward(z0, context)[0] = z``, block by block (last first)."""
        check_points(z, (self.dim,), "z", dtype=weights_dtype(self))
        records = []
        x = _norm_inverse(self.norms[-1], z)
        for norm, block in zip(reversed(self.norms[:-1]), reversed(self._blocks()), strict=True):
            res = block.inverse(x, tol=tol, context=context)
            records.append(res)
            x = _norm_inverse(norm, res.x)
        return SampleDetails(x.detach(), z, records)

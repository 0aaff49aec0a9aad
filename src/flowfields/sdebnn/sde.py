"""The augmented SDE of the SDE-BNN: hidden state, weights and the running KL, solved jointly."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from flowfields.errors import check
from flowfields.sdebnn.field import WeightedMLP
from flowfields.sdebnn.prior import OUPrior

__all__ = ["ESTIMATORS", "AugmentedSDE"]

#: KL estimators: "ckl" ½∫|u|² dt; "fmc" adds ∫u·dB (the exact single-path log ratio);
#: "stl" adds ∫u_sg·dB with the variational parameters stop-gradiented (sticking the landing).
ESTIMATORS: tuple[str, ...] = ("ckl", "fmc", "stl")


class AugmentedSDE(nn.Module):
    """The joint SDE of ``(h, w, l)``: hidden state, weight path and running log ratio.

    From Xu et al., "Infinitely Deep Bayesian Neural Networks with Stochastic Differential
    Equations" (arXiv:2102.06559). With ``NN = NN_phi(t, w)`` and ``u = NN / sigma``::

        dh = f(t, h; w) dt                     (no noise on h)
        dw = (-theta w + NN) dt + sigma dB     (approximate posterior over weights)
        dl = ½|u|² dt [+ u·dB]                 (Girsanov: l(1) estimates KL(Q||P))

    The estimators (:data:`ESTIMATORS`) differ in the ``dB`` term of ``l``: none for
    ``"ckl"``; ``u·dB`` for ``"fmc"``, so ``l(1)`` is the exact log ratio
    ``log dQ/dP`` of the sampled path; ``u_sg·dB`` for ``"stl"``, with ``u_sg`` computed from
    the drift network's parameters detached (the path ``w`` keeps its gradient), whose
    gradient has zero variance when Q is the true posterior. All three have mean KL(Q||P)
    and the same expected gradient.

    For ``"ckl"`` the noise is torchsde's "diagonal" (zero on ``h`` and ``l``, ``sigma`` on
    ``w``; the Brownian motion spans the whole state, see
    :class:`~flowfields.sdebnn.PaddedBrownian`). ``"fmc"`` and ``"stl"`` drive ``l`` with
    the weights' noise, so theirs is "general" with P Brownian channels, applied through
    ``g_prod`` without forming the (D, P) diffusion matrix. ``sde_type`` is ``"ito"`` (Euler)
    or ``"stratonovich"`` (midpoint, reversible Heun; torchsde's adjoint needs it): the two
    agree for ``"ckl"`` (additive noise on ``w``, none on ``h`` and ``l``); ``"fmc"`` and
    ``"stl"`` carry an Itô integral and refuse ``"stratonovich"``.

    Args:
        prior: the OU prior (its ``sigma`` is the posterior's too).
        drift: the posterior drift ``NN_phi(t, w)``: (S, P) -> (S, P), with ``n_weights``.
        field: the hidden-state field, or None for a weights-only SDE (then ``batch = 0``).
        batch: B, the number of inputs whose hidden states ride along.
        estimator: one of :data:`ESTIMATORS`.
        sde_type: ``"ito"`` or ``"stratonovich"``.

    Shapes:
        The state is ``y = [h.flatten(), w, l]`` of shape (S, B*H + P + 1);
        ``f(t, y)`` and ``g_prod(t, y, v)`` with ``v`` (S, P) return (S, B*H + P + 1).

    Raises:
        FlowfieldsError: unknown estimator or sde_type, fmc/stl with Stratonovich.
    """

    def __init__(
        self,
        prior: OUPrior,
        drift: nn.Module,
        field: WeightedMLP | None = None,
        *,
        batch: int = 0,
        estimator: str = "ckl",
        sde_type: str = "ito",
    ) -> None:
        super().__init__()
        check(estimator in ESTIMATORS, "estimator", estimator, f"one of {ESTIMATORS}")
        check(sde_type in ("ito", "stratonovich"), "sde_type", sde_type, "'ito' or 'stratonovich'")
        check(
            estimator == "ckl" or sde_type == "ito",
            "estimator",
            estimator,
            "'ckl' with sde_type='stratonovich'",
            hint="fmc and stl integrate u·dB in the Itô sense: use an Itô method (euler) and "
            "direct backpropagation.",
        )
        check(isinstance(batch, int) and batch >= 0, "batch", batch, "an integer >= 0")
        check(field is not None or batch == 0, "batch", batch, "0 when there is no field")
        self.prior = prior
        self.drift = drift
        self.field = field
        self.estimator = estimator
        self.sde_type = sde_type
        self.n_weights: int = int(getattr(drift, "n_weights"))  # noqa: B009
        self.n_hidden = batch * (field.width if field is not None else 0)
        self.batch = batch
        self.noise_type = "diagonal" if estimator == "ckl" else "general"
        if self.noise_type == "diagonal":
            # only diagonal noise has a cheap full diffusion; torchsde looks `g` up by name
            self.g = self._diffusion_diagonal

    def pack(self, h_0: Tensor | None, w_0: Tensor) -> Tensor:
        """The initial state from ``h_0`` (S, B, H) (or None) and ``w_0`` (S, P); ``l_0 = 0``."""
        parts = [] if h_0 is None else [h_0.reshape(w_0.shape[0], -1)]
        return torch.cat([*parts, w_0, w_0.new_zeros(w_0.shape[0], 1)], dim=-1)

    def unpack(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Split the state ``y`` (..., D) into ``h`` (..., B*H), ``w`` (..., P), ``l`` (...,)."""
        h, w, log_ratio = torch.split(y, [self.n_hidden, self.n_weights, 1], dim=-1)
        return h, w, log_ratio.squeeze(-1)

    def _parts(self, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """Drift ``f`` (S, D) and the ``u`` of the ``dB`` term of ``l`` (None for ckl)."""
        h, w, _ = self.unpack(y)
        correction = self.drift(t, w)
        u = correction / self.prior.sigma
        parts = [self.prior.drift(t, w) + correction, 0.5 * (u * u).sum(-1, keepdim=True)]
        if self.field is not None:
            h3 = h.reshape(y.shape[0], self.batch, self.field.width)
            parts.insert(0, self.field(t, h3, w).reshape(y.shape[0], -1))
        u_db = u if self.estimator == "fmc" else self._u_db(t, w)
        return torch.cat(parts, dim=-1), u_db

    def _u_db(self, t: Tensor, w: Tensor) -> Tensor | None:
        if self.estimator == "ckl":
            return None
        if self.estimator == "fmc":
            return self.drift(t, w) / self.prior.sigma
        params = {k: p.detach() for k, p in self.drift.named_parameters()}
        return functional_call(self.drift, params, (t, w)) / self.prior.sigma

    @property
    def state_size(self) -> int:
        """D = B*H + P + 1, the width of the augmented state."""
        return self.n_hidden + self.n_weights + 1

    def _diagonal(self, y: Tensor) -> Tensor:
        g = torch.zeros_like(y)
        g[:, self.n_hidden : self.n_hidden + self.n_weights] = self.prior.sigma
        return g

    def _diffusion_diagonal(self, t: Tensor, y: Tensor) -> Tensor:
        """Diagonal diffusion (S, D): ``sigma`` on the weights, 0 elsewhere (ckl only)."""
        return self._diagonal(y)

    def _g_prod(self, y: Tensor, u_db: Tensor | None, v: Tensor) -> Tensor:
        if self.noise_type == "diagonal":  # v spans the state: (S, D)
            return self._diagonal(y) * v
        g_h = y.new_zeros(y.shape[0], self.n_hidden)
        g_l = (u_db * v).sum(-1, keepdim=True) if u_db is not None else v.new_zeros(v.shape[0], 1)
        return torch.cat([g_h, self.prior.sigma * v, g_l], dim=-1)

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        """Drift of the augmented state, (S, D)."""
        return self._parts(t, y)[0]

    def g_prod(self, t: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Diffusion times the Brownian increment ``v`` ((S, P); (S, D) for ckl), (S, D)."""
        return self._g_prod(y, self._u_db(t, self.unpack(y)[1]), v)

    def f_and_g_prod(self, t: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Drift and diffusion-increment product from one evaluation of the networks."""
        f, u_db = self._parts(t, y)
        return f, self._g_prod(y, u_db, v)

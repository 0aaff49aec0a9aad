"""SDE-BNN models for regression and classification, and the σ = 0 ODE-net baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_finite, check_shape
from flowfields.integrate import State, odeint, sdeint
from flowfields.sdebnn.brownian import PaddedBrownian
from flowfields.sdebnn.field import WeightedMLP
from flowfields.sdebnn.posterior import PosteriorDrift
from flowfields.sdebnn.prior import OUPrior
from flowfields.sdebnn.sde import ESTIMATORS, AugmentedSDE

__all__ = [
    "IO_MODES",
    "SDEBNN",
    "SDE_METHODS_ITO",
    "SDE_METHODS_STRATONOVICH",
    "TASKS",
    "BNNOutput",
    "ODENet",
]

#: torchsde methods for the SDE-BNN's general noise, by SDE type.
SDE_METHODS_ITO: tuple[str, ...] = ("euler",)
SDE_METHODS_STRATONOVICH: tuple[str, ...] = ("midpoint", "heun", "euler_heun", "reversible_heun")
#: What the output means: Gaussian means (regression) or class logits (classification).
TASKS: tuple[str, ...] = ("regression", "classification")
#: How inputs enter and outputs leave the continuous-depth block: learned linear maps, or
#: zero-padding x to the state width and reading the first out_dim coordinates of h(1).
IO_MODES: tuple[str, ...] = ("linear", "augment")


@dataclass
class BNNOutput:
    """What a Bayesian network's forward pass returns.

    Attributes:
        out: one prediction per weight sample, shape (n_samples, batch, out_dim): Gaussian
            means for regression, logits for classification.
        kl: per-sample KL estimate between the weight posterior and prior, shape (n_samples,)
            (zeros for the deterministic baselines).
        nfe: drift evaluations of the forward solve (0 where nothing is integrated).
    """

    out: Tensor
    kl: Tensor
    nfe: int = 0


def _int(value: object, name: str, low: int = 1) -> int:
    check(
        isinstance(value, int) and not isinstance(value, bool) and value >= low,
        name,
        value,
        f"an integer >= {low}",
    )
    return int(value)  # type: ignore[call-overload]


class _ContinuousDepthNet(nn.Module):
    """Encoder -> continuous-depth block with weights w(t) -> readout (shared by SDE/ODE)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        width: int,
        hidden: int,
        drift_hidden: Sequence[int],
        activation: str,
        steps: int,
        task: str,
        theta: float,
        io: str,
    ) -> None:
        super().__init__()
        self.in_dim = _int(in_dim, "in_dim")
        self.out_dim = _int(out_dim, "out_dim")
        self.steps = _int(steps, "steps")
        check(task in TASKS, "task", task, f"one of {TASKS}")
        self.task = task
        self.theta = float(theta)
        check(io in IO_MODES, "io", io, f"one of {IO_MODES}")
        self.io = io
        width = _int(width, "width")
        widest = max(self.in_dim, self.out_dim)
        check(
            io == "linear" or width >= widest,
            "width",
            width,
            f"at least max(in_dim, out_dim) = {widest} with io='augment'",
        )
        self.encoder = nn.Linear(self.in_dim, width) if io == "linear" else None
        self.field = WeightedMLP(width, _int(hidden, "hidden"), activation=activation)
        self.w_0 = nn.Parameter(self.field.initial_weights())
        self.drift = PosteriorDrift(self.field.n_weights, hidden=drift_hidden)
        self.readout = nn.Linear(width, self.out_dim) if io == "linear" else None

    @property
    def n_weights(self) -> int:
        """P, the number of weights that follow the depth process w(t)."""
        return self.field.n_weights

    def _encode(self, x: Tensor, n_samples: int) -> tuple[Tensor, Tensor]:
        check_shape(x, "x", ndim=2, last=self.in_dim)
        check(
            x.dtype == self.w_0.dtype,
            "x",
            x,
            f"a floating-point tensor of the model's dtype {self.w_0.dtype} "
            "(convert the input or the model with .to(dtype))",
        )
        check_finite(x, "x")
        _int(n_samples, "n_samples")
        if self.encoder is not None:
            h = self.encoder(x)
        else:
            h = torch.cat([x, x.new_zeros(x.shape[0], self.field.width - self.in_dim)], dim=-1)
        h_0 = h.unsqueeze(0).expand(n_samples, -1, -1)
        return h_0, self.w_0.expand(n_samples, -1)

    def _read(self, h_1: Tensor, n_samples: int, batch: int) -> Tensor:
        h = h_1.reshape(n_samples, batch, self.field.width)
        return self.readout(h) if self.readout is not None else h[..., : self.out_dim]


class SDEBNN(_ContinuousDepthNet):
    """SDE Bayesian neural network: a continuous-depth net whose weights are a diffusion.

    Xu, Chen, Li, Duvenaud, "Infinitely Deep Bayesian Neural Networks with Stochastic
    Differential Equations" (AISTATS 2022, arXiv:2102.06559). The input is encoded to
    ``h(0) = E x`` (width H), evolved over depth t in [0, 1] by ``dh/dt = f(t, h; w(t))``
    (:class:`~flowfields.sdebnn.WeightedMLP`) and read out linearly. The weights follow the
    approximate posterior ``dw = (-theta w + NN_phi(t, w)) dt + sigma dB`` from the learned
    ``w_0``; the prior is the OU process ``dw = -theta w dt + sigma dB`` from the same
    ``w_0``. ``h``, ``w`` and the running KL are one SDE (:class:`AugmentedSDE`) solved with
    :func:`flowfields.integrate.sdeint` on ``steps`` equal steps; each of the S weight paths
    is shared by the whole batch, so ``out[s]`` is the prediction of one sampled network.

    Args:
        in_dim, out_dim: input and output sizes.
        width: H, the hidden state size; hidden: K, the field's hidden width.
        sigma: diffusion of prior and posterior (> 0); theta: OU mean reversion (> 0).
        drift_hidden: hidden widths of ``NN_phi``.
        activation: smooth activation of the field.
        estimator: KL estimator, one of :data:`~flowfields.sdebnn.ESTIMATORS`.
        steps: solver steps over depth [0, 1].
        method: ``"euler"`` (Itô) or a Stratonovich method
            (:data:`SDE_METHODS_STRATONOVICH`); None picks euler, or reversible_heun with
            the adjoint.
        adjoint: gradients by torchsde's stochastic adjoint (memory O(1) in ``steps``;
            ``estimator="ckl"`` and a Stratonovich method only, see :class:`AugmentedSDE`).
            Reversible Heun's adjoint reproduces the direct gradient to rounding.
        task: ``"regression"`` or ``"classification"`` (see :mod:`flowfields.sdebnn.loss`).
        io: ``"linear"`` (learned encoder ``h(0) = E x`` and readout ``out = R h(1)``) or
            ``"augment"`` (``h(0) = [x, 0, ...]``, ``out = h(1)[:out_dim]``: every
            transformation is in the stochastic block, as in the paper's 1-D regression).

    Shapes:
        forward(x, n_samples): x (B, in_dim) -> :class:`BNNOutput` with ``out``
        (n_samples, B, out_dim) and ``kl`` (n_samples,).

    Example:
        >>> net = SDEBNN(2, 3, width=4, hidden=4, drift_hidden=(4,), steps=5)
        >>> res = net(torch.randn(7, 2), n_samples=6)
        >>> res.out.shape, res.kl.shape, float(res.kl.abs().max())
        (torch.Size([6, 7, 3]), torch.Size([6]), 0.0)
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        width: int = 32,
        hidden: int = 32,
        sigma: float = 0.1,
        theta: float = 1.0,
        drift_hidden: Sequence[int] = (32,),
        activation: str = "tanh",
        estimator: str = "ckl",
        steps: int = 20,
        method: str | None = None,
        adjoint: bool = False,
        task: str = "regression",
        io: str = "linear",
    ) -> None:
        prior = OUPrior(sigma, theta)
        super().__init__(
            in_dim,
            out_dim,
            width=width,
            hidden=hidden,
            drift_hidden=drift_hidden,
            activation=activation,
            steps=steps,
            task=task,
            theta=theta,
            io=io,
        )
        self.prior = prior
        check(estimator in ESTIMATORS, "estimator", estimator, f"one of {ESTIMATORS}")
        self.estimator = estimator
        if method is None:
            method = "reversible_heun" if adjoint else "euler"
        methods = SDE_METHODS_ITO + SDE_METHODS_STRATONOVICH
        check(method in methods, "method", method, f"one of {methods}")
        self.method = method
        self.sde_type = "ito" if method in SDE_METHODS_ITO else "stratonovich"
        check(
            not adjoint or self.sde_type == "stratonovich",
            "method",
            method,
            f"a Stratonovich method ({', '.join(SDE_METHODS_STRATONOVICH)}) with adjoint=True",
            hint="torchsde's adjoint of an Itô SDE with general noise forms the full diffusion.",
        )
        self.adjoint = bool(adjoint)
        self.augmented_sde(0)  # validates estimator against sde_type now, not at first call

    @property
    def sigma(self) -> float:
        """The diffusion coefficient of prior and posterior."""
        return self.prior.sigma

    def augmented_sde(self, batch: int) -> AugmentedSDE:
        """The joint ``(h, w, l)`` SDE for a batch of ``batch`` inputs."""
        return AugmentedSDE(
            self.prior,
            self.drift,
            self.field if batch > 0 else None,
            batch=batch,
            estimator=self.estimator,
            sde_type=self.sde_type,
        )

    def brownian_motion(
        self,
        n_samples: int,
        *,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> Any:
        """A ``torchsde.BrownianInterval`` on [0, 1] of shape (n_samples, P).

        Its seed is drawn from ``generator`` (or torch's global RNG), so runs seeded with
        ``torch.manual_seed`` repeat exactly. Pass the same object to several forward calls
        to hold the noise fixed.
        """
        import torchsde

        entropy = int(torch.randint(0, 2**62, (), generator=generator))
        return torchsde.BrownianInterval(
            t0=0.0,
            t1=1.0,
            size=(n_samples, self.n_weights),
            dtype=dtype or self.w_0.dtype,
            device=self.w_0.device,
            entropy=entropy,
            dt=1.0 / self.steps,  # without it, its first queries can build a huge search tree
        )

    def forward(
        self,
        x: Tensor,
        n_samples: int = 1,
        *,
        bm: Any = None,
        generator: torch.Generator | None = None,
    ) -> BNNOutput:
        h_0, w_0 = self._encode(x, n_samples)
        sde = self.augmented_sde(x.shape[0])
        if bm is None:
            bm = self.brownian_motion(n_samples, dtype=x.dtype, generator=generator)
        check(
            tuple(bm.shape) == (n_samples, self.n_weights),
            "bm",
            bm,
            f"a Brownian motion of shape ({n_samples}, {self.n_weights}) (n_samples, n_weights)",
        )
        if sde.noise_type == "diagonal":
            bm = PaddedBrownian(bm, before=sde.n_hidden, after=1)
        sol = sdeint(
            sde,
            sde.pack(h_0, w_0),
            torch.tensor([0.0, 1.0], dtype=torch.float64),
            method=self.method,
            dt=1.0 / self.steps,
            bm=bm,
            adjoint=self.adjoint,
            adjoint_params=tuple(self.drift.parameters()),
        )
        h_1, _, kl = sde.unpack(sol.x[-1])
        return BNNOutput(out=self._read(h_1, n_samples, x.shape[0]), kl=kl, nfe=sol.nfe)


class ODENet(_ContinuousDepthNet):
    """The σ = 0 baseline of the SDE-BNN: the same network with deterministic weight paths.

    The limit sigma -> 0 of :class:`SDEBNN` (Xu et al., arXiv:2102.06559, the "ODEnet"
    baseline): ``dh/dt = f(t, h; w(t))`` with ``dw/dt = -theta w + NN_phi(t, w)`` from the
    learned ``w_0``, the same encoder, field, drift network and readout (the same parameter
    count), solved as one ODE with :func:`flowfields.integrate.odeint` and trained by
    maximum likelihood. ``forward`` returns one "sample" and a zero KL.

    Args:
        in_dim, out_dim, width, hidden, theta, drift_hidden, activation, steps, task, io: as
            for :class:`SDEBNN`.
        method: a fixed-step :func:`~flowfields.integrate.odeint` method.

    Example:
        >>> net = ODENet(2, 3, width=4, hidden=4, drift_hidden=(4,), steps=5)
        >>> net(torch.randn(7, 2)).out.shape
        torch.Size([1, 7, 3])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        width: int = 32,
        hidden: int = 32,
        theta: float = 1.0,
        drift_hidden: Sequence[int] = (32,),
        activation: str = "tanh",
        steps: int = 20,
        method: str = "euler",
        task: str = "regression",
        io: str = "linear",
    ) -> None:
        check(math.isfinite(theta) and theta > 0, "theta", theta, "a finite float > 0")
        super().__init__(
            in_dim,
            out_dim,
            width=width,
            hidden=hidden,
            drift_hidden=drift_hidden,
            activation=activation,
            steps=steps,
            task=task,
            theta=theta,
            io=io,
        )
        self.method = method

    def _velocity(self, t: Tensor, state: State) -> State:
        h, w = state
        return self.field(t, h, w), -self.theta * w + self.drift(t, w)

    def forward(self, x: Tensor, n_samples: int = 1, **_: object) -> BNNOutput:
        h_0, w_0 = self._encode(x, 1)
        sol = odeint(
            self._velocity,
            (h_0, w_0),
            [0.0, 1.0],
            method=self.method,
            step_size=1.0 / self.steps,
        )
        h_1 = sol.x[0][-1]
        out = self._read(h_1, 1, x.shape[0]).expand(n_samples, -1, -1)
        return BNNOutput(out=out, kl=out.new_zeros(n_samples), nfe=sol.nfe)

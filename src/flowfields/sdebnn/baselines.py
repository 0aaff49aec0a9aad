"""Baselines on the SDE-BNN's architecture: a mean-field VI MLP and a deep ensemble."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_finite, check_shape
from flowfields.nn import activation as make_activation
from flowfields.sdebnn.model import BNNOutput

__all__ = ["BayesLinear", "DeepEnsemble", "MeanFieldMLP"]


class BayesLinear(nn.Module):
    """Linear layer with a factorised Gaussian posterior over its weights and biases.

    Bayes by backprop (Blundell et al., "Weight Uncertainty in Neural Networks",
    arXiv:1505.05424) with the local reparameterisation trick (Kingma et al., "Variational
    Dropout and the Local Reparameterization Trick", arXiv:1506.02557): the pre-activations
    are sampled from their Gaussian, ``N(x mu_W + mu_b, x^2 s_W^2 + s_b^2)``, which has lower
    variance than sampling the weights. Prior N(0, prior_std^2) on every weight and bias;
    its KL to the posterior is computed in closed form.

    Args:
        n_in, n_out: sizes. prior_std: prior standard deviation (> 0).
        init_std: initial posterior standard deviation of every weight (> 0).

    Shapes:
        forward(x): (S, B, n_in) -> (S, B, n_out), an independent draw per entry.
    """

    def __init__(self, n_in: int, n_out: int, prior_std: float = 1.0, init_std: float = 1e-3):
        super().__init__()
        check(prior_std > 0, "prior_std", prior_std, "a float > 0")
        check(init_std > 0, "init_std", init_std, "a float > 0")
        init = nn.Linear(n_in, n_out)
        self.weight_mu = nn.Parameter(init.weight.detach().T.clone())
        self.bias_mu = nn.Parameter(init.bias.detach().clone())
        rho = math.log(math.expm1(init_std))  # softplus^-1
        self.weight_rho = nn.Parameter(torch.full((n_in, n_out), rho))
        self.bias_rho = nn.Parameter(torch.full((n_out,), rho))
        self.prior_std = float(prior_std)

    def forward(self, x: Tensor) -> Tensor:
        w_var = nn.functional.softplus(self.weight_rho) ** 2
        b_var = nn.functional.softplus(self.bias_rho) ** 2
        mean = x @ self.weight_mu + self.bias_mu
        std = torch.sqrt((x * x) @ w_var + b_var)
        return mean + std * torch.randn_like(mean)

    def kl(self) -> Tensor:
        """KL(q || prior) summed over all weights and biases, 0-d."""
        total = torch.zeros((), dtype=self.weight_mu.dtype, device=self.weight_mu.device)
        for mu, rho in ((self.weight_mu, self.weight_rho), (self.bias_mu, self.bias_rho)):
            s = nn.functional.softplus(rho)
            p = self.prior_std
            total = total + (torch.log(p / s) + (s * s + mu * mu) / (2 * p * p) - 0.5).sum()
        return total


class MeanFieldMLP(nn.Module):
    """Mean-field variational MLP, the discrete-depth Bayesian baseline of the SDE-BNN.

    The mean-field VI baseline of Xu et al., "Infinitely Deep Bayesian Neural Networks with
    Stochastic Differential Equations" (arXiv:2102.06559): an MLP ``in -> widths ... -> out``
    of :class:`BayesLinear` layers (the SDE-BNN's encoder, field and readout widths, e.g.
    ``(H, K, H)``) with smooth activations between them, trained on the same ELBO.

    Args:
        in_dim, out_dim: sizes; widths: hidden widths; activation: smooth activation name.
        prior_std, init_std: see :class:`BayesLinear`.

    Shapes:
        forward(x, n_samples): x (B, in_dim) -> :class:`~flowfields.sdebnn.BNNOutput` with
        ``out`` (n_samples, B, out_dim) and ``kl`` (n_samples,) (the closed-form KL).

    Example:
        >>> mlp = MeanFieldMLP(2, 3, widths=(4, 4))
        >>> mlp(torch.randn(5, 2), n_samples=6).out.shape
        torch.Size([6, 5, 3])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        widths: Sequence[int] = (32, 32, 32),
        activation: str = "tanh",
        prior_std: float = 1.0,
        init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        sizes = (in_dim, *widths, out_dim)
        check(all(isinstance(s, int) and s >= 1 for s in sizes), "widths", widths, "sizes >= 1")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.layers = nn.ModuleList(
            BayesLinear(a, b, prior_std, init_std) for a, b in itertools.pairwise(sizes)
        )
        self.act = make_activation(activation)

    def _bayes_layers(self) -> list[BayesLinear]:
        return [layer for layer in self.layers if isinstance(layer, BayesLinear)]

    def forward(self, x: Tensor, n_samples: int = 1, **_: object) -> BNNOutput:
        check_shape(x, "x", ndim=2, last=self.in_dim)
        check_finite(x, "x")
        h = x.unsqueeze(0).expand(n_samples, -1, -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        kl = torch.stack([layer.kl() for layer in self._bayes_layers()]).sum()
        return BNNOutput(out=h, kl=kl.expand(n_samples))


class DeepEnsemble(nn.Module):
    """A deep ensemble: M independently initialised and trained networks, averaged.

    Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty Estimation using
    Deep Ensembles" (arXiv:1612.01474). Each member is a deterministic network returning a
    :class:`~flowfields.sdebnn.BNNOutput` (e.g. :class:`~flowfields.sdebnn.ODENet`); the
    ensemble's "samples" are its members, so :func:`~flowfields.sdebnn.bayes_model_average`
    of its output is the ensemble's predictive.

    Args:
        members: the M networks (trained separately, each on its own loss).

    Shapes:
        forward(x): x (B, in_dim) -> ``out`` (M, B, out_dim), ``kl`` zeros (M,).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        check(len(members) >= 1, "members", members, "at least one network")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor, n_samples: int | None = None, **_: object) -> BNNOutput:
        outs = [m(x).out[0] for m in self.members]
        out = torch.stack(outs)
        return BNNOutput(out=out, kl=out.new_zeros(out.shape[0]))

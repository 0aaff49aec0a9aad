"""The defects the fuzz suite found at more examples than ``make test`` runs, pinned one by one.

Each case failed before its fix with an exception other than FlowfieldsError (or a NaN
result); ``FUZZ_EXAMPLES=500 pytest tests/test_fuzz.py`` found them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from flowfields.errors import FlowfieldsError


class _ItoSDE(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t: Any, x: Any) -> Any:
        return -x

    def g(self, t: Any, x: Any) -> Any:
        return 0.1 * torch.ones_like(x)


def _sdeint_stratonovich_method() -> Any:
    from flowfields.integrate import sdeint

    return sdeint(_ItoSDE(), torch.ones(1, 1), torch.tensor([0.0, 1.0]), method="midpoint")


def _bma_of_no_samples() -> Any:
    from flowfields.sdebnn import bayes_model_average

    return bayes_model_average(torch.zeros(0, 1, 1))


def _elbo_of_a_scalar() -> Any:
    from flowfields.sdebnn import elbo_loss

    out = torch.tensor(1.5)
    return elbo_loss(out, out, torch.tensor(1), task="regression", n_data=1, noise_std=0.1)


def _sdebnn_float64_input() -> Any:
    from flowfields.sdebnn import SDEBNN

    model = SDEBNN(2, 1, width=4, hidden=4, drift_hidden=(4,))
    return model(torch.zeros(3, 2, dtype=torch.float64), 2)


def _bits_per_dim_empty() -> Any:
    from flowfields.matching import FullCovarianceGaussian, bits_per_dim

    return bits_per_dim(FullCovarianceGaussian((2,)), torch.zeros(0, 0, dtype=torch.int64), 2)


def _cfm_loss_empty() -> Any:
    from flowfields.matching import cfm_loss
    from flowfields.nn import MLPField

    return cfm_loss(MLPField(2, hidden=8, depth=1), "condot", torch.zeros(0, 2))


def _integer_probe() -> Any:
    from flowfields.divergence import sample_probe

    return sample_probe(torch.tensor([1]), "gaussian")


def _density_at_time_none() -> Any:
    from flowfields.conservation import PositiveDensityFlux

    model = PositiveDensityFlux(1, n_components=2, hidden=4, depth=1)
    return model.log_rho(None, torch.zeros(0, 1))


def _lindbladian_string_rates() -> Any:
    from flowfields.quantum import lindbladian

    H = torch.ones(1, 1, dtype=torch.float64)
    return lindbladian(H, torch.ones(1, 1, 1, dtype=torch.complex128), "")


CASES: dict[str, Callable[[], Any]] = {
    "sdeint: a Stratonovich method for an Ito SDE": _sdeint_stratonovich_method,
    "bayes_model_average of zero samples (NaN)": _bma_of_no_samples,
    "elbo_loss of 0-d outputs (IndexError)": _elbo_of_a_scalar,
    "SDEBNN on float64 input, float32 model (RuntimeError)": _sdebnn_float64_input,
    "bits_per_dim of an empty batch (ValueError from torch.cat)": _bits_per_dim_empty,
    "cfm_loss of an empty batch (RuntimeError from reshape)": _cfm_loss_empty,
    "sample_probe of an integer tensor (NotImplementedError)": _integer_probe,
    "PositiveDensityFlux.log_rho at t=None (TypeError)": _density_at_time_none,
    "lindbladian with rates='' (TypeError)": _lindbladian_string_rates,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_found_defect_now_raises_flowfields_error(case: str) -> None:
    with pytest.raises(FlowfieldsError):
        CASES[case]()

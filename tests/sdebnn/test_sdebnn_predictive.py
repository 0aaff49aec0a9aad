"""Predictive summaries and the ELBO against scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from flowfields.errors import FlowfieldsError
from flowfields.sdebnn import (
    bayes_model_average,
    elbo_loss,
    negative_log_likelihood,
    predictive_interval,
)

F64 = torch.float64


def test_bayes_model_average_averages_probabilities() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 4, 3, dtype=F64) * 3
    probs = bayes_model_average(logits)
    ref = np.exp(logits.numpy() - logits.numpy().max(-1, keepdims=True))
    ref = (ref / ref.sum(-1, keepdims=True)).mean(0)
    np.testing.assert_allclose(probs.numpy(), ref, rtol=1e-12)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, dtype=F64))
    # averaging probabilities, not logits: two confident, opposite samples give 1/2
    torch.testing.assert_close(
        bayes_model_average(torch.tensor([[[20.0, 0.0]], [[0.0, 20.0]]])),
        torch.tensor([[0.5, 0.5]]),
    )


def test_single_sample_interval_is_the_gaussian_one() -> None:
    out = torch.tensor([[[0.3], [-1.0]]], dtype=F64)
    iv = predictive_interval(out, noise_std=0.5, level=0.9)
    z = stats.norm.ppf(0.95)
    torch.testing.assert_close(iv.upper, out[0] + z * 0.5, rtol=0, atol=1e-10)
    torch.testing.assert_close(iv.lower, out[0] - z * 0.5, rtol=0, atol=1e-10)
    torch.testing.assert_close(iv.std, torch.full_like(out[0], 0.5))


def test_mixture_interval_matches_scipy_root_finding() -> None:
    """A bimodal predictive: the interval ends solve mean_s Phi((q - m_s)/s) = alpha."""
    means = np.array([-2.0, -1.5, 3.0])
    s = 0.4
    out = torch.tensor(means, dtype=F64).reshape(3, 1, 1)
    iv = predictive_interval(out, noise_std=s, level=0.8)
    for q, value in ((0.1, iv.lower), (0.9, iv.upper)):
        root = optimize.brentq(
            lambda x, q=q: stats.norm.cdf((x - means) / s).mean() - q, -10, 10, xtol=1e-12
        )
        assert abs(float(value) - root) < 1e-8
    var = means.var() + s**2
    assert abs(float(iv.std) - np.sqrt(var)) < 1e-12
    assert abs(float(iv.epistemic_std) - means.std()) < 1e-12


def test_noise_free_interval_is_the_empirical_quantile() -> None:
    out = torch.linspace(0, 1, 101, dtype=F64).reshape(101, 1, 1)
    iv = predictive_interval(out, noise_std=0.0, level=0.9)
    assert abs(float(iv.lower) - 0.05) < 1e-12 and abs(float(iv.upper) - 0.95) < 1e-12


def test_regression_nll_and_elbo() -> None:
    torch.manual_seed(1)
    out = torch.randn(4, 5, 2, dtype=F64)
    y = torch.randn(5, 2, dtype=F64)
    nll = negative_log_likelihood(out, y, "regression", noise_std=0.3)
    ref = -stats.norm.logpdf(y.numpy(), loc=out.numpy(), scale=0.3).sum(-1)
    np.testing.assert_allclose(nll.numpy(), ref, rtol=1e-12)
    kl = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    e = elbo_loss(out, kl, y, task="regression", n_data=50, noise_std=0.3, kl_weight=0.5)
    assert abs(float(e.loss) - (ref.mean() + 0.5 * 2.5 / 50)) < 1e-12
    assert abs(float(e.kl) - 2.5) < 1e-12


def test_classification_nll() -> None:
    torch.manual_seed(2)
    logits = torch.randn(3, 6, 4, dtype=F64)
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    nll = negative_log_likelihood(logits, y, "classification")
    lp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(-1, keepdims=True))
    ref = -np.take_along_axis(lp, y.numpy()[None, :, None].repeat(3, 0), -1)[..., 0]
    np.testing.assert_allclose(nll.numpy(), ref, rtol=1e-12)


def test_bad_input_raises() -> None:
    out = torch.zeros(2, 3, 4)
    with pytest.raises(FlowfieldsError, match="labels in"):
        negative_log_likelihood(out, torch.tensor([0, 1, 4]), "classification")
    with pytest.raises(FlowfieldsError, match="integer"):
        negative_log_likelihood(out, torch.zeros(3), "classification")
    with pytest.raises(FlowfieldsError, match="noise_std"):
        negative_log_likelihood(out, torch.zeros(3, 4), "regression")
    with pytest.raises(FlowfieldsError, match="noise_std"):
        negative_log_likelihood(out, torch.zeros(3, 4), "regression", noise_std=0.0)
    with pytest.raises(FlowfieldsError, match="non-finite"):
        negative_log_likelihood(out, torch.full((3, 4), float("nan")), "regression", 1.0)
    with pytest.raises(FlowfieldsError, match="task"):
        negative_log_likelihood(out, torch.zeros(3, 4), "ranking", 1.0)
    with pytest.raises(FlowfieldsError, match="n_data"):
        elbo_loss(
            out, torch.zeros(2), torch.zeros(3, 4), task="regression", n_data=0, noise_std=1.0
        )
    with pytest.raises(FlowfieldsError, match="kl"):
        elbo_loss(
            out, torch.zeros(3), torch.zeros(3, 4), task="regression", n_data=5, noise_std=1.0
        )
    with pytest.raises(FlowfieldsError, match="level"):
        predictive_interval(out, 1.0, level=1.0)
    with pytest.raises(FlowfieldsError, match="noise_std"):
        predictive_interval(out, torch.tensor([0.0, 1.0, 1.0, 1.0]))
    with pytest.raises(FlowfieldsError, match="logits"):
        bayes_model_average(torch.zeros(3, 4))

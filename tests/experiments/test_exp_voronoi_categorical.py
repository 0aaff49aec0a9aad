"""voronoi-categorical: the Titanic table, a tiny CLI run, its metrics and claims, loading."""

from __future__ import annotations

import json
import math

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.errors import FlowfieldsError
from flowfields.voronoi import digits_levels, entropy_bits, sample_table, titanic_pmf


def test_titanic_table_marginals() -> None:
    """The published marginals of the 2201 people: class 325/285/706/885, 1731 men, 109
    children, 711 survivors."""
    c = titanic_pmf() * 2201
    torch.testing.assert_close(
        c.sum((1, 2, 3)), torch.tensor([325.0, 285, 706, 885], dtype=c.dtype)
    )
    assert round(float(c[:, 0].sum())) == 1731 and round(float(c[:, :, 0].sum())) == 109
    assert round(float(c[..., 1].sum())) == 711
    assert 3.0 < entropy_bits(titanic_pmf()) < 4.0
    x = sample_table(titanic_pmf(), 50_000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (50_000, 4) and int(x[:, 0].max()) == 3 and int(x[:, 1:].max()) == 1
    freq = torch.bincount(x[:, 3], minlength=2).double() / x.shape[0]
    assert abs(float(freq[1]) - 711 / 2201) < 4 * math.sqrt(0.25 / x.shape[0])
    d = digits_levels()
    assert d.shape == (1797, 64) and int(d.min()) == 0 and int(d.max()) == 16


def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "vcat"
    sets = ["transforms=1", "hidden=8", "cond_hidden=8", "steps=3", "batch=16", "iwae_k=2"]
    args = ["run", "voronoi-categorical", "--no-progress", "--out", str(out), "--set", *sets]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == ["learned-boundaries-help"]
    for data in ("titanic", "digits"):
        for kind in ("voronoi", "argmax", "uniform"):
            assert math.isfinite(metrics[f"{data}/{kind}_bits_per_var"])
    h = metrics["titanic/entropy_bits_per_var"]
    assert abs(h - entropy_bits(titanic_pmf()) / 4) < 1e-12
    # a bound on the cross-entropy: never below the entropy (IWAE slack stated: 2 samples)
    assert metrics["titanic/uniform_bits_per_var"] > h - 0.05
    assert {p.name for p in out.glob("*.png")} == {"categorical.png"}
    model = flowfields.load(out, "digits-voronoi")
    x = digits_levels()[:3]
    z, _ = model.dequantizer.sample(x, 2)
    assert z.shape == (2, 3, 128) and torch.equal(model.dequantizer.decode(z), x.expand(2, 3, 64))


def test_bad_config_raises(tmp_path) -> None:
    from flowfields.experiments.voronoi_categorical import Config, VoronoiCategorical

    for key, value in (("datasets", ("mnist",)), ("dim", 0), ("n_test", 5000)):
        cfg = Config.quick()
        setattr(cfg, key, value)
        with pytest.raises(FlowfieldsError, match=key):
            VoronoiCategorical(cfg, tmp_path / "x").check_config()

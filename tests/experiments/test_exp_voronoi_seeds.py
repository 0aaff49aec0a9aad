"""The ``seeds`` option of voronoi-discrete2d / voronoi-categorical: the helpers against hand
values, and a seeds = 2 run whose second seed is exactly the single-seed run at that seed."""

from __future__ import annotations

import dataclasses
import math
import statistics
from types import SimpleNamespace

import pytest

from flowfields.errors import FlowfieldsError
from flowfields.experiments._voronoi_seeds import (
    fmt_mean,
    lowest_on_mean,
    seed_scope,
    seed_suffix,
    seed_summary,
    seeds_text,
    strip_seed,
)
from flowfields.report import mean_se

KINDS = ("voronoi", "argmax", "uniform")


def test_mean_se_hand_values() -> None:
    m, se = mean_se([1.0, 2.0, 6.0])
    assert m == 3.0
    assert abs(se - statistics.stdev([1, 2, 6]) / math.sqrt(3)) < 1e-15
    assert abs(se - math.sqrt(7 / 3)) < 1e-12  # sample variance 7, / n = 3
    m1, se1 = mean_se([0.25])
    assert m1 == 0.25 and math.isnan(se1)
    with pytest.raises(FlowfieldsError, match="values"):
        mean_se([])


def test_seed_names() -> None:
    assert seed_suffix(5, 0) == "" and seed_suffix(5, 2) == "-seed7"
    assert strip_seed("perm-8gaussians-voronoi-seed12") == "perm-8gaussians-voronoi"
    assert strip_seed("perm-8gaussians-voronoi") == "perm-8gaussians-voronoi"
    assert strip_seed("digits-argmax-seedx") == "digits-argmax-seedx"
    with pytest.raises(FlowfieldsError, match="k"):
        seed_suffix(0, -1)


def test_seed_summary_hand_rows() -> None:
    rows = [
        {"seed": 0, "pmf": "a", "voronoi_gap": 0.10, "argmax_gap": 0.20, "uniform_gap": 0.30},
        {"seed": 1, "pmf": "a", "voronoi_gap": 0.40, "argmax_gap": 0.20, "uniform_gap": 0.30},
        {"seed": 2, "pmf": "a", "voronoi_gap": 0.10, "argmax_gap": 0.25, "uniform_gap": 0.05},
        {"seed": 0, "pmf": "b", "voronoi_gap": 1.0, "argmax_gap": 2.0, "uniform_gap": 3.0},
        {"seed": 1, "pmf": "b", "voronoi_gap": 1.0, "argmax_gap": 2.0, "uniform_gap": 3.0},
        {"seed": 2, "pmf": "b", "voronoi_gap": 1.0, "argmax_gap": 1.0, "uniform_gap": 3.0},
    ]
    a, b = seed_summary(rows, "pmf", "gap", KINDS)
    assert a["pmf"] == "a" and a["seeds"] == 3
    assert abs(a["voronoi_gap"] - 0.2) < 1e-15 and abs(a["argmax_gap"] - 0.65 / 3) < 1e-15
    assert abs(a["voronoi_gap_se"] - math.sqrt(0.03 / 3)) < 1e-12
    # paired: V - A = -0.1, 0.2, -0.15
    assert abs(a["voronoi_minus_argmax"] - (-0.05 / 3)) < 1e-15
    assert abs(a["voronoi_minus_argmax_se"] - statistics.stdev([-0.1, 0.2, -0.15]) / 3**0.5) < 1e-12
    assert a["wins"] == 1  # seed 0 only (seed 2 loses to uniform)
    assert b["wins"] == 2  # a tie (seed 2: V = A) is no win
    # means: a: V 0.2 vs A 0.2167, U 0.2167 -> lowest; b: V 1.0 vs A 1.667 -> lowest
    assert lowest_on_mean(a, "gap", KINDS) and lowest_on_mean(b, "gap", KINDS)
    tie = dict(b, argmax_gap=1.0)
    assert not lowest_on_mean(tie, "gap", KINDS)
    text = seeds_text([a, b], "pmf", KINDS)
    assert "a: lowest in 1/3 seeds" in text and "b: lowest in 2/3 seeds" in text
    assert seeds_text(seed_summary(rows[:1], "pmf", "gap", KINDS), "pmf", KINDS) == ""
    assert fmt_mean(0.12345, math.nan) == "0.123" and fmt_mean(0.12345, 0.01) == "0.123 +- 0.010"


def test_seed_scope_restores_and_prefixes() -> None:
    @dataclasses.dataclass
    class Cfg:
        seed: int = 3

    exp = SimpleNamespace(cfg=Cfg(), metrics={"x": 1})
    with seed_scope(exp, 0) as sfx:
        assert sfx == "" and exp.cfg.seed == 3
        exp.metrics["y"] = 2
    with seed_scope(exp, 2) as sfx:
        assert sfx == "-seed5" and exp.cfg.seed == 5 and exp.metrics == {}
        exp.metrics["y"] = 7
    assert exp.metrics == {"x": 1, "y": 2, "seed5/y": 7} and exp.cfg.seed == 3
    with pytest.raises(RuntimeError), seed_scope(exp, 1):
        raise RuntimeError
    assert exp.cfg.seed == 3 and set(exp.metrics) == {"x", "y", "seed5/y"}


def _tiny_discrete2d(tmp_path, name: str, **kw):
    from flowfields.experiments.voronoi_discrete2d import Config, VoronoiDiscrete2d

    cfg = Config(
        pmfs=("perm-clusters",),
        n_classes=4,
        transforms=1,
        hidden=(8,),
        cond_hidden=8,
        steps=3,
        batch=16,
        iwae_k=4,
        **kw,
    )
    return VoronoiDiscrete2d.run(cfg, tmp_path / name, progress=False)


def test_discrete2d_seeds_are_the_single_seed_runs(tmp_path) -> None:
    two = _tiny_discrete2d(tmp_path, "two", seeds=2, seed=0)
    one = _tiny_discrete2d(tmp_path, "one", seeds=1, seed=1)
    m2, m1 = two.metrics, one.metrics
    for kind in KINDS:
        key = f"perm-clusters/{kind}_gap"
        assert m2[f"seed1/{key}"] == m1[key]  # bitwise: the same draws end to end
        vals = [m2[key], m2[f"seed1/{key}"]]
        assert abs(m2[f"mean/{key}"] - sum(vals) / 2) < 1e-15
        assert abs(m2[f"mean/{key}_se"] - abs(vals[0] - vals[1]) / 2) < 1e-12
    assert m2["seed1/perm-clusters/voronoi_total_mass"] == m1["perm-clusters/voronoi_total_mass"]
    assert [r["seed"] for r in two.tables["dequantization"]] == [0, 1]
    claim = {c.id: c for c in two.claims}["learned-boundaries-help"]
    s = two.tables["dequantization_mean"][0]
    assert claim.holds == (s["voronoi_gap"] < min(s["argmax_gap"], s["uniform_gap"]))
    assert "mean +- SE over seeds 0-1" in claim.measured and "per seed:" in claim.measured
    assert "by the mean" in claim.threshold
    single = {c.id: c for c in one.claims}["learned-boundaries-help"]
    assert "+-" not in single.measured and "per seed" not in single.measured
    from flowfields.experiments.voronoi_discrete2d import VoronoiDiscrete2d

    model = VoronoiDiscrete2d.load_model(tmp_path / "two", "perm-clusters-voronoi-seed1")
    assert model.dequantizer.n_classes == 4


def test_categorical_seed_two_is_the_single_seed_run(tmp_path) -> None:
    from flowfields.experiments.voronoi_categorical import Config, VoronoiCategorical

    small = dict(transforms=1, hidden=(8,), cond_hidden=8, steps=2, batch=16, iwae_k=2)
    two = VoronoiCategorical.run(Config(seeds=2, seed=4, **small), tmp_path / "two", progress=False)
    one = VoronoiCategorical.run(Config(seed=5, **small), tmp_path / "one", progress=False)
    for data in ("titanic", "digits"):
        for kind in KINDS:
            key = f"{data}/{kind}_bits_per_var"
            assert two.metrics[f"seed5/{key}"] == one.metrics[key]
    claim = two.claims[0]
    summary = two.tables["categorical_mean"]
    expected = all(
        s["voronoi_bits_per_var"] < min(s["argmax_bits_per_var"], s["uniform_bits_per_var"])
        for s in summary
    )
    assert claim.holds == expected and "seeds 4-5" in claim.measured


def test_bad_seeds_raise() -> None:
    from flowfields.experiments.voronoi_categorical import Config as CatConfig
    from flowfields.experiments.voronoi_categorical import VoronoiCategorical
    from flowfields.experiments.voronoi_discrete2d import Config, VoronoiDiscrete2d

    for exp, cfg in ((VoronoiDiscrete2d, Config.quick()), (VoronoiCategorical, CatConfig.quick())):
        for bad in (0, -1, 1.5):
            with pytest.raises(FlowfieldsError, match="seeds"):
                exp.run(dataclasses.replace(cfg, seeds=bad), "/nonexistent/never", progress=False)

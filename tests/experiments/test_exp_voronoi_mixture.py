"""voronoi-mixture: a tiny CLI run, its metrics and claims, and its models load back."""

from __future__ import annotations

import json
import math

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.errors import FlowfieldsError


def _tiny_sets(steps: int, mass_cells: int) -> list[str]:
    """The ``--set`` overrides of a seconds-long run on 8gaussians."""
    return [
        "toys=8gaussians",
        "cells=3",
        "context=2",
        "transforms=2",
        "hidden=8",
        f"steps={steps}",
        "batch=16",
        "n_train=500",
        "n_test=64",
        f"mass_cells={mass_cells}",
        "mass_polar=200,100",
        "mixture_ks=2,8",
        "timing_batch=8",
        "timing_reps=1",
    ]


def test_cli_tiny_run_and_load(tmp_path) -> None:
    out = tmp_path / "vmix"
    sets = _tiny_sets(steps=4, mass_cells=300)
    args = ["run", "voronoi-mixture", "--no-progress", "--out", str(out), "--set", *sets]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == [
        "mixture-gain",
        "exact-likelihood",
        "mixture-cost-flat-in-K",
    ]
    for key in ("nll_flow", "nll_mixture", "median_nll_mixture"):
        assert math.isfinite(metrics[f"8gaussians/{key}"])
    # the face diagnosis: a fraction, a share of the total NLL, and the NLL split by it
    assert 0 <= metrics["8gaussians/face_fraction"] <= 1
    assert 0 <= metrics["8gaussians/face_nll_share"] <= 1 + 1e-9
    assert metrics["8gaussians/max_nll_mixture"] >= metrics["8gaussians/nll_mixture"]
    assert math.isfinite(metrics["8gaussians/nll_mixture_off_faces"])
    # the trained layer is normalised on its box whatever the training did
    assert abs(metrics["8gaussians/layer_mass"] - 1.0) < 5e-3
    assert abs(metrics["8gaussians/layer_mass_polar"] - 1.0) < 5e-3
    assert {p.name for p in out.glob("*.png")} == {"mixture.png"}
    mix = flowfields.load(out, "8gaussians-mixture")
    test = torch.randn(5, 2)
    lp = mix.log_prob(test)
    assert lp.shape == (5,) and torch.isfinite(lp).all()
    assert flowfields.load(out, "8gaussians-flow")().log_prob(test).shape == (5,)


def test_bad_config_raises(tmp_path) -> None:
    from flowfields.experiments.voronoi_mixture import Config, VoronoiMixtureExperiment

    for bad in (
        {"toys": ("spiral",)},
        {"cells": 1},
        {"transforms": 1},
        {"base": "cauchy"},
        {"df": 0.0},
        {"df": float("nan")},
        {"learn_df": True},  # with the normal base
    ):
        cfg = Config.quick()
        for k, v in bad.items():
            setattr(cfg, k, v)
        with pytest.raises(FlowfieldsError, match=next(iter(bad))):
            VoronoiMixtureExperiment(cfg, tmp_path / "x").check_config()


def test_student_base_tiny_run_and_load(tmp_path) -> None:
    """base=student with a learned df: the run finishes, its layer is normalised, the loaded
    model is a Student-t mixture whose df moved from its start, and the claim names the base."""
    out = tmp_path / "vmix-t"
    sets = [*_tiny_sets(steps=6, mass_cells=100), "base=student", "df=2", "learn_df=true"]
    args = ["run", "voronoi-mixture", "--no-progress", "--out", str(out), "--set", *sets]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["8gaussians/nll_mixture"])
    assert abs(metrics["8gaussians/layer_mass_polar"] - 1.0) < 5e-3
    gain = next(c for c in metrics["claims"] if c["id"] == "mixture-gain")
    assert "Student-t base (df 2, learned)" in gain["note"]
    mix = flowfields.load(out, "8gaussians-mixture").mixture
    assert mix.base == "student" and float(mix.df.detach()) != 2.0

"""compression-mocap: a tiny CLI run's claims, figures and saved model."""

from __future__ import annotations

import json

import pytest

import flowfields
from flowfields.cli import main
from flowfields.compression import Codec, LatentDiscretization
from flowfields.data.sequences import MOCAP_JOINTS, random_mocap
from flowfields.errors import FlowfieldsError


def test_tiny_run(tmp_path) -> None:
    out = tmp_path / "cm"
    sets = ["steps=20", "betas=0.00001", "n_eval=2", "n_contents=1", "eval_frames=32",
            "hidden=8"]  # fmt: skip
    assert (
        main(["run", "compression-mocap", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == [
        "rate-is-real",
        "cost-follows-content",
        "points-follow-gait-cycles",
        "learned-where-beats-uniform",
        "cost-scales-with-points",
    ]
    assert metrics["rate/decode_exact"] is True
    assert metrics["rate/per_sequence_ok"] is True
    assert {p.name for p in out.glob("*.png")} == {
        "stored_points.png",
        "rate_distortion.png",
        "rate_vs_frames.png",
        "points_vs_cycles.png",
    }
    model = flowfields.load(out)
    assert isinstance(model, LatentDiscretization) and model.dim == len(MOCAP_JOINTS)
    x = random_mocap(2, seed=5).frames(40)
    codec = Codec(model)
    assert codec.decode(codec.encode(x), times=[0.05, 0.5]).shape == (2, len(MOCAP_JOINTS))


def test_bad_config_raises(tmp_path) -> None:
    from flowfields.experiments.compression_mocap import CompressionMocap, Config

    with pytest.raises(FlowfieldsError, match="cadence_high"):
        CompressionMocap(Config(cadence_low=2.0, cadence_high=1.0), tmp_path / "x").check_config()

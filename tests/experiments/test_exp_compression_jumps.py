"""compression-jumps: a tiny CLI run, its claims, and the compress / decompress commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

import flowfields
from flowfields.cli import main
from flowfields.compression import Codec, LatentDiscretization
from flowfields.data.sequences import random_jumps
from flowfields.experiments.compression_jumps import jump_batch

SETS = ["steps=30", "betas=0.0001", "n_eval=3", "n_contents=2", "eval_frames=32", "hidden=8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cj") / "run"
    assert (
        main(["run", "compression-jumps", "--no-progress", "--out", str(out), "--set", *SETS]) == 0
    )
    return out


def test_jump_batch() -> None:
    xs = jump_batch([1, 2, 3], 50, 2, 4)
    assert xs.shape == (3, 50, 2)
    for x in xs:  # piecewise constant: 1..4 change points -> 2..5 distinct rows
        assert 2 <= len(np.unique(x, axis=0)) <= 5


def test_tiny_run_claims_and_load(run_dir) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [c["id"] for c in metrics["claims"]] == [
        "rate-is-real",
        "cost-follows-content",
        "points-linear-in-change-points",
        "learned-where-beats-uniform",
        "cost-scales-with-points",
    ]
    assert metrics["rate/decode_exact"] is True
    assert metrics["rate/per_sequence_ok"] is True
    assert metrics["fps/every_ratio"] > 8  # every frame: 16x the points
    assert {p.name for p in run_dir.glob("*.png")} == {
        "stored_points.png",
        "rate_distortion.png",
        "rate_vs_frames.png",
    }
    model = flowfields.load(run_dir)
    assert isinstance(model, LatentDiscretization)


def test_cli_compress_decompress(run_dir, tmp_path, capsys) -> None:
    x = random_jumps(3, 3, seed=9).frames(64)
    src, ffz, back = tmp_path / "in.npy", tmp_path / "out.ffz", tmp_path / "back.npy"
    np.save(src, x)
    assert main(["compress", str(run_dir), str(src), str(ffz)]) == 0
    assert main(["decompress", str(run_dir), str(ffz), str(back)]) == 0
    codec = Codec(flowfields.load(run_dir))
    np.testing.assert_array_equal(np.load(back), codec.reconstruct(x))
    assert ffz.read_bytes() == codec.encode(x)
    assert main(["decompress", str(run_dir), str(ffz), str(back), "--fps", "128"]) == 0
    assert np.load(back).shape == (128, 3)
    capsys.readouterr()
    data = ffz.read_bytes()
    (tmp_path / "cut.ffz").write_bytes(data[:-3])
    assert main(["decompress", str(run_dir), str(tmp_path / "cut.ffz"), str(back)]) == 2
    assert "truncated" in capsys.readouterr().err
    bad = bytearray(data)
    bad[-1] ^= 1
    (tmp_path / "bad.ffz").write_bytes(bytes(bad))
    assert main(["decompress", str(run_dir), str(tmp_path / "bad.ffz"), str(back)]) == 2
    assert "checksum" in capsys.readouterr().err
    np.save(src, np.full((5, 3), np.nan))
    assert main(["compress", str(run_dir), str(src), str(ffz)]) == 2
    assert "frames" in capsys.readouterr().err
    assert main(["compress", str(tmp_path), str(src), str(ffz)]) == 2

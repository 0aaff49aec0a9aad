"""compression-video: H.264 helper, PSNR, and a tiny run's claims."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowfields.cli import main
from flowfields.data.sequences import moving_digit
from flowfields.experiments.compression_video import h264_bits, psnr


def test_psnr() -> None:
    x = np.zeros((2, 4, 4))
    assert psnr(x, x + 0.1) == pytest.approx(20.0)
    assert psnr(x, x) == float("inf")


def test_h264_round_trip_improves_with_quality() -> None:
    pytest.importorskip("av")
    x = moving_digit(2, seed=3, canvas=16, speed=20.0).frames(16)
    bits_lo, dec_lo = h264_bits(x, 45)
    bits_hi, dec_hi = h264_bits(x, 5)
    assert dec_lo.shape == dec_hi.shape == x.shape
    assert bits_hi > bits_lo
    assert psnr(dec_hi, x) > psnr(dec_lo, x) + 5


@pytest.mark.slow
def test_tiny_run(tmp_path) -> None:
    out = tmp_path / "cv"
    sets = ["canvas=12", "hidden=16", "steps=20", "n_eval=2", "n_contents=1", "eval_frames=16",
            "betas=0.00001", "crfs=40,10"]  # fmt: skip
    assert (
        main(["run", "compression-video", "--no-progress", "--out", str(out), "--set", *sets]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    ids = [c["id"] for c in metrics["claims"]]
    assert ids[:4] == [
        "rate-is-real",
        "cost-follows-content",
        "learned-where-beats-uniform",
        "cost-scales-with-points",
    ]
    assert "decode-other-frame-rate" in ids
    assert metrics["rate/decode_exact"] is True
    assert {p.name for p in out.glob("*.png")} == {"decoded_frames.png", "rate_vs_frames.png"}

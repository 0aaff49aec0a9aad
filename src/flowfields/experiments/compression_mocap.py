"""Learned discretization on procedural motion capture: joint angles of a walking figure.

Chen, Le, Muckley, Nickel, Ullrich, "Latent Discretization for Continuous-time Sequence
Compression" (arXiv:2212.13659), on motion generated here
(:func:`flowfields.data.sequences.random_mocap`): ten joint angles (hips, knees, ankles,
shoulders, elbows) as gait-like sums of two harmonics of one gait phase, whose cadence is
piecewise constant with 1..``max_changes`` speed changes and pauses (cadence zero: the pose
holds). The content renders at any frame rate. Same model, codec, baselines and evaluation
as ``compression-jumps``
(:class:`~flowfields.experiments.compression_jumps.CompressionJumps`), plus:

- **points follow the gait cycles** (this data's complexity): at fixed ``T``, one segment of
  constant cadence ``c`` (``c`` cycles in the sequence, ``c = 0`` a held pose); the stored
  points should grow about linearly with ``c``, the intensity being homogeneous in the
  latent velocity (``w integral |du/dt| dt`` points for a smooth stretch).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from flowfields.errors import check
from flowfields.experiments.compression_jumps import CompressionJumps
from flowfields.report.result import Claim

__all__ = ["CADENCES", "EXPERIMENT", "NAME", "CompressionMocap", "Config"]

NAME = "compression-mocap"
#: Cadences (gait cycles in the unit interval) of the points-vs-cycles measurement.
CADENCES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


@dataclass
class Config:
    """Settings of ``compression-mocap`` (see ``compression-jumps`` for the shared fields).

    Attributes:
        cadence_low, cadence_high: a walking segment's cadence, cycles per unit time.
        pause_prob: probability that a segment is a pause.
    """

    latent_dim: int = 4
    hidden: int = 32
    depth: int = 1
    radius: int = 31
    scale: float = 8.0
    max_changes: int = 4
    cadence_low: float = 1.0
    cadence_high: float = 3.0
    pause_prob: float = 0.25
    train_frames: int = 64
    batch: int = 32
    steps: int = 2000
    lr: float = 1e-2
    betas: tuple[float, ...] = (3e-6, 1e-5, 3e-5, 1e-4)
    n_eval: int = 48
    n_contents: int = 16
    eval_frames: int = 128
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"

    @property
    def dim(self) -> int:
        """Joint angles per frame (:data:`flowfields.data.sequences.MOCAP_JOINTS`)."""
        from flowfields.data.sequences import MOCAP_JOINTS

        return len(MOCAP_JOINTS)

    @classmethod
    def quick(cls) -> Config:
        """Two betas x 300 steps, 20 evaluation sequences: about 30 s of CPU (measured)."""
        return cls(steps=300, betas=(1e-5, 3e-5), n_eval=20, n_contents=3)

    @classmethod
    def full(cls) -> Config:
        """Four betas x 2000 steps, 48 evaluation sequences (about 3 min of CPU, scaled from
        the quick preset's cost per step)."""
        return cls()


class CompressionMocap(CompressionJumps, config=Config):
    """The latent-discretization codec on procedural motion capture (module docstring)."""

    NAME = NAME
    VARIANTS = ("beta0",)
    PLOT_CHANNELS = 3  # the left hip, knee and ankle

    def check_config(self) -> None:
        cfg = self.cfg
        check(
            0 <= cfg.cadence_low <= cfg.cadence_high, "cadence_high", cfg.cadence_high,
            f"a cadence >= cadence_low = {cfg.cadence_low} >= 0",
        )  # fmt: skip
        check(0 <= cfg.pause_prob <= 1, "pause_prob", cfg.pause_prob, "a probability")
        super().check_config()

    def content(self, seed: int, n_changes: int, cadence: float | None = None) -> Any:
        """A walking figure with ``n_changes`` speed changes (``cadence``: one fixed cadence,
        no pause)."""
        from flowfields.data.sequences import random_mocap

        cfg = self.cfg
        if cadence is not None:
            return random_mocap(n_changes, seed=seed, cadence=(cadence, cadence), pause_prob=0.0)
        return random_mocap(
            n_changes, seed=seed, cadence=(cfg.cadence_low, cfg.cadence_high),
            pause_prob=cfg.pause_prob,
        )  # fmt: skip

    def _complexity(self, codec: Any) -> None:
        """Stored points against gait cycles at fixed T (replaces the change-point count)."""
        cfg, rows = self.cfg, []
        for k, c in enumerate(CADENCES):
            pts = []
            for s in self._eval_seeds(cfg.n_contents, 700_000 + 1000 * k):
                codec.encode(self.content(s, 0, cadence=c).frames(cfg.eval_frames))
                pts.append(codec.last_stats["points"])
            rows.append({"cycles": c, "points": statistics.fmean(pts)})
        self.tables["cycles"] = rows
        x = np.array([r["cycles"] for r in rows])
        y = np.array([r["points"] for r in rows])
        slope, icpt = np.polyfit(x, y, 1)
        resid = y - (slope * x + icpt)
        self.metrics["cycles/slope"] = float(slope)
        self.metrics["cycles/r2"] = float(1 - resid.var() / y.var()) if y.var() > 0 else 0.0

    def claims(self) -> list[Claim]:
        m, rows = self.metrics, self.tables["cycles"]
        claims = super().claims()
        claims.insert(
            2,
            Claim(
                id="points-follow-gait-cycles",
                statement="At fixed T the number of stored points grows about linearly with "
                "the number of gait cycles in the sequence (a held pose costs the fewest).",
                measured=f"slope {m['cycles/slope']:.2f} points per cycle, R^2 "
                f"{m['cycles/r2']:.3f} ("
                + ", ".join(f"{r['cycles']:g}: {r['points']:.1f}" for r in rows)
                + ")",
                threshold="R^2 >= 0.9 and slope > 0",
                holds=bool(m["cycles/r2"] >= 0.9 and m["cycles/slope"] > 0),
                note=f"{self.cfg.n_contents} figures per cadence, one segment each, T = "
                f"{self.cfg.eval_frames}.",
            ),
        )
        return claims

    def figures(self, models: dict[str, nn.Module]) -> None:
        super().figures(models)
        plt, rows = self.plt, self.tables["cycles"]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([r["cycles"] for r in rows], [r["points"] for r in rows], "o-")
        ax.set_xlabel("gait cycles in the sequence")
        ax.set_ylabel("stored points")
        ax.set_title(f"stored points vs content (T = {self.cfg.eval_frames})")
        self.save_figure(fig, "points_vs_cycles.png")


EXPERIMENT = CompressionMocap

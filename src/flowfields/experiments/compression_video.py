"""Learned discretization on a moving-digit video: rate vs frame rate, in-between frames, H.264.

Chen, Le, Muckley, Nickel, Ullrich, "Latent Discretization for Continuous-time Sequence
Compression" (arXiv:2212.13659), on videos generated here
(:func:`flowfields.data.sequences.moving_digit`): an 8x8 scikit-learn digit on a
``canvas x canvas`` frame moving with piecewise-constant velocities, pauses and bounces
(1..``max_changes`` velocity changes). Same model, codec and evaluation as
``compression-jumps`` (:class:`~flowfields.experiments.compression_jumps.CompressionJumps`;
frames flattened for the MLP encoder / decoder), plus:

- decoding at another frame rate (claim 4): content rendered at ``2T``, coded at ``T``; the
  ``T`` never-seen in-between frames decoded by the OU bridge vs linear interpolation of the
  decoded frames (PSNR, frames in [0, 1]);
- an external anchor: H.264 (libx264 through PyAV, which ships FFmpeg; a dev dependency) on
  the same frames at the constant rate factor whose PSNR first reaches ours, bits per frame.
  Skipped (reported as such) without PyAV.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from flowfields.compression.figures import plot_rate_vs_frames
from flowfields.errors import check
from flowfields.experiments.compression_jumps import CompressionJumps
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "CompressionVideo", "Config", "h264_bits", "h264_code", "psnr"]

NAME = "compression-video"


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """Peak signal-to-noise ratio of frames in [0, 1], dB (over all values)."""
    mse = float(((np.asarray(x) - np.asarray(y)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _sei_bytes(packet: bytes) -> int:
    """Bytes of the SEI NAL units (type 6; x264 writes its options string there, several
    hundred bytes) of an Annex B packet, start codes included."""
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", packet)]
    total = 0
    for k, at in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(packet)
        if at + 3 < len(packet) and packet[at + 3] & 0x1F == 6:
            total += end - at
    return total


def h264_code(frames: np.ndarray, crf: int) -> tuple[int, int, np.ndarray]:
    """``frames`` (T, H, W) in [0, 1] coded by libx264 (8-bit luma, yuv420p, preset medium,
    constant rate factor ``crf``): bits of every packet, bits of its SEI units (optional
    metadata: x264's options string; not needed to decode) and the decoded frames."""
    import av

    T, H, W = frames.shape
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.options = {"crf": str(crf), "preset": "medium"}
    packets = []
    img = np.clip(np.round(255 * frames), 0, 255).astype(np.uint8)
    for i in range(T):
        f = av.VideoFrame.from_ndarray(img[i], format="gray").reformat(format="yuv420p")
        f.pts = i
        packets += enc.encode(f)
    packets += enc.encode(None)
    dec = av.CodecContext.create("h264", "r")
    out = []
    for p in [*packets, None]:
        for fr in dec.decode(p):
            out.append(fr.to_ndarray(format="gray").astype(np.float64) / 255.0)
    sei = sum(_sei_bytes(bytes(p)) for p in packets)
    return 8 * sum(p.size for p in packets), 8 * sei, np.stack(out)


def h264_bits(frames: np.ndarray, crf: int) -> tuple[int, np.ndarray]:
    """Bits of ``frames`` coded by libx264 (:func:`h264_code`, every packet counted) and the
    decoded frames."""
    bits, _, dec = h264_code(frames, crf)
    return bits, dec


@dataclass
class Config:
    """Settings of ``compression-video`` (see ``compression-jumps`` for the shared fields).

    Attributes:
        canvas: frame side (pixels); speed: the digit's speed, pixels per unit time.
        crfs: H.264 constant rate factors tried for the anchor.
    """

    canvas: int = 32
    speed: float = 40.0
    latent_dim: int = 8
    hidden: int = 128
    depth: int = 1
    radius: int = 31
    scale: float = 4.0
    max_changes: int = 4
    train_frames: int = 32
    batch: int = 16
    steps: int = 3000
    lr: float = 1e-2
    betas: tuple[float, ...] = (3e-6, 1e-5, 3e-5)
    n_eval: int = 16
    n_contents: int = 8
    eval_frames: int = 64
    crfs: tuple[int, ...] = (51, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0)
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"

    @property
    def dim(self) -> int:
        """Values per frame, ``canvas^2``."""
        return self.canvas * self.canvas

    @classmethod
    def quick(cls) -> Config:
        """One beta x 500 steps on 16x16 frames: about 21 s of CPU (measured)."""
        return cls(canvas=16, speed=20.0, hidden=64, steps=500, lr=1e-2, betas=(1e-5,),
                   n_eval=6, n_contents=3, eval_frames=32)  # fmt: skip

    @classmethod
    def full(cls) -> Config:
        """32x32 frames, four betas x 2000 steps (the RD curve), 20 evaluation sequences:
        about 8 min of CPU (training measured at ~46 ms per step on one thread)."""
        return cls(betas=(1e-6, 3e-6, 1e-5, 3e-5), steps=2000, n_eval=20)


class CompressionVideo(CompressionJumps, config=Config):
    """The latent-discretization codec on moving digits (see the module docstring)."""

    NAME = NAME
    VARIANTS = ("beta0",)

    def check_config(self) -> None:
        check(self.cfg.canvas >= 9, "canvas", self.cfg.canvas, "an integer >= 9")
        super().check_config()

    def content(self, seed: int, n_changes: int) -> Any:
        from flowfields.data.sequences import moving_digit

        return moving_digit(n_changes, seed=seed, canvas=self.cfg.canvas, speed=self.cfg.speed)

    def _complexity(self, codec: Any) -> None:
        """Not measured on video: the latent path curves between velocity changes too."""

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        super().evaluate(models)
        self._other_rate(self.codec)
        self._h264(self.codec)

    def _other_rate(self, codec: Any) -> None:
        """Claim 4 and why it ties: in-between frames by the bridge vs by interpolation, the
        codec's own error at the coded frames, interpolation of the *true* coded frames (how
        hard the in-between frames are), and the largest bridge - interpolation gap."""
        cfg, T = self.cfg, self.cfg.eval_frames
        rows: dict[str, list[float]] = {}
        for s in self._eval_seeds(cfg.n_eval, 300_000):
            dense = self.content(s, 3).frames(2 * T)  # frame 2i is coded frame i
            coded, between = dense[::2], dense[1::2]
            data = codec.encode(coded, fps=T)
            bridge = codec.decode(data, times=(2 * np.arange(T) + 1) / (2 * T))
            dec = codec.decode(data)
            interp = 0.5 * (dec + np.concatenate([dec[1:], dec[-1:]]))
            oracle = 0.5 * (coded + np.concatenate([coded[1:], coded[-1:]]))
            for key, value in (
                ("bridge_psnr", psnr(bridge, between)),
                ("linear_psnr", psnr(interp, between)),
                ("coded_psnr", psnr(dec, coded)),
                ("oracle_linear_psnr", psnr(oracle, between)),
                ("max_abs_diff", float(np.abs(bridge - interp).max())),
            ):
                rows.setdefault(key, []).append(value)
        for key, values in rows.items():
            self.metrics[f"other_rate/{key}"] = statistics.fmean(values)

    def _h264(self, codec: Any) -> None:
        m, cfg = self.metrics, self.cfg
        try:
            import av  # noqa: F401
        except ImportError:
            m["h264/available"] = False
            return
        m["h264/available"] = True
        xs = self.batch(self._eval_seeds(cfg.n_eval, 0), cfg.eval_frames)
        ours, ours_psnr, theirs, no_sei, their_psnr = [], [], [], [], []
        for x in xs:
            data = codec.encode(x)
            ours.append(codec.last_stats["payload_bits"] / len(x))
            target = psnr(codec.decode(data), x)
            ours_psnr.append(target)
            for crf in cfg.crfs:  # decreasing CRF: increasing quality
                bits, sei, dec = h264_code(x, crf)
                if psnr(dec, x) >= target or crf == cfg.crfs[-1]:
                    break
            theirs.append(bits / len(x))
            no_sei.append((bits - sei) / len(x))
            their_psnr.append(psnr(dec, x))
        m["h264/ours_bits_per_frame"] = statistics.fmean(ours)
        m["h264/ours_psnr"] = statistics.fmean(ours_psnr)
        m["h264/bits_per_frame"] = statistics.fmean(theirs)
        m["h264/bits_per_frame_no_sei"] = statistics.fmean(no_sei)
        m["h264/psnr"] = statistics.fmean(their_psnr)
        self._rd_curve(xs)

    def _rd_curve(self, xs: np.ndarray) -> None:
        """Rate-distortion points, bits per frame vs PSNR (of the mean MSE over the
        evaluation sequences): ours, the uniform grid and every frame at each beta (the
        ``rate_distortion`` table of ``compression-jumps``), H.264 at each CRF on the same
        sequences (all packets, and without the SEI units)."""
        T, rows = xs.shape[1], []
        for r in self.tables["rate_distortion"]:
            for name in ("learned", "uniform", "every"):
                rows.append({
                    "method": name, "setting": f"beta {r['beta']:g}",
                    "bits_per_frame": r[f"{name}_bits"] / T,
                    "psnr": float(10 * np.log10(1.0 / r[f"{name}_mse"])),
                })  # fmt: skip
        for crf in self.cfg.crfs:
            bits, sei, mse = [], [], []
            for x in xs:
                b, e, dec = h264_code(x, crf)
                bits.append(b / T)
                sei.append(e / T)
                mse.append(float(((dec - x) ** 2).mean()))
            psnr_db = float(10 * np.log10(1.0 / statistics.fmean(mse)))
            for name, value in (
                ("h264", statistics.fmean(bits)),
                ("h264 without SEI", statistics.fmean(bits) - statistics.fmean(sei)),
            ):
                rows.append({"method": name, "setting": f"crf {crf}",
                             "bits_per_frame": value, "psnr": psnr_db})  # fmt: skip
        self.tables["rd_video"] = rows

    def claims(self) -> list[Claim]:
        m = self.metrics
        claims = super().claims()
        claims.append(
            Claim(
                id="decode-other-frame-rate",
                statement="Content rendered at 2T and coded at T: the never-seen in-between "
                "frames decoded by the OU bridge beat linear interpolation of the decoded "
                "frames (PSNR, by more than 0.1 dB: a tie is not a win).",
                measured=f"bridge {m['other_rate/bridge_psnr']:.2f} dB vs interpolation "
                f"{m['other_rate/linear_psnr']:.2f} dB",
                threshold="bridge PSNR > interpolation PSNR + 0.1 dB",
                holds=bool(m["other_rate/bridge_psnr"] > m["other_rate/linear_psnr"] + 0.1),
                note="Why they tie (not a fallback: the bridge frames differ from the "
                f"interpolated ones by up to {m['other_rate/max_abs_diff']:.3f} per pixel): "
                "interpolating the true coded frames already gives "
                f"{m['other_rate/oracle_linear_psnr']:.1f} dB on the in-between frames (the "
                "digit moves under a pixel per frame and is rendered bilinearly, so a frame is "
                "nearly the mean of its neighbours), while the codec's own error at the coded "
                f"frames is {m['other_rate/coded_psnr']:.2f} dB. Both methods inherit that "
                "error; the bridge can only win where the decoder renders positions between "
                "frames better than a blend, which it cannot at this distortion.",
            )
        )
        if m.get("h264/available"):
            claims.append(
                Claim(
                    id="h264-anchor",
                    statement="At matched PSNR our stream costs fewer bits per frame than "
                    "H.264 (libx264) on the same frames.",
                    measured=f"ours {m['h264/ours_bits_per_frame']:.1f} bits/frame at "
                    f"{m['h264/ours_psnr']:.2f} dB; H.264 {m['h264/bits_per_frame']:.1f} "
                    f"bits/frame ({m['h264/bits_per_frame_no_sei']:.1f} without SEI) at "
                    f"{m['h264/psnr']:.2f} dB",
                    threshold="ours < H.264 bits per frame without SEI at PSNR >= ours",
                    holds=bool(m["h264/ours_bits_per_frame"] < m["h264/bits_per_frame_no_sei"]),
                    note="H.264 bits: every packet, and without its SEI units "
                    f"({m['h264/bits_per_frame_no_sei']:.1f} bits/frame; x264's options "
                    "string, several hundred bytes, not needed to decode); its SPS/PPS "
                    "headers are kept. Ours are the payload (the fixed header apart). The "
                    "matched CRF is the first of the CRFs tried, high to low, whose PSNR "
                    "reaches ours; where even the highest CRF is above ours, H.264 cannot "
                    "go as low in quality. The RD curve over all CRFs is the table rd_video.",
                )
            )
        return claims

    def figures(self, models: dict[str, nn.Module]) -> None:
        plt, codec, cfg = self.plt, self.codec, self.cfg
        x = self.content(self._eval_seeds(1, 900_000)[0], 3).frames(cfg.eval_frames)
        idx = codec.plan(x)[0]
        dec = codec.decode(codec.encode(x))
        show = np.linspace(0, len(x) - 1, 8).round().astype(int)
        fig, axes = plt.subplots(2, 8, figsize=(10, 3))
        for col, i in enumerate(show):
            for row, img in enumerate((x[i], dec[i])):
                axes[row, col].imshow(img, cmap="gray", vmin=0, vmax=1)
                axes[row, col].axis("off")
            axes[0, col].set_title(f"t={i}{'*' if i in idx else ''}", fontsize=7)
        fig.suptitle(f"top: frames, bottom: decoded ({len(idx)} of {len(x)} stored, * = stored)")
        self.save_figure(fig, "decoded_frames.png")
        fr = self.tables["frame_rate"]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        plot_rate_vs_frames(ax, fr)
        self.save_figure(fig, "rate_vs_frames.png")
        rd = self.tables.get("rd_video", [])
        if rd:
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            styles = (("learned", "o-"), ("uniform", "s--"), ("every", "^:"),
                      ("h264", "x-"), ("h264 without SEI", "x--"))  # fmt: skip
            for name, style in styles:
                pts = sorted((r["bits_per_frame"], r["psnr"]) for r in rd if r["method"] == name)
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, label=name, ms=4)
            ax.set_xscale("log")
            ax.set_xlabel("bits per frame")
            ax.set_ylabel("PSNR (dB)")
            ax.legend(fontsize=7)
            ax.set_title(f"rate-distortion, {cfg.canvas}x{cfg.canvas} digits, T={cfg.eval_frames}")
            self.save_figure(fig, "rate_distortion.png")


EXPERIMENT = CompressionVideo

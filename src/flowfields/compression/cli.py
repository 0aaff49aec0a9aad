"""``flowfields compress`` / ``flowfields decompress``: the codec from the command line.

Examples::

    flowfields run compression-jumps --quick --out runs/cj
    flowfields compress runs/cj IN.npy OUT.ffz               # IN.npy: (T, *frame_shape)
    flowfields decompress runs/cj OUT.ffz BACK.npy           # at the encoded frame times
    flowfields decompress runs/cj OUT.ffz BACK4x.npy --fps 256   # at another frame rate

A corrupted or truncated stream, or one written with another model, is refused with a
message (exit status 2), never decoded wrongly.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from flowfields.errors import FlowfieldsError, check

__all__ = ["add_parsers", "compress_main", "decompress_main", "load_codec"]


def add_parsers(sub: Any) -> None:
    """Add the ``compress`` and ``decompress`` subcommands to the CLI's subparsers."""
    from flowfields.compression.codec import SCHEDULES

    c = sub.add_parser("compress", help="compress a sequence (.npy) with a trained codec")
    c.add_argument("model_run", metavar="MODEL_RUN", help="run directory of a compression run")
    c.add_argument("input", metavar="IN.npy", help="frames, shape (T, *frame_shape)")
    c.add_argument("output", metavar="OUT.ffz", help="the bitstream to write")
    c.add_argument("--variant", help="which model of the run (default: its first)")
    c.add_argument("--fps", type=float, help="frame rate of IN (default: T, the unit interval)")
    c.add_argument("--schedule", choices=SCHEDULES, default="learned", help="which frames to store")
    c.add_argument("--points", type=int, help="stored points of --schedule uniform")
    d = sub.add_parser("decompress", help="decode a bitstream (.ffz) to frames (.npy)")
    d.add_argument("model_run", metavar="MODEL_RUN", help="run directory of a compression run")
    d.add_argument("input", metavar="IN.ffz", help="a bitstream written by `flowfields compress`")
    d.add_argument("output", metavar="OUT.npy", help="the frames to write")
    d.add_argument("--variant", help="which model of the run (default: its first)")
    d.add_argument("--fps", type=float, help="decode at this frame rate over the same time span")


def load_codec(run_dir: str, variant: str | None) -> Any:
    """A :class:`~flowfields.compression.Codec` on the model of a compression run."""
    import flowfields
    from flowfields.compression import Codec, LatentDiscretization

    check(Path(run_dir).is_dir(), "MODEL_RUN", run_dir, "a run directory of a compression run")
    model = flowfields.load(run_dir, variant)
    check(
        isinstance(model, LatentDiscretization),
        "MODEL_RUN",
        run_dir,
        "the run directory of a compression experiment (e.g. compression-jumps)",
    )
    return Codec(model)


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def compress_main(args: argparse.Namespace) -> int:
    """``flowfields compress``: read IN.npy, write OUT.ffz, print what it cost."""
    codec = load_codec(args.model_run, args.variant)
    try:
        frames = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise FlowfieldsError(f"IN.npy: got {args.input!r} ({err}), expected a .npy array") from err
    kw: dict[str, Any] = {"fps": args.fps, "schedule": args.schedule, "n_points": args.points}
    data = codec.encode(frames, **kw)
    estimate = codec.estimate_bits(frames, **kw)
    _write(args.output, data)
    s = codec.last_stats
    print(
        f"{args.output}: {len(data)} bytes ({s['payload_bits']} payload bits, estimate "
        f"{estimate:.1f}; header {len(data) - s['payload_bits'] // 8} bytes); "
        f"{s['points']} of {len(frames)} frames stored"
    )
    return 0


def decompress_main(args: argparse.Namespace) -> int:
    """``flowfields decompress``: read IN.ffz, write the frames to OUT.npy."""
    codec = load_codec(args.model_run, args.variant)
    try:
        data = Path(args.input).read_bytes()
    except OSError as err:
        raise FlowfieldsError(f"IN.ffz: got {args.input!r} ({err}), expected a file") from err
    parsed = codec.parse(data)
    times = None
    if args.fps is not None:
        check(np.isfinite(args.fps) and args.fps > 0, "--fps", args.fps, "a frame rate > 0")
        n = max(1, round(len(parsed.times) * args.fps / parsed.fps))
        times = parsed.t0 + np.arange(n) / args.fps
    frames = codec.render(parsed, times)
    tmp = f"{args.output}.tmp{os.getpid()}.npy"
    np.save(tmp, frames)
    os.replace(tmp, args.output)
    print(f"{args.output}: {frames.shape[0]} frames of shape {frames.shape[1:]}")
    return 0

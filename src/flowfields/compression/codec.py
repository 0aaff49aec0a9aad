"""A real codec: :class:`Codec` writes bitstreams that decode (``constriction`` range coding).

Chen et al., "Latent Discretization for Continuous-time Sequence Compression"
(arXiv:2212.13659). ``Codec(model).encode(frames, fps=)`` stores the frames the model's
discretization picks (or every frame, or a uniform grid: the baselines), codes each stored
point's gap (frames since the previous one, :func:`~flowfields.compression.entropy.gap_table`)
and its ``d`` integer latents under the OU transition from the previous stored point
(:func:`~flowfields.compression.entropy.gaussian_table`; the stationary law for the first;
plus the innovation variance, :meth:`LatentDiscretization.latent_law`),
with a FIFO range coder. ``decode(data, times=None)`` rebuilds the stored points and renders
frames at the frame times or at any other times by the OU bridge.

Encoder and decoder build each table with the same float64 CPU code from the same already
decoded values (one point at a time, the same call on both sides), so the tables agree bit for
bit; the model's weights are copied to float64 on the CPU at construction.

Stream layout (little endian)::

    magic b"FFZ2" | model fingerprint (8 bytes) | T uint32 | ndim uint8 | frame shape uint32 *
    ndim | t0 float64 | fps float64 | n_bytes uint32 | crc32(payload) uint32 | payload
    (n_bytes bytes: the coder's 32-bit words, big endian, trailing zero bytes cut)

**Termination.** The range coder seals its stream with whole 32-bit words: on short streams
(~130 bits) that costs ~16 bits above the information content (measured: +16.4 bits on
average over random tables), 12% of the stream. Any number inside the coder's final interval
decodes the same symbols, and the decoder pads the payload with zero bytes; so the encoder
keeps the shortest byte prefix of a number in that interval. The interval is read off the
coder (:func:`_final_interval`: its emitted words and its 64-bit ``lower`` / ``range``) and
the number with the most trailing zero bytes in it computed directly (:func:`_shortest_in`),
then checked by one decode; the earlier search (:func:`_shortest_tail`: round the sealed
words down / up to a multiple of ``256^j``, ``j`` by bisection, 2-8 decodes) is the fallback
and gives the same bytes (tested on 400 random streams). Measured: +2.6 bits on average above
the information content (at most ~8: a byte plus the last interval's slack).
``constriction``'s ANS coder is no help here: its initial state costs +18 bits (measured,
``num_valid_bits``) before any word rounding.

A stream from another model (fingerprint), a wrong length, a bad checksum or bad header fields
raise :class:`~flowfields.errors.FlowfieldsError`; decoding loops at most ``T`` points, so a
bad stream never hangs.
"""

from __future__ import annotations

import copy
import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowfields.compression.entropy import FLOOR
from flowfields.compression.model import LatentDiscretization
from flowfields.errors import FlowfieldsError, check
from flowfields.integrate.ou import ou_bridge, ou_transition

__all__ = ["MAGIC", "SCHEDULES", "Codec", "Decoded"]

MAGIC = b"FFZ2"
#: Which frames to store: the model's learned discretization, every frame, a uniform grid.
SCHEDULES = ("learned", "every", "uniform")
_HEAD = struct.Struct("<4s8sIB")
_TAIL = struct.Struct("<ddII")


@dataclass
class Decoded:
    """A parsed stream: ``indices`` (K,) stored frames, ``symbols`` (K, d), frame ``times``
    (T,), ``frame_shape``, ``t0``, ``fps``; ``stats`` counts coder calls and points."""

    indices: np.ndarray
    symbols: np.ndarray
    times: np.ndarray
    frame_shape: tuple[int, ...]
    t0: float
    fps: float
    stats: dict[str, int] = field(default_factory=dict)


def _words(payload: bytes) -> np.ndarray:
    """Payload bytes -> the coder's uint32 words (big endian), zero-padded to whole words
    plus two zero words (the coder's 64-bit state may read past the last one)."""
    padded = payload + b"\x00" * (-len(payload) % 4 + 8)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def _decodes(payload: bytes, pairs: list[tuple[np.ndarray, np.ndarray]], constriction: Any) -> bool:
    """Whether ``payload`` (zero-padded) decodes to the symbols of ``pairs``."""
    cat = constriction.stream.model.Categorical(perfect=False)
    try:
        coder = constriction.stream.queue.RangeDecoder(_words(payload))
        got = [coder.decode(cat, table) for _, table in pairs]
    except (ValueError, RuntimeError, OverflowError, AssertionError):
        return False
    return bool(np.array_equal(np.concatenate(got), np.concatenate([s for s, _ in pairs])))


def _shortest_tail(
    payload: bytes, pairs: list[tuple[np.ndarray, np.ndarray]], constriction: Any
) -> bytes:
    """The shortest byte string that, zero-padded, decodes like ``payload`` (see the module
    docstring, *Termination*): a number of the coder's final interval with the most trailing
    zero bytes, those bytes cut."""
    N, P = len(payload), int.from_bytes(payload, "big")

    def cut(j: int) -> bytes | None:  # keep N - j bytes, if some multiple of 256^j decodes
        q = 256**j
        for v in (P // q * q, P // q * q + q):
            if v < 256**N:
                short = v.to_bytes(N, "big")[: N - j]
                if _decodes(short, pairs, constriction):
                    return short
        return None

    # the largest valid j by bisection (valid j => valid j - 1); the whole-word seal has at
    # most ~33 bits of slack, so j <= 8
    best, lo, hi = payload, 0, min(N, 8)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        short = cut(mid)
        if short is None:
            hi = mid - 1
        else:
            best, lo = short, mid
    return best


def _final_interval(coder: Any) -> tuple[int, int, int]:
    """The coder's final interval ``[lo, hi)`` as integers over ``n`` bytes (the words it has
    emitted or held back, then its 64-bit ``lower``): every stream whose first ``n`` bytes
    (zero-padded) read as a number in it decodes the same symbols, the decoder repeating the
    encoder's interval splits. ``pos()`` gives ``(words, (lower, range))``; the sealed words
    give the emitted ones, with a carry already added when ``lower`` plus the seal's offset
    wrapped (constriction's ``seal_words``), taken back here."""
    position, (lower, width) = coder.pos()
    sealed = coder.get_compressed()
    prefix = int.from_bytes(sealed[:position].astype(">u4").tobytes(), "big")
    if lower + 2**32 - 1 >= 2**64:  # the seal's point wrapped: it carried into the prefix
        prefix -= 1
    lo = (prefix << 64) + lower
    return lo, lo + width, 4 * (position + 2)


def _shortest_in(lo: int, hi: int, n: int) -> bytes:
    """The shortest byte string whose zero-padded ``n``-byte number lies in ``[lo, hi)``: the
    multiple of ``256^j`` in it with the largest ``j`` (bisection: a multiple of ``256^j`` is
    one of ``256^(j-1)``), its ``j`` trailing zero bytes cut."""

    def up(j: int) -> int:  # the smallest multiple of 256^j >= lo
        return -(-lo >> (8 * j)) << (8 * j)

    a, b = 0, n  # up(a) < hi (a = 0: lo itself)
    while a < b:
        mid = (a + b + 1) // 2
        a, b = (mid, b) if up(mid) < hi else (a, mid - 1)
    return up(a).to_bytes(n, "big")[: n - a]


def _range_code(
    pairs: list[tuple[np.ndarray, np.ndarray]], constriction: Any, *, search: bool = False
) -> bytes:
    """Range-code ``(symbols, tables)`` in order -> the shortest payload that decodes them.

    The payload is computed from the coder's final interval (:func:`_final_interval`,
    :func:`_shortest_in`) and checked by one decode; ``search=True`` (or a failed check, never
    seen) finds it by the bisection over cut lengths of :func:`_shortest_tail` instead (2-8
    decodes)."""
    cat = constriction.stream.model.Categorical(perfect=False)
    coder = constriction.stream.queue.RangeEncoder()
    for symbols, table in pairs:
        coder.encode(symbols, cat, table)
    words = bytes(coder.get_compressed().astype(">u4").tobytes())
    if not search and words:
        try:
            short = _shortest_in(*_final_interval(coder))
        except (ValueError, OverflowError):  # pragma: no cover  (a state we did not model)
            short = None
        if short is not None and len(short) <= len(words) and _decodes(short, pairs, constriction):
            return short
    return _shortest_tail(words, pairs, constriction)


def _times(T: int, t0: float, fps: float) -> Tensor:
    return t0 + torch.arange(T, dtype=torch.float64) / fps


class _Tables:
    """The coder's tables for one stream, in numpy float64: the floored binned Gaussian of
    :func:`~flowfields.compression.entropy.gaussian_table` under
    :meth:`LatentDiscretization.latent_law` and the gap law of
    :func:`~flowfields.compression.entropy.gap_table` (equal to them to ~1e-15; tested), with
    no per-call torch overhead (measured ~50x faster). Encoder and decoder call the same
    methods with the same arguments, so their tables agree bit for bit.

    Args:
        model: float64 model; T: frames of the stream; dt: its frame spacing; params: the
            model's :meth:`params` if already computed (the codec computes them once).
    """

    @staticmethod
    def params(model: LatentDiscretization) -> tuple[np.ndarray, ...]:
        """``(theta, mu, sigma, kappa^2, rho, pi)`` of ``model`` as float64 numpy arrays."""
        with torch.no_grad():
            theta, mu, sigma = (p.numpy().copy() for p in model.ou())
            kappa2 = torch.exp(2 * model.log_kappa).numpy()
            rho, pi = (p.numpy().copy() for p in model.gap_params())
        return theta, mu, sigma, kappa2, rho, pi

    def __init__(
        self,
        model: LatentDiscretization,
        T: int,
        dt: float,
        params: tuple[np.ndarray, ...] | None = None,
    ) -> None:
        theta, mu, sigma, kappa2, rho_a, pi_a = self.params(model) if params is None else params
        rho, pi = float(rho_a), float(pi_a)
        self.theta, self.mu, self.sigma2, self.kappa2 = theta, mu, sigma**2, kappa2
        self.K = 2 * model.radius + 1
        self.edges = np.arange(-model.radius, model.radius + 2, dtype=np.float64) - 0.5
        rho_dt = rho * dt
        self.survive = np.exp(-rho_dt * np.arange(max(T, 1), dtype=np.float64))  # n - 1
        self.step = -np.expm1(-rho_dt)
        self.pi = pi
        from scipy.special import ndtr

        self._ndtr = ndtr
        self._laws: dict[float | None, tuple[np.ndarray, np.ndarray]] = {}

    def latent(self, prev: np.ndarray | None, gap_t: float) -> np.ndarray:
        """Table (d, 2R+1) of a stored point ``gap_t`` after the previous one (``prev`` (d,)
        integer latents; ``None``: the first point, the stationary law). The decay and the
        standard deviation depend on ``gap_t`` only and are cached per ``gap_t`` (the same
        values on both sides: the same code on the same float)."""
        key = None if prev is None else gap_t
        law = self._laws.get(key)
        if law is None:
            theta = self.theta
            if prev is None:
                decay, var = np.zeros_like(theta), self.sigma2 / (2 * theta)
            else:
                decay = np.exp(-theta * gap_t)
                var = self.sigma2 * -np.expm1(-2 * theta * gap_t) / (2 * theta)
            law = self._laws[key] = (decay, np.sqrt(var + self.kappa2)[:, None])
        decay, std = law
        mean = self.mu if prev is None else self.mu + decay * (prev - self.mu)
        cdf = self._ndtr((self.edges - mean[:, None]) / std)
        scale = (1.0 - self.K * FLOOR) / (cdf[:, -1:] - cdf[:, :1])
        return (cdf[:, 1:] - cdf[:, :-1]) * scale + FLOOR

    def gap(self, n_max: int) -> np.ndarray:
        """Table (1, n_max) of the gaps ``1 .. n_max`` frames."""
        q = self.survive[:n_max] * self.step
        q[-1] = self.survive[n_max - 1]  # the tail mass on the last possible gap
        q *= 1.0 - self.pi
        q[0] += self.pi
        return ((1.0 - n_max * FLOOR) * q + FLOOR)[None]


class Codec:
    """Encode / decode sequences with a trained :class:`LatentDiscretization` (float64, CPU).

    Args:
        model: the trained model (copied; the copy is float64 on the CPU, in eval mode).
    """

    def __init__(self, model: LatentDiscretization) -> None:
        check(isinstance(model, LatentDiscretization), "model", model, "a LatentDiscretization")
        self.model = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
        digest = hashlib.sha256()
        m = self.model
        digest.update(repr((m.dim, m.latent_dim, m.radius, float(m.scale))).encode())
        for name, value in m.state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().numpy().tobytes())
        self.fingerprint = digest.digest()[:8]
        self._params = _Tables.params(self.model)  # the model is frozen from here on
        self.last_stats: dict[str, int] = {}

    # ------------------------------------------------------------------ shared tables
    def _tables(self, T: int, dt: float) -> _Tables:
        return _Tables(self.model, T, dt, self._params)

    # ------------------------------------------------------------------ encoder side
    def _frames(self, frames: Any) -> tuple[Tensor, tuple[int, ...]]:
        x = torch.as_tensor(np.asarray(frames), dtype=torch.float64)
        check(
            x.ndim >= 2 and x.shape[0] >= 1, "frames", frames, "an array (T, *frame_shape), T >= 1"
        )
        check(
            int(np.prod(x.shape[1:])) == self.model.dim,
            "frames",
            frames,
            f"frames of {self.model.dim} values each (the model's dim)",
        )
        check(bool(torch.isfinite(x).all()), "frames", frames, "finite values (no NaN / inf)")
        return x.reshape(1, x.shape[0], -1), tuple(x.shape[1:])

    def plan(
        self, frames: Any, *, fps: float | None = None, t0: float = 0.0,
        schedule: str = "learned", n_points: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float, Tensor]:  # fmt: skip
        """Stored frame indices (K,), their symbols (K, d), the model's rate estimate (bits)
        and the frame times, without coding. ``schedule`` / ``n_points``: see :data:`SCHEDULES`."""
        x, _ = self._frames(frames)
        return self._plan(x, fps, t0, schedule, n_points, rate=True)

    def _plan(
        self, x: Tensor, fps: float | None, t0: float, schedule: str, n_points: int | None,
        *, rate: bool,
    ) -> tuple[np.ndarray, np.ndarray, float, Tensor]:  # fmt: skip
        T = x.shape[1]
        fps = float(T if fps is None else fps)
        check(np.isfinite(fps) and fps > 0, "fps", fps, "a frame rate > 0")
        check(np.isfinite(t0), "t0", t0, "a finite start time")
        check(schedule in SCHEDULES, "schedule", schedule, f"one of {', '.join(SCHEDULES)}")
        times = _times(T, float(t0), fps)
        stored = None
        if schedule == "every":
            stored = torch.ones(1, T, dtype=torch.bool)
        elif schedule == "uniform":
            check(
                isinstance(n_points, int) and 1 <= n_points <= T,
                "n_points", n_points, f"an integer in [1, T={T}] for the uniform grid",
            )  # fmt: skip
            assert n_points is not None
            grid = np.round(np.linspace(0, T - 1, max(n_points, 2))).astype(np.int64)
            stored = torch.zeros(1, T, dtype=torch.bool)
            stored[0, torch.as_tensor(np.unique(grid))] = True
        p = self.model.plan(x, times, stored, rate=rate)
        idx = torch.nonzero(p.stored[0])[:, 0]
        return idx.numpy(), p.symbols[0, idx].numpy(), float(p.bits[0]), times

    def encode(
        self, frames: Any, *, fps: float | None = None, t0: float = 0.0,
        schedule: str = "learned", n_points: int | None = None,
    ) -> bytes:  # fmt: skip
        """Compress ``frames`` (T, *frame_shape) sampled at ``t0 + i / fps`` (default ``fps =
        T``: the sequence spans the unit interval) into bytes."""
        import constriction

        x, shape = self._frames(frames)
        idx, sym, _, times = self._plan(x, fps, t0, schedule, n_points, rate=False)
        T, R = x.shape[1], self.model.radius
        t = times.numpy()
        tables = self._tables(T, float((times[-1] - times[0]) / max(T - 1, 1)))
        pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (symbols, tables) in coding order
        prev = None
        for j, (i, k) in enumerate(zip(idx, sym, strict=True)):
            gap_t = 0.0
            if j > 0:
                n_max = T - 1 - int(idx[j - 1])
                if n_max > 1:
                    gap = np.array([i - idx[j - 1] - 1], dtype=np.int32)
                    pairs.append((gap, tables.gap(n_max)))
                gap_t = float(t[i] - t[idx[j - 1]])
            pairs.append(((k + R).astype(np.int32), tables.latent(prev, gap_t)))
            prev = k.astype(np.float64)
        payload = _range_code(pairs, constriction)
        fps_v = float(T if fps is None else fps)
        head = _HEAD.pack(MAGIC, self.fingerprint, T, len(shape))
        head += struct.pack(f"<{len(shape)}I", *shape)
        head += _TAIL.pack(float(t0), fps_v, len(payload), zlib.crc32(payload))
        self.last_stats = {
            "points": len(idx),
            "coder_calls": len(pairs),
            "payload_bits": 8 * len(payload),
        }
        return head + payload

    def estimate_bits(self, frames: Any, **kwargs: Any) -> float:
        """The model's rate estimate (bits of the payload) for ``encode(frames, **kwargs)``."""
        return self.plan(frames, **kwargs)[2]

    def header_bytes(self, ndim: int) -> int:
        """Bytes of the header for frames with ``ndim`` axes after time."""
        return _HEAD.size + 4 * ndim + _TAIL.size

    # ------------------------------------------------------------------ decoder side
    def parse(self, data: bytes) -> Decoded:
        """Check the header and decode the stored points of a stream (no frames rendered).

        Raises:
            FlowfieldsError: not a stream of ours, another model's, truncated or corrupted.
        """
        import constriction

        check(isinstance(data, (bytes, bytearray)), "data", data, "bytes from Codec.encode")
        data = bytes(data)
        hint = "The stream is truncated or not a flowfields compression stream."
        check(len(data) >= _HEAD.size, "data", f"{len(data)} bytes", "a header", hint)
        magic, fingerprint, T, ndim = _HEAD.unpack_from(data)
        check(magic == MAGIC, "data", f"magic {magic!r}", f"magic {MAGIC!r}", hint)
        check(
            fingerprint == self.fingerprint, "data", f"model fingerprint {fingerprint.hex()}",
            f"{self.fingerprint.hex()} (this codec's model)",
            "The stream was written with another model.",
        )  # fmt: skip
        off = _HEAD.size
        check(
            len(data) >= off + 4 * ndim + _TAIL.size, "data", f"{len(data)} bytes", "a header", hint
        )
        shape = struct.unpack_from(f"<{ndim}I", data, off)
        off += 4 * ndim
        t0, fps, n_bytes, crc = _TAIL.unpack_from(data, off)
        off += _TAIL.size
        check(
            len(data) == off + n_bytes, "data", f"{len(data)} bytes",
            f"{off + n_bytes} bytes (header + {n_bytes} payload bytes)", hint,
        )  # fmt: skip
        payload = data[off:]
        check(zlib.crc32(payload) == crc, "data", "a payload checksum mismatch", "crc32 ok", hint)
        got = f"T={T}, frame shape {shape}"
        want = f"T >= 1 and frames of {self.model.dim} values"
        check(T >= 1 and int(np.prod(shape)) == self.model.dim, "data", got, want, hint)
        check(np.isfinite(t0) and np.isfinite(fps) and fps > 0, "data", f"t0={t0}, fps={fps}",
              "finite t0 and fps > 0", hint)  # fmt: skip
        try:
            return self._decode_points(payload, T, tuple(shape), t0, fps, constriction)
        except FlowfieldsError:
            raise
        except (ValueError, RuntimeError, OverflowError, IndexError, AssertionError) as err:
            raise FlowfieldsError(
                f"data: got a payload the coder cannot decode ({err}). {hint}"
            ) from err

    def _decode_points(
        self,
        payload: bytes,
        T: int,
        shape: tuple[int, ...],
        t0: float,
        fps: float,
        constriction: Any,
    ) -> Decoded:
        coder = constriction.stream.queue.RangeDecoder(_words(payload))
        cat = constriction.stream.model.Categorical(perfect=False)
        times, R = _times(T, t0, fps), self.model.radius
        t = times.numpy()
        tables = self._tables(T, float((times[-1] - times[0]) / max(T - 1, 1)))
        indices: list[int] = [0]
        symbols: list[np.ndarray] = []
        prev: np.ndarray | None = None
        calls = 0
        while True:  # at most T points: every gap moves forward by >= 1 frame
            gap_t = 0.0
            if symbols:
                last = indices[-1]
                n_max = T - 1 - last
                n = 1
                if n_max > 1:
                    n = int(coder.decode(cat, tables.gap(n_max))[0]) + 1
                    calls += 1
                check(1 <= n <= n_max, "data", f"a gap of {n} frames", f"1..{n_max}", "Corrupted.")
                indices.append(last + n)
                gap_t = float(t[last + n] - t[last])
            k = coder.decode(cat, tables.latent(prev, gap_t)).astype(np.int64) - R
            calls += 1
            symbols.append(k)
            prev = k.astype(np.float64)
            if indices[-1] == T - 1:
                break
        self.last_stats = {
            "points": len(indices),
            "coder_calls": calls,
            "payload_bits": 8 * len(payload),
        }
        return Decoded(
            indices=np.asarray(indices), symbols=np.stack(symbols), times=times.numpy(),
            frame_shape=shape, t0=t0, fps=fps, stats=dict(self.last_stats),
        )  # fmt: skip

    def latent_path(self, t_stored: Tensor, z: Tensor, times: Tensor) -> Tensor:
        """Latents at any ``times`` (n,) from stored points ``(t_stored (K,), z (K, d))``: the
        stored value at a stored time, the OU bridge between stored neighbours, the OU
        transition mean from the nearest stored point outside them. -> (n, d)."""
        theta, mu, sigma = (p.detach() for p in self.model.ou())
        K = t_stored.numel()
        a = torch.searchsorted(t_stored, times, right=True) - 1  # last stored time <= t
        inside = (a >= 0) & (a < K - 1)
        a_c, b_c = a.clamp(0, K - 1), (a + 1).clamp(0, K - 1)
        t_a, t_b = t_stored[a_c], t_stored[b_c]
        ok = inside & (t_b > t_a)
        t_b_s = torch.where(ok, t_b, t_a + 1.0)
        t_s = torch.where(ok, times, t_a)
        mean, _ = ou_bridge(
            z[a_c], t_a[:, None], z[b_c], t_b_s[:, None], t_s[:, None], theta, mu, sigma
        )
        near = torch.where(a < 0, torch.zeros_like(a), a_c)
        out, _ = ou_transition(z[near], (times - t_stored[near]).abs()[:, None], theta, mu, sigma)
        exact = (a >= 0) & (times == t_a)
        path = torch.where(ok[:, None], mean, out)
        return torch.where(exact[:, None], z[a_c], path)

    def render(self, decoded: Decoded, times: Any = None) -> np.ndarray:
        """Frames of a parsed stream at its frame times or at ``times`` (n,), sorted, finite.
        -> (n, *frame_shape) float64."""
        if times is None:
            t = torch.as_tensor(decoded.times, dtype=torch.float64)
        else:
            t = torch.as_tensor(np.asarray(times, dtype=np.float64)).reshape(-1)
            check(t.numel() >= 1, "times", times, "at least one time")
            check(bool(torch.isfinite(t).all()), "times", times, "finite times")
            check(bool((t[1:] >= t[:-1]).all()), "times", times, "times sorted increasingly")
        t_stored = torch.as_tensor(decoded.times[decoded.indices], dtype=torch.float64)
        z = torch.as_tensor(decoded.symbols, dtype=torch.float64)
        with torch.no_grad():
            frames = self.model.frames(self.latent_path(t_stored, z, t))
        return frames.numpy().reshape(t.numel(), *decoded.frame_shape)

    def decode(self, data: bytes, times: Any = None) -> np.ndarray:
        """Frames from ``data`` at the encoded frame times, or at any ``times`` (sorted).

        Returns:
            (T or len(times), *frame_shape) float64.
        """
        return self.render(self.parse(data), times)

    def reconstruct(self, frames: Any, times: Any = None, **kwargs: Any) -> np.ndarray:
        """The encoder-side reconstruction (no coding): what :meth:`decode` of
        ``encode(frames, **kwargs)`` returns, computed from the plan."""
        x, shape = self._frames(frames)
        idx, sym, _, t = self.plan(frames, **kwargs)
        fps = float(kwargs.get("fps") or x.shape[1])
        decoded = Decoded(idx, sym, t.numpy(), shape, float(kwargs.get("t0", 0.0)), fps)
        return self.render(decoded, times)

"""The codec: exact round trips, real bits vs the estimate, bad streams, decoding at any time."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from flowfields.compression import Codec, LatentDiscretization
from flowfields.data.sequences import random_jumps, random_sinusoids
from flowfields.errors import FlowfieldsError
from flowfields.integrate import ou_bridge


def _codec(dim: int = 3, seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    return Codec(LatentDiscretization(dim, 3, hidden=16))


def _sequences(n: int) -> list[np.ndarray]:
    out = []
    for k in range(n):
        T = [16, 40, 64, 100][k % 4]
        if k % 3 == 0:
            x = np.random.default_rng(k).standard_normal((T, 3)).cumsum(0) * 0.3
        elif k % 3 == 1:
            x = random_jumps(k % 6, 3, seed=k).frames(T)
        else:
            x = random_sinusoids(2, 3, seed=k).frames(T)
        out.append(x)
    return out


@pytest.mark.parametrize("schedule", ["learned", "every", "uniform"])
def test_round_trip_is_exact(schedule: str) -> None:
    codec = _codec()
    for x in _sequences(8):
        kw = (
            {"schedule": schedule, "n_points": 5}
            if schedule == "uniform"
            else {"schedule": schedule}
        )
        data = codec.encode(x, **kw)
        idx, sym, _, _ = codec.plan(x, **kw)
        parsed = codec.parse(data)
        np.testing.assert_array_equal(parsed.indices, idx)
        np.testing.assert_array_equal(parsed.symbols, sym)
        decoded = codec.decode(data)
        assert decoded.shape == x.shape
        np.testing.assert_array_equal(decoded, codec.reconstruct(x, **kw))  # bit for bit


def test_bits_written_match_the_rate_estimate() -> None:
    """Per sequence within 64 bits + 2% (the issue's bound; measured within a byte and the last
    interval's slack, so 12 bits here), over 24 sequences within 3% (claim 1's test)."""
    codec = _codec(seed=1)
    actual, estimate = [], []
    for x in _sequences(12):
        for schedule in ("learned", "every"):
            data = codec.encode(x, schedule=schedule)
            a, e = codec.last_stats["payload_bits"], codec.estimate_bits(x, schedule=schedule)
            assert e - 12 <= a <= e + 12, (a, e)
            assert len(data) == codec.header_bytes(1) + a // 8
            actual.append(a)
            estimate.append(e)
    assert abs(sum(actual) / sum(estimate) - 1) < 0.03


def test_shortest_termination_decodes_and_beats_whole_words() -> None:
    """The cut payload decodes the same symbols (zero-padded) and is on average more than 8
    bits shorter than the coder's whole-word seal (measured ~14); one byte less never decodes."""
    import constriction

    from flowfields.compression.codec import _decodes, _range_code

    rng = np.random.default_rng(0)
    saved = []
    for _ in range(40):
        pairs = []
        for _ in range(int(rng.integers(3, 20))):
            p = rng.dirichlet(np.full(int(rng.integers(2, 40)), 0.3)) + 2**-16
            pairs.append((np.array([rng.choice(p.size, p=p / p.sum())], np.int32), p[None]))
        cut = _range_code(pairs, constriction)
        enc = constriction.stream.queue.RangeEncoder()
        for s, t in pairs:
            enc.encode(s, constriction.stream.model.Categorical(perfect=False), t)
        saved.append(32 * enc.num_words() - 8 * len(cut))
        assert _decodes(cut, pairs, constriction)
        if cut:
            assert not _decodes(cut[:-1], pairs, constriction)
    assert min(saved) >= 0 and np.mean(saved) > 8, saved


def test_termination_from_the_final_interval_equals_the_decoding_search() -> None:
    """The payload computed from the coder's final interval (one decode check) is the one the
    bisection with 2-8 decodes finds, byte for byte, on 400 random streams, among them final
    states whose interval straddles a word carry (constriction's "inverted" situation)."""
    import constriction

    from flowfields.compression.codec import _final_interval, _range_code, _shortest_in

    cat = constriction.stream.model.Categorical(perfect=False)
    rng = np.random.default_rng(3)
    straddle = 0
    for _ in range(400):
        pairs = []
        for _ in range(int(rng.integers(1, 40))):
            k = int(rng.integers(2, 80))
            p = rng.dirichlet(np.full(k, float(rng.choice([0.05, 0.3, 3.0])))) + 2**-16
            pairs.append((np.array([rng.choice(k, p=p / p.sum())], np.int32), p[None]))
        enc = constriction.stream.queue.RangeEncoder()
        for s, t in pairs:
            enc.encode(s, cat, t)
        lo, hi, n = _final_interval(enc)
        straddle += (enc.pos()[1][0] + enc.pos()[1][1]) >= 2**64
        direct = _shortest_in(lo, hi, n)
        assert direct == _range_code(pairs, constriction, search=True)
        assert direct == _range_code(pairs, constriction)
    assert straddle >= 3, straddle


def test_model_plan_matches_the_model_reconstruction() -> None:
    codec = _codec(seed=2)
    x = random_jumps(3, 3, seed=4).frames(50)
    idx, sym, _, times = codec.plan(x)
    stored = torch.zeros(1, 50, dtype=torch.bool)
    stored[0, idx] = True
    symbols = torch.zeros(1, 50, 3, dtype=torch.long)
    symbols[0, idx] = torch.as_tensor(sym)
    ref = codec.model.reconstruct(symbols, stored, times)[0].numpy()
    np.testing.assert_allclose(codec.decode(codec.encode(x)), ref, rtol=1e-12, atol=1e-12)


def test_decode_at_other_times_uses_the_ou_bridge() -> None:
    codec = _codec(seed=3)
    x = random_sinusoids(1, 3, seed=5).frames(32)
    data = codec.encode(x, schedule="uniform", n_points=4)
    parsed = codec.parse(data)
    t_stored = parsed.times[parsed.indices]
    t = np.array([-0.2, t_stored[0], 0.5 * (t_stored[1] + t_stored[2]), t_stored[-1] + 0.3])
    out = codec.decode(data, times=t)
    assert out.shape == (4, 3)
    theta, mu, sigma = (p.detach() for p in codec.model.ou())
    z = torch.as_tensor(parsed.symbols, dtype=torch.float64)
    mean, _ = ou_bridge(z[1], t_stored[1], z[2], t_stored[2], float(t[2]), theta, mu, sigma)
    with torch.no_grad():
        ref = codec.model.frames(mean).numpy()
    np.testing.assert_allclose(out[2], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[1], codec.decode(data)[0], rtol=0, atol=0)
    dense = codec.decode(data, times=np.linspace(0, 1, 333))
    assert dense.shape == (333, 3) and np.isfinite(dense).all()
    frames = _codec(16).decode(_codec(16).encode(np.zeros((9, 4, 4))), times=[0.1, 0.2])
    assert frames.shape == (2, 4, 4)


def test_bad_streams_raise() -> None:
    codec = _codec(seed=4)
    x = random_jumps(4, 3, seed=6).frames(64)
    data = codec.encode(x)
    for cut in (0, 3, 10, 30, len(data) - 4, len(data) - 1):
        with pytest.raises(FlowfieldsError, match="data"):
            codec.decode(data[:cut])
    with pytest.raises(FlowfieldsError, match="data"):
        codec.decode(data + b"\x00")
    for pos in (0, 5, len(data) - 5):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(FlowfieldsError, match="data"):
            codec.decode(bytes(bad))
    with pytest.raises(FlowfieldsError, match="another model"):
        _codec(seed=5).decode(data)
    with pytest.raises(FlowfieldsError, match="data"):
        codec.decode(b"\x00" * 100)
    with pytest.raises(FlowfieldsError, match="data"):
        codec.decode("not bytes")  # type: ignore[arg-type]


def test_corrupted_payload_with_a_fixed_checksum_never_hangs() -> None:
    """Past the checksum a corrupted payload either raises FlowfieldsError or decodes to T
    finite frames: the decoder stops after at most T points."""
    codec = _codec(seed=6)
    x = random_jumps(5, 3, seed=7).frames(64)
    data = codec.encode(x)
    head = len(data) - codec.last_stats["payload_bits"] // 8
    rng = np.random.default_rng(0)
    for _ in range(20):
        payload = bytearray(data[head:])
        payload[int(rng.integers(len(payload)))] ^= int(rng.integers(1, 256))
        crc_at = head - 4
        fixed = data[:crc_at] + struct.pack("<I", zlib.crc32(bytes(payload))) + bytes(payload)
        try:
            out = codec.decode(fixed)
        except FlowfieldsError:
            continue
        assert out.shape == x.shape and np.isfinite(out).all()


def test_bad_input_raises() -> None:
    codec = _codec()
    x = np.zeros((10, 3))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(FlowfieldsError, match="frames"):
        codec.encode(bad)
    with pytest.raises(FlowfieldsError, match="frames"):
        codec.encode(np.zeros((0, 3)))
    with pytest.raises(FlowfieldsError, match="frames"):
        codec.encode(np.zeros((10, 4)))
    with pytest.raises(FlowfieldsError, match="fps"):
        codec.encode(x, fps=-1.0)
    with pytest.raises(FlowfieldsError, match="schedule"):
        codec.encode(x, schedule="sometimes")
    with pytest.raises(FlowfieldsError, match="n_points"):
        codec.encode(x, schedule="uniform", n_points=11)
    data = codec.encode(x)
    with pytest.raises(FlowfieldsError, match="times"):
        codec.decode(data, times=[0.5, 0.1])
    with pytest.raises(FlowfieldsError, match="times"):
        codec.decode(data, times=[0.1, float("nan")])
    with pytest.raises(FlowfieldsError, match="model"):
        Codec("not a model")  # type: ignore[arg-type]
    one = codec.decode(codec.encode(np.ones((1, 3))))
    assert one.shape == (1, 3)


def test_stored_points_follow_content_and_time_bits_grow_logarithmically() -> None:
    """The same content at T = 32 .. 512: the stored points stay within 20% (the intensity is
    homogeneous in the frame rate), and the bits grow by at most ~log2(T ratio) + 1 per point."""
    codec = _codec(seed=7)
    content = random_jumps(4, 3, seed=8)
    points, bits = [], []
    for T in (32, 64, 128, 256, 512):
        codec.encode(content.frames(T))
        points.append(codec.last_stats["points"])
        bits.append(codec.estimate_bits(content.frames(T)))
    assert max(points) <= 1.2 * min(points), points
    assert bits[-1] - bits[0] <= max(points) * (np.log2(512 / 32) + 1), bits


def test_codec_tables_are_the_entropy_models_tables() -> None:
    """The codec's numpy tables equal :func:`gaussian_table` under ``latent_law`` and
    :func:`gap_table` (the tables the rate estimate is built from) to rounding."""
    from flowfields.compression import gap_table, gaussian_table
    from flowfields.compression.codec import _Tables

    codec = _codec(seed=8)
    m = codec.model
    with torch.no_grad():
        m.log_kappa.fill_(-1.0)
        m.log_theta.copy_(torch.tensor([-1.0, 0.0, 1.0]))
        tables = _Tables(m, 50, 1 / 50)
        prev = np.array([3.0, -7.0, 0.0])
        for p, gap_t in ((None, 0.0), (prev, 0.02), (prev, 0.7)):
            mean, var = m.latent_law(
                None if p is None else torch.as_tensor(p),
                torch.tensor([gap_t], dtype=torch.float64),
            )
            ref = gaussian_table(mean, var.sqrt(), m.radius).numpy()
            np.testing.assert_allclose(tables.latent(p, gap_t), ref, rtol=1e-12, atol=1e-15)
        rho, pi = m.gap_params()
        for n_max in (2, 7, 49):
            ref = gap_table(n_max, rho, 1 / 50, pi).numpy()
            np.testing.assert_allclose(tables.gap(n_max)[0], ref, rtol=1e-12, atol=1e-15)

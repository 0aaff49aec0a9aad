"""Engine: bit-for-bit resume, corrupt checkpoints, NaN guard, EMA arithmetic, seeding."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from flowfields.engine import (
    EMA,
    fit,
    get_rng_state,
    load_checkpoint,
    load_weights,
    previous_path,
    resolve_device,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    set_threads,
)
from flowfields.errors import CheckpointError, FlowfieldsError, NonFiniteLossError


def make_net(dtype: torch.dtype = torch.float64) -> nn.Module:
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).to(dtype)


def loss_all_rngs(model: nn.Module, step: int) -> torch.Tensor:
    """A toy regression whose batch uses torch, NumPy and Python RNGs."""
    x = torch.randn(32, 2, dtype=torch.float64)
    shift = float(np.random.uniform(-0.1, 0.1)) + random.uniform(-0.1, 0.1)  # noqa: NPY002
    return ((model(x) - torch.sin(x) - shift) ** 2).mean()


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same(a: nn.Module, b: nn.Module) -> None:
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def run(steps, path=None, resume=False, every=10, **kw):
    seed_everything(3)
    net = make_net()
    return fit(
        net,
        loss_all_rngs,
        steps=steps,
        lr=1e-2,
        checkpoint=path,
        resume=resume,
        checkpoint_every=every,
        progress=False,
        ema_decay=0.9,
        **kw,
    )


def test_resume_is_bit_for_bit(tmp_path):
    full = run(50)
    path = tmp_path / "ckpt.pt"
    first = run(30, path)
    assert first.steps == 30 and load_checkpoint(path)["step"] == 30
    # A fresh process would rebuild the model (consuming RNG) and restore everything.
    seed_everything(123)
    resumed = run(50, path, resume=True)
    assert resumed.steps == 50
    assert resumed.losses == full.losses
    assert_same(resumed.model, full.model)
    assert_same(resumed.ema, full.ema)
    assert resumed.wall_s >= first.wall_s


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    a = run(20)
    b = run(20, tmp_path / "none.pt", resume=True)
    assert_same(a.model, b.model)


def test_resume_of_finished_run_is_a_no_op(tmp_path):
    path = tmp_path / "ckpt.pt"
    a = run(20, path)
    b = run(20, path, resume=True)
    assert b.losses == a.losses
    assert_same(a.model, b.model)


def test_truncated_checkpoint_detected_and_previous_used(tmp_path):
    full = run(50)
    path = tmp_path / "ckpt.pt"
    run(30, path)  # checkpoints at 10, 20, 30: ckpt.pt = 30, ckpt.prev.pt = 20
    prev = previous_path(path)
    assert load_checkpoint(prev)["step"] == 20
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="resuming from"):
        resumed = run(50, path, resume=True)
    assert_same(resumed.model, full.model)
    assert resumed.losses == full.losses
    assert (tmp_path / "ckpt.pt.corrupt").exists()


def test_bit_flip_detected_by_digest(tmp_path):
    net = make_net()
    path = save_checkpoint({"step": 1, "model": net.state_dict()}, tmp_path / "c.pt")
    state = torch.load(path, weights_only=False)
    state["model"]["0.weight"][0, 0] += 1e-12  # silently changed content, digest kept
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(path)


def test_both_checkpoints_corrupt_raises(tmp_path):
    path = tmp_path / "ckpt.pt"
    run(20, path)
    for p in (path, previous_path(path)):
        p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        run(30, path, resume=True)


def test_mismatched_model_raises_checkpoint_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    run(10, path)
    other = nn.Linear(2, 2).double()
    with pytest.raises(CheckpointError, match="does not match"):
        fit(
            other,
            lambda m, s: m(torch.randn(4, 2, dtype=torch.float64)).sum(),
            steps=20,
            checkpoint=path,
            resume=True,
            progress=False,
        )
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(path, other)


def test_load_weights_returns_ema_or_model(tmp_path):
    path = tmp_path / "ckpt.pt"
    res = run(20, path)
    assert_same(load_weights(path, make_net()), res.ema)
    assert_same(load_weights(path, make_net(), ema=False), res.model)


def test_nan_loss_stops_with_step_losses_and_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"

    def loss_fn(model, step):
        loss = loss_all_rngs(model, step)
        return loss * float("nan") if step == 7 else loss

    seed_everything(0)
    net = make_net()
    with pytest.raises(NonFiniteLossError) as info:
        fit(net, loss_fn, steps=20, checkpoint=path, checkpoint_every=5, progress=False)
    err = info.value
    assert err.step == 7
    assert len(err.recent_losses) == 8 and np.isnan(err.recent_losses[-1])
    assert all(np.isfinite(err.recent_losses[:-1]))
    assert err.last_checkpoint == str(path)
    assert "step 7" in str(err) and str(path) in str(err)
    assert load_checkpoint(path)["step"] == 5
    assert all(torch.isfinite(p).all() for p in net.parameters())  # the bad step was not taken


def test_nan_gradient_with_finite_loss_stops(tmp_path):
    def loss_fn(model, step):
        x = torch.randn(8, 2, dtype=torch.float64)
        out = model(x).sum()
        if step == 2:
            return torch.sqrt((out * 0.0) ** 2)  # value 0, gradient inf * 0 = NaN
        return out

    with pytest.raises(NonFiniteLossError) as info:
        fit(make_net(), loss_fn, steps=5, progress=False)
    assert info.value.step == 2 and info.value.last_checkpoint is None


def test_ema_matches_hand_computation():
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    xs = [2.0, 3.0]
    lr, decay = 0.1, 0.9

    def loss_fn(m, step):
        x = torch.tensor([[xs[step]]], dtype=torch.float64)
        return 0.5 * (m(x) ** 2).sum()  # d/dw = w x^2

    res = fit(
        model,
        loss_fn,
        steps=2,
        optimizer=lambda p: torch.optim.SGD(p, lr=lr),
        ema_decay=decay,
        progress=False,
    )
    w0 = 1.0
    w1 = w0 - lr * w0 * xs[0] ** 2
    w2 = w1 - lr * w1 * xs[1] ** 2
    b0, b1 = min(decay, 1 / 10), min(decay, 2 / 11)  # warm-up: min(decay, (1 + n) / (10 + n))
    e1 = b0 * w0 + (1 - b0) * w1
    e2 = b1 * e1 + (1 - b1) * w2
    assert res.model.weight.item() == pytest.approx(w2, abs=1e-14)
    assert res.ema.weight.item() == pytest.approx(e2, abs=1e-14)
    assert res.losses == pytest.approx([0.5 * 4.0 * w0**2, 0.5 * 9.0 * w1**2], abs=1e-14)


def test_ema_warmup_schedule_and_plain_decay():
    net = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema, plain = EMA(net, 0.999), EMA(net, 0.999, warmup=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(150):
        ema.update(net)
        plain.update(net)
    # plain: 1 - 0.999^150 of the way to the new weight; warm-up: prod_n (1 + n) / (10 + n)
    assert plain.model.weight.item() == pytest.approx(1 - 0.999**150, rel=1e-12)
    kept = math.prod((1 + n) / (10 + n) for n in range(150))
    assert ema.model.weight.item() == pytest.approx(1 - kept, rel=1e-12)
    assert ema.num_updates == 150
    assert ema.current_decay() == pytest.approx(151 / 160)
    for _ in range(20000):
        ema.num_updates += 1
    assert ema.current_decay() == 0.999


def test_ema_copies_buffers_and_rejects_bad_decay():
    net = nn.BatchNorm1d(3).double()
    ema = EMA(net, 0.5)
    net.running_mean.fill_(2.0)
    ema.update(net)
    assert torch.equal(ema.model.running_mean, net.running_mean)
    with pytest.raises(FlowfieldsError, match="ema_decay"):
        EMA(net, 1.0)


def test_eval_does_not_change_training_and_gets_ema(tmp_path):
    seen = []

    def eval_fn(model, step, ema):
        torch.randn(100)  # consumes RNG: must not perturb training
        np.random.rand()  # noqa: NPY002
        seen.append((step, ema is not None, model.training))
        return {"loss": torch.tensor(float(step))}

    a = run(30)
    b = run(30, eval_fn=eval_fn, eval_every=10)
    assert_same(a.model, b.model)
    assert b.evals == [(10, {"loss": 10.0}), (20, {"loss": 20.0}), (30, {"loss": 30.0})]
    assert seen == [(10, True, False), (20, True, False), (30, True, False)]


def test_seed_argument_makes_runs_repeatable():
    def go():
        torch.manual_seed(99)
        net = make_net()
        torch.manual_seed(torch.seed() % 1000)  # different global state before fit
        return fit(net, loss_all_rngs, steps=10, seed=5, progress=False)

    assert go().losses == go().losses


def test_grad_clip_limits_update():
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(0.0)
    res = fit(
        model,
        lambda m, s: -1000.0 * m.weight.sum(),
        steps=1,
        grad_clip=1.0,
        optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
        ema_decay=None,
        progress=False,
    )
    assert res.ema is None
    assert res.model.weight.item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": 5, "checkpoint_every": 0}, "checkpoint_every"),
        ({"steps": 5, "lr": -1.0}, "lr"),
        ({"steps": 5, "ema_decay": 1.5}, "ema_decay"),
        ({"steps": 5, "grad_clip": 0}, "grad_clip"),
        ({"steps": 5, "eval_every": -2}, "eval_every"),
    ],
)
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(FlowfieldsError, match=word):
        fit(make_net(), loss_all_rngs, progress=False, **kwargs)


def test_non_scalar_loss_raises():
    with pytest.raises(FlowfieldsError, match="scalar"):
        fit(
            make_net(),
            lambda m, s: m(torch.randn(3, 2, dtype=torch.float64)),
            steps=2,
            progress=False,
        )


def test_rng_state_round_trip():
    seed_everything(7)
    state = get_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    with pytest.raises(FlowfieldsError, match="seed"):
        seed_everything(-1)


def test_resolve_device_and_threads():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(FlowfieldsError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(FlowfieldsError, match="CUDA is not available"):
            resolve_device("cuda")
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(FlowfieldsError, match="threads"):
        set_threads(0)


@pytest.mark.gpu
def test_resume_is_bit_for_bit_on_cuda(tmp_path):
    def loss_fn(model, step):
        x = torch.randn(32, 2, device="cuda", dtype=torch.float64)  # CUDA RNG
        return ((model(x) - torch.sin(x)) ** 2).mean()

    def go(steps, path=None, resume=False):
        seed_everything(3)
        net = make_net().cuda()
        return fit(
            net,
            loss_fn,
            steps=steps,
            checkpoint=path,
            resume=resume,
            checkpoint_every=10,
            progress=False,
        )

    full = go(40)
    path = tmp_path / "ckpt.pt"
    go(20, path)
    seed_everything(5)
    resumed = go(40, path, resume=True)
    assert resumed.losses == full.losses
    assert_same(resumed.model, full.model)


def test_scheduler_state_resumes(tmp_path):
    def go(steps, path=None, resume=False):
        seed_everything(1)
        return fit(
            make_net(),
            loss_all_rngs,
            steps=steps,
            lr=0.05,
            checkpoint=path,
            resume=resume,
            checkpoint_every=5,
            progress=False,
            scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 4, gamma=0.5),
        )

    full = go(20)
    go(10, tmp_path / "c.pt")
    resumed = go(20, tmp_path / "c.pt", resume=True)
    assert resumed.losses == full.losses
    assert_same(resumed.model, full.model)


def test_progress_bar_shows_loss(capsys):
    fit(make_net(), loss_all_rngs, steps=3, progress=True, desc="toy")
    err = capsys.readouterr().err
    assert "toy" in err and "loss=" in err


def test_crash_between_renames_resumes_from_previous(tmp_path):
    # save_checkpoint moves ckpt.pt to ckpt.prev.pt, then the new file into place; a crash in
    # between leaves only the previous checkpoint (and a temporary file), which resume uses.
    full = run(50)
    path = tmp_path / "ckpt.pt"
    run(30, path)
    prev = previous_path(path)
    path.unlink()
    (tmp_path / ".ckpt.pt.tmp-123").write_bytes(b"partial")
    assert load_checkpoint(prev)["step"] == 20
    resumed = run(50, path, resume=True)
    assert resumed.losses == full.losses
    assert_same(resumed.model, full.model)


def test_set_threads_limits_the_blas_pools_of_numpy_and_scipy():
    """SciPy's own OpenBLAS would otherwise start one thread per core (slow on tiny solves)."""
    code = (
        "import scipy.linalg, numpy, threadpoolctl\n"
        "from flowfields.engine import set_threads\n"
        "set_threads(1)\n"
        "pools = [p for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']\n"
        "assert pools, 'no BLAS pool found'\n"
        "print(sorted({p['num_threads'] for p in pools}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1]"

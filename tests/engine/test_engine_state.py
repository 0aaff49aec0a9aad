"""TrainState + fit: many modules and optimizers, SIGKILL + resume bit for bit, the guard on
weights, deferred (GPU-style) guarding, best selection, time budgets, extra state."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from flowfields.engine import GeneratorState, TrainState, fit, load_checkpoint, seed_everything
from flowfields.engine.state import _Guard
from flowfields.errors import FlowfieldsError, NonFiniteLossError

# A SAC-shaped state: an actor, twin critics with a Polyak target, a temperature at its own
# learning rate and a private generator (e.g. an environment's) held as extra state.
TWO_PLAYER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from torch import nn
    from flowfields.engine import GeneratorState, TrainState, fit, seed_everything

    out, steps, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    seed_everything(0)
    actor = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    critic = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    target = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    target.load_state_dict(critic.state_dict())
    log_alpha = nn.Module()
    log_alpha.value = nn.Parameter(torch.zeros((), dtype=torch.float64))
    env_rng = torch.Generator().manual_seed(123)
    opts = {
        "actor": torch.optim.Adam(actor.parameters(), lr=3e-3),
        "critic": torch.optim.Adam(critic.parameters(), lr=1e-3),
        "alpha": torch.optim.SGD(log_alpha.parameters(), lr=0.05),
    }
    state = TrainState(
        {"actor": actor, "critic": critic, "target": target, "alpha": log_alpha},
        opts,
        schedulers={"critic": torch.optim.lr_scheduler.StepLR(opts["critic"], 10, 0.5)},
        ema={"actor": 0.9},
        extra={"env_rng": GeneratorState(env_rng)},
    )

    def step_fn(state, step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        obs = torch.randn(32, 3, generator=env_rng, dtype=torch.float64)
        noise = torch.randn(32, 1, dtype=torch.float64)  # the global RNG
        a = state["actor"](obs) + 0.1 * noise
        with torch.no_grad():
            y = state["target"](torch.cat([obs, a], 1)).min(1).values - 0.1 * a.squeeze(1)
        q = state["critic"](torch.cat([obs, a.detach()], 1))
        lc = state.update("critic", (q - y[:, None]).pow(2).mean())
        alpha = state["alpha"].value.exp()
        la = state.update("actor", (alpha.detach() * a.pow(2) - state["critic"](
            torch.cat([obs, a], 1)).min(1).values[:, None]).mean())
        lt = state.update("alpha", -(state["alpha"].value * (a.detach().pow(2).mean() - 1.0)))
        with torch.no_grad():
            for p, q_ in zip(state.modules["target"].parameters(), critic.parameters()):
                p.lerp_(q_, 0.05)
        return {"critic": lc, "actor": la, "alpha": lt}

    fit(state, step_fn, steps=steps, checkpoint=os.path.join(out, "train.pt"),
        checkpoint_every=5, resume=True, progress=False, log_every=3)
    torch.save({"modules": {k: m.state_dict() for k, m in state.modules.items()},
                "ema": state.emas["actor"].state_dict(), "history": state.history,
                "env": env_rng.get_state()}, os.path.join(out, "final.pt"))
    """
)


def _run(script: Path, out: Path, steps: int, kill_at: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), str(out), str(steps), str(kill_at)]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=240).returncode


@pytest.mark.slow
def test_sigkill_and_resume_with_many_modules_is_bit_for_bit(tmp_path):
    script = tmp_path / "two_player.py"
    script.write_text(TWO_PLAYER)
    (tmp_path / "full").mkdir()
    (tmp_path / "killed").mkdir()
    assert _run(script, tmp_path / "full", 40, -1) == 0
    assert _run(script, tmp_path / "killed", 40, 23) == -9  # SIGKILL mid-run
    assert load_checkpoint(tmp_path / "killed" / "train.pt")["step"] == 20
    assert _run(script, tmp_path / "killed", 40, -1) == 0  # resume
    a = torch.load(tmp_path / "full" / "final.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "final.pt", weights_only=False)
    for name in a["modules"]:
        for key in a["modules"][name]:
            assert torch.equal(a["modules"][name][key], b["modules"][name][key]), (name, key)
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key])
    assert a["history"] == b["history"] and len(a["history"]["critic"]) == 40
    assert torch.equal(a["env"], b["env"])


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def _toy_step(state: TrainState, step: int) -> dict[str, torch.Tensor]:
    x = torch.randn(16, 2, dtype=torch.float64)
    return {"loss": state.update("model", (state["model"](x) - x[:, :1].sin()).pow(2).mean())}


def test_infinite_learning_rate_is_caught_on_the_weights(tmp_path):
    path = tmp_path / "c.pt"
    seed_everything(0)
    net = _net()
    with pytest.raises(FlowfieldsError, match="lr: got inf"):  # refused up front
        fit(net, lambda m, s: m(torch.ones(3, 2)).sum(), steps=1, lr=float("inf"))
    with pytest.raises(NonFiniteLossError, match="weights") as info:
        fit(net, lambda m, s: m(torch.ones(3, 2, dtype=torch.float64)).pow(2).mean(),
            steps=1, optimizer=lambda p: torch.optim.SGD(p, lr=float("inf")), checkpoint=path,
            progress=False)  # fmt: skip
    assert info.value.step == 0
    assert not path.exists()  # no checkpoint with non-finite weights is ever written


def test_deferred_guard_zeroes_a_bad_step_and_reports_it_at_the_flush():
    """The GPU mode of the guard (no host read per step), exercised on the CPU."""
    seed_everything(1)
    net = _net()
    state = TrainState.single(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), ema_decay=None)
    state._guard = _Guard(sync=False)
    before = {}

    def step_fn(st: TrainState, step: int) -> dict[str, torch.Tensor]:
        if step == 3:
            before.update({k: v.clone() for k, v in net.state_dict().items()})
            loss = net(torch.ones(2, 2, dtype=torch.float64)).sum() * float("nan")
            return {"loss": st.update("model", loss)}
        if step == 4:
            for k, v in net.state_dict().items():  # the NaN step left the weights unchanged
                assert torch.equal(v, before[k]), k
        return _toy_step(st, step)

    with pytest.raises(NonFiniteLossError) as info:
        fit(state, step_fn, steps=20, log_every=8, progress=False)
    assert info.value.step == 3
    assert state.step == 8  # found at the first logging interval, not before
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_a_non_finite_metric_stops_training():
    def step_fn(st: TrainState, step: int) -> dict[str, torch.Tensor]:
        out = _toy_step(st, step)
        out["kl"] = torch.tensor(float("inf") if step == 5 else 0.0)
        return out

    with pytest.raises(NonFiniteLossError, match="metric 'kl'") as info:
        fit(TrainState.single(_net()), step_fn, steps=30, log_every=10, progress=False)
    assert info.value.step == 5


def test_best_evaluation_is_kept_and_restored():
    seed_everything(2)
    state = TrainState.single(_net(), ema_decay=None)
    scores = iter([3.0, 1.0, 2.0, 5.0])
    snapshots = {}

    def eval_fn(st: TrainState, step: int) -> dict[str, float]:
        snapshots[step] = {k: v.clone() for k, v in st.modules["model"].state_dict().items()}
        return {"nll": next(scores)}

    fit(state, _toy_step, steps=40, eval_fn=eval_fn, eval_every=10, best=("nll", "min"),
        progress=False)  # fmt: skip
    assert state.best is not None and state.best.step == 20 and state.best.value == 1.0
    state.load_best()
    for k, v in state.modules["model"].state_dict().items():
        assert torch.equal(v, snapshots[20][k])


def test_time_budget_stops_training_and_resume_continues_the_budget(tmp_path):
    seed_everything(3)
    path = tmp_path / "b.pt"

    def slow_step(st: TrainState, step: int) -> dict[str, torch.Tensor]:
        import time

        time.sleep(0.01)
        return _toy_step(st, step)

    state = TrainState.single(_net())
    fit(state, slow_step, steps=10_000, time_budget_s=0.2, checkpoint=path, progress=False)
    assert 5 <= state.step < 100 and state.train_s >= 0.2
    assert load_checkpoint(path)["step"] == state.step  # saved when the budget stopped it
    again = TrainState.single(_net())
    fit(again, slow_step, steps=10_000, time_budget_s=0.4, checkpoint=path, resume=True,
        progress=False)  # fmt: skip
    assert again.step > state.step and again.train_s >= 0.4


def test_time_budget_on_a_custom_clock_ignores_wall_clock():
    """``clock``: the budget counts that clock's advance over the steps, not wall-clock."""
    import time

    ticks = {"n": 0.0}

    def counted_step(st: TrainState, step: int) -> dict[str, torch.Tensor]:
        ticks["n"] += 1.0  # one clock second per step, whatever the wall-clock
        return _toy_step(st, step)

    state = TrainState.single(_net())
    fit(state, counted_step, steps=10_000, time_budget_s=7, clock=lambda: ticks["n"],
        progress=False)  # fmt: skip
    assert state.step == 7 and state.train_s == 7.0

    def sleepy_step(st: TrainState, step: int) -> dict[str, torch.Tensor]:
        time.sleep(0.02)  # sleeping costs no CPU time
        return _toy_step(st, step)

    state = TrainState.single(_net())
    fit(state, sleepy_step, steps=10_000, time_budget_s=0.02, clock=time.thread_time,
        progress=False)  # fmt: skip
    # wall-clock would stop after 1-2 steps; 0.02 s of CPU takes many 20 ms sleeps
    assert state.step >= 5 and state.wall_s > 0.1 > state.train_s >= 0.02
    with pytest.raises(FlowfieldsError, match="clock"):
        fit(TrainState.single(_net()), _toy_step, steps=2, clock=1.0, progress=False)


def test_time_budget_bar_counts_seconds_with_one_decimal(capsys):
    fit(TrainState.single(_net()), _toy_step, steps=10_000, time_budget_s=0.3, desc="budget")
    err = capsys.readouterr().err
    assert "budget" in err and "/0.3 s" in err


def test_evaluation_time_is_not_training_time():
    import time

    state = TrainState.single(_net())
    fit(state, _toy_step, steps=4, eval_fn=lambda st, s: time.sleep(0.25) or 0.0, eval_every=1,
        progress=False)  # fmt: skip
    assert state.wall_s >= 1.0 > state.train_s


def test_cpu_seconds_count_evaluation_work_not_sleep_and_survive_resume(tmp_path):
    import time

    def busy_eval(st: TrainState, step: int) -> float:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.05:  # 50 ms of CPU work in the evaluation
            pass
        return 0.0

    path = tmp_path / "ckpt.pt"
    state = TrainState.single(_net())
    fit(state, _toy_step, steps=4, eval_fn=busy_eval, eval_every=1, checkpoint=path,
        progress=False)  # fmt: skip
    assert state.cpu_s >= 0.2 > state.train_s  # 4 evaluations of 50 ms CPU each
    sleepy = TrainState.single(_net())
    fit(sleepy, _toy_step, steps=3, eval_fn=lambda st, s: time.sleep(0.2) or 0.0,
        eval_every=1, progress=False)  # fmt: skip
    assert sleepy.wall_s >= 0.6 > 0.3 > sleepy.cpu_s  # sleeping costs no CPU time
    resumed = TrainState.single(_net())
    fit(resumed, _toy_step, steps=4, eval_fn=busy_eval, eval_every=1, checkpoint=path,
        resume=True, progress=False)  # fmt: skip
    assert resumed.step == 4 and resumed.cpu_s == state.cpu_s  # restored, not restarted
    older = state.state_dict()
    del older["cpu_s"]  # a checkpoint written before cpu_s was kept
    resumed.load_state_dict(older)
    assert math.isnan(resumed.cpu_s) and resumed.wall_s == state.wall_s


def test_generator_state_round_trips_through_the_checkpoint(tmp_path):
    def go(steps: int, resume: bool) -> tuple[TrainState, torch.Generator]:
        seed_everything(4)
        gen = torch.Generator().manual_seed(9)
        net = _net()
        state = TrainState(
            {"model": net},
            {"model": torch.optim.SGD(net.parameters(), lr=0.1)},
            extra={"gen": GeneratorState(gen)},
        )

        def step_fn(st: TrainState, step: int) -> dict[str, torch.Tensor]:
            x = torch.randn(8, 2, generator=gen, dtype=torch.float64)
            return {"loss": st.update("model", st["model"](x).pow(2).mean())}

        fit(state, step_fn, steps=steps, checkpoint=tmp_path / "g.pt", checkpoint_every=5,
            resume=resume, progress=False)  # fmt: skip
        return state, gen

    full, gen_full = go(12, False)
    (tmp_path / "g.pt").unlink()
    (tmp_path / "g.prev.pt").unlink()
    go(7, False)
    resumed, gen_res = go(12, True)
    assert resumed.history == full.history
    assert torch.equal(gen_full.get_state(), gen_res.get_state())


def test_train_state_refuses_bad_parts():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(FlowfieldsError, match="modules"):
        TrainState({})
    with pytest.raises(FlowfieldsError, match="optimizers"):
        TrainState({"m": net}, {"m": "adam"})  # type: ignore[dict-item]
    with pytest.raises(FlowfieldsError, match="ema"):
        TrainState({"m": net}, {"m": opt}, ema={"other": 0.9})
    with pytest.raises(FlowfieldsError, match="extra"):
        TrainState({"m": net}, {"m": opt}, extra={"buffer": [1, 2]})
    with pytest.raises(FlowfieldsError, match="schedulers"):
        TrainState({"m": net}, {"m": opt}, schedulers={"x": None})
    state = TrainState({"m": net}, {"m": opt})
    with pytest.raises(FlowfieldsError, match="optimizers"):
        state.update("n", net(torch.ones(1, 2, dtype=torch.float64)).sum())
    with pytest.raises(FlowfieldsError, match="scalar"):
        state.update("m", net(torch.ones(3, 2, dtype=torch.float64)))
    with pytest.raises(FlowfieldsError, match="lr"):
        fit(state, _toy_step, steps=1, lr=0.1)
    with pytest.raises(FlowfieldsError, match="step_fn"):
        fit(state, lambda st, s: [1.0], steps=1, progress=False)


def test_resuming_into_a_different_state_is_a_checkpoint_error(tmp_path):
    from flowfields.errors import CheckpointError

    fit(TrainState.single(_net()), _toy_step, steps=3, checkpoint=tmp_path / "c.pt",
        progress=False)  # fmt: skip
    other = TrainState({"a": _net()}, {"a": torch.optim.SGD(_net().parameters(), lr=0.1)})
    with pytest.raises(CheckpointError, match="does not match"):
        fit(other, _toy_step, steps=5, checkpoint=tmp_path / "c.pt", resume=True)

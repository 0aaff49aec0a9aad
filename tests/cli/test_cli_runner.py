"""CLI and runner on a fake experiment: list, run, --set, --resume, load, reproduce, SIGKILL."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Literal, Optional

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.engine import load_checkpoint
from flowfields.errors import FlowfieldsError
from flowfields.experiments import REGISTRY, load_config
from flowfields.experiments.config import apply_overrides, parse_value
from flowfields.experiments.rundir import latest_run_dir

HERE = Path(__file__).parent
FAKE = "fake-frame"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setitem(REGISTRY, FAKE, "fake_experiment_frame")
    monkeypatch.setenv("FLOWFIELDS_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    import fake_experiment_frame

    return fake_experiment_frame


def run_cli(*argv: str) -> int:
    return main(["run", FAKE, "--no-progress", *argv])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["train_state"]["modules"]["model"]


def test_list_shows_fake(fake, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert FAKE in out and "Fake experiment for the CLI tests" in out and "0000.00000" in out


def test_run_writes_run_directory(fake, capsys, tmp_path):
    out = tmp_path / "r1"
    assert run_cli("--quick", "--out", str(out), "--set", "lr=0.02", "hidden=8,8") == 0
    printed = capsys.readouterr().out
    assert "1 of 2 claims held" in printed and str(out / "report.html") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == FAKE and metrics["paper"] == fake.PAPER
    assert metrics["train/steps"] == 20 and metrics["train/nan_metric"] == "nan"
    assert metrics["wall_s"] > 0
    claims = {c["id"]: c for c in metrics["claims"]}
    assert claims["loss-drops"]["holds"] is True and claims["impossible"]["holds"] is False
    assert set(claims["impossible"]) == {
        "id",
        "statement",
        "measured",
        "threshold",
        "holds",
        "note",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.02 and config["hidden"] == [8, 8] and config["steps"] == 20
    assert load_config(out).hidden == (8, 8)
    html = (out / "report.html").read_text()
    png = (out / "losses.png").read_bytes()
    assert base64.b64encode(png).decode() in html  # figure embedded, self-contained
    assert "did not hold" in html and "cannot hold with a finite network" in html
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_default_run_dir_and_resume_latest(fake, tmp_path):
    assert run_cli("--set", "steps=20") == 0
    first = latest_run_dir(FAKE)
    assert first.parent == tmp_path / "runs" / FAKE
    assert load_checkpoint(first / "train_model.pt")["step"] == 20
    # --resume without --out continues the latest run, with more steps.
    assert run_cli("--resume", "--set", "steps=40") == 0
    assert latest_run_dir(FAKE) == first
    assert load_checkpoint(first / "train_model.pt")["step"] == 40
    fresh = tmp_path / "fresh"
    assert run_cli("--out", str(fresh), "--set", "steps=40") == 0
    a, b = weights(first / "train_model.pt"), weights(fresh / "train_model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_nothing_to_resume_exits_2(fake, capsys):
    assert run_cli("--resume") == 2
    assert "no run of 'fake-frame'" in capsys.readouterr().err


def test_set_errors_exit_2_with_message(fake, capsys):
    assert run_cli("--set", "nope=1") == 2
    err = capsys.readouterr().err
    assert "unknown key 'nope'" in err and "steps (int)" in err and "lr (float)" in err
    assert "Traceback" not in err
    assert run_cli("--set", "steps=many") == 2
    assert "--set steps: got 'many', expected an integer" in capsys.readouterr().err
    assert run_cli("--set", "steps") == 2
    assert "expected key=value" in capsys.readouterr().err
    assert run_cli("--set", "mode=tan") == 2
    assert "one of 'sin', 'cos'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert run_cli("--device", "cuda") == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_unknown_experiment_exits_2(capsys):
    assert main(["run", "no-such-experiment"]) == 2
    assert "expected one of" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "tp", "expected"),
    [
        ("3", int, 3),
        ("1e3", int, 1000),
        ("2.5", float, 2.5),
        ("-1e-4", float, -1e-4),
        ("true", bool, True),
        ("No", bool, False),
        ("0", bool, False),
        ("'moons'", str, "moons"),
        ("1,2,3", tuple[int, ...], (1, 2, 3)),
        ("(0.5, 2)", tuple[float, float], (0.5, 2.0)),
        ("[a, b]", list[str], ["a", "b"]),
        ("none", Optional[float], None),  # noqa: UP045 (typing.Optional is what older code uses)
        ("0.1", float | None, 0.1),
        ("cos", Literal["sin", "cos"], "cos"),
        ("", tuple[int, ...], ()),
    ],
)
def test_parse_value(text, tp, expected):
    value = parse_value(text, tp, "k")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "tp"),
    [("x", int), ("1.5", int), ("maybe", bool), ("abc", float), ("1,2,3", tuple[int, int])],
)
def test_parse_value_rejects(text, tp):
    with pytest.raises(FlowfieldsError, match="--set k: got"):
        parse_value(text, tp, "k")


def test_apply_overrides_mapping_and_types(fake):
    cfg = apply_overrides(fake.Config(), {"steps": "7", "scale": "none", "bias": False})
    assert cfg.steps == 7 and cfg.scale is None and cfg.bias is False
    with pytest.raises(FlowfieldsError, match="expected one of: seed \\(int\\)"):
        apply_overrides(fake.Config(), ["bogus=1"])


def test_load_returns_trained_model(fake, tmp_path):
    out = tmp_path / "r"
    assert run_cli("--quick", "--out", str(out)) == 0
    model = flowfields.load(out)
    state = load_checkpoint(out / "train_model.pt")["train_state"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["emas"]["model"][k])
    raw = flowfields.load(out, variant="raw")
    assert all(torch.equal(v, state["modules"]["model"][k]) for k, v in raw.state_dict().items())


def test_load_rejects_non_run_dirs(tmp_path):
    with pytest.raises(FlowfieldsError, match="not a flowfields run directory"):
        flowfields.load(tmp_path)
    with pytest.raises(FlowfieldsError, match="expected an existing run directory"):
        flowfields.load(tmp_path / "missing")
    (tmp_path / "run.json").write_text("{broken")
    with pytest.raises(FlowfieldsError, match="unreadable"):
        flowfields.load(tmp_path)


def test_reproduce_writes_summary_and_reports_crash(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(REGISTRY, "fake-crash", "fake_experiment_frame_missing_module")
    out = tmp_path / "rep"
    assert main(["reproduce", "--quick", "--no-progress", FAKE, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"summary report: {out / 'report.html'}" in printed
    html = (out / "report.html").read_text()
    assert fake.PAPER in html and "1 of 2 claims held" in html and "fake-frame/report.html" in html
    assert (out / FAKE / "metrics.json").is_file()
    assert (
        main(
            [
                "reproduce",
                "--quick",
                "--no-progress",
                FAKE,
                "fake-crash",
                "--out",
                str(tmp_path / "rep2"),
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert "fake-crash: CRASHED" in captured.err
    assert "crashed" in (tmp_path / "rep2" / "report.html").read_text()


def test_reproduce_with_two_jobs_pins_each_worker_to_one_torch_thread(fake, monkeypatch, tmp_path):
    """The project rule: experiments side by side run one torch thread each."""
    import json

    monkeypatch.setitem(REGISTRY, "fake-frame-2", "fake_experiment_frame")
    # a worker that did not pin itself would start torch with 2 threads from these
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    torch.set_num_threads(2)  # nor may the parent's setting leak into the workers
    try:
        out = tmp_path / "rep"
        code = main(["reproduce", "--quick", "--no-progress", "--jobs", "2", FAKE,
                     "fake-frame-2", "--out", str(out)])  # fmt: skip
    finally:
        torch.set_num_threads(1)
    assert code == 0
    for name in (FAKE, "fake-frame-2"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["torch_threads"] == 1
        assert json.loads((out / name / "run.json").read_text())["threads"] == 1


def test_bench_and_module_entry_point():
    assert main(["bench"]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "flowfields", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and flowfields.__version__ in proc.stdout


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from flowfields.experiments import REGISTRY
    REGISTRY["fake-frame"] = "fake_experiment_frame"
    from flowfields.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(fake, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT.format(here=str(HERE)))
    out = tmp_path / "killed"
    args = [
        "run",
        FAKE,
        "--no-progress",
        "--out",
        str(out),
        "--set",
        "steps=200",
        "checkpoint_every=10",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), *args, "sleep=0.01"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ckpt = out / "train_model.pt"
    deadline = time.monotonic() + 60
    step = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists():
                try:
                    step = load_checkpoint(ckpt)["step"]
                except Exception:
                    step = 0
                if step >= 40:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(ckpt)["step"]
    assert 40 <= killed_at < 200
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    resumed = subprocess.run(
        [sys.executable, str(script), *args, "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(ckpt)["step"] == 200
    # The uninterrupted reference, in this process (same code, one thread, same seed).
    ref = tmp_path / "ref"
    assert run_cli("--out", str(ref), "--set", "steps=200", "checkpoint_every=10") == 0
    a, b = weights(ckpt), weights(ref / "train_model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [
        load_checkpoint(p)["train_state"]["history"]["loss"] for p in (ckpt, ref / "train_model.pt")
    ]
    assert torch.equal(*history)


def test_torchrun_without_out_exits_2(fake, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_cli("--quick") == 2
    assert "shared by all ranks" in capsys.readouterr().err


def test_list_into_a_closed_pipe_exits_quietly():
    """`flowfields list | head -1`: no BrokenPipeError traceback, exit status 0."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from flowfields.cli import main; "
            "[main(['list']) for _ in range(50)]; sys.exit(main(['list']))",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr, stderr

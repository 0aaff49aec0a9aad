"""Reliability of runs (issue "Reliability"): no lost runs, no silent wrong numbers, one clear
error per failure. Each test reproduces a defect found by a hostile user and fails on the code
before the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import flowfields
from flowfields.cli import main
from flowfields.errors import CheckpointError, FlowfieldsError
from flowfields.experiments import REGISTRY, load_config
from flowfields.experiments.rundir import LOCK_FILE, RunLock
from flowfields.report.records import read_json

HERE = Path(__file__).parent
FAKE = "fake-frame"
LAUNCHER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from flowfields.experiments import REGISTRY
    REGISTRY["fake-frame"] = "fake_experiment_frame"
    from flowfields.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setitem(REGISTRY, FAKE, "fake_experiment_frame")
    monkeypatch.setenv("FLOWFIELDS_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)


def run_cli(*argv: str) -> int:
    return main(["run", FAKE, "--no-progress", *argv])


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


# ---------------------------------------------------------------- 1. never lose a run
def test_rejected_resume_override_changes_nothing_on_disk(fake, tmp_path, capsys):
    out = tmp_path / "r"
    assert run_cli("--out", str(out), "--set", "steps=10") == 0
    before = snapshot(out)
    assert run_cli("--resume", "--out", str(out), "--set", "mode=tan") == 2  # invalid value
    assert run_cli("--resume", "--out", str(out), "--set", "nope=1") == 2  # unknown key
    assert "mode" in capsys.readouterr().err
    assert snapshot(out) == before
    assert run_cli("--resume", "--out", str(out), "--set", "steps=12") == 0  # still resumable
    assert load_config(out).steps == 12


def test_a_second_fresh_run_into_a_run_directory_is_refused(fake, tmp_path, capsys):
    out = tmp_path / "r"
    assert run_cli("--out", str(out), "--set", "steps=20") == 0  # checkpoints at 10 and 20
    assert (out / "train_model.prev.pt").is_file()
    before = snapshot(out)
    assert run_cli("--out", str(out), "--seed", "5") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert snapshot(out) == before  # the first run's files, .prev.pt included, are untouched
    assert run_cli("--out", str(out), "--seed", "5", "--set", "steps=5", "--overwrite") == 0
    assert load_config(out).seed == 5
    assert not (out / "train_model.prev.pt").exists()  # nothing of seed 0 is left to resume


def test_concurrent_runs_into_one_directory_only_one_runs(fake, tmp_path):
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER.format(here=str(HERE)))
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), "run", FAKE, "--no-progress", "--out", str(out)]
    first = subprocess.Popen([*cmd, "--set", "steps=100", "sleep=0.02"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 120
    while not (out / LOCK_FILE).exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run([*cmd, "--set", "steps=5"], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert first.wait(timeout=240) == 0
    assert second.returncode == 2
    assert "in use by another run" in second.stderr and str(first.pid) in second.stderr
    assert load_config(out).steps == 100  # the first run's results remain, whole
    assert read_json(out / "run.json")["status"] == "finished"
    assert not (out / LOCK_FILE).exists()


def test_a_stale_lock_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname()[1]}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_resume_of_a_directory_that_is_not_a_run_is_an_error(fake, tmp_path, capsys):
    assert run_cli("--resume", "--out", str(tmp_path / "missing")) == 2
    assert not (tmp_path / "missing").exists()  # a rejected run leaves no directory behind
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert run_cli("--resume", "--out", str(tmp_path / "other")) == 2
    assert run_cli("--out", str(tmp_path / "other")) == 2  # not empty, not a run: refused
    assert "not a flowfields run directory" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]


def test_rejected_fresh_run_leaves_no_empty_directory(fake, tmp_path):
    assert run_cli("--out", str(tmp_path / "new"), "--set", "mode=tan") == 2
    assert not (tmp_path / "new").exists()
    assert run_cli("--set", "steps=-x") == 2
    assert not (tmp_path / "runs").exists()


def test_failed_checkpoint_write_keeps_previous_and_leaves_no_tmp(tmp_path, monkeypatch):
    from flowfields.engine import checkpoint as ck
    from flowfields.engine import save_checkpoint

    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):
        if "w" in mode and ".tmp-" in str(file):
            raise OSError(28, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        save_checkpoint({"step": 3}, path)
    monkeypatch.undo()
    assert str(path) in str(info.value) and info.value.__cause__ is None  # one error, no chain
    assert (
        ck.load_checkpoint(path)["step"] == 2
        and ck.load_checkpoint(ck.previous_path(path))["step"] == 1
    )
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())


def test_disk_full_during_a_run_records_the_failure(fake, tmp_path, monkeypatch, capsys):
    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):  # the disk fills up at the first checkpoint
        if "w" in mode and ".train_model.pt.tmp-" in str(file):
            raise OSError(28, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    out = tmp_path / "full"
    assert run_cli("--out", str(out), "--set", "steps=10") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "train_model.pt" in err
    assert "Traceback" not in err
    monkeypatch.undo()
    info = read_json(out / "run.json")
    assert info["status"] == "failed" and "No space left" in info["error"]
    assert not any(".tmp-" in p.name for p in out.iterdir())


# ---------------------------------------------------------------- 2. no silent wrong numbers
def test_byte_flipped_final_checkpoint_is_refused(fake, tmp_path):
    out = tmp_path / "r"
    assert run_cli("--out", str(out), "--set", "steps=10") == 0
    assert isinstance(flowfields.load(out), torch.nn.Module)
    ckpt = out / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt"):
        flowfields.load(out)


def test_damaged_run_records_are_refused(fake, tmp_path, capsys):
    out = tmp_path / "r"
    assert run_cli("--out", str(out), "--set", "steps=10") == 0
    cfg = out / "config.json"
    cfg.write_text(cfg.read_text().replace('"steps": 10', '"steps": 99'))  # a silent edit
    with pytest.raises(FlowfieldsError, match="damaged"):
        load_config(out)
    assert run_cli("--resume", "--out", str(out)) == 2
    assert "damaged" in capsys.readouterr().err
    cfg.write_text("{garbage")
    with pytest.raises(FlowfieldsError, match="unreadable"):
        load_config(out)


# ---------------------------------------------------------------- 3. one clear error each
def test_filesystem_and_configuration_errors(fake, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert run_cli("--out", str(a_file)) == 2
    assert "which is a file" in capsys.readouterr().err
    monkeypatch.setenv("FLOWFIELDS_RUNS", str(a_file))
    assert run_cli() == 2
    assert "FLOWFIELDS_RUNS" in capsys.readouterr().err
    monkeypatch.setenv("FLOWFIELDS_RUNS", "")
    assert run_cli() == 2
    assert "empty" in capsys.readouterr().err
    for bad in (None, 3, tmp_path / "missing"):
        with pytest.raises(FlowfieldsError, match="run_dir"):
            flowfields.load(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- reports embed their figures
def _embedded_images(html: str) -> int:
    return html.count("data:image/png;base64,")


def test_relative_out_dirs_embed_every_figure_in_both_reports(fake, tmp_path):
    """`make demo` writes runs/reproduce/<stamp>/...: a relative directory. Every figure must
    be embedded in the run's report.html and in the summary (they showed 'missing figure')."""
    assert run_cli("--out", "rel/run", "--set", "steps=10") == 0
    html = (tmp_path / "rel" / "run" / "report.html").read_text()
    assert "missing figure" not in html and _embedded_images(html) == 1
    assert (
        main(["reproduce", "--quick", "--no-progress", "--jobs", "1", FAKE, "--out", "rel/rep"])
        == 0
    )
    summary = (tmp_path / "rel" / "rep" / "report.html").read_text()
    own = (tmp_path / "rel" / "rep" / FAKE / "report.html").read_text()
    assert "missing figure" not in summary and "missing figure" not in own
    assert _embedded_images(summary) == 1 and _embedded_images(own) == 1


def test_a_real_experiment_into_a_relative_dir_embeds_its_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = ["grid_points=3", "ga_starts=1", "ga_steps=3", "scan_points=3"]
    argv = ["reproduce", "--quick", "--no-progress", "--jobs", "1", "steady-state-light"]
    monkeypatch.setattr(sys, "argv", ["flowfields"])
    from flowfields.experiments import runner

    real = runner.run_experiment

    def small(name, **kw):  # the quick preset, made tiny
        return real(name, overrides=tiny, **kw)

    monkeypatch.setattr(runner, "run_experiment", small)
    assert main([*argv, "--out", "runs/rep"]) == 0
    summary = (tmp_path / "runs" / "rep" / "report.html").read_text()
    own = (tmp_path / "runs" / "rep" / "steady-state-light" / "report.html").read_text()
    assert "missing figure" not in summary + own
    assert _embedded_images(summary) == 2 and _embedded_images(own) == 2

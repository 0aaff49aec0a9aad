"""Report writing: strict JSON metrics, embedded figures, claims verdicts, summary page."""

from __future__ import annotations

import base64
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.report import (
    Claim,
    Result,
    json_safe,
    save_figure,
    write_run,
    write_summary,
)
from flowfields.report.records import read_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_result(tmp_path, name="exp-a"):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig_path = save_figure(fig, tmp_path / "curve.png")
    return Result(
        name=name,
        paper="Some Paper (arXiv:1234.56789)",
        config={"steps": 10, "hidden": (8, 8), "path": tmp_path},
        metrics={
            "a/nll_nats": 3.5,
            "a/nfe": np.int64(42),
            "a/bad": float("inf"),
            "a/t": torch.tensor(0.25),
        },
        claims=[
            Claim("c-held", "A beats B", 0.5, "< 1", True),
            Claim("c-fail", "A <tiny> B", float("nan"), 0.1, False, note="too small a budget"),
        ],
        figures=[fig_path.relative_to(tmp_path)],
        tables={"by steps": [{"steps": 2, "w2": 0.3}, {"steps": 4, "w2": 0.2, "extra": "x"}]},
        wall_s=1.25,
    )


def test_save_figure_writes_png_and_closes(tmp_path):
    fig, _ = plt.subplots()
    n_before = len(plt.get_fignums())
    path = save_figure(fig, tmp_path / "sub" / "f")
    assert path.name == "f.png" and path.read_bytes()[:8] == PNG_MAGIC
    assert len(plt.get_fignums()) == n_before - 1
    with pytest.raises(FlowfieldsError, match="fig"):
        save_figure("not a figure", tmp_path / "x.png")


def test_write_run_files(tmp_path):
    result = make_result(tmp_path)
    paths = write_run(result, tmp_path)
    metrics = json.loads(paths["metrics"].read_text())  # strict JSON: parse would fail on NaN
    assert metrics["a/nll_nats"] == 3.5 and metrics["a/nfe"] == 42 and metrics["a/t"] == 0.25
    assert metrics["a/bad"] == "inf"
    assert metrics["experiment"] == "exp-a" and metrics["wall_s"] == 1.25
    assert metrics["paper"] == "Some Paper (arXiv:1234.56789)"
    assert [c["holds"] for c in metrics["claims"]] == [True, False]
    assert metrics["claims"][1]["measured"] == "nan"
    assert "config" not in paths and not (tmp_path / "config.json").exists()  # the runner's
    verified = read_json(paths["metrics"])  # checksummed: read back verified
    assert verified == {k: v for k, v in metrics.items() if k != "sha256"}
    assert len(metrics["sha256"]) == 64
    html = paths["report"].read_text()
    png = (tmp_path / "curve.png").read_bytes()
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in html
    assert "1 of 2 claims held" in html
    assert html.count('class="held"') == 1 and html.count('class="failed"') == 1
    assert "A &lt;tiny&gt; B" in html and "<tiny>" not in html  # escaped
    assert "too small a budget" in html and "by steps" in html and "extra" in html


def test_write_run_rejects_non_result(tmp_path):
    with pytest.raises(FlowfieldsError, match="result"):
        write_run({"metrics": {}}, tmp_path)


def test_json_safe_values(tmp_path):
    out = json_safe(
        {"x": (1, 2.0), "t": torch.ones(2), "n": np.float32(0.5), "p": tmp_path, "z": -math.inf}
    )
    assert out == {"x": [1, 2.0], "t": [1.0, 1.0], "n": 0.5, "p": str(tmp_path), "z": "-inf"}
    json.dumps(out, allow_nan=False)


def test_write_summary_with_crash(tmp_path):
    (tmp_path / "a").mkdir()
    a = make_result(tmp_path / "a", "exp-a")
    path = write_summary(
        [(a, tmp_path / "a"), (RuntimeError("boom"), tmp_path / "b")], tmp_path / "report.html"
    )
    html = path.read_text()
    assert "2 runs" in html and "1 of 2 claims held" in html
    assert 'href="a/report.html"' in html and "crashed: RuntimeError" in html and "boom" in html
    assert html.count("data:image/png;base64,") == 1
    assert "<h2>Some Paper (arXiv:1234.56789)</h2>" in html and "<h2>Runs that crashed</h2>" in html

"""Writing a run's ``metrics.json`` / ``config.json`` and self-contained HTML reports."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flowfields.errors import check
from flowfields.report.result import Claim, Result

__all__ = [
    "json_safe",
    "metrics_record",
    "render_run_html",
    "write_json",
    "write_run",
    "write_summary",
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.held{color:#0a6b2c;font-weight:600}.failed{color:#a31515;font-weight:600}
.muted{color:#666;font-size:.9em}figure{display:inline-block;margin:.5em;max-width:100%}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.summary{background:#f7f7f7;padding:.6em 1em;border-radius:6px}
"""


def json_safe(value: Any) -> Any:
    """Convert ``value`` to strict-JSON types: tensors / NumPy scalars to numbers or lists,
    tuples to lists, paths to strings, NaN / Inf to the strings ``"nan"``, ``"inf"``, ``"-inf"``.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # torch tensors, NumPy scalars and arrays
    if callable(item):
        size = getattr(value, "size", None)
        numel = getattr(value, "numel", None)
        n = numel() if callable(numel) else (size if isinstance(size, int) else None)
        if n == 1:
            return json_safe(item())
        tolist = getattr(value, "tolist", None)
        if callable(tolist):
            return json_safe(tolist())
    return str(value)


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``json_safe(data)`` to ``path`` (indented, atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _cell(value: Any) -> str:
    cls = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"<td{cls}>{html.escape(_fmt(value))}</td>"


def _table(rows: list[Mapping[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">(empty)</p>'
    cols: list[str] = []
    for row in rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(row.get(c, "")) for c in cols) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _claims_table(claims: Iterable[Claim]) -> str:
    rows = []
    for c in claims:
        verdict = (
            '<span class="held">held</span>'
            if c.holds
            else '<span class="failed">did not hold</span>'
        )
        rows.append(
            "<tr>"
            f"<td>{html.escape(c.id)}</td><td>{html.escape(c.statement)}</td>"
            f"{_cell(c.measured)}{_cell(c.threshold)}<td>{verdict}</td>"
            f"<td>{html.escape(c.note)}</td></tr>"
        )
    if not rows:
        return '<p class="muted">(no claims recorded)</p>'
    head = "<tr><th>id</th><th>claim</th><th>measured</th><th>threshold</th><th>verdict</th>"
    head += "<th>note</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _figures(paths: Iterable[str | os.PathLike], base: Path | None) -> str:
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            out.append(f'<p class="muted">missing figure: {html.escape(str(p))}</p>')
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        mime = "image/png" if path.suffix.lower() == ".png" else "image/svg+xml"
        out.append(
            f'<figure><img alt="{html.escape(path.stem)}" src="data:{mime};base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
        )
    return "".join(out)


def _machine() -> str:
    import torch

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
        + (f", CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
    )


def _claims_line(claims: list[Claim]) -> str:
    held = sum(bool(c.holds) for c in claims)
    return f"{held} of {len(claims)} claims held"


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'{body}<p class="muted">Generated by flowfields on '
        f"{html.escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} · {html.escape(_machine())}</p>"
        "</body></html>\n"
    )


def _run_sections(result: Result, base: Path | None, level: int = 2) -> str:
    h = f"h{level}"
    metrics = [{"metric": k, "value": v} for k, v in result.metrics.items()]
    parts = [
        f"<{h}>Claims</{h}>",
        f'<p class="summary">{_claims_line(result.claims)} · wall-clock {result.wall_s:.1f} s</p>',
        _claims_table(result.claims),
    ]
    if result.figures:
        parts += [f"<{h}>Figures</{h}>", _figures(result.figures, base)]
    parts += [f"<{h}>Metrics</{h}>", _table(metrics)]
    for name, rows in result.tables.items():
        parts += [f"<{h}>{html.escape(name)}</{h}>", _table(rows)]
    cfg = [{"field": k, "value": json.dumps(json_safe(v))} for k, v in result.config.items()]
    parts += [f"<{h}>Configuration</{h}>", _table(cfg)]
    return "".join(parts)


def render_run_html(result: Result, base: Path | None = None) -> str:
    """The self-contained HTML report of one run (figures embedded as base64 PNG).

    Args:
        result: the run's result.
        base: directory that relative figure paths are relative to (the run directory).
    """
    body = (
        f"<h1>{html.escape(result.name)}</h1><p><em>{html.escape(result.paper)}</em></p>"
        + _run_sections(result, base)
    )
    return _page(f"flowfields: {result.name}", body)


def metrics_record(result: Result) -> dict[str, Any]:
    """The content of ``metrics.json``: flat metrics plus claims, wall_s, experiment, paper."""
    record: dict[str, Any] = dict(result.metrics)
    record["experiment"] = result.name
    record["paper"] = result.paper
    record["wall_s"] = result.wall_s
    record["claims"] = [c.to_dict() for c in result.claims]
    return record


def write_run(result: Result, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``metrics.json``, ``config.json`` and ``report.html`` of a run into ``out_dir``.

    ``metrics.json`` holds the flat metrics plus ``"experiment"``, ``"paper"``, ``"wall_s"`` and
    ``"claims"`` (a list of ``{id, statement, measured, threshold, holds, note}``).
    ``config.json`` is ``result.config``. Non-finite numbers are written as strings.

    Args:
        result: what the experiment's ``run`` returned.
        out_dir: the run directory (created if needed).

    Returns:
        ``{"metrics": path, "config": path, "report": path}``.

    Raises:
        FlowfieldsError: if ``result`` is not a :class:`Result`.
    """
    check(isinstance(result, Result), "result", result, "a flowfields.report.Result")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": write_json(metrics_record(result), out / "metrics.json"),
        "config": write_json(result.config, out / "config.json"),
    }
    report = out / "report.html"
    report.write_text(render_run_html(result, out))
    paths["report"] = report
    return paths


def write_summary(
    results_and_dirs: Iterable[tuple[Result | BaseException, str | os.PathLike]],
    path: str | os.PathLike,
    *,
    title: str = "flowfields: reproduction report",
) -> Path:
    """One HTML report over several runs (what ``flowfields reproduce`` writes).

    An overview table of the runs, then one section per paper: how many of its claims held,
    and for each of its runs the claims with what was measured and whether each held, the
    figures, the metrics, and a link to the run directory's own report. An entry may carry an
    exception instead of a result (a run that crashed); it is reported as such.

    Args:
        results_and_dirs: ``(result_or_exception, run_dir)`` pairs.
        path: the HTML file to write.
        title: page title.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = list(results_and_dirs)
    overview: list[str] = []
    by_paper: dict[str, list[tuple[Result, str, str, Path]]] = {}
    crashed: list[str] = []
    total_claims = held = 0
    for i, (res, run_dir) in enumerate(entries):
        run_dir = Path(run_dir)
        try:
            rel = os.path.relpath(run_dir, path.parent)
        except ValueError:
            rel = str(run_dir)
        link = f'<a href="{html.escape(rel)}/report.html">{html.escape(rel)}</a>'
        anchor = f"run{i}"
        if isinstance(res, BaseException):
            name = run_dir.name
            overview.append(
                f'<tr><td><a href="#{anchor}">{html.escape(name)}</a></td><td></td>'
                f'<td class="failed">crashed: {html.escape(type(res).__name__)}</td>'
                f"<td></td><td>{link}</td></tr>"
            )
            crashed.append(
                f'<h3 id="{anchor}">{html.escape(name)}</h3><p class="failed">The run crashed: '
                f"{html.escape(type(res).__name__)}: {html.escape(str(res))}</p>"
            )
            continue
        n_held = sum(bool(c.holds) for c in res.claims)
        total_claims += len(res.claims)
        held += n_held
        overview.append(
            f'<tr><td><a href="#{anchor}">{html.escape(res.name)}</a></td>'
            f"<td>{html.escape(res.paper)}</td><td>{n_held} / {len(res.claims)}</td>"
            f'<td class="num">{res.wall_s:.1f}</td><td>{link}</td></tr>'
        )
        by_paper.setdefault(res.paper, []).append((res, anchor, link, run_dir))
    sections: list[str] = []
    for paper, runs in by_paper.items():
        claims = [c for res, *_ in runs for c in res.claims]
        sections.append(
            f"<h2>{html.escape(paper or 'unnamed paper')}</h2>"
            f'<p class="summary">{_claims_line(claims)} over {len(runs)} experiment(s)</p>'
        )
        for res, anchor, link, run_dir in runs:
            sections.append(
                f'<h3 id="{anchor}">{html.escape(res.name)}</h3><p>run directory {link}</p>'
                + _run_sections(res, run_dir, level=4)
            )
    if crashed:
        sections.append("<h2>Runs that crashed</h2>" + "".join(crashed))
    head = (
        "<tr><th>experiment</th><th>paper</th><th>claims held</th><th>wall-clock (s)</th>"
        "<th>run directory</th></tr>"
    )
    body = (
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="summary">{len(entries)} runs · {held} of {total_claims} claims held</p>'
        f"<table><thead>{head}</thead><tbody>{''.join(overview)}</tbody></table>"
        + "".join(sections)
    )
    path.write_text(_page(title, body))
    return path

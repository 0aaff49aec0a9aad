"""Result records, claim checks, figures and the self-contained HTML report."""

from flowfields.report.figures import DPI, save_figure
from flowfields.report.html import (
    json_safe,
    metrics_record,
    render_run_html,
    write_json,
    write_run,
    write_summary,
)
from flowfields.report.result import Claim, Result

__all__ = [
    "DPI",
    "Claim",
    "Result",
    "json_safe",
    "metrics_record",
    "render_run_html",
    "save_figure",
    "write_json",
    "write_run",
    "write_summary",
]

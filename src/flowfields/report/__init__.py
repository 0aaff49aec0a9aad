"""Result records, claim checks, figures and the self-contained HTML report."""

from flowfields.report.figures import DPI, save_figure
from flowfields.report.html import metrics_record, render_run_html, write_run, write_summary
from flowfields.report.records import json_safe, read_json, write_json
from flowfields.report.result import Claim, Result, format_number
from flowfields.report.stats import mean_se

__all__ = [
    "DPI",
    "Claim",
    "Result",
    "format_number",
    "json_safe",
    "mean_se",
    "metrics_record",
    "read_json",
    "render_run_html",
    "save_figure",
    "write_json",
    "write_run",
    "write_summary",
]

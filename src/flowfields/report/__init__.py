"""Result records, claim checks, figures and the self-contained HTML report."""

from flowfields.report.figures import DPI, save_figure
from flowfields.report.result import Claim, Result

__all__ = ["DPI", "Claim", "Result", "save_figure"]

"""Result records, claim checks, figures and the self-contained HTML report."""

from flowfields.report.result import Claim, Result

__all__ = ["Claim", "Result"]

"""HTML pages: a dataset's report (here) and the pieces a run's report is built from."""

from detforge.data.report.dataset import data_report

__all__ = ["data_report"]

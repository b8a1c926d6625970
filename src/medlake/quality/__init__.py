"""Data-quality checks after OHDSI's DataQualityDashboard and Kahn's framework.

:func:`build_catalogue` instantiates the check types of :mod:`medlake.quality.checks`
over the CDM's table specs (about 1,500 concrete checks), :func:`load_thresholds` gives
each its allowed percent of violating rows from an editable TOML file,
:func:`run_checks` compiles them to Ibis queries on the engine (one aggregate per
table), :func:`save_run` keeps every run's results (so each check has a trend), and
:func:`render_html` writes the report.
"""

from medlake.quality.catalogue import build_catalogue
from medlake.quality.checks import (
    CHECK_TYPES,
    ERROR,
    FAIL,
    NOT_APPLICABLE,
    PASS,
    Check,
    CheckResult,
    CheckType,
)
from medlake.quality.report import ReportData, render_html
from medlake.quality.runner import run_checks
from medlake.quality.store import (
    failures_per_run_query,
    latest_run_id,
    run_results_query,
    runs_query,
    save_run,
    trend_query,
)
from medlake.quality.thresholds import Thresholds, load_thresholds

__all__ = [
    "CHECK_TYPES",
    "ERROR",
    "FAIL",
    "NOT_APPLICABLE",
    "PASS",
    "Check",
    "CheckResult",
    "CheckType",
    "ReportData",
    "Thresholds",
    "build_catalogue",
    "failures_per_run_query",
    "latest_run_id",
    "load_thresholds",
    "render_html",
    "run_checks",
    "run_results_query",
    "runs_query",
    "save_run",
    "trend_query",
]

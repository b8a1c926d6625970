"""Data-quality use cases: run the checks, keep the results, summarize, report.

:func:`run_qc` runs the catalogue (``medlake qc run``, the demo); :func:`run_after_ingest`
is what ingest calls after a run that loaded batches, with the checks of the tables those
batches wrote (``[quality] run_after_ingest``); :func:`qc_summary` is the latest run as
plain data (the demo prints it); :func:`write_report` writes the HTML report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlake.access import Permission
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.errors import UsageError
from medlake.log import get_logger
from medlake.quality import (
    FAIL,
    Check,
    CheckResult,
    ReportData,
    Thresholds,
    build_catalogue,
    failures_per_run_query,
    latest_run_id,
    load_thresholds,
    render_html,
    run_checks,
    run_results_query,
    save_run,
    trend_query,
)
from medlake.schema import tables_in_group
from medlake.service.audit import anchor_head
from medlake.service.policy import authorized
from medlake.service.workspace import open_lake

logger = get_logger(__name__)

#: How many failed checks :func:`qc_summary` lists.
SUMMARY_FAILURES = 10
_SUMMARY_KEYS = ("check_id", "rows_violating", "rows_total", "pct_violating", "threshold_pct")


@dataclass(frozen=True)
class QcRun:
    """A finished run: its id and its results."""

    run_id: str
    results: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]


def thresholds_for(workspace: Workspace) -> Thresholds:
    """Shipped thresholds, overridden by the workspace's file if it exists."""
    path = Path(workspace.settings.quality.thresholds).expanduser()
    return load_thresholds(path if path.is_absolute() else workspace.root / path)


def checks_for(workspace: Workspace, tables: Iterable[str] | None = None) -> list[Check]:
    """The catalogue with the workspace's thresholds (only ``tables``' checks if given)."""
    checks = thresholds_for(workspace).apply(build_catalogue(tables_in_group("cdm")))
    if tables is None:
        return checks
    wanted = set(tables) | {"quarantine"}
    return [check for check in checks if check.table in wanted]


@authorized(Permission.RUN_QC)
def run_qc(
    workspace_dir: Path | Workspace | None,
    *,
    trigger: str = "manual",
    tables: Iterable[str] | None = None,
    batch_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QcRun:
    """Run the checks (of ``tables`` only, if given) and keep the results."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        return run_qc_on(engine, workspace, trigger=trigger, tables=tables, batch_id=batch_id,
                         progress=progress)  # fmt: skip


def run_qc_on(
    engine: Engine,
    workspace: Workspace,
    *,
    trigger: str,
    tables: Iterable[str] | None = None,
    batch_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QcRun:
    """:func:`run_qc` on an engine already open."""
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    thresholds = thresholds_for(workspace)
    checks = checks_for(workspace, tables)
    results = run_checks(engine, checks, progress=progress)
    run_id = save_run(engine, results, started=started, trigger=trigger, batch_id=batch_id,
                      thresholds_sha256=thresholds.sha256)  # fmt: skip
    logger.info("quality run %s: %d checks, %d failed", run_id, len(results),
                sum(r.status == FAIL for r in results))  # fmt: skip
    # A natural moment to anchor the audit trail's head (nothing is written if unchanged).
    anchor_head(workspace, engine)
    return QcRun(run_id, results)


def run_after_ingest(
    engine: Engine, workspace: Workspace, batch_ids: list[str], tables: Iterable[str]
) -> QcRun | None:
    """The checks of the tables an ingest run wrote, if ``[quality] run_after_ingest``.

    Called once per ingest run, after its last batch (the listener's runs are one
    batch each): checks are whole-table aggregates, so one run after the batches sees
    everything they loaded, and grouped small-file writes stay grouped.
    """
    touched = set(tables)
    if not workspace.settings.quality.run_after_ingest or not batch_ids or not touched:
        return None
    # qc_run.batch_id names the run's last batch: the state the checks saw.
    return run_qc_on(engine, workspace, trigger="ingest", tables=touched, batch_id=batch_ids[-1])


@authorized(Permission.RUN_QC)
def qc_summary(workspace_dir: Path | Workspace | None, run_id: str | None = None) -> dict[str, Any]:
    """The latest run (or ``run_id``) as plain data: counts by category and status, and
    the worst failed checks. ``{"run": None}`` when no run has been made."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        run_id = run_id or latest_run_id(engine)
        if run_id is None:
            return {"run": None, "counts": {}, "failed": []}
        data = _report_data(engine, run_id, with_history=False)
    failed = sorted(
        (r for r in data.results if r["status"] == FAIL),
        key=lambda r: -(r["pct_violating"] or 0),
    )
    return {
        "run": data.run,
        "counts": data.counts(),
        "failed": [
            {
                k: r[k]
                for k in (
                    "check_id",
                    "rows_violating",
                    "rows_total",
                    "pct_violating",
                    "threshold_pct",
                )
            }
            for r in failed[:SUMMARY_FAILURES]
        ],
        "failed_total": len(failed),
    }


@authorized(Permission.RUN_QC)
def check_results(workspace_dir: Path | Workspace | None, run_id: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    """Every check's result in the latest run (or ``run_id``)."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        run_id = run_id or latest_run_id(engine)
        if run_id is None:
            return []
        return engine.execute(run_results_query(engine, run_id)).to_pylist()


@authorized(Permission.RUN_QC)
def check_history(workspace_dir: Path | Workspace | None, check_id: str) -> list[dict]:  # type: ignore[type-arg]
    """One check's result in every run, oldest first (its trend)."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        return engine.execute(trend_query(engine, [check_id])).to_pylist()


@authorized(Permission.RUN_QC)
def write_report(
    workspace_dir: Path | Workspace | None, out: Path, run_id: str | None = None
) -> Path:
    """Write the HTML report of the latest run (or ``run_id``) to ``out``."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        run_id = run_id or latest_run_id(engine)
        if run_id is None:
            raise UsageError("no data-quality run yet: run 'medlake qc run' first")
        data = _report_data(engine, run_id, with_history=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, title=f"{workspace.settings.workspace.name}: data quality"),
                   encoding="utf-8")  # fmt: skip
    return out


def _report_data(engine: Engine, run_id: str, *, with_history: bool) -> ReportData:
    runs = engine.execute(failures_per_run_query(engine)).to_pylist()
    run = next((r for r in runs if r["run_id"] == run_id), None)
    if run is None:
        raise UsageError(f"no data-quality run {run_id!r}")
    results = engine.execute(run_results_query(engine, run_id)).to_pylist()
    trends: dict[str, list[dict[str, Any]]] = {}
    if with_history:
        failing = [r["check_id"] for r in results if r["status"] in ("fail", "error")]
        for row in engine.execute(trend_query(engine, failing[:50])).to_pylist():
            trends.setdefault(row["check_id"], []).append(row)
    return ReportData(run=run, results=results, runs=runs, trends=trends)



__all__ = [
    "QcRun",
    "check_history",
    "check_results",
    "checks_for",
    "qc_summary",
    "run_after_ingest",
    "run_qc",
    "run_qc_on",
    "thresholds_for",
    "write_report",
]

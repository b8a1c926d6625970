"""Keeping results: one ``qc_run`` row per run, one ``qc_result`` row per check per run.

A check's rows across runs are its history, from which :func:`trend_query` reads its
trend; :func:`latest_run_id` and :func:`run_results_query` read the last run back.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from medlake import __version__
from medlake.engine import Engine, SupportsTransactions
from medlake.quality.checks import ERROR, FAIL, CheckResult

RUN_TABLE = "qc_run"
RESULT_TABLE = "qc_result"


def new_run_id(started: dt.datetime) -> str:
    """Sortable and unique: the start time to the microsecond, then random hex."""
    return f"{started:%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"


def save_run(
    engine: Engine,
    results: Sequence[CheckResult],
    *,
    started: dt.datetime,
    trigger: str,
    batch_id: str | None = None,
    thresholds_sha256: str | None = None,
) -> str:
    """Store a run and its results in one transaction if the engine has them; its id."""
    run_id = new_run_id(started)
    run = pa.Table.from_pylist(
        [
            {
                "run_id": run_id,
                "started_at": started,
                "finished_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                "trigger": trigger,
                "batch_id": batch_id,
                "checks": len(results),
                "failed": sum(r.status == FAIL for r in results),
                "errors": sum(r.status == ERROR for r in results),
                "thresholds_sha256": thresholds_sha256,
                "medlake_version": __version__,
            }
        ]
    )
    rows = pa.Table.from_pylist([_row(run_id, r) for r in results])
    if not isinstance(engine, SupportsTransactions):
        # Results first: a run row is only ever written with its results in place.
        engine.load_arrow(RESULT_TABLE, rows)
        engine.load_arrow(RUN_TABLE, run)
        return run_id
    with engine.transaction():
        engine.load_arrow(RUN_TABLE, run)
        engine.load_arrow(RESULT_TABLE, rows)
    return run_id


def _row(run_id: str, result: CheckResult) -> dict[str, object]:
    check = result.check
    return {
        "run_id": run_id,
        "check_id": check.check_id,
        "check_type": check.check_type,
        "category": check.type.category,
        "subcategory": check.type.subcategory,
        "level": check.type.level,
        "cdm_table": check.table,
        "cdm_field": check.field,
        "concept_id": None,
        "rows_violating": result.rows_violating,
        "rows_total": result.rows_total,
        "pct_violating": result.pct_violating,
        "threshold_pct": check.threshold_pct,
        "status": result.status,
        "message": result.message if result.message is None else result.message[:1000],
        "elapsed_ms": result.elapsed_ms,
    }


def latest_run_id(engine: Engine) -> str | None:
    runs = engine.table(RUN_TABLE)
    rows = engine.execute(runs.order_by(runs.started_at.desc()).limit(1).select("run_id"))
    return None if rows.num_rows == 0 else str(rows.column(0)[0].as_py())


def runs_query(engine: Engine, limit: int | None = None) -> ir.Table:
    """Runs, newest first."""
    runs = engine.table(RUN_TABLE)
    ordered = runs.order_by(runs.started_at.desc())
    return ordered.limit(limit) if limit else ordered


def run_results_query(engine: Engine, run_id: str) -> ir.Table:
    results = engine.table(RESULT_TABLE)
    return results.filter(results.run_id == run_id).order_by(results.check_id)


def trend_query(engine: Engine, check_ids: Sequence[str] | None = None) -> ir.Table:
    """Each check's result in every run, oldest run first (its trend)."""
    results = engine.table(RESULT_TABLE)
    runs = engine.table(RUN_TABLE).select("run_id", "started_at", "trigger")
    if check_ids is not None:
        results = results.filter(results.check_id.isin(list(check_ids) or [""]))
    joined = results.inner_join(runs, "run_id")
    return joined.order_by([joined.check_id, joined.started_at]).select(
        "check_id", "run_id", "started_at", "trigger", "rows_violating", "rows_total",
        "pct_violating", "threshold_pct", "status",
    )  # fmt: skip


def failures_per_run_query(engine: Engine) -> ir.Table:
    """Per run: when, checks, failed, errors (for the overall trend), oldest first."""
    runs = engine.table(RUN_TABLE)
    return runs.order_by(runs.started_at).select(
        "run_id", "started_at", "trigger", "checks", "failed", "errors", ibis._.batch_id
    )


__all__ = [
    "RESULT_TABLE",
    "RUN_TABLE",
    "failures_per_run_query",
    "latest_run_id",
    "new_run_id",
    "run_results_query",
    "runs_query",
    "save_run",
    "trend_query",
]

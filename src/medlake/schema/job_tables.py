"""The background jobs table: long work the server runs (ingest of uploads, GWAS, DE,
extraction, QC) with its progress, outcome and who asked for it.

Kept in the lake so a restarted server finds every job it was given: queued ones run,
those that were running when it stopped are marked failed, none is lost silently.
"""

from __future__ import annotations

from medlake.engine import ColumnSpec, TableSpec

JOB = TableSpec(
    name="job",
    group="medlake",
    description="A background job: kind, parameters, state, progress and result.",
    columns=(
        ColumnSpec("job_id", "varchar(32)", required=True, primary_key=True),
        ColumnSpec("kind", "varchar(50)", required=True, description="ingest, gwas, de, ..."),
        ColumnSpec(
            "status",
            "varchar(20)",
            required=True,
            description="queued, running, succeeded, failed, cancelled",
        ),
        ColumnSpec("submitted_by", "varchar(100)", required=True),
        ColumnSpec("project_id", "varchar(64)", description="the project it runs in, if one"),
        ColumnSpec("params_json", "varchar(MAX)", required=True, description="its parameters"),
        ColumnSpec("created_at", "datetime", required=True),
        ColumnSpec("started_at", "datetime"),
        ColumnSpec("finished_at", "datetime"),
        ColumnSpec("progress_done", "bigint", description="steps done (kind-specific unit)"),
        ColumnSpec("progress_total", "bigint", description="steps in all, when known"),
        ColumnSpec("cancel_requested", "boolean", description="a user asked to cancel it"),
        ColumnSpec("result_json", "varchar(MAX)", description="its summary, when it succeeded"),
        ColumnSpec("error", "varchar(2000)", description="why it failed or was cancelled"),
    ),
)

JOB_TABLES: tuple[TableSpec, ...] = (JOB,)

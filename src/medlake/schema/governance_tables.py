"""Governance tables: the audit chain's head, data-quality runs and results with history.

- ``audit_head``: one row, the last event of ``audit_event``. Every append updates it in
  the same transaction, so two writers that read the same head conflict here and one
  retries (``medlake.audit.chain``) instead of forking the chain.
- ``qc_run``: one row per data-quality run (after an ingest batch, or on demand).
- ``qc_result``: one row per check per run, so each check has a history (its trend).

Users, roles and projects (the access layer) add their tables here too.
"""

from __future__ import annotations

from medlake.engine import ColumnSpec, TableSpec

_SHA256_HEX = "varchar(64)"
_QC_RUN = ("qc_run", "run_id")

AUDIT_HEAD = TableSpec(
    name="audit_head",
    group="medlake",
    description="The audit chain's last event; one row, rewritten on every append.",
    columns=(
        ColumnSpec("chain", "varchar(20)", required=True, primary_key=True, description="main"),
        ColumnSpec("event_id", "bigint", required=True),
        ColumnSpec("event_hash", _SHA256_HEX, required=True),
        ColumnSpec("updated_at", "datetime", required=True),
    ),
)

QC_RUN = TableSpec(
    name="qc_run",
    group="medlake",
    description="One data-quality run: when, why, how many checks ran and failed.",
    columns=(
        ColumnSpec("run_id", "varchar(64)", required=True, primary_key=True),
        ColumnSpec("started_at", "datetime", required=True),
        ColumnSpec("finished_at", "datetime"),
        ColumnSpec(
            "trigger", "varchar(20)", required=True, description="ingest, manual, demo, ..."
        ),
        ColumnSpec("batch_id", "varchar(64)", description="the batch that triggered it, if one"),
        ColumnSpec("checks", "integer", required=True),
        ColumnSpec("failed", "integer", required=True, description="checks over threshold"),
        ColumnSpec("errors", "integer", required=True, description="checks that could not run"),
        ColumnSpec("thresholds_sha256", _SHA256_HEX, description="the thresholds file used"),
        ColumnSpec("medlake_version", "varchar(50)", required=True),
    ),
)

QC_RESULT = TableSpec(
    name="qc_result",
    group="medlake",
    description="One check's result in one run; a check's rows over runs are its trend.",
    columns=(
        ColumnSpec("run_id", "varchar(64)", required=True, primary_key=True, foreign_key=_QC_RUN),
        ColumnSpec("check_id", "varchar(255)", required=True, primary_key=True),
        ColumnSpec("check_type", "varchar(50)", required=True, description="e.g. is_required"),
        ColumnSpec(
            "category",
            "varchar(20)",
            required=True,
            description="Kahn: conformance, completeness, plausibility",
        ),
        ColumnSpec("subcategory", "varchar(20)", description="value, relational, atemporal, ..."),
        ColumnSpec("level", "varchar(10)", required=True, description="table, field, concept"),
        ColumnSpec("cdm_table", "varchar(50)", required=True),
        ColumnSpec("cdm_field", "varchar(50)"),
        ColumnSpec("concept_id", "integer"),
        ColumnSpec("rows_violating", "bigint"),
        ColumnSpec("rows_total", "bigint", description="denominator"),
        ColumnSpec("pct_violating", "float", description="percent, 0-100"),
        ColumnSpec("threshold_pct", "float", required=True, description="allowed percent"),
        ColumnSpec("status", "varchar(10)", required=True, description="pass, fail, error"),
        ColumnSpec("message", "varchar(1000)", description="error text, or a note"),
        ColumnSpec("elapsed_ms", "float"),
    ),
)

GOVERNANCE_TABLES: tuple[TableSpec, ...] = (AUDIT_HEAD, QC_RUN, QC_RESULT)

__all__ = ["AUDIT_HEAD", "GOVERNANCE_TABLES", "QC_RESULT", "QC_RUN"]

"""The lake's physical layout: tables kept in person order, provenance reachable by person.

Patient 360 reads one person's rows from every CDM table and from ``source_record``
with ``person_id = ?``. DuckDB keeps the min/max of each column per row group (zone
maps, ~122k rows a group) and reads only the groups whose range holds the id, so a
table stored in person order costs one row group per lookup. An ingested lake is not in
person order: rows arrive batch by batch, each batch spanning many persons, and person
ids are hashes, so every row group of an appended table spans nearly every id and a
lookup reads them all (measured: ``benchmarks/RESULTS.md``, #8).

:func:`reorder_lake` rewrites the person tables whose share of out-of-order rows
(:meth:`~medlake.engine.capabilities.SupportsReordering.out_of_order_rows`) passes
``[layout] reorder_share``, one transaction per table, rows and values unchanged. It runs
on its own after an ingest (``[layout] after_ingest``), periodically while serving
(:func:`with_layout_maintenance`, ``[layout] interval_minutes``) and on demand
(``medlake schema reorder``). On an engine without the capability (Spark: the warehouse
has no row groups of ours to keep in order) it does nothing and says so.

:func:`fill_provenance_persons` gives ``source_record.person_id`` (schema v5) to rows
loaded before it existed, from their CDM rows; ``medlake schema upgrade`` runs it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlglot

from medlake.access import Permission
from medlake.audit import append_event
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine, SupportsReordering, SupportsTransactions
from medlake.engine.capabilities import SupportsCheckpoint
from medlake.errors import EngineError, LakeBusyError
from medlake.log import get_logger
from medlake.schema import ALL_TABLES, table_spec
from medlake.service.policy import authorized, login_name
from medlake.service.serving_threads import ServingThread, around_lifespan
from medlake.service.workspace import open_lake

log = get_logger(__name__)

PERSON_COLUMN = "person_id"
PROVENANCE_TABLE = "source_record"
#: Tables read by person (patient 360, cohort extracts): the CDM's person tables and
#: medlake's per-person tables, in schema order.
PERSON_TABLES: tuple[str, ...] = tuple(
    spec.name
    for spec in ALL_TABLES
    if PERSON_COLUMN in spec.column_names
    and (spec.group == "cdm" or spec.name in (PROVENANCE_TABLE, "source_patient", "omics_sample"))
)
# Provenance rows whose cdm_row_id is a person id (the person-keyed tables; merge records
# name the surviving person).
_PERSON_ROW_IDS = ("person", "death", "source_patient")


@dataclass
class TableOrder:
    """One table's row order: rows out of person order, and whether it was rewritten."""

    table: str
    rows: int
    out_of_order: int
    reordered: bool = False
    seconds: float = 0.0

    @property
    def share(self) -> float:
        return self.out_of_order / self.rows if self.rows else 0.0


@dataclass
class LayoutReport:
    """What :func:`reorder_lake` found and did; ``supported`` False on engines without
    row groups to order (nothing was done)."""

    tables: list[TableOrder] = field(default_factory=list)
    supported: bool = True
    threshold: float = 0.0

    @property
    def reordered(self) -> list[str]:
        return [t.table for t in self.tables if t.reordered]

    def as_dict(self) -> dict[str, Any]:
        return {
            "supported": self.supported,
            "threshold": self.threshold,
            "tables": [asdict(t) | {"share": round(t.share, 4)} for t in self.tables],
        }


def _order_by(table: str) -> list[str]:
    # Person first (the zone maps), then the row's key so a rewrite is deterministic.
    if table == PROVENANCE_TABLE:
        return [PERSON_COLUMN, "cdm_table", "cdm_row_id"]
    key = [c for c in table_spec(table).primary_key if c != PERSON_COLUMN]
    return [PERSON_COLUMN, *key]


def keep_person_order(
    engine: Engine,
    workspace: Workspace,
    *,
    force: bool = False,
    tables: Sequence[str] | None = None,
    progress: Callable[[TableOrder], None] | None = None,
) -> LayoutReport:
    """Rewrite in person order each person table of at least ``[layout] min_rows`` whose
    out-of-order share exceeds ``[layout] reorder_share`` (``force``: every table with
    rows out of order, whatever its size).

    One transaction per table: a table that fails stays as it was and the error is
    raised; the tables rewritten before it stay so. Audited as ``lake.reorder`` when a
    table was rewritten. No policy check: callers are the checked entry point below,
    ingest and the server's own maintenance.
    """
    threshold = workspace.settings.layout.reorder_share
    report = LayoutReport(threshold=threshold)
    if not isinstance(engine, SupportsReordering):
        report.supported = False
        return report
    present = set(engine.list_tables())
    try:
        for table in tables or PERSON_TABLES:
            if table in present:
                _keep_table(engine, workspace, table, report, force)
                if progress is not None:
                    progress(report.tables[-1])
    finally:  # the tables rewritten before an error are audited too
        if report.reordered:
            _after_rewrite(engine, workspace, report)
    return report


def _keep_table(
    engine: Any, workspace: Workspace, table: str, report: LayoutReport, force: bool
) -> None:
    """One table: measure its order, rewrite it if due (``engine`` SupportsReordering)."""
    late, rows = engine.out_of_order_rows(table, PERSON_COLUMN)
    order = TableOrder(table, rows, late)
    report.tables.append(order)
    due = rows >= workspace.settings.layout.min_rows and order.share > report.threshold
    if late and (force or due):
        started = time.perf_counter()
        try:
            engine.reorder_table(table, _order_by(table))
        except LakeBusyError as busy:  # writes kept the table busy: the next pass tries again
            log.warning("lake layout: %s left as it is: %s", table, busy.message)
            return
        order.seconds = time.perf_counter() - started
        order.reordered = True


def _after_rewrite(engine: Engine, workspace: Workspace, report: LayoutReport) -> None:
    if isinstance(engine, SupportsCheckpoint) and not engine.in_transaction:
        # The emptied row groups are freed, and the zone maps then describe only the
        # rows in order; a checkpoint refused by another open transaction is no error.
        with contextlib.suppress(EngineError):
            engine.checkpoint()
    append_event(engine, actor=login_name(), action="lake.reorder",
                 object_type="workspace", object_id=str(workspace.root)[:255],
                 detail=report.as_dict())  # fmt: skip
    log.info("lake layout: %s rewritten in person order", ", ".join(report.reordered))


@authorized(Permission.INGEST)
def reorder_lake(
    workspace_dir: Path | Workspace | None,
    *,
    force: bool = False,
    progress: Callable[[TableOrder], None] | None = None,
) -> LayoutReport:
    """``medlake schema reorder``: :func:`keep_person_order` on the workspace's lake."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        return keep_person_order(engine, workspace, force=force, progress=progress)


@authorized(Permission.INGEST)
def layout_status(workspace_dir: Path | Workspace | None) -> LayoutReport:
    """``medlake schema layout``: each person table's rows out of person order."""
    workspace = as_workspace(workspace_dir)
    report = LayoutReport(threshold=workspace.settings.layout.reorder_share)
    with open_lake(workspace) as engine:
        if not isinstance(engine, SupportsReordering):
            report.supported = False
            return report
        present = set(engine.list_tables())
        for table in PERSON_TABLES:
            if table in present:
                late, rows = engine.out_of_order_rows(table, PERSON_COLUMN)
                report.tables.append(TableOrder(table, rows, late))
    return report


def after_ingest(engine: Engine, workspace: Workspace) -> LayoutReport | None:
    """Called once at the end of an ingest run: keep the person order ([layout]
    after_ingest); a failure is logged, never raised (the batches are loaded)."""
    if not workspace.settings.layout.after_ingest:
        return None
    try:
        return keep_person_order(engine, workspace)
    except Exception:  # the ingest succeeded whatever happens to the layout
        log.exception("lake layout after ingest failed; the next run tries again")
        return None


# ---------------------------------------------------------------------- provenance persons


def fill_provenance_persons(engine: Engine, *, slice_rows: int = 2_000_000) -> None:
    """Give ``source_record.person_id`` to rows that have none (loaded before schema v5).

    From the CDM row (domain tables: ``cdm_row_id`` is the row's key), else from the
    source patient the row names, else (person-keyed rows, merge records) ``cdm_row_id``
    itself. Plain ``UPDATE`` statements, a domain table's rows in slices of about
    ``slice_rows`` ids (one statement over a million persons' 54M rows ran out of a 4 GB
    memory limit); each only fills what is still empty, so an interrupted upgrade picks
    up where it stopped when run again. An engine without transactions (Spark's Parquet
    tables: no ``UPDATE`` either) leaves the rows as they were and says so in the log;
    on the others a failure is raised, and the upgrade is not recorded.
    """
    if not engine.has_table(PROVENANCE_TABLE):
        return
    if not isinstance(engine, SupportsTransactions):
        log.warning("source_record.person_id of rows loaded before v5 left empty on %s",
                    engine.name)  # fmt: skip
        return
    present = set(engine.list_tables())
    keyed = [
        (spec.name, spec.primary_key[0])
        for spec in ALL_TABLES
        if spec.name in present
        and spec.name in PERSON_TABLES
        and len(spec.primary_key) == 1
        and spec.primary_key[0] != PERSON_COLUMN
    ]
    empty = engine.run_sql(
        "SELECT cdm_table, min(cdm_row_id) AS low, max(cdm_row_id) AS high, count(*) AS n "
        "FROM source_record WHERE person_id IS NULL GROUP BY cdm_table"
    )
    spans = {row["cdm_table"]: row for row in (empty.to_pylist() if empty is not None else [])}
    statements = []
    for name, key in keyed:
        span = spans.get(name)
        if span is None:
            continue
        slices = max(1, -(-int(span["n"]) // slice_rows))
        width = -(-(int(span["high"]) - int(span["low"]) + 1) // slices)
        for low in range(int(span["low"]), int(span["high"]) + 1, width):
            high = low + width - 1
            statements.append(
                f'UPDATE source_record AS r SET person_id = t.person_id FROM "{name}" AS t '
                f"WHERE r.person_id IS NULL AND r.cdm_table = '{name}' "
                f"AND r.cdm_row_id BETWEEN {low} AND {high} "
                f'AND t."{key}" BETWEEN {low} AND {high} AND r.cdm_row_id = t."{key}"'
            )
    if "source_patient" in present:
        statements.append(
            "UPDATE source_record AS r SET person_id = p.person_id FROM source_patient AS p "
            "WHERE r.person_id IS NULL AND r.source_system = p.source_system "
            "AND r.source_patient_id = p.source_patient_id"
        )
    person_keyed = ", ".join(f"'{t}'" for t in _PERSON_ROW_IDS)
    statements.append(
        f"UPDATE source_record SET person_id = cdm_row_id "
        f"WHERE person_id IS NULL AND cdm_table IN ({person_keyed})"
    )
    for statement in statements:
        engine.run_sql(sqlglot.parse_one(statement, read="duckdb"))


# ---------------------------------------------------------------------- while serving


class LayoutThread(ServingThread):
    """:func:`keep_person_order` as a daemon thread of ``medlake serve``: every
    ``[layout] interval_minutes`` (not at start: the server's first minutes answer
    users), until stopped."""

    def __init__(self, workspace: Workspace, *, interval_s: float | None = None) -> None:
        super().__init__("medlake-layout", join_timeout_s=60)
        self.workspace = workspace
        self.interval_s = interval_s or workspace.settings.layout.interval_minutes * 60
        self.runs: list[LayoutReport] = []

    def _run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            if self.workspace.freeze_file.exists():
                continue  # a frozen workspace is kept as it is for the review
            try:
                with open_lake(self.workspace) as engine:
                    if _jobs_running(engine):
                        continue  # an ingest job's replacing rows would conflict: later
                    self.runs.append(keep_person_order(engine, self.workspace))
            except Exception:  # maintenance must never take the server down
                log.exception("lake layout: reorder failed; trying again later")


def _jobs_running(engine: Engine) -> bool:
    """Whether a background job (an ingest, say) is queued or running: the rewrite waits
    for the next round. Its writes would wait for the rewrite (the writer lock), but the
    rewrite waits for a write under way, and an ingest's transaction over a large file
    is long. A live EMPI link job waiting for its quiet period does not count: on a busy
    feed one nearly always is."""
    from medlake.service import jobs as job_service
    from medlake.service.live_link import KIND as LIVE_LINK

    if not engine.has_table(job_service.TABLE):
        return False
    table = engine.table(job_service.TABLE)
    busy = (table.status == job_service.RUNNING) | (
        (table.status == job_service.QUEUED) & (table.kind != LIVE_LINK)
    )
    return bool(engine.count(table.filter(busy).limit(1)))


def with_layout_maintenance(lifespan: Callable[[Any], Any], workspace: Workspace) -> Any:
    """Wrap an ASGI lifespan so the person order is kept while the server runs."""
    if workspace.settings.layout.interval_minutes <= 0:
        return lifespan
    return around_lifespan(
        lifespan, lambda: LayoutThread(workspace).start(), state_name="layout_maintenance"
    )


__all__ = [
    "PERSON_TABLES",
    "LayoutReport",
    "TableOrder",
    "after_ingest",
    "fill_provenance_persons",
    "keep_person_order",
    "layout_status",
    "reorder_lake",
    "with_layout_maintenance",
]

"""Turn a benchmark lake (``cohort_count.build_lake``) into one laid out as ingest leaves it.

The builder writes every table in person order with an empty ``source_record``: the
best case for patient 360 (one row group per table for a person, no provenance to
join). A lake filled by ingest is not like that: rows arrive batch by batch, each batch
spanning many persons, and every CDM row has its provenance row (``source_record``:
source system, record id, batch, version, SHA-256 of the record, the source patient,
and from schema v5 the person). This module rewrites the copy in place:

* each table with rows is rewritten in a random order (a hash of its key), so its row
  groups each span nearly every person id, as appended batches do (same rows, same
  values, same table definition);
* ``source_record`` gets one current row per CDM row, with values shaped as ingest
  writes them, in the order of the shuffled tables (ingest appends a chunk's provenance
  after its rows), with ``person_id`` when the lake's schema has the column (v5).

DuckDB directly (a benchmark helper, like the builder's SQL): run on a copy, never on
the shared lake. Memory is capped (``memory_limit``); sorts spill to the lake's folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

# Tables the builder fills, their key, and the source system ingest would have read
# them from (his: the hospital information system, lis: the laboratory's).
TABLES: dict[str, tuple[str, str]] = {
    "person": ("person_id", "his"),
    "observation_period": ("observation_period_id", "his"),
    "visit_occurrence": ("visit_occurrence_id", "his"),
    "condition_occurrence": ("condition_occurrence_id", "his"),
    "drug_exposure": ("drug_exposure_id", "his"),
    "measurement": ("measurement_id", "lis"),
}
# Tables ingest writes provenance for (observation periods are derived, not loaded).
PROVENANCE = ("person", "visit_occurrence", "condition_occurrence", "drug_exposure",
              "measurement")  # fmt: skip
MARKER = "as_ingested.done"


def make_as_ingested(workspace: Path, *, seed: int = 11, memory_limit: str = "3GB") -> dict:
    """Rewrite ``workspace``'s lake as ingested (see the module docstring); once: a
    marker file says it is done. Returns what it did (rows, seconds, CPU seconds)."""
    marker = workspace / MARKER
    if marker.exists():
        return {"reused": True}
    started, cpu = time.perf_counter(), time.process_time()
    con = duckdb.connect(
        str(workspace / "lake.duckdb"),
        config={"memory_limit": memory_limit, "preserve_insertion_order": True},
    )
    try:
        for table, (key, _system) in TABLES.items():
            _shuffle(con, table, key, seed)
        with_person = bool(con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'source_record' "
            "AND column_name = 'person_id'").fetchall()[0][0])  # fmt: skip
        (before,), = con.execute("SELECT count(*) FROM source_record").fetchall()
        if before:
            raise RuntimeError(f"{workspace}: source_record already has {before} rows")
        rows = 0
        for table in PROVENANCE:
            rows += _provenance(con, table, with_person)
        con.execute("CHECKPOINT").fetchall()
    finally:
        con.close()
    done = {"provenance_rows": rows, "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu, "person_id": with_person}  # fmt: skip
    marker.write_text(repr(done) + "\n")
    return done


def _shuffle(con: duckdb.DuckDBPyConnection, table: str, key: str, seed: int) -> None:
    """``table`` rewritten in a random order, keeping its definition (DDL from DuckDB)."""
    (ddl,), = con.execute(
        "SELECT sql FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall()  # fmt: skip
    shuffled = f"{table}__shuffled"
    con.execute(f"DROP TABLE IF EXISTS {shuffled}")
    con.execute(ddl.replace(f"CREATE TABLE {table}(", f"CREATE TABLE {shuffled}(", 1))
    con.execute(f"INSERT INTO {shuffled} SELECT * FROM {table} ORDER BY hash({key}, {seed})")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE {shuffled} RENAME TO {table}")
    con.execute("CHECKPOINT").fetchall()


def _provenance(con: duckdb.DuckDBPyConnection, table: str, with_person: bool) -> int:
    """One current ``source_record`` row per row of ``table``, in its stored order."""
    key, system = TABLES[table]
    record_id = {
        "person": "'PAT' || person_id",
        "measurement": "'MSG' || (measurement_id // 8) || '/OBX/' || (measurement_id % 8 + 1)",
    }.get(table, f"'{table[:4].upper()}-' || {key}")
    person = ", person_id" if with_person else ""
    columns = ("cdm_table, cdm_row_id, source_system, source_record_id, batch_id, "
               "source_version, is_current, loaded_at, record_sha256, superseded_at, "
               f"source_patient_id{person}")  # fmt: skip
    con.execute(f"""
        INSERT INTO source_record ({columns})
        SELECT '{table}', {key}, '{system}', {record_id},
               '01JD' || lpad(((hash({key}, 3) % 20000))::VARCHAR, 22, '0'),
               1700000000000 + (hash({key}, 5) % 100000000)::BIGINT, true,
               TIMESTAMP '2026-11-01 00:00:00', sha256('{table}' || {key}), NULL,
               'PAT' || person_id{person}
        FROM {table}
    """)
    (rows,), = con.execute(
        "SELECT count(*) FROM source_record WHERE cdm_table = ?", [table]).fetchall()  # fmt: skip
    return int(rows)

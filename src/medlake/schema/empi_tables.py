"""The EMPI's own tables: linkage model, linked records, review queue, decisions, history.

- ``empi_model``: trained linkage models (Splink settings JSON); one is active.
- ``empi_record``: source patients the EMPI has linked, with a hash of their compared
  features, so an incremental run knows which records are new or changed.
- ``empi_person``: person ids the EMPI has established, oldest first; a cluster keeps
  its oldest established id (stable person ids).
- ``empi_pair``: scored pairs between the review and link thresholds that the run left
  in different persons: the review queue (``status`` pending) with per-field evidence.
- ``empi_decision``: a steward's *match* / *not a match* on a pair of source patients;
  never overridden by an automatic run (the latest decision on a pair counts).
- ``empi_operation``, ``empi_change``, ``empi_snapshot``: every link, merge, split and
  unmerge, the person id each source patient had before and after, and the ``person``
  and ``death`` rows removed or created, so an unmerge restores exactly.
- ``empi_feature`` (restricted): each source patient's comparison features, so an
  incremental run transliterates and normalises only new or changed records.
- ``empi_golden`` (restricted): each person's golden record by survivorship rules.
"""

from __future__ import annotations

from medlake.engine import ColumnSpec, TableSpec

_SYSTEM = "varchar(50)"
_SOURCE_ID = "varchar(255)"
_OPERATION = ("empi_operation", "operation_id")

EMPI_MODEL = TableSpec(
    name="empi_model",
    group="medlake",
    description="Trained linkage models (Splink settings with m and u); one is active.",
    columns=(
        ColumnSpec("model_id", "varchar(64)", required=True, primary_key=True),
        ColumnSpec("trained_at", "datetime", required=True),
        ColumnSpec("trained_by", "varchar(255)", required=True),
        ColumnSpec("records", "bigint", required=True, description="records trained on"),
        ColumnSpec("settings_json", "varchar(MAX)", required=True),
        ColumnSpec("is_active", "boolean", required=True),
    ),
)

EMPI_RECORD = TableSpec(
    name="empi_record",
    group="medlake",
    description="Source patients the EMPI has linked, with the hash of their features.",
    columns=(
        ColumnSpec("source_system", _SYSTEM, required=True, primary_key=True),
        ColumnSpec("source_patient_id", _SOURCE_ID, required=True, primary_key=True),
        ColumnSpec("features_sha256", "varchar(64)", required=True),
        ColumnSpec("linked_at", "datetime", required=True),
        ColumnSpec("operation_id", "varchar(64)", required=True, foreign_key=_OPERATION),
    ),
)

EMPI_PERSON = TableSpec(
    name="empi_person",
    group="medlake",
    description="Person ids the EMPI established, in order: a cluster keeps its oldest.",
    columns=(
        ColumnSpec("person_id", "integer", required=True, primary_key=True),
        ColumnSpec("established_seq", "bigint", required=True, description="lower is older"),
        ColumnSpec("established_at", "datetime", required=True),
    ),
)

EMPI_PAIR = TableSpec(
    name="empi_pair",
    group="medlake",
    description="The review queue: uncertain pairs with per-field evidence.",
    columns=(
        ColumnSpec("pair_id", "varchar(64)", required=True, primary_key=True),
        ColumnSpec("left_system", _SYSTEM, required=True),
        ColumnSpec("left_id", _SOURCE_ID, required=True),
        ColumnSpec("right_system", _SYSTEM, required=True),
        ColumnSpec("right_id", _SOURCE_ID, required=True),
        ColumnSpec("match_probability", "float", required=True),
        ColumnSpec("match_weight", "float", required=True),
        ColumnSpec("evidence_json", "varchar(MAX)", required=True, description="per field"),
        ColumnSpec("model_id", "varchar(64)", required=True),
        ColumnSpec("status", "varchar(20)", required=True, description="pending, decided"),
        ColumnSpec("queued_at", "datetime", required=True),
    ),
)

EMPI_DECISION = TableSpec(
    name="empi_decision",
    group="medlake",
    description="Steward decisions on pairs of source patients; the latest per pair counts.",
    columns=(
        ColumnSpec("decision_id", "varchar(64)", required=True, primary_key=True),
        ColumnSpec("pair_id", "varchar(64)", required=True),
        ColumnSpec("left_system", _SYSTEM, required=True),
        ColumnSpec("left_id", _SOURCE_ID, required=True),
        ColumnSpec("right_system", _SYSTEM, required=True),
        ColumnSpec("right_id", _SOURCE_ID, required=True),
        ColumnSpec("decision", "varchar(20)", required=True, description="match, no_match"),
        ColumnSpec("steward", "varchar(255)", required=True),
        ColumnSpec("decided_at", "datetime", required=True),
        ColumnSpec("note", "varchar(1000)"),
    ),
)

EMPI_OPERATION = TableSpec(
    name="empi_operation",
    group="medlake",
    description="One link run, merge, split, decision or unmerge.",
    columns=(
        ColumnSpec("operation_id", "varchar(64)", required=True, primary_key=True),
        ColumnSpec("seq", "bigint", required=True, description="1, 2, 3, ..."),
        ColumnSpec("kind", "varchar(20)", required=True, description="link, merge, split, ..."),
        ColumnSpec("actor", "varchar(255)", required=True),
        ColumnSpec("performed_at", "datetime", required=True),
        ColumnSpec("changes", "bigint", required=True, description="source patients moved"),
        ColumnSpec("detail_json", "varchar(MAX)"),
        ColumnSpec("undoes", "varchar(64)", description="the operation an unmerge reverses"),
        ColumnSpec("undone_by", "varchar(64)"),
    ),
)

EMPI_CHANGE = TableSpec(
    name="empi_change",
    group="medlake",
    description="History: a source patient's person id before and after an operation.",
    columns=(
        ColumnSpec("operation_id", "varchar(64)", required=True, foreign_key=_OPERATION),
        ColumnSpec("source_system", _SYSTEM, required=True),
        ColumnSpec("source_patient_id", _SOURCE_ID, required=True),
        ColumnSpec("old_person_id", "integer", required=True),
        ColumnSpec("new_person_id", "integer", required=True),
    ),
)

EMPI_SNAPSHOT = TableSpec(
    name="empi_snapshot",
    group="medlake",
    description="person and death rows an operation removed or created (Arrow IPC, base64).",
    columns=(
        ColumnSpec("operation_id", "varchar(64)", required=True, foreign_key=_OPERATION),
        ColumnSpec("table_name", "varchar(50)", required=True),
        ColumnSpec("person_id", "integer", required=True),
        ColumnSpec("kind", "varchar(20)", required=True, description="removed, created"),
        ColumnSpec("rows_ipc", "varchar(MAX)", required=True),
    ),
)

EMPI_FEATURE = TableSpec(
    name="empi_feature",
    group="restricted",
    restricted=True,
    description=(
        "Each source patient's comparison features (normalised identifiers) as of its "
        "identifiers' version: an incremental link computes only new ones."
    ),
    columns=(
        ColumnSpec("source_system", _SYSTEM, required=True, primary_key=True),
        ColumnSpec("source_patient_id", _SOURCE_ID, required=True, primary_key=True),
        ColumnSpec("source_version", "bigint", required=True, description="of pii_person"),
        ColumnSpec("name_hanzi", "varchar(100)"),
        ColumnSpec("name_py", "varchar(255)"),
        ColumnSpec("name_sorted", "varchar(255)"),
        ColumnSpec("birth_date", "varchar(10)"),
        ColumnSpec("birth_date_swapped", "varchar(10)"),
        ColumnSpec("birth_year", "varchar(4)"),
        ColumnSpec("sex", "varchar(1)"),
        ColumnSpec("resident_id", "varchar(50)"),
        ColumnSpec("resident_id_valid", "boolean"),
        ColumnSpec("phone", "varchar(50)"),
        ColumnSpec("address", "varchar(1000)"),
        ColumnSpec("postcode", "varchar(20)"),
        ColumnSpec("email", "varchar(255)"),
    ),
)

EMPI_GOLDEN = TableSpec(
    name="empi_golden",
    group="restricted",
    restricted=True,
    description="Each person's golden record, chosen field by field by survivorship rules.",
    columns=(
        ColumnSpec("person_id", "integer", required=True, primary_key=True),
        ColumnSpec("name_hanzi", "varchar(100)"),
        ColumnSpec("name_pinyin", "varchar(255)"),
        ColumnSpec("family_name", "varchar(100)"),
        ColumnSpec("given_name", "varchar(100)"),
        ColumnSpec("name_latin", "varchar(255)"),
        ColumnSpec("resident_id", "varchar(20)"),
        ColumnSpec("birth_date", "date"),
        ColumnSpec("sex", "varchar(20)"),
        ColumnSpec("phone", "varchar(50)"),
        ColumnSpec("address", "varchar(1000)"),
        ColumnSpec("postcode", "varchar(20)"),
        ColumnSpec("email", "varchar(255)"),
        ColumnSpec("records", "integer", required=True, description="source patients"),
        ColumnSpec("rule", "varchar(20)", required=True, description="survivorship rule used"),
        ColumnSpec("updated_at", "datetime", required=True),
    ),
)

EMPI_TABLES: tuple[TableSpec, ...] = (
    EMPI_MODEL,
    EMPI_OPERATION,
    EMPI_RECORD,
    EMPI_PERSON,
    EMPI_PAIR,
    EMPI_DECISION,
    EMPI_CHANGE,
    EMPI_SNAPSHOT,
    EMPI_FEATURE,
    EMPI_GOLDEN,
)

__all__ = ["EMPI_TABLES"]

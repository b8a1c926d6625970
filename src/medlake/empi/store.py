"""Reading and writing the EMPI's tables (see :mod:`medlake.schema.empi_tables`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from medlake.clock import utc_now
from medlake.empi.features import FEATURE_SCHEMA, feature_table
from medlake.empi.moves import CHANGE_SCHEMA, MoveResult
from medlake.engine import SupportsTransactions

SEPARATOR = "\x1f"  # between source system and source patient id in a record's key
IDENTIFIER_COLUMNS = (
    "name_hanzi", "name_pinyin", "family_name", "given_name", "name_latin", "resident_id",
    "birth_date", "sex", "phone", "address", "postcode", "email",
)  # fmt: skip


@contextlib.contextmanager
def atomically(engine: Any) -> Iterator[None]:
    """One transaction where the engine has them (DuckDB); the block as is elsewhere.

    Spark's Parquet tables have no transactions: a run interrupted there is not rolled
    back. Its writes are keyed (rows deleted, then written again), and records are marked
    linked only after their rows moved, so the next ``link`` scores them again.
    """
    if isinstance(engine, SupportsTransactions):
        with engine.transaction():
            yield
    else:
        yield


def record_key(system: str, patient: str) -> str:
    return f"{system}{SEPARATOR}{patient}"


def split_key(key: str) -> tuple[str, str]:
    system, _, patient = key.partition(SEPARATOR)
    return system, patient


def pair_id(a: str, b: str) -> str:
    left, right = sorted((a, b))
    return hashlib.sha256(f"{left}\x1e{right}".encode()).hexdigest()[:32]


def new_id() -> str:
    """A random id (steward decisions: each is its own event)."""
    return uuid.uuid4().hex


def derived_id(*parts: object) -> str:
    """An id from what it names (an operation's sequence number, a model's definition),
    so the same runs over the same records give the same ids."""
    key = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def load_records(engine: Any, person_ids: list[int] | None = None) -> pa.Table:
    """Each source patient's latest identifiers with its current person id.

    Columns: ``unique_id`` (system and id), ``source_system``, ``source_patient_id``,
    ``person_id`` (from ``source_patient``), ``source_version`` and the identifiers.
    Source patients without identifiers are not records for linkage.
    """
    pii = engine.table("pii_person")
    latest = pii.mutate(
        _rank=ibis.row_number().over(
            group_by=[pii.source_system, pii.source_patient_id],
            order_by=ibis.desc(pii.source_version),
        )
    ).filter(lambda t: t._rank == 0)
    patients = engine.table("source_patient")
    if person_ids is not None:
        wanted = ibis.memtable(pa.table({"id": pa.array(person_ids, pa.int64())}))
        patients = patients.filter(patients.person_id.isin(wanted.id))
    joined = latest.join(
        patients.select("source_system", "source_patient_id", sp_person="person_id"),
        ["source_system", "source_patient_id"],
    )
    expr = joined.select(
        "source_system",
        "source_patient_id",
        person_id=joined.sp_person,
        source_version=joined.source_version,
        **{name: joined[name] for name in IDENTIFIER_COLUMNS},
    ).order_by(["source_system", "source_patient_id"])
    rows = engine.execute(expr)
    keys = pc.binary_join_element_wise(
        rows.column("source_system"), rows.column("source_patient_id"), SEPARATOR
    )
    return rows.add_column(0, "unique_id", keys)


def has_unlinked(engine: Any) -> bool:
    """Whether any source patient's latest identifiers are not yet in the feature cache.

    One anti-join in the engine: what an incremental link would find new or changed,
    without reading the records into Python (the ingest hook asks this after every run).
    """
    pii = engine.table("pii_person")
    latest = pii.group_by(["source_system", "source_patient_id"]).aggregate(
        source_version=pii.source_version.max()
    )
    patients = engine.table("source_patient").select("source_system", "source_patient_id")
    latest = latest.semi_join(patients, ["source_system", "source_patient_id"])
    cached = engine.table("empi_feature").select(
        "source_system", "source_patient_id", "source_version"
    )
    missing = latest.anti_join(cached, ["source_system", "source_patient_id", "source_version"])
    return engine.count(missing.limit(1)) > 0


def features_with_cache(engine: Any, records: pa.Table) -> tuple[pa.Table, list[bool]]:
    """Features of ``records`` (in order) and which were computed now, not cached.

    A record's cached features are reused when its identifiers' ``source_version`` is
    the one they were computed from (``empi_feature``).
    """
    n = records.num_rows
    cache = engine.execute(engine.table("empi_feature"))
    rows = pa.table(
        {
            "unique_id": records.column("unique_id"),
            "source_version": records.column("source_version"),
            "_row": pa.array(range(n), pa.int64()),
        }
    )
    fresh = [True] * n
    parts: list[pa.Table] = []
    if cache.num_rows:
        keyed = cache.append_column(
            "unique_id",
            pc.binary_join_element_wise(
                cache.column("source_system"), cache.column("source_patient_id"), SEPARATOR
            ),
        ).drop_columns(["source_system", "source_patient_id"])
        hits = rows.join(keyed, ["unique_id", "source_version"], join_type="inner")
        for row in hits.column("_row").to_pylist():
            fresh[row] = False
        parts.append(hits.select(["_row", *FEATURE_SCHEMA.names]))
    missing = [i for i in range(n) if fresh[i]]
    if missing:
        computed = feature_table(records.take(pa.array(missing, pa.int64())))
        parts.append(computed.append_column("_row", pa.array(missing, pa.int64())))
    combined = pa.concat_tables(
        [p.select(["_row", *FEATURE_SCHEMA.names]).cast(
            pa.schema([("_row", pa.int64()), *FEATURE_SCHEMA])
        ) for p in parts]
    )  # fmt: skip
    combined = combined.sort_by("_row").drop_columns(["_row"])
    return combined, fresh


def save_features(engine: Any, records: pa.Table, features: pa.Table, fresh: list[bool]) -> None:
    """Store the features computed now (replacing older versions)."""
    mask = pa.array(fresh)
    if not any(fresh):
        return
    new = features.filter(mask)
    source = records.filter(mask)
    keys = new.column("unique_id")
    table = engine.table("empi_feature")
    wanted = ibis.memtable(pa.table({"k": keys}))
    engine.delete_where(
        "empi_feature",
        (table.source_system.concat(SEPARATOR, table.source_patient_id)).isin(wanted.k),
    )
    engine.load_arrow(
        "empi_feature",
        new.drop_columns(["unique_id"])
        .append_column("source_system", source.column("source_system"))
        .append_column("source_patient_id", source.column("source_patient_id"))
        .append_column("source_version", source.column("source_version")),
    )


def features_hashes(features: pa.Table) -> list[str]:
    columns = [features.column(name).to_pylist() for name in features.column_names[1:]]
    return [
        hashlib.sha256(repr(values).encode()).hexdigest() for values in zip(*columns, strict=True)
    ]


@dataclass(frozen=True)
class StoredModel:
    model_id: str
    settings: dict[str, Any]
    trained_at: dt.datetime
    records: int = 0  # records it was trained on


def active_model(engine: Any) -> StoredModel | None:
    models = engine.table("empi_model")
    rows = engine.execute(
        models.filter(models.is_active).order_by(ibis.desc("trained_at")).limit(1)
    )
    if rows.num_rows == 0:
        return None
    row = rows.to_pylist()[0]
    return StoredModel(
        row["model_id"], json.loads(row["settings_json"]), row["trained_at"], row["records"]
    )


def save_model(engine: Any, settings: dict[str, Any], *, records: int, actor: str) -> str:
    """Store a trained model as the active one; return its id."""
    models = engine.table("empi_model")
    text = json.dumps(settings, ensure_ascii=False, sort_keys=True)
    model_id = derived_id("model", engine.count(models), text)
    old = engine.execute(models.filter(models.is_active))
    with atomically(engine):
        if old.num_rows:
            engine.delete_where("empi_model", models.is_active)
            engine.load_arrow(
                "empi_model",
                old.set_column(
                    old.column_names.index("is_active"),
                    "is_active",
                    pa.array([False] * old.num_rows),
                ),
            )
        engine.load_arrow(
            "empi_model",
            pa.table(
                {
                    "model_id": [model_id],
                    "trained_at": pa.array([utc_now()], pa.timestamp("us")),
                    "trained_by": [actor],
                    "records": pa.array([records], pa.int64()),
                    "settings_json": [text],
                    "is_active": [True],
                }
            ),
        )
    return model_id


def linked_hashes(engine: Any) -> dict[str, str]:
    rows = engine.execute(
        engine.table("empi_record").select("source_system", "source_patient_id", "features_sha256")
    )
    return {
        record_key(s, p): h
        for s, p, h in zip(
            rows.column("source_system").to_pylist(),
            rows.column("source_patient_id").to_pylist(),
            rows.column("features_sha256").to_pylist(),
            strict=True,
        )
    }


def established(engine: Any) -> dict[int, int]:
    rows = engine.execute(engine.table("empi_person").select("person_id", "established_seq"))
    return dict(
        zip(
            rows.column("person_id").to_pylist(),
            rows.column("established_seq").to_pylist(),
            strict=True,
        )
    )


def decisions(engine: Any) -> dict[str, dict[str, Any]]:
    """The latest decision on each pair, by pair id."""
    rows = engine.execute(engine.table("empi_decision").order_by("decided_at"))
    latest: dict[str, dict[str, Any]] = {}
    for row in rows.to_pylist():
        latest[row["pair_id"]] = row
    return latest


def next_seq(engine: Any) -> int:
    value = engine.scalar(engine.table("empi_operation").seq.max())
    return int(value or 0) + 1


def write_operation(
    engine: Any,
    *,
    operation_id: str,
    seq: int,
    kind: str,
    actor: str,
    changes: pa.Table,
    moves: MoveResult,
    detail: dict[str, Any],
    undoes: str | None = None,
) -> None:
    """The operation, its per-patient changes and its person-row snapshots."""
    engine.load_arrow(
        "empi_operation",
        pa.table(
            {
                "operation_id": [operation_id],
                "seq": pa.array([seq], pa.int64()),
                "kind": [kind],
                "actor": [actor],
                "performed_at": pa.array([utc_now()], pa.timestamp("us")),
                "changes": pa.array([changes.num_rows], pa.int64()),
                "detail_json": [json.dumps(detail, ensure_ascii=False, default=str)],
                "undoes": pa.array([undoes], pa.string()),
                "undone_by": pa.nulls(1, pa.string()),
            }
        ),
    )
    if changes.num_rows:
        engine.load_arrow(
            "empi_change",
            changes.cast(CHANGE_SCHEMA).append_column(
                "operation_id", pa.array([operation_id] * changes.num_rows, pa.string())
            ),
        )
    if moves.snapshots:
        engine.load_arrow("empi_snapshot", pa.Table.from_pylist(moves.snapshots))
    if undoes:
        ops = engine.table("empi_operation")
        row = engine.execute(ops.filter(ops.operation_id == undoes))
        engine.delete_where("empi_operation", ops.operation_id == undoes)
        engine.load_arrow(
            "empi_operation",
            row.set_column(
                row.column_names.index("undone_by"), "undone_by", pa.array([operation_id])
            ),
        )


def establish(engine: Any, person_ids: list[int], seq: int) -> None:
    known = established(engine)
    fresh = sorted({p for p in person_ids if p not in known})
    if fresh:
        engine.load_arrow(
            "empi_person",
            pa.table(
                {
                    "person_id": pa.array(fresh, pa.int64()),
                    "established_seq": pa.array([seq] * len(fresh), pa.int64()),
                    "established_at": pa.array([utc_now()] * len(fresh), pa.timestamp("us")),
                }
            ),
        )


def mark_linked(engine: Any, keys: list[str], hashes: list[str], operation_id: str) -> None:
    """Remember the records linked, with their feature hashes (replacing older rows)."""
    if not keys:
        return
    systems, patients = zip(*(split_key(k) for k in keys), strict=True)
    table = pa.table(
        {
            "source_system": list(systems),
            "source_patient_id": list(patients),
            "features_sha256": hashes,
            "linked_at": pa.array([utc_now()] * len(keys), pa.timestamp("us")),
            "operation_id": [operation_id] * len(keys),
        }
    )
    records = engine.table("empi_record")
    wanted = ibis.memtable(pa.table({"k": pa.array(keys)}))
    engine.delete_where(
        "empi_record",
        (records.source_system.concat(SEPARATOR, records.source_patient_id)).isin(wanted.k),
    )
    engine.load_arrow("empi_record", table)

"""Moving a lake's rows when source patients change person: merges, splits, unmerges.

A change set says, for some source patients, the person id they hold now and the one
they will hold. Every table with a ``person_id`` follows, in the caller's transaction:

- ``source_patient``, ``pii_person``, ``omics_sample`` name their source patient, so
  their rows move with it; so does ``source_record`` (provenance: its ``person_id`` is
  its CDM row's, which follows the same source patient; a row that names none, loaded
  before rows named their patient, moves only when its person moves whole, as its CDM
  row does).
- For every other table, a person whose source patients all go to one new id moves
  whole (``person_id = old`` → new). A person that *splits* moves row by row: each
  row's source patient is in its provenance (``source_record.source_patient_id``,
  current version), so exactly that patient's rows go.
- ``person`` and ``death`` are keyed by ``person_id``: a person id that disappears
  has its rows removed, and one that appears gets the rows last removed for it (an
  unmerge) or a copy of the row of the person it came from. Every removed or created
  row is kept in ``empi_snapshot`` (Arrow IPC), so reversing the change set restores
  the lake exactly.

Rows are read, deleted and written back (every engine can; Spark's Parquet tables
have no UPDATE), only for the persons concerned.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass, field

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc

from medlake.engine import Engine
from medlake.schema import ALL_TABLES

PERSON_KEYED = ("person", "death")
PATIENT_KEYED = ("source_patient", "pii_person", "omics_sample", "source_record")
#: Tables whose rows follow their person (besides the two above groups).
ROW_TABLES: tuple[str, ...] = tuple(
    spec.name
    for spec in ALL_TABLES
    if "person_id" in spec.column_names
    and spec.name not in PERSON_KEYED + PATIENT_KEYED
    and not spec.name.startswith("empi_")
)
CHANGE_SCHEMA = pa.schema(
    [
        ("source_system", pa.string()),
        ("source_patient_id", pa.string()),
        ("old_person_id", pa.int64()),
        ("new_person_id", pa.int64()),
    ]
)


@dataclass
class MoveResult:
    """What a change set did: rows moved per table, person rows removed and created."""

    rows_moved: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    persons_removed: list[int] = field(default_factory=list)
    persons_created: list[int] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)


def _ids(values: list[int]) -> ibis.Table:
    return ibis.memtable(pa.table({"id": pa.array(sorted(set(values)), pa.int64())}))


def _key(system: object, patient: object) -> str:
    return f"{system}\x1f{patient}"


def encode_rows(rows: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")


def decode_rows(text: str) -> pa.Table:
    return pa.ipc.open_stream(base64.b64decode(text)).read_all()


def apply_changes(
    engine: Engine,
    changes: pa.Table,
    *,
    operation_id: str,
    restore: dict[tuple[str, int], pa.Table] | None = None,
    drop_created: dict[tuple[str, int], bool] | None = None,
) -> MoveResult:
    """Move every row of the changed source patients to their new person ids.

    ``changes`` has :data:`CHANGE_SCHEMA` (one row per source patient that changes).
    ``restore``: rows to put back for person ids that (re)appear, keyed by (table,
    person id) — an unmerge passes what the undone operation removed; other ids that
    appear get a copy of their old person's row. ``drop_created``: (table, person id)
    rows an undone operation created, removed now. Run it inside a transaction.
    """
    result = MoveResult()
    if changes.num_rows == 0:
        return result
    restore = restore or {}
    target = {
        _key(s, p): n
        for s, p, n in zip(
            changes.column("source_system").to_pylist(),
            changes.column("source_patient_id").to_pylist(),
            changes.column("new_person_id").to_pylist(),
            strict=True,
        )
    }
    olds = set(changes.column("old_person_id").to_pylist())
    news = set(changes.column("new_person_id").to_pylist())
    patients = engine.table("source_patient")
    members = engine.execute(
        patients.filter(patients.person_id.isin(_ids(list(olds | news)).id)).select(
            "source_system", "source_patient_id", "person_id"
        )
    )
    held_before = set(members.column("person_id").to_pylist())
    # Where each old person's source patients go: one place → it moves whole.
    goes: dict[int, set[int]] = defaultdict(set)
    held_after: set[int] = set()
    for s, p, o in zip(
        members.column("source_system").to_pylist(),
        members.column("source_patient_id").to_pylist(),
        members.column("person_id").to_pylist(),
        strict=True,
    ):
        n = target.get(_key(s, p), o)
        held_after.add(n)
        if o in olds:
            goes[o].add(n)
    whole = {o: next(iter(ns)) for o, ns in goes.items() if len(ns) == 1}
    whole = {o: n for o, n in whole.items() if n != o}
    split = {o for o, ns in goes.items() if len(ns) > 1}

    for table in PATIENT_KEYED:
        _move_patient_rows(engine, table, olds, target, whole, result)
    existing = set(engine.list_tables())
    for table in ROW_TABLES:
        # An empty table has nothing to move (a lake of identities only, say).
        if table in existing and engine.count(engine.table(table).limit(1)):
            _move_rows(engine, table, whole, split, target, result)

    gone = sorted((olds & held_before) - held_after)
    appearing = sorted(news - held_before)
    origin = {}
    for o, n in zip(
        changes.column("old_person_id").to_pylist(),
        changes.column("new_person_id").to_pylist(),
        strict=True,
    ):
        origin.setdefault(n, o)
    for table in PERSON_KEYED:
        _person_rows(
            engine, table, gone, appearing, origin, whole, restore, drop_created or {}, result,
            operation_id,
        )  # fmt: skip
    result.persons_removed = gone
    result.persons_created = appearing
    return result


def _move_patient_rows(
    engine: Engine,
    table: str,
    olds: set[int],
    target: dict[str, int],
    whole: dict[int, int],
    result: MoveResult,
) -> None:
    if not engine.has_table(table):
        return
    t = engine.table(table)
    predicate = t.person_id.isin(_ids(list(olds)).id)
    rows = engine.execute(t.filter(predicate))
    if rows.num_rows == 0:
        return
    old = rows.column("person_id").to_pylist()
    keys = [
        _key(s, p)
        for s, p in zip(
            rows.column("source_system").to_pylist(),
            rows.column("source_patient_id").to_pylist(),
            strict=True,
        )
    ]
    new = [target.get(k, whole.get(o, o)) for k, o in zip(keys, old, strict=True)]
    _rewrite_person_ids(engine, table, predicate, rows, old, new, result)


def _rewrite_person_ids(engine: Engine, table: str, predicate: ir.BooleanValue, rows: pa.Table,
                        old: list[int], new: list[int], result: MoveResult) -> None:  # fmt: skip
    """Replace ``rows`` (selected by ``predicate``) with their new person ids, if any moved."""
    moved = sum(1 for a, b in zip(old, new, strict=True) if a != b)
    if not moved:
        return
    engine.delete_where(table, predicate)
    index = rows.column_names.index("person_id")
    engine.load_arrow(table, rows.set_column(index, "person_id", pa.array(new, pa.int64())))
    result.rows_moved[table] += moved


def _move_rows(
    engine: Engine,
    table: str,
    whole: dict[int, int],
    split: set[int],
    target: dict[str, int],
    result: MoveResult,
) -> None:
    affected = list(whole) + list(split)
    if not affected:
        return
    t = engine.table(table)
    predicate = t.person_id.isin(_ids(affected).id)
    rows = engine.execute(t.filter(predicate))
    if rows.num_rows == 0:
        return
    old = rows.column("person_id").to_pylist()
    new = [whole.get(o, o) for o in old]
    if split:
        pk = next(spec for spec in ALL_TABLES if spec.name == table).primary_key
        if len(pk) == 1:
            _attribute(engine, table, pk[0], rows, old, new, split, target)
    _rewrite_person_ids(engine, table, predicate, rows, old, new, result)


def _attribute(
    engine: Engine,
    table: str,
    pk: str,
    rows: pa.Table,
    old: list[int],
    new: list[int],
    split: set[int],
    target: dict[str, int],
) -> None:
    """Rows of splitting persons follow their own source patient (from provenance)."""
    wanted = [r for r, o in zip(rows.column(pk).to_pylist(), old, strict=True) if o in split]
    if not wanted:
        return
    records = engine.table("source_record")
    if "source_patient_id" not in records.columns:
        return  # a lake from before rows named their patient: they stay where they are
    provenance = engine.execute(
        records.filter(
            (records.cdm_table == table)
            & records.is_current
            & records.cdm_row_id.isin(_ids(wanted).id)
        ).select("cdm_row_id", "source_system", "source_patient_id")
    )
    owner = {
        r: _key(s, p)
        for r, s, p in zip(
            provenance.column("cdm_row_id").to_pylist(),
            provenance.column("source_system").to_pylist(),
            provenance.column("source_patient_id").to_pylist(),
            strict=True,
        )
        if p is not None
    }
    for i, (row_id, o) in enumerate(zip(rows.column(pk).to_pylist(), old, strict=True)):
        if o in split and row_id in owner:
            new[i] = target.get(owner[row_id], o)


def _person_rows(
    engine: Engine,
    table: str,
    gone: list[int],
    appearing: list[int],
    origin: dict[int, int],
    whole: dict[int, int],
    restore: dict[tuple[str, int], pa.Table],
    drop_created: dict[tuple[str, int], bool],
    result: MoveResult,
    operation_id: str,
) -> None:
    if not engine.has_table(table):
        return
    t = engine.table(table)
    dropping = sorted({pid for (name, pid) in drop_created if name == table})
    concerned = sorted(set(gone) | set(appearing) | set(origin.values()) | set(whole.values()))
    concerned = sorted(set(concerned) | set(dropping))
    if not concerned:
        return
    rows = engine.execute(t.filter(t.person_id.isin(_ids(concerned).id)))
    by_id: dict[int, pa.Table] = {}
    for pid in set(rows.column("person_id").to_pylist()):
        by_id[pid] = rows.filter(pc.equal(rows.column("person_id"), pid))
    remove = [pid for pid in sorted(set(gone) | set(dropping)) if pid in by_id]
    create: list[pa.Table] = []
    for pid in appearing:
        if pid in by_id:
            continue
        rows_for = restore.get((table, pid))
        if rows_for is None and table == "person" and origin.get(pid) in by_id:
            source = by_id[origin[pid]]
            rows_for = source.set_column(
                source.column_names.index("person_id"),
                "person_id",
                pa.array([pid] * source.num_rows, pa.int64()),
            )
        if rows_for is not None and rows_for.num_rows:
            create.append(rows_for)
            if (table, pid) not in restore:
                result.snapshots.append(
                    {"table_name": table, "person_id": pid, "kind": "created",
                     "rows_ipc": encode_rows(rows_for), "operation_id": operation_id}
                )  # fmt: skip
    # A person that absorbs another keeps its own death row, or takes the other's.
    if table == "death":
        for old, new in whole.items():
            if old in by_id and new not in by_id and new not in appearing:
                copy = by_id[old].set_column(
                    by_id[old].column_names.index("person_id"),
                    "person_id",
                    pa.array([new] * by_id[old].num_rows, pa.int64()),
                )
                by_id[new] = copy
                create.append(copy)
                result.snapshots.append(
                    {"table_name": table, "person_id": new, "kind": "created",
                     "rows_ipc": encode_rows(copy), "operation_id": operation_id}
                )  # fmt: skip
    for pid in remove:
        if (table, pid) not in drop_created:
            result.snapshots.append(
                {"table_name": table, "person_id": pid, "kind": "removed",
                 "rows_ipc": encode_rows(by_id[pid]), "operation_id": operation_id}
            )  # fmt: skip
    if remove:
        engine.delete_where(table, t.person_id.isin(_ids(remove).id))
    if create:
        engine.load_arrow(table, pa.concat_tables(create, promote_options="permissive"))
    result.rows_moved[table] += len(remove) + len(create)

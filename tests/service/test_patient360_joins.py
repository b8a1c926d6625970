"""Patient 360's items equal, in order, what joining in SQL gives, for every person.

The service reads a person's domain rows and current source records in one ``UNION ALL``
and joins them, and the concept names (kept per data version of ``concept``), in Python.
The reference here is the join written out in SQL, one statement per domain: each row
``LEFT JOIN concept`` and ``LEFT JOIN`` the current ``source_record`` rows of its table,
ordered by domain and row id (nulls last), then sorted by date as the service sorts.
An item lost, doubled, given the wrong record or name, or put out of order shows. The
lake has a person merged across two source systems and a concept id that ``concept``
names twice and one it does not name, so the joins' duplicates and misses are exercised.
The source patients and omics samples (rows of the same statement) must be the tables'
rows in ``ORDER BY`` order, and the timeline's ``as_dict`` must equal
``dataclasses.asdict`` of it plus the counts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.config import open_workspace
from medlake.service.empi_steward import merge_persons
from medlake.service.lake_pool import serving
from medlake.service.patient360 import DOMAINS, person_timeline

STEWARD = Principal("test-steward", Role.STEWARD)


@pytest.fixture(scope="module")
def lake(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    root = hospital_lake.copy(tmp_path_factory.mktemp("p360joins") / "ws")
    con = duckdb.connect(str(root / "lake.duckdb"))
    try:
        keep, other = con.execute(
            "select a.person_id, b.person_id from source_patient a join source_patient b "
            "on a.source_system < b.source_system and a.person_id <> b.person_id "
            "order by 1, 2 limit 1"
        ).fetchall()[0]
        # a concept named twice, and a condition whose concept the vocabulary lacks
        twice = con.execute(
            "select condition_concept_id from condition_occurrence "
            "where condition_concept_id <> 0 group by 1 order by count(*) desc limit 1"
        ).fetchall()[0][0]
        con.execute(
            "insert into concept select concept_id, concept_name || ' (again)', domain_id, "
            "vocabulary_id, concept_class_id, standard_concept, concept_code || 'x', "
            "valid_start_date, valid_end_date, invalid_reason from concept where concept_id = ?",
            [twice],
        )
        con.execute(
            "update condition_occurrence set condition_concept_id = 987654321 "
            "where condition_occurrence_id = (select min(condition_occurrence_id) "
            "from condition_occurrence where condition_concept_id <> ?)",
            [twice],
        )
        # every 16th person, those the changes above touch, and the merged one
        persons = [row[0] for row in con.execute(
            "select person_id from person where person_id % 16 = 0 or person_id in ("
            "select person_id from condition_occurrence where condition_concept_id = ? "
            "limit 6) or person_id in (select person_id from condition_occurrence "
            "where condition_concept_id = 987654321) order by 1", [twice]).fetchall()]  # fmt: skip
        persons.append(keep)
    finally:
        con.close()
    with acting_as(STEWARD):
        merge_persons(root, keep, other, actor=STEWARD.user_name)
    return root, sorted(set(persons) - {other})


def _joined(con: duckdb.DuckDBPyConnection, person_id: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for domain in DOMAINS:
        columns = set(con.table(domain.table).columns)
        row_id = f"t.{domain.row_id}" if domain.row_id else "NULL"
        values = [c for c in domain.value if c in columns]
        value_sql = "".join(f", t.{c}" for c in values)
        found = con.execute(
            f"select {row_id}, t.{domain.start}, {f't.{domain.end}' if domain.end else 'NULL'}, "
            f"t.{domain.concept}, c.concept_name, t.{domain.source_value}, "
            f"{'t.visit_occurrence_id' if 'visit_occurrence_id' in columns else 'NULL'}, "
            f"r.source_system, r.source_record_id, r.batch_id{value_sql} "
            f"from {domain.table} t left join concept c on c.concept_id = t.{domain.concept} "
            f"left join (select * from source_record where is_current) r "
            f"on r.cdm_table = '{domain.table}' and r.cdm_row_id = {row_id} "
            f"where t.person_id = ? order by 1 nulls last, r.source_record_id, c.concept_name",
            [person_id],
        ).fetchall()
        for row in found:
            concept_id = row[3]
            rows.append((
                domain.kind, row[1], row[2], concept_id, row[4] if concept_id else None, row[5],
                {c: v for c, v in zip(values, row[10:], strict=True) if v is not None},
                row[6], row[7], row[8], row[9],
            ))  # fmt: skip
    rows.sort(key=lambda r: (r[1] is None, r[1] or dt.date.min, r[0]))
    return rows


def _listed(con: duckdb.DuckDBPyConnection, table: str, columns: str, order: str,
            person_id: int) -> list[dict[str, Any]]:  # fmt: skip
    found = con.execute(
        f"select {columns} from {table} where person_id = ? order by {order}", [person_id]
    )
    names = [d[0] for d in found.description]
    return [dict(zip(names, row, strict=True)) for row in found.fetchall()]


@pytest.mark.slow
def test_every_persons_items_are_the_sql_joins_in_order(lake) -> None:
    root, persons = lake
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        expected = {p: _joined(con, p) for p in persons}
        sources = {p: _listed(con, "source_patient", "source_system, source_patient_id, "
                              "first_seen, last_seen", "source_system, source_patient_id", p)
                   for p in persons}  # fmt: skip
        omics = {p: _listed(con, "omics_sample", "sample_id, assay, file_format, "
                            "source_system, source_patient_id, collected_date",
                            "assay, sample_id", p) for p in persons}  # fmt: skip
    finally:
        con.close()
    twice = unnamed = with_omics = 0
    with acting_as(STEWARD), serving(open_workspace(root)):
        for person_id in persons:
            timeline = person_timeline(root, person_id)
            got = [
                (i.kind, i.start, i.end, i.concept_id, i.concept_name, i.source_value, i.values,
                 i.visit_occurrence_id, i.source_system, i.source_record_id, i.batch_id)
                for i in timeline.items
            ]  # fmt: skip
            # ties (one row, two records or names) are ordered by the reference's key
            assert _ties_sorted(got) == _ties_sorted(expected[person_id]), person_id
            assert timeline.source_patients == sources[person_id]
            assert timeline.omics_samples == omics[person_id]
            with_omics += bool(omics[person_id])
            twice += sum((i.concept_name or "").endswith(" (again)") for i in timeline.items)
            unnamed += sum(i.concept_id == 987654321 and i.concept_name is None
                           for i in timeline.items)  # fmt: skip
            assert timeline.as_dict() == dataclasses.asdict(timeline) | {
                "counts": timeline.counts()
            }
    assert twice > 0
    assert unnamed == 1
    assert all(sources.values())
    assert with_omics > 0


def _ties_sorted(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The items, each run of items from one row (two records or names) put in one order:
    SQL leaves the order within such a run open."""
    out: list[tuple[Any, ...]] = []
    run: list[tuple[Any, ...]] = []
    for item in items:
        if run and item[:4] + item[5:8] != run[0][:4] + run[0][5:8]:
            out += sorted(run, key=repr)
            run = []
        run.append(item)
    return out + sorted(run, key=repr)

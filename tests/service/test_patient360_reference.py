"""Patient 360 against a pandas reading of the lake, item by item, for several persons.

The service answers with one prepared statement per timeline; the reference below reads
each CDM table whole with pandas and joins the concept names and current source records
by hand, so a wrong join, a lost or doubled row, a value under the wrong item, or a note
text shown when it was not asked for shows up as a difference. Persons: the busiest, one
merged from two source patients (a linked person), one with notes, one with a death.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.audit import EventFilter
from medlake.errors import AccessDeniedError
from medlake.service import audit
from medlake.service.empi_steward import merge_persons
from medlake.service.patient360 import DOMAINS, person_timeline

STEWARD = Principal("test-steward", Role.STEWARD)


@pytest.fixture(scope="module")
def lake(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A private copy with two source patients merged; the persons the tests read."""
    root = hospital_lake.copy(tmp_path_factory.mktemp("p360") / "ws")
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        busiest = con.execute(
            "select person_id from measurement group by 1 order by count(*) desc, 1 limit 1"
        ).fetchall()[0][0]
        with_notes = con.execute(
            "select person_id from note group by 1 order by count(*) desc, 1 limit 1"
        ).fetchall()[0][0]
        dead = con.execute("select min(person_id) from death").fetchall()[0][0]
        # two persons known to different source systems, neither of the above
        keep, other = con.execute(
            "select a.person_id, b.person_id from source_patient a join source_patient b "
            "on a.source_system < b.source_system and a.person_id <> b.person_id "
            "where a.person_id not in (?, ?) and b.person_id not in (?, ?) "
            "order by 1, 2 limit 1",
            [busiest, with_notes, busiest, with_notes],
        ).fetchall()[0]
    finally:
        con.close()
    with acting_as(STEWARD):
        merge_persons(root, keep, other, actor=STEWARD.user_name)
    return root, {"busiest": busiest, "notes": with_notes, "dead": dead, "merged": keep}


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _reference(root: Path, person_id: int, with_text: bool) -> tuple[list[tuple], dict]:
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        tables = ("concept", "source_record", "person", "source_patient", "omics_sample")
        read = {t: con.table(t).df() for t in tables}
        names = dict(zip(read["concept"].concept_id, read["concept"].concept_name, strict=True))
        current = read["source_record"][read["source_record"].is_current]
        items = []
        for domain in DOMAINS:
            table = con.table(domain.table).df()
            rows = table[table.person_id == person_id]
            records = current[current.cdm_table == domain.table].set_index("cdm_row_id")
            for _, row in rows.iterrows():
                row_id = _plain(row[domain.row_id]) if domain.row_id else None
                record = records.loc[[row_id]] if row_id in records.index else None
                concept_id = _plain(row[domain.concept])
                value_columns = [c for c in domain.value if c in table.columns]
                if with_text and domain.table == "note":
                    value_columns.append("note_text")
                values = {c: _plain(row[c]) for c in value_columns if _plain(row[c]) is not None}
                for _, source in record.iterrows() if record is not None else [(None, None)]:
                    items.append((
                        domain.kind, _plain(row[domain.start]),
                        _plain(row[domain.end]) if domain.end else None, concept_id,
                        names.get(concept_id) if concept_id else None,
                        _plain(row[domain.source_value]),
                        tuple(sorted(values.items())),
                        _plain(row.get("visit_occurrence_id")),
                        *(_plain(source[c]) if source is not None else None
                          for c in ("source_system", "source_record_id", "batch_id")),
                    ))  # fmt: skip
        person = read["person"][read["person"].person_id == person_id].iloc[0]
        sources = read["source_patient"][read["source_patient"].person_id == person_id]
        omics = read["omics_sample"][read["omics_sample"].person_id == person_id]
        gender_id = _plain(person.gender_concept_id)
        header = {
            "year_of_birth": _plain(person.year_of_birth),
            "gender": names.get(gender_id) if gender_id else None,
            "source_patients": sorted(
                (r.source_system, r.source_patient_id) for r in sources.itertuples()
            ),
            "omics": sorted(r.sample_id for r in omics.itertuples()),
        }
    finally:
        con.close()
    return items, header


@pytest.mark.slow
@pytest.mark.parametrize("who", ["busiest", "notes", "dead", "merged"])
@pytest.mark.parametrize("with_text", [False, True])
def test_timeline_is_the_lake_as_pandas_reads_it(lake, who: str, with_text: bool) -> None:
    root, persons = lake
    person_id = persons[who]
    expected, header = _reference(root, person_id, with_text)
    with acting_as(STEWARD):
        timeline = person_timeline(root, person_id, with_note_text=with_text)
    got = [
        (i.kind, i.start, i.end, i.concept_id, i.concept_name, i.source_value,
         tuple(sorted(i.values.items())), i.visit_occurrence_id, i.source_system,
         i.source_record_id, i.batch_id)
        for i in timeline.items
    ]  # fmt: skip
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    keys = [(i.start is None, i.start or dt.date.min, i.kind) for i in timeline.items]
    assert keys == sorted(keys)
    assert timeline.year_of_birth == header["year_of_birth"]
    assert timeline.gender == header["gender"]
    assert (
        sorted((s["source_system"], s["source_patient_id"]) for s in timeline.source_patients)
        == header["source_patients"]
    )
    assert sorted(s["sample_id"] for s in timeline.omics_samples) == header["omics"]
    if who == "merged":
        assert len({s for s, _ in header["source_patients"]}) >= 2
    if who == "notes":
        notes = [i for i in timeline.items if i.kind == "note"]
        assert notes
        assert all(("note_text" in i.values) == with_text for i in notes)


def test_a_researcher_is_refused_the_timeline_and_the_refusal_is_audited_once(lake) -> None:
    root, persons = lake
    researcher = Principal("test-researcher", Role.RESEARCHER)
    auditor = Principal("test-auditor", Role.AUDITOR)
    with acting_as(auditor):
        before = len(audit.show_events(root, EventFilter(actor=researcher.user_name)))
    with acting_as(researcher), pytest.raises(AccessDeniedError):
        person_timeline(root, persons["notes"], with_note_text=True)
    with acting_as(auditor):
        events = audit.show_events(root, EventFilter(actor=researcher.user_name))
    assert len(events) == before + 1
    assert sum(e["outcome"] == "denied" for e in events) == before + 1

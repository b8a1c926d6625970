"""Patient 360: a person's timeline holds exactly their rows of every domain, each with
the current source record it came from, compared with a direct reading of the lake file."""

from __future__ import annotations

import duckdb
import pytest

from medlake.errors import UsageError
from medlake.service.patient360 import DOMAINS, person_timeline


@pytest.fixture(scope="module")
def busiest_person(hospital_lake) -> int:
    con = duckdb.connect(str(hospital_lake.workspace / "lake.duckdb"), read_only=True)
    try:
        return con.execute(
            "select person_id from measurement group by 1 order by count(*) desc, 1 limit 1"
        ).fetchall()[0][0]
    finally:
        con.close()


def test_timeline_has_every_row_of_the_person_with_its_source(hospital_lake, busiest_person):
    timeline = person_timeline(hospital_lake.workspace, busiest_person)
    con = duckdb.connect(str(hospital_lake.workspace / "lake.duckdb"), read_only=True)
    try:
        for domain in DOMAINS:
            expected = con.execute(
                f"select count(*) from {domain.table} where person_id = ?", [busiest_person]
            ).fetchall()[0][0]
            assert timeline.counts().get(domain.kind, 0) == expected, domain.table
        sources = dict(con.execute(
            "select cdm_row_id, source_record_id from source_record "
            "where cdm_table = 'measurement' and is_current").fetchall())  # fmt: skip
        ids = [r[0] for r in con.execute(
            "select measurement_id from measurement where person_id = ? order by 1",
            [busiest_person]).fetchall()]  # fmt: skip
    finally:
        con.close()
    measured = [i for i in timeline.items if i.kind == "measurement"]
    assert sorted(i.source_record_id for i in measured) == sorted(sources[i] for i in ids)
    assert all(i.source_system in {"lis", "emr", "his"} for i in measured)
    assert any("value_as_number" in i.values for i in measured)
    starts = [i.start for i in timeline.items if i.start is not None]
    assert starts == sorted(starts)
    assert timeline.source_patients


def test_unknown_person_is_a_clear_error(hospital_lake) -> None:
    with pytest.raises(UsageError, match="no person 1 in the lake"):
        person_timeline(hospital_lake.workspace, 1)

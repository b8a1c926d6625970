"""The engine contract, run on every backend: same calls, same answers, same errors."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import ibis
import pyarrow as pa
import pytest

from medlake.engine import Engine
from medlake.errors import EngineError

# --------------------------------------------------------------------- schema


def test_create_schema_creates_missing_tables_once(backend: Engine, clinic) -> None:
    assert backend.create_schema([clinic.person_spec]) == ["person"]
    assert backend.create_schema(clinic.specs) == ["visit"]
    assert backend.create_schema(clinic.specs) == []
    assert {"person", "visit"} <= set(backend.list_tables())
    assert backend.has_table("visit")
    assert not backend.has_table("no_such_table")


def test_existing_table_keeps_its_rows_when_schema_is_created_again(lake: Engine, clinic) -> None:
    lake.create_schema(clinic.specs)
    assert lake.count("person") == len(clinic.people)


def test_drop_table_is_quiet_about_missing_tables_unless_asked(backend: Engine, clinic) -> None:
    backend.create_schema(clinic.specs)
    backend.drop_table("visit")
    assert not backend.has_table("visit")
    backend.drop_table("visit")  # missing_ok by default
    with pytest.raises(EngineError, match="visit"):
        backend.drop_table("visit", missing_ok=False)


# --------------------------------------------------------------------- loading


def test_each_logical_type_round_trips(lake: Engine, clinic) -> None:
    result = lake.execute(lake.table("person").order_by("person_id"))
    assert result.to_pylist() == sorted(clinic.people, key=lambda row: row["person_id"])
    types = {field.name: field.type for field in result.schema}
    assert types == {
        "person_id": pa.int64(),
        "gender": pa.string(),
        "birth_date": pa.date32(),
        "weight_kg": pa.float64(),
        "smoker": pa.bool_(),
        "updated_at": pa.timestamp("us"),
    }


def test_load_matches_columns_by_name_and_fills_missing_nullable_ones(
    backend: Engine, clinic
) -> None:
    backend.create_schema(clinic.specs)
    data = pa.table(
        {
            "smoker": [True, None],
            "gender": ["F", "M"],
            "person_id": [1, 2],  # ints in any width are cast to the table's int64
        },
        schema=pa.schema({"smoker": pa.bool_(), "gender": pa.string(), "person_id": pa.int32()}),
    )
    assert backend.load_arrow("person", data) == 2
    rows = backend.execute(backend.table("person").order_by("person_id")).to_pylist()
    blank = dict.fromkeys(("birth_date", "weight_kg", "updated_at"))
    assert rows == [
        {"person_id": 1, "gender": "F", "smoker": True, **blank},
        {"person_id": 2, "gender": "M", "smoker": None, **blank},
    ]


def test_load_casts_values_that_convert_safely(backend: Engine, clinic) -> None:
    backend.create_schema(clinic.specs)
    data = pa.table(
        {
            "person_id": ["7"],
            "birth_date": ["1999-12-31"],
            "updated_at": ["2030-06-01 08:30:00.000001"],
            "weight_kg": pa.array([70], pa.int16()),
        }
    )
    backend.load_arrow("person", data)
    [row] = backend.execute(backend.table("person")).to_pylist()
    assert row["person_id"] == 7
    assert row["birth_date"] == dt.date(1999, 12, 31)
    assert row["updated_at"] == dt.datetime(2030, 6, 1, 8, 30, 0, 1)
    assert row["weight_kg"] == 70.0


@pytest.mark.parametrize(
    ("data", "column", "why"),
    [
        (pa.table({"person_id": [1], "height_cm": [180]}), "height_cm", "not in the table"),
        (pa.table({"gender": ["F"]}), "person_id", "required column 'person_id' is missing"),
        (pa.table({"person_id": pa.array([1, None], pa.int64())}), "person_id", "null"),
        (pa.table({"person_id": ["12", "twelve"]}), "person_id", "twelve"),
        (pa.table({"person_id": [1.5]}), "person_id", "truncated"),
        (pa.table({"person_id": [1], "birth_date": ["not a date"]}), "birth_date", "date"),
    ],
    ids=["unknown-column", "missing-required", "null-required", "bad-int", "fraction", "bad-date"],
)
def test_load_refuses_bad_data_naming_table_and_column(
    backend: Engine, clinic, data: pa.Table, column: str, why: str
) -> None:
    backend.create_schema(clinic.specs)
    with pytest.raises(EngineError) as caught:
        backend.load_arrow("person", data)
    message = str(caught.value)
    assert "person" in message
    assert repr(column) in message
    assert why in message
    assert backend.count("person") == 0


def test_load_streams_a_reader_and_a_generator_of_batches(backend: Engine, clinic) -> None:
    backend.create_schema(clinic.specs)
    table = clinic.visit_table()
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=40))
    assert backend.load_arrow("visit", reader) == len(clinic.visits)
    batches = (batch for batch in table.to_batches(max_chunksize=25))
    assert backend.load_arrow("visit", batches) == len(clinic.visits)
    assert backend.count("visit") == 2 * len(clinic.visits)


# --------------------------------------------------------------------- queries


def test_filter_group_and_join_give_the_same_answer_everywhere(lake: Engine, clinic) -> None:
    since = dt.date(2021, 1, 1)
    gender_of = {p["person_id"]: p["gender"] for p in clinic.people}
    expected: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for visit in clinic.visits:
        gender = gender_of[visit["person_id"]]
        if visit["visit_date"] >= since and gender is not None:
            expected[gender][0] += 1
            expected[gender][1] += visit["cost"] or 0.0

    person, visit = lake.table("person"), lake.table("visit")
    query = (
        visit.filter(visit.visit_date >= since)
        .join(person, "person_id")
        .filter(person.gender.notnull())
        .group_by("gender")
        .aggregate(visits=ibis._.count(), cost=ibis._.cost.sum().fill_null(0.0))
        .order_by("gender")
    )
    rows = lake.execute(query).to_pylist()
    assert [row["gender"] for row in rows] == sorted(expected)
    for row in rows:
        assert row["visits"] == expected[row["gender"]][0]
        assert row["cost"] == pytest.approx(expected[row["gender"]][1])


def test_scalar_and_count_return_python_values(lake: Engine, clinic) -> None:
    visit = lake.table("visit")
    assert lake.count("visit") == len(clinic.visits)
    assert lake.count(visit.filter(visit.ward == "icu")) == sum(
        v["ward"] == "icu" for v in clinic.visits
    )
    assert lake.scalar(visit.visit_date.max()) == max(v["visit_date"] for v in clinic.visits)
    assert lake.scalar(visit.filter(visit.visit_id < 0).cost.max()) is None


def test_to_batches_streams_the_whole_result_in_bounded_batches(lake: Engine, clinic) -> None:
    reader = lake.to_batches(lake.table("visit").order_by("visit_id"), batch_size=32)
    batches = list(reader)
    assert all(batch.num_rows <= 32 for batch in batches)
    ids = [i for batch in batches for i in batch.column("visit_id").to_pylist()]
    assert ids == sorted(v["visit_id"] for v in clinic.visits)


def test_a_stream_can_be_loaded_into_another_table_of_the_same_lake(lake: Engine, clinic) -> None:
    lake.run_sql("CREATE TABLE icu_visit (visit_id BIGINT NOT NULL, cost DOUBLE)")
    visit = lake.table("visit")
    icu = visit.filter(visit.ward == "icu").select("visit_id", "cost")
    loaded = lake.load_arrow("icu_visit", lake.to_batches(icu, batch_size=10))
    assert loaded == sum(v["ward"] == "icu" for v in clinic.visits)
    assert lake.count("icu_visit") == loaded


# --------------------------------------------------------------------- SQL and deletes


def test_run_sql_transpiles_and_returns_query_rows(lake: Engine, clinic) -> None:
    # DuckDB spellings (TEXT, ::, BIGINT) written once, run on every backend.
    lake.run_sql("CREATE TABLE IF NOT EXISTS note (note_id BIGINT, body TEXT)")
    assert lake.has_table("note")
    result = lake.run_sql("SELECT COUNT(*)::BIGINT AS n FROM visit WHERE ward = 'icu'")
    assert result is not None
    assert result.column("n").to_pylist() == [sum(v["ward"] == "icu" for v in clinic.visits)]


def test_engine_error_carries_the_statement_that_failed(lake: Engine) -> None:
    with pytest.raises(EngineError) as caught:
        lake.run_sql("SELECT no_such_column FROM visit")
    assert caught.value.statement is not None
    assert "no_such_column" in caught.value.statement
    assert caught.value.engine == lake.name


def test_delete_where_removes_matching_rows_and_keeps_null_ones(lake: Engine, clinic) -> None:
    visit = lake.table("visit")
    doomed = sum(v["cost"] is not None and v["cost"] > 2500 for v in clinic.visits)
    assert lake.delete_where("visit", visit.cost > 2500) == doomed
    assert lake.count("visit") == len(clinic.visits) - doomed
    assert lake.count(visit.filter(visit.cost.isnull())) == sum(
        v["cost"] is None for v in clinic.visits
    )
    assert lake.delete_where("visit", visit.visit_id < 0) == 0


def test_delete_where_accepts_a_predicate_on_in_memory_keys(lake: Engine, clinic) -> None:
    keys = [p["person_id"] for p in clinic.people[:5]]
    visit = lake.table("visit")
    gone = ibis.memtable({"person_id": keys})
    expected = sum(v["person_id"] in keys for v in clinic.visits)
    assert lake.delete_where("visit", visit.person_id.isin(gone.person_id)) == expected
    assert lake.count(visit.filter(visit.person_id.isin(keys))) == 0


# --------------------------------------------------------------------- the real schema


def test_the_whole_lake_schema_is_created_once_on_every_engine(backend: Engine) -> None:
    from medlake.schema import ALL_TABLES

    names = [spec.name for spec in ALL_TABLES]
    assert backend.create_schema(ALL_TABLES) == names
    assert backend.create_schema(ALL_TABLES) == []
    assert set(names) <= set(backend.list_tables())
    for spec in ALL_TABLES:
        columns = backend.table(spec.name).schema()
        assert list(columns.names) == list(spec.column_names), spec.name
        for column in spec.columns:
            # Same Arrow type everywhere (DuckDB spells timestamps with their scale).
            stored = columns[column.name].to_pyarrow()
            assert stored == column.ibis_type.to_pyarrow(), f"{spec.name}.{column.name}"


def test_a_failing_query_reports_its_compiled_sql(lake: Engine) -> None:
    visit = lake.table("visit")
    bad = visit.filter(visit.ward.notnull()).select(ward_number=visit.ward.cast("int64"))
    with pytest.raises(EngineError) as caught:
        lake.execute(bad)
    assert caught.value.statement is not None
    assert "CAST" in caught.value.statement.upper()
    assert "ward" in caught.value.statement

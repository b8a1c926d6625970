"""observation_period: derived by ingest from each person's records, checked against pandas.

The reference below is written independently of :mod:`medlake.ingest.observation_period`:
every clinical event table read whole into pandas, each person's earliest start and
latest end (a record's start where it has no end, never before its start).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from medlake.config import open_workspace
from medlake.engine import Engine, open_workspace_engine
from medlake.ingest.observation_period import refresh_observation_periods

# table -> (start column, end column or None), as OMOP names them.
EVENTS = {
    "visit_occurrence": ("visit_start_date", "visit_end_date"),
    "visit_detail": ("visit_detail_start_date", "visit_detail_end_date"),
    "condition_occurrence": ("condition_start_date", "condition_end_date"),
    "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
    "procedure_occurrence": ("procedure_date", "procedure_end_date"),
    "device_exposure": ("device_exposure_start_date", "device_exposure_end_date"),
    "measurement": ("measurement_date", None),
    "observation": ("observation_date", None),
    "specimen": ("specimen_date", None),
    "note": ("note_date", None),
    "death": ("death_date", None),
}
COLUMNS = [
    "observation_period_id",
    "person_id",
    "observation_period_start_date",
    "observation_period_end_date",
    "period_type_concept_id",
]


def expected_periods(engine: Engine) -> pd.DataFrame:
    spans = []
    for table, (start, end) in EVENTS.items():
        frame = engine.execute(engine.table(table)).to_pandas()
        first = pd.to_datetime(frame[start])
        last = first if end is None else pd.to_datetime(frame[end]).fillna(first)
        last = last.where(last >= first, first)
        spans.append(pd.DataFrame({"person_id": frame.person_id, "start": first, "end": last}))
    both = pd.concat(spans).dropna(subset=["start"])
    periods = both.groupby("person_id").agg(start=("start", "min"), end=("end", "max"))
    periods = periods.reset_index()
    return pd.DataFrame(
        {
            "observation_period_id": periods.person_id.astype("int64"),
            "person_id": periods.person_id.astype("int64"),
            "observation_period_start_date": periods.start.dt.date,
            "observation_period_end_date": periods.end.dt.date,
            "period_type_concept_id": 32882,  # Standard algorithm from EHR
        }
    )


def lake_periods(engine: Engine) -> pd.DataFrame:
    frame = engine.execute(engine.table("observation_period")).to_pandas()[COLUMNS]
    return frame.astype({"observation_period_id": "int64", "person_id": "int64",
                         "period_type_concept_id": "int64"})  # fmt: skip


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["person_id"]
    pd.testing.assert_frame_equal(
        a.sort_values(key).reset_index(drop=True)[COLUMNS],
        b.sort_values(key).reset_index(drop=True)[COLUMNS],
        check_dtype=False,
    )


def engine_of(root: Path) -> Any:
    return open_workspace_engine(open_workspace(root))


def test_ingest_fills_observation_period_as_pandas_derives_it(hospital_lake: Any) -> None:
    with engine_of(hospital_lake.workspace) as engine:
        got = lake_periods(engine)
        want = expected_periods(engine)
        persons = engine.count("person")
    assert len(got) > 0.9 * persons  # nearly everyone has a dated record
    same(got, want)


def test_refresh_recomputes_only_the_given_persons(hospital_lake: Any, tmp_path: Path) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    with engine_of(root) as engine:
        periods = lake_periods(engine)
        changed, untouched = (int(p) for p in periods.person_id.iloc[:2])
        # `changed` loses every measurement; `untouched` gets a wrong period by hand.
        m = engine.table("measurement")
        engine.delete_where("measurement", m.person_id == changed)
        op = engine.table("observation_period")
        engine.delete_where("observation_period", op.person_id == untouched)
        wrong = dt.date(1900, 1, 1)
        engine.load_arrow(
            "observation_period",
            pa.table({"observation_period_id": [untouched], "person_id": [untouched],
                      "observation_period_start_date": [wrong],
                      "observation_period_end_date": [wrong],
                      "period_type_concept_id": [32882]}),
        )  # fmt: skip
        assert refresh_observation_periods(engine, [changed]) == 1
        got = lake_periods(engine).set_index("person_id")
        want = expected_periods(engine).set_index("person_id")
        assert got.loc[changed].equals(want.loc[changed])
        assert got.loc[untouched, "observation_period_start_date"] == wrong
        refresh_observation_periods(engine)  # everyone
        same(lake_periods(engine), expected_periods(engine))


def test_a_person_without_records_has_no_period(hospital_lake: Any, tmp_path: Path) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    with engine_of(root) as engine:
        person = int(lake_periods(engine).person_id.iloc[0])
        for table in EVENTS:
            t = engine.table(table)
            engine.delete_where(table, t.person_id == person)
        assert refresh_observation_periods(engine, [person]) == 0
        op = engine.table("observation_period")
        assert engine.count(op.filter(op.person_id == person)) == 0
        assert refresh_observation_periods(engine, []) == 0

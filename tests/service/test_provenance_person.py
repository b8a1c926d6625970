"""``source_record.person_id``: every provenance row names the person of its CDM row.

Written by ingest for every row, kept when the EMPI links persons, filled in by the
schema upgrade for lakes loaded before the column existed. Checked against the CDM rows
themselves, read with pandas: for every current provenance row of a table keyed by one
column, the CDM row with that key has that person.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.schema import ALL_TABLES
from medlake.service import empi
from medlake.service.workspace import upgrade_schema

STEWARD = Principal("test-steward", Role.STEWARD)
KEYED = {
    spec.name: spec.primary_key[0]
    for spec in ALL_TABLES
    if spec.group == "cdm"
    and "person_id" in spec.column_names
    and len(spec.primary_key) == 1
    and spec.primary_key[0] != "person_id"
}


def _read(root: Path, sql: str) -> pd.DataFrame:
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def _mismatches(root: Path) -> tuple[int, list[str]]:
    """(provenance rows checked, descriptions of the rows whose person is wrong)."""
    records = _read(root, "select * from source_record")
    checked, wrong = 0, []
    for table, key in KEYED.items():
        rows = _read(root, f'select "{key}" as row_id, person_id from "{table}"')
        mine = records[records.cdm_table == table].merge(
            rows, left_on="cdm_row_id", right_on="row_id", suffixes=("", "_cdm")
        )
        current = mine[mine.is_current]
        checked += len(current)
        bad = current[current.person_id != current.person_id_cdm]
        wrong += [f"{table} {r.cdm_row_id}: {r.person_id} != {r.person_id_cdm}"
                  for r in bad.itertuples()]  # fmt: skip
    for table in ("person", "death"):
        rows = _read(root, f"select person_id as row_id from {table}")
        mine = records[(records.cdm_table == table) & records.is_current]
        mine = mine[mine.cdm_row_id.isin(rows.row_id)]
        # a person row's provenance: its own patient's person, which the row is
        checked += len(mine)
        wrong += [f"{table} {r.cdm_row_id}: {r.person_id}"
                  for r in mine.itertuples() if pd.isna(r.person_id)]  # fmt: skip
    return checked, wrong


def test_ingest_writes_the_person_of_every_row(hospital_lake) -> None:
    checked, wrong = _mismatches(hospital_lake.workspace)
    assert checked > 10_000
    assert wrong == []
    nulls = _read(hospital_lake.workspace,
                  "select count(*) as n from source_record where person_id is null")  # fmt: skip
    assert nulls.n[0] == 0


@pytest.mark.slow
def test_the_empi_moves_provenance_with_its_rows(hospital_lake, tmp_path: Path) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    before = _read(root, "select count(distinct person_id) as n from source_record").n[0]
    with acting_as(STEWARD):
        outcome = empi.link_workspace(root)
    assert outcome.rows_moved.get("source_record", 0) > 0
    after = _read(root, "select count(distinct person_id) as n from source_record").n[0]
    assert after < before  # persons were merged, and their provenance with them
    checked, wrong = _mismatches(root)
    assert checked > 10_000
    assert wrong == []


def test_the_upgrade_fills_the_person_of_rows_loaded_before(hospital_lake, tmp_path: Path) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    truth = _read(root, "select cdm_table, cdm_row_id, source_system, source_record_id, "
                        "source_version, person_id from source_record")  # fmt: skip
    con = duckdb.connect(str(root / "lake.duckdb"))
    try:  # the lake as schema v4 left it: no person on provenance
        con.execute("alter table source_record drop column person_id")
        con.execute("delete from schema_version where version >= 5")
    finally:
        con.close()
    with acting_as(STEWARD):
        before, after, applied = upgrade_schema(root)
    assert (before, after) == (4, 5)
    assert [m.version for m in applied] == [5]
    filled = _read(root, "select cdm_table, cdm_row_id, source_system, source_record_id, "
                         "source_version, person_id from source_record")  # fmt: skip
    keys = ["cdm_table", "source_system", "source_record_id", "source_version"]
    merged = truth.merge(filled, on=keys, suffixes=("", "_filled"))
    assert len(merged) == len(truth) == len(filled)
    assert merged.person_id_filled.isna().sum() == 0
    assert (merged.person_id == merged.person_id_filled).all()


@pytest.mark.parametrize("files", [["day_one", "day_two"], ["both"]])
def test_a_source_merge_re_points_the_provenance_of_the_merged_patients_rows(
    tmp_path: Path, files: list[str]
) -> None:
    """HL7 A40 (P2 merged into P1), in a later file or in the same file (the same chunk:
    provenance not yet loaded when the merge re-points the rows)."""
    from tests.service.test_ingest_versions import day_one, day_two

    from medlake.ingest.ids import initial_person_id
    from medlake.service.ingest import ingest_paths
    from medlake.service.workspace import init_workspace

    root = init_workspace(tmp_path / "ws").root
    lis = tmp_path / "lis"
    lis.mkdir()
    texts = {"day_one": day_one(), "day_two": day_two(), "both": day_one() + day_two()}
    for number, name in enumerate(files):
        (lis / f"2024010{number + 1}.hl7").write_text(texts[name], encoding="utf-8")
    assert ingest_paths(root, [lis]).failed == []
    survivor = initial_person_id("lis", "P1")
    records = _read(root, "select cdm_table, person_id from source_record where is_current")
    assert set(records.cdm_table) >= {"measurement", "person", "source_patient"}
    assert set(records.person_id) == {survivor}
    checked, wrong = _mismatches(root)
    assert checked >= 2
    assert wrong == []


def test_the_fill_in_many_slices_gives_the_same_persons(hospital_lake, tmp_path: Path) -> None:
    from medlake.config import open_workspace
    from medlake.service.lake_layout import fill_provenance_persons
    from medlake.service.workspace import open_lake

    root = hospital_lake.copy(tmp_path / "ws")
    keys = "cdm_table, source_system, source_record_id, source_version"
    truth = _read(root, f"select {keys}, person_id from source_record")
    con = duckdb.connect(str(root / "lake.duckdb"))
    try:
        con.execute("update source_record set person_id = null")
    finally:
        con.close()
    with open_lake(open_workspace(root)) as engine:
        fill_provenance_persons(engine, slice_rows=997)  # dozens of slices per table
    filled = _read(root, f"select {keys}, person_id from source_record")
    merged = truth.merge(filled, on=keys.split(", "), suffixes=("", "_filled"))
    assert len(merged) == len(truth) == len(filled)
    assert (merged.person_id == merged.person_id_filled).all()

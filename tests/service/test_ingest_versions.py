"""Versions and merges end to end: HL7 v2 day files through ``ingest_paths``."""

from __future__ import annotations

from pathlib import Path

import pytest

from medlake.config import open_workspace
from medlake.ingest.batches import IngestBatch
from medlake.ingest.ids import initial_person_id
from medlake.ingest.writer import WriteSummary
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import init_workspace, open_lake

MSH = "MSH|^~\\&|LIS|LAB|HIS|HOSP|{stamp}||{kind}|{control}|P|2.5|||||CHN|UNICODE UTF-8"
ORDER = "OBR|1|PL1|F1|XCG^血常规^99LIS|||20240101070000|||||||20240101070000|BLD^全血^HL70487"


def msg(kind: str, control: str, stamp: str, *segments: str) -> str:
    return "\r".join([MSH.format(kind=kind, control=control, stamp=stamp), *segments]) + "\r\n"


def day_one() -> str:
    return (
        msg("ADT^A01^ADT_A01", "C1", "20240101070000", "PID|1||P1^^^LIS^PI||WANG^FANG||19700101|F")
        + msg("ADT^A01^ADT_A01", "C2", "20240101070100", "PID|1||P2^^^LIS^PI||WANG^F||19700101|F")
        + msg(
            "ORU^R01^ORU_R01",
            "C3",
            "20240101080000",
            "PID|1||P2^^^LIS^PI||WANG^F",
            ORDER,
            "OBX|1|NM|718-7^Hb^LN||120|g/L^^UCUM|115-175|N|||F",
        )
    )


def day_two() -> str:
    return (
        msg(
            "ADT^A40^ADT_A39",
            "C4",
            "20240102070000",
            "EVN|A40|20240102",
            "PID|1||P1^^^LIS^PI||WANG^FANG",
            "MRG|P2^^^LIS^PI",
        )
        + msg(
            "ADT^A08^ADT_A01",
            "C5",
            "20240102080000",
            "PID|1||P1^^^LIS^PI||WANG^FANG||19700101|F|||新路2号^^北京市^北京市^100080^CHN^H",
        )
        + msg(
            "ORU^R01^ORU_R01",
            "C6",
            "20240102090000",
            "PID|1||P2^^^LIS^PI||WANG^F",
            ORDER,
            "OBX|1|NM|718-7^Hb^LN||130|g/L^^UCUM|115-175|N|||C",
        )
    )


@pytest.fixture
def lake_after_two_days(tmp_path: Path) -> Path:
    root = init_workspace(tmp_path / "ws").root
    lis = tmp_path / "lis"
    lis.mkdir()
    (lis / "20240101.hl7").write_text(day_one(), encoding="utf-8")
    (lis / "20240102.hl7").write_text(day_two(), encoding="utf-8")
    report = ingest_paths(root, [lis])
    assert report.failed == []
    return root


def rows(root: Path, table: str) -> list[dict[str, object]]:
    with open_lake(open_workspace(root)) as engine:
        return engine.execute(engine.table(table)).to_pylist()


def test_a40_merge_moves_the_merged_patients_rows_to_the_survivor(
    lake_after_two_days: Path,
) -> None:
    survivor = initial_person_id("lis", "P1")
    assert {r["person_id"] for r in rows(lake_after_two_days, "measurement")} == {survivor}
    assert [r["person_id"] for r in rows(lake_after_two_days, "person")] == [survivor]
    links = {
        r["source_patient_id"]: r["person_id"] for r in rows(lake_after_two_days, "source_patient")
    }
    assert links == {"P1": survivor, "P2": survivor}
    merges = [
        r for r in rows(lake_after_two_days, "source_record") if r["cdm_table"] == "source_patient"
    ]
    assert [(m["source_record_id"], m["cdm_row_id"]) for m in merges] == [("P2", survivor)]


def test_corrected_result_replaces_and_a08_adds_an_identifier_version(
    lake_after_two_days: Path,
) -> None:
    (measurement,) = rows(lake_after_two_days, "measurement")
    assert measurement["value_as_number"] == 130
    versions = [
        r for r in rows(lake_after_two_days, "pii_person") if r["source_patient_id"] == "P1"
    ]
    assert len(versions) == 2
    assert sorted(str(r["address"]) for r in versions) == ["None", "北京市新路2号"]


def test_ingesting_the_days_again_changes_nothing(
    lake_after_two_days: Path, tmp_path: Path
) -> None:
    before = {
        t: sorted(map(repr, rows(lake_after_two_days, t)))
        for t in ("measurement", "person", "pii_person", "source_record", "source_patient")
    }
    report = ingest_paths(lake_after_two_days, [tmp_path / "lis"])
    assert {r.status for r in report.files} == {"unchanged"}
    after = {t: sorted(map(repr, rows(lake_after_two_days, t))) for t in before}
    assert after == before


def test_after_batch_hooks_run_once_per_loaded_batch(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    day = tmp_path / "lis" / "20240101.hl7"
    day.parent.mkdir()
    day.write_text(day_one(), encoding="utf-8")
    seen: list[tuple[str, int]] = []

    def hook(engine: object, batch: IngestBatch, summary: WriteSummary) -> None:
        seen.append((batch.original_name or "", summary.loaded))

    ingest_paths(root, [day], after_batch=[hook])
    ingest_paths(root, [day], after_batch=[hook])  # unchanged: no hook
    assert len(seen) == 1
    assert seen[0][0] == "20240101.hl7"
    assert seen[0][1] > 0


def test_same_content_under_two_names_in_one_run_is_one_batch(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    lis = tmp_path / "lis"
    lis.mkdir()
    (lis / "20240101.hl7").write_text(day_one(), encoding="utf-8")
    (lis / "copy-of-20240101.hl7").write_text(day_one(), encoding="utf-8")
    report = ingest_paths(root, [lis])
    assert sorted(r.status for r in report.files) == ["loaded", "unchanged"]
    assert len(rows(root, "ingest_batch")) == 1

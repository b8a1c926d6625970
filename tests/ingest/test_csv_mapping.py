"""Mapped CSV exports: the synthetic HIS through its shipped mapping, and other layouts."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.errors import InputError, UsageError
from medlake.ingest.csv_mapping import CsvMappingReader
from medlake.ingest.staging import ParsedChunk, SourceContext, record_hash
from medlake.synth import generate_hospital
from medlake.synth.hospital import HIS_MAPPING

HIS_FILES = ("his/patients.csv", "his/visits.csv", "his/diagnoses.csv", "his/prescriptions.csv")
QUARANTINED_KINDS = {"bad_date", "missing_required_field"}
RECEIVED = dt.datetime(2024, 5, 1, 8, 0)


def read_file(path: Path, name: str, mapping: Path | object, **kw: object) -> list[ParsedChunk]:
    context = SourceContext("his", "batch-1", path, name, RECEIVED, options={"mapping": mapping})
    return list(CsvMappingReader(**kw).read(context))  # type: ignore[arg-type]


def staged(chunks: list[ParsedChunk]) -> pa.Table:
    tables = [t for c in chunks for t in c.patients]
    tables += [t for c in chunks for ts in c.tables.values() for t in ts]
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospital")
    generate_hospital(root, 400, 4, workers=1)
    return root


@pytest.fixture(scope="module")
def his(hospital: Path) -> dict[str, list[ParsedChunk]]:
    mapping = hospital / HIS_MAPPING
    return {name: read_file(hospital / name, name, mapping) for name in HIS_FILES}


@pytest.fixture(scope="module")
def defects(hospital: Path) -> list[dict[str, str]]:
    with (hospital / "truth" / "defects.csv").open(encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["system"] == "HIS"]


def test_the_hospital_ships_its_his_mapping_file(hospital: Path) -> None:
    text = (hospital / HIS_MAPPING).read_text(encoding="utf-8")
    assert 'target = "drug_exposure"' in text
    assert "medlake-mapping.toml" in (hospital / "README.txt").read_text(encoding="utf-8")


def test_every_his_row_is_staged_or_quarantined(
    hospital: Path, his: dict[str, list[ParsedChunk]]
) -> None:
    manifest = json.loads((hospital / "truth" / "manifest.json").read_text())
    for name, chunks in his.items():
        read = sum(c.records_read for c in chunks)
        quarantined = sum(len(c.quarantine) for c in chunks)
        assert read == manifest["files"][name], name
        assert staged(chunks).num_rows + quarantined == read, name


def test_planted_bad_dates_and_missing_fields_are_quarantined_at_their_line(
    his: dict[str, list[ParsedChunk]], defects: list[dict[str, str]]
) -> None:
    planted = {(d["file"], int(d["line"])): d for d in defects if d["kind"] in QUARANTINED_KINDS}
    assert {d["kind"] for d in planted.values()} == QUARANTINED_KINDS  # the fixture has both
    quarantined = {}
    for name, chunks in his.items():
        for entry in (q for c in chunks for q in c.quarantine):
            file, line = entry.location.rsplit(":", 1)
            assert file == name
            quarantined[(file, int(line))] = entry
    assert set(quarantined) == set(planted)
    for key, defect in planted.items():
        entry = quarantined[key]
        assert entry.field == defect["field"]
        assert defect["record_id"] in entry.raw_payload
        if defect["kind"] == "bad_date":
            assert "unparseable date" in entry.reason
            assert defect["detail"] in entry.reason


def test_other_planted_defects_are_staged_for_the_writer(
    his: dict[str, list[ParsedChunk]], defects: list[dict[str, str]]
) -> None:
    codes = set()
    for name in ("his/diagnoses.csv", "his/prescriptions.csv"):
        table = staged(his[name])
        column = "condition_source_value" if "diag" in name else "drug_source_value"
        codes |= set(table.column(column).to_pylist())
    unknown = {d["detail"] for d in defects if d["kind"] == "unknown_code"}
    assert unknown
    assert unknown <= codes


def test_gb18030_prescriptions_keep_their_chinese_values(
    his: dict[str, list[ParsedChunk]],
) -> None:
    table = staged(his["his/prescriptions.csv"])
    assert set(table.column("route_source_value").to_pylist()) >= {"口服", "静脉滴注"}
    sig = table.column("sig").to_pylist()
    assert any("氯沙坦" in s for s in sig)
    oral = table.filter(pa.compute.equal(table.column("route_source_value"), "口服"))
    assert set(oral.column("route_concept_id").to_pylist()) == {4132161}
    assert set(table.column("_drug_vocabulary").to_pylist()) == {"ATC"}
    first = table.slice(0, 1).to_pylist()[0]
    assert first["drug_exposure_end_date"] == first["drug_exposure_start_date"] + dt.timedelta(
        days=first["days_supply"] - 1
    )


def test_staged_rows_carry_provenance_and_no_ids(
    hospital: Path, his: dict[str, list[ParsedChunk]]
) -> None:
    visits = staged(his["his/visits.csv"])
    for column in ("visit_occurrence_id", "person_id"):
        assert column not in visits.column_names
    row = visits.slice(0, 1).to_pylist()[0]
    raw = (hospital / "his/visits.csv").read_bytes().decode().split("\r\n")[1]
    assert row["_record_hash"] == record_hash(raw)
    assert row["_source_record_id"] == raw.split(",")[0]
    assert row["_source_version"] == int(RECEIVED.replace(tzinfo=dt.UTC).timestamp() * 1000)
    kinds = Counter(visits.column("visit_concept_id").to_pylist())
    assert set(kinds) <= {9201, 9202, 9203}
    assert kinds[9202] > 0
    diagnoses = staged(his["his/diagnoses.csv"])
    assert diagnoses.column("_source_record_id")[0].as_py().count("/") == 1
    assert diagnoses.column("_source_visit_id")[0].as_py().startswith(("MZ", "ZY", "JZ"))
    patients = staged(his["his/patients.csv"])
    assert {"name_hanzi", "resident_id", "gender_concept_id"} <= set(patients.column_names)


def test_reading_twice_gives_identical_rows(
    hospital: Path, his: dict[str, list[ParsedChunk]]
) -> None:
    name = "his/diagnoses.csv"
    again = read_file(hospital / name, name, hospital / HIS_MAPPING, chunk_rows=500)
    assert len(again) > 1  # chunked
    assert staged(again).equals(staged(his[name]))


PHARMACY_MAPPING = """
source_system = "pharmacy"
[[file]]
match = "*处方*.txt"
target = "drug_exposure"
encoding = "gbk"
delimiter = ";"
header_row = 2
record_id = "{单号}-{序号}"
patient_id = "病人号"
visit_id = "门诊号"
visit_system = "his"
version = { column = "更新时间", format = "%Y%m%d%H%M%S" }
[file.date_formats]
"日期" = "%Y%m%d"
[file.columns]
drug_source_value = { column = "药品编码", vocabulary = "ATC" }
drug_exposure_start_date = "日期"
drug_exposure_end_date = "日期"
quantity = "数量"
route_source_value = "途径"
route_concept_id = { column = "途径", map = { "口服" = 4132161 } }
drug_type_concept_id = 32817
"""

PHARMACY_ROWS = [
    "导出: 门诊药房 2024",
    "单号;序号;病人号;门诊号;日期;药品编码;数量;途径;更新时间",
    "A1;1;P1;V1;20240105;C09CA01;14;口服;20240105101500",
    "A1;2;P1;V1;20231345;A10BA02;28;口服;20240105101500",
    "A2;1;P2;V2;20240106;A10BA02;2.5;口服;20240106090000",
    "A3;1;P3;V3;20240107;B01AC06;30;静注;20240107090000",
    "A4;1;;V4;20240107;B01AC06;30;口服;20240107090000",
    "",
    "A5;1;P5;V5;20240108;N02BE01;10;口服;20240108090000",
]


def test_a_gbk_semicolon_export_maps_through_its_own_mapping(tmp_path: Path) -> None:
    mapping = tmp_path / "pharmacy.toml"
    mapping.write_text(PHARMACY_MAPPING, encoding="utf-8")
    export = tmp_path / "门诊处方.txt"
    export.write_bytes("\r\n".join(PHARMACY_ROWS).encode("gbk"))
    chunks = read_file(export, "门诊处方.txt", mapping)
    rows = staged(chunks).to_pylist()
    assert [r["_source_record_id"] for r in rows] == ["A1-1", "A2-1", "A5-1"]
    assert rows[0]["drug_exposure_start_date"] == dt.date(2024, 1, 5)
    updated = dt.datetime(2024, 1, 5, 10, 15, tzinfo=dt.UTC)
    assert rows[0]["_source_version"] == int(updated.timestamp() * 1000)
    assert rows[0]["_source_visit_system"] == "his"
    assert rows[1]["quantity"] == 2.5
    assert rows[0]["_drug_vocabulary"] == "ATC"
    assert rows[0]["route_concept_id"] == 4132161
    problems = {q.location: (q.field, q.reason) for c in chunks for q in c.quarantine}
    assert problems["门诊处方.txt:4"][0] == "日期"
    assert "20231345" in problems["门诊处方.txt:4"][1]
    assert problems["门诊处方.txt:6"][0] == "途径"
    assert "静注" in problems["门诊处方.txt:6"][1]
    assert problems["门诊处方.txt:7"][0] == "病人号"
    assert len(problems) == 3
    assert sum(c.records_read for c in chunks) == 6  # the blank line is no record


def test_a_required_column_missing_from_the_header_names_file_and_column(tmp_path: Path) -> None:
    mapping = tmp_path / "pharmacy.toml"
    mapping.write_text(PHARMACY_MAPPING, encoding="utf-8")
    export = tmp_path / "处方.txt"
    rows = [PHARMACY_ROWS[0], PHARMACY_ROWS[1].replace("日期", "开方日期"), PHARMACY_ROWS[2]]
    export.write_bytes("\n".join(rows).encode("gbk"))
    with pytest.raises(InputError, match=r"处方\.txt.*'日期'"):
        read_file(export, "处方.txt", mapping)


def test_a_file_matching_no_entry_names_the_file_and_the_mapping(hospital: Path) -> None:
    with pytest.raises(InputError, match=r"labs\.csv.*medlake-mapping\.toml"):
        read_file(hospital / "his/visits.csv", "labs.csv", hospital / HIS_MAPPING)
    with pytest.raises(UsageError, match="--mapping"):
        CsvMappingReader().read(
            SourceContext("his", "b", hospital / "his/visits.csv", "visits.csv", RECEIVED)
        ).__next__()


def test_bytes_invalid_in_the_encoding_quarantine_only_their_row(tmp_path: Path) -> None:
    mapping = tmp_path / "pharmacy.toml"
    mapping.write_text(PHARMACY_MAPPING, encoding="utf-8")
    export = tmp_path / "处方.txt"
    lines = [row.encode("gbk") for row in PHARMACY_ROWS[:3]]
    lines.append(b"A9;1;P9;V9;20240105;C09CA01;14;\xff\xfe;20240105101500")
    export.write_bytes(b"\n".join(lines))
    chunks = read_file(export, "处方.txt", mapping)
    assert staged(chunks).num_rows == 1
    [bad] = [q for c in chunks for q in c.quarantine]
    assert bad.location == "处方.txt:4"
    assert "gbk" in bad.reason
    assert "\\xff" in bad.raw_payload


def test_sniff_knows_delimited_text_from_other_formats(hospital: Path) -> None:
    reader = CsvMappingReader()
    for name in HIS_FILES:
        path = hospital / name
        assert reader.sniff(path, path.read_bytes()[:1024]), name
    for head in (
        b'{"resourceType": "Patient"}\n',
        b"MSH|^~\\&|LIS\r",
        b"\x0bMSH|^~",
        b"",
        b"##fileformat=VCFv4.2\n",
        b"PK\x03\x04zip",
        b"just one line of words",
    ):
        assert not reader.sniff(Path("x"), head), head

"""The HL7 v2 reader on the synthetic hospital's LIS and on hand-written messages."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.errors import InputError
from medlake.ingest.hl7v2 import Hl7v2Reader
from medlake.ingest.hl7v2_message import parse_message, split_messages
from medlake.ingest.mllp import frame
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.synth import generate_hospital

RECEIVED = dt.datetime(2026, 1, 1)


def context(path: Path, name: str | None = None, **options: object) -> SourceContext:
    return SourceContext("lis", "batch-1", path, name or path.name, RECEIVED, options=options)


@dataclass
class Read:
    """Everything the reader gave for a set of files."""

    chunks: list[ParsedChunk] = field(default_factory=list)

    def table(self, name: str) -> pa.Table:
        parts = [t for c in self.chunks for t in c.tables.get(name, [])]
        return pa.concat_tables(parts) if parts else pa.table({})

    def patients(self) -> pa.Table:
        return pa.concat_tables([t for c in self.chunks for t in c.patients])

    @property
    def quarantine(self) -> list:
        return [q for c in self.chunks for q in c.quarantine]

    @property
    def messages(self) -> int:
        return sum(c.records_read for c in self.chunks)


def read_file(path: Path, name: str | None = None, **options: object) -> Read:
    return Read(list(Hl7v2Reader().read(context(path, name, **options))))


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital") / "h"
    generate_hospital(out, 300, seed=11, workers=1)
    return out


@pytest.fixture(scope="module")
def lis_files(hospital: Path) -> list[Path]:
    return sorted(p for p in (hospital / "lis").rglob("*") if p.suffix in (".hl7", ".mllp"))


@pytest.fixture(scope="module")
def lis(hospital: Path, lis_files: list[Path]) -> dict[str, Read]:
    return {
        str(p.relative_to(hospital)): read_file(p, str(p.relative_to(hospital))) for p in lis_files
    }


def _obx_per_message(path: Path) -> list[int]:
    return [m.data.count(b"\rOBX|") for m in split_messages(path.read_bytes())]


def test_every_lis_result_is_staged_or_quarantined(
    hospital: Path, lis_files: list[Path], lis: dict[str, Read]
) -> None:
    assert {p.suffix for p in lis_files} == {".hl7", ".mllp"}
    for path in lis_files:
        name = str(path.relative_to(hospital))
        read = lis[name]
        counts = _obx_per_message(path)
        assert read.messages == len(counts) == path.read_bytes().count(b"MSH|"), name
        whole = {
            int(q.location.rsplit(" ", 1)[1])
            for q in read.quarantine
            if not (q.field or "").startswith("OBX[")
        }
        single = sum(1 for q in read.quarantine if (q.field or "").startswith("OBX["))
        in_quarantine = sum(counts[n - 1] for n in whole) + single
        assert read.table("measurement").num_rows + in_quarantine == sum(counts), name


def _defects(hospital: Path) -> list[dict[str, str]]:
    with (hospital / "truth" / "defects.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if row["system"] == "LIS"]


def test_planted_bad_dates_are_quarantined_with_field_and_location(
    hospital: Path, lis: dict[str, Read]
) -> None:
    bad = [d for d in _defects(hospital) if d["kind"] == "bad_date"]
    assert bad
    for defect in bad:
        entries = [
            q
            for q in lis[defect["file"]].quarantine
            if q.location == f"{defect['file']}:message {defect['line']}"
        ]
        assert entries, defect
        assert entries[0].field == defect["field"] == "OBR-7"
        assert defect["detail"] in entries[0].reason
        assert "byte offset" in entries[0].reason
        assert entries[0].raw_payload.startswith("MSH|")


def test_only_planted_defects_are_quarantined(hospital: Path, lis: dict[str, Read]) -> None:
    planted = {(d["file"], d["line"]) for d in _defects(hospital) if d["kind"] == "bad_date"}
    found = {(name, q.location.rsplit(" ", 1)[1]) for name, r in lis.items() for q in r.quarantine}
    assert found == planted


def test_impossible_values_and_unknown_codes_pass_through(
    hospital: Path, lis: dict[str, Read]
) -> None:
    defects = _defects(hospital)
    unknown = [d for d in defects if d["kind"] == "unknown_code"]
    impossible = [d for d in defects if d["kind"] == "impossible_lab_value"]
    assert unknown
    assert impossible
    for defect in unknown:
        rows = lis[defect["file"]].table("measurement").to_pylist()
        assert any(
            r["measurement_source_value"] == defect["detail"]
            and r["_measurement_vocabulary"] == "LOINC"
            for r in rows
        ), defect
    for defect in impossible:
        rows = lis[defect["file"]].table("measurement").to_pylist()
        values = [r["value_as_number"] for r in rows if r["value_as_number"] is not None]
        if defect["detail"] == "negative":
            assert any(v < 0 for v in values), defect


def test_lab_rows_carry_codes_units_ranges_and_lab_type(lis: dict[str, Read]) -> None:
    rows = [row for r in lis.values() for row in r.table("measurement").to_pylist()]
    assert {r["measurement_type_concept_id"] for r in rows} == {32856}
    numeric = [r for r in rows if r["value_as_number"] is not None]
    assert all(r["_unit_vocabulary"] == "UCUM" for r in numeric)
    hb = next(r for r in numeric if r["measurement_source_value"] == "718-7")
    assert (hb["range_low"], hb["range_high"], hb["unit_source_value"]) == (115, 175, "g/L")
    coded = [r for r in rows if r["_value_vocabulary"] == "LOINC"]
    assert coded
    assert all(r["value_source_value"].startswith("LA") for r in coded)
    assert all(r["_source_patient_id"] for r in rows)
    assert sum(1 for r in rows if r["_source_visit_id"]) > len(rows) / 2
    assert all(r["_source_visit_system"] is None for r in rows)  # default: no cross-system
    ids = [r["_source_record_id"] for r in rows]
    assert len(ids) == len(set(ids))


def test_specimens_from_obr_15_use_medlake_codes(lis: dict[str, Read]) -> None:
    rows = [row for r in lis.values() for row in r.table("specimen").to_pylist()]
    assert rows
    assert {r["specimen_source_value"] for r in rows} <= {
        "blood",
        "serum",
        "urine",
        "plasma",
        "respiratory swab",
    }
    assert {r["_specimen_vocabulary"] for r in rows} == {"medlake"}


def test_adt_gives_patients_with_resident_id_and_gender(lis: dict[str, Read]) -> None:
    patients = pa.concat_tables(
        [r.patients() for r in lis.values() if any(c.patients for c in r.chunks)]
    ).to_pylist()
    assert patients
    assert {p["gender_concept_id"] for p in patients} <= {8507, 8532, 8551}
    assert any(p["resident_id"] and len(p["resident_id"]) == 18 for p in patients)
    assert all(p["_source_patient_id"] and p["_source_version"] > 0 for p in patients)
    assert any(p["name_pinyin"] for p in patients)


def test_mllp_and_plain_files_give_the_same_rows(tmp_path: Path, lis_files: list[Path]) -> None:
    plain = next(p for p in lis_files if p.suffix == ".hl7" and p.stat().st_size > 2000)
    messages = [m.data for m in split_messages(plain.read_bytes())]
    framed = write(tmp_path, "day.mllp", b"".join(frame(m) for m in messages))
    a, b = read_file(plain, "day"), read_file(framed, "day")
    assert a.table("measurement").equals(b.table("measurement"))
    assert a.messages == b.messages == len(messages)


def test_fast_and_hl7_parsers_agree_on_the_lis(lis_files: list[Path]) -> None:
    for path in lis_files[::7]:
        for raw in split_messages(path.read_bytes()):
            text = raw.data.decode()
            assert parse_message(text, "fast").segments == parse_message(text, "hl7").segments


MSH = "MSH|^~\\&|LIS|LAB|HIS|HOSP|{stamp}||{kind}|{control}|P|2.5|||||CHN|{charset}"


def msg(
    kind: str,
    control: str,
    *segments: str,
    stamp: str = "20240101080000",
    charset: str = "UNICODE UTF-8",
) -> str:
    header = MSH.format(kind=kind, control=control, stamp=stamp, charset=charset)
    return "\r".join([header, *segments]) + "\r"


def test_gb18030_message_with_hanzi_name(tmp_path: Path) -> None:
    text = msg(
        "ADT^A01^ADT_A01",
        "C1",
        "PID|1||P1^^^LIS^PI||张^小明~ZHANG^XIAOMING||19800102|M",
        charset="GB 18030-2000",
    )
    read = read_file(write(tmp_path, "gb.hl7", text.encode("gb18030")))
    (patient,) = read.patients().to_pylist()
    assert patient["name_hanzi"] == "张小明"
    assert patient["name_pinyin"] == "ZHANG XIAOMING"
    assert (patient["family_name"], patient["given_name"]) == ("张", "小明")
    assert patient["birth_date"] == dt.date(1980, 1, 2)
    assert patient["gender_concept_id"] == 8507


def test_pid3_identifiers_give_source_id_resident_id_and_mrn(tmp_path: Path) -> None:
    text = msg(
        "ADT^A04^ADT_A01",
        "C1",
        "PID|1||MR778^^^HOSP^MR~P1^^^LIS^PI~110101198001020014^^^CHN^NNCHN||李^华||19800102|F",
    )
    (patient,) = read_file(write(tmp_path, "ids.hl7", text)).patients().to_pylist()
    assert patient["_source_patient_id"] == "P1"  # the sender's own PI wins over the MR
    assert patient["resident_id"] == "110101198001020014"
    assert patient["mrn"] == "MR778"
    plain = msg("ADT^A04^ADT_A01", "C2", "PID|1||P2^^^LIS^PI||李^华||19800102|F")
    (patient,) = read_file(write(tmp_path, "plain.hl7", plain)).patients().to_pylist()
    assert patient["mrn"] is None


def test_undeclared_gb18030_is_detected(tmp_path: Path) -> None:
    text = msg("ADT^A04^ADT_A01", "C1", "PID|1||P1^^^LIS^PI||李^华||19800102|F")
    read = read_file(write(tmp_path, "gb.hl7", text.encode("gb18030")))
    assert read.patients().to_pylist()[0]["name_hanzi"] == "李华"


def test_a08_update_carries_a_newer_version(tmp_path: Path) -> None:
    first = msg(
        "ADT^A01^ADT_A01",
        "C1",
        "PID|1||P1^^^LIS^PI||WANG^FANG||19700101|F|||旧路1号^^北京市海淀区^北京市^100080^CHN^H",
        stamp="20240101080000",
    )
    update = msg(
        "ADT^A08^ADT_A01",
        "C2",
        "PID|1||P1^^^LIS^PI||WANG^FANG||19700101|F|||"
        "新路2号^^北京市海淀区^北京市^100080^CHN^H||13800000000^PRN^CP",
        stamp="20240301080000",
    )
    rows = read_file(write(tmp_path, "a.hl7", first + update)).patients().to_pylist()
    assert [r["_source_patient_id"] for r in rows] == ["P1", "P1"]
    assert rows[1]["_source_version"] > rows[0]["_source_version"]
    assert rows[1]["address"] == "北京市海淀区新路2号"
    assert rows[1]["postcode"] == "100080"
    assert rows[1]["phone"] == "13800000000"
    assert rows[0]["_record_hash"] != rows[1]["_record_hash"]


def test_a40_merge(tmp_path: Path) -> None:
    text = msg(
        "ADT^A40^ADT_A39",
        "C9",
        "EVN|A40|20240101",
        "PID|1||P1^^^LIS^PI||WANG^FANG",
        "MRG|P2^^^LIS^PI",
    )
    read = read_file(write(tmp_path, "m.hl7", text))
    (merge,) = [m for c in read.chunks for m in c.merges]
    assert (merge.surviving_id, merge.merged_id) == ("P1", "P2")
    assert merge.source_version > 0


ORU = [
    "PID|1||P1^^^LIS^PI||WANG^FANG",
    "PV1|1|O|||||||||||||||||ZY123",
    "OBR|1|PL1|F1|XCG^血常规^99LIS|||20240101070000|||||||20240101070000|BLD^全血^HL70487",
]


def test_corrected_result_replaces_by_order_id(tmp_path: Path) -> None:
    first = msg(
        "ORU^R01^ORU_R01",
        "C1",
        *ORU,
        "OBX|1|NM|718-7^Hb^LN||120|g/L^^UCUM|115-175|N|||F",
        stamp="20240101080000",
    )
    fixed = msg(
        "ORU^R01^ORU_R01",
        "C2",
        *ORU,
        "OBX|1|NM|718-7^Hb^LN||130|g/L^^UCUM|115-175|N|||C",
        stamp="20240101090000",
    )
    rows = read_file(write(tmp_path, "c.hl7", first + fixed)).table("measurement").to_pylist()
    assert rows[0]["_source_record_id"] == rows[1]["_source_record_id"] == "F1/1"
    assert rows[1]["_source_version"] > rows[0]["_source_version"]
    assert [r["value_as_number"] for r in rows] == [120, 130]


def test_value_types_operators_and_local_codes(tmp_path: Path) -> None:
    text = msg(
        "ORU^R01^ORU_R01",
        "C1",
        *ORU,
        "OBX|1|NM|X1^local test^99LIS||<0.5|mmol/L|<1.0|N|||F",
        "OBX|2|ST|X2^comment^99LIS||hemolysed \\F\\ repeat||||||F",
        "OBX|3|SN|X3^titer^99LIS||>^160||||||F",
        "OBX|4|CWE|94500-6^SARS^LN||LA6577-6^Negative^LN||||||F",
    )
    rows = (
        read_file(write(tmp_path, "v.hl7", text), local_vocabulary="lis-local")
        .table("measurement")
        .to_pylist()
    )
    assert rows[0]["_measurement_vocabulary"] == "lis-local"
    assert (rows[0]["value_as_number"], rows[0]["operator_concept_id"]) == (0.5, 4171756)
    assert (rows[0]["range_low"], rows[0]["range_high"]) == (None, 1.0)
    assert rows[1]["value_source_value"] == "hemolysed | repeat"
    assert (rows[2]["value_as_number"], rows[2]["operator_concept_id"]) == (160, 4172704)
    assert (rows[3]["value_source_value"], rows[3]["_value_vocabulary"]) == ("LA6577-6", "LOINC")


def test_visit_system_mapping_is_configurable(tmp_path: Path) -> None:
    text = msg("ORU^R01^ORU_R01", "C1", *ORU, "OBX|1|NM|718-7^Hb^LN||120|g/L||||||F")
    path = write(tmp_path, "v.hl7", text)
    row = read_file(path, visit_systems={r"^(ZY|MZ|JZ)\d+$": "his"}).table("measurement")
    assert row.to_pylist()[0]["_source_visit_system"] == "his"
    assert read_file(path).table("measurement").to_pylist()[0]["_source_visit_system"] is None


def test_bad_obx_is_quarantined_alone(tmp_path: Path) -> None:
    text = msg(
        "ORU^R01^ORU_R01",
        "C1",
        *ORU,
        "OBX|1|NM|^no code||120|g/L||||||F",
        "OBX|2|NM|718-7^Hb^LN||abc|g/L||||||F",
        "OBX|3|NM|777-3^PLT^LN||200|10*9/L||||||F",
    )
    read = read_file(write(tmp_path, "b.hl7", text), "b.hl7")
    assert [r["measurement_source_value"] for r in read.table("measurement").to_pylist()] == [
        "777-3"
    ]
    assert sorted(q.field for q in read.quarantine) == ["OBX[1]-3", "OBX[2]-5"]
    assert all(q.location == "b.hl7:message 1" for q in read.quarantine)


def test_broken_messages_are_quarantined_and_the_file_goes_on(tmp_path: Path) -> None:
    good = msg("ORU^R01^ORU_R01", "C1", *ORU, "OBX|1|NM|718-7^Hb^LN||120|g/L||||||F")
    broken_segment = good.replace("PV1|", "P?1|")
    no_type = msg("", "C2", *ORU)
    bad_stamp = msg("ORU^R01^ORU_R01", "C3", *ORU, stamp="20241345")
    other = msg("ORM^O01^ORM_O01", "C4", *ORU)
    path = write(tmp_path, "mixed.hl7", good + broken_segment + no_type + bad_stamp + other + good)
    read = read_file(path, "mixed.hl7")
    assert read.messages == 6
    assert read.table("measurement").num_rows == 2
    fields = {q.location: q.field for q in read.quarantine}
    assert fields == {
        "mixed.hl7:message 2": "segment 3",
        "mixed.hl7:message 3": "MSH-9",
        "mixed.hl7:message 4": "MSH-7",
    }
    assert sum((c.skipped for c in read.chunks), Counter()) == {"ORM^O01": 1}


def test_file_that_is_not_hl7_is_rejected_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", "patient,value\n1,2\n")
    with pytest.raises(InputError, match=r"notes\.txt"):
        read_file(path)
    assert not Hl7v2Reader().sniff(path, path.read_bytes())
    assert Hl7v2Reader().sniff(path, b"\x0bMSH|^~\\&|")


def test_junk_around_mllp_frames_is_quarantined(tmp_path: Path) -> None:
    good = msg("ORU^R01^ORU_R01", "C1", *ORU, "OBX|1|NM|718-7^Hb^LN||120|g/L||||||F")
    data = frame(good) + b"garbage" + frame(good) + b"\x0bMSH|^~\\&|cut off"
    read = read_file(write(tmp_path, "j.mllp", data), "j.mllp")
    assert read.table("measurement").num_rows == 2
    assert len(read.quarantine) == 2
    assert read.messages == 4


def test_chunks_are_bounded(tmp_path: Path) -> None:
    good = msg("ORU^R01^ORU_R01", "C1", *ORU, "OBX|1|NM|718-7^Hb^LN||120|g/L||||||F")
    read = read_file(write(tmp_path, "many.hl7", good * 25), chunk_messages=10)
    assert [c.records_read for c in read.chunks] == [10, 10, 5]


def test_plain_and_mllp_day_files_concatenated_read_as_the_files_do(
    tmp_path: Path, hospital: Path, lis_files: list[Path], lis: dict[str, Read]
) -> None:
    """``cat *.hl7 *.mllp > all.hl7``: a file that starts plain and holds MLLP-framed
    messages further on. Each framed message is still its own message (its MSH follows
    the frame's 0x0B, not a line break): none is merged into the message before it, so
    none of its results is filed under the wrong patient, and none is quarantined."""
    ordered = sorted(lis_files, key=lambda p: (p.suffix == ".mllp", str(p)))
    assert ordered[0].suffix == ".hl7"
    assert ordered[-1].suffix == ".mllp"
    whole = read_file(write(tmp_path, "all.hl7", b"".join(p.read_bytes() for p in ordered)))
    separately = [lis[str(p.relative_to(hospital))] for p in ordered]
    columns = ["_source_record_id", "_source_patient_id", "measurement_datetime",
               "measurement_source_value", "value_as_number", "value_source_value"]  # fmt: skip

    def rows(read: Read) -> Counter:
        return Counter(zip(*read.table("measurement").select(columns).to_pydict().values(),
                           strict=True))  # fmt: skip

    assert whole.messages == sum(r.messages for r in separately)
    assert len(whole.quarantine) == sum(len(r.quarantine) for r in separately)
    assert rows(whole) == sum((rows(r) for r in separately), Counter())

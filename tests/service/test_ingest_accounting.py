"""Every record the synthetic hospital exported is in the lake or in quarantine.

The issue's acceptance check, against ``truth/``: the hospital's four sources are
ingested as the demo does, then each export is parsed here, independently of the
readers (``csv``, ``json``, a plain HL7 split), and every record is looked up:

* HIS: each data row of each mapped CSV is a current ``source_record`` under the id the
  mapping's template gives, or a ``quarantine`` row at ``file:line`` (never both);
* EMR: each NDJSON line is a current ``source_record`` (``Type/id``, ``Type/id#component[i]``
  for an Observation's components, the bare id for Patient and Encounter) or quarantined
  at ``file:line`` (a Patient whose ``person`` row lacks a required field: ``file:person/id``);
* LIS: each OBX of each ORU^R01 is a measurement (``<OBR-3>/<OBX-1>``) or quarantined at
  ``file:message N``, with the message (its specimen too) or alone (field ``OBX[n]-..``);
  each ADT patient and each ORU's patient is in ``source_patient`` and ``pii_person``;
* both ways: no current ``source_record`` that no exported record accounts for;
* every planted ``bad_date`` / ``missing_required_field`` defect is quarantined at its
  file and line (or record), the two documented exceptions aside;
* the lake's source patients are exactly the truth's, per system.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import re
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medlake.config import open_workspace
from medlake.service.ingest import IngestReport, ingest_paths
from medlake.service.workspace import init_workspace, open_lake
from medlake.synth import generate_hospital

PATIENTS = 300
SEED = 7

# FHIR resource type -> (CDM table, whether the record id is prefixed with the type).
FHIR_TABLES = {
    "Patient": ("person", False),
    "Encounter": ("visit_occurrence", False),
    "Condition": ("condition_occurrence", True),
    "MedicationRequest": ("drug_exposure", True),
    "Observation": ("measurement", True),
    "Procedure": ("procedure_occurrence", True),
    "Specimen": ("specimen", True),
    "DocumentReference": ("note", True),
}
CHECKED_DEFECTS = ("bad_date", "missing_required_field")


@dataclass
class Lake:
    hospital: Path
    report: IngestReport
    current: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    quarantined: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    source_patients: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    pii_patients: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    skipped: dict[str, Counter[str]] = field(default_factory=dict)

    def loaded(self, system: str, table: str, record_id: str) -> bool:
        return record_id in self.current[(system, table)]


@dataclass(frozen=True)
class Exported:
    """One exported record: where it is, and the source records it should become."""

    file: str  # relative to the hospital
    locations: tuple[str, ...]  # quarantine locations that account for it
    table: str
    record_ids: tuple[str, ...]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    hospital = tmp_path_factory.mktemp("hospital")
    generate_hospital(hospital, PATIENTS, SEED)
    root = init_workspace(tmp_path_factory.mktemp("lake") / "ws", name="accounting").root
    report = IngestReport()
    sources = [("his", {"mapping": hospital / "his" / "medlake-mapping.toml"}),
               ("emr", {}), ("lis", {}), ("omics", {})]  # fmt: skip
    for system, options in sources:
        part = ingest_paths(
            root,
            [hospital / system],
            source_system="biobank" if system == "omics" else system,
            options=options,
        )
        report.files.extend(part.files)
        report.ignored.extend(part.ignored)
    result = Lake(hospital, report)
    with open_lake(open_workspace(root)) as engine:
        records = engine.table("source_record")
        rows = engine.execute(
            records.filter(records.is_current).select(
                "source_system", "cdm_table", "source_record_id"
            )
        ).to_pylist()
        for row in rows:
            result.current[(row["source_system"], row["cdm_table"])].add(row["source_record_id"])
        quarantine, batches = engine.table("quarantine"), engine.table("ingest_batch")
        joined = quarantine.join(batches, "batch_id").select("source_system", "location", "field")
        for row in engine.execute(joined).to_pylist():
            location, where = row["location"], row["field"] or ""
            if row["source_system"] == "lis" and where.startswith("OBX["):
                # a bad OBX is quarantined alone (its siblings load): key it by its OBX
                location += "#" + where.split("-")[0]
            result.quarantined[row["source_system"]].add(location)
        for name, target in (("source_patient", result.source_patients),
                             ("pii_person", result.pii_patients)):  # fmt: skip
            table = engine.table(name).select("source_system", "source_patient_id")
            for row in engine.execute(table).to_pylist():
                target[row["source_system"]].add(row["source_patient_id"])
    assert [f.path for f in report.files if f.status != "loaded"] == []
    for file in report.files:
        if file.summary is not None:
            relative = Path(file.path).relative_to(hospital).as_posix()
            result.skipped[relative] = Counter(file.summary.skipped)
    return result


# --- parsing the exports, independently of the readers -----------------------------------


def his_records(hospital: Path) -> list[Exported]:
    mapping = tomllib.loads((hospital / "his/medlake-mapping.toml").read_text(encoding="utf-8"))
    default_encoding = mapping.get("defaults", {}).get("encoding", "utf-8")
    records: list[Exported] = []
    csvs = sorted(p.name for p in (hospital / "his").glob("*.csv"))
    for spec in mapping["file"]:
        patterns = [spec["match"]] if isinstance(spec["match"], str) else spec["match"]
        names = [n for n in csvs if any(fnmatch.fnmatch(n, p) for p in patterns)]
        assert names, f"no HIS export matches {patterns}"
        for name in names:
            csvs.remove(name)
            if spec["target"] == "patients":
                table, template = "person", spec["patient_id"]
            else:
                table, template = spec["target"], spec["record_id"]
            path = hospital / "his" / name
            with path.open(encoding=spec.get("encoding", default_encoding), newline="") as f:
                reader = csv.DictReader(f)
                for row in reader:
                    record_id = template.format_map(row) if "{" in template else row[template]
                    records.append(
                        Exported(f"his/{name}", (f"{name}:{reader.line_num}",), table, (record_id,))
                    )
    assert csvs == [], f"HIS exports no [[file]] of the mapping takes: {csvs}"
    return records


def emr_lines(hospital: Path) -> list[tuple[str, int, dict[str, object]]]:
    lines = []
    for path in sorted((hospital / "emr").glob("*.ndjson")):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    lines.append((f"emr/{path.name}", number, json.loads(line)))
    return lines


def emr_record(file: str, number: int, resource: dict[str, object]) -> Exported | None:
    kind = str(resource["resourceType"])
    if kind not in FHIR_TABLES:
        return None
    table, prefixed = FHIR_TABLES[kind]
    rid = str(resource["id"])
    base = f"{kind}/{rid}" if prefixed else rid
    components = resource.get("component") or []
    assert isinstance(components, list)
    ids = tuple(f"{base}#component[{i}]" for i in range(len(components))) or (base,)
    name = Path(file).name
    locations = (f"{name}:{number}",) + ((f"{name}:person/{rid}",) if kind == "Patient" else ())
    return Exported(file, locations, table, ids)


@dataclass(frozen=True)
class Hl7Message:
    file: str  # relative to the hospital
    number: int  # 1-based within the file
    segments: tuple[tuple[str, ...], ...]

    def first(self, name: str) -> tuple[str, ...]:
        return next(s for s in self.segments if s[0] == name)

    @property
    def type(self) -> str:
        return "^".join(self.first("MSH")[8].split("^")[:2])

    @property
    def patient_id(self) -> str:
        cx = self.first("PID")[3].split("~")
        return next(c.split("^")[0] for c in cx if c.split("^")[3:5] == ["LIS", "PI"])

    @property
    def location(self) -> str:
        return f"{Path(self.file).relative_to('lis').as_posix()}:message {self.number}"


def lis_messages(hospital: Path) -> list[Hl7Message]:
    messages = []
    for path in sorted((hospital / "lis").rglob("*")):
        if path.suffix not in (".hl7", ".mllp"):
            continue
        text = path.read_text(encoding="utf-8").replace("\x0b", "").replace("\x1c", "")
        chunks = [c for c in re.split(r"(?=^MSH\|)", text, flags=re.M) if c.strip()]
        for number, chunk in enumerate(chunks, start=1):
            segments = tuple(tuple(s.split("|")) for s in re.split(r"[\r\n]+", chunk) if s)
            relative = path.relative_to(hospital).as_posix()
            messages.append(Hl7Message(relative, number, segments))
    return messages


def lis_records(message: Hl7Message) -> list[Exported]:
    """The message's specimen and one measurement per OBX (``OBX[n]``: its position)."""
    filler = message.first("OBR")[3].split("^")[0]
    where = message.location
    records = [Exported(message.file, (where,), "specimen", (f"{filler}/specimen",))]
    obx = [s for s in message.segments if s[0] == "OBX"]
    for n, segment in enumerate(obx, start=1):
        assert segment[11:12] != ("D",), "a deleted result loads nothing: not expected here"
        record_id = f"{filler}/{segment[1].strip() or n}"
        records.append(
            Exported(message.file, (where, f"{where}#OBX[{n}]"), "measurement", (record_id,))
        )
    return records


# --- accounting -------------------------------------------------------------------------


def account(lake: Lake, system: str, records: list[Exported]) -> dict[str, list[Exported]]:
    """Each record: 'loaded' (all its ids current), 'quarantined', or a problem."""
    outcome: dict[str, list[Exported]] = defaultdict(list)
    for record in records:
        loaded = [lake.loaded(system, record.table, i) for i in record.record_ids]
        quarantined = any(loc in lake.quarantined[system] for loc in record.locations)
        if all(loaded) and not quarantined:
            outcome["loaded"].append(record)
        elif not any(loaded) and quarantined:
            outcome["quarantined"].append(record)
        elif not any(loaded):
            outcome["missing"].append(record)
        elif quarantined:
            outcome["loaded and quarantined"].append(record)
        else:
            outcome["partly loaded"].append(record)
    return outcome


def assert_accounted(outcome: dict[str, list[Exported]]) -> None:
    problems = {k: v[:5] for k, v in outcome.items() if k not in ("loaded", "quarantined")}
    assert problems == {}


def assert_no_phantoms(lake: Lake, system: str, records: list[Exported]) -> None:
    """Every current source record of the system's tables comes from an exported record."""
    exported: dict[str, set[str]] = defaultdict(set)
    for record in records:
        exported[record.table].update(record.record_ids)
    for table, ids in exported.items():
        assert lake.current[(system, table)] - ids == set(), (system, table)


# --- the checks ---------------------------------------------------------------------------


def test_the_export_parsers_here_see_every_record_the_manifest_counts(lake: Lake) -> None:
    counted = json.loads((lake.hospital / "truth/manifest.json").read_text())["files"]
    seen: Counter[str] = Counter(r.file for r in his_records(lake.hospital))
    seen.update(file for file, _, _ in emr_lines(lake.hospital))
    seen.update(m.file for m in lis_messages(lake.hospital))
    assert {f: n for f, n in counted.items() if not f.startswith("truth/")} == dict(seen)


def test_every_his_row_is_loaded_or_quarantined_at_its_line(lake: Lake) -> None:
    records = his_records(lake.hospital)
    outcome = account(lake, "his", records)
    assert_accounted(outcome)
    assert len(outcome["loaded"]) + len(outcome["quarantined"]) == len(records)
    assert outcome["quarantined"], "the synthetic HIS plants rows that must be quarantined"
    # every quarantine entry of the HIS names an exported row
    locations = {loc for r in records for loc in r.locations}
    assert lake.quarantined["his"] <= locations
    assert_no_phantoms(lake, "his", records)


def test_every_his_patient_has_an_identity(lake: Lake) -> None:
    patients = {r.record_ids[0] for r in his_records(lake.hospital) if r.table == "person"}
    assert patients == lake.source_patients["his"]
    assert patients == lake.pii_patients["his"]


def test_every_emr_line_is_loaded_quarantined_or_counted_as_skipped(lake: Lake) -> None:
    lines = emr_lines(lake.hospital)
    records, unmapped = [], Counter[tuple[str, str]]()
    for file, number, resource in lines:
        record = emr_record(file, number, resource)
        if record is None:
            unmapped[(file, str(resource["resourceType"]))] += 1
        else:
            records.append(record)
    outcome = account(lake, "emr", records)
    assert_accounted(outcome)
    assert len(outcome["loaded"]) + len(outcome["quarantined"]) + unmapped.total() == len(lines)
    assert outcome["quarantined"]
    for (file, kind), n in unmapped.items():
        assert lake.skipped[file][kind] == n, (file, kind)
    locations = {loc for r in records for loc in r.locations}
    assert lake.quarantined["emr"] <= locations
    assert_no_phantoms(lake, "emr", records)


def test_every_emr_patient_has_an_identity(lake: Lake) -> None:
    ids = {str(r["id"]) for f, _, r in emr_lines(lake.hospital) if r["resourceType"] == "Patient"}
    assert ids == lake.source_patients["emr"]
    assert ids == lake.pii_patients["emr"]


def test_every_lis_result_is_loaded_or_its_message_quarantined(lake: Lake) -> None:
    messages = lis_messages(lake.hospital)
    types = Counter(m.type for m in messages)
    assert set(types) <= {"ORU^R01", "ADT^A01", "ADT^A08", "ADT^A40"}, types
    records = [r for m in messages if m.type == "ORU^R01" for r in lis_records(m)]
    outcome = account(lake, "lis", records)
    assert_accounted(outcome)
    assert outcome["quarantined"]
    loaded = sum(1 for r in outcome["loaded"] if r.table == "measurement")
    assert loaded == len(lake.current[("lis", "measurement")])
    assert {q.split("#")[0] for q in lake.quarantined["lis"]} <= {m.location for m in messages}
    assert_no_phantoms(lake, "lis", records)


def test_every_lis_patient_has_an_identity(lake: Lake) -> None:
    messages = lis_messages(lake.hospital)
    registered = {m.patient_id for m in messages if m.type.startswith("ADT^A0")}
    reported = {m.patient_id for m in messages if m.type == "ORU^R01"}
    assert registered == lake.source_patients["lis"]
    assert registered == lake.pii_patients["lis"]
    assert reported <= registered


def test_every_planted_date_or_required_field_defect_is_quarantined(lake: Lake) -> None:
    with (lake.hospital / "truth/defects.csv").open(encoding="utf-8", newline="") as f:
        defects = [d for d in csv.DictReader(f) if d["kind"] in CHECKED_DEFECTS]
    assert {d["system"] for d in defects} == {"HIS", "EMR", "LIS"}
    oru = {(m.file, m.number) for m in lis_messages(lake.hospital) if m.type == "ORU^R01"}
    missed = []
    for d in defects:
        system, name = d["system"].lower(), Path(d["file"]).name
        if system == "lis":
            if d["field"] == "PID-7" and (d["file"], int(d["line"])) in oru:
                # An ORU takes only the patient id from PID: its results load, rightly.
                continue
            where = {f"{Path(d['file']).relative_to('lis').as_posix()}:message {d['line']}"}
        elif system == "emr" and d["field"] == "gender":
            # Patient.gender is optional in FHIR (0..1): the person loads with gender
            # 8551 (unknown), which is the documented behaviour, not a lost record.
            assert lake.loaded("emr", "person", d["record_id"]), d
            continue
        else:
            where = {f"{name}:{d['line']}", f"{name}:person/{d['record_id']}"}
        if not where & lake.quarantined[system]:
            missed.append(d)
    assert missed == []


def test_source_patients_in_the_lake_are_the_truths(lake: Lake) -> None:
    truth: dict[str, set[str]] = defaultdict(set)
    with (lake.hospital / "truth/source_records.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            truth[row["system"].lower()].add(row["source_patient_id"])
    mrn_of = {}
    for _, _, resource in emr_lines(lake.hospital):
        if resource["resourceType"] == "Patient":
            identifiers = resource.get("identifier") or []
            assert isinstance(identifiers, list)
            mrns = [i["value"] for i in identifiers if str(i.get("system", "")).endswith("/mrn")]
            assert len(mrns) == 1, resource["id"]
            mrn_of[str(resource["id"])] = mrns[0]
    lake_ids = {
        "his": lake.source_patients["his"],
        "lis": lake.source_patients["lis"],
        "emr": {mrn_of[i] for i in lake.source_patients["emr"]},
    }
    for system, ids in lake_ids.items():
        assert ids <= truth[system], system
        # and none of the exported patients is missing
        assert ids == truth[system], system

"""``ingest_paths`` end to end on a small synthetic hospital, and how inputs are planned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medlake.config import open_workspace
from medlake.errors import InputError
from medlake.ingest.inputs import plan_inputs
from medlake.service.ingest import IngestReport, ingest_paths, quarantine_entries, quarantine_entry
from medlake.service.workspace import init_workspace, open_lake
from medlake.synth import generate_hospital

MAPPING = Path(__file__).resolve().parents[2] / "src/medlake/synth/data/his_mapping.toml"


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=30, seed=11, workers=1)
    return out


def inputs(hospital: Path) -> list[Path]:
    lis_days = sorted((hospital / "lis").rglob("*.hl7"))[:5]
    return [hospital / "his", hospital / "emr", *lis_days, hospital / "omics"]


@pytest.fixture(scope="module")
def ingested(hospital: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestReport]:
    root = init_workspace(tmp_path_factory.mktemp("lake") / "ws").root
    report = ingest_paths(root, inputs(hospital), options={"mapping": MAPPING})
    return root, report


def table_counts(root: Path) -> dict[str, int]:
    with open_lake(open_workspace(root)) as engine:
        return {name: engine.count(name) for name in engine.list_tables()}


def test_every_source_loads_without_failures(ingested: tuple[Path, IngestReport]) -> None:
    root, report = ingested
    assert report.failed == []
    sources = {s.source_system: s for s in report.sources}
    assert set(sources) == {"his", "emr", "lis", "omics"}
    for name in ("his", "emr", "lis"):
        assert sources[name].loaded > 0
    counts = table_counts(root)
    assert counts["person"] > 0
    assert counts["omics_sample"] > 0
    assert counts["ingest_batch"] == len(report.files)


def test_records_read_match_what_the_hospital_exported(
    hospital: Path, ingested: tuple[Path, IngestReport]
) -> None:
    exported = json.loads((hospital / "truth/manifest.json").read_text())["files"]
    _, report = ingested
    for result in report.files:
        relative = Path(result.path).relative_to(hospital).as_posix()
        if relative in exported:
            assert result.summary is not None
            assert result.summary.records_read == exported[relative], relative


def test_folder_files_no_reader_takes_are_listed_as_ignored(
    ingested: tuple[Path, IngestReport],
) -> None:
    _, report = ingested
    assert any(path.endswith("emr/manifest.json") for path in report.ignored)


def test_reingest_changes_nothing_and_skips_every_batch(
    hospital: Path, ingested: tuple[Path, IngestReport], tmp_path: Path
) -> None:
    original, first = ingested
    root = tmp_path / "ws"
    shutil.copytree(original, root)
    before = table_counts(root)
    again = ingest_paths(root, inputs(hospital), options={"mapping": MAPPING})
    assert {r.status for r in again.files} == {"unchanged"}
    assert sum(s.loaded + s.updated for s in again.sources) == 0
    assert table_counts(root) == before
    assert sum(s.seconds for s in again.sources) < sum(s.seconds for s in first.sources)


def test_report_as_dict_has_a_row_per_source(ingested: tuple[Path, IngestReport]) -> None:
    _, report = ingested
    data = report.as_dict()
    assert [s["source_system"] for s in data["sources"]] == [
        s.source_system for s in report.sources
    ]  # type: ignore[index]
    assert {"read", "loaded", "updated", "unchanged", "quarantined", "unmapped", "seconds"} <= set(
        data["sources"][0]  # type: ignore[index]
    )
    json.dumps(data)


def test_quarantine_entries_can_be_listed_and_shown(ingested: tuple[Path, IngestReport]) -> None:
    root, report = ingested
    entries = quarantine_entries(root)
    assert len(entries) == sum(s.quarantined for s in report.sources)
    if entries:
        first = entries[0]
        shown = quarantine_entry(root, str(first["quarantine_id"])[:16])
        assert shown["raw_payload"] == first["raw_payload"]


def test_plan_groups_plink_companions_and_puts_identities_first(hospital: Path) -> None:
    plan = plan_inputs(
        [hospital / "omics", hospital / "his", hospital / "emr"], options={"mapping": MAPPING}
    )
    names = [item.original_name for item in plan.inputs]
    assert names.index("patients.csv") < names.index("visits.csv") < names.index("diagnoses.csv")
    assert names.index("Patient.ndjson") < names.index("Encounter.ndjson")
    assert names[-2:] == ["genotypes.bed", "rnaseq_counts.tsv.gz"] or names[-1] == "genotypes.bed"
    bed = next(item for item in plan.inputs if item.original_name == "genotypes.bed")
    assert set(bed.companions) >= {"bim", "fam", "manifest"}
    assert "genotypes.bim" not in names
    assert "samples.csv" not in names


def test_source_system_from_folder_or_option(hospital: Path) -> None:
    plan = plan_inputs([hospital / "emr"])
    assert {item.source_system for item in plan.inputs} == {"emr"}
    forced = plan_inputs([hospital / "emr"], source_system="emr2")
    assert {item.source_system for item in forced.inputs} == {"emr2"}


def test_a_named_file_no_reader_recognizes_is_rejected(tmp_path: Path) -> None:
    junk = tmp_path / "notes.bin"
    junk.write_bytes(b"\x00\x01\x02 not a medical format")
    with pytest.raises(InputError, match=r"notes\.bin"):
        plan_inputs([junk])


def test_missing_path_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        plan_inputs([tmp_path / "nope"])


def test_lis_results_join_the_his_visit_their_pv1_19_names(hospital_lake) -> None:
    """The demo ingests the LIS with visit_systems: PV1-19 (the HIS 就诊号) -> HIS visits."""
    from medlake.config import open_workspace
    from medlake.service.workspace import open_lake

    with open_lake(open_workspace(hospital_lake.workspace)) as engine:
        records = engine.table("source_record")
        lis = records.filter((records.cdm_table == "measurement") & records.is_current
                             & (records.source_system == "lis"))  # fmt: skip
        measurement = engine.table("measurement")
        visits = engine.table("visit_occurrence")
        joined = lis.join(measurement, lis.cdm_row_id == measurement.measurement_id)
        with_visit = joined.filter(joined.visit_occurrence_id.notnull())
        found = with_visit.filter(with_visit.visit_occurrence_id.isin(visits.visit_occurrence_id))
        total, linked = engine.scalar(with_visit.count()), engine.scalar(found.count())
    assert total > 1000
    assert linked / total > 0.99


def test_visit_system_option_is_checked(tmp_path) -> None:
    from typer.testing import CliRunner

    from medlake.cli.main import app

    result = CliRunner().invoke(app, ["ingest", str(tmp_path), "--visit-system", "no-equals"])
    assert result.exit_code != 0
    assert "expected REGEX=SYSTEM" in str(result.exception) + result.output

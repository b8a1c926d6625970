"""Small files written in groups build exactly the lake that writing them one by one does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.ingest_workspace import ingest_only_workspace

from medlake.clock import CLOCK_ENV
from medlake.config import open_workspace
from medlake.engine import Engine
from medlake.ingest.batches import IngestBatch
from medlake.ingest.writer import WriteSummary
from medlake.service.ingest import IngestReport, ingest_paths
from medlake.service.workspace import init_workspace, open_lake
from medlake.synth import generate_hospital

CLOCK = "2026-01-02T03:04:05.678000"
MSH = "MSH|^~\\&|LIS|LAB|HIS|HOSP|{stamp}||{kind}|{control}|P|2.5|||||CHN|UNICODE UTF-8"
ORDER = "OBR|1|PL1|F1|XCG^血常规^99LIS|||20240101070000|||||||20240101070000|BLD^全血^HL70487"


def msg(kind: str, control: str, stamp: str, *segments: str) -> str:
    return "\r".join([MSH.format(kind=kind, control=control, stamp=stamp), *segments]) + "\r\n"


def result(control: str, stamp: str, value: str, patient: str = "P2") -> str:
    return msg(
        "ORU^R01^ORU_R01", control, stamp, f"PID|1||{patient}^^^LIS^PI||WANG^F", ORDER,
        f"OBX|1|NM|718-7^Hb^LN||{value}|g/L^^UCUM|115-175|N|||F",
    )  # fmt: skip


DAYS = {
    "d1.hl7": msg("ADT^A01^ADT_A01", "C1", "20240101070000", "PID|1||P1^^^LIS^PI||WANG^FANG")
    + msg("ADT^A01^ADT_A01", "C2", "20240101070100", "PID|1||P2^^^LIS^PI||WANG^F||19700101|F")
    + result("C3", "20240101080000", "120"),
    # A correction (higher version), the same patient again with other identifiers.
    "d2.hl7": result("C4", "20240102080000", "121")
    + msg("ADT^A08^ADT_A01", "C5", "20240102090000", "PID|1||P2^^^LIS^PI||WANG^F||19700102|F"),
    # An older version (stale), then the same version restated, a record without a
    # patient (quarantined), the same patient sent again unchanged.
    "d3.hl7": result("C6", "20240101080000", "119")
    + result("C7", "20240102080000", "122")
    + msg("ADT^A08^ADT_A01", "C8", "20240103090000", "PID|1||P2^^^LIS^PI||WANG^F||19700102|F"),
    "d4.hl7": result("C9", "20240104080000", "125", patient="P3"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=25, seed=7, workers=1)
    days = out / "days"
    days.mkdir()
    for name, text in DAYS.items():
        (days / name).write_text(text, encoding="utf-8")
    (days / "d2-again.hl7").write_text(DAYS["d2.hl7"], encoding="utf-8")  # same content
    return [*sorted((out / "lis").rglob("*.hl7"))[:40], *sorted(days.glob("*.hl7"))]


#: When quality checks ran (run ids, times, which tables) is history, not lake content.
QC_HISTORY = {"qc_run", "qc_result"}


def lake_state(root: Path) -> dict[str, object]:
    state: dict[str, object] = {}
    with open_lake(open_workspace(root)) as engine:
        for table in sorted(set(engine.list_tables()) - QC_HISTORY):
            rows = engine.execute(engine.table(table)).to_pylist()
            state[table] = sorted((tuple(row.items()) for row in rows), key=repr)
    return state


def one_by_one(engine: Engine, batch: IngestBatch, summary: WriteSummary) -> None:
    """An after-batch hook: files are then written one by one (hooks run between them)."""


def ingest(root: Path, inputs: list[Path], *, grouped: bool) -> IngestReport:
    hooks = () if grouped else (one_by_one,)
    return ingest_paths(root, inputs, source_system="lis", after_batch=hooks)


@pytest.mark.parametrize("split", [False, True])
def test_grouped_ingest_builds_the_same_lake_as_one_by_one(
    inputs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    monkeypatch.setenv(CLOCK_ENV, CLOCK)
    template = ingest_only_workspace(tmp_path / "template")
    reference, grouped = tmp_path / "reference", tmp_path / "grouped"
    shutil.copytree(template, reference)
    shutil.copytree(template, grouped)
    # Ingested in two runs, so the second run's versions meet the lake the first left.
    first, second = inputs[:20], inputs[20:]
    if split:  # groups of 3, each read in child processes while the one before is written
        monkeypatch.setattr("medlake.service.ingest_groups._GROUP_FILES", 3)
        monkeypatch.setattr("medlake.ingest.file_reading.CHILDREN_FROM", 2)
    expected = [ingest(reference, part, grouped=False) for part in (first, second)]
    got = [ingest(grouped, part, grouped=True) for part in (first, second)]
    assert lake_state(grouped) == lake_state(reference)
    for want, have in zip(expected, got, strict=True):
        assert have.as_dict()["sources"][0] | {"seconds": 0, "records_per_second": 0} == (
            want.as_dict()["sources"][0] | {"seconds": 0, "records_per_second": 0}
        )
        assert [(f.batch_id, f.status, f.message) for f in have.files] == [
            (f.batch_id, f.status, f.message) for f in want.files
        ]
        assert have.unmapped == want.unmapped


def test_a_file_that_cannot_be_read_fails_alone(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    days = tmp_path / "days"
    days.mkdir()
    (days / "a.hl7").write_text(DAYS["d1.hl7"], encoding="utf-8")
    (days / "b.hl7").write_text("no segment of HL7 here", encoding="utf-8")
    (days / "c.hl7").write_text(DAYS["d4.hl7"], encoding="utf-8")
    report = ingest_paths(root, sorted(days.glob("*.hl7")), source_system="lis", format="hl7v2")
    assert [f.status for f in report.files] == ["loaded", "failed", "loaded"]
    with open_lake(open_workspace(root)) as engine:
        batches = engine.execute(engine.table("ingest_batch")).to_pylist()
    assert sorted(b["status"] for b in batches) == ["failed", "loaded", "loaded"]


def test_a_run_of_many_small_files_registers_each_batch_once(tmp_path: Path) -> None:
    """Past a few inputs a group writes its new batches' rows together; a file that fails
    in the middle still has its one failed row, and a re-run changes nothing."""
    root = init_workspace(tmp_path / "ws").root
    days = tmp_path / "days"
    days.mkdir()
    for day in range(12):
        text = result(f"R{day}", f"202402{day + 1:02d}080000", str(110 + day), f"P{day}")
        (days / f"{day:02d}.hl7").write_text(text, encoding="utf-8")
    (days / "05.hl7").write_text("no segment of HL7 here", encoding="utf-8")
    files = sorted(days.glob("*.hl7"))
    report = ingest_paths(root, files, source_system="lis", format="hl7v2")
    assert [f.status for f in report.files] == ["failed" if f.name == "05.hl7" else "loaded"
                                                for f in files]  # fmt: skip
    with open_lake(open_workspace(root)) as engine:
        batches = engine.execute(engine.table("ingest_batch")).to_pylist()
    assert sorted(b["batch_id"] for b in batches) == sorted(f.batch_id for f in report.files)
    assert sorted(b["status"] for b in batches) == ["failed"] + ["loaded"] * 11
    again = ingest_paths(root, files[:5] + files[6:], source_system="lis", format="hl7v2")
    assert {f.status for f in again.files} == {"unchanged"}

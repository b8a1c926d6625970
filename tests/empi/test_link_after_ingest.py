"""Ingest links what it loaded (``[empi] link_after_ingest``, on by default): as the user
who ran the ingest, and reproducibly (the same inputs under a fixed clock build the same
lake, the linkage model, its operations and the audit trail included)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.service.test_ingest_groups import lake_state

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.clock import CLOCK_ENV
from medlake.config import open_workspace
from medlake.service.ingest import IngestReport, ingest_paths
from medlake.service.workspace import init_workspace, open_lake
from medlake.synth import generate_hospital

CLOCK = "2026-03-04T05:06:07.890000"


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=60, seed=5, workers=1)
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_workspace(tmp_path_factory.mktemp("template") / "ws", name="by-ingest").root


def ingest_his_then_emr(root: Path, template: Path, hospital: Path) -> list[IngestReport]:
    """Two ingest runs into a copy of ``template`` (default settings), as an admin."""
    shutil.copytree(template, root)
    with acting_as(Principal("alice", Role.ADMIN)):
        return [
            ingest_paths(root, [hospital / "his"], source_system="his",
                         options={"mapping": hospital / "his" / "medlake-mapping.toml"}),
            ingest_paths(root, [hospital / "emr"], source_system="emr"),
        ]  # fmt: skip


@pytest.fixture(scope="module")
def linked(
    hospital: Path, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("first") / "ws"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CLOCK_ENV, CLOCK)
        reports = ingest_his_then_emr(root, template, hospital)
    return root, reports


@pytest.mark.slow
def test_ingest_links_by_default_as_the_ingesting_user(linked: tuple[Path, list]) -> None:
    root, reports = linked
    assert open_workspace(root).settings.empi.link_after_ingest  # the default
    assert [r.empi.mode for r in reports] == ["full", "incremental"]
    with open_lake(open_workspace(root)) as engine:
        events = engine.execute(engine.table("audit_event")).to_pylist()
        operations = engine.execute(engine.table("empi_operation")).to_pylist()
        models = engine.execute(engine.table("empi_model")).to_pylist()
        persons = len(set(engine.execute(engine.table("source_patient")).column("person_id")))
        records = engine.count("source_patient")
    links = [e for e in events if e["action"] == "empi.link"]
    assert len(links) == 2
    for event, report in zip(links, reports, strict=True):
        assert (event["actor"], event["role"]) == ("alice", "admin")
        detail = json.loads(event["detail"])
        assert detail["triggered_by"] == "ingest"
        assert event["object_id"] == report.empi.operation_id
        assert detail["mode"] == report.empi.mode
    assert {op["actor"] for op in operations} == {"alice"}
    assert {m["trained_by"] for m in models} == {"alice"}
    assert persons < records  # the runs linked records: HIS duplicates, EMR to HIS


@pytest.mark.slow
def test_linking_ingest_builds_the_same_lake_twice(
    linked: tuple[Path, list],
    template: Path,
    hospital: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trained model (Splink's random table prefix left out), the operations, the
    audit events and the audit head's time all follow ``MEDLAKE_CLOCK``."""
    first, _ = linked
    monkeypatch.setenv(CLOCK_ENV, CLOCK)
    again = tmp_path / "ws"
    ingest_his_then_emr(again, template, hospital)
    a, b = lake_state(first), lake_state(again)
    assert a.keys() == b.keys()
    for table in a:
        assert a[table] == b[table], table
    assert a["empi_model"]
    assert a["audit_head"]

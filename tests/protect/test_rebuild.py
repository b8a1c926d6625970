"""``medlake rebuild`` recreates the lake from landing alone with the same content: into
a new folder, in place next to the old lake, and after the lake file is lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.protect.conftest import hospital_inputs, hospital_options
from tests.protect.lakes import assert_same_lake

from medlake.clock import CLOCK_ENV
from medlake.config import open_workspace
from medlake.errors import UsageError
from medlake.service.ingest import ingest_paths
from medlake.service.rebuild import NOT_DERIVED, rebuild, run_records

CLOCK = "2026-05-06T07:08:09.123000"


@pytest.fixture(scope="module")
def ingested(
    small_hospital: Path, empty_workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Clinical sources in one run, then the biobank's omics in another (its own source)."""
    root = tmp_path_factory.mktemp("ingested") / "ws"
    shutil.copytree(empty_workspace, root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CLOCK_ENV, CLOCK)
        first = ingest_paths(
            root, hospital_inputs(small_hospital), options=hospital_options(small_hospital)
        )
        second = ingest_paths(root, [small_hospital / "omics"], source_system="biobank")
    assert not first.failed
    assert not second.failed
    return root


def test_every_run_is_recorded_in_landing(ingested: Path, small_hospital: Path) -> None:
    records = run_records(open_workspace(ingested))
    assert len(records) == 2
    names = {i.original_name for i in records[0].inputs}
    assert {"patients.csv", "Patient.ndjson"} <= names
    assert "mapping" in records[0].options  # the CSV mapping is landed with the run
    assert records[1].source_system == "biobank"


@pytest.mark.slow
def test_rebuild_into_a_new_folder_gives_the_same_lake(
    ingested: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLOCK_ENV, CLOCK)
    result = rebuild(ingested, to=tmp_path / "rebuilt")
    assert not result.failed
    assert result.runs == 2
    assert result.differences == []
    assert_same_lake(ingested, tmp_path / "rebuilt", skip=NOT_DERIVED)


@pytest.mark.slow
def test_rebuild_in_place_after_the_lake_file_is_lost(
    ingested: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(ingested, root)
    (root / "lake.duckdb").unlink()  # the disk holding the lake died; landing survived
    monkeypatch.setenv(CLOCK_ENV, CLOCK)
    result = rebuild(root)
    assert result.previous_lake is None
    assert result.vocabulary.startswith("demo")
    assert not result.failed
    # A new first admin is made as 'medlake init' does, at the rebuild's time.
    assert_same_lake(ingested, root, skip=(*NOT_DERIVED, "access_"))


def test_rebuild_without_records_says_so(empty_workspace: Path, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    shutil.copytree(empty_workspace, root)
    with pytest.raises(UsageError, match="no ingest run records"):
        rebuild(root)

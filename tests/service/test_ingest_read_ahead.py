"""Large files read in a child process build exactly the lake that reading in-process does.

The reference is the in-process (thread) read-ahead: the synthetic EMR's FHIR export,
with malformed lines added, is ingested both ways into two workspaces at the same clock;
every table must be equal row for row, quarantine included, and a file that is no FHIR
at all must fail with the same message.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.ingest_workspace import ingest_only_workspace

from medlake.clock import CLOCK_ENV
from medlake.config import open_workspace
from medlake.service.ingest import IngestReport, ingest_paths
from medlake.service.workspace import open_lake
from medlake.synth import generate_hospital

CLOCK = "2026-01-02T03:04:05.678000"
#: History of runs (ids, times), not lake content; EMPI linking is not under test here.
NOT_CONTENT = {"qc_run", "qc_result", "audit_event", "audit_head"}


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=120, seed=5, workers=1)
    emr = out / "emr"
    with (emr / "Observation.ndjson").open("a", encoding="utf-8") as handle:
        handle.write('{"resourceType": "Observation", "id": "broken"\n')  # malformed JSON
        handle.write('{"resourceType": "Observation", "status": "final"}\n')  # no id
    return emr


def lake_state(root: Path) -> dict[str, object]:
    state: dict[str, object] = {}
    with open_lake(open_workspace(root)) as engine:
        for table in sorted(set(engine.list_tables()) - NOT_CONTENT):
            rows = engine.execute(engine.table(table)).to_pylist()
            state[table] = sorted((tuple(row.items()) for row in rows), key=repr)
    return state


def _read_in_threads(
    emr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[IngestReport, Path, Path]:
    """The reference: ``emr`` ingested with every file read in-process, at the fixed
    clock; its report, its workspace, and an empty twin for the read under test."""
    monkeypatch.setenv(CLOCK_ENV, CLOCK)
    template = ingest_only_workspace(tmp_path / "template")
    thread, process = tmp_path / "thread", tmp_path / "process"
    shutil.copytree(template, thread)
    shutil.copytree(template, process)
    monkeypatch.setattr("medlake.service.ingest._READ_IN_PROCESS_FROM", 1 << 60)
    return ingest_paths(thread, [emr], source_system="emr"), thread, process


def test_reading_in_a_process_builds_the_same_lake(
    emr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want, thread, process = _read_in_threads(emr, tmp_path, monkeypatch)
    monkeypatch.setattr("medlake.service.ingest._READ_IN_PROCESS_FROM", 0)
    got = ingest_paths(process, [emr], source_system="emr")
    assert not want.failed
    assert not got.failed
    assert [s.as_dict() | {"seconds": 0, "records_per_second": 0} for s in got.sources] == [
        s.as_dict() | {"seconds": 0, "records_per_second": 0} for s in want.sources
    ]
    state = lake_state(process)
    assert len(state["quarantine"]) >= 2  # type: ignore[arg-type]
    assert state == lake_state(thread)


def test_a_file_that_is_not_fhir_fails_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "in" / "not.ndjson"
    bad.parent.mkdir()
    bad.write_text("{ this is not json at all\n" * 5, encoding="utf-8")
    messages = []
    for name, threshold in (("thread", 1 << 60), ("process", 0)):
        root = ingest_only_workspace(tmp_path / name)
        monkeypatch.setattr("medlake.service.ingest._READ_IN_PROCESS_FROM", threshold)
        report = ingest_paths(root, [bad], format="fhir", source_system="emr")
        messages.append([(r.status, r.message) for r in report.files])
    assert messages[0] == messages[1]
    assert messages[0][0][0] == "failed"


def test_every_file_read_ahead_in_small_pieces_builds_the_same_lake(
    emr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of a few pieces each, landed several inputs ahead and read by the reading
    processes before their turn (also after a file read without them), give the lake
    that the in-process read gives; the ingest leaves DuckDB's checkpoint setting as it
    found it."""
    from medlake.ingest.formats import reader_for
    from medlake.service import ingest as service

    want, thread, process = _read_in_threads(emr, tmp_path, monkeypatch)
    # Chunks of 400 resources in pieces of 100 (inherited by the forked readers); the
    # smallest file stays below the threshold and is read in a thread, so the file after
    # it is started ahead by read_next rather than by a last chunk.
    monkeypatch.setattr(reader_for("fhir"), "chunk_size", 400)
    sizes = sorted(p.stat().st_size for p in emr.glob("*.ndjson"))
    monkeypatch.setattr("medlake.service.ingest._READ_IN_PROCESS_FROM", sizes[0] + 1)
    monkeypatch.setattr("medlake.service.ingest._READ_AHEAD_SMALL", frozenset())
    monkeypatch.setattr("medlake.service.ingest_groups._GROUP_FILE_BYTES", 0)  # none grouped
    ahead: list[int] = []
    reading = service._Ahead.reading

    def spy(self: service._Ahead, index: int, batch_id: str) -> object:
        started = reading(self, index, batch_id)
        if started is not None:
            ahead.append(index)
        return started

    monkeypatch.setattr(service._Ahead, "reading", spy)
    got = ingest_paths(process, [emr], source_system="emr")
    assert not want.failed
    assert not got.failed
    order = [Path(f.path).stat().st_size for f in got.files]
    in_thread = order.index(sizes[0])
    assert 0 < in_thread < len(order) - 1
    assert in_thread + 1 in ahead  # started when the file read in a thread began
    assert len(ahead) >= 4  # the others as their predecessor's last piece was parsed
    assert [s.as_dict() | {"seconds": 0, "records_per_second": 0} for s in got.sources] == [
        s.as_dict() | {"seconds": 0, "records_per_second": 0} for s in want.sources
    ]
    assert lake_state(process) == lake_state(thread)
    with open_lake(open_workspace(process)) as engine:
        setting = engine.run_sql("SELECT current_setting('checkpoint_threshold') AS v")
        assert setting.column("v").to_pylist() == ["16.0 MiB"]


def test_a_small_file_is_read_ahead_and_starts_the_next(
    emr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FHIR file below the size read in a reading process, but planned (from a 16th of
    it), is read ahead by reading processes too; being of one chunk, it has the file after
    it started at once, before its own turn. The lake equals the in-process read."""
    from medlake.ingest.formats import reader_for
    from medlake.service import ingest as service

    want, thread, process = _read_in_threads(emr, tmp_path, monkeypatch)
    monkeypatch.setattr(reader_for("fhir"), "chunk_size", 400)
    sizes = sorted(p.stat().st_size for p in emr.glob("*.ndjson"))
    monkeypatch.setattr("medlake.service.ingest._READ_IN_PROCESS_FROM", sizes[0] + 1)
    monkeypatch.setattr("medlake.service.ingest_groups._GROUP_FILE_BYTES", 0)  # none grouped
    events: list[tuple[str, int]] = []
    reading, read = service._Ahead.reading, service._Ahead.read

    def spy_reading(self: service._Ahead, index: int, batch_id: str) -> object:
        started = reading(self, index, batch_id)
        events.append(("turn", index) if started is None else ("turn ahead", index))
        return started

    def spy_read(self: service._Ahead, index: int, *args: object) -> object:
        events.append(("started", index))
        return read(self, index, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(service._Ahead, "reading", spy_reading)
    monkeypatch.setattr(service._Ahead, "read", spy_read)
    got = ingest_paths(process, [emr], source_system="emr")
    assert not got.failed
    order = [Path(f.path).stat().st_size for f in got.files]
    small = order.index(sizes[0])
    assert 0 < small < len(order) - 1
    with Path(got.files[small].path).open("rb") as handle:
        assert sum(1 for _ in handle) <= 400  # of one chunk
    assert ("turn ahead", small) in events  # read by reading processes before its turn
    assert events.index(("started", small + 1)) < events.index(("turn ahead", small))
    assert [s.as_dict() | {"seconds": 0, "records_per_second": 0} for s in got.sources] == [
        s.as_dict() | {"seconds": 0, "records_per_second": 0} for s in want.sources
    ]
    assert lake_state(process) == lake_state(thread)

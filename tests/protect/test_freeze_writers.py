"""The freeze (the ransomware watch's read-only mode) stops every writer, not only ingest.

The lake's writes pass one check in the engine (``Engine.guard_writes``, installed by
``open_workspace_engine``); writers of files (extracts, analysis outputs, resync,
rebuild) check before they start. Each writer below is called on a frozen copy of the
shared hospital lake: it must fail with the freeze's message, and leave every table
(row counts and content checksums) and its output folder as they were. After
``watch clear`` the same writers work again.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.cohort import example_path
from medlake.config import open_workspace
from medlake.errors import MedlakeError, WorkspaceFrozenError
from medlake.protect.watch import Alert, Finding
from medlake.service import access, mirror, watch
from medlake.service.backup import lake_fingerprint
from medlake.service.cohort import create_cohort, load_definition
from medlake.service.de import run_de
from medlake.service.empi import link_workspace
from medlake.service.empi_steward import merge_persons
from medlake.service.extract import extract_demo_cohort
from medlake.service.gwas_lake import LakePhenotype, run_gwas_lake
from medlake.service.ingest import ingest_paths
from medlake.service.quality import run_qc
from medlake.service.rebuild import rebuild
from medlake.service.vocabulary import load_vocabulary
from medlake.service.workspace import open_lake

AUDIT = {"audit_event", "audit_head"}  # the trail records the refusals
Writer = Callable[[Path, Path, Path], object]  # (workspace, hospital, scratch)


def _two_persons(root: Path) -> tuple[int, int]:
    with open_lake(open_workspace(root)) as engine:
        person = engine.table("person")
        ids = engine.execute(person.select("person_id").order_by("person_id").limit(2))
        first, second = ids.column("person_id").to_pylist()
        return int(first), int(second)


def _t2d(root: Path, hospital: Path, out: Path) -> object:
    return run_gwas_lake(
        root, LakePhenotype("t2d", case_cohort=example_path("t2d_hba1c_metformin")), out / "gwas"
    )


STEWARD = {"EMPI link", "EMPI merge", "cohort create", "extract", "GWAS outputs", "DE outputs"}

WRITERS: dict[str, Writer] = {
    "ingest": lambda root, hospital, out: ingest_paths(root, [hospital / "emr"]),
    "EMPI link": lambda root, hospital, out: link_workspace(root),
    "EMPI merge": lambda root, hospital, out: merge_persons(
        root, *_two_persons(root), actor="steward"
    ),
    "cohort create": lambda root, hospital, out: create_cohort(
        root, load_definition(example_path("t2d_hba1c_metformin")), "frozen-test"
    ),
    "extract": lambda root, hospital, out: extract_demo_cohort(root, out / "extract"),
    "QC run": lambda root, hospital, out: run_qc(root),
    "GWAS outputs": _t2d,
    "DE outputs": lambda root, hospital, out: run_de(
        out=out / "de",
        workspace_dir=root,
        case_cohort=example_path("t2d_hba1c_metformin"),
    ),
    "rebuild": lambda root, hospital, out: rebuild(root),
    "mirror resync": lambda root, hospital, out: mirror.resync_mirror(root),
    "user add": lambda root, hospital, out: access.add_user(root, "nurse1", "researcher"),
    "project create": lambda root, hospital, out: access.create_project(root, "p1", "T2D study"),
    "vocabulary load": lambda root, hospital, out: load_vocabulary(root, None),
}


def _as_role(writer: str) -> contextlib.AbstractContextManager[object]:
    """Who runs the writer: stewards link, merge, define cohorts, extract and analyze;
    the admin ingests and manages users, projects, vocabularies and protection."""
    role = Role.STEWARD if writer in STEWARD else Role.ADMIN
    return acting_as(Principal(f"test-{role.value}", role))


def _without_audit(fingerprint: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in fingerprint.items() if name not in AUDIT}


def _freeze(root: Path) -> dict[str, object]:
    """Freeze as the watch does on an alert (two files renamed to .locked)."""
    now = time.time()
    alert = Alert(
        reasons=["2 files renamed to ransom extensions"],
        findings=[Finding("ransom-extension", f"{root}/exports/a{i}.locked", now) for i in (1, 2)],
        since=now,
    )
    return watch.freeze(open_workspace(root), alert)


@pytest.fixture(scope="module")
def frozen_lake(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = hospital_lake.copy(tmp_path_factory.mktemp("frozen") / "ws")
    _freeze(root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_is_refused_while_frozen_and_changes_nothing(
    writer: str, frozen_lake: Path, hospital_lake, tmp_path: Path
) -> None:
    workspace = open_workspace(frozen_lake)
    with open_lake(workspace) as engine:
        before = lake_fingerprint(engine)
    with pytest.raises(WorkspaceFrozenError) as refused, _as_role(writer):
        WRITERS[writer](frozen_lake, hospital_lake.hospital, tmp_path)
    message = str(refused.value)
    assert "frozen read-only since" in message
    assert "medlake watch clear" in message
    assert "renamed to ransom extensions" in message
    with open_lake(workspace) as engine:
        after = lake_fingerprint(engine)
    assert _without_audit(after) == _without_audit(before)
    assert list(tmp_path.iterdir()) == []  # no output written


@pytest.mark.slow
def test_after_watch_clear_the_writers_work_again(hospital_lake, tmp_path: Path) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    _freeze(root)
    with pytest.raises(WorkspaceFrozenError):
        access.add_user(root, "nurse1", "researcher")
    watch.clear(root, note="reviewed: test alert, nothing encrypted")
    assert watch.freeze_status(root) is None
    out = tmp_path / "out"
    out.mkdir()
    access.add_user(root, "nurse1", "researcher")
    access.create_project(root, "p1", "T2D study")
    assert run_qc(root).run_id
    load_vocabulary(root, None)
    with _as_role("cohort create"):
        created = create_cohort(
            root, load_definition(example_path("t2d_hba1c_metformin")), "after-clear"
        )
        extract_demo_cohort(root, out / "extract")
    assert created.persons > 0
    assert (out / "extract").is_dir()
    with open_lake(open_workspace(root)) as engine:
        actions = [
            row["action"]
            for row in engine.execute(engine.table("audit_event").select("action")).to_pylist()
        ]
    # The trail recorded the alert and its review even while nothing else could be written.
    assert actions.index("watch.alert") < actions.index("watch.clear") < actions.index("user.add")


def test_a_clear_that_cannot_record_its_review_leaves_the_workspace_frozen(
    hospital_lake, tmp_path: Path
) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    _freeze(root)
    # Another process holds the lake, so the review cannot go to the audit trail.
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from medlake.config import open_workspace\n"
            "from medlake.service.workspace import open_lake\n"
            f"with open_lake(open_workspace({str(root)!r})):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MedlakeError):
            watch.clear(root, note="reviewed while another process held the lake")
        assert watch.freeze_status(root) is not None
    finally:
        holder.communicate("")
    watch.clear(root, note="reviewed")
    assert watch.freeze_status(root) is None
    with open_lake(open_workspace(root)) as engine:
        notes = [
            row["detail"]
            for row in engine.execute(
                engine.table("audit_event").filter(lambda t: t.action == "watch.clear")
            ).to_pylist()
        ]
    assert len(notes) == 1
    assert "reviewed" in notes[0]

"""``medlake rebuild``: recreate the lake from landing alone (the curated lake is derived).

Every ingest run lands a record of what it read (:mod:`medlake.ingest.run_record`): each
input's original name, source system, format, companions and receive time, and the CSV
mapping it used (landed too). A rebuild finds these records in ``landing/``, registers
every batch again with its original receive time (readers take it as the version of
records that carry none, so versions come out the same), and replays the runs in their
original order through the ordinary ingest: each run's files are laid out under their
original names in a scratch folder (hard links to the landed files, read back verified
against their SHA-256, from the mirror if the primary copy is bad) and ingested as then.

Not in landing, so not rebuilt from it: the vocabularies (Athena files are loaded, not
landed). They are copied from the old lake when it can still be opened, else the
bundled demo vocabulary is loaded and the operator must run ``medlake vocab load``
again; the rebuild says which.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medlake.access import Permission
from medlake.config import EngineSettings, Workspace, open_workspace, write_settings
from medlake.engine import Engine, open_engine, open_workspace_engine
from medlake.errors import MedlakeError, UsageError
from medlake.ingest.batches import BATCH_TABLE, RECEIVED, IngestBatch, find_batch
from medlake.ingest.landing_mirror import landed_names, verified_path
from medlake.ingest.run_record import MAGIC, RunRecord, parse_run_record
from medlake.log import get_logger
from medlake.schema import ALL_TABLES
from medlake.service.backup import fingerprint_differences, lake_fingerprint
from medlake.service.ingest import ingest_paths
from medlake.service.mirror import landing_store, refuse_if_frozen
from medlake.service.policy import require
from medlake.service.workspace import _first_admin, upgrade_schema_on
from medlake.vocab import load_demo_vocabulary

logger = get_logger(__name__)

# Not in landing, so carried over from the previous lake when it can be read: the
# vocabularies, users and projects, the data steward's linkage decisions, cohorts.
CARRIED = [spec.name for spec in ALL_TABLES if spec.group in ("vocabulary", "results")] + [
    "access_user", "access_token", "access_project", "access_project_member", "empi_decision",
]  # fmt: skip
# Tables a rebuild does not reproduce: the audit trail, QC history and schema migrations
# record events (when), not landed data.
NOT_DERIVED = ("audit_", "qc_", "schema_version")


@dataclass
class RebuildResult:
    lake: Path
    previous_lake: Path | None
    runs: int = 0
    batches: int = 0
    failed: list[str] = field(default_factory=list)
    vocabulary: str = ""  # "copied from the previous lake" or "demo"
    seconds: float = 0.0
    differences: list[str] | None = None  # against the previous lake, when it could be read

    def as_dict(self) -> dict[str, object]:
        return {
            "lake": str(self.lake), "previous_lake": str(self.previous_lake or ""),
            "runs": self.runs, "batches": self.batches, "failed": self.failed,
            "vocabulary": self.vocabulary, "seconds": round(self.seconds, 3),
            "differences": self.differences,
        }  # fmt: skip


def run_records(workspace: Workspace) -> list[RunRecord]:
    """Every ingest run recorded in landing, oldest first."""
    store = landing_store(workspace)
    records = []
    names: set[str] = set()
    for side in store.sides():
        names |= landed_names(side.root)
    for name in sorted(names):
        path = verified_path(store, name)
        with path.open("rb") as source:
            if source.read(len(MAGIC)) != MAGIC:
                continue
        record = parse_run_record(path.read_bytes())
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: (r.batches_after, r.received_at, r.started_at))


def rebuild(
    workspace_dir: Path | Workspace | None,
    *,
    to: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildResult:
    """Rebuild the lake from landing: in place (the old lake is kept aside) or into ``to``.

    ``to`` is a new workspace folder made with this workspace's settings (no mirror),
    reading this workspace's landing; the live lake is not touched.
    """
    started = time.perf_counter()
    workspace = (
        workspace_dir if isinstance(workspace_dir, Workspace) else open_workspace(workspace_dir)
    )
    if workspace.lake_path.exists():  # a lost lake has no users to ask: its files' owner rebuilds
        require(workspace, Permission.PROTECT)
    refuse_if_frozen(workspace)
    records = run_records(workspace)
    if not records:
        raise UsageError(f"no ingest run records in {workspace.landing_dir}: nothing to replay")
    if to is None:
        target = workspace
        previous = _set_aside(workspace.lake_path)
    else:
        target = _new_workspace(workspace, to)
        previous = workspace.lake_path
    result = RebuildResult(lake=target.lake_path, previous_lake=previous)
    with open_workspace_engine(target) as engine:
        upgrade_schema_on(engine)
        result.vocabulary = _vocabulary(engine, previous, target.root)
        result.batches = _register_batches(engine, records)
    with tempfile.TemporaryDirectory(prefix="medlake-rebuild-") as scratch:
        for index, record in enumerate(records):
            folders, options = _lay_out(workspace, record, Path(scratch) / f"run{index:05d}")
            report = ingest_paths(
                target, folders, format=record.format,
                source_system=record.source_system, options=options,
            )  # fmt: skip
            result.failed += [f"{r.path}: {r.message}" for r in report.failed]
            result.runs += 1
            if progress is not None:
                progress(index + 1, len(records))
    if previous is not None and previous.exists():
        result.differences = _compare(previous, target)
    result.seconds = time.perf_counter() - started
    return result


def _set_aside(lake: Path) -> Path | None:
    if not lake.exists():
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    aside = lake.with_name(f"{lake.name}.before-rebuild-{stamp}")
    lake.rename(aside)
    wal = lake.with_name(lake.name + ".wal")
    if wal.exists():
        wal.rename(aside.with_name(aside.name + ".wal"))
    return aside


def _new_workspace(workspace: Workspace, to: Path) -> Workspace:
    to = to.expanduser().resolve()
    if to.exists() and any(to.iterdir()):
        raise UsageError(f"{to} exists and is not empty; rebuild into a new folder")
    settings = workspace.settings.model_copy(deep=True)
    settings.paths.landing_mirror = None
    to.mkdir(parents=True, exist_ok=True)
    target = Workspace(root=to, settings=settings)
    for folder in target.data_dirs():
        folder.mkdir(parents=True, exist_ok=True)
    write_settings(target.settings_file, settings)
    if (workspace.root / "secrets").is_dir():  # the pseudonym key, which pseudonyms derive from
        shutil.copytree(workspace.root / "secrets", to / "secrets")
    return target


def _vocabulary(engine: Engine, previous: Path | None, root: Path) -> str:
    """Copy what landing does not hold from the previous lake (vocabularies, users,
    decisions, cohorts); without one, start as ``medlake init`` does."""
    if previous is not None and previous.exists():
        try:
            with open_engine(EngineSettings(path=str(previous)), root) as old:
                for name in CARRIED:
                    if old.has_table(name) and engine.has_table(name):
                        engine.load_arrow(name, old.to_batches(old.table(name)))
            return "copied from the previous lake"
        except MedlakeError as error:
            logger.warning("previous lake unreadable (%s); starting as a new workspace", error)
    load_demo_vocabulary(engine)
    _first_admin(engine)
    return (
        "demo; users, projects, linkage decisions and cohorts are not in landing "
        "(restore them from a backup, run 'medlake vocab load')"
    )


def _register_batches(engine: Engine, records: list[RunRecord]) -> int:
    """Register every recorded batch with its original receive time (status received)."""
    count = 0
    for record in records:
        for item in record.inputs:
            if find_batch(engine, item.batch_id) is not None:
                continue
            batch = IngestBatch(
                batch_id=item.batch_id, source_system=item.source_system, format=item.format,
                landed_sha256=item.sha256, landed_path=f"{item.sha256[:2]}/{item.sha256}",
                original_name=item.original_name, size_bytes=item.size_bytes,
                received_at=dt.datetime.fromisoformat(item.received_at), status=RECEIVED,
            )  # fmt: skip
            engine.load_arrow(BATCH_TABLE, batch.as_row())
            count += 1
    return count


def _lay_out(
    workspace: Workspace, record: RunRecord, folder: Path
) -> tuple[list[Path], dict[str, object]]:
    """The run's inputs under their original names, one folder per source system."""
    store = landing_store(workspace)
    roots: dict[str, Path] = {}
    for item in record.inputs:
        root = roots.setdefault(item.source_system, folder / item.source_system)
        target = root / item.original_name
        _place(verified_path(store, item.sha256), target)
        for companion in item.companions.values():
            _place(verified_path(store, companion["sha256"]), target.parent / companion["name"])
    options: dict[str, object] = {}
    for key, value in record.options.items():
        if isinstance(value, dict) and "landed_sha256" in value:
            options[key] = verified_path(store, str(value["landed_sha256"]))
        else:
            options[key] = value
    return list(roots.values()), options


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)


def _compare(previous: Path, target: Workspace) -> list[str]:
    with contextlib.ExitStack() as stack:
        old = stack.enter_context(open_engine(EngineSettings(path=str(previous)), target.root))
        new = stack.enter_context(open_workspace_engine(target))
        before = {k: v for k, v in lake_fingerprint(old).items() if not k.startswith(NOT_DERIVED)}
        after = {k: v for k, v in lake_fingerprint(new).items() if not k.startswith(NOT_DERIVED)}
    return fingerprint_differences(before, after)

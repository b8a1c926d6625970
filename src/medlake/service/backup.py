"""``medlake backup``: whole-workspace backups with BorgBackup, retention, restore, drills.

A backup is one Borg archive of the workspace folder — the lake file, ``landing/``,
``omics/``, ``exports/``, the audit trail's anchors, ``medlake.toml`` and ``secrets/`` —
taken while this process holds the lake open (DuckDB lets no other process write it) and
right after a ``CHECKPOINT``, so the copied lake file is the lake at that moment. Left
out: the repository itself when it lies inside the workspace, Borg's cache, and landing's
temporary files. Each archive carries ``protect/backup-manifest.json``: every table's row
count and checksum and the number of landed files, as they were when it was taken, so a
restore can prove it gave back that lake.

Retention (:mod:`medlake.protect.retention`) decides which archives to keep; Borg deletes
the others. A drill restores the newest archive into a scratch folder, opens the lake,
checks it against its manifest and against the live workspace, and reports RTO (time to
a usable restored lake) and RPO (age of the newest restorable point).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medlake.access import Permission
from medlake.audit.journal import drain
from medlake.config import SERVING_CACHE, Workspace, as_workspace, open_workspace
from medlake.engine import Engine
from medlake.engine.capabilities import SupportsCheckpoint
from medlake.errors import BackupError, UsageError
from medlake.ingest.landing_mirror import file_sha256, landed_names
from medlake.log import get_logger
from medlake.protect.borg import Archive, ArchiveStats, BorgRepository, archive_name
from medlake.protect.retention import RetentionPolicy, snapshots_to_keep
from medlake.service.mirror import protection_event, refuse_if_frozen
from medlake.service.policy import authorized, require
from medlake.service.workspace import open_lake

logger = get_logger(__name__)

MANIFEST = Path("protect") / "backup-manifest.json"
BORG_BASE = Path("protect") / "borg"
ARCHIVE_PREFIX = "medlake"


# ---------------------------------------------------------------------- the lake's fingerprint


def lake_fingerprint(engine: Engine) -> dict[str, dict[str, object]]:
    """Every table's row count and checksum (XOR of each column's value hashes).

    Order-independent, so two lakes with the same rows in another physical order agree;
    any changed, added or removed value changes it (short of a hash collision).
    """
    tables: dict[str, dict[str, object]] = {}
    for name in sorted(engine.list_tables()):
        table = engine.table(name)
        aggregates = {"rows": table.count()}
        for index, column in enumerate(table.columns):
            aggregates[f"c{index}"] = table[column].hash().bit_xor()
        row = engine.execute(table.aggregate(**aggregates)).to_pylist()[0]
        digest = 0
        for index in range(len(table.columns)):
            digest = (digest * 1_000_003 ^ (row[f"c{index}"] or 0)) & (2**64 - 1)
        tables[name] = {"rows": int(row["rows"]), "checksum": f"{digest:016x}"}
    return tables


def fingerprint_differences(
    expected: dict[str, dict[str, object]], actual: dict[str, dict[str, object]]
) -> list[str]:
    """Tables whose rows or checksum differ, or that one side lacks, as one line each."""
    lines = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if want != got:
            lines.append(f"{name}: expected {want}, found {got}")
    return lines


# ---------------------------------------------------------------------- repository


def repository_of(workspace: Workspace, passphrase_file: Path | None = None) -> BorgRepository:
    """The workspace's Borg repository, with its passphrase read from its file."""
    settings = workspace.settings.backup
    file = passphrase_file or _resolve(workspace, settings.passphrase_file)
    try:
        passphrase = file.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise BackupError(
            f"no backup passphrase at {file}: run 'medlake backup init' first"
        ) from exc
    return BorgRepository(_location(workspace), passphrase, workspace.root / BORG_BASE)


def _location(workspace: Workspace) -> str:
    location = workspace.settings.backup.repository
    if "://" in location:
        return location
    return str(_resolve(workspace, location))


@dataclass(frozen=True)
class BackupInit:
    repository: str
    passphrase_file: Path
    created: bool


@authorized(Permission.PROTECT)
def init_backups(workspace_dir: Path | Workspace | None) -> BackupInit:
    """Create the Borg repository (and a passphrase file, mode 600) if there is none."""
    workspace = as_workspace(workspace_dir)
    file = _resolve(workspace, workspace.settings.backup.passphrase_file)
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    repo = repository_of(workspace)
    if repo.exists():
        return BackupInit(repo.location, file, created=False)
    if "://" not in repo.location:
        Path(repo.location).parent.mkdir(parents=True, exist_ok=True)
    repo.init(workspace.settings.backup.encryption)
    return BackupInit(repo.location, file, created=True)


# ---------------------------------------------------------------------- run


@dataclass(frozen=True)
class BackupRun:
    archive: str
    time: dt.datetime
    stats: ArchiveStats
    seconds: float  # checkpoint, manifest and archive together
    tables: int
    landed_files: int

    def as_dict(self) -> dict[str, object]:
        return {
            "archive": self.archive,
            "time": self.time.isoformat(),
            "seconds": round(self.seconds, 3),
            "tables": self.tables,
            "landed_files": self.landed_files,
            **{k: v for k, v in asdict(self.stats).items() if k != "name"},
        }


def _excludes(workspace: Workspace, repo: BorgRepository) -> list[str]:
    patterns = [str(BORG_BASE), "sh:**/.landing-*", "sh:**/*.wal"]
    # Derived data rebuilt from the lake (patient 360's serving copy), safe to lose.
    patterns.append(SERVING_CACHE)
    if "://" not in repo.location:
        with contextlib.suppress(ValueError):
            patterns.append(str(Path(repo.location).resolve().relative_to(workspace.root)))
    return patterns


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _next_archive_time(workspace: Workspace) -> dt.datetime:
    """Now, in whole seconds (archive names carry whole seconds); after the workspace's
    last backup, waiting for the next second when that one was taken in this second
    (two backups in one second had the same name, and Borg refused the second)."""
    now = _utcnow().replace(microsecond=0)
    try:
        last = dt.datetime.fromisoformat(
            json.loads((workspace.root / MANIFEST).read_text("utf-8"))["time"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return now  # no backup before (or an unreadable manifest: Borg still checks)
    if now > last:
        return now
    following = last + dt.timedelta(seconds=1)
    time.sleep(max(0.0, (following - _utcnow()).total_seconds()))
    return max(following, _utcnow().replace(microsecond=0))


@authorized(Permission.PROTECT)
def run_backup(
    workspace_dir: Path | Workspace | None, *, at: dt.datetime | None = None
) -> BackupRun:
    """Take one backup of the whole workspace; ``at`` (naive UTC) names it (default now)."""
    workspace = as_workspace(workspace_dir)
    repo = repository_of(workspace)
    when = at.replace(microsecond=0) if at is not None else _next_archive_time(workspace)
    name = archive_name(ARCHIVE_PREFIX, when)
    started = time.perf_counter()
    with open_lake(workspace) as engine:
        if not isinstance(engine, SupportsCheckpoint):
            raise BackupError(
                f"backups of a {engine.name} lake are not supported: back up its database "
                "with its own tools; 'medlake rebuild' recreates the lake from landing"
            )
        drain(engine)  # a served lake's journaled audit events go into the archived lake
        fingerprint = lake_fingerprint(engine)
        landed = len(landed_names(workspace.landing_dir))
        manifest = {"archive": name, "time": when.isoformat(), "landed_files": landed,
                    "tables": fingerprint}  # fmt: skip
        manifest_path = workspace.root / MANIFEST
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True), "utf-8")
        # Holding the connection keeps other writers out until the archive is made.
        engine.checkpoint()
        stats = repo.create(
            name,
            ["."],
            cwd=workspace.root,
            excludes=_excludes(workspace, repo),
            compression=workspace.settings.backup.compression,
            timestamp=when,
        )
        seconds = time.perf_counter() - started
        protection_event(
            engine, workspace=workspace, action="backup.run", object_type="backup", object_id=name,
            detail={"seconds": round(seconds, 3), "added_bytes": stats.deduplicated_size,
                    "files": stats.files},
        )  # fmt: skip
    return BackupRun(name, when, stats, seconds, len(fingerprint), landed)


@authorized(Permission.PROTECT)
def list_backups(workspace_dir: Path | Workspace | None) -> list[Archive]:
    """The archives in the repository, oldest first."""
    return repository_of(as_workspace(workspace_dir)).archives()


# ---------------------------------------------------------------------- prune, check


@dataclass
class PruneResult:
    kept: list[tuple[Archive, list[str]]] = field(default_factory=list)
    deleted: list[Archive] = field(default_factory=list)
    dry_run: bool = False


def retention_policy(workspace: Workspace) -> RetentionPolicy:
    backup = workspace.settings.backup
    return RetentionPolicy.from_spans(
        backup.keep_hourly, backup.keep_daily, backup.keep_monthly, backup.keep_yearly
    )


@authorized(Permission.PROTECT)
def prune_backups(
    workspace_dir: Path | Workspace | None,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Delete the archives the retention policy does not keep (all of them, or none: dry run)."""
    workspace = as_workspace(workspace_dir)
    refuse_if_frozen(workspace)
    repo = repository_of(workspace)
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    archives = repo.archives()
    keep = snapshots_to_keep([a.time for a in archives], now, retention_policy(workspace))
    result = PruneResult(dry_run=dry_run)
    for archive in archives:
        if archive.time in keep:
            result.kept.append((archive, keep[archive.time]))
        else:
            result.deleted.append(archive)
    if result.deleted and not dry_run:
        repo.delete([a.name for a in result.deleted])
        with open_lake(workspace) as engine:
            protection_event(
                engine, workspace=workspace, action="backup.prune", object_type="backup_repository",
                object_id=repo.location, detail={"deleted": [a.name for a in result.deleted]},
            )  # fmt: skip
    return result


@dataclass(frozen=True)
class CheckResult:
    healthy: bool
    messages: list[str]
    archives: int


@authorized(Permission.PROTECT)
def check_backups(
    workspace_dir: Path | Workspace | None, *, verify_data: bool = False
) -> CheckResult:
    """``borg check`` of the repository and its archives (``verify_data`` reads every chunk)."""
    workspace = as_workspace(workspace_dir)
    repo = repository_of(workspace)
    healthy, messages = repo.check(verify_data=verify_data)
    archives = len(repo.archives()) if healthy else 0
    with open_lake(workspace) as engine:
        protection_event(
            engine, workspace=workspace, action="backup.check", object_type="backup_repository",
            object_id=repo.location, detail={"verify_data": verify_data, "messages": messages[-5:]},
            outcome="ok" if healthy else "failed",
        )  # fmt: skip
    return CheckResult(healthy, messages, archives)


# ---------------------------------------------------------------------- restore, drill


@dataclass(frozen=True)
class RestoreResult:
    archive: Archive
    path: Path
    seconds: float  # extract, open and verify: the RTO of this restore
    tables: int
    landed_files: int


def restore_backup(
    workspace_dir: Path | Workspace | None,
    to: Path,
    *,
    archive: str | None = None,
    repository: str | None = None,
    passphrase_file: Path | None = None,
) -> RestoreResult:
    """Restore an archive (the newest by default) into the new folder ``to`` and verify it.

    The restored lake must match the archive's manifest table by table and every
    restored landed file its SHA-256; otherwise :class:`BackupError`. ``repository`` and
    ``passphrase_file`` serve when the workspace itself is lost.
    """
    if repository is None:  # from a named repository, its passphrase is the authority
        require(workspace_dir, Permission.PROTECT)
    to = to.expanduser().resolve()
    if to.exists() and any(to.iterdir()):
        raise UsageError(f"{to} exists and is not empty; restore into a new folder")
    if repository is not None:
        if passphrase_file is None:
            raise UsageError("--repository needs --passphrase-file")
        base = Path(tempfile.mkdtemp(prefix="medlake-borg-"))
        repo = BorgRepository(repository, passphrase_file.read_text("utf-8").strip(), base)
    else:
        repo = repository_of(as_workspace(workspace_dir), passphrase_file)
    archives = repo.archives()
    if not archives:
        raise BackupError(f"the repository {repo.location} holds no backup")
    chosen = archives[-1] if archive is None else _find(archives, archive)
    started = time.perf_counter()
    repo.extract(chosen.name, to)
    tables, landed = _verify_restored(to)
    return RestoreResult(chosen, to, time.perf_counter() - started, tables, landed)


def _find(archives: list[Archive], name: str) -> Archive:
    for archive in archives:
        if archive.name == name:
            return archive
    raise UsageError(f"no backup named {name!r} (see 'medlake backup list')")


def _verify_restored(root: Path) -> tuple[int, int]:
    """Open the restored lake, compare it with the manifest, re-hash landing."""
    workspace = open_workspace(root)
    manifest = json.loads((root / MANIFEST).read_text("utf-8"))
    with open_lake(workspace) as engine:
        differences = fingerprint_differences(manifest["tables"], lake_fingerprint(engine))
    if differences:
        raise BackupError(f"the restored lake differs from its backup: {differences[0]}")
    names = landed_names(workspace.landing_dir)
    for name in names:
        if file_sha256(workspace.landing_dir / name[:2] / name) != name:
            raise BackupError(f"restored landed file {name} does not match its SHA-256")
    if len(names) != manifest["landed_files"]:
        raise BackupError(
            f"the backup held {manifest['landed_files']} landed files, {len(names)} came back"
        )
    return len(manifest["tables"]), len(names)


@dataclass
class DrillResult:
    archive: str
    archive_time: dt.datetime
    rpo_seconds: float  # age of the newest restorable point
    rto_seconds: float  # restore + open + verify
    tables: int
    landed_files: int
    changed_since: list[str]  # tables the live lake has changed since the backup
    landed_since: int  # files landed after the backup
    missing_from_live: list[str]  # landed files in the backup that the live landing lacks

    @property
    def ok(self) -> bool:
        return not self.missing_from_live

    def summary(self) -> str:
        return (
            f"restore drill of {self.archive}: RTO {self.rto_seconds:.1f} s, "
            f"RPO {self.rpo_seconds:.0f} s; {self.tables} tables and {self.landed_files} "
            f"landed files verified"
        )

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["archive_time"] = self.archive_time.isoformat()
        data["ok"] = self.ok
        return data


@authorized(Permission.PROTECT)
def drill(
    workspace_dir: Path | Workspace | None,
    *,
    scratch: Path | None = None,
    keep: bool = False,
    now: dt.datetime | None = None,
) -> DrillResult:
    """Restore the newest backup to a scratch folder, verify it, compare with the live lake."""
    workspace = as_workspace(workspace_dir)
    parent = Path(tempfile.mkdtemp(prefix="medlake-drill-", dir=scratch))
    target = parent / "restored"
    try:
        restored = restore_backup(workspace, target)
        now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        manifest = json.loads((target / MANIFEST).read_text("utf-8"))
        with open_lake(workspace) as engine:
            live = lake_fingerprint(engine)
            changed = [
                line.split(":")[0]
                for line in fingerprint_differences(manifest["tables"], live)
                if not line.startswith("audit_")  # the drill's own events
            ]
            backed_up = landed_names(open_workspace(target).landing_dir)
            live_landed = landed_names(workspace.landing_dir)
            result = DrillResult(
                archive=restored.archive.name,
                archive_time=restored.archive.time,
                rpo_seconds=(now - restored.archive.time).total_seconds(),
                rto_seconds=restored.seconds,
                tables=restored.tables,
                landed_files=restored.landed_files,
                changed_since=changed,
                landed_since=len(live_landed - backed_up),
                missing_from_live=sorted(backed_up - live_landed),
            )
            protection_event(
                engine, workspace=workspace,
                action="backup.drill", object_type="backup", object_id=result.archive,
                detail={"rto_seconds": round(result.rto_seconds, 3),
                        "rpo_seconds": round(result.rpo_seconds), "ok": result.ok},
                outcome="ok" if result.ok else "failed",
            )  # fmt: skip
        return result
    finally:
        if not keep:
            shutil.rmtree(parent, ignore_errors=True)


@authorized(Permission.PROTECT)
def backup_and_drill(workspace_dir: Path | Workspace | None) -> tuple[BackupRun, DrillResult]:
    """For the demo: make sure a repository exists, take a backup, run a restore drill."""
    workspace = as_workspace(workspace_dir)
    init_backups(workspace)
    run = run_backup(workspace)
    return run, drill(workspace)


def _resolve(workspace: Workspace, setting: str) -> Path:
    path = Path(setting).expanduser()
    return path if path.is_absolute() else workspace.root / path


"""Workspace settings: the typed form of ``medlake.toml``.

A workspace is a directory holding ``medlake.toml``, ``landing/``, the lake (by default
``lake.duckdb``), ``omics/``, ``exports/`` and ``backups/``. This module reads and writes
the settings and resolves which directory is the workspace; it does no other I/O.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medlake.errors import ConfigError, NotAWorkspaceError

SETTINGS_FILE = "medlake.toml"
FREEZE_FILE = "frozen.json"  # under protect/: the ransomware watch's read-only mode
#: Derived data a server keeps beside the lake and rebuilds from it (patient 360's
#: serving copy): not backed up, not watched, safe to delete while no server runs.
SERVING_CACHE = "cache"
WORKSPACE_ENV = "MEDLAKE_WORKSPACE"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkspaceSection(_Section):
    name: str = "medlake"
    language: Literal["en", "zh"] = "en"


class EngineSettings(_Section):
    """Which engine holds the lake. Paths are relative to the workspace."""

    kind: Literal["duckdb", "spark", "mysql"] = "duckdb"
    path: str = "lake.duckdb"
    threads: int | None = Field(
        default=None, ge=1, description="DuckDB threads; all cores if unset"
    )
    memory_limit: str | None = Field(default=None, description="DuckDB memory limit, e.g. '8GB'")
    spark_master: str = "local[*]"
    spark_warehouse: str = "spark-warehouse"
    mysql_url: str | None = Field(default=None, description="mysql://user@host:port/database")


class PathsSection(_Section):
    landing: str = "landing"
    omics: str = "omics"
    exports: str = "exports"
    backups: str = "backups"
    landing_mirror: str | None = None


class MirrorSection(_Section):
    """Mirrored landing (the mirror root itself is ``paths.landing_mirror``)."""

    on_failure: Literal["degrade", "refuse"] = "degrade"
    storage_options: dict[str, str | int | float | bool | dict[str, object]] = Field(
        default_factory=dict,
        description="options for the fsspec driver of a URL mirror, e.g. endpoint_url",
    )


class BackupSection(_Section):
    """Backups with BorgBackup and how long they are kept (``medlake backup``)."""

    repository: str = "backups/borg"
    passphrase_file: str = "secrets/backup-passphrase"
    encryption: str = "repokey-blake2"
    compression: str = "zstd,3"
    keep_hourly: str = Field(default="7d", description="keep one backup per hour for this long")
    keep_daily: str = Field(default="2y", description="keep one backup per day for this long")
    keep_monthly: str = Field(default="10y", description="one backup per month for this long")
    keep_yearly: str = Field(default="29y", description="keep one backup per year for this long")


class WatchSection(_Section):
    """The ransomware watch (``medlake watch``): when it freezes the workspace."""

    in_serve: bool = Field(default=True, description="run the watch inside medlake serve")
    interval_seconds: float = Field(default=2.0, gt=0)
    window_seconds: float = Field(default=60.0, gt=0)
    rename_burst: int = Field(default=3, ge=1)
    rewrite_limit: int = Field(default=1, ge=1)
    entropy_burst: int = Field(default=5, ge=1)
    entropy_bits: float = Field(default=7.5, gt=0, le=8)
    extensions: list[str] = Field(
        default_factory=lambda: [
            ".locked", ".crypto", ".crypt", ".cry", ".kraken", ".exx", ".encrypted",
            ".enc", ".locky", ".wncry", ".wcry", ".cerber", ".zepto", ".ryk", ".lockbit",
        ]
    )


class PrivacySection(_Section):
    """De-identification (``medlake.privacy``): small cells, k, date shifts, generalization."""

    small_cell_threshold: int = Field(
        default=5, ge=1, description="counts from 1 to this minus 1 show as '<N'"
    )
    k: int = Field(default=5, ge=1, description="k-anonymity of extracts over quasi-identifiers")
    date_shift_max_days: int = Field(
        default=365, ge=1, description="each person's dates move by 1 to this many days"
    )
    age_band_width: int = Field(default=5, ge=1)
    top_age: int = Field(default=90, ge=1, description="ages from here up pool into one band")
    birth_year_band: int = Field(default=5, ge=1, description="1 keeps the year")
    region_digits: int = Field(default=2, ge=0, description="leading characters of region codes")
    secret_file: str = Field(
        default="secrets/pseudonym.key", description="the workspace's pseudonym secret"
    )


class CohortSection(_Section):
    """Cohort counts (``medlake.service.cohort``): the result cache and concurrent statements."""

    cache_results: bool = Field(
        default=True, description="keep counts until the tables they read change"
    )
    concurrent_statements: int | None = Field(
        default=None,
        ge=1,
        description="cohort statements run at once per process (unset: twice the cores)",
    )
    step_cache_mb: int = Field(
        default=256,
        ge=0,
        description="memory for count steps shared across definitions (0: one statement each)",
    )


class AuditSection(_Section):
    """Anchoring the audit chain's head outside the lake (``medlake.audit``)."""

    anchor_every: int = Field(
        default=100, ge=1, description="anchor the head after this many new events"
    )
    anchor_copies: list[str] = Field(
        default_factory=list, description="more anchor files, e.g. on the mirror root"
    )


class QualitySection(_Section):
    """Data-quality checks (``medlake.quality``)."""

    run_after_ingest: bool = True
    thresholds: str = Field(
        default="quality/thresholds.toml",
        description="workspace overrides of the shipped thresholds, if the file exists",
    )


class EmpiSection(_Section):
    """Patient linkage (``medlake.empi``): thresholds, survivorship, when it runs."""

    link_threshold: float = Field(
        default=0.99, gt=0, le=1, description="match probability at or above which records link"
    )
    review_threshold: float = Field(
        default=0.5, gt=0, le=1, description="pairs from here up to link_threshold are reviewed"
    )
    link_after_ingest: bool = Field(
        default=True, description="link each ingest run's new source patients right after it"
    )
    live_link_delay_seconds: float = Field(
        default=30.0, ge=0,
        description="live ingests (a Bundle POSTed to the API, a listener flush) link in one "
        "background job, run once no live ingest has come for this long",
    )  # fmt: skip
    live_link_max_delay_seconds: float = Field(
        default=300.0, ge=0,
        description="a live link job runs at the latest this long after the first live "
        "ingest it links (a feed that never pauses)",
    )  # fmt: skip
    survivorship: Literal["most_recent", "most_frequent", "most_trusted"] = "most_trusted"
    trusted_sources: list[str] = Field(
        default_factory=lambda: ["his", "emr", "lis"],
        description="most trusted first, for survivorship = most_trusted",
    )
    train_max_pairs: float = Field(
        default=1e6, gt=0, description="random pairs for estimating u-probabilities"
    )
    retrain_growth: float = Field(
        default=2.0,
        ge=0,
        description="retrain before linking once the lake holds this many times the records "
        "the model was trained on (0: never)",
    )
    name_frequency_adjustment: bool = Field(
        default=False,
        description="weigh an agreeing name by how common it is (Splink term-frequency "
        "adjustments; changing it retrains)",
    )


class JobsSection(_Section):
    """Background jobs of ``medlake serve``: how long their working files are kept."""

    keep_days: int = Field(
        default=30, ge=0,
        description="delete finished jobs' uploads and failed jobs' files after this many "
        "days (0: keep them)",
    )  # fmt: skip
    cleanup_interval_minutes: float = Field(
        default=60.0, gt=0, description="how often the server runs the cleanup"
    )


class LayoutSection(_Section):
    """The lake's tables kept in person order (patient 360 reads one person's rows)."""

    reorder_share: float = Field(
        default=0.05, ge=0, le=1,
        description="rewrite a person table in person order once more than this share of "
        "its rows is out of order",
    )  # fmt: skip
    min_rows: int = Field(
        default=250_000, ge=0,
        description="tables with fewer rows are left as they are (a lookup reads a few "
        "row groups at most)",
    )  # fmt: skip
    after_ingest: bool = Field(
        default=True, description="check the order (and rewrite) at the end of each ingest run"
    )
    interval_minutes: float = Field(
        default=60.0, ge=0,
        description="how often medlake serve checks the order (0: never while serving)",
    )  # fmt: skip
    write_wait_seconds: float = Field(
        default=600.0, gt=0,
        description="a write that meets a table's person-order rewrite waits this long for "
        "it (and a rewrite this long for the writes before it), then fails: 409 through "
        "the API, exit 75",
    )  # fmt: skip


class Patient360Section(_Section):
    """Patient 360 (``medlake.service.patient360``): the serving copy of the timeline."""

    serving_copy: bool = Field(
        default=True,
        description="keep a person-clustered copy of every timeline while serving (built "
        "or verified in the background at start, rebuilt after writes; used only while it "
        "equals the lake)",
    )


class ListenSection(_Section):
    """The HL7 v2 (MLLP) listener ``medlake serve`` runs beside the API; ``medlake listen``
    takes the options it is not given from here too."""

    port: int | None = Field(
        default=None, ge=0, le=65535,
        description="MLLP port medlake serve listens on for HL7 v2 (unset: no listener; "
        "0: a free port, logged)",
    )  # fmt: skip
    host: str = Field(default="127.0.0.1", description="address the listener binds")
    source_system: str = Field(
        default="lis", min_length=1, max_length=50, pattern=r"^[a-z0-9_-]+$",
        description="the source system the messages come from",
    )  # fmt: skip
    ingest_every_seconds: float = Field(
        default=5.0, gt=0, description="seconds between ingests of the landed messages"
    )


class Settings(_Section):
    """Everything ``medlake.toml`` can say; every field has a working default."""

    workspace: WorkspaceSection = WorkspaceSection()
    engine: EngineSettings = EngineSettings()
    paths: PathsSection = PathsSection()
    audit: AuditSection = AuditSection()
    quality: QualitySection = QualitySection()
    empi: EmpiSection = EmpiSection()
    mirror: MirrorSection = MirrorSection()
    backup: BackupSection = BackupSection()
    watch: WatchSection = WatchSection()
    privacy: PrivacySection = PrivacySection()
    jobs: JobsSection = JobsSection()
    cohort: CohortSection = CohortSection()
    layout: LayoutSection = LayoutSection()
    patient360: Patient360Section = Patient360Section()
    listen: ListenSection = ListenSection()


def read_settings(path: Path) -> Settings:
    """Parse ``medlake.toml`` at ``path``; errors name the file and the bad field."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}: setting '{where}': {first['msg']}") from exc


def write_settings(path: Path, settings: Settings) -> None:
    """Write ``settings`` as TOML, leaving out unset optional values."""
    path.write_text(tomli_w.dumps(settings.model_dump(exclude_none=True)), encoding="utf-8")


@dataclass(frozen=True)
class Workspace:
    """An existing workspace directory and its settings, with its paths resolved."""

    root: Path
    settings: Settings

    @property
    def settings_file(self) -> Path:
        return self.root / SETTINGS_FILE

    def _path(self, relative: str) -> Path:
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else self.root / candidate

    @property
    def landing_dir(self) -> Path:
        return self._path(self.settings.paths.landing)

    @property
    def omics_dir(self) -> Path:
        return self._path(self.settings.paths.omics)

    @property
    def exports_dir(self) -> Path:
        return self._path(self.settings.paths.exports)

    @property
    def backups_dir(self) -> Path:
        return self._path(self.settings.paths.backups)

    @property
    def landing_mirror_dir(self) -> Path | None:
        """The mirror root when it is a local folder (None without one, or for a URL)."""
        mirror = self.settings.paths.landing_mirror
        if mirror is None or is_url(mirror):
            return None
        return self._path(mirror)

    @property
    def landing_mirror_url(self) -> str | None:
        """The mirror root as fsspec reads it: a URL (``s3://bucket/prefix``, ``sftp://``,
        ``file://``) as written, a plain path resolved against the workspace."""
        mirror = self.settings.paths.landing_mirror
        if mirror is None or is_url(mirror):
            return mirror
        return str(self._path(mirror))

    @property
    def freeze_file(self) -> Path:
        """Present while the ransomware watch holds the workspace read-only."""
        return self.protect_dir / FREEZE_FILE

    def frozen_message(self) -> str | None:
        """Why writes are refused now (the workspace is frozen), or None."""
        message = frozen_message(self.freeze_file)
        return None if message is None else f"{self.root}: {message}"

    @property
    def protect_dir(self) -> Path:
        """Protection state: mirror health, the freeze file, the watch's baseline."""
        return self.root / "protect"

    @property
    def lake_path(self) -> Path:
        return self._path(self.settings.engine.path)

    @property
    def spark_warehouse_dir(self) -> Path:
        return self._path(self.settings.engine.spark_warehouse)

    def data_dirs(self) -> list[Path]:
        return [self.landing_dir, self.omics_dir, self.exports_dir, self.backups_dir]


def resolve_workspace_dir(option: str | Path | None) -> Path:
    """The workspace directory: the option, else ``$MEDLAKE_WORKSPACE``, else the cwd."""
    if option:
        return Path(option).expanduser().resolve()
    env = os.environ.get(WORKSPACE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path.cwd().resolve()


def open_workspace(directory: str | Path | None = None) -> Workspace:
    """Open the workspace at ``directory`` (resolved as above) or fail with one clear line."""
    root = resolve_workspace_dir(directory)
    settings_file = root / SETTINGS_FILE
    if not settings_file.is_file():
        raise NotAWorkspaceError(
            f"{root} is not a medlake workspace (no {SETTINGS_FILE}); "
            f"create one with 'medlake init {root}' or pass --workspace"
        )
    return Workspace(root=root, settings=read_settings(settings_file))


def as_workspace(value: str | Path | Workspace | None) -> Workspace:
    """``value`` when it is an open :class:`Workspace`, else :func:`open_workspace` of it.

    Service functions take either, so the CLI passes a folder and the server its open one.
    """
    return value if isinstance(value, Workspace) else open_workspace(value)


def is_url(location: str) -> bool:
    """Whether a configured location is a URL (``scheme://...``) rather than a path."""
    head, sep, _ = location.partition("://")
    return bool(sep) and head.replace("+", "").isalnum() and len(head) > 1


def frozen_message(freeze_file: Path | None) -> str | None:
    """The refusal message while ``freeze_file`` exists (the workspace is frozen), else None.

    One ``stat`` when not frozen: every write of the lake asks (see ``Engine.guard_writes``).
    """
    if freeze_file is None or not freeze_file.exists():
        return None
    try:
        freeze = json.loads(freeze_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        freeze = {}
    return (
        f"the workspace is frozen read-only since {freeze.get('since', '?')} "
        f"({freeze.get('reason', 'ransomware watch alert')}); nothing is written until an "
        "operator has reviewed it and run 'medlake watch clear' (while 'medlake serve' runs: "
        "an admin's 'Clear the freeze' on the dashboard, or POST /api/v1/protect/watch/clear)"
    )

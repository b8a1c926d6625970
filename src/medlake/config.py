"""Workspace settings: the typed form of ``medlake.toml``.

A workspace is a directory holding ``medlake.toml``, ``landing/``, the lake (by default
``lake.duckdb``), ``omics/``, ``exports/`` and ``backups/``. This module reads and writes
the settings and resolves which directory is the workspace; it does no other I/O.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medlake.errors import ConfigError, NotAWorkspaceError

SETTINGS_FILE = "medlake.toml"
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


class Settings(_Section):
    """Everything ``medlake.toml`` can say; every field has a working default."""

    workspace: WorkspaceSection = WorkspaceSection()
    engine: EngineSettings = EngineSettings()
    paths: PathsSection = PathsSection()


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

"""Settings round-trip and workspace resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from medlake.config import (
    Settings,
    open_workspace,
    read_settings,
    resolve_workspace_dir,
    write_settings,
)
from medlake.errors import ConfigError, NotAWorkspaceError


def test_settings_round_trip(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "engine": {"kind": "spark", "spark_master": "local[2]"},
            "paths": {"landing_mirror": "/mnt/b"},
        }
    )
    write_settings(tmp_path / "medlake.toml", settings)
    assert read_settings(tmp_path / "medlake.toml") == settings


def test_unknown_setting_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "medlake.toml").write_text("[engine]\nknd = 'duckdb'\n")
    with pytest.raises(ConfigError, match=r"engine\.knd"):
        read_settings(tmp_path / "medlake.toml")


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "medlake.toml").write_text("[engine\n")
    with pytest.raises(ConfigError, match=r"medlake\.toml: not valid TOML"):
        read_settings(tmp_path / "medlake.toml")


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDLAKE_WORKSPACE", raising=False)
    assert resolve_workspace_dir(None) == tmp_path.resolve()
    monkeypatch.setenv("MEDLAKE_WORKSPACE", str(tmp_path / "env"))
    assert resolve_workspace_dir(None) == (tmp_path / "env").resolve()
    assert resolve_workspace_dir(tmp_path / "opt") == (tmp_path / "opt").resolve()


def test_relative_and_absolute_paths(tmp_path: Path) -> None:
    write_settings(
        tmp_path / "medlake.toml",
        Settings.model_validate({"paths": {"backups": "/srv/backups", "landing": "in"}}),
    )
    workspace = open_workspace(tmp_path)
    assert workspace.backups_dir == Path("/srv/backups")
    assert workspace.landing_dir == tmp_path.resolve() / "in"


def test_missing_workspace(tmp_path: Path) -> None:
    with pytest.raises(NotAWorkspaceError, match="medlake init"):
        open_workspace(tmp_path)

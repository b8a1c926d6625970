"""The workspace commands as a user meets them: init, status, schema, errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from medlake.errors import ConfigError, NotAWorkspaceError, WorkspaceExistsError
from medlake.schema import ALL_TABLES, SCHEMA_VERSION


def test_init_writes_settings_folders_and_lake(medlake, tmp_path: Path) -> None:
    target = tmp_path / "ws"
    result = medlake("init", str(target))
    assert result.returncode == 0, result.stderr
    settings = tomllib.loads((target / "medlake.toml").read_text())
    assert settings["engine"]["kind"] == "duckdb"
    for folder in ("landing", "omics", "exports", "backups"):
        assert (target / folder).is_dir()
    assert (target / "lake.duckdb").is_file()


def test_status_lists_every_table_of_the_schema(medlake, tmp_path: Path) -> None:
    target = tmp_path / "ws"
    medlake("init", str(target))
    result = medlake("status", "--json", "--workspace", str(target))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["schema_version"] == SCHEMA_VERSION
    assert set(summary["tables"]) == {spec.name for spec in ALL_TABLES}
    assert summary["tables"]["concept"] > 0  # demo vocabulary loaded at init
    assert summary["tables"]["person"] == 0


def test_command_outside_a_workspace_fails_with_one_clear_line(medlake, tmp_path: Path) -> None:
    result = medlake("status", "--workspace", str(tmp_path / "nowhere"))
    assert result.returncode == NotAWorkspaceError.exit_code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "is not a medlake workspace" in lines[0]
    assert "Traceback" not in result.stderr


def test_workspace_comes_from_environment_then_cwd(medlake, tmp_path: Path) -> None:
    target = tmp_path / "ws"
    medlake("init", str(target))
    from_env = medlake("status", "--json", env={"MEDLAKE_WORKSPACE": str(target)})
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["workspace"] == str(target.resolve())
    from_cwd = medlake("status", "--json", cwd=target)
    assert from_cwd.returncode == 0, from_cwd.stderr
    assert json.loads(from_cwd.stdout)["workspace"] == str(target.resolve())


def test_init_refuses_an_existing_workspace(medlake, tmp_path: Path) -> None:
    target = tmp_path / "ws"
    assert medlake("init", str(target)).returncode == 0
    again = medlake("init", str(target))
    assert again.returncode == WorkspaceExistsError.exit_code
    assert "already a medlake workspace" in again.stderr


def test_bad_setting_is_named_with_its_file(medlake, tmp_path: Path) -> None:
    target = tmp_path / "ws"
    medlake("init", str(target))
    settings_file = target / "medlake.toml"
    settings_file.write_text(
        settings_file.read_text().replace('kind = "duckdb"', 'kind = "oracle"')
    )
    result = medlake("status", "--workspace", str(target))
    assert result.returncode == ConfigError.exit_code
    assert "engine.kind" in result.stderr
    assert "medlake.toml" in result.stderr


def test_schema_status_and_upgrade_when_current(medlake, tmp_path: Path) -> None:
    target = tmp_path / "ws"
    medlake("init", str(target), "--no-demo-vocabulary")
    status = medlake("schema", "status", "-w", str(target))
    assert status.returncode == 0, status.stderr
    assert "up to date" in status.stdout
    upgrade = medlake("schema", "upgrade", "-w", str(target))
    assert upgrade.returncode == 0, upgrade.stderr
    assert "nothing to do" in upgrade.stdout


def test_unknown_command_is_a_usage_error(medlake) -> None:
    result = medlake("frobnicate")
    assert result.returncode != 0
    assert "No such command" in result.stderr


@pytest.mark.spark
def test_workspace_on_spark_holds_the_same_lake(medlake, tmp_path: Path) -> None:
    target = tmp_path / "ws"
    created = medlake("init", str(target), "--engine", "spark")
    assert created.returncode == 0, created.stderr
    result = medlake("status", "--json", "--workspace", str(target))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["engine"] == "spark"
    assert set(summary["tables"]) == {spec.name for spec in ALL_TABLES}
    demo_concepts = (
        Path(__file__).resolve().parents[2] / "src/medlake/vocab/data/CONCEPT.csv"
    ).read_text(encoding="utf-8").count("\n") - 1
    assert summary["tables"]["concept"] == demo_concepts

"""The ``medlake ingest`` and ``medlake quarantine`` commands, and retry after a mapping fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medlake.cli import ingest as ingest_cli
from medlake.cli import quarantine as quarantine_cli
from medlake.service.workspace import init_workspace

PATIENTS_CSV = "BRID,XB,CSRQ\nH001,男,1970-01-02\nH002,女,1985-12-31\n"
MAPPING = """
source_system = "his"
[[file]]
match = "patients.csv"
target = "patients"
patient_id = "BRID"
[file.columns]
sex = "XB"
birth_date = {{ column = "CSRQ", format = "{date_format}" }}
"""


@pytest.fixture
def app() -> typer.Typer:
    """The commands wired as ``medlake.cli.main`` wires them."""
    application = typer.Typer()
    ingest_cli.register(application)
    application.add_typer(quarantine_cli.app, name="quarantine")
    return application


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return init_workspace(tmp_path / "ws").root


def invoke(app: typer.Typer, *args: str) -> dict[str, object] | list[object]:
    result = CliRunner().invoke(app, [*args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ingest_then_retry_after_a_mapping_fix_resolves_quarantine(
    app: typer.Typer, workspace: Path, tmp_path: Path
) -> None:
    his = tmp_path / "his"
    his.mkdir()
    (his / "patients.csv").write_text(PATIENTS_CSV, encoding="utf-8")
    broken = tmp_path / "broken.toml"
    broken.write_text(MAPPING.format(date_format="%d/%m/%Y"), encoding="utf-8")
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(MAPPING.format(date_format="%Y-%m-%d"), encoding="utf-8")

    first = invoke(
        app, "ingest", str(his), "--mapping", str(broken), "--json", "-w", str(workspace)
    )
    assert isinstance(first, dict)
    (source,) = first["sources"]  # type: ignore[misc]
    assert source["source_system"] == "his"
    assert source["quarantined"] > 0

    entries = invoke(app, "quarantine", "list", "--json", "-w", str(workspace))
    assert entries
    shown = invoke(
        app, "quarantine", "show", str(entries[0]["quarantine_id"]), "--json", "-w", str(workspace)
    )  # type: ignore[index]
    assert isinstance(shown, dict)
    assert "raw_payload" in shown

    invoke(app, "quarantine", "retry", "--mapping", str(fixed), "--json", "-w", str(workspace))
    assert invoke(app, "quarantine", "list", "--json", "-w", str(workspace)) == []
    resolved = invoke(app, "quarantine", "list", "--all", "--json", "-w", str(workspace))
    assert len(resolved) == len(entries)


def test_ingest_twice_reports_unchanged(app: typer.Typer, workspace: Path, tmp_path: Path) -> None:
    his = tmp_path / "his"
    his.mkdir()
    (his / "patients.csv").write_text(PATIENTS_CSV, encoding="utf-8")
    mapping = tmp_path / "m.toml"
    mapping.write_text(MAPPING.format(date_format="%Y-%m-%d"), encoding="utf-8")
    args = ("ingest", str(his), "--mapping", str(mapping), "--json", "-w", str(workspace))
    first = invoke(app, *args)
    second = invoke(app, *args)
    assert first["sources"][0]["loaded"] == 2  # type: ignore[index, call-overload]
    assert second["sources"][0]["unchanged"] == 2  # type: ignore[index, call-overload]
    assert second["files"][0]["status"] == "unchanged"  # type: ignore[index, call-overload]


def test_unrecognised_file_fails_with_one_line(
    app: typer.Typer, workspace: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01\x02")
    result = CliRunner().invoke(app, ["ingest", str(junk), "-w", str(workspace)])
    assert result.exit_code != 0
    assert "junk.bin" in str(result.exception)

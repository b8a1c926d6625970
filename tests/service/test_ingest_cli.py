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


def test_the_whole_run_is_timed_beside_each_source(
    app: typer.Typer, workspace: Path, tmp_path: Path
) -> None:
    """A source's seconds are its files'; the run's wall time (the lake opened, the run
    record, the checks and the person-order pass after the files) is reported too, lies
    between the files' sum and the wall time around the command, and the table says it."""
    import time

    his = tmp_path / "his"
    his.mkdir()
    (his / "patients.csv").write_text(PATIENTS_CSV, encoding="utf-8")
    mapping = tmp_path / "m.toml"
    mapping.write_text(MAPPING.format(date_format="%Y-%m-%d"), encoding="utf-8")
    args = ("ingest", str(his), "--mapping", str(mapping), "-w", str(workspace))
    started = time.perf_counter()
    report = invoke(app, *args, "--json")
    wall = time.perf_counter() - started
    run = report["run"]  # type: ignore[call-overload]
    files = sum(f["seconds"] for f in report["files"])  # type: ignore[union-attr, index]
    assert files <= run["seconds"] <= wall
    assert run["records_read"] == report["sources"][0]["read"] == 2  # type: ignore[index, call-overload]
    # (both figures rounded in the JSON)
    assert run["records_per_second"] == pytest.approx(2 / run["seconds"], rel=0.02)
    table = CliRunner().invoke(app, [*args], catch_exceptions=False)
    assert "whole run: 0 records" not in table.output  # an unchanged re-run reads none
    more = PATIENTS_CSV + "H003,男,1990-05-06\n"  # a new export: read whole again
    (his / "patients.csv").write_text(more, encoding="utf-8")
    table = CliRunner().invoke(app, [*args], catch_exceptions=False)
    assert table.exit_code == 0, table.output
    assert "whole run: 3 records in" in table.output

"""Backups with BorgBackup: a restore gives the identical lake, a second backup adds
little, pruning deletes exactly what the policy does not keep, ``check`` finds a damaged
repository file, and a drill reports RTO and RPO."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from tests.protect.lakes import assert_same_files, assert_same_lake
from typer.testing import CliRunner

from medlake.cli.main import app
from medlake.config import open_workspace, write_settings
from medlake.errors import BackupError
from medlake.protect.borg import archive_name
from medlake.protect.retention import snapshots_to_keep
from medlake.service import backup

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backed_up(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared hospital workspace with a repository and one backup."""
    root = hospital_lake.copy(tmp_path_factory.mktemp("backed-up") / "ws")
    backup.init_backups(root)
    backup.run_backup(root)
    return root


def test_restore_gives_the_identical_lake_landing_and_settings(
    backed_up: Path, tmp_path: Path
) -> None:
    restored = backup.restore_backup(backed_up, tmp_path / "restored")
    assert restored.tables > 40
    # The audit trail gets the backup's own event after the snapshot is taken.
    assert_same_lake(backed_up, restored.path, skip=("audit_",))
    for folder in ("landing", "omics", "exports", "secrets"):
        assert_same_files(backed_up / folder, restored.path / folder)
    assert (restored.path / "medlake.toml").read_bytes() == (
        backed_up / "medlake.toml"
    ).read_bytes()
    assert not (restored.path / "backups" / "borg").exists()  # the repository is left out


def test_a_second_backup_adds_only_what_changed(backed_up: Path) -> None:
    first_size = backup.list_backups(backed_up)
    second = backup.run_backup(backed_up, at=dt.datetime(2030, 1, 1))
    assert len(backup.list_backups(backed_up)) == len(first_size) + 1
    assert second.stats.deduplicated_size < second.stats.original_size / 10


def test_drill_restores_the_newest_backup_and_reports_rpo_and_rto(backed_up: Path) -> None:
    newest = backup.list_backups(backed_up)[-1]
    now = newest.time + dt.timedelta(minutes=42)
    result = backup.drill(backed_up, now=now)
    assert result.ok
    assert result.archive == newest.name
    assert result.rpo_seconds == 42 * 60
    assert 0 < result.rto_seconds < 120
    assert result.landed_since == 0
    assert not result.missing_from_live


def test_drill_on_the_command_line_prints_rto_and_rpo(backed_up: Path) -> None:
    result = CliRunner().invoke(app, ["backup", "drill", "--workspace", str(backed_up)])
    assert result.exit_code == 0, result.output
    assert "RTO" in result.output
    assert "RPO" in result.output


def test_prune_deletes_exactly_the_backups_the_policy_does_not_keep(
    empty_workspace: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(empty_workspace, root)
    workspace = open_workspace(root)
    settings = workspace.settings.model_copy(deep=True)
    settings.backup.keep_hourly, settings.backup.keep_daily = "3h", "3d"
    settings.backup.keep_monthly, settings.backup.keep_yearly = "2m", "2y"
    write_settings(workspace.settings_file, settings)
    backup.init_backups(root)
    now = dt.datetime(2026, 3, 10, 12)
    ages = [dt.timedelta(hours=h) for h in (0, 1, 2, 5, 20, 30, 24 * 5, 24 * 40, 24 * 41, 24 * 500)]
    repository = backup.repository_of(open_workspace(root))
    for age in ages:  # small archives: this test is about which ones prune deletes
        when = now - age
        repository.create(archive_name("medlake", when), ["medlake.toml"], cwd=root, timestamp=when)
    times = [a.time for a in backup.list_backups(root)]
    assert len(times) == len(ages)
    result = backup.prune_backups(root, now=now)
    left = [a.time for a in backup.list_backups(root)]
    assert sorted(left) == sorted(snapshots_to_keep(times, now, backup.retention_policy(
        open_workspace(root))))  # fmt: skip
    assert len(result.deleted) == len(times) - len(left) > 0
    # By hand: 0, 1, 2 h (hourly, 3 h); 20 h is the newest of 9 March (daily, 3 days), so
    # 30 h (06:00 that day) goes, as do 5 days ago (outside 3 days, not the newest of
    # March); 40 days is the newest of January (monthly, 2 months) and 41 days goes;
    # 500 days is the only backup of 2024 (yearly, 2 years).
    expected = {now - dt.timedelta(hours=h) for h in (0, 1, 2, 20, 24 * 40, 24 * 500)}
    assert set(left) == expected


def test_check_finds_a_damaged_repository_file(backed_up: Path, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    shutil.copytree(backed_up, root, symlinks=True)
    assert backup.check_backups(root).healthy
    segments = sorted(
        (root / "backups" / "borg" / "data").rglob("[0-9]*"), key=lambda p: p.stat().st_size
    )
    damaged = segments[-1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    result = backup.check_backups(root)
    assert not result.healthy
    assert result.messages
    cli = CliRunner().invoke(app, ["backup", "check", "--workspace", str(root)])
    assert cli.exit_code == 1


def test_restore_refuses_a_folder_that_is_not_empty(backed_up: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        backup.restore_backup(backed_up, tmp_path / "full")


def test_backup_without_init_says_what_to_run(empty_workspace: Path, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    shutil.copytree(empty_workspace, root)
    with pytest.raises(BackupError, match="medlake backup init"):
        backup.run_backup(root)


def test_two_backups_in_one_second_both_land_with_their_own_names(
    backed_up: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Archive names carry whole seconds: the second of two backups taken in the same
    second waits for the next one (Borg refused a second archive of the same name)."""
    before = len(backup.list_backups(backed_up))
    frozen = dt.datetime(2031, 5, 6, 7, 8, 9, 250_000)
    monkeypatch.setattr(backup, "_utcnow", lambda: frozen)  # both in the same second
    first = backup.run_backup(backed_up)
    second = backup.run_backup(backed_up)
    assert first.time == frozen.replace(microsecond=0)
    assert second.time == first.time + dt.timedelta(seconds=1)
    assert first.archive != second.archive
    names = [archive.name for archive in backup.list_backups(backed_up)]
    assert len(names) == before + 2
    assert {first.archive, second.archive} <= set(names)

"""The ransomware watch: a simulated encrypting attacker on a copy of a workspace is
stopped within a bounded number of files, the workspace is frozen (ingest refused with a
clear message, audited, files and time reported), and a restore from the backup taken
before the attack gives back the lake; ordinary ingest and backups raise no alert."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.protect.conftest import hospital_inputs, hospital_options
from tests.protect.lakes import assert_same_files, assert_same_lake
from typer.testing import CliRunner

from medlake.audit import read_events
from medlake.cli.main import app
from medlake.config import open_workspace
from medlake.errors import WorkspaceFrozenError
from medlake.ingest.landing import land_bytes
from medlake.protect.watch import looks_encrypted, shannon_entropy
from medlake.service import backup, watch
from medlake.service.ingest import ingest_paths
from medlake.service.mirror import landing_store
from medlake.service.workspace import open_lake

SCAN_EVERY = 4  # files the attacker encrypts between two scans of the watch


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _encrypt(path: Path, *, rename: bool) -> Path:
    """What ransomware does to a file: random-looking bytes, often a ransom extension."""
    data = path.read_bytes()
    key = os.urandom(len(data))
    encrypted = bytes(a ^ b for a, b in zip(data, key, strict=True)) or os.urandom(512)
    if rename:
        target = path.with_name(path.name + ".locked")
        target.write_bytes(encrypted)
        path.unlink()
        return target
    os.chmod(path, 0o644)
    path.write_bytes(encrypted)
    return path


def _targets(root: Path, first: str) -> Iterator[Path]:
    """The workspace's files, folder ``first`` first, biggest files first within each."""
    files = [p for p in root.rglob("*") if p.is_file() and "protect" not in p.parts]
    files.sort(key=lambda p: (first not in p.relative_to(root).parts, -p.stat().st_size))
    yield from files


def _attack(root: Path, *, first: str, rename: bool) -> tuple[int, dict[str, object] | None]:
    """Encrypt file after file, the watch scanning every SCAN_EVERY files; stop at the freeze."""
    workspace = open_workspace(root)
    clock = Clock()
    watcher = watch.watcher_for(workspace, clock=clock)
    watcher.scan()
    encrypted = 0
    for path in _targets(root, first):
        _encrypt(path, rename=rename)
        encrypted += 1
        clock.now += 0.5
        if encrypted % SCAN_EVERY == 0:
            watcher.scan()
            alert = watcher.alert()
            if alert is not None:
                return encrypted, watch.freeze(workspace, alert)
    return encrypted, None


@pytest.fixture(scope="module")
def backed_up_template(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = hospital_lake.copy(tmp_path_factory.mktemp("watch-template") / "ws")
    backup.init_backups(root)
    backup.run_backup(root)
    return root


@pytest.fixture
def attacked_copy(backed_up_template: Path, tmp_path: Path) -> Path:
    """A copy of the hospital workspace, with its repository and one backup, to attack."""
    root = tmp_path / "ws"
    shutil.copytree(backed_up_template, root, symlinks=True)
    return root


@pytest.mark.slow
def test_an_encrypting_attacker_is_stopped_and_the_lake_restored_from_backup(
    attacked_copy: Path, hospital_lake, small_hospital: Path, tmp_path: Path
) -> None:
    rules = open_workspace(attacked_copy).settings.watch
    encrypted, frozen = _attack(attacked_copy, first="landing", rename=True)
    assert frozen is not None
    assert encrypted <= SCAN_EVERY + rules.rename_burst
    assert "ransom renames" in str(frozen["reason"])
    listed = {Path(f["path"]).name for f in frozen["files"]}  # type: ignore[union-attr]
    locked = {p.name for p in attacked_copy.rglob("*.locked")}
    assert locked <= listed
    assert frozen["since"]

    with pytest.raises(WorkspaceFrozenError, match=r"frozen read-only since .* watch clear"):
        ingest_paths(attacked_copy, [small_hospital / "emr"])
    with pytest.raises(WorkspaceFrozenError):
        land_bytes(b"MSH|late message", landing_store(open_workspace(attacked_copy)))
    cli = CliRunner().invoke(
        app, ["ingest", "--workspace", str(attacked_copy), str(small_hospital / "emr")]
    )
    assert isinstance(cli.exception, WorkspaceFrozenError)  # medlake's run() makes it exit 77
    with open_lake(open_workspace(attacked_copy)) as engine:
        (event,) = [e for e in read_events(engine) if e.action == "watch.alert"]
    assert event.outcome == "denied"

    restored = backup.restore_backup(attacked_copy, tmp_path / "restored")
    assert_same_lake(hospital_lake.workspace, restored.path, skip=("audit_",))
    assert_same_files(hospital_lake.workspace / "landing", restored.path / "landing")


@pytest.mark.parametrize(
    ("first", "rename", "sign"),
    [
        ("landing", False, "immutable rewrites"),  # encrypted in place, no new name
        ("omics", False, "high-entropy writes"),  # files that may change, but not to noise
        ("backups", False, "immutable rewrites"),  # the Borg repository's segments
    ],
)
@pytest.mark.slow
def test_each_sign_alone_freezes_within_a_bound(
    attacked_copy: Path, first: str, rename: bool, sign: str
) -> None:
    rules = open_workspace(attacked_copy).settings.watch
    encrypted, frozen = _attack(attacked_copy, first=first, rename=rename)
    assert frozen is not None
    assert sign in str(frozen["reason"])
    assert encrypted <= SCAN_EVERY * (1 + rules.entropy_burst // SCAN_EVERY)


@pytest.mark.slow
def test_ordinary_ingest_and_backups_raise_no_alert(
    mirrored_workspace, small_hospital: Path
) -> None:
    root = mirrored_workspace()
    backup.init_backups(root)
    watcher = watch.watcher_for(open_workspace(root))
    watcher.scan()
    ingest_paths(root, hospital_inputs(small_hospital), options=hospital_options(small_hospital))
    assert watcher.scan() == []
    backup.run_backup(root)
    backup.run_backup(root)
    ingest_paths(root, [small_hospital / "omics"], source_system="biobank")
    watcher.scan()
    assert watcher.alert() is None


def test_clear_lifts_the_freeze_after_review(mirrored_workspace, small_hospital: Path) -> None:
    root = mirrored_workspace()
    clock = Clock()
    watcher = watch.watcher_for(open_workspace(root), clock=clock)
    watcher.scan()
    for index in range(3):
        (root / "exports" / f"release{index}.csv.kraken").write_bytes(os.urandom(4096))
    watcher.scan()
    watch.freeze(open_workspace(root), watcher.alert())
    assert watch.freeze_status(root) is not None
    status = CliRunner().invoke(app, ["watch", "status", "--workspace", str(root)])
    assert status.exit_code == 1
    assert "release0.csv.kraken" in status.output
    cleared = CliRunner().invoke(
        app, ["watch", "clear", "--note", "test files", "--workspace", str(root)]
    )
    assert cleared.exit_code == 0, cleared.output
    assert watch.freeze_status(root) is None
    assert not ingest_paths(root, [small_hospital / "emr"]).failed
    with open_lake(open_workspace(root)) as engine:
        actions = [e.action for e in read_events(engine)]
    assert actions.count("watch.alert") == actions.count("watch.clear") == 1


def test_entropy_tells_random_bytes_from_text_and_compressed_formats(tmp_path: Path) -> None:
    import gzip

    text = b"MSH|^~\\&|LIS|HOSP|" * 400
    assert shannon_entropy(os.urandom(65536)) > 7.9
    assert shannon_entropy(text) < 5
    (tmp_path / "random").write_bytes(os.urandom(8192))
    (tmp_path / "text").write_bytes(text)
    (tmp_path / "gz").write_bytes(gzip.compress(os.urandom(8192)))
    assert looks_encrypted(tmp_path / "random", 7.5)
    assert not looks_encrypted(tmp_path / "text", 7.5)
    assert not looks_encrypted(tmp_path / "gz", 7.5)
    shutil.rmtree(tmp_path)


def test_a_scan_in_the_middle_of_a_landing_raises_no_alert(
    empty_workspace: Path, tmp_path: Path
) -> None:
    """A busy server lands while the watch scans: a scan that sees the lander's temporary
    file must not read its removal (after it is linked to its content name) as a deleted
    immutable file. The watch scans from inside the real lander, between its steps."""
    workspace = open_workspace(shutil.copytree(empty_workspace, tmp_path / "ws"))
    watcher = watch.watcher_for(workspace)
    watcher.scan()
    steps: list[str] = []

    def scan_now(side: str, step: str) -> None:
        steps.append(step)
        watcher.scan()

    land_bytes(os.urandom(64) + b"MSH|^~\\&|" * 100, landing_store(workspace, fault=scan_now))
    watcher.scan()
    assert steps  # the scans did run mid-landing
    assert watcher.alert() is None
    # A landed file removed is still an alert: the temporaries alone are not tracked.
    landed = [p for p in workspace.landing_dir.rglob("*") if p.is_file()]
    assert len(landed) == 1
    os.chmod(landed[0].parent, 0o755)
    landed[0].unlink()
    watcher.scan()
    assert watcher.alert() is not None


def _locked_elsewhere(path: Path) -> bool:
    """Whether another process finds ``path`` locked (it tries a POSIX lock of its own)."""
    import subprocess
    import sys

    probe = (
        "import fcntl, sys\n"
        "with open(sys.argv[1], 'r+b') as f:\n"
        "    try:\n"
        "        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    except OSError:\n"
        "        sys.exit(3)\n"
    )
    return subprocess.run([sys.executable, "-c", probe, str(path)], check=False).returncode == 3


@pytest.mark.parametrize("held", [True, False])
def test_scanning_the_lake_file_keeps_this_process_lock_on_it(tmp_path: Path, held: bool) -> None:
    """DuckDB holds its file with a POSIX lock, which closing ANY descriptor of the file in
    the same process drops: a watch in ``serve`` that read the changed lake file let
    another process open the lake beside the server. A held file is read by a child."""
    import fcntl

    from medlake.protect.watch import Watcher, WatchRules

    lake = tmp_path / "lake.duckdb"
    lake.write_bytes(os.urandom(300_000))
    watcher = Watcher(
        roots=[tmp_path], rules=WatchRules(extensions=(".locked",)), held=[lake] if held else []
    )
    with lake.open("r+b") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        watcher.scan()  # the baseline
        handle.seek(0)
        handle.write(os.urandom(300_000))  # changed: its start is read for its entropy
        handle.flush()
        os.utime(lake, ns=(1, 1))
        findings = watcher.scan()
        assert [f.kind for f in findings] == ["high_entropy"]  # read, in a child or here
        assert _locked_elsewhere(lake) is held

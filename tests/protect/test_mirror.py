"""Mirrored landing: both roots fsync'd before landing returns; faults degrade one side
and lose nothing; resync brings the roots back to identical, verified copies."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.protect.conftest import hospital_inputs, hospital_options

import medlake.ingest.landing as landing
import medlake.service.ingest as ingest_service
from medlake.audit import read_events
from medlake.config import open_workspace
from medlake.ingest.landing import LandingStore, land_bytes, landed_path
from medlake.ingest.landing_mirror import file_sha256, landed_names, verified_path
from medlake.service import mirror
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import open_lake


def _batches(root: Path) -> set[str]:
    with open_lake(open_workspace(root)) as engine:
        return set(engine.execute(engine.table("ingest_batch")).column("landed_sha256").to_pylist())


def _events(root: Path, action: str) -> list[str]:
    with open_lake(open_workspace(root)) as engine:
        return [e.object_id for e in read_events(engine) if e.action == action]


@pytest.fixture(scope="module")
def reference_batches(small_hospital: Path, empty_workspace: Path, tmp_path_factory) -> set[str]:
    """The landed content of an ingest with no mirror and no fault."""
    root = tmp_path_factory.mktemp("reference") / "ws"
    shutil.copytree(empty_workspace, root)
    report = ingest_paths(
        root, hospital_inputs(small_hospital), options=hospital_options(small_hospital)
    )
    assert not report.failed
    return _batches(root)


def test_landing_returns_only_after_both_roots_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store = LandingStore(tmp_path / "a", tmp_path / "b", state_file=tmp_path / "state.json")
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        landing.os,
        "fsync",
        lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)),
    )
    landed = land_bytes(b"MSH|^~\\&|LIS", store)
    digest = hashlib.sha256(b"MSH|^~\\&|LIS").hexdigest()
    for root in (tmp_path / "a", tmp_path / "b"):
        assert landed_path(root, digest).read_bytes() == b"MSH|^~\\&|LIS"
        # The file (by its temporary name), its <ab> folder and the root, on each side.
        assert sum(p.startswith(str(root)) for p in synced) == 3
        assert str(landed_path(root, digest).parent) in synced
        assert str(root) in synced
    assert landed.path == landed_path(tmp_path / "a", digest)


def _fault(side: str, step: str, at: int, error: int) -> Callable[[str, str], None]:
    """Fail ``side`` at ``step`` from its ``at``-th write on (a disk that stays broken)."""
    seen: Counter[str] = Counter()

    def hook(name: str, where: str) -> None:
        if name == side and where == "open":
            seen[side] += 1
        if name == side and where == step and seen[side] >= at:
            raise OSError(error, os.strerror(error), f"/{side}")

    return hook


def _disappear(root_of: Callable[[], Path], at: int) -> Callable[[str, str], None]:
    """The mirror's disk goes away (unmounted) just before its ``at``-th write."""
    seen: Counter[str] = Counter()

    def hook(name: str, where: str) -> None:
        if name == "mirror" and where == "open":
            seen[name] += 1
            if seen[name] == at:
                root = root_of()
                root.rename(root.with_name("mirror-unplugged"))

    return hook


SCENARIOS = {
    "mirror read-only from the 3rd file": (
        "mirror",
        lambda r: _fault("mirror", "open", 3, errno.EROFS),
    ),
    "primary disk full mid-write of the 5th": (
        "primary",
        lambda r: _fault("primary", "write", 5, errno.ENOSPC),
    ),
    "mirror fsync fails on the 8th": ("mirror", lambda r: _fault("mirror", "fsync", 8, errno.EIO)),
    "primary cannot link the 1st": ("primary", lambda r: _fault("primary", "link", 1, errno.EROFS)),
    "mirror disappears before the 4th": ("mirror", lambda r: _disappear(r, 4)),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_failing_side_degrades_and_resync_makes_both_sides_whole(
    scenario: str,
    mirrored_workspace: Callable[[], Path],
    small_hospital: Path,
    reference_batches: set[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = mirrored_workspace()
    workspace = open_workspace(root)
    failing, make_hook = SCENARIOS[scenario]
    hook = make_hook(lambda: workspace.landing_mirror_dir)
    monkeypatch.setattr(
        ingest_service, "landing_store", lambda ws: mirror.landing_store(ws, fault=hook)
    )
    report = ingest_paths(
        root, hospital_inputs(small_hospital), options=hospital_options(small_hospital)
    )
    assert not report.failed
    assert _batches(root) == reference_batches  # nothing refused, nothing lost

    sides = {s.name: s for s in mirror.status(root)}
    healthy = "mirror" if failing == "primary" else "primary"
    assert sides[failing].status == "degraded"
    assert sides[failing].reason
    assert sides[healthy].status == "ok"
    assert _events(root, "mirror.degraded") == [failing]
    store = mirror.landing_store(workspace)
    healthy_root = store.side(healthy).root
    for sha256 in reference_batches:  # every landed file is whole on the healthy side
        assert file_sha256(landed_path(healthy_root, sha256)) == sha256
        assert verified_path(store, sha256) == landed_path(healthy_root, sha256)

    resynced = mirror.resync_mirror(root)
    assert not resynced.lost
    assert resynced.copied.get(failing, 0) > 0
    primary, mirrored = store.side("primary").root, store.side("mirror").root
    assert landed_names(primary) == landed_names(mirrored) >= reference_batches
    for name in landed_names(primary):
        assert file_sha256(landed_path(primary, name)) == name
        assert file_sha256(landed_path(mirrored, name)) == name
    assert {s.status for s in mirror.status(root)} == {"ok"}
    assert sorted(_events(root, "mirror.resynced")) == ["mirror", "primary"]


def test_when_both_sides_fail_the_file_fails_and_no_side_is_marked(
    mirrored_workspace: Callable[[], Path], small_hospital: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = mirrored_workspace()

    def hook(side: str, step: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", f"/{side}")

    monkeypatch.setattr(
        ingest_service, "landing_store", lambda ws: mirror.landing_store(ws, fault=hook)
    )
    report = ingest_paths(root, [small_hospital / "emr"])
    assert report.failed
    assert all("No space left" in r.message for r in report.failed)
    assert {s.status for s in mirror.status(root)} == {"ok"}


def test_reads_fall_back_and_resync_repairs_bit_flips_and_truncation(
    mirrored_workspace: Callable[[], Path], small_hospital: Path
) -> None:
    root = mirrored_workspace()
    ingest_paths(root, [small_hospital / "emr"])
    store = mirror.landing_store(open_workspace(root))
    primary, mirrored = store.side("primary").root, store.side("mirror").root
    flipped, truncated = sorted(landed_names(primary))[:2]

    path = landed_path(primary, flipped)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    cut = landed_path(mirrored, truncated)
    os.chmod(cut, 0o644)
    cut.write_bytes(cut.read_bytes()[:10])

    assert verified_path(store, flipped) == landed_path(mirrored, flipped)
    assert verified_path(store, truncated) == landed_path(primary, truncated)
    report = mirror.resync_mirror(root)
    assert report.repaired == {"primary": 1, "mirror": 1}
    assert not report.lost
    for name in (flipped, truncated):
        assert (
            file_sha256(landed_path(primary, name))
            == name
            == file_sha256(landed_path(mirrored, name))
        )


def test_anchor_copies_go_to_the_mirror_root(
    mirrored_workspace: Callable[[], Path], empty_workspace: Path
) -> None:
    workspace = open_workspace(mirrored_workspace())
    (copy,) = mirror.anchor_copies(workspace)
    assert copy.parent.parent == workspace.landing_mirror_dir
    assert mirror.anchor_copies(open_workspace(empty_workspace)) == []

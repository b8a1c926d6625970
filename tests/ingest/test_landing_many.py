"""Landing many small files at once: each as land_file lands it, durable when it returns."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from medlake.errors import InputError
from medlake.ingest import landing
from medlake.ingest.landing import land_file, land_files, landed_path, leftover_temporaries


def _day_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for day in range(count):
        path = folder / f"{day:03d}.hl7"
        # Two days share their content: the same content is landed once.
        same = day % (count - 1)
        path.write_bytes(f"MSH|^~\\&|LIS|day {same}\r".encode() * (same + 1))
        paths.append(path)
    return paths


def test_many_files_land_as_land_file_lands_each(tmp_path: Path) -> None:
    paths = _day_files(tmp_path / "days", 40)
    paths.insert(7, tmp_path / "days" / "missing.hl7")
    landed = land_files(paths, tmp_path / "landing")
    one_by_one = tmp_path / "one-by-one"
    for path, result in zip(paths, landed, strict=True):
        if not path.exists():
            assert isinstance(result, InputError)  # in its place, the others land
            assert "missing.hl7" in result.message
            continue
        assert not isinstance(result, InputError)
        expected = land_file(path, one_by_one)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert result.sha256 == expected.sha256 == digest
        assert result.path == landed_path(tmp_path / "landing", digest)
        assert result.path.read_bytes() == path.read_bytes()
        assert result.size == path.stat().st_size
    names = sorted(p.relative_to(tmp_path / "landing") for p in (tmp_path / "landing").rglob("*"))
    assert names == sorted(p.relative_to(one_by_one) for p in one_by_one.rglob("*"))
    assert leftover_temporaries(tmp_path / "landing") == []
    # The repeated content was new only the first time, in the same call.
    fresh = [r.already_present for r in landed if not isinstance(r, InputError)]
    assert fresh.count(True) == 1


def test_each_file_is_handed_over_as_read_with_the_bytes_that_land(tmp_path: Path) -> None:
    paths = _day_files(tmp_path / "days", 12)
    paths.insert(3, tmp_path / "days" / "missing.hl7")
    land_files(paths[:5], tmp_path / "landing")  # some landed before: handed over too
    seen: list[tuple[int, str, bytes]] = []
    landed = land_files(paths, tmp_path / "landing", lambda *read: seen.append(read))
    readable = [i for i, path in enumerate(paths) if path.exists()]
    assert [i for i, _, _ in seen] == readable  # in order, the unreadable one left out
    for index, sha256, content in seen:
        result = landed[index]
        assert not isinstance(result, InputError)
        assert (sha256, content) == (result.sha256, result.path.read_bytes())
        assert content == paths[index].read_bytes()


def test_landing_again_writes_nothing(tmp_path: Path) -> None:
    paths = _day_files(tmp_path / "days", 12)
    first = land_files(paths, tmp_path / "landing")
    stats = {r.path: r.path.stat() for r in first if not isinstance(r, InputError)}
    again = land_files(paths, tmp_path / "landing")
    assert all(not isinstance(r, InputError) and r.already_present for r in again)
    for path, before in stats.items():
        after = path.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_every_file_is_synced_before_its_name_and_every_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durability: a content name is linked only after its content's fsync, and every
    folder that got a new name is fsync'd before land_files returns."""
    paths = _day_files(tmp_path / "days", 30)
    events: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def link(source: object, target: object, **kwargs: object) -> None:
        real_link(source, target, **kwargs)  # type: ignore[arg-type]
        events.append(("link", f"{source} {target}"))

    monkeypatch.setattr(landing.os, "fsync", fsync)
    monkeypatch.setattr(landing.os, "link", link)
    landed = land_files(paths, tmp_path / "landing")
    root = tmp_path / "landing"
    synced_at = {path: i for i, (kind, path) in enumerate(events) if kind == "fsync"}
    links = [(i, detail.split(" ")) for i, (kind, detail) in enumerate(events) if kind == "link"]
    assert len(links) == len({r.sha256 for r in landed if not isinstance(r, InputError)})
    for position, (temporary, target) in links:
        assert synced_at[temporary] < position  # the content first
        # The folder holding the name, and the root for a new <ab> folder, after it.
        assert synced_at[str(Path(target).parent)] > position
        assert synced_at[str(root)] > position
    # One fsync per folder, not one per file.
    folders = [path for kind, path in events if kind == "fsync" and Path(path).is_dir()]
    assert len(folders) == len(set(folders))


def test_a_frozen_workspace_lands_nothing(tmp_path: Path) -> None:
    from medlake.errors import WorkspaceFrozenError
    from medlake.ingest.landing_mirror import LandingStore

    paths = _day_files(tmp_path / "days", 3)
    freeze = tmp_path / "FROZEN"
    freeze.write_text("frozen by a test", encoding="utf-8")
    store = LandingStore(primary=tmp_path / "landing", freeze_file=freeze)
    with pytest.raises(WorkspaceFrozenError):
        land_files(paths, store)
    assert not (tmp_path / "landing").exists() or not any((tmp_path / "landing").rglob("*"))

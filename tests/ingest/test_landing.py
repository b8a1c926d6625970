"""Landing: content-addressed, append-only, durable before it returns."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from medlake.errors import InputError
from medlake.ingest import landing
from medlake.ingest.landing import land_bytes, land_file, landed_path, leftover_temporaries


def test_file_lands_under_its_sha256_unchanged(tmp_path: Path) -> None:
    source = tmp_path / "Patient.ndjson"
    source.write_bytes(b'{"resourceType": "Patient"}\n' * 1000)
    landed = land_file(source, tmp_path / "landing")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert landed.sha256 == digest
    assert landed.path == tmp_path / "landing" / digest[:2] / digest
    assert landed.path.read_bytes() == source.read_bytes()
    assert landed.size == source.stat().st_size
    assert not landed.already_present
    assert landed.relative_path == f"{digest[:2]}/{digest}"


def test_same_content_twice_is_one_copy(tmp_path: Path) -> None:
    (tmp_path / "a.hl7").write_bytes(b"MSH|^~\\&|LIS\r")
    (tmp_path / "b.hl7").write_bytes(b"MSH|^~\\&|LIS\r")
    first = land_file(tmp_path / "a.hl7", tmp_path / "landing")
    second = land_file(tmp_path / "b.hl7", tmp_path / "landing")
    again = land_bytes(b"MSH|^~\\&|LIS\r", tmp_path / "landing")
    assert first.path == second.path == again.path
    assert second.already_present
    assert again.already_present
    files = [p for p in (tmp_path / "landing").rglob("*") if p.is_file()]
    assert files == [first.path]


@pytest.mark.parametrize("likely_new", [False, True])
def test_likely_new_content_lands_the_same_in_one_pass(tmp_path: Path, likely_new: bool) -> None:
    # One pass (copy and hash together) or hash first: the same name, bytes and answer,
    # the first time and when the content is there already (the copy is then dropped).
    source = tmp_path / "Observation.ndjson"
    source.write_bytes(os.urandom(3 << 20) + b"\n")  # several read blocks
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    first = land_file(source, tmp_path / "landing", likely_new=likely_new)
    before = first.path.stat()
    again = land_file(source, tmp_path / "landing", likely_new=True)
    assert first.sha256 == again.sha256 == digest
    assert first.path == again.path == landed_path(tmp_path / "landing", digest)
    assert (first.already_present, again.already_present) == (False, True)
    assert first.path.read_bytes() == source.read_bytes()
    after = again.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p for p in (tmp_path / "landing").rglob("*") if p.is_file()] == [first.path]
    assert leftover_temporaries(tmp_path / "landing") == []


def test_landed_files_are_never_modified(tmp_path: Path) -> None:
    landed = land_bytes(b"original", tmp_path / "landing")
    before = landed.path.stat()
    assert not before.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)  # read-only
    land_bytes(b"original", tmp_path / "landing")
    after = landed.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_an_existing_name_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two landers racing with the same content: the second finds the name taken."""
    landing_dir = tmp_path / "landing"
    digest = hashlib.sha256(b"payload").hexdigest()
    target = landed_path(landing_dir, digest)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"payload")
    monkeypatch.setattr(landing.Path, "exists", lambda self: False)  # lose the race
    landed = land_bytes(b"payload", landing_dir)
    assert landed.already_present
    assert leftover_temporaries(landing_dir) == []


def test_landing_fsyncs_file_and_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(landing.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    land_bytes(b"durable", tmp_path / "landing")
    assert len(synced) == 3  # the file, its <ab> folder, the landing folder


def test_missing_source_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv"):
        land_file(tmp_path / "nope.csv", tmp_path / "landing")

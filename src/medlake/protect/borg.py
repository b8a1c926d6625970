"""A thin driver of BorgBackup's command line: init, create, list, delete, check, extract.

Borg is the backup engine (deduplicated, compressed, authenticated encryption, decades
of use); medlake only runs it. It is driven through its documented command line and
``--json`` output rather than its Python internals, which Borg declares private. The
passphrase goes to Borg in the environment (``BORG_PASSPHRASE``), never on a command
line, and Borg's own cache and security files live under ``base_dir`` so that several
workspaces on one host keep theirs apart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medlake.errors import BackupError

ARCHIVE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_WARNING = 1  # Borg's exit code for "done, with warnings"


@dataclass(frozen=True)
class Archive:
    """One backup in the repository; ``time`` is naive UTC."""

    name: str
    time: dt.datetime
    id: str


@dataclass(frozen=True)
class ArchiveStats:
    name: str
    files: int
    original_size: int
    compressed_size: int
    deduplicated_size: int  # what this archive added to the repository
    seconds: float


def archive_name(prefix: str, time: dt.datetime) -> str:
    """``<prefix>-2026-11-23T22:00:00``: the UTC time is in the name, so no time zone is guessed."""
    return f"{prefix}-{time.strftime(ARCHIVE_TIME_FORMAT)}"


def archive_time(name: str, fallback: str) -> dt.datetime:
    """The UTC time in an archive name made by :func:`archive_name`, else Borg's own time."""
    try:
        return dt.datetime.strptime(name[-19:], ARCHIVE_TIME_FORMAT)
    except ValueError:
        return dt.datetime.fromisoformat(fallback).replace(tzinfo=None)


class BorgRepository:
    """The ``borg`` command bound to one repository, passphrase and base directory."""

    def __init__(self, location: str, passphrase: str, base_dir: Path) -> None:
        self.location = location
        self._passphrase = passphrase
        self.base_dir = base_dir
        self.binary = shutil.which("borg")
        if self.binary is None:
            raise BackupError(
                "BorgBackup is not installed (the 'borg' command); install the Debian "
                "package borgbackup (scripts/install_debian_packages.sh does)"
            )

    def _env(self) -> dict[str, str]:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "BORG_PASSPHRASE": self._passphrase,
            "BORG_BASE_DIR": str(self.base_dir),
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
            "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
            "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
            "LANG": "C.UTF-8",
        }

    def run(
        self, *args: str, cwd: Path | None = None, allow_failure: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``borg ARGS``; a failure is a :class:`BackupError` with Borg's last lines."""
        process = subprocess.run(
            [self.binary, *args],  # type: ignore[list-item]
            cwd=cwd,
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if process.returncode > _WARNING and not allow_failure:
            lines = [line for line in process.stderr.splitlines() if line.strip()]
            raise BackupError(
                f"borg {args[0]} failed: {' / '.join(lines[-3:]) or process.returncode}"
            )
        return process

    def exists(self) -> bool:
        return self.run("info", "--json", self.location, allow_failure=True).returncode <= _WARNING

    def init(self, encryption: str) -> None:
        self.run("init", f"--encryption={encryption}", self.location)

    def create(
        self,
        name: str,
        paths: Sequence[str],
        *,
        cwd: Path,
        excludes: Sequence[str] = (),
        compression: str = "zstd,3",
        timestamp: dt.datetime | None = None,
    ) -> ArchiveStats:
        """Archive ``paths`` (relative to ``cwd``, so the archive holds relative paths)."""
        args = ["create", "--json", f"--compression={compression}"]
        for pattern in excludes:
            args += ["--exclude", pattern]
        if timestamp is not None:
            args += ["--timestamp", timestamp.strftime(ARCHIVE_TIME_FORMAT)]
        out = json.loads(self.run(*args, f"{self.location}::{name}", *paths, cwd=cwd).stdout)
        archive = out["archive"]
        stats = archive["stats"]
        return ArchiveStats(
            name=name,
            files=int(stats["nfiles"]),
            original_size=int(stats["original_size"]),
            compressed_size=int(stats["compressed_size"]),
            deduplicated_size=int(stats["deduplicated_size"]),
            seconds=float(archive["duration"]),
        )

    def archives(self) -> list[Archive]:
        """Every archive, oldest first."""
        out = json.loads(self.run("list", "--json", self.location).stdout)
        archives = [
            Archive(a["name"], archive_time(a["name"], a["time"]), a["id"]) for a in out["archives"]
        ]
        return sorted(archives, key=lambda a: (a.time, a.name))

    def repository_size(self) -> tuple[int, int]:
        """(total deduplicated compressed bytes, number of unique chunks)."""
        out = json.loads(self.run("info", "--json", self.location).stdout)
        stats = out["cache"]["stats"]
        return int(stats["unique_csize"]), int(stats["total_unique_chunks"])

    def delete(self, names: Sequence[str]) -> None:
        """Delete these archives, then give their space back (``borg compact``)."""
        for start in range(0, len(names), 200):  # stay well inside the command-line limit
            self.run("delete", self.location, *names[start : start + 200])
        self.run("compact", self.location)

    def check(self, *, verify_data: bool = False) -> tuple[bool, list[str]]:
        """Check the repository (and archives); (healthy, Borg's messages)."""
        args = ["check", "--verify-data"] if verify_data else ["check"]
        process = self.run(*args, self.location, allow_failure=True)
        lines = [line for line in process.stderr.splitlines() if line.strip()]
        return process.returncode == 0, lines

    def extract(self, name: str, to: Path) -> None:
        """Extract archive ``name`` into the folder ``to`` (created if needed)."""
        to.mkdir(parents=True, exist_ok=True)
        self.run("extract", f"{self.location}::{name}", cwd=to)

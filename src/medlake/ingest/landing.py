"""Landing: the one place that writes ``landing/``, append-only and content-addressed.

Every file or message medlake receives is stored unchanged before anything parses it,
named by its SHA-256: ``landing/<first two hex digits>/<sha256>``. The same content
always gets the same name, so landing it again finds it already there and nothing is
written; an existing landed file is never opened for writing, renamed over or deleted.
The curated lake can therefore always be rebuilt from ``landing/``.

Durability: the content goes to a temporary file inside ``landing/`` (same file system),
is fsync'd, then linked to its final name (``os.link`` fails rather than replacing an
existing name, so two concurrent landers of the same content cannot clobber each other)
and the directory is fsync'd, so a landed file survives a power cut once this returns.
The MLLP listener acknowledges a message only after :func:`land_bytes` returns.

The data-protection issue extends this module with a mirror root; callers need not
change, since nothing else writes to ``landing/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medlake.errors import InputError

_READ_SIZE = 1 << 20  # 1 MiB: large enough for disk throughput, small enough for RSS
_TEMP_PREFIX = ".landing-"
_READ_ONLY = 0o444


@dataclass(frozen=True)
class LandedFile:
    """A file stored in ``landing/``: its content hash, where it lies, how big it is."""

    sha256: str
    path: Path
    size: int
    already_present: bool  # True when this content had been landed before

    @property
    def relative_path(self) -> str:
        """``<ab>/<sha256>``, relative to the landing folder (as ``ingest_batch`` stores it)."""
        return f"{self.sha256[:2]}/{self.sha256}"


def landed_path(landing_dir: Path, sha256: str) -> Path:
    """Where content with this SHA-256 lies (or would lie) in ``landing_dir``."""
    return landing_dir / sha256[:2] / sha256


def land_file(path: Path, landing_dir: Path) -> LandedFile:
    """Store the file at ``path`` unchanged in ``landing_dir``; return where it landed.

    The file is hashed first (one read) so content landed before costs no write; only
    new content is copied, and hashed again while copying, so what lands is what was
    hashed even if the source file changed in between.
    """
    try:
        size = path.stat().st_size
        digest = _hash_file(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    target = landed_path(landing_dir, digest)
    if target.exists():
        return LandedFile(digest, target, size, already_present=True)
    try:
        with path.open("rb") as source:
            return _store(iter(lambda: source.read(_READ_SIZE), b""), landing_dir)
    except OSError as exc:
        raise InputError(f"cannot land {path}: {exc.strerror or exc}") from exc


def land_bytes(data: bytes, landing_dir: Path) -> LandedFile:
    """Store ``data`` (a received message) in ``landing_dir``; durable when this returns."""
    digest = hashlib.sha256(data).hexdigest()
    target = landed_path(landing_dir, digest)
    if target.exists():
        return LandedFile(digest, target, len(data), already_present=True)
    return _store([data], landing_dir)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _store(blocks: Iterable[bytes], landing_dir: Path) -> LandedFile:
    """Write ``blocks`` to a temporary file, fsync it, link it to its content name."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    temp = landing_dir / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    size = 0
    try:
        with temp.open("xb") as out:
            for block in blocks:
                digest.update(block)
                out.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, _READ_ONLY)
        sha256 = digest.hexdigest()
        target = landed_path(landing_dir, sha256)
        target.parent.mkdir(exist_ok=True)
        try:
            # link, not rename: it refuses to replace an existing name (append-only).
            os.link(temp, target)
            already_present = False
        except FileExistsError:
            already_present = True
        _fsync_dir(target.parent)
        _fsync_dir(landing_dir)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return LandedFile(sha256, target, size, already_present=already_present)


def _fsync_dir(directory: Path) -> None:
    """Make a directory's new entries durable (a renamed or linked name is in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def leftover_temporaries(landing_dir: Path) -> list[Path]:
    """Temporary files a killed lander left behind (never landed content; safe to remove)."""
    if not landing_dir.is_dir():
        return []
    return sorted(landing_dir.glob(f"{_TEMP_PREFIX}*"))

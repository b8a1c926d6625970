"""What ransomware looks like on disk: ransom renames, rewritten immutable files, random bytes.

:class:`Watcher` scans folders (``os.scandir``, one ``stat`` a file) and compares each
scan with the one before. Three signs are counted over a sliding time window:

- **ransom renames**: a new file named with a known ransom extension (``.locked``,
  ``.crypt``, ``.encrypted``…);
- **immutable rewrites**: a file under an immutable folder (landing, exports) that
  changed size or modification time, or vanished; in an append-only folder (the Borg
  repository's segments, which Borg appends to and compacts) one whose first 4 KiB
  changed or that shrank;
- **random-looking writes**: a new or changed file whose first 64 KiB have a Shannon
  entropy of at least ``entropy_bits`` bits a byte and start with no known compressed or
  binary format's magic number (gzip, zstd, zip, Parquet, HDF5, PLINK, Borg...), since
  compressed data is as random-looking as encrypted data.

When a count reaches its limit within the window, :meth:`Watcher.alert` says which
files, what happened to them and since when. Polling rather than inotify: it works on
every file system (NFS mounts included) and cannot miss events when a queue overflows,
which a fast encrypting process would cause; the price is a scan every few seconds.

The lake's own database file is read by a short-lived child process, never opened here:
DuckDB holds it with a POSIX (``fcntl``) lock, and closing *any* descriptor of a file
drops every such lock the process holds on it. A watch running in ``serve`` that read
the lake after a checkpoint changed it let another process open the lake beside the
server (and corrupt it).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RANSOM_RENAME = "ransom_rename"
IMMUTABLE_REWRITE = "immutable_rewrite"
HIGH_ENTROPY = "high_entropy"

_LABELS = {
    RANSOM_RENAME: "ransom renames",
    IMMUTABLE_REWRITE: "immutable rewrites",
    HIGH_ENTROPY: "high-entropy writes",
}
_SAMPLE = 64 * 1024
_HEAD = 4096
# Magic numbers of formats whose bytes look random by design (compressed or packed).
_MAGICS = (
    b"\x1f\x8b",  # gzip, BGZF (VCF.gz)
    b"\x28\xb5\x2f\xfd",  # zstd
    b"BZh",  # bzip2
    b"\xfd7zXZ",  # xz
    b"PK\x03\x04",  # zip, xlsx
    b"7z\xbc\xaf",  # 7-zip
    b"PAR1",  # Parquet
    b"\x89HDF",  # HDF5, AnnData .h5ad
    b"\x6c\x1b",  # PLINK .bed / .pgen
    b"BORG_SEG",  # Borg repository segment
    b"%PDF",
    b"\x89PNG",
    b"\xff\xd8\xff",  # JPEG
    b"ARROW1",  # Arrow IPC / Feather
)


@dataclass(frozen=True)
class WatchRules:
    extensions: tuple[str, ...]
    rename_burst: int = 3
    rewrite_limit: int = 1
    entropy_burst: int = 5
    entropy_bits: float = 7.5
    window_seconds: float = 60.0


@dataclass(frozen=True)
class Finding:
    kind: str
    path: str
    at: float  # Unix time of the scan that saw it


@dataclass(frozen=True)
class Alert:
    reasons: list[str]
    findings: list[Finding]
    since: float  # the earliest finding in the window

    @property
    def files(self) -> list[str]:
        return sorted({f.path for f in self.findings})


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    inode: int
    head: str | None = None  # digest of the first 4 KiB, for append-only files


def shannon_entropy(data: bytes) -> float:
    """Bits per byte (0 for constant data, 8 for uniformly random bytes)."""
    if not data:
        return 0.0
    total = len(data)
    return -sum(n / total * math.log2(n / total) for n in Counter(data).values())


def looks_encrypted(path: Path, bits: float, *, in_child: bool = False) -> bool:
    """High entropy and no known format's magic number at the start; ``in_child``: the
    start read by a child process (for a file this process holds a POSIX lock on)."""
    sample = _start_in_child(path) if in_child else _start(path)
    if len(sample) < 256 or sample.startswith(_MAGICS):
        return False
    return shannon_entropy(sample) >= bits


def _start(path: Path) -> bytes:
    try:
        with path.open("rb") as source:
            return source.read(_SAMPLE)
    except OSError:
        return b""


_READ_START = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read(int(sys.argv[2])))"


def _start_in_child(path: Path) -> bytes:
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _READ_START, str(path), str(_SAMPLE)],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return b""
    return done.stdout if done.returncode == 0 else b""


@dataclass
class Watcher:
    """Scans ``roots`` and counts the signs above; ``immutable`` and ``append_only`` are
    folders under the roots, ``ignore`` folders it does not look into. Files whose name
    starts with one of ``transient_prefixes`` (a writer's temporary file, linked to its
    content name and removed within one write) are not tracked: one seen by a scan in the
    middle of a landing would otherwise read as a deleted immutable file at the next.
    ``held`` files (the lake's database file) are read only by a child process (see the
    module docstring)."""

    roots: Sequence[Path]
    rules: WatchRules
    immutable: Sequence[Path] = ()
    append_only: Sequence[Path] = ()
    ignore: Sequence[Path] = ()
    transient_prefixes: tuple[str, ...] = ()
    held: Sequence[Path] = ()
    clock: Callable[[], float] = time.time
    _seen: dict[Path, _Seen] = field(default_factory=dict)
    _recent: deque[Finding] = field(default_factory=deque)
    _started: bool = False

    def _kind_of(self, path: Path) -> str | None:
        for folder in self.immutable:
            if path.is_relative_to(folder):
                return "immutable"
        for folder in self.append_only:
            if path.is_relative_to(folder):
                return "append_only"
        return None

    def _walk(self) -> Iterable[tuple[Path, os.stat_result]]:
        ignored = {str(p) for p in self.ignore}
        stack = [str(root) for root in self.roots]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.path not in ignored:
                            stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        if self.transient_prefixes and entry.name.startswith(
                            self.transient_prefixes
                        ):
                            continue
                        yield Path(entry.path), entry.stat(follow_symlinks=False)
                except OSError:
                    continue

    def scan(self) -> list[Finding]:
        """One scan: what changed since the last one (nothing on the first, the baseline)."""
        now = self.clock()
        current: dict[Path, _Seen] = {}
        findings: list[Finding] = []
        for path, stat in self._walk():
            kind = self._kind_of(path)
            before = self._seen.get(path)
            head = None
            if kind == "append_only":
                changed = before is None or (before.size, before.mtime_ns) != (
                    stat.st_size, stat.st_mtime_ns
                )  # fmt: skip
                head = _head_digest(path) if changed else before.head  # type: ignore[union-attr]
            current[path] = _Seen(stat.st_size, stat.st_mtime_ns, stat.st_ino, head)
            if not self._started:
                continue
            if before is None:
                if path.suffix.lower() in self.rules.extensions:
                    findings.append(Finding(RANSOM_RENAME, str(path), now))
                elif looks_encrypted(path, self.rules.entropy_bits, in_child=path in self.held):
                    findings.append(Finding(HIGH_ENTROPY, str(path), now))
                continue
            if (before.size, before.mtime_ns, before.inode) == (
                stat.st_size, stat.st_mtime_ns, stat.st_ino
            ):  # fmt: skip
                continue
            rewritten = kind == "immutable" or (
                kind == "append_only" and (head != before.head or stat.st_size < before.size)
            )
            if rewritten:
                findings.append(Finding(IMMUTABLE_REWRITE, str(path), now))
            elif looks_encrypted(path, self.rules.entropy_bits, in_child=path in self.held):
                findings.append(Finding(HIGH_ENTROPY, str(path), now))
        if self._started:
            for path in self._seen.keys() - current.keys():
                if self._kind_of(path) == "immutable":
                    findings.append(Finding(IMMUTABLE_REWRITE, str(path), now))
        self._seen = current
        self._started = True
        self._recent.extend(findings)
        while self._recent and self._recent[0].at < now - self.rules.window_seconds:
            self._recent.popleft()
        return findings

    def alert(self) -> Alert | None:
        """An alert when a sign reached its limit within the window, else None."""
        counts = Counter(f.kind for f in self._recent)
        limits = {
            RANSOM_RENAME: self.rules.rename_burst,
            IMMUTABLE_REWRITE: self.rules.rewrite_limit,
            HIGH_ENTROPY: self.rules.entropy_burst,
        }
        reasons = [
            f"{counts[kind]} {_LABELS[kind]} within {self.rules.window_seconds:g} s"
            for kind, limit in limits.items()
            if counts[kind] >= limit
        ]
        if not reasons:
            return None
        findings = list(self._recent)
        return Alert(reasons, findings, min(f.at for f in findings))


def _head_digest(path: Path) -> str | None:
    try:
        with path.open("rb") as source:
            return hashlib.sha256(source.read(_HEAD)).hexdigest()
    except OSError:
        return None

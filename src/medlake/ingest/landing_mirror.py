"""The two roots of mirrored landing: which sides are healthy, verified reads, resync.

A :class:`LandingStore` names the primary landing root, an optional mirror root (a
second local path: another disk, or a network file system mounted on this host; or any
fsspec URL such as ``s3://bucket/prefix`` on an S3-compatible store, see
:mod:`medlake.ingest.landing_remote`), the state file that remembers a degraded side,
and the workspace's freeze file. The state
is a small JSON file written atomically (temporary file, fsync, rename), because it must
survive the crash that may follow a disk failure; it also lists the degradation events
not yet written to the audit trail (the landing function has no lake connection; the
service that has one writes them, see ``medlake.service.mirror``).

Resync compares the two roots name by name, re-hashes every landed file on both, and
copies a good copy (content matches its SHA-256 name) over a missing, truncated or
bit-flipped one. Replacing a corrupted landed file is the one time a landed name is
written over: the bytes that were there are not the bytes that were landed.

A ``fault`` hook (tests only) is called with (side, step) before each step of a write
— ``open``, ``write``, ``fsync``, ``link`` — and may raise :class:`OSError`, so full
disks and read-only roots can be injected at exact points on any machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medlake.config import is_url
from medlake.durable import fsync_dir
from medlake.errors import InputError
from medlake.ingest.landing_remote import RemoteRoot

PRIMARY = "primary"
MIRROR = "mirror"
OK = "ok"
DEGRADED = "degraded"

_NAME = re.compile(r"^[0-9a-f]{64}$")
_READ_SIZE = 1 << 20

FaultHook = Callable[[str, str], None]


@dataclass(frozen=True)
class Side:
    """One landing root: a local folder (``root``) or a root at an fsspec URL (``remote``)."""

    name: str  # "primary" or "mirror"
    root: Path | None
    remote: RemoteRoot | None = None

    @property
    def label(self) -> str:
        return str(self.root) if self.root is not None else self.remote.url  # type: ignore[union-attr]

    def path(self, sha256: str) -> Path:
        """Where a landed name lies on a local root."""
        if self.root is None:
            raise InputError(f"{self.label} is not a local folder")
        return self.root / sha256[:2] / sha256

    def holds(self, sha256: str) -> bool:
        """Whether this root has the name (an unreachable store holds nothing)."""
        if self.root is not None:
            return self.path(sha256).exists()
        try:
            return self.remote.exists(sha256)  # type: ignore[union-attr]
        except OSError:
            return False

    def blocks(self, sha256: str) -> Iterator[bytes]:
        if self.root is not None:
            with self.path(sha256).open("rb") as source:
                while block := source.read(_READ_SIZE):
                    yield block
        else:
            yield from self.remote.blocks(sha256)  # type: ignore[union-attr]

    def verify(self, sha256: str) -> bool | None:
        """True when the copy's bytes hash to its name, False when not, None when absent.

        A root that cannot be read (a store that is down) counts as absent.
        """
        digest = hashlib.sha256()
        try:
            for block in self.blocks(sha256):
                digest.update(block)
        except OSError:
            return None
        return digest.hexdigest() == sha256

    def names(self) -> set[str]:
        if self.root is not None:
            return landed_names(self.root)
        try:
            return self.remote.names()  # type: ignore[union-attr]
        except OSError:
            return set()

    def reachable(self) -> bool:
        if self.root is not None:
            return self.root.is_dir()
        return self.remote.reachable()  # type: ignore[union-attr]

    def ensure(self) -> None:
        """Create the root again (the operator replaced the disk, recreated the bucket)."""
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            self.remote.ensure()  # type: ignore[union-attr]


def mirror_location(value: Path | str | None) -> Path | str | None:
    """A configured mirror root as a local Path (plain path or ``file://``) or a URL."""
    if value is None or isinstance(value, Path):
        return value
    if value.startswith("file://"):
        return Path(value.removeprefix("file://"))
    return value if is_url(value) else Path(value)


@dataclass
class LandingStore:
    """Where landing writes: one root, or two mirrored ones, and the state that goes with them."""

    primary: Path
    mirror: Path | str | None = None  # a folder, or an fsspec URL (s3://bucket/prefix)
    state_file: Path | None = None
    freeze_file: Path | None = None
    on_failure: Literal["degrade", "refuse"] = "degrade"
    fault: FaultHook | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)  # for a URL mirror
    cache_dir: Path | None = None  # verified copies fetched from a URL mirror
    _memory_state: dict[str, object] = field(default_factory=dict, repr=False)
    _remote: RemoteRoot | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.mirror = mirror_location(self.mirror)

    @classmethod
    def of(cls, landing: Path | LandingStore) -> LandingStore:
        return landing if isinstance(landing, LandingStore) else cls(Path(landing))

    def sides(self) -> list[Side]:
        sides = [Side(PRIMARY, self.primary)]
        if isinstance(self.mirror, Path):
            sides.append(Side(MIRROR, self.mirror))
        elif self.mirror is not None:
            if self._remote is None:
                self._remote = RemoteRoot(self.mirror, dict(self.storage_options))
            sides.append(Side(MIRROR, None, self._remote))
        return sides

    def side(self, name: str) -> Side:
        for side in self.sides():
            if side.name == name:
                return side
        raise InputError(f"no landing side {name!r} (is a mirror configured?)")

    def state(self) -> dict[str, object]:
        """``{"sides": {name: {...}}, "events": [...]}`` as last written."""
        if self.state_file is None:
            return self._memory_state or {"sides": {}, "events": []}
        try:
            return json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"sides": {}, "events": []}
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.state_file}: unreadable mirror state: {exc}") from exc

    def write_state(self, state: dict[str, object]) -> None:
        if self.state_file is None:
            self._memory_state = state
            return
        _write_json_atomically(self.state_file, state)

    def status_of(self, name: str) -> dict[str, object]:
        sides = self.state().get("sides", {})
        return dict(sides.get(name, {"status": OK}))  # type: ignore[union-attr]

    def healthy_sides(self) -> list[Side]:
        if self.mirror is None:
            return self.sides()
        sides = self.state().get("sides", {})
        return [
            s for s in self.sides()
            if sides.get(s.name, {}).get("status", OK) == OK  # type: ignore[union-attr]
        ]  # fmt: skip

    def mark_degraded(self, name: str, error: OSError) -> None:
        """Record that side ``name`` failed (and an event for the audit trail)."""
        state = self.state()
        now = _now()
        reason = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
        sides = state.setdefault("sides", {})
        sides[name] = {"status": DEGRADED, "since": now, "reason": reason}  # type: ignore[index]
        events = state.setdefault("events", [])
        events.append({"at": now, "side": name, "action": "mirror.degraded", "reason": reason})  # type: ignore[union-attr]
        self.write_state(state)

    def mark_ok(self, names: list[str], detail: str) -> None:
        state = self.state()
        sides = state.setdefault("sides", {})
        now = _now()
        for name in names:
            sides[name] = {"status": OK, "since": now}  # type: ignore[index]
            state.setdefault("events", []).append(  # type: ignore[union-attr]
                {"at": now, "side": name, "action": "mirror.resynced", "reason": detail}
            )
        self.write_state(state)

    def take_events(self) -> list[dict[str, object]]:
        """The events not yet audited, removed from the state (the caller audits them)."""
        state = self.state()
        events = list(state.get("events", []))  # type: ignore[arg-type]
        if events:
            state["events"] = []
            self.write_state(state)
        return events

    def fault_point(self, side: str, step: str) -> None:
        if self.fault is not None:
            self.fault(side, step)


# ---------------------------------------------------------------------- reading


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


def verified_path(landing: Path | LandingStore, relative_or_sha: str) -> Path:
    """A local copy of the landed content whose bytes match its SHA-256, healthy sides first.

    A missing, truncated or altered copy on one side is passed over for the other's; a
    good copy found only on a URL mirror is fetched (verified) into the store's cache
    folder. If no side holds good bytes the content is lost from landing, said in one line.
    """
    store = LandingStore.of(landing)
    sha256 = relative_or_sha.rsplit("/", 1)[-1]
    healthy = store.healthy_sides()
    for side in healthy + [s for s in store.sides() if s not in healthy]:
        if side.root is not None:
            path = side.path(sha256)
            with contextlib.suppress(OSError):
                if file_sha256(path) == sha256:
                    return path
            continue
        with contextlib.suppress(OSError, InputError):
            return fetch_verified(store, side, sha256)
    raise InputError(f"landed content {sha256} is missing or corrupted on every landing root")


def fetch_verified(store: LandingStore, side: Side, sha256: str) -> Path:
    """Copy ``sha256`` from a URL root into the cache folder, checking its hash on the way."""
    cache = store.cache_dir or store.primary.parent / ".landing-cache"
    target = cache / sha256[:2] / sha256
    if target.exists() and file_sha256(target) == sha256:
        return target
    _copy_blocks(side.blocks(sha256), target, sha256, replace=True)
    return target


# ---------------------------------------------------------------------- status and resync


def landed_names(root: Path) -> set[str]:
    """SHA-256 names of the files landed under ``root`` (temporaries and strays left out)."""
    if not root.is_dir():
        return set()
    return {
        path.name
        for path in root.glob("??/*")
        if _NAME.match(path.name) and path.parent.name == path.name[:2]
    }


@dataclass(frozen=True)
class SideStatus:
    name: str
    root: str
    status: str
    since: str | None
    reason: str | None
    files: int
    missing: int  # names the other side has and this one lacks
    reachable: bool


def mirror_status(store: LandingStore) -> list[SideStatus]:
    """Each side's health and how many landed names it lacks compared with the other."""
    names = {side.name: side.names() for side in store.sides()}
    every = set().union(*names.values()) if names else set()
    result = []
    for side in store.sides():
        state = store.status_of(side.name)
        result.append(
            SideStatus(
                name=side.name,
                root=side.label,
                status=str(state.get("status", OK)),
                since=state.get("since"),  # type: ignore[arg-type]
                reason=state.get("reason"),  # type: ignore[arg-type]
                files=len(names[side.name]),
                missing=len(every - names[side.name]),
                reachable=side.reachable(),
            )
        )
    return result


@dataclass
class ResyncReport:
    checked: int = 0
    copied: dict[str, int] = field(default_factory=dict)  # side -> files written
    repaired: dict[str, int] = field(default_factory=dict)  # side -> corrupted files replaced
    lost: list[str] = field(default_factory=list)  # no good copy anywhere

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked, "copied": self.copied,
            "repaired": self.repaired, "lost": self.lost,
        }  # fmt: skip


def resync(store: LandingStore, progress: Callable[[int, int], None] | None = None) -> ResyncReport:
    """Make every side hold a verified copy of every landed file; mark the sides ok.

    A side's root that is gone is created again (the operator has replaced the disk, or
    recreated the bucket). Every file on every side is re-hashed (read back from a URL
    mirror): the only way to find a bit flip or an overwritten object.
    """
    report = ResyncReport()
    if store.mirror is None:
        raise InputError("no mirror is configured (set paths.landing_mirror in medlake.toml)")
    sides = store.sides()
    for side in sides:
        side.ensure()
    names = sorted(set().union(*(side.names() for side in sides)))
    for index, sha256 in enumerate(names):
        report.checked += 1
        good: Side | None = None
        bad: list[tuple[Side, bool]] = []  # (side, present but corrupted)
        for side in sides:
            ok = side.verify(sha256)
            if ok:
                good = good or side
            else:
                bad.append((side, ok is False))
        if good is None:
            report.lost.append(sha256)
        else:
            for side, corrupted in bad:
                copy_landed(good, side, sha256, replace=corrupted)
                counts = report.repaired if corrupted else report.copied
                counts[side.name] = counts.get(side.name, 0) + 1
        if progress is not None:
            progress(index + 1, len(names))
    if not report.lost:
        store.mark_ok([side.name for side in sides], f"{report.checked} files verified")
    return report


def copy_landed(source: Side, target: Side, sha256: str, *, replace: bool) -> None:
    """Copy a verified landed file from one side to another (hash checked on the way)."""
    if target.root is not None:
        _copy_blocks(source.blocks(sha256), target.path(sha256), sha256, replace=replace)
        return
    write = target.remote.writer(sha256)  # type: ignore[union-attr]
    digest = hashlib.sha256()
    try:
        write.open()
        for block in source.blocks(sha256):
            digest.update(block)
            write.write(block)
        if digest.hexdigest() != sha256:
            raise InputError(f"{source.label}: {sha256} changed while it was copied")
        write.commit()  # an object store replaces the corrupted object in one PUT
    finally:
        write.abort()


def _copy_blocks(blocks: Iterable[bytes], target: Path, sha256: str, *, replace: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".landing-{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    try:
        with temp.open("xb") as out:
            for block in blocks:
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise InputError(f"{sha256}: the copy read does not match its name")
        os.chmod(temp, 0o444)
        if replace:
            os.replace(temp, target)  # the corrupted bytes were never the landed ones
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temp, target)
        fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


# ---------------------------------------------------------------------- freeze


def write_json_atomically(path: Path, value: object) -> None:
    """Write JSON to ``path`` so a crash leaves the old or the new file, never half of one."""
    _write_json_atomically(path, value)


def _write_json_atomically(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    with temp.open("w", encoding="utf-8") as out:
        json.dump(value, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

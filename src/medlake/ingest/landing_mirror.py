"""The two roots of mirrored landing: which sides are healthy, verified reads, resync.

A :class:`LandingStore` names the primary landing root, an optional mirror root (a
second local path: another disk, or a network file system mounted on this host), the
state file that remembers a degraded side, and the workspace's freeze file. The state
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
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medlake.errors import InputError

PRIMARY = "primary"
MIRROR = "mirror"
OK = "ok"
DEGRADED = "degraded"

_NAME = re.compile(r"^[0-9a-f]{64}$")
_READ_SIZE = 1 << 20

FaultHook = Callable[[str, str], None]


@dataclass(frozen=True)
class Side:
    name: str  # "primary" or "mirror"
    root: Path


@dataclass
class LandingStore:
    """Where landing writes: one root, or two mirrored ones, and the state that goes with them."""

    primary: Path
    mirror: Path | None = None
    state_file: Path | None = None
    freeze_file: Path | None = None
    on_failure: Literal["degrade", "refuse"] = "degrade"
    fault: FaultHook | None = None
    _memory_state: dict[str, object] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, landing: Path | LandingStore) -> LandingStore:
        return landing if isinstance(landing, LandingStore) else cls(Path(landing))

    def sides(self) -> list[Side]:
        sides = [Side(PRIMARY, self.primary)]
        if self.mirror is not None:
            sides.append(Side(MIRROR, self.mirror))
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
    """A copy of the landed content whose bytes match its SHA-256, healthy sides first.

    A missing, truncated or altered copy on one side is passed over for the other's; if
    no side holds good bytes the content is lost from landing, said in one line.
    """
    store = LandingStore.of(landing)
    sha256 = relative_or_sha.rsplit("/", 1)[-1]
    healthy = store.healthy_sides()
    for side in healthy + [s for s in store.sides() if s not in healthy]:
        path = side.root / sha256[:2] / sha256
        with contextlib.suppress(OSError):
            if file_sha256(path) == sha256:
                return path
    raise InputError(f"landed content {sha256} is missing or corrupted on every landing root")


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
    names = {side.name: landed_names(side.root) for side in store.sides()}
    every = set().union(*names.values()) if names else set()
    result = []
    for side in store.sides():
        state = store.status_of(side.name)
        result.append(
            SideStatus(
                name=side.name,
                root=str(side.root),
                status=str(state.get("status", OK)),
                since=state.get("since"),  # type: ignore[arg-type]
                reason=state.get("reason"),  # type: ignore[arg-type]
                files=len(names[side.name]),
                missing=len(every - names[side.name]),
                reachable=side.root.is_dir(),
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

    A side's root that is gone is created again (the operator has replaced the disk).
    Every file on every side is re-hashed: the only way to find a bit flip.
    """
    report = ResyncReport()
    if store.mirror is None:
        raise InputError("no mirror is configured (set paths.landing_mirror in medlake.toml)")
    for side in store.sides():
        side.root.mkdir(parents=True, exist_ok=True)
    names = sorted(set().union(*(landed_names(side.root) for side in store.sides())))
    for index, sha256 in enumerate(names):
        report.checked += 1
        good: Path | None = None
        bad: list[tuple[Side, bool]] = []  # (side, present but corrupted)
        for side in store.sides():
            path = side.root / sha256[:2] / sha256
            try:
                ok = file_sha256(path) == sha256
            except FileNotFoundError:
                bad.append((side, False))
                continue
            if ok:
                good = good or path
            else:
                bad.append((side, True))
        if good is None:
            report.lost.append(sha256)
        else:
            for side, corrupted in bad:
                _copy_landed(good, side.root / sha256[:2] / sha256, replace=corrupted)
                counts = report.repaired if corrupted else report.copied
                counts[side.name] = counts.get(side.name, 0) + 1
        if progress is not None:
            progress(index + 1, len(names))
    if not report.lost:
        store.mark_ok([side.name for side in store.sides()], f"{report.checked} files verified")
    return report


def _copy_landed(source: Path, target: Path, *, replace: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".landing-{uuid.uuid4().hex}"
    try:
        with source.open("rb") as src, temp.open("xb") as out:
            shutil.copyfileobj(src, out, _READ_SIZE)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o444)
        if replace:
            os.replace(temp, target)  # the corrupted bytes were never the landed ones
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temp, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


# ---------------------------------------------------------------------- freeze


def frozen_message(freeze_file: Path | None) -> str | None:
    """The refusal message while the workspace is frozen read-only, else None."""
    if freeze_file is None or not freeze_file.exists():
        return None
    try:
        freeze = json.loads(freeze_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        freeze = {}
    return (
        f"the workspace is frozen read-only since {freeze.get('since', '?')} "
        f"({freeze.get('reason', 'ransomware watch alert')}); nothing is written until an "
        "operator has reviewed it and run 'medlake watch clear'"
    )


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
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

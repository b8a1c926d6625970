"""Anchoring the chain head outside the lake, so a cut or rewritten trail is noticed.

A hash chain shows an event changed in place, but not a trail cut short at its end nor
one rewritten wholesale from some event on (anyone can recompute SHA-256). An anchor is
``{event_id, event_hash, anchored_at}`` of the head at some moment, appended as one JSON
line to a file that lives apart from the lake (``audit/anchors.jsonl`` in the
workspace) and flushed to disk with ``fsync`` before the call returns. Verification
then checks that every anchored event is still in the trail with the same hash.

Copies go wherever :class:`AnchorLog` is given more paths (a mirror root) and to any
``sink`` callables (a mirror service that ships the line elsewhere).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from medlake.durable import fsync_dir
from medlake.errors import InputError

ANCHORS_FILE = Path("audit") / "anchors.jsonl"


@dataclass(frozen=True)
class Anchor:
    """The chain head as seen at ``anchored_at`` (UTC, ISO 8601)."""

    event_id: int
    event_hash: str
    anchored_at: str

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")) + "\n"


#: Something that keeps a copy of each new anchor (e.g. the backup mirror).
AnchorSink = Callable[[Anchor], None]


def new_anchor(event_id: int, event_hash: str) -> Anchor:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return Anchor(event_id, event_hash, now.isoformat(timespec="microseconds"))


class AnchorLog:
    """Append-only anchor file(s): the first path is read back, all are written."""

    def __init__(self, path: Path, copies: Sequence[Path] = (), sinks: Sequence[AnchorSink] = ()):
        self.path = path
        self.copies = tuple(copies)
        self.sinks = tuple(sinks)

    def append(self, anchor: Anchor) -> None:
        """Write ``anchor`` to every file, each flushed and fsync'd; then call the sinks."""
        for path in (self.path, *self.copies):
            _append_durably(path, anchor.line())
        for sink in self.sinks:
            sink(anchor)

    def read(self) -> list[Anchor]:
        """Every anchor in the file, oldest first ([] if there is no file yet)."""
        return read_anchors(self.path)

    def last(self) -> Anchor | None:
        anchors = self.read()
        return anchors[-1] if anchors else None


def read_anchors(path: Path) -> list[Anchor]:
    """Parse an anchors file; a damaged line is an error naming the file and line."""
    if not path.exists():
        return []
    anchors = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
            anchors.append(
                Anchor(int(raw["event_id"]), str(raw["event_hash"]), str(raw["anchored_at"]))
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{number}: not an audit anchor ({exc})") from exc
    return anchors


def _append_durably(path: Path, line: str) -> None:
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        # A new file's name must reach the disk too, or a crash can lose the file.
        fsync_dir(path.parent)


__all__ = ["ANCHORS_FILE", "Anchor", "AnchorLog", "AnchorSink", "new_anchor", "read_anchors"]

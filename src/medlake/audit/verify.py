"""Checking the audit trail: which events were edited, deleted, inserted or reordered.

Three things are checked, each finding naming the event(s) at fault:

1. **Contents**: every event's stored fields must give its stored ``event_hash``; an
   event whose fields were changed (and its hash left) is *edited*.
2. **Links**: in ``event_id`` order, every event's ``prev_hash`` must be the previous
   event's ``event_hash`` (zeros for the first). Where it is not, the links say what
   happened: a gap in the ids is a *deletion*; an event the chain steps over and that no
   event links to was *inserted*; an event that links to one stored after it was
   *reordered*; a link to a hash no event has means the event before was changed and
   re-hashed (or one between deleted and the ids closed up).
3. **Anchors** (:mod:`medlake.audit.anchors`): every anchored event must still be there
   with the anchored hash; a missing one means the trail was *truncated*, a different
   hash that it was *rewritten* from that event or earlier. The same holds for the
   ``audit_head`` row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from medlake.audit.anchors import Anchor
from medlake.audit.chain import EVENT_TABLE, HEAD_TABLE, ZERO_HASH, AuditEvent, live_journal
from medlake.engine import Engine
from medlake.errors import MedlakeError

EDITED = "edited"
DELETED = "deleted"
INSERTED = "inserted"
REORDERED = "reordered"
TRUNCATED = "truncated"
REWRITTEN = "rewritten"


class AuditTrailAlteredError(MedlakeError):
    """Verification found the trail altered; the message names the first finding."""

    exit_code = 65  # EX_DATAERR


@dataclass(frozen=True)
class ChainFinding:
    """One thing wrong with the trail: its kind, the event it concerns, and why."""

    kind: str
    event_id: int | None
    message: str


@dataclass
class VerifyResult:
    """What verification found; ``ok`` when nothing."""

    events: int
    head_id: int
    head_hash: str
    anchors_checked: int
    findings: list[ChainFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def event_ids(self, kind: str | None = None) -> set[int]:
        """The events named by findings (of ``kind``, if given)."""
        return {
            f.event_id
            for f in self.findings
            if f.event_id is not None and (kind is None or f.kind == kind)
        }


def read_events(engine: Engine) -> list[AuditEvent]:
    """Every stored event in ``event_id`` order (ties by time, then hash), and after them
    those of this process's live journal not yet moved into the table."""
    # The journal's unmoved events are taken before the table is read: the mover commits
    # a batch and then drops it from the journal, so the other order can see a batch in
    # neither place. This way a batch moved in between is in the table read, and one
    # seen in both is kept once.
    journal = live_journal(engine)
    unmoved = journal.unmoved() if journal is not None else []
    events = engine.table(EVENT_TABLE)
    ordered = events.order_by([events.event_id, events.occurred_at, events.event_hash])
    stored = [AuditEvent.from_row(row) for row in engine.execute(ordered).to_pylist()]
    last = stored[-1].event_id if stored else 0
    stored += [event for event in unmoved if event.event_id > last]
    return stored


def verify_events(
    events: Sequence[AuditEvent],
    anchors: Iterable[Anchor] = (),
    head: tuple[int, str] | None = None,
) -> VerifyResult:
    """Check ``events`` (in stored ``event_id`` order) against themselves and ``anchors``."""
    findings: list[ChainFinding] = []
    seen: set[tuple[str, int | None]] = set()

    def found(kind: str, event_id: int | None, message: str) -> None:
        if (kind, event_id) not in seen:
            seen.add((kind, event_id))
            findings.append(ChainFinding(kind, event_id, message))

    for event in events:
        if event.computed_hash() != event.event_hash:
            found(EDITED, event.event_id, f"event {event.event_id}: fields do not match its hash")
    for event_id, times in sorted(Counter(e.event_id for e in events).items()):
        if times > 1:
            found(INSERTED, event_id, f"event id {event_id} is stored {times} times")
    _check_links(events, found)
    anchor_count = _check_anchors(events, anchors, head, found, bool(findings))
    last = events[-1] if events else None
    return VerifyResult(
        events=len(events),
        head_id=last.event_id if last else 0,
        head_hash=last.event_hash if last else ZERO_HASH,
        anchors_checked=anchor_count,
        findings=findings,
    )


def _check_links(events: Sequence[AuditEvent], found) -> None:  # type: ignore[no-untyped-def]
    position = {}
    for index, event in enumerate(events):
        position.setdefault(event.event_hash, index)
    referenced = {event.prev_hash for event in events}
    for index, event in enumerate(events):
        before = events[index - 1] if index else None
        expected = before.event_hash if before else ZERO_HASH
        if event.prev_hash == expected:
            continue
        eid = event.event_id
        target = position.get(event.prev_hash)
        if before is not None and event.prev_hash == ZERO_HASH:
            found(INSERTED, eid, f"event {eid} starts a chain of its own: inserted")
        elif target is not None and target > index:
            later = events[target].event_id
            message = f"event {eid} follows event {later} in the chain but is stored before it"
            found(REORDERED, eid, f"{message}: reordered")
            found(REORDERED, later, f"{message}: reordered")
        elif target is not None:
            # Events stored between this one and its predecessor: those no event links
            # to were inserted; the others are out of place, named where their own
            # successor points forward to them.
            for other in events[target + 1 : index]:
                if other.event_hash not in referenced:
                    found(
                        INSERTED,
                        other.event_id,
                        f"event {other.event_id} is not linked into the chain: inserted",
                    )
        elif before is None:
            found(DELETED, eid, f"events before {eid} are missing: deleted")
        elif eid - before.event_id > 1:
            first, last = before.event_id + 1, eid - 1
            span = str(first) if first == last else f"{first}..{last}"
            for missing in range(first, last + 1):
                found(DELETED, missing, f"event {span} missing from the trail: deleted")
        else:
            found(
                EDITED,
                before.event_id,
                f"event {eid} records a hash for its predecessor that no event has: "
                f"event {before.event_id} was changed and re-hashed, or an event between "
                f"{before.event_id} and {eid} was deleted and the ids closed up",
            )


def _check_anchors(  # type: ignore[no-untyped-def]
    events: Sequence[AuditEvent], anchors: Iterable[Anchor], head, found, explained: bool
) -> int:
    by_id: dict[int, str] = {}
    for event in events:
        by_id.setdefault(event.event_id, event.event_hash)
    last_id = events[-1].event_id if events else 0
    count = 0
    marks = [(a.event_id, a.event_hash, f"the anchor of {a.anchored_at}") for a in anchors]
    count = len(marks)
    if head is not None and head[0] > 0:
        marks.append((head[0], head[1], HEAD_TABLE))
    hashes = {event.event_hash: event.event_id for event in events}
    for event_id, hash_, where in marks:
        if hash_ in hashes:
            # The anchored event is still there; a shifted id is the work of an insertion
            # or deletion before it, which the links have named.
            if hashes[hash_] != event_id and not explained:
                found(REORDERED, hashes[hash_], f"{where} has this event as {event_id}")
            continue
        if event_id not in by_id:
            if event_id > last_id:
                found(
                    TRUNCATED,
                    event_id,
                    f"{where} records event {event_id}, but the trail ends at {last_id}: truncated",
                )
            continue  # a gap inside the trail is already reported as a deletion
        if by_id[event_id] != hash_:
            found(
                REWRITTEN,
                event_id,
                f"event {event_id} has a different hash from {where}: the trail was "
                "rewritten from this event or an earlier one",
            )
    return count


def read_head(engine: Engine) -> tuple[int, str] | None:
    """The ``audit_head`` row, if the lake has one."""
    if not engine.has_table(HEAD_TABLE):
        return None
    rows = engine.execute(engine.table(HEAD_TABLE).select("event_id", "event_hash")).to_pylist()
    return (int(rows[0]["event_id"]), str(rows[0]["event_hash"])) if rows else None


__all__ = [
    "DELETED",
    "EDITED",
    "INSERTED",
    "REORDERED",
    "REWRITTEN",
    "TRUNCATED",
    "AuditTrailAlteredError",
    "ChainFinding",
    "VerifyResult",
    "read_events",
    "read_head",
    "verify_events",
]

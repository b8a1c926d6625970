"""The audit trail: who read, exported, merged or changed what, hash-chained and anchored.

Services record an event with :func:`append_event` (``default_actor()`` while there are
no users); :func:`verify_events` and the anchors of :mod:`medlake.audit.anchors` tell
whether the trail is whole; :func:`events_query` filters it for ``medlake audit show``.
Nothing here updates or deletes an event: the trail only grows.
"""

from medlake.audit.anchors import ANCHORS_FILE, Anchor, AnchorLog, AnchorSink, new_anchor
from medlake.audit.chain import (
    EVENT_TABLE,
    OUTCOMES,
    ZERO_HASH,
    AuditEvent,
    append_event,
    chain_head,
    default_actor,
    default_origin,
    event_hash,
)
from medlake.audit.query import EventFilter, events_query
from medlake.audit.verify import (
    AuditTrailAlteredError,
    ChainFinding,
    VerifyResult,
    read_events,
    read_head,
    verify_events,
)

__all__ = [
    "ANCHORS_FILE",
    "EVENT_TABLE",
    "OUTCOMES",
    "ZERO_HASH",
    "Anchor",
    "AnchorLog",
    "AnchorSink",
    "AuditEvent",
    "AuditTrailAlteredError",
    "ChainFinding",
    "EventFilter",
    "VerifyResult",
    "append_event",
    "chain_head",
    "default_actor",
    "default_origin",
    "event_hash",
    "events_query",
    "new_anchor",
    "read_events",
    "read_head",
    "verify_events",
]

"""The lake's one clock: now as naive UTC, or the time ``$MEDLAKE_CLOCK`` fixes.

Every timestamp medlake writes (batch receive times that become record versions, audit
event times and the chain head, EMPI decisions and operations, job retention's "now")
comes from :func:`utc_now`, so with ``MEDLAKE_CLOCK`` set (an ISO datetime, UTC) two
runs of the same work build byte-identical lakes: what the crash-safety, rebuild and
link-after-ingest tests compare, and what benchmarks use for reproducible runs.
"""

from __future__ import annotations

import datetime as dt
import os

CLOCK_ENV = "MEDLAKE_CLOCK"


def utc_now() -> dt.datetime:
    """Now as the naive UTC datetime the lake stores, or ``$MEDLAKE_CLOCK`` when set."""
    fixed = os.environ.get(CLOCK_ENV)
    if fixed:
        return dt.datetime.fromisoformat(fixed).replace(tzinfo=None)
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)

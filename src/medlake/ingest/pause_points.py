"""Named pause points, so crash-safety tests can kill a real ingest at a known moment.

With ``MEDLAKE_PAUSE_AT=name`` (or ``name:N`` for the N-th time the point is reached)
and ``MEDLAKE_PAUSE_FILE=path`` in the environment, the ingest process writes ``name``
to ``path`` when it reaches that point and then sleeps until killed. The test waits for
the file, sends SIGKILL, re-runs and compares the lake with an uninterrupted run. Unset,
a pause point costs one environment lookup.

Points: ``landed`` (file landed, batch not registered), ``landed_ahead`` (a group of
small files landed and being read in a thread while the group before is written, none of
its batches registered), ``registered`` (batch received),
``running`` (status running committed), ``chunk`` (a chunk written, uncommitted),
``merges`` (merges applied, uncommitted), ``before_commit`` (status loaded written,
uncommitted), ``committed`` (the batch's transaction committed).
"""

from __future__ import annotations

import os
import time
from collections import Counter

PAUSE_AT_ENV = "MEDLAKE_PAUSE_AT"
PAUSE_FILE_ENV = "MEDLAKE_PAUSE_FILE"

_reached: Counter[str] = Counter()


def pause_point(name: str) -> None:
    """Pause here forever if the environment asks for this point (tests only)."""
    wanted = os.environ.get(PAUSE_AT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] != int(nth or 1):
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        with open(marker, "w", encoding="utf-8") as out:
            out.write(name)
            out.flush()
            os.fsync(out.fileno())
    while True:  # the test kills us here
        time.sleep(60)

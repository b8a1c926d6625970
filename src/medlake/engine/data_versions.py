"""Write counters per lake and table: what lets results computed from the lake be reused.

Every lake write passes the engine's public methods (:mod:`medlake.engine.base`), which
bump these counters after the write commits; a cached result (the cohort count cache,
patient 360's statements) keyed by :meth:`Engine.data_version` is right while it holds.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable

#: What :meth:`Engine.data_version` counts a write as when it cannot say which table.
ANY_TABLE = "*"


class _DataVersions:
    """Write counters per lake and table, for the whole process.

    Each lake (a backend's :meth:`Engine._lake_identity`) has an epoch, bumped when
    its storage may have been changed from outside this process (DuckDB: the database
    opened afresh), and a counter per table, bumped after every write to it commits.
    Every write passes the engine's public methods, so a result computed under one
    version is still right while the version is unchanged: the cohort count cache
    (:mod:`medlake.service.cohort_query`) relies on it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epochs: dict[str, int] = {}
        self._tables: dict[str, dict[str, int]] = {}

    def new_epoch(self, lake: str) -> None:
        with self._lock:
            self._epochs[lake] = self._epochs.get(lake, 0) + 1

    def bump(self, lake: str, tables: Iterable[str]) -> None:
        with self._lock:
            counters = self._tables.setdefault(lake, {})
            for table in tables:
                counters[table] = counters.get(table, 0) + 1

    def version(self, lake: str, tables: Iterable[str]) -> tuple[Hashable, ...]:
        with self._lock:
            counters = self._tables.get(lake, {})
            per_table = tuple((t, counters.get(t, 0)) for t in sorted(set(tables)))
            return (lake, self._epochs.get(lake, 0), counters.get(ANY_TABLE, 0), per_table)


DATA_VERSIONS = _DataVersions()

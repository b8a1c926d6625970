"""The writer lock of a lake: writes wait while a table is rewritten, instead of failing.

A table rewrite (:meth:`~medlake.engine.capabilities.SupportsReordering.reorder_table`:
the person-order maintenance, minutes at 1M persons) deletes and re-inserts every row
of its table in one transaction. A write made beside it by another connection of the
same process (a Bundle POSTed to the server, an EMPI decision, a job's ingest) that
touches that table met DuckDB's write-write conflict and failed. With the gate:

- every write transaction (:meth:`Engine.transaction`) and every write outside one
  (load, delete, prepared write, SQL that changes the lake) *holds* the gate of its lake
  from its start to its end; a transaction that declares the tables it writes
  (``transaction(tables=...)``, the audit trail and the job table do) holds them only;
- a rewrite takes its table *exclusively*: it waits until no hold that may touch the
  table is left, and new holds that may touch it wait until the rewrite has ended
  (they queue behind the waiting rewrite, so a steady stream of writes cannot starve
  it);
- both waits are bounded (``[layout] write_wait_seconds``); past it the write (or the
  rewrite) fails with :class:`~medlake.errors.LakeBusyError` — a
  :class:`~medlake.errors.WriteConflictError`, 409 through the API, exit 75 in the CLI.

Reads never take it. A hold must be taken before the transaction starts: DuckDB's
snapshot is that of the transaction's start, so a transaction that began before the
rewrite committed conflicts with it even if it writes after. One thread's holds are
re-entrant, and the rewriting thread's own writes pass, so a thread never waits on
itself. Only writes in this process are gated: DuckDB's file lock keeps any other
process from opening the lake while this one has it open, so no other process can write
beside a rewrite. Written here (a condition variable over two counters) because no
library offers a reader-writer lock keyed by table with timeouts; it is about as small
as its tests.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from medlake.errors import LakeBusyError

#: How long a write waits for a rewrite (and a rewrite for the writes before it) when
#: the workspace says nothing (``[layout] write_wait_seconds``).
DEFAULT_WAIT_S = 600.0


@dataclass(slots=True)
class _Hold:
    thread: int
    tables: frozenset[str] | tuple[str, ...] | None  # None: any table


@dataclass
class _Lake:
    cond: threading.Condition = field(default_factory=threading.Condition)
    holds: list[_Hold] = field(default_factory=list)
    rewrites: dict[str, int] = field(default_factory=dict)  # table: rewriting thread
    waiting: dict[str, int] = field(default_factory=dict)  # table: rewrites waiting to start


def _touches(tables: frozenset[str] | tuple[str, ...] | None, table: str) -> bool:
    return tables is None or table in tables


class _WriteHold:
    """One write's hold on a lake's gate (a class, not a generator: every write of a busy
    server takes one, the audit trail's appends included)."""

    __slots__ = ("hold", "state", "wait_s")

    def __init__(self, state: _Lake, tables: Iterable[str] | None, wait_s: float) -> None:
        self.state = state
        self.wait_s = wait_s
        if tables is not None and not isinstance(tables, tuple | frozenset):
            tables = tuple(tables)
        self.hold = _Hold(threading.get_ident(), tables)

    def __enter__(self) -> None:
        state, hold = self.state, self.hold
        with state.cond:
            if state.rewrites or state.waiting:
                self._wait_for_rewrites()
            state.holds.append(hold)

    def _wait_for_rewrites(self) -> None:
        state, me = self.state, self.hold.thread
        # Re-entrant per thread, and the rewriting thread's own writes pass: a thread
        # never waits on itself.
        if me in state.rewrites.values() or any(h.thread == me for h in state.holds):
            return
        deadline = time.monotonic() + self.wait_s
        while blocking := RewriteGates._blocking_write(state, self.hold):
            left = deadline - time.monotonic()
            if left <= 0:
                raise LakeBusyError(
                    f"the write waited {self.wait_s:g} s for the rewrite of table {blocking} "
                    "([layout] write_wait_seconds); nothing was written, send it again"
                )
            state.cond.wait(left)

    def __exit__(self, *exc: object) -> None:
        state = self.state
        with state.cond:
            state.holds.remove(self.hold)
            if state.waiting:  # only a rewrite waits for holds to end
                state.cond.notify_all()


class RewriteGates:
    """The gates of every lake this process writes, keyed by the lake's identity."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lakes: dict[str, _Lake] = {}

    def _lake(self, lake: str) -> _Lake:
        state = self._lakes.get(lake)
        if state is None:
            with self._lock:
                state = self._lakes.setdefault(lake, _Lake())
        return state

    def rewriting(self, lake: str) -> list[str]:
        """The tables of ``lake`` being rewritten now (for status and tests)."""
        state = self._lake(lake)
        with state.cond:
            return sorted(state.rewrites)

    def write(
        self, lake: str, tables: Iterable[str] | None, *, wait_s: float
    ) -> contextlib.AbstractContextManager[None]:
        """Hold ``lake`` for a write of ``tables`` (None: any) for the block; waits up to
        ``wait_s`` while one of them is rewritten or waits to be."""
        return _WriteHold(self._lake(lake), tables, wait_s)

    @staticmethod
    def _blocking_write(state: _Lake, hold: _Hold) -> str | None:
        for table, thread in state.rewrites.items():
            if thread != hold.thread and _touches(hold.tables, table):
                return table
        for table in state.waiting:
            if _touches(hold.tables, table):
                return table
        return None

    @contextlib.contextmanager
    def rewrite(self, lake: str, table: str, *, wait_s: float) -> Iterator[None]:
        """Take ``table`` of ``lake`` exclusively for the block: waits up to ``wait_s``
        for the writes that may touch it (other threads') and for another rewrite of it."""
        state = self._lake(lake)
        me = threading.get_ident()
        deadline = time.monotonic() + wait_s
        with state.cond:
            state.waiting[table] = state.waiting.get(table, 0) + 1
            try:
                while table in state.rewrites or any(
                    h.thread != me and _touches(h.tables, table) for h in state.holds
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LakeBusyError(
                            f"the rewrite of table {table} waited {wait_s:g} s for the writes "
                            "in progress ([layout] write_wait_seconds); it runs again later"
                        )
                    state.cond.wait(left)
            finally:
                state.waiting[table] -= 1
                if not state.waiting[table]:
                    del state.waiting[table]
                state.cond.notify_all()
            state.rewrites[table] = me
        try:
            yield
        finally:
            with state.cond:
                del state.rewrites[table]
                state.cond.notify_all()


GATES = RewriteGates()

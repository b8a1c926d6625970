"""The head kept in memory is only a hint: a writer that did not update it never forks the chain.

Appends link new events to the head this process last committed instead of reading it
back; the compare-and-set on ``audit_head`` must catch every case where that memory is
stale. Each test makes it stale the way it happens on a hospital's lake (another program
appended while this one had the lake closed, a caller's transaction rolled back, appends
inside callers' transactions racing the grouped ones), then checks the whole trail with
``verify`` and event by event.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from medlake.audit import AuditEvent, append_event, event_hash, read_events
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.errors import EngineError
from medlake.service.audit import verify_trail


def _append_elsewhere(lake: Path, actors: list[str]) -> None:
    """What another program does: chain events after the stored head, move the head."""
    con = duckdb.connect(str(lake))
    try:
        con.begin()
        ((last_id, last_hash),) = con.execute(
            "SELECT event_id, event_hash FROM audit_head WHERE chain = 'main'"
        ).fetchall()
        (template,) = con.execute(
            "SELECT * FROM audit_event WHERE event_id = ?", [last_id]
        ).fetchall()
        names = [column[0] for column in con.description]
        previous = AuditEvent.from_row(dict(zip(names, template, strict=True)))
        for actor in actors:
            event = dataclasses.replace(previous, event_id=last_id + 1, actor=actor,
                                        prev_hash=last_hash, event_hash="")  # fmt: skip
            event = dataclasses.replace(event, event_hash=event_hash(event))
            con.execute(
                f"INSERT INTO audit_event ({', '.join(names)}) VALUES "
                f"({', '.join('?' for _ in names)})",
                [getattr(event, name) for name in names],
            )
            last_id, last_hash, previous = event.event_id, event.event_hash, event
        con.execute("UPDATE audit_head SET event_id = ?, event_hash = ?", [last_id, last_hash])
        con.commit()
    finally:
        con.close()


def _assert_whole(trail: Path, expected: Counter[str]) -> None:
    result = verify_trail(trail)
    assert result.ok, result.findings
    with DuckDBEngine(trail / "lake.duckdb") as engine:
        events = read_events(engine)
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert result.events == len(events)
    actors = Counter(e.actor for e in events)
    assert {a: actors[a] for a in expected} == dict(expected)  # each append exactly once


def test_events_another_program_appended_are_chained_after(trail: Path) -> None:
    lake = trail / "lake.duckdb"
    with DuckDBEngine(lake) as engine:
        first = append_event(engine, actor="here-1", action="read")  # the hint: event `first`
    _append_elsewhere(lake, ["there-1", "there-2"])  # the hint is now two events behind
    with DuckDBEngine(lake) as engine:
        again = append_event(engine, actor="here-2", action="read")
        assert [e.actor for e in read_events(engine)][-4:] == [
            "here-1", "there-1", "there-2", "here-2"
        ]  # fmt: skip
    assert again == first + 3
    _assert_whole(trail, Counter({"here-1": 1, "there-1": 1, "there-2": 1, "here-2": 1}))


def _merge_that_fails(engine: DuckDBEngine) -> None:
    with engine.transaction():
        append_event(engine, actor="rolled-back", action="merge")
        raise RuntimeError("the merge failed")


def test_an_append_rolled_back_with_its_work_leaves_no_trace(trail: Path) -> None:
    lake = trail / "lake.duckdb"
    with DuckDBEngine(lake) as engine:
        before = append_event(engine, actor="kept-1", action="read")
        with pytest.raises(RuntimeError, match="merge failed"):
            _merge_that_fails(engine)
        after = append_event(engine, actor="kept-2", action="read")
    assert after == before + 1
    _assert_whole(trail, Counter({"kept-1": 1, "kept-2": 1, "rolled-back": 0}))


def test_grouped_reads_and_appends_in_callers_transactions_race_into_one_chain(
    trail: Path,
) -> None:
    lake = trail / "lake.duckdb"
    readers, reads, callers, calls = 6, 12, 2, 6
    committed: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(readers + callers)

    def reader(n: int) -> None:
        with DuckDBEngine(lake) as engine:
            start.wait()
            for _ in range(reads):
                append_event(engine, actor=f"reader{n}", action="read")
                with lock:
                    committed[f"reader{n}"] += 1

    def caller(n: int) -> None:
        # A service recording a merge in its own transaction; on a write conflict it
        # runs the whole transaction again, as the caller of a transaction must.
        with DuckDBEngine(lake) as engine:
            start.wait()
            for _ in range(calls):
                for attempt in range(400):
                    try:
                        with engine.transaction():
                            append_event(engine, actor=f"caller{n}", action="merge")
                        break
                    except EngineError:
                        if attempt == 399:
                            raise
                        time.sleep(0.002)
                with lock:
                    committed[f"caller{n}"] += 1

    def run(target, n: int) -> None:  # type: ignore[no-untyped-def]
        try:
            target(n)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(reader, n)) for n in range(readers)]
    threads += [threading.Thread(target=run, args=(caller, n)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(committed.values()) == readers * reads + callers * calls
    _assert_whole(trail, committed)

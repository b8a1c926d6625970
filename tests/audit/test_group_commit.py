"""Group commit of audit appends: many threads reading at once, one verifiable chain.

Concurrent appends to one lake are written in shared transactions; every call returns
only once its own event is in the trail, and the trail verifies with every event in it
exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from medlake.audit import append_event, read_events
from medlake.audit.group_commit import GroupCommit
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.service.audit import verify_trail


def _run(threads: int, target) -> list[BaseException]:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def body(n: int) -> None:
        try:
            start.wait()
            target(n)
        except BaseException as error:  # reported by the caller's assertion
            errors.append(error)

    workers = [threading.Thread(target=body, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_many_concurrent_readers_leave_one_chain_with_every_event_once(
    trail: Path, trail_shape: tuple[int, int]
) -> None:
    path = trail / "lake.duckdb"
    readers, reads = 12, 10
    returned: dict[tuple[str, str], int] = {}
    lock = threading.Lock()

    def reader(n: int) -> None:
        with DuckDBEngine(path) as engine:
            for index in range(reads):
                event_id = append_event(engine, actor=f"r{n}", action="read",
                                        object_type="person", object_id=str(index),
                                        detail={"person_ids": [n * 100 + index]})  # fmt: skip
                # Returned means durable: the caller's own connection already sees it.
                seen = read_events(engine)
                assert any(e.event_id == event_id and e.actor == f"r{n}" for e in seen)
                with lock:
                    returned[(f"r{n}", str(index))] = event_id

    assert not _run(readers, reader)
    result = verify_trail(trail)
    assert result.ok, result.findings
    assert result.events == trail_shape[0] + readers * reads
    with DuckDBEngine(path) as engine:
        events = read_events(engine)[trail_shape[0] :]
    stored = Counter((e.actor, e.object_id) for e in events)
    assert stored == Counter(returned.keys())  # each read exactly once
    assert {e.event_id for e in events} == set(returned.values())
    assert [e.event_id for e in events] == list(range(trail_shape[0] + 1, result.events + 1))


def test_callers_arriving_during_a_write_share_the_next_batch() -> None:
    group: GroupCommit[int] = GroupCommit()
    batches: list[list[int]] = []
    written: list[int] = []

    def write(items: list[int]) -> list[int]:
        batches.append(list(items))
        time.sleep(0.05)  # a commit long enough for the others to queue behind it
        written.extend(items)
        return [item * 10 for item in items]

    results: dict[int, int] = {}
    assert not _run(8, lambda n: results.__setitem__(n, group.submit("lake", n, write)))
    assert results == {n: n * 10 for n in range(8)}
    assert sorted(written) == list(range(8))
    assert len(batches) < 8
    assert max(len(b) for b in batches) > 1


def test_a_failed_batch_fails_each_of_its_callers_and_later_batches_still_write() -> None:
    group: GroupCommit[int] = GroupCommit()
    fail = threading.Event()
    fail.set()

    def write(items: list[int]) -> list[int]:
        if fail.is_set():
            fail.clear()
            raise OSError("disk full")
        return items

    with pytest.raises(OSError, match="disk full"):
        group.submit("lake", 1, write)
    assert group.submit("lake", 2, write) == 2

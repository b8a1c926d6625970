"""The audit journal: appends while serving are durable in an fsync'd file before they
return, form one chain with the table, are seen by every reader, survive kill -9 at any
point exactly once, and an altered journal file is named by ``medlake audit verify``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from medlake.audit import EVENT_TABLE, EventFilter, append_event, chain, journal, read_events
from medlake.audit.verify import DELETED, EDITED, REORDERED, verify_events
from medlake.config import open_workspace
from medlake.service import lake_pool
from medlake.service.audit import audit_journal, show_events, verify_trail
from medlake.service.lake_pool import pooled_lake, serving
from medlake.service.workspace import open_lake

THREADS, EACH = 4, 10


def _journal_files(root: Path) -> list[Path]:
    folder = Path(os.path.realpath(root / "lake.duckdb") + journal.JOURNAL_SUFFIX)
    return sorted(folder.glob("journal-*.jsonl")) if folder.is_dir() else []


def _table_ids(root: Path) -> list[int]:
    """The ids in ``audit_event`` itself (read_events adds the live journal's)."""
    with open_lake(open_workspace(root)) as engine:
        return engine.execute(engine.table(EVENT_TABLE).event_id).to_pylist()


def test_concurrent_appends_form_one_chain_across_journal_and_table(
    trail: Path, trail_shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    before, _ = trail_shape
    monkeypatch.setattr(journal, "MOVE_EVERY_S", 0.02)  # moves happen while appending
    workspace = open_workspace(trail)
    returned: dict[int, tuple[str, str]] = {}
    lock = threading.Lock()

    def reader(n: int) -> None:
        with pooled_lake(workspace) as engine:
            for index in range(25):
                event_id = append_event(engine, actor=f"r{n}", action="read",
                                        object_type="person", object_id=str(index))  # fmt: skip
                with lock:
                    returned[event_id] = (f"r{n}", str(index))

    with serving(workspace), audit_journal(workspace):
        workers = [threading.Thread(target=reader, args=(n,)) for n in range(12)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        with pooled_lake(workspace) as engine:
            seen = read_events(engine)  # the table's events and the journal's unmoved ones
        assert verify_events(seen).ok
        assert [e.event_id for e in seen] == list(range(1, before + 12 * 25 + 1))
    assert _journal_files(trail) == []  # all moved at stop, files deleted
    assert len(returned) == 12 * 25  # every call got an id of its own
    result = verify_trail(trail)
    assert result.ok, result.findings
    with open_lake(workspace) as engine:
        stored = read_events(engine)
    assert [e.event_id for e in stored] == list(range(1, before + 12 * 25 + 1))
    assert {e.event_id: (e.actor, e.object_id) for e in stored[before:]} == returned


def test_search_and_verify_see_an_event_not_yet_moved(
    trail: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "MOVE_EVERY_S", 3600)  # the mover never runs by itself
    workspace = open_workspace(trail)
    with serving(workspace), audit_journal(workspace):
        with pooled_lake(workspace) as engine:
            event_id = append_event(engine, actor="just-now", action="read",
                                    object_type="person", object_id="7")  # fmt: skip
        assert _journal_files(trail)
        assert event_id not in _table_ids(trail)
        found = show_events(trail, EventFilter(actor="just-now"))
        assert [row["event_id"] for row in found] == [event_id]
        result = verify_trail(trail, anchor=False)
        assert result.ok
        assert result.head_id == event_id


def test_a_move_between_reading_the_journal_and_the_table_loses_no_event(
    trail: Path, trail_shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mover commits a batch and then drops it from the journal; a reader that looked
    at the table before that commit and at the journal after it saw the batch nowhere
    (a CI run caught 11 events missing). The move is forced into that gap here."""
    before, _ = trail_shape
    monkeypatch.setattr(journal, "MOVE_EVERY_S", 3600)  # moves only when forced below
    monkeypatch.setattr(lake_pool, "WARM_ENGINES", 0)  # (each engine opened drains too)
    workspace = open_workspace(trail)
    with serving(workspace), audit_journal(workspace):
        with pooled_lake(workspace) as engine:
            for index in range(5):
                append_event(engine, actor="gap", action="read",
                             object_type="person", object_id=str(index))  # fmt: skip
            live = chain.live_journal(engine)
            assert live is not None
            assert len(live.unmoved()) == 5
            real_execute = engine.execute
            moved: list[int] = []

            def execute_then_move(*args: object, **kwargs: object) -> object:
                result = real_execute(*args, **kwargs)  # the table as it was
                if not moved:
                    moved.append(live.flush())  # the mover runs just after the read
                return result

            with monkeypatch.context() as patch:
                patch.setattr(engine, "execute", execute_then_move)
                seen = read_events(engine)
        assert moved == [5]
        assert [e.event_id for e in seen] == list(range(1, before + 6))
        assert verify_events(seen).ok


def test_an_append_in_a_callers_transaction_commits_or_rolls_back_with_it(
    trail: Path, trail_shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    before, _ = trail_shape
    monkeypatch.setattr(journal, "MOVE_EVERY_S", 3600)
    workspace = open_workspace(trail)
    with serving(workspace), audit_journal(workspace), pooled_lake(workspace) as engine:
        append_event(engine, actor="journaled", action="read")  # waits in the journal

        def failing_work() -> None:
            with engine.transaction():
                append_event(engine, actor="rolled-back", action="merge")
                raise RuntimeError("the work failed")

        with pytest.raises(RuntimeError):
            failing_work()
        with engine.transaction():
            append_event(engine, actor="committed", action="merge")
            append_event(engine, actor="committed-2", action="merge")
        append_event(engine, actor="after", action="read")
        actors = [e.actor for e in read_events(engine)[before:]]
    assert actors == ["journaled", "committed", "committed-2", "after"]
    result = verify_trail(trail)
    assert result.ok, result.findings
    with open_lake(workspace) as engine:
        assert [e.actor for e in read_events(engine)[before:]] == actors


_CHILD = r"""
import sys, threading, time
from pathlib import Path
from medlake.audit import append_event, chain, journal
from medlake.config import open_workspace
from medlake.service.audit import audit_journal
from medlake.service import lake_pool
from medlake.service.lake_pool import pooled_lake, serving

root, mode = Path(sys.argv[1]), sys.argv[2]
journal.MOVE_EVERY_S = 3600 if mode == "before-move" else 0.05
if mode == "mid-move":  # pause in the mover's transaction, after its writes, before commit
    store = chain.store_events
    def paused(engine, events, head):
        store(engine, events, head)
        if threading.current_thread().name == "medlake-audit-mover":
            with said:
                print("moving", flush=True)
            time.sleep(600)
    chain.store_events = paused
if mode == "after-move":  # pause after the mover committed, before the files are deleted
    move = journal.LiveJournal._move
    def paused_move(self, batch):
        move(self, batch)
        with said:
            print("moving", flush=True)
        time.sleep(600)
    journal.LiveJournal._move = paused_move
workspace = open_workspace(root)
said = threading.Lock()
with serving(workspace), audit_journal(workspace):
    time.sleep(3)  # the pool's engines open first (an open waits for a move in progress)
    def reader(n):
        with pooled_lake(workspace) as engine:
            for i in range(EACH):
                event_id = append_event(engine, actor=f"r{n}", action="read",
                                        object_type="person", object_id=str(i))
                with said:  # one whole line per acknowledged event
                    print(f"ack {event_id} r{n} {i}", flush=True)
    workers = [threading.Thread(target=reader, args=(n,)) for n in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print("all acked", flush=True)
    time.sleep(600)
""".replace("EACH", str(EACH)).replace("THREADS", str(THREADS))


def _killed_server(root: Path, mode: str) -> dict[int, tuple[str, str]]:
    """Run appends in a real process, kill -9 it at ``mode``; the acknowledged events."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), mode],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    acked: dict[int, tuple[str, str]] = {}
    waiting = {"all acked"} | ({"moving"} if mode != "before-move" else set())
    deadline = time.monotonic() + 120
    try:
        assert child.stdout is not None
        while waiting and time.monotonic() < deadline:
            line = child.stdout.readline().strip()
            if not line:
                break
            if line.startswith("ack "):
                _, event_id, actor, object_id = line.split()
                acked[int(event_id)] = (actor, object_id)
            waiting.discard(line)
        assert not waiting, f"the child never printed {waiting}"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return acked


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["before-move", "mid-move", "after-move"])
def test_kill_9_loses_no_acknowledged_event_and_duplicates_none(
    trail: Path, trail_shape: tuple[int, int], mode: str
) -> None:
    before, _ = trail_shape
    acked = _killed_server(trail, mode)
    assert len(acked) == THREADS * EACH
    if mode == "before-move":
        assert _journal_files(trail), "the events must still be only in the journal"
    workspace = open_workspace(trail)
    with open_lake(workspace) as engine:  # recovery moves what the dead server left
        events = read_events(engine)
    assert _journal_files(trail) == []
    ids = Counter(event.event_id for event in events)
    assert set(ids.values()) == {1}  # nothing twice
    assert sorted(ids) == list(range(1, before + THREADS * EACH + 1))
    assert {e.event_id: (e.actor, e.object_id) for e in events[before:]} == acked
    result = verify_trail(trail)
    assert result.ok, result.findings
    # the chain goes on from the recovered head, directly and through a new journal
    with open_lake(workspace) as engine:
        append_event(engine, actor="next", action="read")
    assert verify_trail(trail).ok


@pytest.fixture(scope="module")
def left_journal(trail_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose server died with its events only in the journal."""
    root = tmp_path_factory.mktemp("left-journal") / "ws"
    shutil.copytree(trail_template, root)
    _killed_server(root, "before-move")
    return root


def _tampered(left_journal: Path, tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "ws"
    shutil.copytree(left_journal, root)
    (path,) = _journal_files(root)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(change(lines)), encoding="utf-8")
    return root


def _kinds(root: Path) -> set[tuple[str, int | None]]:
    return {(finding.kind, finding.event_id) for finding in verify_trail(root).findings}


def _first_journaled(root: Path) -> int:
    (path,) = _journal_files(root)
    return int(json.loads(path.read_text(encoding="utf-8").splitlines()[0])["event_id"])


def test_verify_names_a_changed_journal_line(left_journal: Path, tmp_path: Path) -> None:
    first = _first_journaled(left_journal)

    def change(lines: list[str]) -> list[str]:
        event = json.loads(lines[5])
        event["actor"] = "somebody-else"
        return [*lines[:5], json.dumps(event) + "\n", *lines[6:]]

    assert _kinds(_tampered(left_journal, tmp_path, change)) == {(EDITED, first + 5)}


def test_verify_names_a_removed_journal_line(left_journal: Path, tmp_path: Path) -> None:
    first = _first_journaled(left_journal)
    root = _tampered(left_journal, tmp_path, lambda lines: [*lines[:5], *lines[6:]])
    # the ids close up behind the gap: the event before it no longer links on
    assert _kinds(root) == {(EDITED, first + 4)}


def test_verify_names_reordered_journal_lines(left_journal: Path, tmp_path: Path) -> None:
    first = _first_journaled(left_journal)
    root = _tampered(left_journal, tmp_path,
                     lambda lines: [*lines[:5], lines[6], lines[5], *lines[7:]])  # fmt: skip
    assert _kinds(root) == {(REORDERED, first + 5), (REORDERED, first + 6)}


def test_an_unreadable_journal_line_is_a_deleted_event_and_its_file_is_kept(
    left_journal: Path, tmp_path: Path
) -> None:
    first = _first_journaled(left_journal)
    root = _tampered(left_journal, tmp_path,
                     lambda lines: [*lines[:5], "{not an event\n", *lines[6:]])  # fmt: skip
    kinds = _kinds(root)
    assert (DELETED, first + 5) in kinds
    assert (DELETED, None) in kinds
    assert len(kinds) == 2


def test_an_unfinished_last_line_was_never_acknowledged_and_is_dropped(
    left_journal: Path, tmp_path: Path
) -> None:
    root = _tampered(left_journal, tmp_path, lambda lines: [*lines, lines[-1][:40]])
    result = verify_trail(root)
    assert result.ok, result.findings
    assert result.head_id == _first_journaled(left_journal) + THREADS * EACH - 1

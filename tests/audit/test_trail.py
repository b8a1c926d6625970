"""Appending, anchoring and showing events: the trail only grows, one chain, found by filter."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medlake.audit import EventFilter, append_event, default_actor, read_events
from medlake.audit.anchors import read_anchors
from medlake.cli.main import app
from medlake.config import open_workspace, write_settings
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.errors import UsageError
from medlake.schema import ALL_TABLES
from medlake.service.audit import (
    add_anchor_sink,
    record_event,
    remove_anchor_sink,
    show_events,
    verify_trail,
)
from medlake.service.workspace import open_lake


def test_events_chain_and_return_their_ids() -> None:
    with DuckDBEngine() as engine:
        engine.create_schema(ALL_TABLES)
        ids = [append_event(engine, actor="a", action="read") for _ in range(3)]
        events = read_events(engine)
    assert ids == [1, 2, 3]
    assert events[0].prev_hash == "0" * 64
    assert [e.prev_hash for e in events[1:]] == [e.event_hash for e in events[:-1]]
    assert all(e.computed_hash() == e.event_hash for e in events)


def test_bad_events_are_refused() -> None:
    with DuckDBEngine() as engine:
        engine.create_schema(ALL_TABLES)
        for kwargs in ({"actor": "", "action": "read"}, {"actor": "a", "action": " "}):
            with pytest.raises(UsageError):
                append_event(engine, **kwargs)
        with pytest.raises(UsageError, match="outcome"):
            append_event(engine, actor="a", action="read", outcome="maybe")
        assert engine.count("audit_event") == 0


def test_default_actor_is_the_os_user() -> None:
    import getpass

    assert default_actor() == f"os:{getpass.getuser()}"


def _merge_that_fails(engine: DuckDBEngine) -> None:
    with engine.transaction():
        append_event(engine, actor="a", action="merge")
        raise RuntimeError("the merge failed")


def test_an_event_rolls_back_with_the_work_it_records() -> None:
    with DuckDBEngine() as engine:
        engine.create_schema(ALL_TABLES)
        append_event(engine, actor="a", action="read")
        with pytest.raises(RuntimeError, match="merge failed"):
            _merge_that_fails(engine)
        append_event(engine, actor="a", action="read")
        events = read_events(engine)
    assert [e.action for e in events] == ["read", "read"]
    assert [e.event_id for e in events] == [1, 2]


@pytest.mark.parametrize("guard", ["process lock", "audit_head only"])
def test_concurrent_writers_do_not_fork_the_chain(
    trail: Path, trail_shape: tuple[int, int], guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three connections to the same lake file, each appending on its own thread. Without
    # the in-process lock, only the audit_head row keeps them apart (as for writers that
    # share no lock), and the losers of each race retry.
    if guard == "audit_head only":
        import contextlib

        from medlake.audit import chain

        monkeypatch.setattr(chain, "_LOCK", contextlib.nullcontext())
    path = trail / "lake.duckdb"
    writers, per_writer = 3, 8
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            with DuckDBEngine(path) as engine:
                for index in range(per_writer):
                    append_event(engine, actor=name, action="read", object_id=str(index))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    result = verify_trail(trail)
    assert result.ok, result.findings
    assert result.events == trail_shape[0] + writers * per_writer


def test_anchors_are_written_every_n_events_to_every_copy(trail: Path) -> None:
    workspace = open_workspace(trail)
    copy = trail.parent / "mirror" / "anchors.jsonl"
    settings = workspace.settings.model_copy(
        update={
            "audit": workspace.settings.audit.model_copy(
                update={"anchor_every": 5, "anchor_copies": [str(copy)]}
            )
        }
    )
    write_settings(workspace.settings_file, settings)
    workspace = open_workspace(trail)
    sunk = []
    add_anchor_sink(sunk.append)
    try:
        with open_lake(workspace) as engine:
            for _ in range(11):
                record_event(workspace, engine, actor="a", action="read")
    finally:
        remove_anchor_sink(sunk.append)
    anchors = read_anchors(trail / "audit" / "anchors.jsonl")
    # The template anchored event 8; 12 events + 11 new: anchors at 13, 18, 23.
    assert [a.event_id for a in anchors] == [8, 13, 18, 23]
    assert [a.event_id for a in read_anchors(copy)] == [13, 18, 23]
    assert [a.event_id for a in sunk] == [13, 18, 23]


def _mentions(event: dict, person_id: int) -> bool:
    about = event["object_type"] == "person" and event["object_id"] == str(person_id)
    return about or person_id in event["detail"]["person_ids"]


def _all(trail: Path) -> list[dict]:
    return show_events(trail, EventFilter(limit=None))


@pytest.mark.parametrize(
    ("where", "keep"),
    [
        (EventFilter(actor="bob"), lambda e: e["actor"] == "bob"),
        (EventFilter(action="export"), lambda e: e["action"].startswith("export")),
        (EventFilter(outcome="denied"), lambda e: e["outcome"] == "denied"),
        (EventFilter(person_id=5), lambda e: _mentions(e, 5)),
        (EventFilter(person_id=1004), lambda e: _mentions(e, 1004)),
        (EventFilter(person_id=100), lambda e: _mentions(e, 100)),
        (EventFilter(person_id=10), lambda e: _mentions(e, 10)),
    ],
)
def test_show_filters_match_a_plain_python_filter(trail: Path, where, keep) -> None:  # type: ignore[no-untyped-def]
    everything = _all(trail)
    expected = [e["event_id"] for e in everything if keep(e)]
    got = [e["event_id"] for e in show_events(trail, where)]
    assert got == expected
    assert expected  # the filters are not trivially empty


def test_show_filters_by_time(trail: Path) -> None:
    everything = _all(trail)
    cut = sorted(e["occurred_at"] for e in everything)[5]
    got = show_events(trail, EventFilter(since=cut, limit=None))
    assert [e["event_id"] for e in got] == [
        e["event_id"] for e in everything if e["occurred_at"] >= cut
    ]
    before = show_events(trail, EventFilter(until=cut.replace(tzinfo=dt.UTC), limit=None))
    assert len(before) + len(got) == len(everything)


def test_audit_commands_leave_the_trail_unchanged(trail: Path) -> None:
    runner = CliRunner()
    before = (trail / "lake.duckdb").stat().st_size, _all(trail)
    for args in (
        ["audit", "show", "--user", "alice", "--json"],
        ["audit", "show", "--person", "3", "--since", "2000-01-01"],
        ["audit", "verify"],
        ["audit", "anchor"],
    ):
        result = runner.invoke(app, [*args, "-w", str(trail)])
        assert result.exit_code == 0, result.output
    assert _all(trail) == before[1]
    shown = json.loads(runner.invoke(app, ["audit", "show", "--json", "-w", str(trail)]).output)
    assert {e["event_id"] for e in shown} == {e["event_id"] for e in before[1]}


def test_no_medlake_code_outside_the_audit_package_writes_the_trail() -> None:
    # The only writer of audit_event is medlake.audit.chain (appends); a change
    # anywhere else that deletes, updates or drops it fails here.
    src = Path(__file__).resolve().parents[2] / "src" / "medlake"
    writers = []
    for path in src.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "audit_event" not in text and "EVENT_TABLE" not in text:
            continue
        relative = path.relative_to(src).as_posix()
        if relative.startswith(("audit/", "schema/")):
            continue
        for needle in ("delete_where", "drop_table", "UPDATE", "DELETE", "load_arrow"):
            if needle in text:
                writers.append(f"{relative}: {needle}")
    assert not writers

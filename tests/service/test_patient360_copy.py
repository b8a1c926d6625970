"""Patient 360's serving copy gives exactly the live path's answer, and is never used stale.

The reference is the live path itself (the lake read table by table), taken in the same
process on the same lake state with no copy kept. For every person of the hospital
lake, with and without note text, the answer served from the copy must equal it; every
call must actually have come from the copy (its counter), so the test cannot pass by
falling back. After each kind of write (an ingest of another hospital's files, an EMPI
merge that moves records between persons, a delete) the next calls must not use the
copy (counter unchanged) and must show the write; after the background rebuild they
come from the copy again and still equal the live answers of that state. Across
restarts: an unchanged lake verifies the copy left by the last server (no rebuild); a
lake changed while no server ran (one value, same row count) is not served from the old
copy but rebuilt; a deleted copy file is rebuilt, with the same answers. The copy's
file is derived data: left out of backups, not looked at by the ransomware watch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.config import Workspace, open_workspace
from medlake.service import backup, watch
from medlake.service.demo import ingest_hospital
from medlake.service.empi_steward import merge_persons
from medlake.service.lake_pool import pooled_lake, serving
from medlake.service.patient360 import person_timeline
from medlake.service.patient360_copy import COPY_FILE, ServingCopy, keeping_serving_copy
from medlake.service.workspace import init_workspace
from medlake.synth import generate_hospital

ADMIN = Principal("test-admin", Role.ADMIN)  # ingests
STEWARD = Principal("test-steward", Role.STEWARD)  # reads identified data, merges
pytestmark = pytest.mark.slow

Answers = dict[tuple[int, bool], dict[str, Any]]


def _persons(workspace: Workspace) -> list[int]:
    with pooled_lake(workspace) as engine:
        ids = engine.execute(engine.table("person").select("person_id")).column(0)
        return sorted(ids.to_pylist())


def _answers(workspace: Workspace, persons: list[int]) -> Answers:
    with acting_as(STEWARD):
        return {
            (p, text): person_timeline(workspace, p, with_note_text=text).as_dict()
            for p in persons
            for text in (False, True)
        }


def _wait_current(copy: ServingCopy, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not copy.current:
        assert not copy.status.errors, copy.status.errors
        assert time.monotonic() < deadline, "the serving copy did not become current"
        time.sleep(0.05)


def _served(copy: ServingCopy, workspace: Workspace, persons: list[int]) -> Answers:
    """The answers, each of which must have come from the copy."""
    before = copy.status.served
    answers = _answers(workspace, persons)
    assert copy.status.served - before == len(answers)
    return answers


def _not_served(copy: ServingCopy, workspace: Workspace, persons: list[int]) -> Answers:
    """The answers right after a write: none may come from the (stale) copy."""
    before = copy.status.served
    answers = _answers(workspace, persons)
    assert copy.status.served == before
    assert not copy.current
    return answers


@pytest.fixture
def lake(hospital_lake, tmp_path: Path) -> Workspace:
    return open_workspace(hospital_lake.copy(tmp_path / "ws"))


def test_copy_equals_the_live_path_for_every_person_and_after_each_write(lake, tmp_path):
    other_hospital = tmp_path / "other"
    generate_hospital(other_hospital, 12, 99)
    with acting_as(ADMIN), serving(lake):
        persons = _persons(lake)
        live = _answers(lake, persons)  # no copy kept: the lake read table by table
        assert any(a["items"] for a in live.values())
        assert any(i["kind"] == "note" and "note_text" in i["values"]
                   for (_, text), a in live.items() if text for i in a["items"])  # fmt: skip
        with keeping_serving_copy(lake, debounce_s=3600, poll_s=3600) as copy:
            _wait_current(copy)
            assert copy.status.builds == 1
            assert _served(copy, lake, persons) == live
            # note text only where asked for, as the live path
            assert not any("note_text" in i["values"] for (_, text), a in live.items()
                           if not text for i in a["items"])  # fmt: skip

            # after writes: every 10th person and those the writes touch (calls are slow)
            keep, gone = persons[0], persons[1]
            persons = persons[::10]

            # an EMPI merge moves one person's records to another
            with acting_as(STEWARD):
                merge_persons(lake.root, keep, gone, actor=STEWARD.user_name)
            merged = _not_served(copy, lake, persons)
            assert len(merged[(keep, True)]["items"]) == len(live[(keep, True)]["items"]) + len(
                live[(gone, True)]["items"]
            )
            copy.refresh()
            _wait_current(copy)
            assert _served(copy, lake, persons) == merged

            # a delete of one person's measurements
            with pooled_lake(lake) as engine:
                measurement = engine.table("measurement")
                of_persons = measurement.filter(measurement.person_id.isin(persons[1:]))
                victim = engine.execute(of_persons.select("person_id").limit(1)).column(0)[0]
                victim = victim.as_py()
                assert engine.delete_where("measurement", measurement.person_id == victim)
            deleted = _not_served(copy, lake, persons)
            assert deleted[(victim, False)] != merged[(victim, False)]
            copy.refresh()
            _wait_current(copy)
            assert _served(copy, lake, persons) == deleted

            # an ingest of another hospital's files
            before = set(_persons(lake))
            ingest_hospital(lake.root, other_hospital)
            persons = sorted({*persons, *(set(_persons(lake)) - before)})
            ingested = _not_served(copy, lake, persons)
            assert len(ingested) > len(deleted)
            copy.refresh()
            _wait_current(copy)
            assert _served(copy, lake, persons) == ingested
            assert copy.status.builds == 4


def test_a_copy_is_used_after_a_restart_only_while_it_matches_the_lake(lake):
    path = lake.root / COPY_FILE
    with acting_as(ADMIN):
        with serving(lake):
            persons = _persons(lake)[::7]
            live = _answers(lake, persons)
            with keeping_serving_copy(lake) as copy:
                _wait_current(copy)
                assert (copy.status.builds, copy.status.verified) == (1, 0)
                assert _served(copy, lake, persons) == live
        assert path.exists()

        # a restart with the lake unchanged: the copy is verified, not rebuilt
        with serving(lake), keeping_serving_copy(lake) as copy:
            _wait_current(copy)
            assert (copy.status.builds, copy.status.verified) == (1 - 1, 1)
            assert _served(copy, lake, persons) == live

        # the lake changed while no server ran (a value; every count the same)
        con = duckdb.connect(str(lake.lake_path))
        try:
            changed = con.execute(
                "update measurement set value_as_number = value_as_number + 1 where "
                "measurement_id = (select min(measurement_id) from measurement where "
                "value_as_number is not null and person_id in (select unnest(?))) "
                "returning person_id", [persons]).fetchall()[0][0]  # fmt: skip
        finally:
            con.close()
        with serving(lake):
            now = _answers(lake, persons)
            assert now[(changed, False)] != live[(changed, False)]
            with keeping_serving_copy(lake) as copy:
                _wait_current(copy)
                assert (copy.status.builds, copy.status.verified) == (1, 0)
                assert _served(copy, lake, persons) == now

        # the copy deleted: built again, same answers
        path.unlink()
        with serving(lake), keeping_serving_copy(lake) as copy:
            _wait_current(copy)
            assert copy.status.builds == 1
            assert _served(copy, lake, persons) == now


def test_a_server_keeps_the_copy_only_from_its_first_patient_360_call(lake):
    path = lake.root / COPY_FILE
    with acting_as(ADMIN), serving(lake):
        persons = _persons(lake)[::11]
        live = _answers(lake, persons)  # no copy kept: the lake read table by table
        with keeping_serving_copy(lake, on_first_call=True) as copy:
            time.sleep(1.0)  # a copy kept from the start has its file by now
            assert not path.exists()
            assert copy.status.builds == 0
            assert _answers(lake, persons[:1]) == {k: live[k] for k in live if k[0] == persons[0]}
            assert copy.status.served == 0  # the first call was the lake's
            _wait_current(copy)
            assert copy.status.builds == 1
            assert _served(copy, lake, persons) == live


def test_no_copy_is_kept_outside_a_server(lake):
    with acting_as(ADMIN):
        persons = _persons(lake)[:3]
        # outside serving, a call reads the lake; nothing is written beside it
        _answers(lake, persons)
    assert not (lake.root / COPY_FILE).exists()


def test_the_copy_file_is_left_out_of_backups_and_not_watched(tmp_path):
    root = init_workspace(tmp_path / "ws").root
    copy_file = root / COPY_FILE
    copy_file.parent.mkdir(parents=True)
    copy_file.write_bytes(os.urandom(256 * 1024))
    watcher = watch.watcher_for(open_workspace(root))
    watcher.scan()
    # random-looking rewrites: findings under a folder the watch looks at, none in the copy's
    for n in range(6):
        copy_file.write_bytes(os.urandom(256 * 1024))
        (root / "exports" / f"random-{n}.bin").write_bytes(os.urandom(256 * 1024))
    findings = watcher.scan()
    assert findings
    assert not [f for f in findings if COPY_FILE.parts[0] in Path(f.path).relative_to(root).parts]
    with acting_as(ADMIN):
        backup.init_backups(root)
        backup.run_backup(root)
        restored = backup.restore_backup(root, tmp_path / "restored").path
    assert (restored / "lake.duckdb").exists()
    assert (restored / "exports" / "random-0.bin").exists()
    assert not (restored / COPY_FILE.parts[0]).exists()

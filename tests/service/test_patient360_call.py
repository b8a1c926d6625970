"""What patient 360 keeps between calls must follow the lake: the gender's name, the trail.

The person row is read without joining ``concept``; the gender's name is looked up by id
and kept per lake while the data version of ``concept`` holds. A vocabulary change must
show in the next timeline; so must omics samples registered after the lake had none (a
table with no rows is not asked until its data version moves). While serving, many
timelines at once each append their read to the trail exactly once, and the trail
verifies.
"""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import sqlglot.expressions as sge

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.config import open_workspace
from medlake.service.audit import verify_trail
from medlake.service.lake_pool import pooled_lake, serving
from medlake.service.patient360 import person_timeline

STEWARD = Principal("test-steward", Role.STEWARD)
AUDITOR = Principal("test-auditor", Role.AUDITOR)


def _query(root: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_the_gender_name_follows_a_vocabulary_change(hospital_lake, tmp_path: Path) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    ((person_id, gender_id, name),) = _query(
        root,
        "select p.person_id, p.gender_concept_id, c.concept_name from person p "
        "join concept c on c.concept_id = p.gender_concept_id order by 1 limit 1",
    )
    workspace = open_workspace(root)
    with acting_as(STEWARD), serving(workspace):
        assert person_timeline(workspace, person_id).gender == name
        with pooled_lake(workspace) as engine:
            engine.run_sql(
                sge.update(
                    "concept",
                    {"concept_name": sge.convert(f"{name} (renamed)")},
                    where=sge.column("concept_id").eq(sge.convert(gender_id)),
                )
            )
        assert person_timeline(workspace, person_id).gender == f"{name} (renamed)"
        with pooled_lake(workspace) as engine:
            engine.run_sql(
                sge.delete("concept", where=sge.column("concept_id").eq(sge.convert(gender_id)))
            )
        assert person_timeline(workspace, person_id).gender is None  # as the left join said


def test_omics_samples_show_once_registered_in_a_lake_that_had_none(
    hospital_lake, tmp_path: Path
) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        samples = con.sql("select * from omics_sample order by person_id").to_arrow_table()
    finally:
        con.close()
    assert samples.num_rows > 0  # the synthetic hospital sequences some patients
    person_id = samples.column("person_id")[0].as_py()
    expected = sorted(s["sample_id"] for s in samples.to_pylist() if s["person_id"] == person_id)
    workspace = open_workspace(root)
    with acting_as(STEWARD), serving(workspace):
        with pooled_lake(workspace) as engine:
            table = engine.table("omics_sample")
            engine.delete_where("omics_sample", table.sample_id.notnull())
        assert person_timeline(workspace, person_id).omics_samples == []
        with pooled_lake(workspace) as engine:
            engine.load_arrow("omics_sample", samples)
        got = person_timeline(workspace, person_id).omics_samples
    assert sorted(s["sample_id"] for s in got) == expected


def test_concurrent_timelines_while_serving_are_each_audited_once(
    hospital_lake, tmp_path: Path
) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    persons = [p for (p,) in _query(root, "select person_id from person order by 1 limit 8")]
    (before,) = _query(root, "select count(*) from audit_event")[0]
    calls = [persons[n % len(persons)] for n in range(64)]
    workspace = open_workspace(root)
    with acting_as(STEWARD), serving(workspace), ThreadPoolExecutor(max_workers=16) as pool:
        # each call in a copy of this context (the acting steward), as the server's threads
        futures = [pool.submit(contextvars.copy_context().run, person_timeline, workspace, p)
                   for p in calls]  # fmt: skip
        timelines = [future.result() for future in futures]
    assert [t.person_id for t in timelines] == calls
    with acting_as(AUDITOR):
        result = verify_trail(root)
    assert result.ok, result.findings
    rows = _query(
        root,
        f"select actor, action, object_id from audit_event where event_id > {before} "
        "order by event_id",
    )
    reads = sorted(int(object_id) for actor, action, object_id in rows
                   if actor == STEWARD.user_name and action == "read")  # fmt: skip
    assert reads == sorted(calls)

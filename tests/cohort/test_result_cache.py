"""The count result cache: a count after any write to the lake equals a fresh pandas count,
identical concurrent counts run once, and the policy still applies to every request.

The lake here is a small FHIR workspace of its own, changed the ways a hospital's lake
changes: an ingest of new records, a FHIR retraction (``entered-in-error``) and an EMPI
merge of two persons. After each, the cached count must be the new one.
"""

from __future__ import annotations

import contextvars
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cohort.definitions import cs, first, rule
from tests.cohort.reference import Lake, attrition, observed

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.audit import EVENT_TABLE
from medlake.cohort.model import CohortDefinition
from medlake.config import open_workspace, write_settings
from medlake.errors import AccessDeniedError
from medlake.service import cohort_query
from medlake.service.cohort import CohortCount, count_cohort, parse_definition
from medlake.service.cohort_query import cache_stats, clear_cache, remembered
from medlake.service.cohort_steps import step_stats
from medlake.service.empi_steward import merge_persons
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import init_workspace, open_lake

ADMIN = Principal("test-admin", Role.ADMIN)
RESEARCHER = Principal("test-researcher", Role.RESEARCHER)

DEFINITION = parse_definition(
    {
        "name": "t2d over 50",
        "concept_sets": [cs(1, "ICD10CM", "E11", descendants=True)],
        "primary_criteria": {
            "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
        },
        "inclusion_rules": [rule("age 50+", demographics=[{"age": {"op": "gte", "value": 50}}])],
    }
)


def patient(pid: str, born: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": born}


def condition(cid: str, pid: str, onset: str, version: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition", "id": cid, "meta": {"versionId": str(version)},
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}]},
        "onsetDateTime": onset, **extra,
    }  # fmt: skip


def ingest(root: Path, folder: Path, *resources: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    path = folder / "records.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in resources), encoding="utf-8")
    with acting_as(ADMIN):  # ingest is an admin's job
        report = ingest_paths(root, [path], source_system="emr")
    assert not report.failed


def expected(root: Path, age: int = 50) -> dict[str, object]:
    """The count as pandas computes it from the lake's tables now."""
    lake = Lake(root)
    t2d = lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11", descendants=True))
    index = lake.entry(first(t2d))
    return attrition(index, [lake.age(index) >= age])


def over(age: int) -> CohortDefinition:
    """:data:`DEFINITION` with another age bound: the same index step, another rule."""
    data = DEFINITION.model_dump(mode="json")
    data["inclusion_rules"][0]["expression"]["demographics"][0]["age"]["value"] = age
    return parse_definition(data)


def new_workspace(folder: Path) -> Path:
    root = init_workspace(folder / "ws").root
    settings = open_workspace(root).settings
    settings.empi.link_after_ingest = False  # persons merge only when the test says
    write_settings(root / "medlake.toml", settings)
    ingest(root, folder / "first", patient("p1", "1950-01-01"), patient("p2", "1990-01-01"),
           condition("c1", "p1", "2024-03-01"), condition("c2", "p2", "2024-03-02"))  # fmt: skip
    return root


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """A workspace of the test's own, to change."""
    root = new_workspace(tmp_path)
    clear_cache()
    yield root
    clear_cache()


@pytest.fixture
def root(workspace: Path) -> Iterator[Path]:
    """The workspace with its lake held open, as ``medlake serve`` holds it: no other
    process can write it meanwhile, so this process's writes are all there are."""
    with open_lake(open_workspace(workspace)):
        yield workspace


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same, shared by the tests that change no clinical table (only the audit trail)."""
    root = new_workspace(tmp_path_factory.mktemp("served"))
    with open_lake(open_workspace(root)):
        yield root


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def counted(root: Path) -> CohortCount:
    return count_cohort(root, DEFINITION, exact=True)


def test_counts_follow_ingest_retraction_and_merge(root: Path, tmp_path: Path) -> None:
    before = counted(root)
    assert observed(before) == expected(root)
    assert counted(root) == before  # the second count is served from the cache
    assert cache_stats().hits >= 1

    # Ingest: two more patients with type 2 diabetes, one of them over 50.
    ingest(root, tmp_path / "second", patient("p3", "1940-06-01"), patient("p4", "2000-01-01"),
           condition("c3", "p3", "2024-04-01"), condition("c4", "p4", "2024-04-02"))  # fmt: skip
    grown = counted(root)
    assert observed(grown) == expected(root)
    assert grown.initial == before.initial + 2

    # Retraction: p1's diagnosis was entered in error.
    in_error = {"coding": [{"code": "entered-in-error"}]}
    withdrawn = condition("c1", "p1", "2024-03-01", version=2, verificationStatus=in_error)
    ingest(root, tmp_path / "third", withdrawn)
    retracted = counted(root)
    assert observed(retracted) == expected(root)
    assert retracted.initial == grown.initial - 1

    # EMPI merge: p3 and p4 are one person; the cohort counts persons.
    with open_lake(open_workspace(root)) as engine:
        rows = engine.execute(engine.table("source_patient")).to_pylist()
    person = {r["source_patient_id"]: r["person_id"] for r in rows}
    merge_persons(root, person["p3"], person["p4"], actor="test-steward")
    merged = counted(root)
    assert observed(merged) == expected(root)
    assert merged.initial == retracted.initial - 1


def test_steps_kept_before_a_write_are_not_reused_after_it(root: Path, tmp_path: Path) -> None:
    """A definition sharing the index step with one counted before an ingest (and the
    rule step with one counted before a merge) sees the new records."""
    assert observed(counted(root)) == expected(root)
    assert observed(count_cohort(root, over(40), exact=True)) == expected(root, age=40)
    computed = step_stats().computed
    ingest(root, tmp_path / "second", patient("p3", "1940-06-01"), patient("p4", "1980-01-01"),
           condition("c3", "p3", "2024-04-01"), condition("c4", "p4", "2024-04-02"))  # fmt: skip
    grown = count_cohort(root, over(30), exact=True)
    assert observed(grown) == expected(root, age=30)
    assert step_stats().computed == computed + 2  # the index again, and its one rule
    assert observed(count_cohort(root, over(40), exact=True)) == expected(root, age=40)
    with open_lake(open_workspace(root)) as engine:
        rows = engine.execute(engine.table("source_patient")).to_pylist()
    person = {r["source_patient_id"]: r["person_id"] for r in rows}
    merge_persons(root, person["p1"], person["p3"], actor="test-steward")
    assert observed(count_cohort(root, over(40), exact=True)) == expected(root, age=40)


def test_a_lake_opened_afresh_is_counted_afresh(workspace: Path) -> None:
    """Between two counts nothing held the lake open, so another process may have
    written it (here one does): the second count is computed, not served."""
    before = counted(workspace)
    script = (
        "import sys\n"
        "from medlake.config import open_workspace\n"
        "from medlake.engine import open_workspace_engine\n"
        "with open_workspace_engine(open_workspace(sys.argv[1])) as engine:\n"
        "    t = engine.table('condition_occurrence')\n"
        "    engine.delete_where('condition_occurrence', t.person_id.notnull())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(workspace)], check=True)
    after = counted(workspace)
    assert observed(after) == expected(workspace)
    assert before.initial == 2
    assert after.initial == 0


def test_the_audit_trail_does_not_empty_the_cache(served: Path, fresh_cache: None) -> None:
    """Audited reads append to the trail at every request; counts do not read it."""
    root = served
    first_count = counted(root)
    with acting_as(RESEARCHER), pytest.raises(AccessDeniedError):
        count_cohort(root, DEFINITION, exact=True)  # refused, and the refusal audited
    computed = cache_stats().computed
    assert counted(root) == first_count
    assert cache_stats().computed == computed  # served from the cache


def test_policy_and_suppression_apply_to_cached_counts(served: Path, fresh_cache: None) -> None:
    root = served
    exact = counted(root)  # a steward's exact count fills the cache
    assert 0 < exact.final < 5  # a small cell
    audited = _denied_events(root)
    with acting_as(RESEARCHER):
        shown = count_cohort(root, DEFINITION).as_dict()
        assert shown["exact"] is False
        suppressed = CohortCount(DEFINITION.name, exact.initial, exact.rules, threshold=5)
        assert shown == suppressed.as_dict()
        assert str(exact.final) not in json.dumps(shown["rules"])  # "<5", never the count
        with pytest.raises(AccessDeniedError):
            count_cohort(root, DEFINITION, exact=True)
        with pytest.raises(AccessDeniedError):
            count_cohort(root, DEFINITION, exact=True)
    assert _denied_events(root) == audited + 2  # one audited refusal per request
    assert cache_stats().hits >= 1


def _denied_events(root: Path) -> int:
    with open_lake(open_workspace(root)) as engine:
        events = engine.table(EVENT_TABLE)
        return engine.count(events.filter(events.outcome == "denied"))


def test_identical_concurrent_counts_run_once(served: Path, fresh_cache: None) -> None:
    root = served
    clients = 8
    results: list[CohortCount] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            results.append(counted(root))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    # each with the test's acting user, as the server's thread pool runs requests
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(client,))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == clients
    assert all(observed(r) == expected(root) for r in results)
    stats = cache_stats()
    # Once each: the observation-period check, the concept sets, the statement.
    assert stats.computed == 3
    assert stats.hits + stats.shared == 3 * clients - 3


def test_a_computation_is_shared_while_it_runs(served: Path, fresh_cache: None) -> None:
    """Callers arriving while the first computes wait for it instead of computing."""
    root = served
    release = threading.Event()
    calls: list[int] = []
    got: list[object] = []

    def compute() -> object:
        calls.append(1)
        release.wait(10)
        return ("row", len(calls))

    with open_lake(open_workspace(root)) as engine:

        def caller() -> None:
            got.append(remembered(engine, ["person"], "shared-test", compute))

        threads = [threading.Thread(target=caller) for _ in range(5)]
        for thread in threads:
            thread.start()
        for _ in range(1000):
            if cache_stats().shared == 4:
                break
            threading.Event().wait(0.01)
        release.set()
        for thread in threads:
            thread.join()
    assert calls == [1]
    assert got == [("row", 1)] * 5


def test_an_error_is_shared_and_not_kept(served: Path, fresh_cache: None) -> None:
    root = served
    with open_lake(open_workspace(root)) as engine:

        def failing() -> object:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            remembered(engine, ["person"], "failing", failing)
        assert remembered(engine, ["person"], "failing", lambda: "ok") == "ok"


def test_the_gate_lets_as_many_statements_as_configured() -> None:
    gate = cohort_query.statement_gate(3)
    assert gate is cohort_query.statement_gate(3)
    taken = [gate.acquire(blocking=False) for _ in range(4)]
    assert taken == [True, True, True, False]
    for _ in range(3):
        gate.release()

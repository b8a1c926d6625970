"""Live ingests — a FHIR Bundle POSTed to the API, a ``medlake listen`` flush — link in
one background EMPI job after a quiet period (``[empi] live_link_delay_seconds``), and a
listener flush leaves the person-order rewrite to maintenance.

Linking is compared with the inline path (each ingest linking on its own, as before) on
an identical copy of a linked lake: the same source patients end up as the same persons.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.server.conftest import make_users

from medlake.access import Permission
from medlake.access.context import acting_as
from medlake.config import open_workspace, write_settings
from medlake.server.app import create_app
from medlake.service import jobs as job_service
from medlake.service.empi import link_workspace
from medlake.service.fhir_transaction import post_bundle
from medlake.service.jobs import JobRunner
from medlake.service.lake_pool import serving
from medlake.service.listen import ListenerService
from medlake.service.live_link import KIND, LiveLinks
from medlake.service.policy import require
from medlake.service.workspace import open_lake

# Calls resolve as the CLI does (the login: the admin who made the lake), or as steward1.
pytestmark = [pytest.mark.slow, pytest.mark.acting_as(None)]
FEED = "feed"


@pytest.fixture(scope="module")
def linked(hospital_lake: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test hospital linked once (a model trained), linking after ingest on, every
    table kept in person order after an ingest (so a rewrite would show), users made."""
    root = hospital_lake.copy(tmp_path_factory.mktemp("live") / "ws")
    settings = open_workspace(root).settings
    settings.empi.link_after_ingest = True
    settings.layout.min_rows = 0
    settings.layout.reorder_share = 0.0
    write_settings(root / "medlake.toml", settings)
    make_users(root)
    with acting_as("steward1"):
        link_workspace(root, full=True)
    return root


def _copy(root: Path, to: Path, **empi: float) -> Path:
    shutil.copytree(root, to, symlinks=True)
    if empi:
        settings = open_workspace(to).settings
        for name, value in empi.items():
            setattr(settings.empi, name, value)
        write_settings(to / "medlake.toml", settings)
    return to


def persons(root: Path, system: str) -> dict[str, set[str]]:
    """Each source patient of ``system``: the source patients (any system) of its person."""
    with open_lake(open_workspace(root)) as engine:
        rows = engine.execute(engine.table("source_patient")).to_pylist()
    by_person: dict[int, set[str]] = {}
    for row in rows:
        by_person.setdefault(row["person_id"], set()).add(
            f"{row['source_system']}/{row['source_patient_id']}"
        )
    return {
        row["source_patient_id"]: by_person[row["person_id"]]
        for row in rows
        if row["source_system"] == system
    }


def partition(root: Path) -> set[frozenset[str]]:
    """The lake's persons as sets of source patients."""
    with open_lake(open_workspace(root)) as engine:
        rows = engine.execute(engine.table("source_patient")).to_pylist()
    rows.sort(key=lambda r: r["person_id"])
    return {
        frozenset(f"{r['source_system']}/{r['source_patient_id']}" for r in group)
        for _, group in itertools.groupby(rows, key=lambda r: r["person_id"])
    }


def link_jobs(root: Path) -> list[dict[str, Any]]:
    with open_lake(open_workspace(root)) as engine:
        return [r for r in job_service.job_rows(engine) if r["kind"] == KIND]


def audit_actions(root: Path) -> list[str]:
    with open_lake(open_workspace(root)) as engine:
        return engine.execute(engine.table("audit_event").select("action")).column(0).to_pylist()


# ---------------------------------------------------------------------- POST /fhir


def emr_bundles(hospital: Path, n: int) -> list[dict[str, Any]]:
    """``n`` Bundles of one EMR Patient each, as another system would send them (same
    identity, so the EMPI links each to the EMR's person)."""
    lines = (hospital / "emr" / "Patient.ndjson").read_text("utf-8").splitlines()
    bundles = []
    for line in lines[:n]:
        patient = json.loads(line)
        bundles.append({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient, "request": {"method": "POST", "url": "Patient"}}]})  # fmt: skip
    return bundles


def test_bundles_posted_quickly_link_in_one_job_as_inline_linking_would(
    linked: Path, hospital_lake: Any, tmp_path: Path
) -> None:
    bundles = emr_bundles(hospital_lake.hospital, 2)
    # The reference: each Bundle linked inline by its own ingest (the service, no server).
    inline = _copy(linked, tmp_path / "inline")
    with acting_as("steward1"):
        for bundle in bundles:
            post_bundle(inline, bundle, source_system=FEED)
    # The server: a quiet period long enough that both Bundles join one job.
    live = _copy(linked, tmp_path / "live", live_link_delay_seconds=600.0)
    tokens = make_tokens(live)
    with TestClient(create_app(live)) as client:
        headers = {"Authorization": f"Bearer {tokens}"}
        for bundle in bundles:
            response = client.post(f"/api/v1/fhir?source={FEED}", json=bundle, headers=headers)
            assert response.status_code == 200, response.text
        jobs = link_jobs(live)
        assert [j["status"] for j in jobs] == ["queued"]  # one job, waiting for quiet
        assert client.app.state.live_links.requested == 2
        unlinked = persons(live, FEED)
        assert all(len(group) == 1 for group in unlinked.values())  # not linked yet
        client.app.state.live_links.release_now()  # the quiet period has passed
        job = wait_job(client, headers, jobs[0]["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["mode"] == "incremental"
    assert job["submitted_by"] == "steward1"
    linked_now = persons(live, FEED)
    assert linked_now == persons(inline, FEED)
    assert all(any(p.startswith("emr/") for p in group) for group in linked_now.values())
    assert partition(live) == partition(inline)


def make_tokens(root: Path) -> str:
    from medlake.service import access

    return access.issue_token(root, "steward1").token


def wait_job(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_the_link_job_runs_after_the_quiet_period(linked: Path, tmp_path: Path) -> None:
    """No release by hand: the server's timer hands the job to the runner once requests
    stop, and a request after the job started stores the next one; without a runner (the
    listener) the job is due after the same quiet period."""
    root = _copy(linked, tmp_path / "ws", live_link_delay_seconds=0.5)
    workspace = open_workspace(root)
    with acting_as("steward1"):
        principal = require(root, Permission.INGEST)
    with serving(workspace):  # as medlake serve holds the lake
        runner = JobRunner(workspace, workers=1)
        runner.start()
        links = LiveLinks(workspace, runner.enqueue)
        try:
            first = links.request(principal)
            assert links.request(principal) == first
            deadline = time.monotonic() + 120
            while link_jobs(root)[0]["status"] != "succeeded":
                assert time.monotonic() < deadline, link_jobs(root)
                time.sleep(0.1)
            second = links.request(principal)
            assert second != first
        finally:
            links.close(run_now=True)
            runner.wait_idle(timeout=120)
            runner.stop()
    assert [j["status"] for j in link_jobs(root)] == ["succeeded", "succeeded"]
    polled = LiveLinks(workspace)
    third = polled.request(principal)
    assert polled.due() is None  # within the quiet period
    time.sleep(0.6)
    assert polled.due() == third
    assert polled.due() is None  # handed over once


# ---------------------------------------------------------------------- medlake listen


def lis_messages(hospital: Path, n: int) -> list[bytes]:
    """The first message of ``n`` LIS day files: patients the lake knows as ``lis``."""
    files = sorted((hospital / "lis").rglob("*.hl7"))[:n]
    assert len(files) == n
    return [f.read_bytes().replace(b"\n", b"\r").split(b"\rMSH|")[0] for f in files]


def test_listener_flushes_link_in_one_job_and_never_rewrite(
    linked: Path, hospital_lake: Any, tmp_path: Path
) -> None:
    messages = lis_messages(hospital_lake.hospital, 2)
    # The reference: flushes linking inline (no job runner), as before.
    inline = _copy(linked, tmp_path / "inline")
    with acting_as("steward1"):
        service = ListenerService(open_workspace(inline), "lis2")
        for data in messages:
            assert service.on_message(data).code == "AA"
            assert service.flush() is not None
    live = _copy(linked, tmp_path / "live", live_link_delay_seconds=600.0)
    before = audit_actions(live)
    links = LiveLinks(open_workspace(live))
    with acting_as("steward1"):
        service = ListenerService(open_workspace(live), "lis2", links=links)
        for data in messages:
            assert service.on_message(data).code == "AA"
            assert service.flush() is not None
            assert service.run_link() is None  # the listener's loop: not due yet
    assert [j["status"] for j in link_jobs(live)] == ["queued"]
    assert all(len(group) == 1 for group in persons(live, "lis2").values())
    job = service.run_link(stopping=True)  # as the listener does when it stops
    assert [j["job_id"] for j in link_jobs(live)] == [job]
    assert [j["status"] for j in link_jobs(live)] == ["succeeded"]
    assert persons(live, "lis2") == persons(inline, "lis2")
    assert partition(live) == partition(inline)
    assert any(len(group) > 1 for group in persons(live, "lis2").values())
    # No flush rewrote a table: the only new events are the link's and the ingests'.
    new = audit_actions(live)[len(before):]
    assert "lake.reorder" not in new
    assert "empi.link" in new


def test_a_flush_reorders_nothing_where_an_ingest_run_would(
    linked: Path, hospital_lake: Any, tmp_path: Path
) -> None:
    """The reference for the check above: the same messages ingested by a plain ingest
    run (person order on) do rewrite tables in this lake."""
    from medlake.service.ingest import ingest_paths

    root = _copy(linked, tmp_path / "ws")
    bundle = tmp_path / "bundle.hl7"
    bundle.write_bytes(b"\r\n".join(lis_messages(hospital_lake.hospital, 2)))
    with acting_as("steward1"):
        ingest_paths(root, [bundle], source_system="lis2", format="hl7v2")
    assert "lake.reorder" in audit_actions(root)


def test_a_waiting_link_job_does_not_hold_off_the_layout_maintenance(
    linked: Path, tmp_path: Path
) -> None:
    """Serve's person-order pass skips a round while a job is queued or running, except for
    a live link job waiting for quiet, which on a busy feed nearly always is."""
    import medlake.service.job_kinds  # noqa: F401  (the kinds of job, as serve has them)
    from medlake.service.lake_layout import _jobs_running

    root = _copy(linked, tmp_path / "ws")
    with acting_as("steward1"):
        principal = require(root, Permission.INGEST)
    job_service.submit_job(root, KIND, {"live": True}, principal=principal)
    with open_lake(open_workspace(root)) as engine:
        assert not _jobs_running(engine)
    job_service.submit_job(root, "qc", {}, principal=principal)
    with open_lake(open_workspace(root)) as engine:
        assert _jobs_running(engine)


def test_the_listener_loop_links_once_flushes_pause_and_when_it_stops(
    linked: Path, hospital_lake: Any, tmp_path: Path
) -> None:
    """``serve`` (what ``medlake listen`` runs) over real MLLP: messages flushed every
    0.2 s queue one link job, the loop runs it once flushes have loaded nothing new for
    the quiet period; a message after it queues the next, run when the listener stops."""
    import asyncio

    from medlake.ingest.mllp import FrameDecoder, frame
    from medlake.service.listen import serve

    first, second, third = lis_messages(hospital_lake.hospital, 3)
    root = _copy(linked, tmp_path / "ws", live_link_delay_seconds=1.0)
    workspace = open_workspace(root)
    service = ListenerService(workspace, "lis2", links=LiveLinks(workspace))

    async def send(port: int, data: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(data))
        await writer.drain()
        decoder = FrameDecoder()
        while not (frames := decoder.feed(await reader.read(4096))):
            pass
        assert b"MSA|AA" in frames[0][1]
        writer.close()

    async def until(check: Any, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(check):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    # The test's own reads on one held engine: a second thread opening and closing the
    # lake beside the listener's would race in DuckDB (the listener's own opens are one
    # thread at a time).
    keeper = open_lake(workspace)

    def statuses() -> list[str]:
        return [r["status"] for r in job_service.job_rows(keeper) if r["kind"] == KIND]

    async def scenario() -> None:
        stop, ports = asyncio.Event(), []
        task = asyncio.create_task(serve(service, "127.0.0.1", 0, ingest_every=0.2,
                                         ready=ports.append, stop=stop))  # fmt: skip
        await until(lambda: bool(ports))
        await send(ports[0], first)
        await send(ports[0], second)
        await until(lambda: statuses() == ["succeeded"])
        await send(ports[0], third)
        await until(lambda: len(statuses()) == 2)
        stop.set()
        await asyncio.wait_for(task, 120)

    with acting_as("steward1"), keeper:
        asyncio.run(scenario())
    jobs = link_jobs(root)
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    assert all(j["submitted_by"] == "steward1" for j in jobs)
    assert len(persons(root, "lis2")) == 3
    assert all(len(group) > 1 for group in persons(root, "lis2").values())  # all linked

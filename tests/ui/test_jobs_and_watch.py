"""The jobs and uploads page and the admin's freeze clearing, in-process: an upload (FHIR
NDJSON and HL7 v2 from the synthetic generator, or CSV with its mapping file) becomes an
ingest job whose per-source table is what the lake's batches and the generator's files
say; who may upload, see and cancel which job follows the policy (refusals audited); and
an admin lifts the ransomware watch's freeze through the running server (API and page),
audited, with the CLI's checks."""

from __future__ import annotations

import json
import re
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from medlake.access import Permission, Principal
from medlake.config import open_workspace
from medlake.ingest.landing_mirror import write_json_atomically
from medlake.server.app import create_app
from medlake.service import access
from medlake.service import jobs as job_service
from medlake.service.jobs import JobContext, JobKind, register_kind
from medlake.service.workspace import open_lake
from medlake.synth import generate_hospital

PROJECT = "p1"
STEPS = 40
_release = threading.Event()


def _hold(job: JobContext) -> dict[str, object]:
    """A job that reports progress until released or cancelled."""
    for step in range(STEPS):
        job.progress(step, STEPS)
        if _release.wait(0.1):
            break
    job.progress(STEPS, STEPS)
    return {"steps": STEPS}


register_kind(JobKind("ui-test-hold", Permission.ANALYZE, _hold))


@dataclass
class Site:
    root: Path
    app: object
    tokens: dict[str, str]
    users: dict[str, str]
    upload: Path  # a small synthetic hospital's exports to upload

    def client(self, role: str) -> TestClient:
        client = TestClient(self.app, follow_redirects=False)  # type: ignore[arg-type]
        signed = client.post("/ui/login", data={"user": self.users[role],
                                                 "token": self.tokens[role]})  # fmt: skip
        assert signed.status_code == 303, signed.text
        return client

    def principal(self, role: str) -> Principal:
        return access.whoami(self.root, user=self.users[role])

    def rows(self, table: str) -> pd.DataFrame:
        with open_lake(open_workspace(self.root)) as engine:
            return engine.execute(engine.table(table)).to_pandas()


@pytest.fixture(scope="module")
def site(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("ui-jobs")
    root = hospital_lake.copy(base / "ws")
    users = {"admin": access.login_name(), "steward": "steward1", "researcher": "researcher1",
             "outsider": "researcher2", "auditor": "auditor1"}  # fmt: skip
    for role, name in users.items():
        if role != "admin":
            access.add_user(root, name, "researcher" if role == "outsider" else role)
    tokens = {role: access.issue_token(root, name, as_user=name).token
              for role, name in users.items()}  # fmt: skip
    access.create_project(root, PROJECT, "Test project")
    access.add_member(root, PROJECT, "researcher1")
    access.create_project(root, "p2", "Another project")
    access.add_member(root, "p2", "researcher2")
    generate_hospital(base / "upload", patients=8, seed=21, workers=1)
    app = create_app(root)
    with TestClient(app):
        yield Site(root, app, tokens, users, base / "upload")


def _wait(site: Site, job_id: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        job = job_service.get_job(site.root, job_id, principal=site.principal("admin"))
        if job["status"] in job_service.FINISHED:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _twin_is_the_template_context(client: TestClient, path: str) -> dict:  # type: ignore[type-arg]
    html = client.get(path)
    assert html.status_code == 200, html.text[:500]
    base, _, query = path.partition("?")
    twin = client.get(f"{base}.json" + (f"?{query}" if query else "")).json()
    assert twin == html.context["page"]  # type: ignore[attr-defined]
    embedded = re.search(r'<script id="page-data" type="application/json">(.*?)</script>',
                         html.text, re.S)  # fmt: skip
    assert embedded is not None
    assert json.loads(embedded.group(1).replace("<\\/", "</")) == twin
    return twin  # type: ignore[no-any-return]


def test_an_upload_of_fhir_and_hl7_becomes_an_ingest_job_with_its_per_source_table(
    site: Site,
) -> None:
    admin = site.client("admin")
    fhir = site.upload / "emr" / "Patient.ndjson"
    hl7 = sorted((site.upload / "lis").rglob("*.hl7"))[0]
    files = [("files", ("emr/Patient.ndjson", fhir.read_bytes())),
             ("files", (f"lis/{hl7.name}", hl7.read_bytes()))]  # fmt: skip
    sent = admin.post("/ui/jobs/upload", files=files, data={"format": "", "source_system": ""})
    assert sent.status_code == 303, sent.text
    job_id = sent.headers["location"].split("submitted=")[1]
    assert _wait(site, job_id)["status"] == "succeeded"

    page = _twin_is_the_template_context(admin, "/ui/jobs")
    job = next(j for j in page["jobs"] if j["job_id"] == job_id)
    assert job["kind"] == "ingest"
    assert job["submitted_by"] == site.users["admin"]
    assert job["progress"]["fraction"] == 1.0
    assert sorted(job["inputs"]) == sorted(["emr/Patient.ndjson", f"lis/{hl7.name}"])
    assert not job["may_cancel"]
    sources = {s["source_system"]: s for s in job["sources"]}
    assert set(sources) == {"emr", "lis"}  # the folders the files were sent under
    # FHIR: one resource a line, as the generator wrote them, all read.
    resources = len([line for line in fhir.read_text("utf-8").splitlines() if line.strip()])
    assert sources["emr"]["read"] == resources
    # Each source's loaded rows are its batches' in the lake.
    result = job_service.get_job(site.root, job_id, principal=site.principal("admin"))["result"]
    batch_ids = {f["batch_id"]: f["source_system"] for f in result["files"]}
    batches = site.rows("ingest_batch")
    mine = batches[batches.batch_id.isin(list(batch_ids))]
    assert len(mine) == 2
    loaded = mine.groupby("source_system")["rows_loaded"].sum().to_dict()
    assert {s: sources[s]["loaded"] for s in sources} == loaded
    # The upload is kept under the job's folder, as sent.
    stored = job_service.job_dir(open_workspace(site.root), job_id) / "upload"
    assert (stored / "emr" / "Patient.ndjson").read_bytes() == fhir.read_bytes()


def test_a_csv_upload_with_its_mapping_file_is_ingested_as_the_mappings_source(
    site: Site,
) -> None:
    admin = site.client("admin")
    his = site.upload / "his"
    csvs = sorted(his.glob("*.csv"))
    files = [("files", (p.name, p.read_bytes())) for p in csvs]
    mapping = his / "medlake-mapping.toml"
    files.append(("mapping", (mapping.name, mapping.read_bytes())))
    sent = admin.post("/ui/jobs/upload", files=files)
    assert sent.status_code == 303, sent.text
    job_id = sent.headers["location"].split("submitted=")[1]
    done = _wait(site, job_id)
    assert done["status"] == "succeeded", done
    job = next(j for j in admin.get("/ui/jobs.json?kind=ingest").json()["jobs"]
               if j["job_id"] == job_id)  # fmt: skip
    (source,) = job["sources"]
    assert source["source_system"] == "his"  # named by the mapping file
    assert source["files"] == len(csvs)
    entries = tomllib.loads(mapping.read_text("utf-8"))["file"]

    def encoding(name: str) -> str:  # as the mapping file says for that file
        entry = next(e for e in entries if any(fnmatch(name, m) for m in (
            [e["match"]] if isinstance(e["match"], str) else e["match"])))  # fmt: skip
        return str(entry.get("encoding", "utf-8"))

    rows = sum(len(pd.read_csv(p, dtype=str, encoding=encoding(p.name))) for p in csvs)
    assert source["read"] == rows
    assert sorted(job["inputs"]) == sorted(p.name for p in csvs)  # the mapping is no input


def test_who_may_upload_see_and_cancel_jobs_follows_the_policy(site: Site) -> None:
    _release.clear()
    runner = site.app.state.jobs  # type: ignore[attr-defined]
    held = runner.submit("ui-test-hold", {}, principal=site.principal("steward"),
                         project_id=PROJECT)  # fmt: skip
    try:
        # A member of the project sees it (live progress) but may not stop a colleague's job.
        member = site.client("researcher")
        deadline = time.monotonic() + 30
        while True:
            page = member.get("/ui/jobs.json").json()
            seen = next(j for j in page["jobs"] if j["job_id"] == held["job_id"])
            if seen["progress"]["done"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert seen["status"] == "running"
        assert 0 < seen["progress"]["done"] < STEPS
        assert page["active"] >= 1
        assert not seen["may_cancel"]
        assert not page["may_upload"]
        assert member.post(f"/ui/jobs/{held['job_id']}/cancel").status_code == 403
        refused = member.post("/ui/jobs/upload",
                              files=[("files", ("x.ndjson", b"{}"))])  # fmt: skip
        assert refused.status_code == 403
        # In another project only: not listed, and "no such job".
        outsider = site.client("outsider")
        listed = {j["job_id"] for j in outsider.get("/ui/jobs.json").json()["jobs"]}
        assert held["job_id"] not in listed
        assert outsider.post(f"/ui/jobs/{held['job_id']}/cancel").status_code == 404
        # An auditor has no job page.
        auditor = site.client("auditor")
        assert auditor.get("/ui/jobs").status_code == 403
        assert "/ui/jobs" not in auditor.get("/ui/dashboard").text
        # The admin (operator) sees every job and stops it.
        admin = site.client("admin")
        shown = next(j for j in admin.get("/ui/jobs.json").json()["jobs"]
                     if j["job_id"] == held["job_id"])  # fmt: skip
        assert shown["may_cancel"]
        assert admin.post(f"/ui/jobs/{held['job_id']}/cancel").status_code == 303
        assert _wait(site, held["job_id"], timeout=20)["status"] == "cancelled"
    finally:
        _release.set()
    events = site.rows("audit_event")
    denied = events[events.outcome == "denied"]
    pairs = set(zip(denied.actor, denied.action, strict=True))
    expected = {("researcher1", "job.cancel"), ("researcher1", "ingest"), ("auditor1", "ingest")}
    assert expected <= pairs


def _freeze(site: Site) -> dict[str, object]:
    record = {"since": "2026-01-02T03:04:05+00:00", "frozen_at": "2026-01-02T03:04:09+00:00",
              "reason": "test: 3 renames to ransom extensions within 60 s", "file_count": 1,
              "files": [{"path": "landing/ab/x.locked", "what": "rename",
                         "seen_at": "2026-01-02T03:04:09+00:00"}]}  # fmt: skip
    write_json_atomically(open_workspace(site.root).freeze_file, record)
    return record


def test_an_admin_clears_the_freeze_through_the_running_server(site: Site) -> None:
    record = _freeze(site)
    workspace = open_workspace(site.root)
    bearer = {role: {"Authorization": f"Bearer {site.tokens[role]}"} for role in site.tokens}
    api = TestClient(site.app)  # type: ignore[arg-type]
    status = api.get("/api/v1/protect/watch", headers=bearer["admin"]).json()
    assert status["frozen"]
    assert status["reason"] == record["reason"]
    assert api.get("/api/v1/protect/watch", headers=bearer["steward"]).status_code == 403
    refused = api.post("/api/v1/protect/watch/clear", json={"note": "x"}, headers=bearer["steward"])
    assert refused.status_code == 403
    blank = api.post("/api/v1/protect/watch/clear", json={"note": "  "}, headers=bearer["admin"])
    assert blank.status_code == 400
    assert workspace.freeze_file.exists()
    cleared = api.post("/api/v1/protect/watch/clear", json={"note": "api: reviewed"},
                       headers=bearer["admin"])  # fmt: skip
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["since"] == record["since"]
    assert not workspace.freeze_file.exists()
    again = api.post("/api/v1/protect/watch/clear", json={"note": "again"}, headers=bearer["admin"])
    assert again.status_code == 400  # not frozen: as the CLI says

    # The same from the dashboard: the panel is the admin's only, the button clears.
    _freeze(site)
    admin = site.client("admin")
    page = _twin_is_the_template_context(admin, "/ui/dashboard")
    assert page["watch"]["frozen"]
    assert page["watch"]["record"]["reason"] == record["reason"]
    assert site.client("steward").get("/ui/dashboard.json").json()["watch"] is None
    assert site.client("steward").post("/ui/watch/clear", data={"note": "x"}).status_code == 403
    assert admin.post("/ui/watch/clear", data={"note": ""}).status_code == 400
    done = admin.post("/ui/watch/clear", data={"note": "ui: reviewed, restored from mirror"})
    assert done.status_code == 303
    assert not workspace.freeze_file.exists()
    assert admin.get("/ui/dashboard.json?cleared=1").json()["watch"] == {
        "frozen": False, "record": None, "cleared": True}  # fmt: skip
    events = site.rows("audit_event")
    clears = events[events.action == "watch.clear"]
    notes = [json.loads(d)["note"] if isinstance(d, str) else d["note"] for d in clears.detail]
    assert notes[-2:] == ["api: reviewed", "ui: reviewed, restored from mirror"]
    assert set(clears.actor) == {site.users["admin"]}

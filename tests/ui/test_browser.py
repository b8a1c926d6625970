"""The main journeys in a real browser (Debian's Chromium driven by Playwright) against a
real ``medlake serve``: sign in, build a cohort and watch the attrition change, open a
patient timeline, decide a review pair with a keystroke, open a GWAS result, switch to
Chinese. Every journey saves screenshots (the folder is printed); what the pages show is
compared with the services and the lake, not with numbers written here.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Chromium with a fresh profile for the module (Playwright's own browser download
    is never used: the executable is Debian's)."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), (
        "the browser tests need Debian's chromium (scripts/install_debian_packages.sh)"
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900}, locale="en-US",
        )  # fmt: skip
        context.set_default_timeout(20_000)
        yield context
        context.close()


def sign_in(context, base: str, user: str, token: str):  # type: ignore[no-untyped-def]
    context.clear_cookies()
    page = context.new_page()
    page.on("pageerror", lambda error: print(f"page error: {error}"))
    page.on("response", lambda r: print(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"{base}/ui/dashboard")
    assert "/ui/login" in page.url  # not signed in: sent to the sign-in page
    page.fill("#user", user)
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/dashboard")
    return page


def test_sign_in_shows_the_dashboard_and_a_wrong_token_does_not(
    browser_context, served_ui, ui_workspace, artifacts
) -> None:
    context, base = browser_context, served_ui
    context.clear_cookies()
    page = context.new_page()
    page.goto(f"{base}/ui/login")
    page.fill("#user", "steward1")
    page.fill("#token", ui_workspace.tokens["researcher"])  # someone else's token
    page.click("button[type=submit]")
    assert page.locator(".alert-error").is_visible()
    page.screenshot(path=artifacts / "01-sign-in-refused.png")
    page.close()

    page = sign_in(context, base, "steward1", ui_workspace.tokens["steward"])
    page.wait_for_selector("#records-chart[data-drawn]")
    assert page.locator(".who b").inner_text() == "steward1"
    cookie = next(c for c in context.cookies() if c["name"] == "medlake_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("medlake_session") == -1  # not readable by JS
    twin = page.request.get(f"{base}/ui/dashboard.json").json()  # same session, same context
    shown = page.locator("table.data >> nth=1").locator("tbody tr").all_inner_texts()
    assert [row.split("\t")[2] for row in shown] == [b["original_name"] for b in twin["batches"]]
    page.screenshot(path=artifacts / "02-dashboard.png", full_page=True)
    page.close()


def twin(base: str, user: str, token: str, path: str) -> dict:  # type: ignore[type-arg]
    """A page's JSON twin fetched over HTTP in a session of its own."""
    with httpx.Client(base_url=base, timeout=60) as client:
        signed = client.post("/ui/login", data={"user": user, "token": token})
        assert signed.status_code == 303, signed.text
        response = client.get(path)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def _attrition(page) -> list[list[str]]:  # type: ignore[no-untyped-def]
    rows = page.locator("#attrition tbody tr")
    return [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]


def _settled(page, *texts: str) -> None:  # type: ignore[no-untyped-def]
    """Wait until the last edit is counted and its definition holds every one of ``texts``."""
    needles = json.dumps(list(texts))
    page.wait_for_function(
        f"!document.body.dataset.counting && {needles}.every("
        "(t) => (document.body.dataset.countedFor || '').includes(t))"
    )


def _pick_concept(page, holder: str, query: str, code: str) -> None:  # type: ignore[no-untyped-def]
    page.fill(f"{holder} .concept-q", query)
    exact = page.locator("b", has_text=re.compile(f"^{re.escape(code)}$"))
    option = page.locator(f"{holder} .suggestion").filter(has=exact).first
    option.wait_for()
    option.dispatch_event("mousedown")


def test_cohort_builder_recounts_as_the_definition_is_edited(
    browser_context, served_ui, ui_workspace, artifacts
) -> None:
    page = sign_in(browser_context, served_ui, "researcher1", ui_workspace.tokens["researcher"])
    page.click("a[href='/ui/cohorts']")
    _settled(page)  # the empty definition is counted on load
    page.select_option("#entry .domain", "drug_exposure")
    _pick_concept(page, "#entry", "metformin", "A10BA02")
    _settled(page, '"drug_exposure"', '"codeset_id":1')
    entry_only = _attrition(page)

    page.click("#add-rule")
    rule = page.locator("#rules .rule").first
    rule.locator(".rule-name").fill("type 2 diabetes before")
    rule.locator(".domain").select_option("condition_occurrence")
    rule.locator(".before").fill("")
    _pick_concept(page, "#rules .rule:nth-child(1)", "E11", "E11")
    _settled(page, "type 2 diabetes before", '"codeset_id":2', '"start":null')
    with_rule = _attrition(page)
    page.screenshot(path=artifacts / "03-cohort-builder.png", full_page=True)

    # What the page shows is what the API counts for the definition the page sent.
    definition = json.loads(page.locator("#definition-json").text_content() or "")
    bearer = {"Authorization": f"Bearer {ui_workspace.tokens['researcher']}"}
    expected = httpx.post(f"{served_ui}/api/v1/cohorts/count", json=definition,
                          headers=bearer, timeout=60).json()  # fmt: skip
    shown = [[str(expected["initial"])]] + [[str(r["remaining"])] for r in expected["rules"]]
    assert [row[1:2] for row in with_rule] == shown
    assert len(entry_only) == 1
    assert len(with_rule) == 2
    assert definition["concept_sets"][0]["items"][0]["include_descendants"] is True
    assert with_rule[0][1] == entry_only[0][1]  # a rule leaves the entry events alone
    page.close()


def test_patient_timeline_opens_from_a_source_patient_id(
    browser_context, served_ui, ui_workspace, artifacts
) -> None:
    person = ui_workspace.person_id
    timeline = ui_workspace.timeline  # the service's, read before the server started
    page = sign_in(browser_context, served_ui, "steward1", ui_workspace.tokens["steward"])
    page.click("a[href='/ui/persons']")
    page.fill("#person-q", ui_workspace.source_patient_id)
    page.click("#person-search button")
    page.click(f"a[href='/ui/persons/{person}']")
    page.wait_for_selector("#timeline[data-drawn]")
    points = page.evaluate(  # the plot's marks, not the range slider's copy of them
        "[...document.querySelectorAll('#timeline .point')]"
        ".filter((p) => !p.closest('.rangeslider-container')).length"
    )
    assert points == sum(1 for item in timeline["items"] if item["start"] is not None)
    linked = page.locator("#linked tbody tr").all_inner_texts()
    assert sorted(" ".join(r.split()) for r in linked) == sorted(
        " ".join(f"{s['source_system']} {s['source_patient_id']} "
                 f"{s['first_seen']:%Y-%m-%d} {s['last_seen']:%Y-%m-%d}".split())
        for s in timeline["source_patients"]
    )  # fmt: skip
    page.screenshot(path=artifacts / "04-patient-timeline.png", full_page=True)
    page.close()


def test_a_review_pair_is_decided_with_the_m_key(
    browser_context, served_ui, ui_workspace, artifacts
) -> None:
    page = sign_in(browser_context, served_ui, "steward1", ui_workspace.tokens["steward"])
    page.click("a[href='/ui/empi']")
    pair = page.locator("#pair").get_attribute("data-pair")
    assert pair
    page.screenshot(path=artifacts / "05-empi-review.png", full_page=True)
    page.keyboard.press("m")
    page.wait_for_selector("#last-decision")
    assert pair in page.locator("#last-decision").inner_text()
    # The decision is on the audit trail, as the auditor's audit search shows it.
    events = twin(served_ui, "auditor1", ui_workspace.tokens["auditor"],
                  "/ui/audit.json?action=empi.decide")["events"]  # fmt: skip
    decided = [e for e in events if e["object_id"] == pair]
    assert [(e["actor"], e["detail"]["decision"]) for e in decided] == [("steward1", "match")]
    page.screenshot(path=artifacts / "06-empi-decided.png", full_page=True)
    page.close()


def test_a_gwas_result_draws_its_plots_and_top_hits(
    browser_context, served_ui, ui_workspace, artifacts
) -> None:
    page = sign_in(browser_context, served_ui, "steward1", ui_workspace.tokens["steward"])
    page.click("a[href='/ui/analyses']")
    page.click("#results a >> text=ldl.LDL")
    page.wait_for_selector("#manhattan[data-drawn]")
    page.wait_for_selector("#qq[data-drawn]")
    table = pq.read_table(ui_workspace.root / "analyses" / "ldl.LDL.glm.parquet").to_pandas()
    smallest = table.sort_values("p").iloc[0]
    first = page.locator("#top-hits tbody tr").first.locator("td").all_inner_texts()
    assert first[2] == smallest["id"]
    assert page.locator("#manhattan .scatterlayer .point").count() > 0
    page.screenshot(path=artifacts / "07-gwas-result.png", full_page=True)
    page.close()


def test_the_language_switch_shows_chinese_and_roles_see_only_their_pages(
    browser_context, served_ui, ui_workspace, artifacts
) -> None:
    page = sign_in(browser_context, served_ui, "researcher1", ui_workspace.tokens["researcher"])
    nav = page.locator(".sidebar a[href^='/ui/']").evaluate_all("els => els.map(e => e.pathname)")
    assert "/ui/empi" not in nav
    assert "/ui/persons" not in nav
    assert "/ui/cohorts" in nav
    page.click("a.lang")
    page.wait_for_selector("html[lang='zh-CN']")
    assert page.locator(".sidebar a.active").inner_text() == "总览"
    page.screenshot(path=artifacts / "08-dashboard-zh.png", full_page=True)
    response = page.goto(f"{served_ui}/ui/empi")
    assert response is not None
    assert response.status == 403
    page.screenshot(path=artifacts / "09-refused-zh.png")
    page.close()


def _payload(path: Path, name: str) -> dict[str, object]:
    return {"name": name, "mimeType": "application/octet-stream", "buffer": path.read_bytes()}


def test_an_admin_uploads_files_watches_the_job_finish_and_cancels_another(
    browser_context, served_ui, ui_workspace, artifacts, tmp_path_factory
) -> None:
    from medlake.synth import generate_hospital

    hospital = tmp_path_factory.mktemp("upload-hospital")
    generate_hospital(hospital, patients=30, seed=31, workers=1)
    fhir = hospital / "emr" / "Patient.ndjson"
    day_files = sorted((hospital / "lis").rglob("*.hl7"))
    page = sign_in(browser_context, served_ui, ui_workspace.users["admin"],
                   ui_workspace.tokens["admin"])  # fmt: skip
    page.click("a[href='/ui/jobs']")
    page.wait_for_selector("#upload-form")
    page.set_input_files("#upload-files", [_payload(fhir, "Patient.ndjson"),
                                           _payload(day_files[0], day_files[0].name)])  # fmt: skip
    page.fill("#upload-source", "upload-test")
    page.screenshot(path=artifacts / "10-jobs-upload.png", full_page=True)
    page.click("#upload-submit")
    page.wait_for_url(re.compile(r"/ui/jobs\?submitted="))
    job_id = page.url.split("submitted=")[1]
    row = page.locator(f"tr[data-job='{job_id}']")
    row.wait_for()
    page.screenshot(path=artifacts / "11-jobs-running.png", full_page=True)
    # The page polls its twin: the job reaches done and its per-source table appears.
    page.wait_for_selector(f"tr[data-job='{job_id}'][data-status='succeeded']", timeout=180_000)
    assert row.locator(".progress").get_attribute("data-fraction") == "1.000"
    shown = page.locator(f"tr[data-detail='{job_id}'] table.sources tbody tr").all_inner_texts()
    bearer = {"Authorization": f"Bearer {ui_workspace.tokens['admin']}"}
    job = httpx.get(f"{served_ui}/api/v1/jobs/{job_id}", headers=bearer, timeout=60).json()
    (source,) = job["result"]["sources"]  # what the API says the job did
    assert [r.split("\t")[:5] for r in shown] == [[
        "upload-test", "2", str(source["read"]), str(source["loaded"]), str(source["updated"])]]
    # The generator wrote one FHIR resource a line; HL7 messages start with MSH.
    resources = sum(1 for line in fhir.read_text("utf-8").splitlines() if line.strip())
    messages = day_files[0].read_bytes().count(b"MSH|")
    assert source["read"] == resources + messages
    page.screenshot(path=artifacts / "12-jobs-done.png", full_page=True)

    # A second, larger upload (every LIS day file) is cancelled while it waits or runs.
    page.set_input_files("#upload-files", [_payload(p, p.name) for p in day_files])
    page.fill("#upload-source", "lis")
    page.click("#upload-submit")
    page.wait_for_url(re.compile(r"/ui/jobs\?submitted="))
    second = page.url.split("submitted=")[1]
    assert second != job_id
    page.locator(f"tr[data-job='{second}'] button.cancel").click()
    page.wait_for_selector(f"tr[data-job='{second}'][data-status='cancelled']", timeout=120_000)
    cancelled = httpx.get(f"{served_ui}/api/v1/jobs/{second}", headers=bearer, timeout=60).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_requested"]
    assert (cancelled["progress"]["done"] or 0) < len(day_files)  # stopped before the end
    page.screenshot(path=artifacts / "13-jobs-cancelled.png", full_page=True)
    page.click("a.lang")
    page.wait_for_selector("html[lang='zh-CN']")
    assert page.locator(".sidebar a.active").inner_text() == "任务与上传"
    page.wait_for_selector(f"tr[data-job='{job_id}'] .state:text('已完成')")
    page.screenshot(path=artifacts / "14-jobs-zh.png", full_page=True)
    page.close()


def test_an_admin_clears_the_ransomware_freeze_from_the_dashboard(
    browser_context, served_ui, ui_workspace, artifacts
) -> None:
    from medlake.ingest.landing_mirror import write_json_atomically

    served = ui_workspace.root.parent / "served"  # the served copy (conftest's served_ui)
    freeze_file = served / "protect" / "frozen.json"
    record = {"since": "2026-01-02T03:04:05+00:00", "frozen_at": "2026-01-02T03:04:09+00:00",
              "reason": "test: 3 renames to ransom extensions within 60 s", "file_count": 1,
              "files": [{"path": "landing/ab/x.locked", "what": "rename",
                         "seen_at": "2026-01-02T03:04:09+00:00"}]}  # fmt: skip
    write_json_atomically(freeze_file, record)
    page = sign_in(browser_context, served_ui, ui_workspace.users["admin"],
                   ui_workspace.tokens["admin"])  # fmt: skip
    assert record["reason"] in page.locator("#watch-frozen").inner_text()
    page.fill("#watch-note", "browser test: reviewed, nothing was encrypted")
    page.screenshot(path=artifacts / "15-dashboard-frozen.png", full_page=True)
    page.click("#watch-clear button[type=submit]")
    page.wait_for_selector("#watch-ok")
    assert not freeze_file.exists()
    events = twin(served_ui, "auditor1", ui_workspace.tokens["auditor"],
                  "/ui/audit.json?action=watch.clear")["events"]  # fmt: skip
    assert [(e["actor"], e["detail"]["note"]) for e in events][:1] == [
        (ui_workspace.users["admin"], "browser test: reviewed, nothing was encrypted")]
    page.screenshot(path=artifacts / "16-dashboard-cleared.png", full_page=True)
    page.close()

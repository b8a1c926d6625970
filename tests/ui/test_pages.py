"""The web pages in-process: each page's JSON twin is the context its template got, each
page follows the access policy for every role (refusals audited), sessions are signed
and end with their token, both languages are complete, and what the pages compute is
what pandas computes over the lake or the result files."""

from __future__ import annotations

import json
import re
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from medlake.access import Principal, Role
from medlake.cohort import example_path
from medlake.config import open_workspace, read_settings, write_settings
from medlake.omics.gwas.plots import genomic_inflation
from medlake.server.app import create_app
from medlake.server.ui import analyses, i18n, plotly_js, session
from medlake.server.ui.web import NAVIGATION, may
from medlake.service import access
from medlake.service.webui import DATED_TABLES
from medlake.service.workspace import open_lake

UI = Path(analyses.__file__).parent
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app(ui_workspace):  # type: ignore[no-untyped-def]
    """The application, started as ``medlake serve`` starts it (its lifespan holds the
    lake open and runs the job workers) for the whole module."""
    application = create_app(ui_workspace.root)
    with TestClient(application):
        yield application


def signed_in(app, ui_workspace, role: str) -> TestClient:  # type: ignore[no-untyped-def]
    client = TestClient(app, follow_redirects=False)
    response = client.post("/ui/login", data={"user": ui_workspace.users[role],
                                               "token": ui_workspace.tokens[role]})  # fmt: skip
    assert response.status_code == 303, response.text
    return client


def lake_rows(root: Path, table: str) -> pd.DataFrame:
    with open_lake(open_workspace(root)) as engine:
        return engine.execute(engine.table(table)).to_pandas()


@pytest.mark.slow
def test_every_pages_json_twin_is_the_context_its_template_got(app, ui_workspace) -> None:
    steward = signed_in(app, ui_workspace, "steward")
    person = int(lake_rows(ui_workspace.root, "measurement")["person_id"].min())
    result = steward.get("/ui/analyses.json").json()["results"][0]["result_id"]
    pages = ["/ui/dashboard", "/ui/cohorts", "/ui/persons?q=" + str(person),
             f"/ui/persons/{person}", f"/ui/persons/{person}?notes=1", "/ui/empi",
             "/ui/analyses", f"/ui/analyses/{result}",
             "/ui/qc", "/ui/qc?status=all&table=person", "/ui/jobs",
             "/ui/jobs?status=succeeded&kind=ingest"]  # fmt: skip
    clients = [(steward, path) for path in pages]
    clients.append((signed_in(app, ui_workspace, "auditor"), "/ui/audit?outcome=denied"))
    for client, path in clients:
        html = client.get(path)
        assert html.status_code == 200, (path, html.text[:500])
        assert html.headers["content-type"].startswith("text/html")
        base, _, query = path.partition("?")
        twin = client.get(f"{base}.json" + (f"?{query}" if query else ""))
        assert twin.status_code == 200, path
        assert twin.json() == html.context["page"], path  # type: ignore[attr-defined]
        by_accept = client.get(path, headers={"Accept": "application/json"})
        assert by_accept.json() == twin.json(), path
        # The page's scripts read the same context, embedded once.
        embedded = re.search(r'<script id="page-data" type="application/json">(.*?)</script>',
                             html.text, re.S)  # fmt: skip
        assert embedded is not None
        assert json.loads(embedded.group(1).replace("<\\/", "</")) == twin.json(), path


@pytest.mark.slow
def test_pages_follow_the_access_policy_for_every_role_and_refusals_are_audited(
    app, ui_workspace
) -> None:
    pages = [(href, permission) for _, href, permission in NAVIGATION]
    for role in ("admin", "steward", "researcher", "auditor"):
        client = signed_in(app, ui_workspace, role)
        principal = access.whoami(ui_workspace.root, user=ui_workspace.users[role])
        dashboard = client.get("/ui/dashboard")
        nav = re.findall(r'<nav class="sidebar">(.*?)</nav>', dashboard.text, re.S)[0]
        assert set(re.findall(r'href="(/ui/[a-z]+)"', nav)) == {
            href for href, permission in pages if may(principal, permission)
        }, role
        for href, permission in pages:
            status = client.get(href).status_code
            assert status == (200 if may(principal, permission) else 403), (role, href)
    events = lake_rows(ui_workspace.root, "audit_event")
    denied = set(zip(events.loc[events.outcome == "denied", "actor"],
                     events.loc[events.outcome == "denied", "action"], strict=True))  # fmt: skip
    assert {("researcher1", "review_links"), ("auditor1", "count"),
            (ui_workspace.users["admin"], "read_identified")} <= denied  # fmt: skip


def test_a_researcher_sees_counts_but_no_batches_and_no_patient_data(app, ui_workspace) -> None:
    client = signed_in(app, ui_workspace, "researcher")
    page = client.get("/ui/dashboard.json").json()
    assert page["lake"] is not None
    assert page["records_by_source"]
    assert page["batches"] is None
    assert page["quarantine"] is None
    assert page["qc"] is None
    assert client.get("/ui/persons/1.json").status_code == 403
    assert client.get("/ui/concepts.json?q=E11").status_code == 200


def test_sign_in_needs_the_users_own_token_and_sessions_are_signed(
    app, ui_workspace, tmp_path: Path
) -> None:
    client = TestClient(app, follow_redirects=False)
    assert client.get("/ui/dashboard").headers["location"].startswith("/ui/login")
    assert client.get("/ui/dashboard.json").status_code == 401
    someone_elses = {"user": "steward1", "token": ui_workspace.tokens["researcher"]}
    refused = client.post("/ui/login", data=someone_elses)
    assert refused.status_code == 401
    assert session.COOKIE not in refused.cookies
    assert "does not belong" in refused.text
    own = {"user": "steward1", "token": ui_workspace.tokens["steward"],
           "next": "https://elsewhere.example/x"}  # fmt: skip
    good = client.post("/ui/login", data=own)
    assert good.headers["location"] == "/ui/dashboard"  # never redirected off the site
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    value = good.cookies[session.COOKIE]
    assert ui_workspace.tokens["steward"] not in value  # only the token's id is kept
    key = session.secret(ui_workspace.root)
    assert session.decode(key, value).user_name == "steward1"  # type: ignore[union-attr]
    payload, mac = value.rsplit(".", 1)
    forged = session.encode(
        b"another workspace's secret", "steward1", ui_workspace.tokens["steward"]
    )
    assert session.decode(key, forged) is None
    assert session.decode(key, f"{payload}.{'0' * len(mac)}") is None
    assert session.decode(key, value, now=time.time() + session.LIFETIME_S + 1) is None
    assert (ui_workspace.root / session.SECRET_FILE).stat().st_mode & 0o077 == 0
    fresh = TestClient(app, follow_redirects=False, cookies={session.COOKIE: forged})
    assert fresh.get("/ui/dashboard").status_code == 303


def test_revoking_the_token_ends_its_browser_session(app, ui_workspace) -> None:
    name = "steward2"
    access.add_user(ui_workspace.root, name, "steward")
    token = access.issue_token(ui_workspace.root, name, as_user=name)
    client = TestClient(app, follow_redirects=False)
    client.post("/ui/login", data={"user": name, "token": token.token})
    assert client.get("/ui/dashboard").status_code == 200
    access.revoke_token(ui_workspace.root, token.token_id)
    assert client.get("/ui/dashboard").status_code == 303


def test_state_changing_posts_from_another_site_are_refused(app, ui_workspace) -> None:
    client = signed_in(app, ui_workspace, "steward")
    definition = json.loads(example_path("t2d_hba1c_metformin").read_text("utf-8"))
    elsewhere = {"Origin": "https://evil.example"}
    assert (
        client.post("/ui/cohorts/count.json", json=definition, headers=elsewhere).status_code == 401
    )
    assert client.post("/ui/empi/decide", data={"pair_id": "x", "decision": "match"},
                       headers=elsewhere).status_code == 303  # fmt: skip
    assert (
        client.post("/ui/empi/decide", data={"pair_id": "x", "decision": "maybe"}).status_code
        == 400
    )


def test_the_builders_count_is_the_apis_count(app, ui_workspace) -> None:
    definition = json.loads(example_path("t2d_hba1c_metformin").read_text("utf-8"))
    client = signed_in(app, ui_workspace, "researcher")
    from_page = client.post("/ui/cohorts/count.json", json=definition)
    from_api = TestClient(app).post("/api/v1/cohorts/count", json=definition, headers={
        "Authorization": f"Bearer {ui_workspace.tokens['researcher']}"})  # fmt: skip
    assert from_page.status_code == from_api.status_code == 200
    assert from_page.json() == from_api.json()
    bad = client.post("/ui/cohorts/count.json", json={"name": 3})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("request body")
    refused = signed_in(app, ui_workspace, "auditor").post(
        "/ui/cohorts/count.json", json=definition
    )
    assert refused.status_code == 403


@pytest.mark.slow
def test_dashboard_figures_equal_pandas_over_the_lake(app, ui_workspace) -> None:
    page = signed_in(app, ui_workspace, "steward").get("/ui/dashboard.json").json()
    root = ui_workspace.root
    records = lake_rows(root, "source_record")
    records = records[records.is_current]
    expected = []
    for table, row_id, date in DATED_TABLES:  # the clinical tables the chart covers
        rows = lake_rows(root, table)[[row_id, date]]
        mine = records[records.cdm_table == table]
        joined = rows.merge(mine, left_on=row_id, right_on="cdm_row_id")
        month = pd.to_datetime(joined[date]).dt.to_period("M").dt.start_time.dt.date
        expected.append(pd.DataFrame({"source_system": joined.source_system, "month": month}))
    both = pd.concat(expected).dropna()
    counts = both.groupby(["source_system", "month"]).size()
    shown = {(r["source_system"], r["month"]): r["records"] for r in page["records_by_source"]}
    assert shown == {(s, m.isoformat()): int(n) for (s, m), n in counts.items()}
    batches = lake_rows(root, "ingest_batch").sort_values("received_at", ascending=False)
    assert [b["received_at"] for b in page["batches"]] == [
        t.to_pydatetime().isoformat() for t in batches.received_at.head(len(page["batches"]))
    ]
    quarantine = lake_rows(root, "quarantine")
    open_ = quarantine[quarantine.resolved_at.isna()]
    assert sum(q["entries"] for q in page["quarantine"]) == len(open_)
    assert page["lake"]["persons"] == len(lake_rows(root, "person"))


def test_concept_search_and_saved_definitions_are_the_apis(app, ui_workspace) -> None:
    client = signed_in(app, ui_workspace, "researcher")
    bearer = {"Authorization": f"Bearer {ui_workspace.tokens['researcher']}"}
    api = TestClient(app)
    for query, domain in (("E11", "condition_occurrence"), ("metformin", "drug_exposure"),
                          ("二甲双胍", None)):  # fmt: skip
        params = {"q": query} | ({"domain": domain} if domain else {})
        page = client.get("/ui/concepts.json", params=params).json()["concepts"]
        expected = api.get("/api/v1/concepts", params=params | {"limit": 25}, headers=bearer)
        assert page == expected.json(), query
    concepts = lake_rows(ui_workspace.root, "concept")
    metformin = concepts[concepts.concept_code == "A10BA02"].concept_id.item()
    assert client.get("/ui/concepts.json?q=metformin&domain=drug_exposure").json()["concepts"][
        0]["concept_id"] == metformin  # fmt: skip
    assert client.get("/ui/concepts.json?q=").json()["concepts"] == []

    definition = json.loads(example_path("t2d_hba1c_metformin").read_text("utf-8"))
    saved = client.post("/ui/cohorts/definitions.json",
                        json={"name": "ui saved cohort", "definition": definition})  # fmt: skip
    assert saved.status_code == 200, saved.text
    again = client.post("/ui/cohorts/definitions.json",
                        json={"name": "ui saved cohort", "definition": definition})  # fmt: skip
    assert again.status_code == 400  # names are unique
    listed = client.get("/ui/cohorts.json").json()["saved"]
    assert [d["name"] for d in listed if d["id"] == saved.json()["id"]] == ["ui saved cohort"]
    loaded = client.get(f"/ui/cohorts/definitions/{saved.json()['id']}.json").json()
    from_api = api.get(f"/api/v1/cohorts/definitions/{saved.json()['id']}", headers=bearer)
    assert loaded == from_api.json()
    assert (
        loaded["definition"]["inclusion_rules"][1]["name"]
        == (definition["inclusion_rules"][1]["name"])
    )


def test_gwas_plots_keep_every_small_p_and_list_the_top_hits_in_order(ui_workspace) -> None:
    path = ui_workspace.root / "analyses" / "ldl.LDL.glm.parquet"
    plots = analyses.gwas_plots(path)
    table = pq.read_table(path).to_pandas()
    table = table[table.p.notna()]
    assert plots["variants"] == len(table)
    assert plots["lambda_gc"] == pytest.approx(genomic_inflation(table.p.to_numpy()))
    small = table[table.p < analyses.KEEP_BELOW_P]
    drawn = set(plots["manhattan"]["label"])
    assert set(small.id) <= drawn
    assert len(plots["manhattan"]["x"]) <= analyses.MAX_POINTS
    assert [h["id"] for h in plots["top"]] == list(
        table.sort_values("p").id.head(analyses.TOP_HITS)
    )
    # Chromosomes left to right: positions grow within and across chromosomes.
    order = np.argsort(plots["manhattan"]["x"])
    chrom = np.array(plots["manhattan"]["chrom_index"])[order]
    assert (np.diff(chrom) >= 0).all()
    assert plots["qq"]["observed"] == sorted(plots["qq"]["observed"], reverse=True)


def test_volcano_marks_the_genes_significant_after_adjustment(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 400
    pvalue = rng.uniform(size=n) ** 3
    # Benjamini-Hochberg without its monotone step: any adjusted P serves here.
    rank = np.argsort(np.argsort(pvalue))
    frame = pd.DataFrame({"gene": [f"G{i}" for i in range(n)], "baseMean": rng.uniform(1, 500, n),
                          "log2FoldChange": rng.normal(size=n), "lfcSE": rng.uniform(.1, .3, n),
                          "stat": rng.normal(size=n), "pvalue": pvalue,
                          "padj": np.minimum(pvalue * n / (rank + 1), 1)})  # fmt: skip
    frame.loc[3, ["pvalue", "padj"]] = np.nan
    path = tmp_path / "x.de.parquet"
    pq.write_table(pa.Table.from_pandas(frame), path)
    plots = analyses.de_plots(path)
    assert plots["genes"] == n
    assert plots["genes_tested"] == n - 1
    assert plots["significant"] == int((frame.padj < 0.05).sum())
    assert sum(plots["volcano"]["significant"]) == plots["significant"]
    assert [t["gene"] for t in plots["top"]] == list(
        frame.dropna().sort_values(["padj", "pvalue"]).gene.head(25)
    )


@pytest.mark.slow
def test_both_languages_are_complete_and_the_workspace_sets_the_default(
    hospital_lake, tmp_path: Path
) -> None:
    assert all(en.strip() and zh.strip() for en, zh in i18n.WORDS.values())
    used = set()
    for template in (UI / "templates").glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z_.]+)'\)", template.read_text("utf-8")))
    assert used <= set(i18n.WORDS), used - set(i18n.WORDS)
    root = hospital_lake.copy(tmp_path / "ws")
    settings = read_settings(root / "medlake.toml")
    settings.workspace.language = "zh"
    write_settings(root / "medlake.toml", settings)
    token = access.issue_token(root, access.login_name()).token
    client = TestClient(create_app(root), follow_redirects=False)
    assert "登录" in client.get("/ui/login").text
    client.post("/ui/login", data={"user": access.login_name(), "token": token})
    assert '<html lang="zh-CN">' in client.get("/ui/dashboard").text
    switched = client.get("/ui/lang/en?next=/ui/dashboard")
    assert switched.headers["location"] == "/ui/dashboard"
    client.cookies.set(session.LANGUAGE_COOKIE, "en")
    page = client.get("/ui/dashboard").text
    assert '<html lang="en">' in page
    assert "Dashboard" in page


def test_every_asset_comes_from_the_installed_package(app, ui_workspace) -> None:
    client = TestClient(app)
    assert client.get("/ui/static/plotly.min.js").content == plotly_js().read_bytes()
    assert client.get("/ui/static/app.css").status_code == 200
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"][
        "package-data"]["medlake.server.ui"]  # fmt: skip
    for path in list((UI / "templates").iterdir()) + list((UI / "static").iterdir()):
        relative = path.relative_to(UI).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative
        text = path.read_text("utf-8")
        # No CDN: every src/href is this server's own path.
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), relative


def test_an_unknown_result_or_person_is_a_clear_error_page(app, ui_workspace) -> None:
    client = signed_in(app, ui_workspace, "steward")
    missing = client.get("/ui/analyses/nothing")
    assert missing.status_code == 400
    assert "no analysis result" in missing.text
    problem = client.get("/ui/persons/1.json")
    assert problem.status_code == 400
    assert problem.headers["content-type"].startswith("application/problem+json")
    assert not may(Principal("x", Role.AUDITOR), NAVIGATION[1][2])


@pytest.mark.slow
def test_a_gwas_job_shows_to_its_projects_members_and_stewards_only(app, ui_workspace) -> None:
    root, admin = ui_workspace.root, ui_workspace.users["admin"]
    access.create_project(root, "ldl", "LDL genetics", as_user=admin)
    access.add_member(root, "ldl", "researcher1", as_user=admin)
    access.add_user(root, "outsider1", "researcher", as_user=admin)
    outsider = access.issue_token(root, "outsider1", as_user="outsider1").token
    member = {"Authorization": f"Bearer {ui_workspace.tokens['researcher']}"}
    api = TestClient(app)  # the module's application runs its job workers
    request = {"project_id": "ldl", "name": "ldl_job", "measurement": "22748-8", "n_pcs": 2}
    job = api.post("/api/v1/analyses/gwas", headers=member, json=request)
    assert job.status_code == 202, job.text
    job_id = job.json()["job_id"]
    deadline = time.monotonic() + 120
    while (state := api.get(f"/api/v1/jobs/{job_id}", headers=member).json())["status"] in (
        "queued", "running"):  # fmt: skip
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["status"] == "succeeded", state
    parquet = Path(state["result"]["files"]["parquet"])
    researcher = signed_in(app, ui_workspace, "researcher")
    listed = researcher.get("/ui/analyses.json").json()["results"]
    assert [(r["result_id"], r["project_id"]) for r in listed] == [(f"j{job_id}", "ldl")]
    shown = researcher.get(f"/ui/analyses/j{job_id}.json").json()
    assert shown["variants"] == int(pq.read_table(parquet).to_pandas().p.notna().sum())
    assert shown["summary"]["phenotype"] == state["result"]["phenotype"]
    steward = signed_in(app, ui_workspace, "steward").get("/ui/analyses.json").json()["results"]
    assert f"j{job_id}" in {r["result_id"] for r in steward}
    stranger = TestClient(app, follow_redirects=False)
    stranger.post("/ui/login", data={"user": "outsider1", "token": outsider})
    assert stranger.get("/ui/analyses.json").status_code == 403  # in no project
    assert stranger.get(f"/ui/analyses/j{job_id}.json").status_code == 403

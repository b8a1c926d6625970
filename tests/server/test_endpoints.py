"""The API's routes over the services, each checked against the service or the lake:
FHIR transaction Bundles, uploads, EMPI review, QC results, audit search, and GWAS, DE
and extraction as jobs with their results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats
from tests.server.conftest import PROJECT, Api, is_problem

from medlake.audit.query import EventFilter
from medlake.cohort import examples
from medlake.config import open_workspace
from medlake.service import audit as audit_service
from medlake.service import concept_search
from medlake.service import empi as empi_service
from medlake.service import quality as quality_service
from medlake.service.cohort import cohort_members, parse_definition
from medlake.service.de import T2D_DIAGNOSED
from medlake.service.workspace import open_lake

EXAMPLES = Path(examples.__file__).parent
DEFINITION = json.loads((EXAMPLES / "t2d_hba1c_metformin.json").read_text())
FEATURES_FILE = (
    Path(__file__).parents[2] / "src/medlake/service/extract_examples"
    / "t2d_hba1c_metformin.features.json"
)  # fmt: skip


def bundle(patient: str, *, bad: bool = True) -> dict:
    entries = [
        {"fullUrl": f"urn:uuid:{patient}", "request": {"method": "POST", "url": "Patient"},
         "resource": {"resourceType": "Patient", "id": patient, "gender": "female",
                      "birthDate": "1970-03-04",
                      "name": [{"family": "Test", "given": ["Api"]}]}},
        {"fullUrl": f"urn:uuid:{patient}-obs", "request": {"method": "POST", "url": "Observation"},
         "resource": {"resourceType": "Observation", "id": f"{patient}-obs", "status": "final",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                      "subject": {"reference": f"urn:uuid:{patient}"},
                      "effectiveDateTime": "2020-05-06T08:00:00Z",
                      "valueQuantity": {"value": 7.1, "unit": "%"}}},
    ]  # fmt: skip
    if bad:
        entries.append({"request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def source_patients(api: Api, system: str) -> dict[str, int]:
    with open_lake(open_workspace(api.root)) as engine:
        patients = engine.table("source_patient")
        rows = engine.execute(patients.filter(patients.source_system == system)).to_pylist()
    return {r["source_patient_id"]: r["person_id"] for r in rows}


def test_a_fhir_transaction_bundle_answers_one_response_per_entry(api: Api) -> None:
    response = api.ok(api.post("admin", "/fhir?source=apitest", json=bundle("api-p1")))
    assert response["resourceType"] == "Bundle"
    assert response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created", "201 Created", "422 Unprocessable Entity"]
    assert response["entry"][0]["response"]["location"] == "Patient/api-p1"
    outcome = response["entry"][2]["response"]["outcome"]
    assert "without a resource" in outcome["issue"][0]["diagnostics"]
    assert "api-p1" in source_patients(api, "apitest")
    again = api.ok(api.post("admin", "/fhir?source=apitest", json=bundle("api-p1")))
    assert [e["response"]["status"] for e in again["entry"]][:2] == ["200 OK", "200 OK"]
    is_problem(api.post("admin", "/fhir", json={"resourceType": "Patient"}), 422)
    is_problem(api.post("admin", "/fhir", json={"resourceType": "Bundle", "type": "x"}), 422)
    is_problem(api.post("researcher", "/fhir", json=bundle("api-p9")), 403)


def test_uploaded_files_are_ingested_by_a_job(api: Api) -> None:
    data = json.dumps(bundle("api-up1", bad=False)).encode()
    job = api.ok(api.post("admin", "/uploads", files=[("files", ("../up.json", data))],
                          data={"format": "fhir", "source_system": "apiupload"}), 202)  # fmt: skip
    assert job["kind"] == "ingest"
    done = api.wait("admin", job["job_id"])
    assert done["status"] == "succeeded", done
    (file,) = done["result"]["files"]
    assert file["status"] == "loaded"
    assert Path(file["path"]).name == "up.json"  # no way out of the job's folder
    assert "api-up1" in source_patients(api, "apiupload")
    is_problem(api.post("researcher", "/uploads", files=[("files", ("a.json", data))]), 403)


@pytest.mark.acting_as("steward")
def test_the_review_queue_and_a_decision_act_on_the_lake(api: Api) -> None:
    queue = api.ok(api.get("steward", "/empi/review?limit=5"))
    total, items = empi_service.review_queue(api.root, limit=5)
    assert queue == json.loads(json.dumps({"total": total, "items": [
        dataclasses.asdict(i) for i in items]}, default=str))  # fmt: skip
    is_problem(api.get("researcher", "/empi/review"), 403)
    is_problem(api.post("steward", "/empi/review/x/decision", json={"decision": "maybe"}), 422)
    if not items:
        pytest.fail("the test hospital should leave uncertain pairs to review")
    pair = items[0]
    decided = api.ok(api.post("steward", f"/empi/review/{pair.pair_id}/decision",
                              json={"decision": "match", "note": "same person"}))  # fmt: skip
    assert decided["decision"] == "match"
    with open_lake(open_workspace(api.root)) as engine:
        pairs = engine.table("empi_pair")
        row = engine.execute(pairs.filter(pairs.pair_id == pair.pair_id)).to_pylist()[0]
        sp = engine.table("source_patient")
        persons = set(engine.execute(sp.filter(
            ((sp.source_system == row["left_system"]) & (sp.source_patient_id == row["left_id"]))
            | ((sp.source_system == row["right_system"])
               & (sp.source_patient_id == row["right_id"]))).select("person_id")
        ).column(0).to_pylist())  # fmt: skip
    assert len(persons) == 1


@pytest.mark.acting_as("steward")
def test_qc_results_are_the_services(api: Api) -> None:
    summary = api.ok(api.get("steward", "/qc"))
    expected = quality_service.qc_summary(api.root)
    assert summary["counts"] == expected["counts"]
    assert summary["failed_total"] == expected["failed_total"]
    results = api.ok(api.get("steward", "/qc/results"))
    assert len(results) == len(quality_service.check_results(api.root))
    check = results[0]["check_id"]
    history = api.ok(api.get("steward", f"/qc/checks/{check}/history"))
    assert len(history) == len(quality_service.check_history(api.root, check)) >= 1
    is_problem(api.get("researcher", "/qc"), 403)


@pytest.mark.acting_as("auditor")
def test_audit_search_finds_what_the_service_finds(api: Api) -> None:
    api.get("researcher", "/qc")  # a refusal on the record
    found = api.ok(api.get("auditor", "/audit/events?actor=researcher1&outcome=denied"))
    expected = audit_service.show_events(api.root, EventFilter(actor="researcher1",
                                                               outcome="denied"))  # fmt: skip
    assert [e["event_id"] for e in found] == [e["event_id"] for e in expected]
    assert found
    assert {e["action"] for e in found} >= {"run_qc"}
    assert api.ok(api.get("auditor", "/audit/verify"))["ok"]
    is_problem(api.get("researcher", "/audit/events"), 403)


@pytest.mark.slow
def test_gwas_as_a_job_with_plot_data_from_its_result(api: Api) -> None:
    request = {"project_id": PROJECT, "name": "ldl", "measurement": "22748-8", "n_pcs": 2}
    is_problem(api.post("auditor", "/analyses/gwas", json=request), 403)
    job = api.ok(api.post("researcher", "/analyses/gwas", json=request), 202)
    done = api.wait("researcher", job["job_id"], timeout=300)
    assert done["status"] == "succeeded", done
    assert done["progress"]["done"] == done["progress"]["total"] > 0
    plots = api.ok(api.get("researcher", f"/analyses/{job['job_id']}/plots?top=10"))
    parquet = Path(done["result"]["files"]["parquet"])
    table = pq.read_table(parquet).to_pandas()
    p = table["p"].dropna().to_numpy()
    assert plots["variants"] == p.size
    chi2 = stats.chi2.isf(p, 1)
    assert plots["lambda_gc"] == pytest.approx(np.median(chi2) / stats.chi2.ppf(0.5, 1), rel=1e-6)
    assert [h["id"] for h in plots["top"]] == table.sort_values("p")["id"].head(10).tolist()
    assert len(plots["manhattan"]["x"]) == len(plots["manhattan"]["y"]) <= p.size
    assert max(plots["manhattan"]["y"]) == pytest.approx(-np.log10(p.min()), abs=1e-3)
    files = api.client.get(f"/api/v1/jobs/{job['job_id']}/files/parquet",
                           headers=api.headers("researcher"))  # fmt: skip
    assert files.status_code == 200
    assert files.content == parquet.read_bytes()


@pytest.mark.slow
@pytest.mark.acting_as("steward")
def test_de_and_extraction_as_jobs(api: Api) -> None:
    job = api.ok(api.post("researcher", "/analyses/de",
                          json={"project_id": PROJECT, "case_cohort": T2D_DIAGNOSED}),
                 202)  # fmt: skip
    spec = json.loads(FEATURES_FILE.read_text())
    extract = api.ok(api.post("researcher", "/cohorts/extract",
                              json={"project_id": PROJECT, "definition": DEFINITION,
                                    "features": spec}), 202)  # fmt: skip
    is_problem(api.post("researcher", "/cohorts/extract",
                        json={"project_id": "other", "definition": DEFINITION,
                              "features": spec}), 403)  # fmt: skip
    done = api.wait("researcher", job["job_id"], timeout=300)
    assert done["status"] == "succeeded", done
    plots = api.ok(api.get("researcher", f"/analyses/{job['job_id']}/plots"))
    table = pq.read_table(done["result"]["files"]["parquet"]).to_pandas()
    assert plots["genes"] == len(table)
    assert plots["significant"] == int((table["padj"] < 0.05).sum())
    top = table.sort_values(["padj", "pvalue"]).head(len(plots["top"]))
    assert [g["log2FoldChange"] for g in plots["top"]] == pytest.approx(
        top["log2FoldChange"].tolist())  # fmt: skip
    extracted = api.wait("researcher", extract["job_id"], timeout=300)
    assert extracted["status"] == "succeeded", extracted
    members = cohort_members(api.root, parse_definition(DEFINITION))
    assert extracted["result"]["members"] == members.num_rows
    assert Path(extracted["result"]["out_dir"]).is_relative_to(api.root / "jobs")


@pytest.mark.acting_as("steward")
def test_saved_cohort_definitions_round_trip_and_count_as_the_service(api: Api) -> None:
    saved = api.ok(api.post("researcher", "/cohorts/definitions",
                            json={"name": "api t2d", "definition": DEFINITION}), 201)  # fmt: skip
    definition_id = saved["id"]
    assert saved["definition"] == parse_definition(DEFINITION).model_copy(
        update={"name": "api t2d"}).model_dump(mode="json")  # fmt: skip
    listed = api.ok(api.get("researcher", "/cohorts/definitions"))
    assert [d["id"] for d in listed if d["name"] == "api t2d"] == [definition_id]
    counted = api.ok(api.post("researcher", f"/cohorts/definitions/{definition_id}/count"))
    direct = api.ok(api.post("researcher", "/cohorts/count", json=DEFINITION))
    assert (counted["initial"], counted["final"]) == (direct["initial"], direct["final"])
    changed = dict(DEFINITION, inclusion_rules=[])
    url = f"/api/v1/cohorts/definitions/{definition_id}"
    body = {"name": "api t2d all", "definition": changed}
    updated = api.ok(api.client.put(url, headers=api.headers("researcher"), json=body))
    assert updated["name"] == "api t2d all"
    assert updated["definition"]["inclusion_rules"] == []
    is_problem(api.post("researcher", "/cohorts/definitions",
                        json={"name": "api t2d all", "definition": DEFINITION}), 400)  # fmt: skip
    gone = api.client.delete(f"/api/v1/cohorts/definitions/{definition_id}",
                             headers=api.headers("researcher"))  # fmt: skip
    assert gone.status_code == 204
    is_problem(api.get("researcher", f"/cohorts/definitions/{definition_id}"), 404)
    is_problem(api.get("auditor", "/cohorts/definitions"), 403)
    found = api.ok(api.get("researcher", "/concepts?q=metformin&limit=5"))
    expected = concept_search.search_concepts(api.root, "metformin", None, 5)
    assert [c["concept_id"] for c in found] == [c.concept_id for c in expected]
    assert found

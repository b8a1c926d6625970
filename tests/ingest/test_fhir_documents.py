"""FHIR DocumentReference -> OMOP ``note``: inline text, charsets, refusals with reasons."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import orjson

from medlake.ingest.fhir import FhirReader
from medlake.ingest.staging import SourceContext

TEXT = "出院小结\n患者王先生，2024年3月5日入院。"


def document(doc_id: str, **overrides: object) -> dict:
    resource = {
        "resourceType": "DocumentReference", "id": doc_id, "status": "current",
        "subject": {"reference": "Patient/p1"}, "date": "2024-03-09T10:00:00+08:00",
        "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}],
                 "text": "出院小结"},
        "context": {"encounter": [{"reference": "Encounter/e1"}]},
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(TEXT.encode()).decode()}}],
    }  # fmt: skip
    resource.update(overrides)
    return resource


def read(tmp_path: Path, resources: list[dict]) -> tuple[list[dict], list]:
    path = tmp_path / "DocumentReference.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    context = SourceContext("emr", "batch-1", path, path.name, dt.datetime(2026, 1, 1))
    chunks = list(FhirReader(1000).read(context))
    rows = [row for c in chunks for t in c.tables.get("note", []) for row in t.to_pylist()]
    return rows, [q for c in chunks for q in c.quarantine]


def test_document_text_title_type_visit_and_date_are_staged(tmp_path: Path) -> None:
    rows, quarantined = read(tmp_path, [document("d1")])
    assert quarantined == []
    [row] = rows
    assert row["note_text"] == TEXT
    assert row["note_title"] == "出院小结"
    assert row["note_source_value"] == "18842-5"
    assert row["_source_visit_id"] == "e1"
    assert row["_source_patient_id"] == "p1"
    assert row["note_date"] == dt.date(2024, 3, 9)
    assert row["_source_record_id"] == "DocumentReference/d1"


def test_text_in_another_charset_is_decoded(tmp_path: Path) -> None:
    gb = {"contentType": "text/plain; charset=gb18030",
          "data": base64.b64encode(TEXT.encode("gb18030")).decode()}  # fmt: skip
    rows, _ = read(tmp_path, [document("d2", content=[{"attachment": gb}])])
    assert rows[0]["note_text"] == TEXT


def test_refusals_name_the_field_and_keep_the_good_documents(tmp_path: Path) -> None:
    url_only = document("d3", content=[{"attachment": {"url": "https://example.org/x"}}])
    bad_base64 = document("d4", content=[{"attachment": {"data": "%%%"}}])
    rows, quarantined = read(tmp_path, [url_only, document("ok"), bad_base64])
    assert [r["_source_record_id"] for r in rows] == ["DocumentReference/ok"]
    reasons = {q.location: (q.field, q.reason) for q in quarantined}
    assert reasons["DocumentReference.ndjson:1"][0].endswith("attachment.data")
    assert "never a url" in reasons["DocumentReference.ndjson:1"][1]
    assert "cannot be decoded" in reasons["DocumentReference.ndjson:3"][1]


def test_an_entered_in_error_document_is_staged_as_a_retraction(tmp_path: Path) -> None:
    rows, quarantined = read(tmp_path, [document("ok"), document("d5", status="entered-in-error")])
    assert quarantined == []
    assert [(r["_source_record_id"], r["_retracted"]) for r in rows] == [
        ("DocumentReference/ok", False), ("DocumentReference/d5", True)]  # fmt: skip


def test_the_attachment_language_is_the_note_language(tmp_path: Path) -> None:
    def with_language(rid: str, language: str | None) -> dict:
        resource = document(rid)
        if language is not None:
            resource["content"][0]["attachment"]["language"] = language
        return resource

    rows, _ = read(tmp_path, [with_language("a", "zh"), with_language("b", "en-US"),
                              with_language("c", "fr"), with_language("d", None)])  # fmt: skip
    # OMOP's Chinese language and English language concepts; others unknown (0).
    assert [r["language_concept_id"] for r in rows] == [4182948, 4180186, 0, 0]

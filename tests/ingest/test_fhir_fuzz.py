"""Fuzzed FHIR input: the reader never crashes and never loses the good resources."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medlake.ingest.fhir import FhirReader
from medlake.ingest.staging import SourceContext

SUBJECT = {"reference": "Patient/p1"}
GOOD: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"text": "王芳"}],
        "gender": "female",
        "birthDate": "1980-02-03",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "110105198002031234"}],
    },
    {
        "resourceType": "Encounter",
        "id": "e1",
        "class": {"code": "AMB"},
        "subject": SUBJECT,
        "period": {"start": "2024-01-01T08:00:00+08:00"},
    },
    {
        "resourceType": "Observation",
        "id": "o1",
        "category": [{"coding": [{"code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": SUBJECT,
        "effectiveDateTime": "2024-01-01T08:00:00+08:00",
        "valueQuantity": {"value": 5.5, "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "referenceRange": [{"low": {"value": 3.9}, "high": {"value": 6.1}}],
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "subject": SUBJECT,
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA02"}]
        },
        "authoredOn": "2024-01-01",
        "dosageInstruction": [{"route": {"text": "口服"}}],
        "dispenseRequest": {"expectedSupplyDuration": {"value": 7, "code": "d"}},
    },
]
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson can write
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path inside a JSON value."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A good resource with one element replaced or removed, cut bytes, or random JSON."""
    resource = orjson.loads(orjson.dumps(draw(st.sampled_from(GOOD))))
    resource["id"] = "bad"  # never counted as a good line
    kind = draw(st.sampled_from(["replace", "remove", "cut", "json", "bytes"]))
    if kind in ("replace", "remove"):
        path = draw(st.sampled_from([p for p in _paths(resource) if p != ("id",)]))
        parent = resource
        for key in path[:-1]:
            parent = parent[key]
        if kind == "remove":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
        return orjson.dumps(resource)
    if kind == "cut":
        line = orjson.dumps(resource)
        return line[: draw(st.integers(0, len(line) - 1))]
    if kind == "json":
        return orjson.dumps(draw(json_values))
    return draw(st.binary(max_size=40)).replace(b"\n", b" ")


def _staged_ids(chunks: list) -> set[str]:
    ids = set()
    for chunk in chunks:
        for table in chunk.patients:
            ids.update(table.column("_source_patient_id").to_pylist())
        for tables in chunk.tables.values():
            for table in tables:
                ids.update(
                    i.split("#")[0].rsplit("/", 1)[-1]
                    for i in table.column("_source_record_id").to_pylist()
                )
    return ids


@SETTINGS
@given(bad=st.lists(mutated(), min_size=1, max_size=5), chunk_size=st.integers(1, 6))
def test_mutated_lines_never_crash_or_lose_good_ones(
    tmp_path: Path, bad: list[bytes], chunk_size: int
) -> None:
    lines = [orjson.dumps(GOOD[0]), *bad, *(orjson.dumps(r) for r in GOOD[1:])]
    path = tmp_path / "fuzz.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    context = SourceContext("emr", "b", path, "fuzz.ndjson", dt.datetime(2026, 1, 1))
    chunks = list(FhirReader(chunk_size).read(context))
    assert _staged_ids(chunks) >= {"p1", "e1", "o1", "m1"}
    records = sum(c.records_read for c in chunks)
    quarantined = sum(len(c.quarantine) for c in chunks)
    skipped = sum(sum(c.skipped.values()) for c in chunks)
    assert records == sum(1 for line in lines if line.strip())
    assert quarantined + skipped <= records - 4
    assert all(q.location.startswith("fuzz.ndjson:") for c in chunks for q in c.quarantine)

"""The Observation mapper's inlined usual case gives exactly what the plain mapping gives.

``fhir_resources.observation`` inlines the common shape of each step (a known first
coding, a cached effectiveDateTime, one category coding, a Quantity value, a component
without a reference range) for speed, and hands everything else to the general helpers.
The reference below is the plain mapping (every step through the helpers, as before the
inlining). Mutations of a lab result and a blood-pressure panel, as a bulk export writes
them, must give the same rows, or the same rejection, field and message, from both.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.ingest.test_fhir_fuzz import _paths

from medlake.ingest import fhir_resources as fr
from medlake.ingest import fhir_values as v
from medlake.ingest.fhir_resources import Record, StagedRows

LAB = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                              "observation-category", "code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "14647-2"}], "text": "总胆固醇"},
    "subject": {"reference": "Patient/p1"},
    "encounter": {"reference": "Encounter/e1"},
    "effectiveDateTime": "2017-05-03T23:00:00+08:00",
    "issued": "2017-05-03T23:59:00+08:00",
    "valueQuantity": {"value": 4.35, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                      "code": "mmol/L"},
    "referenceRange": [{"text": "2.8-5.2"}],
}  # fmt: skip
PANEL = {
    "resourceType": "Observation",
    "id": "o2",
    "category": [{"coding": [{"code": "vital-signs"}]}],
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2020-07-13T08:59:00+08:00",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 109, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": 71, "unit": "mm[Hg]"}, "referenceRange": [{"text": "<80"}]},
    ],
}  # fmt: skip
ADDED = ["valueString", "valueCodeableConcept", "component", "effectivePeriod", "valueBoolean",
         "category"]  # fmt: skip
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False)
    | st.sampled_from(["laboratory", "vital-signs", "survey", "", "http://loinc.org",
                       "2020-01-02", "2020-01-02T03:04:05Z", "2020-02-30T00:00:00", "1-2",
                       "Patient/p2", "Encounter/e2", "mmol/L"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["code", "system", "coding", "value", "text", "reference", "start",
                         "low", "high", "unit", "valueQuantity", "valueString"]), inner,
        max_size=3),
    max_leaves=6,
)  # fmt: skip


@st.composite
def observations(draw: st.DrawFn) -> dict[str, Any]:
    """LAB or PANEL with up to three elements replaced, removed or added."""
    resource = orjson.loads(orjson.dumps(draw(st.sampled_from([LAB, PANEL]))))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["replace", "remove", "add"]))
        paths = [p for p in _paths(resource) if p[0] not in ("resourceType", "id")]
        if kind == "add":
            key = draw(st.sampled_from(ADDED))
            resource[key] = draw(values)
            continue
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = resource
        for key in path[:-1]:
            parent = parent[key]
        if kind == "remove":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(values)
    return resource


def reference(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    """The plain mapping: every step through the general helpers."""
    person = fr._plain_id(r.get("subject"), "Patient/") or v.local_id(
        r.get("subject"), "Patient", "Observation.subject", rec.urls
    )
    code, vocabulary = v.code_of(r.get("code"), "Observation.code")
    when, when_at = v.first_when(
        r, "Observation", (("effectiveDateTime", None), ("effectivePeriod", "start"),
                           ("effectiveInstant", None), ("issued", None)),
        "Observation.effective[x]")  # fmt: skip
    visit = None
    if r.get("encounter") is not None:
        visit = fr._plain_id(r["encounter"], "Encounter/") or v.local_id(
            r["encounter"], "Encounter", "Observation.encounter", rec.urls
        )
    kind, measured = fr.EHR, None
    for category in r.get("category") or ():
        for coding in category.get("coding") or ():
            code_ = coding.get("code")
            if code_ in fr.MEASUREMENT_CATEGORIES:
                kind, measured = fr.LAB if code_ == "laboratory" else kind, True
            elif measured is None:
                measured = False
    rid = f"Observation/{rec.id}"
    components = r.get("component") or ()
    rows = []
    has_value = any(k.startswith("value") for k in r)
    if measured or (measured is None and "valueQuantity" in r):
        low, high = v.reference_range(r.get("referenceRange"), "Observation.referenceRange")
        if not components or has_value:
            amount, unit, unit_voc, operator, value, value_voc, string = fr._value(r, "Observation")
            rows.append((rid, rec.version, rec.digest, person, visit, when, when_at, kind,
                         operator, amount, low, high, code, vocabulary, unit, unit_voc,
                         value if string is None else string, value_voc))  # fmt: skip
        for i, part in enumerate(components):
            field = f"Observation.component[{i}]"
            part_code, part_voc = v.code_of(part.get("code"), field + ".code")
            amount, unit, unit_voc, operator, value, value_voc, string = fr._value(part, field)
            low, high = v.reference_range(part.get("referenceRange"), field + ".referenceRange")
            rows.append((f"{rid}#component[{i}]", rec.version, rec.digest, person, visit, when,
                         when_at, kind, operator, amount, low, high, part_code, part_voc, unit,
                         unit_voc, value if string is None else string, value_voc))  # fmt: skip
        out.rows["measurement"].extend(rows)
        return
    if not components or has_value:
        amount, unit, unit_voc, _, value, value_voc, string = fr._value(r, "Observation")
        rows.append((rid, rec.version, rec.digest, person, visit, when, when_at, kind, amount,
                     string, code, vocabulary, unit, unit_voc, value, value_voc, None))  # fmt: skip
    for i, part in enumerate(components):
        field = f"Observation.component[{i}]"
        part_code, part_voc = v.code_of(part.get("code"), field + ".code")
        amount, unit, unit_voc, _, value, value_voc, string = fr._value(part, field)
        rows.append((f"{rid}#component[{i}]", rec.version, rec.digest, person, visit, when,
                     when_at, kind, amount, string, part_code, part_voc, unit, unit_voc, value,
                     value_voc, None))  # fmt: skip
    out.rows["observation"].extend(rows)


def _outcome(mapper: Any, resource: dict[str, Any]) -> object:
    out = StagedRows()
    try:
        mapper(resource, Record(resource["id"], 1, "digest", {}), out)
    except v.Reject as e:
        return ("reject", e.reason, e.field)
    except Exception as e:  # the reader quarantines these with the message
        return ("error", type(e).__name__, str(e))
    return {table: rows for table, rows in out.rows.items() if rows}


@SETTINGS
@given(resource=observations(), warm=st.booleans())
def test_inlined_observation_equals_plain_mapping(resource: dict[str, Any], warm: bool) -> None:
    if warm:  # the inlined path reads the dateTime and reference caches the helpers fill
        _outcome(fr.observation, resource)
    else:
        v._WHEN_CACHE.clear()
        fr._PLAIN_IDS.clear()
    assert _outcome(fr.observation, resource) == _outcome(reference, resource)


def test_the_two_shapes_map() -> None:
    """The examples themselves give rows (the mutations start from a good resource)."""
    assert _outcome(fr.observation, LAB) == _outcome(reference, LAB) != {}
    panel = _outcome(fr.observation, PANEL)
    assert isinstance(panel, dict)
    assert len(panel["measurement"]) == 2

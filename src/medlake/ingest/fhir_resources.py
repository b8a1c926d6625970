"""FHIR R4 resources mapped to staged OMOP rows, one function per resource type.

Each mapper reads one resource (the dict ``orjson`` gave) and appends whole rows, as
tuples in the column order of :data:`COLUMNS`, to a :class:`StagedRows`; the reader
turns the tuples into Arrow tables once per chunk. A mapper builds every row of its
resource before appending any, so a :class:`~medlake.ingest.fhir_values.Reject` (or any
surprise in a malformed resource) leaves nothing half-staged.

What maps where (type concepts: 32817 EHR, 32856 Lab for laboratory results):

========================  ====================  ======================================
resource                  table                 notes
========================  ====================  ======================================
Patient                   patients              ``_source_patient_id`` = ``Patient.id``
Encounter                 visit_occurrence      class AMB/IMP/EMER -> 9202/9201/9203
Condition                 condition_occurrence  onset, else recordedDate
MedicationRequest         drug_exposure         authoredOn; end = start + supply - 1
MedicationStatement       drug_exposure         effective[x]
Immunization              drug_exposure         vaccineCode (CVX), lotNumber
Observation               measurement           categories laboratory, vital-signs (or
                                                no category and a valueQuantity); one
                                                row per component (blood pressure)
Observation (other)       observation
Procedure                 procedure_occurrence  ICD-9-CM codes as ICD9Proc
Specimen                  specimen              HL7 0487 type -> medlake specimen code
DiagnosticReport          observation           the report as an event; its numbers
                                                are in the Observations it references
AllergyIntolerance        observation           the substance code; criticality as
                                                qualifier
DocumentReference         note                  inline attachment text; type code ->
                                                note class; context.encounter -> visit
========================  ====================  ======================================

Record ids: a visit's ``_source_record_id`` is the Encounter id (what other resources'
``encounter`` references give as ``_source_visit_id``); other rows use ``Type/id``, so
types that share a table never collide, with ``#component[i]`` for component rows.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

from medlake.ingest import fhir_values as v
from medlake.ingest.fhir_values import CODE_SYSTEMS, Reject
from medlake.ingest.staging import (
    RECORD_HASH,
    SOURCE_PATIENT_ID,
    SOURCE_RECORD_ID,
    SOURCE_VERSION,
    SOURCE_VISIT_ID,
    PatientMerge,
)

_cached_when = v.cached_when

EHR = 32817
LAB = 32856
GENDERS: dict[str, int] = {"male": 8507, "female": 8532, "other": 8551, "unknown": 8551}
VISIT_CLASSES: dict[str, int] = {"AMB": 9202, "IMP": 9201, "ACUTE": 9201, "NONAC": 9201,
                                 "EMER": 9203}  # fmt: skip
#: OMOP's "UTF-8" encoding concept: note text is stored as Unicode whatever it arrived in.
UTF8_ENCODING = 32678
#: Note languages (BCP 47 primary tag of the attachment's or resource's ``language``) to
#: OMOP's language concepts; any other language is 0.
LANGUAGES: dict[str, int] = {"zh": 4182948, "en": 4180186}
MEASUREMENT_CATEGORIES = frozenset({"laboratory", "vital-signs"})
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
_HEAD = (SOURCE_RECORD_ID, SOURCE_VERSION, RECORD_HASH, SOURCE_PATIENT_ID)
_EVENT = (*_HEAD, SOURCE_VISIT_ID)

#: Staged columns per table, in the order of the row tuples the mappers append.
COLUMNS: dict[str, tuple[str, ...]] = {
    "patient": (SOURCE_PATIENT_ID, SOURCE_VERSION, RECORD_HASH, "name_hanzi", "name_pinyin",
                "family_name", "given_name", "resident_id", "birth_date", "sex",
                "gender_concept_id", "phone", "address", "postcode", "email", "death_date",
                "mrn"),
    "visit_occurrence": (*_HEAD, "visit_concept_id", "visit_start_date",
                         "visit_start_datetime", "visit_end_date", "visit_end_datetime",
                         "visit_type_concept_id", "visit_source_value"),
    "condition_occurrence": (*_EVENT, "condition_start_date", "condition_start_datetime",
                             "condition_end_date", "condition_end_datetime",
                             "condition_type_concept_id", "condition_source_value",
                             "_condition_vocabulary"),
    "drug_exposure": (*_EVENT, "drug_exposure_start_date", "drug_exposure_start_datetime",
                      "drug_exposure_end_date", "drug_exposure_end_datetime",
                      "drug_type_concept_id", "refills", "quantity", "days_supply", "sig",
                      "lot_number", "drug_source_value", "_drug_vocabulary",
                      "route_source_value", "_route_vocabulary", "dose_unit_source_value"),
    "procedure_occurrence": (*_EVENT, "procedure_date", "procedure_datetime",
                             "procedure_end_date", "procedure_end_datetime",
                             "procedure_type_concept_id", "procedure_source_value",
                             "_procedure_vocabulary"),
    "measurement": (*_EVENT, "measurement_date", "measurement_datetime",
                    "measurement_type_concept_id", "operator_concept_id", "value_as_number",
                    "range_low", "range_high", "measurement_source_value",
                    "_measurement_vocabulary", "unit_source_value", "_unit_vocabulary",
                    "value_source_value", "_value_vocabulary"),
    "observation": (*_EVENT, "observation_date", "observation_datetime",
                    "observation_type_concept_id", "value_as_number", "value_as_string",
                    "observation_source_value", "_observation_vocabulary",
                    "unit_source_value", "_unit_vocabulary", "value_source_value",
                    "_value_vocabulary", "qualifier_source_value"),
    "note": (*_EVENT, "note_date", "note_datetime", "note_title", "note_text",
             "note_source_value", "_note_vocabulary", "encoding_concept_id",
             "language_concept_id"),
    "specimen": (*_HEAD, "specimen_type_concept_id", "specimen_date", "specimen_datetime",
                 "quantity", "specimen_source_id", "specimen_source_value",
                 "_specimen_vocabulary", "unit_source_value", "_unit_vocabulary",
                 "anatomic_site_source_value", "_anatomic_site_vocabulary"),
}  # fmt: skip


class StagedRows:
    """The rows of one chunk: tuples per table, patient rows and merges."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[object, ...]]] = {table: [] for table in COLUMNS}
        self.merges: list[PatientMerge] = []
        # Positions in ``rows`` of rows from entered-in-error resources, by table.
        self.retracted: dict[str, list[int]] = {}


class Record:
    """What every row of one resource carries: ids, version, hash, Bundle full URLs."""

    __slots__ = ("digest", "id", "urls", "version")

    def __init__(self, rid: str, version: int, digest: str, urls: dict[str, str]) -> None:
        self.id = rid
        self.version = version
        self.digest = digest
        self.urls = urls


def _patient_of(r: dict[str, Any], rtype: str, rec: Record, element: str = "subject") -> str:
    reference = r.get(element)
    return _plain_id(reference, "Patient/") or v.local_id(
        reference, "Patient", f"{rtype}.{element}", rec.urls
    )


#: ``"Patient/<id>"`` and ``"Encounter/<id>"`` references -> ``<id>``, as _plain_id
#: reads them: a resource's subject and encounter recur across a patient's resources.
_PLAIN_IDS: dict[str, str] = {}
_PLAIN_IDS_SIZE = 200_000


def _plain_id(reference: object, prefix: str) -> str | None:
    """The id of the common literal "<Type>/<id>" (as local_id reads it), else None: the
    rest, and every error, go through local_id. No field name is built unless needed."""
    if type(reference) is dict:
        ref = reference.get("reference")
        if type(ref) is not str:
            return None
        rid = _PLAIN_IDS.get(ref)  # seen before
        if rid is not None and ref[0] == prefix[0]:
            return rid
        if ref.startswith(prefix):
            rid = ref[len(prefix) :]
            if rid and "/" not in rid:
                if len(_PLAIN_IDS) >= _PLAIN_IDS_SIZE:
                    _PLAIN_IDS.clear()
                _PLAIN_IDS[ref] = rid
                return rid
    return None


def _visit_of(r: dict[str, Any], rtype: str, rec: Record) -> str | None:
    reference = r.get("encounter")
    if reference is None:
        return None
    return _plain_id(reference, "Encounter/") or v.local_id(
        reference, "Encounter", f"{rtype}.encounter", rec.urls
    )


def _head(rtype: str, rec: Record, patient: str, visit: str | None) -> tuple[object, ...]:
    return (f"{rtype}/{rec.id}", rec.version, rec.digest, patient, visit)


def patient(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    """Identity row (names, resident ID, contacts, birth, gender, death) and links."""
    hanzi = pinyin = family = given = None
    for name in r.get("name") or ():
        full = v.text(name.get("text"))
        fam = v.text(name.get("family"))
        givens = name.get("given")
        givens = [givens] if type(givens) is str else givens or ()
        giv = " ".join(g for g in givens if type(g) is str) or None
        if full is None and (fam or giv):
            cjk = v.has_cjk((fam or "") + (giv or ""))
            full = (fam or "") + ("" if cjk else " ") + (giv or "") if fam and giv else fam or giv
        if full is None:
            continue
        if family is None and given is None:
            family, given = fam, giv
        if v.has_cjk(full):
            hanzi = hanzi or full
        else:
            pinyin = pinyin or full
    resident = mrn = None
    for identifier in r.get("identifier") or ():
        codes = [c.get("code") for c in (identifier.get("type") or {}).get("coding") or ()]
        if resident is None and (identifier.get("system") == RESIDENT_ID_SYSTEM or "NI" in codes):
            resident = v.text(identifier.get("value"))
        elif mrn is None and "MR" in codes:  # HL7 v2-0203 MR: medical record number
            mrn = v.text(identifier.get("value"))
    phone = email = None
    for contact in r.get("telecom") or ():
        system = contact.get("system")
        if system == "phone" and phone is None:
            phone = v.text(contact.get("value"))
        elif system == "email" and email is None:
            email = v.text(contact.get("value"))
    address = postcode = None
    addresses = r.get("address") or ()
    home = next((a for a in addresses if a.get("use") == "home"), None)
    home = home or next(iter(addresses), None)
    if home is not None:
        lines = home.get("line") or ()
        parts = (home.get("state"), home.get("city"), home.get("district"), *lines)
        address = v.text(home.get("text")) or "".join(p for p in parts if type(p) is str) or None
        postcode = v.text(home.get("postalCode"))
    birth = v.when(r["birthDate"], "Patient.birthDate")[0] if "birthDate" in r else None
    sex = v.text(r.get("gender"))
    gender = GENDERS.get(sex) if sex is not None else None
    if sex is not None and gender is None:
        raise Reject(f"unknown gender {sex[:20]!r}", "Patient.gender")
    death = None
    if "deceasedDateTime" in r:
        death = v.when(r["deceasedDateTime"], "Patient.deceasedDateTime")[0]
    merges = []
    for link in r.get("link") or ():
        other = v.local_id(link.get("other"), "Patient", "Patient.link.other", rec.urls)
        kind = link.get("type")
        if kind == "replaced-by":
            merges.append(PatientMerge(other, rec.id, rec.version))
        elif kind == "replaces":
            merges.append(PatientMerge(rec.id, other, rec.version))
    out.rows["patient"].append((rec.id, rec.version, rec.digest, hanzi, pinyin, family, given,
                                resident, birth, sex, gender, phone, address, postcode, email,
                                death, mrn))  # fmt: skip
    out.merges.extend(merges)


def encounter(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    """Visit; an Encounter without an end ends on its start day."""
    person = _patient_of(r, "Encounter", rec)
    period = r.get("period")
    if type(period) is not dict or "start" not in period:
        raise Reject("missing required field", "Encounter.period.start")
    # (a parsed dateTime is looked up here: no call to v.when, which would look it up too)
    value = period["start"]
    start, start_at = (type(value) is str and _cached_when(value)) or v.when(
        value, "Encounter.period.start"
    )
    end, end_at = start, None
    value = period.get("end")
    if value is not None:
        end, end_at = (type(value) is str and _cached_when(value)) or v.when(
            value, "Encounter.period.end"
        )
    klass = r.get("class")
    code = v.text(klass.get("code")) if type(klass) is dict else None
    concept = VISIT_CLASSES.get(code, 0) if code is not None else 0
    out.rows["visit_occurrence"].append((rec.id, rec.version, rec.digest, person, concept,
                                         start, start_at, end, end_at, EHR, code))  # fmt: skip


def condition(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    person = _patient_of(r, "Condition", rec)
    code, vocabulary = v.code_of(r.get("code"), "Condition.code")
    value = r.get("onsetDateTime")  # (first_when's first element, already parsed)
    start, start_at = (type(value) is str and _cached_when(value)) or v.first_when(
        r, "Condition", (("onsetDateTime", None), ("onsetPeriod", "start"), ("recordedDate", None)),
        "Condition.onset[x]")  # fmt: skip
    end = end_at = None
    if r.get("abatementDateTime") is not None:
        end, end_at = v.when(r["abatementDateTime"], "Condition.abatementDateTime")
    visit = _visit_of(r, "Condition", rec)
    out.rows["condition_occurrence"].append((f"Condition/{rec.id}", rec.version, rec.digest,
                                             person, visit, start, start_at, end, end_at, EHR,
                                             code, vocabulary))  # fmt: skip


def _dosage(dosage: object) -> tuple[str | None, str | None, str | None, str | None]:
    """``(sig, route code, route vocabulary, dose unit)`` of a Dosage."""
    if type(dosage) is not dict:
        return None, None, None, None
    route, route_vocabulary = v.optional_code(dosage.get("route"))
    unit = None
    for dose in dosage.get("doseAndRate") or ():
        unit = v.quantity(dose.get("doseQuantity"), "Dosage.doseAndRate.doseQuantity")[1]
        break
    return v.text(dosage.get("text")), route, route_vocabulary, unit


#: ``timedelta(days=supply - 1)`` by days supply (whole days below 100,000: few values).
_SPANS: dict[int, dt.timedelta] = {}


def _drug_row(rtype: str, rec: Record, person: str, visit: str | None, start: dt.date,
              start_at: str | None, end: dt.date | None, end_at: str | None,
              supply: int | None, refills: int | None, amount: float | None,
              dosage: object, lot: str | None, code: str, vocabulary: str,
              out: StagedRows) -> None:  # fmt: skip
    if end is None:
        if supply:
            span = _SPANS.get(supply)
            if span is None:
                span = _SPANS[supply] = dt.timedelta(days=supply - 1)
            end = start + span
        else:
            end = start
    sig, route, route_vocabulary, unit = _dosage(dosage)
    out.rows["drug_exposure"].append((f"{rtype}/{rec.id}", rec.version, rec.digest, person,
                                      visit, start, start_at, end, end_at, EHR, refills, amount,
                                      supply, sig, lot, code, vocabulary, route,
                                      route_vocabulary, unit))  # fmt: skip


_DISPENSE = "MedicationRequest.dispenseRequest"


def medication_request(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    person = _patient_of(r, "MedicationRequest", rec)
    if "medicationCodeableConcept" not in r:
        raise Reject("medication not given as a code (medicationReference is not resolved)",
                     "MedicationRequest.medication[x]")  # fmt: skip
    code, vocabulary = v.code_of(r["medicationCodeableConcept"],
                                 "MedicationRequest.medicationCodeableConcept")  # fmt: skip
    value = r.get("authoredOn")  # (first_when's first element, already parsed)
    start, start_at = (type(value) is str and _cached_when(value)) or v.first_when(
        r, "MedicationRequest", (("authoredOn", None),), "MedicationRequest.authoredOn"
    )
    supply = refills = amount = None
    dispense = r.get("dispenseRequest")
    if type(dispense) is dict:
        supply = v.days(dispense.get("expectedSupplyDuration"),
                        "MedicationRequest.dispenseRequest.expectedSupplyDuration")  # fmt: skip
        refills = dispense.get("numberOfRepeatsAllowed")
        if refills is not None:
            refills = v.integer(refills, f"{_DISPENSE}.numberOfRepeatsAllowed")
        amount = v.number((dispense.get("quantity") or {}).get("value"),
                          "MedicationRequest.dispenseRequest.quantity.value")  # fmt: skip
    dosages = r.get("dosageInstruction") or (None,)
    _drug_row("MedicationRequest", rec, person, _visit_of(r, "MedicationRequest", rec), start,
              start_at, None, None, supply, refills, amount, dosages[0], None, code, vocabulary,
              out)  # fmt: skip


def medication_statement(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    person = _patient_of(r, "MedicationStatement", rec)
    if "medicationCodeableConcept" not in r:
        raise Reject("medication not given as a code (medicationReference is not resolved)",
                     "MedicationStatement.medication[x]")  # fmt: skip
    code, vocabulary = v.code_of(r["medicationCodeableConcept"],
                                 "MedicationStatement.medicationCodeableConcept")  # fmt: skip
    start, start_at = v.first_when(
        r,
        "MedicationStatement",
        (("effectiveDateTime", None), ("effectivePeriod", "start"), ("dateAsserted", None)),
        "MedicationStatement.effective[x]",
    )
    end = end_at = None
    period = r.get("effectivePeriod")
    if type(period) is dict and period.get("end") is not None:
        end, end_at = v.when(period["end"], "MedicationStatement.effectivePeriod.end")
    dosages = r.get("dosage") or (None,)
    visit = None
    if r.get("context") is not None:
        visit = v.local_id(r["context"], "Encounter", "MedicationStatement.context", rec.urls)
    _drug_row("MedicationStatement", rec, person, visit, start, start_at, end, end_at, None,
              None, None, dosages[0], None, code, vocabulary, out)  # fmt: skip


def immunization(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    person = _patient_of(r, "Immunization", rec, "patient")
    code, vocabulary = v.code_of(r.get("vaccineCode"), "Immunization.vaccineCode")
    start, start_at = v.first_when(r, "Immunization", (("occurrenceDateTime", None),),
                                   "Immunization.occurrence[x]")  # fmt: skip
    amount = v.quantity(r.get("doseQuantity"), "Immunization.doseQuantity")[0]
    dosage = {"route": r.get("route"), "doseAndRate": [{"doseQuantity": r.get("doseQuantity")}]}
    _drug_row("Immunization", rec, person, _visit_of(r, "Immunization", rec), start, start_at,
              start, start_at, None, None, amount, dosage, v.text(r.get("lotNumber")), code,
              vocabulary, out)  # fmt: skip


def procedure(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    person = _patient_of(r, "Procedure", rec)
    code, vocabulary = v.code_of(r.get("code"), "Procedure.code", v.PROCEDURE_VOCABULARIES)
    value = r.get("performedDateTime")  # (first_when's first element, already parsed)
    start, start_at = (type(value) is str and _cached_when(value)) or v.first_when(
        r, "Procedure", (("performedDateTime", None), ("performedPeriod", "start")),
        "Procedure.performed[x]")  # fmt: skip
    end = end_at = None
    period = r.get("performedPeriod")
    if type(period) is dict and period.get("end") is not None:
        end, end_at = v.when(period["end"], "Procedure.performedPeriod.end")
    visit = _visit_of(r, "Procedure", rec)
    out.rows["procedure_occurrence"].append((f"Procedure/{rec.id}", rec.version, rec.digest,
                                             person, visit, start, start_at, end, end_at, EHR,
                                             code, vocabulary))  # fmt: skip


def specimen(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    person = _patient_of(r, "Specimen", rec)
    code, vocabulary = v.code_of(r.get("type"), "Specimen.type")
    if vocabulary == "HL7 0487" and code in v.SPECIMEN_TYPES:
        code, vocabulary = v.SPECIMEN_TYPES[code], "medlake"
    collection = r.get("collection")
    collection = collection if type(collection) is dict else {}
    value = collection.get("collectedDateTime")
    if value is not None:
        taken, taken_at = (type(value) is str and _cached_when(value)) or v.when(
            value, "Specimen.collection.collectedDateTime")  # fmt: skip
    else:
        taken, taken_at = v.first_when(r, "Specimen", (("receivedTime", None),),
                                       "Specimen.collection.collected[x]")  # fmt: skip
    amount, unit, unit_vocabulary, _ = v.quantity(collection.get("quantity"),
                                                  "Specimen.collection.quantity")  # fmt: skip
    site, site_vocabulary = v.optional_code(collection.get("bodySite"))
    accession = r.get("accessionIdentifier")
    source_id = v.text(accession.get("value")) if type(accession) is dict else None
    out.rows["specimen"].append((f"Specimen/{rec.id}", rec.version, rec.digest, person, EHR,
                                 taken, taken_at, amount, source_id, code, vocabulary, unit,
                                 unit_vocabulary, site, site_vocabulary))  # fmt: skip


def _has_value(r: dict[str, Any]) -> bool:
    """An element named ``value...`` (``value[x]``) is present; the keys JSON gives are str."""
    return any(map(str.startswith, r, _VALUE))


_VALUE = itertools.repeat("value")


def _value(r: dict[str, Any], field: str) -> tuple[object, ...]:
    """``(number, unit, unit vocabulary, operator, value code, value vocabulary, string)``."""
    if "valueQuantity" in r:
        amount, unit, unit_vocabulary, operator = v.quantity(r["valueQuantity"],
                                                             f"{field}.valueQuantity")  # fmt: skip
        return amount, unit, unit_vocabulary, operator, None, None, None
    if "valueCodeableConcept" in r:
        code, vocabulary = v.optional_code(r["valueCodeableConcept"])
        return None, None, None, None, code, vocabulary, None
    for name in ("valueInteger", "valueBoolean"):
        if name in r:
            value = r[name]
            if type(value) is bool:
                return float(value), None, None, None, None, None, None
            return v.number(value, f"{field}.{name}"), None, None, None, None, None, None
    if "valueString" in r:
        return None, None, None, None, None, None, v.text(r["valueString"])
    return None, None, None, None, None, None, None


def observation(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    """Measurement (labs, vitals; one row per component) or observation.

    Half of a bulk export is Observations: the usual case of each step is inlined (a
    known first coding, a cached effectiveDateTime, one category coding, a Quantity
    value), and anything else goes through the general helper, which also raises.
    """
    person = _patient_of(r, "Observation", rec)
    concept = r.get("code")
    codings = concept.get("coding") if type(concept) is dict else None
    first = codings[0] if type(codings) is list and codings else None
    if type(first) is dict and type(first.get("code")) is str and first["code"] \
            and type(first.get("system")) is str and first["system"] in CODE_SYSTEMS:  # fmt: skip
        code, vocabulary = first["code"], CODE_SYSTEMS[first["system"]]
    else:
        code, vocabulary = v.code_of(concept, "Observation.code")
    effective = r.get("effectiveDateTime")
    found = _cached_when(effective) if type(effective) is str else None
    when, when_at = found or v.first_when(
        r, "Observation", (("effectiveDateTime", None), ("effectivePeriod", "start"),
                           ("effectiveInstant", None), ("issued", None)),
        "Observation.effective[x]")  # fmt: skip
    visit = _visit_of(r, "Observation", rec)
    kind, measured = EHR, None
    categories, single = r.get("category"), None
    if type(categories) is list and len(categories) == 1 and type(categories[0]) is dict:
        codings = categories[0].get("coding")
        if type(codings) is list and len(codings) == 1 and type(codings[0]) is dict:
            single = codings[0]  # one category with one coding: the usual case
    if single is not None:
        code_ = single.get("code")
        if code_ == "laboratory":
            kind, measured = LAB, True
        else:  # (an unhashable code raises here as in the loop below)
            measured = code_ in MEASUREMENT_CATEGORIES
    else:
        for category in categories or ():
            for coding in category.get("coding") or ():
                code_ = coding.get("code")
                if code_ in MEASUREMENT_CATEGORIES:
                    kind, measured = LAB if code_ == "laboratory" else kind, True
                elif measured is None:
                    measured = False
    rid = f"Observation/{rec.id}"
    components = r.get("component") or ()
    rows = []
    if measured or (measured is None and "valueQuantity" in r):
        low, high = v.reference_range(r.get("referenceRange"), "Observation.referenceRange")
        if not components or _has_value(r):
            quantity = r.get("valueQuantity")
            if type(quantity) is dict:  # _value's first case, inlined
                amount, unit, unit_voc, operator = v.quantity(quantity, "Observation.valueQuantity")
                value = value_voc = None
            else:
                amount, unit, unit_voc, operator, value, value_voc, string = _value(
                    r, "Observation"
                )
                value = value if string is None else string
            rows.append((rid, rec.version, rec.digest, person, visit, when, when_at, kind,
                         operator, amount, low, high, code, vocabulary, unit, unit_voc, value,
                         value_voc))  # fmt: skip
        for i, part in enumerate(components):
            field = f"Observation.component[{i}]"
            part_code, part_voc = v.code_of(part.get("code"), field + ".code")
            quantity = part.get("valueQuantity")
            if type(quantity) is dict:  # as above
                amount, unit, unit_voc, operator = v.quantity(quantity, field + ".valueQuantity")
                value = value_voc = None
            else:
                amount, unit, unit_voc, operator, value, value_voc, string = _value(part, field)
                value = value if string is None else string
            ranges = part.get("referenceRange")
            low, high = (v.reference_range(ranges, field + ".referenceRange") if ranges
                         else (None, None))  # fmt: skip
            rows.append((f"{rid}#component[{i}]", rec.version, rec.digest, person, visit, when,
                         when_at, kind, operator, amount, low, high, part_code, part_voc, unit,
                         unit_voc, value, value_voc))  # fmt: skip
        out.rows["measurement"].extend(rows)
        return
    if not components or _has_value(r):
        amount, unit, unit_voc, _, value, value_voc, string = _value(r, "Observation")
        rows.append((rid, rec.version, rec.digest, person, visit, when, when_at, kind, amount,
                     string, code, vocabulary, unit, unit_voc, value, value_voc, None))  # fmt: skip
    for i, part in enumerate(components):
        field = f"Observation.component[{i}]"
        part_code, part_voc = v.code_of(part.get("code"), field + ".code")
        amount, unit, unit_voc, _, value, value_voc, string = _value(part, field)
        rows.append((f"{rid}#component[{i}]", rec.version, rec.digest, person, visit, when,
                     when_at, kind, amount, string, part_code, part_voc, unit, unit_voc, value,
                     value_voc, None))  # fmt: skip
    out.rows["observation"].extend(rows)


def diagnostic_report(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    """The report as an observation: its code, date, conclusion (and conclusion code)."""
    person = _patient_of(r, "DiagnosticReport", rec)
    code, vocabulary = v.code_of(r.get("code"), "DiagnosticReport.code")
    when, when_at = v.first_when(r, "DiagnosticReport", (("effectiveDateTime", None),
                                                         ("effectivePeriod", "start"),
                                                         ("issued", None)),
                                 "DiagnosticReport.effective[x]")  # fmt: skip
    value, value_voc = v.optional_code((r.get("conclusionCode") or (None,))[0])
    out.rows["observation"].append((*_head("DiagnosticReport", rec, person, _visit_of(
        r, "DiagnosticReport", rec)), when, when_at, EHR, None, v.text(r.get("conclusion")),
        code, vocabulary, None, None, value, value_voc, None))  # fmt: skip


def allergy_intolerance(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    """The allergy as an observation of its substance code; criticality as qualifier."""
    person = _patient_of(r, "AllergyIntolerance", rec, "patient")
    code, vocabulary = v.code_of(r.get("code"), "AllergyIntolerance.code")
    when, when_at = v.first_when(r, "AllergyIntolerance", (("onsetDateTime", None),
                                                           ("recordedDate", None)),
                                 "AllergyIntolerance.recordedDate")  # fmt: skip
    out.rows["observation"].append((*_head("AllergyIntolerance", rec, person, _visit_of(
        r, "AllergyIntolerance", rec)), when, when_at, EHR, None, None, code, vocabulary, None,
        None, None, None, v.text(r.get("criticality"))))  # fmt: skip


def document_reference(r: dict[str, Any], rec: Record, out: StagedRows) -> None:
    """A clinical document (discharge summary, progress note) as a ``note`` row.

    The text is the first ``text/plain`` (else the first) attachment's ``data``
    (base64, decoded as UTF-8 or the attachment's ``charset``); a document whose text is
    only behind a ``url`` is refused, since medlake fetches nothing at ingest.
    ``entered-in-error`` documents are retracted like any resource (see the reader).
    """
    person = _patient_of(r, "DocumentReference", rec)
    context = r.get("context") if type(r.get("context")) is dict else {}
    encounters = context.get("encounter") or ()
    visit = (v.local_id(encounters[0], "Encounter", "DocumentReference.context.encounter[0]",
                        rec.urls) if encounters else None)  # fmt: skip
    when, when_at = v.first_when(r, "DocumentReference", (("date", None),),
                                 "DocumentReference.date")  # fmt: skip
    code, vocabulary = v.optional_code(r.get("type"))
    text, language = _attachment_text(r.get("content"))
    language = language or r.get("language")
    tag = language.split("-", 1)[0].lower() if type(language) is str else ""
    title = v.text(r.get("description")) or v.text((r.get("type") or {}).get("text"))
    out.rows["note"].append((*_head("DocumentReference", rec, person, visit), when, when_at,
                             title, text, code, vocabulary, UTF8_ENCODING,
                             LANGUAGES.get(tag, 0)))  # fmt: skip


def _attachment_text(content: object) -> tuple[str, object]:
    """The chosen attachment's decoded text and its ``language``."""
    attachments = [part.get("attachment") for part in content or ()
                   if type(part) is dict and type(part.get("attachment")) is dict]  # fmt: skip
    if not attachments:
        raise v.Reject("no attachment with the document's text", "DocumentReference.content")
    plain = [a for a in attachments if str(a.get("contentType", "")).startswith("text/plain")]
    attachment = (plain or attachments)[0]
    data = attachment.get("data")
    if type(data) is not str or not data:
        raise v.Reject("attachment has no inline data (only data is read, never a url)",
                       "DocumentReference.content[0].attachment.data")  # fmt: skip
    content_type = str(attachment.get("contentType", ""))
    charset = content_type.partition("charset=")[2].strip() or "utf-8"
    try:
        return base64.b64decode(data, validate=True).decode(charset), attachment.get("language")
    except (binascii.Error, ValueError, LookupError) as error:
        raise v.Reject(f"attachment data cannot be decoded: {error}",
                       "DocumentReference.content[0].attachment.data") from None  # fmt: skip


Mapper = Callable[[dict[str, Any], Record, StagedRows], None]
#: Resource types medlake maps; every other type is counted as skipped.
MAPPERS: dict[str, Mapper] = {
    "Patient": patient,
    "Encounter": encounter,
    "Condition": condition,
    "MedicationRequest": medication_request,
    "MedicationStatement": medication_statement,
    "Immunization": immunization,
    "Observation": observation,
    "Procedure": procedure,
    "Specimen": specimen,
    "DiagnosticReport": diagnostic_report,
    "AllergyIntolerance": allergy_intolerance,
    "DocumentReference": document_reference,
}

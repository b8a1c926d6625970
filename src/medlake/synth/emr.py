"""EMR (电子病历) FHIR R4 bulk export: one NDJSON file per resource type plus manifest.

Each resource carries what FHIR R4 requires of it (Encounter ``status`` and ``class``,
MedicationRequest ``status``/``intent``/``medicationCodeableConcept``/``subject``,
Observation ``status``/``code``, Procedure ``status``/``subject``), subject and encounter
references that resolve inside the export, codes with their system URIs (ICD-10-CM,
LOINC, ATC, ICD-9-CM for procedures), UCUM quantities, and the patient's MRN and
resident ID (``urn:oid:2.16.156.10011.1.3``) as identifiers. Conditions are the EMR's
problem list: one per patient record and code, at the encounter that first recorded it.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from medlake.synth import defects as d
from medlake.synth.care import LabOrder, Visit
from medlake.synth.catalogue import (
    DIAGNOSES,
    DRUGS,
    FREQUENCY_TIMING,
    PROCEDURES,
    UNKNOWN_ICD10,
    UNKNOWN_LOINC,
    VISIT_KINDS,
)
from medlake.synth.dates import fhir_datetime, iso_date, year_of
from medlake.synth.exports import ChunkExports
from medlake.synth.identity import EMR, SourcePatient
from medlake.synth.lab_catalogue import LAB_PANELS, QUALITATIVE_ANSWERS, VITALS, LabTest
from medlake.synth.labs import LabValue
from medlake.synth.lis import flag_for, reference_range

RESOURCE_TYPES = ("Patient", "Encounter", "Condition", "MedicationRequest", "Observation",
                  "Procedure", "Specimen", "DocumentReference")  # fmt: skip
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
MRN_SYSTEM = "http://emr.bjyy.example.cn/fhir/sid/mrn"
ENCOUNTER_SYSTEM = "http://emr.bjyy.example.cn/fhir/sid/encounter"
SPECIMEN_SYSTEM = "http://lis.bjyy.example.cn/fhir/sid/specimen"
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
#: Panels whose results the EMR copies from the LIS (its key indicators, 重点指标); the
#: full results stay in the LIS.
EMR_KEY_PANELS = frozenset({"THXHDB", "XZ4", "SGN", "YGBMKY", "XGHS"})


def path_of(resource_type: str) -> str:
    return f"emr/{resource_type}.ndjson"


def fhir_patient_id(seed: int, mrn: str) -> str:
    """The EMR's logical Patient id: a UUID derived from seed and MRN (stable per record)."""
    return _uuid(hashlib.blake2b(f"{seed}:{mrn}".encode(), digest_size=16).digest())


def _uuid(raw: bytes) -> str:
    return _uuid_from_int(int.from_bytes(raw, "big"))


def _uuid_from_int(bits: int) -> str:
    """A version-4-shaped UUID string from 128 random bits."""
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[bits & 3]}{h[17:20]}-{h[20:32]}"


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"system": system, "code": code, "display": display}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


class EmrWriter:
    """Writes one chunk's FHIR resources and the defects planted in them."""

    def __init__(self, out: ChunkExports, r: random.Random) -> None:
        self.out = out
        self.r = r

    def _new_id(self) -> str:
        return _uuid_from_int(self.r.getrandbits(128))

    def _write(self, resource: dict[str, Any], defects: list[tuple[str, str, str]]) -> None:
        path = path_of(resource["resourceType"])
        line = self.out.ndjson(path, resource)
        for kind, field, detail in defects:
            self.out.defects.append(d.Defect(EMR, path, resource["id"], line, kind, field, detail))

    def patient(self, patient: SourcePatient, fhir_id: str) -> None:
        person = patient.person
        year, month, day = patient.birth
        resource: dict[str, Any] = {"resourceType": "Patient", "id": fhir_id, "identifier": [{
            "use": "usual", "system": MRN_SYSTEM, "value": patient.patient_id,
            "type": {"coding": [{"system": _TERMINOLOGY + "v2-0203", "code": "MR"}]},
        }]}  # fmt: skip
        if patient.resident_id:
            resource["identifier"].append({
                "use": "official", "system": RESIDENT_ID_SYSTEM, "value": patient.resident_id,
                "type": {"coding": [{"system": _TERMINOLOGY + "v2-0203", "code": "NI"}],
                         "text": "居民身份证号"},
            })  # fmt: skip
        given = [patient.given] if patient.script == "hanzi" else patient.given.split()
        resource["active"] = True
        resource["name"] = [{"use": "official", "text": patient.name, "family": patient.family,
                             "given": given}]  # fmt: skip
        if patient.phone:
            resource["telecom"] = [{"system": "phone", "value": patient.phone, "use": "mobile"}]
        defects: list[tuple[str, str, str]] = []
        if d.roll(self.r, "missing_sex"):
            defects.append((d.MISSING_REQUIRED_FIELD, "gender", ""))
        else:
            resource["gender"] = "male" if person.sex == "M" else "female"
        if d.roll(self.r, "missing_birth_date"):
            defects.append((d.MISSING_REQUIRED_FIELD, "birthDate", ""))
        else:
            resource["birthDate"] = f"{year:04d}-{month:02d}-{day:02d}"
        if person.death_ord and not patient.duplicate:
            resource["deceasedDateTime"] = iso_date(person.death_ord)
        if patient.address:
            place = patient.address.district
            resource["address"] = [{
                "use": "home", "text": patient.address.text, "line": [patient.address.line],
                "city": place.city, "district": place.district, "state": place.province,
                "postalCode": place.postcode, "country": "CN",
            }]  # fmt: skip
        self._write(resource, defects)

    def encounter(self, patient_ref: str, mrn: str, visit: Visit, recorded: set[str],
                  onsets: dict[str, int]) -> str:  # fmt: skip
        """The Encounter and everything recorded at it; ``recorded``: codes already listed.

        Returns the Encounter's id (notes written at the visit refer to it).
        """
        r = self.r
        encounter_id = self._new_id()
        _, _, act_code, act_display = VISIT_KINDS[visit.kind]
        start = fhir_datetime(visit.ordinal, visit.minute)
        resource: dict[str, Any] = {
            "resourceType": "Encounter", "id": encounter_id,
            "identifier": [{"system": ENCOUNTER_SYSTEM, "value": f"{mrn}-{visit.seq:03d}"}],
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": act_code, "display": act_display},
            "serviceType": {"text": visit.department},
            "subject": {"reference": patient_ref},
        }  # fmt: skip
        defects: list[tuple[str, str, str]] = []
        end_day = visit.discharge_ord or visit.ordinal
        end_minute = 600 if visit.discharge_ord else min(visit.minute + 30, 1439)
        period = {"start": start, "end": fhir_datetime(end_day, end_minute)}
        if visit.after_death:
            defects.append((d.EVENT_AFTER_DEATH, "period.start", start))
            resource["period"] = period
        elif d.roll(r, "missing_visit_date"):
            defects.append((d.MISSING_REQUIRED_FIELD, "period", ""))
        else:
            resource["period"] = period
        self._write(resource, defects)
        encounter_ref = {"reference": f"Encounter/{encounter_id}"}
        subject = {"reference": patient_ref}
        for code in visit.diagnoses:
            if code not in recorded:
                recorded.add(code)
                self._condition(subject, encounter_ref, code, visit, onsets.get(code))
        for atc, days in visit.drugs:
            self._medication(subject, encounter_ref, atc, days, start)
        for code in visit.procedures:
            en, zh = PROCEDURES[code]
            self._write({
                "resourceType": "Procedure", "id": self._new_id(), "status": "completed",
                "code": {"coding": [_coding(ICD9CM, code, en)], "text": zh},
                "subject": subject, "encounter": encounter_ref,
                "performedDateTime": fhir_datetime(visit.ordinal + (visit.kind == "I"), 600),
            }, [])  # fmt: skip
        if visit.vitals:
            self._vitals(subject, encounter_ref, visit)
        for order in visit.orders:
            if order.panel in EMR_KEY_PANELS:
                self._lab_order(subject, encounter_ref, order)
        return encounter_id

    def _condition(self, subject: dict[str, str], encounter_ref: dict[str, str], code: str,
                   visit: Visit, onset: int | None) -> None:  # fmt: skip
        onset = min(onset or visit.ordinal, visit.ordinal)
        diagnosis = DIAGNOSES[code]
        coding, text = _coding(ICD10CM, code, diagnosis.name_en), diagnosis.name_zh
        defects: list[tuple[str, str, str]] = []
        if d.roll(self.r, "unknown_code"):
            unknown, text = self.r.choice(UNKNOWN_ICD10)
            coding = {"system": ICD10CM, "code": unknown}
            defects.append((d.UNKNOWN_CODE, "code", unknown))
        self._write({
            "resourceType": "Condition", "id": self._new_id(),
            "clinicalStatus": {"coding": [{"system": _TERMINOLOGY + "condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": _TERMINOLOGY + "condition-ver-status",
                                               "code": "confirmed"}]},
            "category": [{"coding": [{"system": _TERMINOLOGY + "condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [coding], "text": text},
            "subject": subject, "encounter": encounter_ref,
            "onsetDateTime": iso_date(onset), "recordedDate": iso_date(visit.ordinal),
        }, defects)  # fmt: skip

    def _medication(self, subject: dict[str, str], encounter_ref: dict[str, str], atc: str,
                    days: int, authored: str) -> None:  # fmt: skip
        drug = DRUGS[atc]
        frequency, period, unit, text = FREQUENCY_TIMING[drug.frequency]
        dosage: dict[str, Any] = {
            "text": f"{drug.dose:g}{drug.dose_unit} {text} {drug.route}",
            "timing": {"repeat": {"frequency": frequency, "period": period, "periodUnit": unit}},
            "route": {"text": drug.route},
            "doseAndRate": [{"doseQuantity": _quantity(drug.dose, drug.dose_unit)}],
        }
        if drug.frequency == "prn":
            dosage["asNeededBoolean"] = True
        self._write({
            "resourceType": "MedicationRequest", "id": self._new_id(), "status": "completed",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [_coding(ATC, atc, drug.name_en)],
                                          "text": drug.name_zh},
            "subject": subject, "encounter": encounter_ref, "authoredOn": authored,
            "dosageInstruction": [dosage],
            "dispenseRequest": {"expectedSupplyDuration": _quantity(days, "d")},
        }, [])  # fmt: skip

    def _vitals(self, subject: dict[str, str], encounter_ref: dict[str, str],
                visit: Visit) -> None:  # fmt: skip
        vitals = visit.vitals or {}
        when = fhir_datetime(visit.ordinal, min(visit.minute + 5, 1439))
        category = [{"coding": [{"system": _TERMINOLOGY + "observation-category",
                                 "code": "vital-signs"}]}]  # fmt: skip
        base = {"status": "final", "category": category, "subject": subject,
                "encounter": encounter_ref, "effectiveDateTime": when}  # fmt: skip
        components = []
        for key in ("SBP", "DBP"):
            loinc, name, unit, _ = VITALS[key]
            components.append({"code": {"coding": [_coding(LOINC, loinc, name)]},
                               "valueQuantity": _quantity(vitals[key], unit)})  # fmt: skip
        loinc, name, _, _ = VITALS["BP"]
        self._write({"resourceType": "Observation", "id": self._new_id(), **base,
                     "code": {"coding": [_coding(LOINC, loinc, name)], "text": "血压"},
                     "component": components}, [])  # fmt: skip
        keys = ["HR"] + (["WEIGHT", "HEIGHT", "BMI"] if visit.kind == "I" or not visit.diagnoses
                         else [])  # fmt: skip
        for key in keys:
            loinc, name, unit, _ = VITALS[key]
            self._write({"resourceType": "Observation", "id": self._new_id(), **base,
                         "code": {"coding": [_coding(LOINC, loinc, name)]},
                         "valueQuantity": _quantity(vitals[key], unit)}, [])  # fmt: skip

    def _lab_order(self, subject: dict[str, str], encounter_ref: dict[str, str],
                   order: LabOrder) -> None:  # fmt: skip
        panel = LAB_PANELS[order.panel]
        specimen_id = self._new_id()
        collected = fhir_datetime(order.ordinal, order.minute)
        self._write({
            "resourceType": "Specimen", "id": specimen_id,
            "accessionIdentifier": {"system": SPECIMEN_SYSTEM,
                                    "value": f"{order.ordinal}{specimen_id[:8].upper()}"},
            "status": "available",
            "type": {"coding": [{"system": _TERMINOLOGY + "v2-0487", "code": panel.specimen_hl7,
                                 "display": panel.specimen_en}], "text": panel.specimen_zh},
            "subject": subject, "receivedTime": collected,
            "collection": {"collectedDateTime": collected},
        }, [])  # fmt: skip
        issued = fhir_datetime(order.ordinal, order.report_minute)
        for test, value in order.results:
            self._lab_result(subject, encounter_ref, specimen_id, test, value, order, issued)

    def _lab_result(self, subject: dict[str, str], encounter_ref: dict[str, str],
                    specimen_id: str, test: LabTest, value: LabValue, order: LabOrder,
                    issued: str) -> None:  # fmt: skip
        r = self.r
        defects: list[tuple[str, str, str]] = []
        coding = {"system": LOINC, "code": test.loinc}  # long LOINC names: text carries it
        if d.roll(r, "unknown_code"):
            code, _ = r.choice(UNKNOWN_LOINC)
            coding = {"system": LOINC, "code": code}
            defects.append((d.UNKNOWN_CODE, "code", code))
        effective = fhir_datetime(order.ordinal, order.minute)
        if not defects and d.roll(r, "bad_date"):
            effective = d.bad_iso_date(year_of(order.ordinal), r) + effective[10:]
            defects.append((d.BAD_DATE, "effectiveDateTime", effective))
        resource: dict[str, Any] = {
            "resourceType": "Observation", "id": self._new_id(), "status": "final",
            "category": [{"coding": [{"system": _TERMINOLOGY + "observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [coding], "text": test.name_zh},
            "subject": subject, "encounter": encounter_ref, "effectiveDateTime": effective,
            "issued": issued, "specimen": {"reference": f"Specimen/{specimen_id}"},
        }  # fmt: skip
        if isinstance(value, bool):
            present, absent = QUALITATIVE_ANSWERS[test.key]
            code, display, text = present if value else absent
            resource["valueCodeableConcept"] = {"coding": [_coding(LOINC, code, display)],
                                                "text": text}  # fmt: skip
            flag = "A" if value else "N"
        else:
            number = round(float(value), test.decimals)
            if not defects and d.roll(r, "impossible_lab_value"):
                number, how = d.impossible_value(number, r)
                number = round(number, test.decimals)
                defects.append((d.IMPOSSIBLE_LAB_VALUE, "valueQuantity", how))
            resource["valueQuantity"] = _quantity(number, test.unit)
            flag = flag_for(test, number)
            resource["referenceRange"] = [{"text": reference_range(test)}]
        resource["interpretation"] = [{"coding": [{
            "system": _TERMINOLOGY + "v3-ObservationInterpretation", "code": flag}]}]  # fmt: skip
        self._write(resource, defects)

"""HL7 v2 ADT and ORU^R01 messages mapped to staged rows: patients, merges, labs, specimens.

One :class:`MessageMapper` call per message. Rows of a message are gathered first and
handed to the buffers only when the whole message mapped, so a message that fails
half-way leaves nothing behind: it is quarantined whole. A bad OBX (no code, a value
that is no number, an unreadable OBX-14) is quarantined alone and its siblings load.

Mapping (HL7 v2.5 field numbers):
- ADT^A01/A04/A08 (A28/A31): PID → a patient row. PID-3: the identifier of type PI
  assigned by the sending application (MSH-3, or ``patient_id_authority``) is the source
  patient id, NNCHN the resident ID, MR the hospital's medical record number. PID-5
  repetitions: hanzi (detected by CJK code points) or pinyin. PID-7 birth, PID-8 sex
  (gender 8507/8532/8551), PID-11 address, PID-13 phone, PID-29 death. Version: MSH-7
  in epoch ms, so a later A08 replaces.
- ADT^A40: each MRG-1 (merged id) joins the PID-3 before it (surviving id).
- ORU^R01: one measurement per OBX: OBX-3 (LN → LOINC, else the sender's local
  vocabulary), OBX-2/5 value (NM/SN numbers with comparator, CWE/CE codes with LN
  answers, text), OBX-6 unit (UCUM), OBX-7 range, time OBR-7 → OBX-14 → MSH-7.
  Record id ``<OBR-3 filler order>/<OBX-1>`` so a corrected result (OBX-11 = C, sent
  later with a later MSH-7) replaces the first. PV1-19 is the visit; it belongs to
  another system when it matches a pattern in ``visit_systems``. OBR-15 or SPM gives a
  specimen row. OBX-8 (abnormal flag) has no column in OMOP's measurement table and is
  not staged.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from medlake.ingest.hl7v2_message import Hl7Message, MessageError, epoch_ms_of, parse_dtm
from medlake.ingest.staging import PatientMerge, QuarantineEntry, record_hash

LAB_TYPE_CONCEPT = 32856  # Type Concept "Lab"
GENDER_CONCEPTS = {"M": 8507, "MALE": 8507, "男": 8507, "F": 8532, "FEMALE": 8532, "女": 8532}
GENDER_UNKNOWN = 8551
# OMOP operator concepts (Meas Value Operator).
OPERATOR_CONCEPTS = {"<": 4171756, "<=": 4171754, "=": 4172703, ">": 4172704, ">=": 4171755}
# HL7 table 0487 specimen types → the specimen codes of the medlake vocabulary.
SPECIMEN_CODES = {
    "BLD": "blood",
    "BLDV": "blood",
    "BLDA": "blood",
    "BLDC": "blood",
    "WB": "blood",
    "SER": "serum",
    "PLAS": "plasma",
    "UR": "urine",
    "URINE": "urine",
    "RESP": "respiratory swab",
    "NPS": "respiratory swab",
    "THRT": "respiratory swab",
}
ADT_PATIENT_EVENTS = frozenset({"A01", "A04", "A08", "A28", "A31"})
CODING_SYSTEMS = {"LN": "LOINC", "LOINC": "LOINC", "UCUM": "UCUM", "SCT": "SNOMED", "SNM": "SNOMED"}

MEASUREMENT_COLUMNS = (
    "_source_record_id",
    "_source_version",
    "_record_hash",
    "_source_patient_id",
    "_source_visit_id",
    "_source_visit_system",
    "measurement_date",
    "measurement_datetime",
    "measurement_time",
    "measurement_type_concept_id",
    "operator_concept_id",
    "value_as_number",
    "range_low",
    "range_high",
    "measurement_source_value",
    "_measurement_vocabulary",
    "unit_source_value",
    "_unit_vocabulary",
    "value_source_value",
    "_value_vocabulary",
)
SPECIMEN_COLUMNS = (
    "_source_record_id",
    "_source_version",
    "_record_hash",
    "_source_patient_id",
    "specimen_date",
    "specimen_datetime",
    "specimen_type_concept_id",
    "specimen_source_id",
    "specimen_source_value",
    "_specimen_vocabulary",
)
PATIENT_ROW_COLUMNS = (
    "_source_patient_id",
    "_source_version",
    "_record_hash",
    "name_hanzi",
    "name_pinyin",
    "family_name",
    "given_name",
    "resident_id",
    "birth_date",
    "sex",
    "gender_concept_id",
    "phone",
    "address",
    "postcode",
    "death_date",
    "mrn",
)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NUMBER = re.compile(r"\s*(<=|>=|<|>|=)?\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*\Z")
_RANGE = re.compile(
    r"\s*([+-]?\d+\.?\d*)\s*(?:-|~|－|—|to)\s*([+-]?\d+\.?\d*)\s*\Z|\s*(<=?|>=?)\s*([+-]?\d+\.?\d*)\s*\Z"
)


@dataclass(frozen=True)
class MappingOptions:
    """What the mapping needs to know about the source (from ``SourceContext``)."""

    source_system: str
    default_version: int
    local_vocabulary: str  # vocabulary id for the sender's own codes (99LIS...)
    patient_id_authority: str | None = None  # PID-3 authority of the source id; else MSH-3
    visit_systems: tuple[tuple[re.Pattern[str], str], ...] = ()  # PV1-19 pattern → system


@dataclass
class MappedMessage:
    """What one message gave: rows per table, patient rows, merges, bad OBX, skips."""

    measurements: list[dict[str, object]] = field(default_factory=list)
    specimens: list[dict[str, object]] = field(default_factory=list)
    patients: list[dict[str, object]] = field(default_factory=list)
    merges: list[PatientMerge] = field(default_factory=list)
    bad_results: list[tuple[str, str]] = field(default_factory=list)  # (reason, field)
    skipped: Counter[str] = field(default_factory=Counter)
    results: int = 0  # OBX segments seen


def components(value: str, message: Hl7Message) -> list[str]:
    return value.split(message.component)


def _component(parts: list[str], n: int) -> str:
    return parts[n] if n < len(parts) else ""


def _date(value: str, where: str) -> dt.datetime | None:
    try:
        return parse_dtm(value)
    except ValueError:
        raise MessageError(f"{where} {value!r} is not a date", where) from None


class MessageMapper:
    """Maps one parsed message at a time (see the module docstring for the mapping)."""

    def __init__(self, options: MappingOptions) -> None:
        self.options = options

    def map(self, message: Hl7Message) -> MappedMessage:
        msh = message.segments[0]
        kind = components(msh[9] if len(msh) > 9 else "", message)
        type_, event = _component(kind, 0).strip(), _component(kind, 1).strip()
        if not type_:
            raise MessageError("MSH-9 (message type) is missing", "MSH-9")
        stamp = _date(msh[7] if len(msh) > 7 else "", "MSH-7")
        version = epoch_ms_of(stamp) if stamp is not None else self.options.default_version
        sender = _component(components(msh[3] if len(msh) > 3 else "", message), 0)
        authority = self.options.patient_id_authority or sender
        mapped = MappedMessage()
        if type_ == "ADT" and event in ADT_PATIENT_EVENTS:
            pid = message.first("PID")
            if pid is None:
                raise MessageError(f"ADT^{event} without a PID segment", "PID")
            mapped.patients.append(self._patient(message, pid, authority, version))
        elif type_ == "ADT" and event == "A40":
            self._merges(message, authority, version, mapped)
        elif type_ == "ORU" and event == "R01":
            self._results(message, authority, version, stamp, mapped)
        else:
            mapped.skipped[f"{type_}^{event}" if event else type_] += 1
        return mapped

    # --- patients -----------------------------------------------------------------------

    def _ids(
        self, value: str, message: Hl7Message, authority: str
    ) -> tuple[str, str | None, str | None]:
        """(source patient id, resident id, MRN) from a PID-3 / MRG-1 list of CX."""
        source = fallback = resident = mrn = None
        for repetition in value.split(message.repetition):
            parts = components(repetition, message)
            number = parts[0].strip()
            if not number:
                continue
            auth = _component(parts, 3).split(message.subcomponent)[0]
            kind = _component(parts, 4)
            if kind == "NNCHN" or (kind in ("NN", "NI") and auth == "CHN"):
                resident = resident or number
            elif kind == "PI" and auth == authority and source is None:
                source = number
            elif fallback is None and kind in ("PI", "MR", "PT", ""):
                fallback = number
            if kind == "MR" and mrn is None:
                mrn = number
        return source or fallback or "", resident, mrn

    def _patient(
        self, message: Hl7Message, pid: list[str], authority: str, version: int
    ) -> dict[str, object]:
        get = lambda n: pid[n] if n < len(pid) else ""  # noqa: E731
        patient_id, resident, mrn = self._ids(get(3), message, authority)
        if not patient_id:
            raise MessageError("PID-3 has no patient identifier", "PID-3")
        birth = _date(get(7), "PID-7")
        death = _date(get(29), "PID-29")
        sex = message.unescape(get(8)).strip()
        row: dict[str, object] = {
            "_source_patient_id": patient_id,
            "_source_version": version,
            "_record_hash": record_hash("|".join(pid)),
            "resident_id": resident,
            "mrn": mrn,
            "birth_date": birth.date() if birth else None,
            "sex": sex or None,
            "gender_concept_id": GENDER_CONCEPTS.get(sex.upper(), GENDER_UNKNOWN),
            "death_date": death.date() if death else None,
        }
        row.update(self._names(get(5), message))
        row.update(self._address(get(11), message))
        phone = components(get(13).split(message.repetition)[0], message)
        number = _component(phone, 0) or _component(phone, 11)
        row["phone"] = message.unescape(number).strip() or None
        return row

    def _names(self, value: str, message: Hl7Message) -> dict[str, object]:
        names: dict[str, object] = {}
        for repetition in value.split(message.repetition):
            parts = components(message.unescape(repetition), message)
            family = _component(parts, 0).split(message.subcomponent)[0].strip()
            given = _component(parts, 1).strip()
            if not family and not given:
                continue
            if _CJK.search(family + given):
                if "name_hanzi" not in names:
                    names.update(name_hanzi=family + given, family_name=family, given_name=given)
            elif "name_pinyin" not in names:
                names["name_pinyin"] = f"{family} {given}".strip()
                names.setdefault("family_name", family)
                names.setdefault("given_name", given)
        return names

    def _address(self, value: str, message: Hl7Message) -> dict[str, object]:
        parts = components(message.unescape(value.split(message.repetition)[0]), message)
        line, other, city, state = (_component(parts, i).strip() for i in range(4))
        region = city if state and city.startswith(state) else state + city
        address = region + line + other
        return {"address": address or None, "postcode": _component(parts, 4).strip() or None}

    def _merges(
        self, message: Hl7Message, authority: str, version: int, mapped: MappedMessage
    ) -> None:
        surviving = None
        for fields in message.segments:
            if fields[0] == "PID":
                surviving = self._ids(fields[3] if len(fields) > 3 else "", message, authority)[0]
            elif fields[0] == "MRG":
                merged, _, _ = self._ids(fields[1] if len(fields) > 1 else "", message, authority)
                if not surviving:
                    raise MessageError("A40 MRG without a PID-3 surviving id before it", "PID-3")
                if not merged:
                    raise MessageError("MRG-1 has no patient identifier", "MRG-1")
                mapped.merges.append(PatientMerge(surviving, merged, version))
        if not mapped.merges:
            raise MessageError("ADT^A40 without an MRG segment", "MRG")

    # --- results ------------------------------------------------------------------------

    def _results(
        self,
        message: Hl7Message,
        authority: str,
        version: int,
        stamp: dt.datetime | None,
        mapped: MappedMessage,
    ) -> None:
        pid = message.first("PID")
        patient_id, _, _ = self._ids(pid[3] if pid and len(pid) > 3 else "", message, authority)
        if not patient_id:
            raise MessageError("PID-3 has no patient identifier", "PID-3")
        pv1 = message.first("PV1")
        visit = _component(components(pv1[19] if pv1 and len(pv1) > 19 else "", message), 0)
        visit = visit.strip() or None
        visit_system = None
        if visit:
            for pattern, system in self.options.visit_systems:
                if pattern.match(visit):
                    visit_system = system
                    break
        context = {
            "_source_version": version,
            "_source_patient_id": patient_id,
            "_source_visit_id": visit,
            "_source_visit_system": visit_system,
        }
        header = f"{patient_id}\r{visit or ''}\r"
        control = message.segments[0][10] if len(message.segments[0]) > 10 else ""
        obr: list[str] | None = None
        order_id = f"{control}/0"
        order_time: dt.datetime | None = None
        obx_number = obr_number = 0
        specimen_done = False
        for fields in message.segments:
            name = fields[0]
            if name == "OBR":
                obr, obr_number, specimen_done = fields, obr_number + 1, False
                order_id, order_time = self._order(message, fields, control, obr_number)
                if _field(fields, 15) and "SPM" not in (s[0] for s in message.segments):
                    self._specimen(message, fields, None, order_id, order_time, context, mapped)
                    specimen_done = True
            elif name == "SPM" and not specimen_done:
                self._specimen(message, obr, fields, order_id, order_time, context, mapped)
                specimen_done = True
            elif name == "OBX":
                obx_number += 1
                mapped.results += 1
                try:
                    row = self._observation(
                        message, fields, obx_number, order_id, order_time or stamp
                    )
                except MessageError as error:
                    mapped.bad_results.append((error.reason, error.field or "OBX"))
                    continue
                if row is None:
                    mapped.skipped["OBX deleted (OBX-11 D)"] += 1
                    continue
                row.update(context)
                line = "|".join(fields)
                obr_line = "|".join(obr) if obr else ""
                row["_record_hash"] = record_hash(f"{header}{obr_line}\r{line}")
                mapped.measurements.append(row)

    def _order(
        self, message: Hl7Message, obr: list[str], control: str, number: int
    ) -> tuple[str, dt.datetime | None]:
        filler = _component(components(_field(obr, 3), message), 0).strip()
        placer = _component(components(_field(obr, 2), message), 0).strip()
        order_id = filler or (f"placer:{placer}" if placer else f"{control}/{number}")
        return order_id, _date(_field(obr, 7), "OBR-7")

    def _observation(
        self,
        message: Hl7Message,
        obx: list[str],
        number: int,
        order_id: str,
        order_time: dt.datetime | None,
    ) -> dict[str, object] | None:
        where = f"OBX[{number}]"
        if _field(obx, 11).strip() == "D":
            return None
        code_parts = components(_field(obx, 3), message)
        code = message.unescape(code_parts[0]).strip()
        if not code:
            raise MessageError(f"{where}-3 (observation identifier) has no code", f"{where}-3")
        system = _component(code_parts, 2).strip().upper()
        try:
            observed = parse_dtm(_field(obx, 14))
        except ValueError:
            raise MessageError(
                f"{where}-14 {_field(obx, 14)!r} is not a date", f"{where}-14"
            ) from None
        moment = order_time or observed
        if moment is None:
            raise MessageError(f"{where}: no observation time (OBR-7, OBX-14, MSH-7)", "OBR-7")
        set_id = _field(obx, 1).strip() or str(number)
        row: dict[str, object] = {
            "_source_record_id": f"{order_id}/{set_id}",
            "measurement_date": moment.date(),
            "measurement_datetime": moment,
            "measurement_time": _clock(moment),
            "measurement_type_concept_id": LAB_TYPE_CONCEPT,
            "measurement_source_value": code,
            "_measurement_vocabulary": CODING_SYSTEMS.get(system, self.options.local_vocabulary),
        }
        row.update(self._value(message, _field(obx, 2).strip().upper(), _field(obx, 5), where))
        unit_parts = components(_field(obx, 6), message)
        unit = message.unescape(_component(unit_parts, 0) or _component(unit_parts, 1)).strip()
        if unit:
            unit_system = _component(unit_parts, 2).strip().upper()
            row["unit_source_value"] = unit
            row["_unit_vocabulary"] = (
                "UCUM" if unit_system in ("", "UCUM") else self.options.local_vocabulary
            )
        low, high = reference_range(message.unescape(_field(obx, 7)))
        row["range_low"], row["range_high"] = low, high
        return row

    def _value(self, message: Hl7Message, kind: str, raw: str, where: str) -> dict[str, object]:
        value = raw.split(message.repetition)[0]
        if not value.strip():
            return {}
        if kind == "NM":
            text = message.unescape(value).strip()
            match = _NUMBER.match(text)
            if match is None:
                raise MessageError(
                    f"{where}-5 {text[:40]!r} is not a number (OBX-2 NM)", f"{where}-5"
                )
            operator = match.group(1)
            return {
                "value_as_number": float(match.group(2)),
                "operator_concept_id": OPERATOR_CONCEPTS[operator] if operator else None,
                "value_source_value": text,
            }
        parts = components(value, message)
        if kind == "SN":
            comparator, first = _component(parts, 0).strip(), _component(parts, 1).strip()
            text = message.unescape("".join(parts)).strip()
            row: dict[str, object] = {"value_source_value": text}
            if first and not _component(parts, 2).strip():
                match = _NUMBER.match(first)
                if match is None:
                    raise MessageError(
                        f"{where}-5 {text[:40]!r} is not a structured number", f"{where}-5"
                    )
                row["value_as_number"] = float(match.group(2))
                row["operator_concept_id"] = OPERATOR_CONCEPTS.get(comparator)
            return row
        if kind in ("CWE", "CE", "CNE", "CF"):
            code = message.unescape(parts[0]).strip()
            label = message.unescape(_component(parts, 1)).strip()
            if not code:
                return {"value_source_value": label or None}
            system = _component(parts, 2).strip().upper()
            vocabulary = CODING_SYSTEMS.get(system, self.options.local_vocabulary)
            return {"value_source_value": code, "_value_vocabulary": vocabulary}
        text = " ".join(message.unescape(part) for part in raw.split(message.repetition))
        return {"value_source_value": text.strip() or None}

    def _specimen(
        self,
        message: Hl7Message,
        obr: list[str] | None,
        spm: list[str] | None,
        order_id: str,
        order_time: dt.datetime | None,
        context: dict[str, object],
        mapped: MappedMessage,
    ) -> None:
        if spm is not None:
            type_field, source_id = _field(spm, 4), _field(spm, 2)
            collected = _date(_component(components(_field(spm, 17), message), 0), "SPM-17")
        else:
            type_field, source_id, collected = _field(obr, 15), "", None
        code_parts = components(type_field, message)
        code = code_parts[0].split(message.subcomponent)[0].strip()
        moment = collected or order_time
        if not code or moment is None:
            return
        source_id = (
            source_id.split(message.component)[0].split(message.subcomponent)[-1] or order_id
        )
        local = SPECIMEN_CODES.get(code.upper())
        line = "|".join(spm) if spm is not None else "|".join(obr or ())
        mapped.specimens.append(
            {
                "_source_record_id": f"{order_id}/specimen",
                "_source_version": context["_source_version"],
                "_record_hash": record_hash(line),
                "_source_patient_id": context["_source_patient_id"],
                "specimen_date": moment.date(),
                "specimen_datetime": moment,
                "specimen_type_concept_id": LAB_TYPE_CONCEPT,
                "specimen_source_id": source_id,
                "specimen_source_value": local or code,
                "_specimen_vocabulary": "medlake" if local else "HL70487",
            }
        )


@lru_cache(maxsize=65536)
def _clock(moment: dt.datetime) -> str:
    return f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"


def _field(fields: list[str] | None, n: int) -> str:
    if fields is None or n >= len(fields):
        return ""
    return fields[n]


def reference_range(text: str) -> tuple[float | None, float | None]:
    """(low, high) of an HL7 reference range: ``3.9-6.1``, ``<5.2``, ``>60``."""
    match = _RANGE.match(text) if text else None
    if match is None:
        return None, None
    if match.group(1) is not None:
        return float(match.group(1)), float(match.group(2))
    value = float(match.group(4))
    return (None, value) if match.group(3).startswith("<") else (value, None)


def bad_result_entries(
    location: str, payload: str, bad: list[tuple[str, str]]
) -> list[QuarantineEntry]:
    return [QuarantineEntry(location, reason, payload, where) for reason, where in bad]

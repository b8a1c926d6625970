"""FHIR R4 data types read into staging values: dates, references, codes, quantities.

Small functions the resource mappers in :mod:`medlake.ingest.fhir_resources` call in
their hot loop. They work on the plain dicts and lists ``orjson`` gives (no object
model) and either return a value of the exact Python type its Arrow column takes, or
raise :class:`Reject` with the reason and a FHIRPath-ish field, so that a bad resource
is quarantined whole and never leaves a half-built row or a mistyped value behind.

Dates: FHIR ``date``/``dateTime`` values may be partial (``2021``, ``2021-04``); those
become the first day of the period, without a time. A ``dateTime`` with a time zone
keeps its local wall-clock time (``2024-06-30T08:45:00+08:00`` is 08:45 on 30 June), as
OMOP datetimes are local and the date column must agree with the datetime column.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

#: FHIR code system URI -> OMOP ``vocabulary_id``. One table for every resource type;
#: :data:`PROCEDURE_VOCABULARIES` overrides it where procedures use another vocabulary.
CODE_SYSTEMS: dict[str, str] = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "urn:oid:2.16.840.1.113883.6.90": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "urn:oid:2.16.840.1.113883.6.3": "ICD10",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9CM",
    "urn:oid:2.16.840.1.113883.6.103": "ICD9CM",
    "http://www.cms.gov/Medicare/Coding/ICD10": "ICD10PCS",
    "http://snomed.info/sct": "SNOMED",
    "urn:oid:2.16.840.1.113883.6.96": "SNOMED",
    "http://loinc.org": "LOINC",
    "urn:oid:2.16.840.1.113883.6.1": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "urn:oid:2.16.840.1.113883.6.88": "RxNorm",
    "http://www.whocc.no/atc": "ATC",
    "urn:oid:2.16.840.1.113883.6.73": "ATC",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://www.ama-assn.org/go/cpt": "CPT4",
    "http://unitsofmeasure.org": "UCUM",
    # HL7 table 0487 (specimen type): no OMOP vocabulary; see SPECIMEN_TYPES.
    "http://terminology.hl7.org/CodeSystem/v2-0487": "HL7 0487",
}
#: Procedures coded in ICD-9-CM use its volume 3, OMOP's ICD9Proc.
PROCEDURE_VOCABULARIES: dict[str, str] = {
    **CODE_SYSTEMS,
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9Proc",
    "urn:oid:2.16.840.1.113883.6.104": "ICD9Proc",
}
#: HL7 table 0487 specimen codes -> the local ``medlake`` specimen concept codes.
SPECIMEN_TYPES: dict[str, str] = {
    "BLD": "blood",
    "BLDV": "blood",
    "SER": "serum",
    "PLAS": "plasma",
    "UR": "urine",
    "THRT": "respiratory swab",
    "NOS": "respiratory swab",
}
#: ``Quantity.comparator`` -> OMOP operator concept (Meas Value Operator domain).
OPERATORS: dict[str, int] = {"<": 4171756, "<=": 4171754, "=": 4172703, ">=": 4171755,
                             ">": 4172704}  # fmt: skip
#: ``Quantity`` units of time -> days, for days supply.
DAYS_PER_UNIT: dict[str, float] = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7,
                                   "mo": 30, "month": 30, "a": 365, "h": 1 / 24}  # fmt: skip


class Reject(Exception):  # noqa: N818 - a control-flow signal, not an error for users
    """The resource cannot be staged: ``reason`` for the quarantine, ``field`` where."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


_WHEN_CACHE: dict[str, tuple[dt.date, str | None]] = {}
_CACHE_SIZE = 100_000  # entries per cache, cleared when full (bounds a reader's memory)
_ZONE_STARTS = frozenset("+-Z")
#: ``when(value, ...)`` if already parsed, else None (for mappers' inlined usual case).
cached_when = _WHEN_CACHE.get


def when(value: object, field: str) -> tuple[dt.date, str | None]:
    """Date and (when the value has a time) local datetime of a FHIR date or dateTime.

    The datetime comes as a checked ISO string (``2024-06-30T08:45:00``): the reader
    casts whole columns to timestamps, which is far cheaper than converting datetime
    objects one by one. Parsed values are cached: a visit's resources share their times.
    """
    if type(value) is not str:
        raise Reject("date is not a string", field)
    cached = _WHEN_CACHE.get(value)
    if cached is not None:
        return cached
    parsed = _parse_when(value, field)
    if len(_WHEN_CACHE) >= _CACHE_SIZE:
        _WHEN_CACHE.clear()
    _WHEN_CACHE[value] = parsed
    return parsed


def _parse_when(value: str, field: str) -> tuple[dt.date, str | None]:
    try:
        n = len(value)
        if n == 10:
            return dt.date.fromisoformat(value), None
        if n > 10 and value[10] == "T":
            moment = dt.datetime.fromisoformat(value)
            if (n == 19 or (n > 19 and value[19] in _ZONE_STARTS)) and value[4] == value[7] \
                    == "-" and value[13] == value[16] == ":" and value[11:13] != "24":  # fmt: skip
                # YYYY-MM-DDTHH:MM:SS, then a zone or nothing (the usual FHIR dateTime),
                # valid as parsed: the local wall-clock ISO string is these 19 characters.
                return moment.date(), value[:19]
            if moment.tzinfo is not None:
                moment = moment.replace(tzinfo=None)
            return moment.date(), moment.isoformat()
        if n == 4 and value.isdigit():
            return dt.date(int(value), 1, 1), None
        if n == 7 and value[4] == "-" and value[:4].isdigit() and value[5:].isdigit():
            return dt.date(int(value[:4]), int(value[5:]), 1), None
    except ValueError:
        pass
    raise Reject(f"unparseable date {value[:40]!r}", field)


def first_when(resource: dict[str, Any], rtype: str, paths: tuple[tuple[str, str | None], ...],
               missing: str) -> tuple[dt.date, str | None]:  # fmt: skip
    """The first present of several date elements (``(element, sub-element)`` pairs).

    Raises :class:`Reject` naming ``missing`` when none is present.
    """
    for name, sub in paths:
        value = resource.get(name)
        if value is None:
            continue
        if sub is None:
            cached = _WHEN_CACHE.get(value) if type(value) is str else None
            return cached or when(value, f"{rtype}.{name}")  # (the name built only if needed)
        if type(value) is not dict:
            raise Reject("not a Period", f"{rtype}.{name}")
        value = value.get(sub)
        if value is not None:
            return when(value, f"{rtype}.{name}.{sub}")
    raise Reject("missing required field", missing)


def local_id(reference: object, expected: str, field: str, urls: dict[str, str]) -> str:
    """The logical id a ``Reference`` points to, checked to be of type ``expected``.

    Accepts ``Type/id``, absolute ``http(s)://.../Type/id`` (``/_history/n`` dropped)
    and, inside a Bundle, ``urn:uuid:...`` full URLs resolved through ``urls``
    (fullUrl -> ``Type/id``).
    """
    if type(reference) is not dict:
        raise Reject("bad reference: not a Reference", field)
    ref = reference.get("reference")
    if type(ref) is not str or not ref:
        raise Reject("bad reference: no literal reference", field)
    if ref.startswith(expected + "/"):  # the common "Type/id"
        rid = ref[len(expected) + 1 :]
        if rid and "/" not in rid:
            return rid
    if ref.startswith("urn:"):
        resolved = urls.get(ref)
        if resolved is None:
            raise Reject(f"bad reference {ref[:80]!r}: not in this Bundle", field)
        ref = resolved
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or parts[-2] != expected or not parts[-1]:
        raise Reject(f"bad reference {ref[:80]!r}: expected {expected}/<id>", field)
    return parts[-1]


def code_of(concept: object, field: str,
            systems: dict[str, str] = CODE_SYSTEMS) -> tuple[str, str]:  # fmt: skip
    """``(code, vocabulary_id)`` of a required CodeableConcept: its first known coding."""
    if concept is None:
        raise Reject("missing required field", field)
    if type(concept) is not dict:
        raise Reject("not a CodeableConcept", field)
    codings = concept.get("coding")
    if not codings:
        raise Reject("code has no coding", field)
    unknown = None
    for coding in codings:
        system = coding.get("system")
        vocabulary = systems.get(system)  # type: ignore[arg-type]
        code = coding.get("code")
        if vocabulary is not None and type(code) is str and code:
            return code, vocabulary
        if unknown is None:
            unknown = system
    raise Reject(f"unknown code system {str(unknown)[:120]!r}", field)


def optional_code(concept: object) -> tuple[str | None, str | None]:
    """``(code, vocabulary_id)`` of an optional CodeableConcept, leniently.

    A known system gives its vocabulary; else the first coding's code without one;
    else the text. Used for values, routes and body sites, where a local code is
    still worth keeping as a source value.
    """
    if type(concept) is not dict:
        return None, None
    first = None
    for coding in concept.get("coding") or ():
        code = coding.get("code")
        if type(code) is not str or not code:
            continue
        vocabulary = CODE_SYSTEMS.get(coding.get("system"))  # type: ignore[arg-type]
        if vocabulary is not None:
            return code, vocabulary
        if first is None:
            first = code
    if first is not None:
        return first, None
    text = concept.get("text")
    return (text, None) if type(text) is str and text else (None, None)


def number(value: object, field: str) -> float | None:
    """A JSON number as float (``None`` stays ``None``); anything else is rejected."""
    if value is None:
        return None
    kind = type(value)
    if kind is float or kind is int:
        return float(value)  # type: ignore[arg-type]
    raise Reject("not a number", field)


def quantity(value: object, field: str) -> tuple[float | None, str | None, str | None, int | None]:
    """``(value, unit code, unit vocabulary, operator concept)`` of a Quantity."""
    if value is None:
        return None, None, None, None
    if type(value) is not dict:
        raise Reject("not a Quantity", field)
    amount = value.get("value")  # number(), inlined: the field name is built only if needed
    if amount is not None:
        kind = type(amount)
        if kind is int:
            amount = float(amount)
        elif kind is not float:
            raise Reject("not a number", field + ".value")
    code = value.get("code")
    vocabulary = CODE_SYSTEMS.get(value.get("system"))  # type: ignore[arg-type]
    if type(code) is not str or not code:
        code, vocabulary = value.get("unit"), None
        if type(code) is not str or not code:
            code = None
    comparator = value.get("comparator")
    operator = OPERATORS.get(comparator) if type(comparator) is str else None
    return amount, code, vocabulary, operator


def days(value: object, field: str) -> int | None:
    """Whole days of a Duration (``{"value": 30, "code": "d"}``); ``None`` when absent."""
    amount, unit, _, _ = quantity(value, field)
    if amount is None:
        return None
    factor = DAYS_PER_UNIT.get(unit or "d")
    if factor is None:
        raise Reject(f"unknown unit of time {unit!r}", field)
    whole = round(amount * factor)
    if not 0 <= whole < 100_000:
        raise Reject("implausible duration", field)
    return whole


def reference_range(ranges: object, field: str) -> tuple[float | None, float | None]:
    """Low and high of the first ``referenceRange`` (its Quantities, else its text).

    Text follows the HL7 v2 habit: ``3.5-5.5``, ``<5.2``, ``>60``.
    """
    if not ranges or type(ranges) is not list:
        return None, None
    first = ranges[0]
    if type(first) is not dict:
        raise Reject("not a Range", field)
    low, high = first.get("low"), first.get("high")
    if low is not None or high is not None:
        return (quantity(low, field + ".low")[0], quantity(high, field + ".high")[0])
    text = first.get("text")
    if type(text) is not str:
        return None, None
    # A lab's ranges repeat across its results: parsed once per text.
    cached = _RANGE_CACHE.get(text)
    if cached is None:
        if len(_RANGE_CACHE) >= _CACHE_SIZE:
            _RANGE_CACHE.clear()
        cached = _RANGE_CACHE[text] = _range_text(text)
    return cached


_RANGE_CACHE: dict[str, tuple[float | None, float | None]] = {}


def _range_text(text: str) -> tuple[float | None, float | None]:
    try:
        if text.startswith("<"):
            return None, float(text.lstrip("<="))
        if text.startswith(">"):
            return float(text.lstrip(">=")), None
        lo, sep, hi = text.partition("-")
        if sep and lo:
            return float(lo), float(hi)
    except ValueError:
        pass
    return None, None


def integer(value: object, field: str) -> int | None:
    """A JSON integer that fits int64 (``None`` stays ``None``)."""
    if value is None:
        return None
    if type(value) is not int or not -(2**63) <= value < 2**63:
        raise Reject("not an integer", field)
    return value


def text(value: object) -> str | None:
    """A string element, or ``None`` when absent or not a string."""
    return value if type(value) is str and value else None


def has_cjk(value: str) -> bool:
    """True when ``value`` holds a CJK ideograph (a hanzi name)."""
    return any("\u3400" <= ch <= "\u9fff" or "\U00020000" <= ch <= "\U0002ebef" for ch in value)


def version_of(resource: dict[str, Any], default: int) -> int:
    """``meta.versionId`` when it is an integer, else ``meta.lastUpdated`` in epoch ms."""
    meta = resource.get("meta")
    if type(meta) is not dict:
        return default
    version = meta.get("versionId")
    if type(version) is str and version.isdigit() and len(version) < 18:
        return int(version)
    if type(version) is int and 0 <= version < 2**62:
        return version
    updated = meta.get("lastUpdated")
    if type(updated) is str:
        try:
            moment = dt.datetime.fromisoformat(updated)
        except ValueError:
            raise Reject(f"unparseable instant {updated[:40]!r}", "meta.lastUpdated") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return int(moment.timestamp() * 1000)
    return default

"""LIS (实验室信息系统) HL7 v2.5 messages, one file per day.

The LIS sends ``ADT^A01`` when it first registers a patient, ``ADT^A08`` when it learns a
new address or phone, and one ``ORU^R01`` per order (OBR) with one OBX per result
(LOINC-coded, UCUM units, reference range, H/L/N flag; qualitative results as CWE with
LOINC answer codes). Files are ``lis/YYYY/YYYYMMDD.hl7`` with bare ``\\r`` segment
separators or, on the days the interface engine logged raw traffic,
``lis/YYYY/YYYYMMDD.mllp`` with each message MLLP-framed (``\\x0b … \\x1c\\r``). The LIS
keeps its own patient numbers; names are mostly pinyin (``ZHANG^XIAOMING``).
"""

from __future__ import annotations

import random

import numpy as np

from medlake.synth import defects as d
from medlake.synth.care import LabOrder, Visit
from medlake.synth.catalogue import UNKNOWN_LOINC
from medlake.synth.dates import (
    WINDOW_END_ORD,
    WINDOW_START_ORD,
    compact_date,
    hl7_timestamp,
    year_of,
)
from medlake.synth.exports import ChunkExports
from medlake.synth.identity import LIS, SourcePatient
from medlake.synth.lab_catalogue import LAB_PANELS, QUALITATIVE_ANSWERS, LabTest
from medlake.synth.labs import LabValue

#: Share of days whose file is MLLP-framed.
MLLP_DAY_RATE = 0.4
_SENDER = "MSH|^~\\&|LIS|BJYY-JYK|HIS|BJYY"


class LisDayFiles:
    """Which days are MLLP-framed: drawn once from the seed, same for every chunk."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x715,)))
        days = WINDOW_END_ORD + 400 - WINDOW_START_ORD + 1
        self._mllp = (rng.random(days) < MLLP_DAY_RATE).tolist()

    def path(self, ordinal: int) -> str:
        framed = self._mllp[min(max(ordinal - WINDOW_START_ORD, 0), len(self._mllp) - 1)]
        return f"lis/{year_of(ordinal)}/{compact_date(ordinal)}.{'mllp' if framed else 'hl7'}"


def _pid(patient: SourcePatient, r: random.Random) -> tuple[str, bool]:
    """PID segment; True when its birth date was left out as a planted defect."""
    identifiers = f"{patient.patient_id}^^^LIS^PI"
    if patient.resident_id:
        identifiers += f"~{patient.resident_id}^^^CHN^NNCHN"
    year, month, day = patient.birth
    birth = f"{year:04d}{month:02d}{day:02d}"
    missing_birth = d.roll(r, "missing_birth_date")
    if missing_birth:
        birth = ""
    address = ""
    if patient.address is not None:
        place = patient.address.district
        address = (f"{patient.address.line}^^{place.city}{place.district}^{place.province}"
                   f"^{place.postcode}^CHN^H")  # fmt: skip
    phone = f"{patient.phone}^PRN^CP" if patient.phone else ""
    sex = patient.person.sex
    segment = (f"PID|1||{identifiers}||{patient.family}^{patient.given}||{birth}|{sex}"
               f"|||{address}||{phone}")  # fmt: skip
    return segment, missing_birth


class LisWriter:
    """Writes one chunk's LIS messages and the defects planted in them."""

    def __init__(self, out: ChunkExports, days: LisDayFiles, r: random.Random) -> None:
        self.out = out
        self.days = days
        self.r = r
        self._pending: list[tuple[d.Defect, tuple[object, ...]]] = []
        self._counter: dict[str, int] = {}

    def _control_id(self, patient: SourcePatient) -> str:
        count = self._counter.get(patient.patient_id, 0) + 1
        self._counter[patient.patient_id] = count
        return f"{patient.patient_id}{count:04d}"

    def _emit(self, ordinal: int, minute: int, control: str, segments: list[str],
              defects: list[tuple[str, str, str]]) -> None:  # fmt: skip
        path = self.days.path(ordinal)
        key = (minute, control)
        self.out.hl7(path, key, "\r".join(segments) + "\r")
        for kind, field, detail in defects:
            self._pending.append((d.Defect(LIS, path, control, 0, kind, field, detail), key))

    def register(self, patient: SourcePatient, ordinal: int, minute: int, event: str,
                 visit_no: str, kind: str) -> None:  # fmt: skip
        """``ADT^A01`` (first registration) or ``ADT^A08`` (demographics update)."""
        control = self._control_id(patient)
        stamp = hl7_timestamp(ordinal, minute)
        pid, missing_birth = _pid(patient, self.r)
        segments = [
            f"{_SENDER}|{stamp}||ADT^{event}^ADT_A01|{control}|P|2.5|||||CHN|UNICODE UTF-8",
            f"EVN|{event}|{stamp}",
            pid,
            f"PV1|1|{kind}|||||||||||||||||{visit_no}",
        ]
        defects = [(d.MISSING_REQUIRED_FIELD, "PID-7", "")] if missing_birth else []
        self._emit(ordinal, minute, control, segments, defects)

    def report(self, patient: SourcePatient, visit: Visit, order: LabOrder, visit_no: str,
               department: str) -> None:  # fmt: skip
        """One ``ORU^R01`` with the order's results."""
        r = self.r
        control = self._control_id(patient)
        report_stamp = hl7_timestamp(order.ordinal, order.report_minute)
        collected = hl7_timestamp(order.ordinal, order.minute)
        defects: list[tuple[str, str, str]] = []
        if visit.after_death:
            defects.append((d.EVENT_AFTER_DEATH, "OBR-7", collected))
        elif d.roll(r, "bad_date"):
            collected = d.bad_compact_date(year_of(order.ordinal), r) + collected[8:]
            defects.append((d.BAD_DATE, "OBR-7", collected))
        pid, missing_birth = _pid(patient, r)
        if missing_birth:
            defects.append((d.MISSING_REQUIRED_FIELD, "PID-7", ""))
        panel = LAB_PANELS[order.panel]
        placer = f"{control}01"
        filler = f"J{control}"
        specimen = f"{panel.specimen_hl7}^{panel.specimen_zh}^HL70487"
        segments = [
            f"{_SENDER}|{report_stamp}||ORU^R01^ORU_R01|{control}|P|2.5|||||CHN|UNICODE UTF-8",
            pid,
            f"PV1|1|{visit.kind}|{department}||||||||||||||||{visit_no}",
            f"ORC|RE|{placer}|{filler}||CM",
            f"OBR|1|{placer}|{filler}|{panel.local_code}^{panel.name_zh}^99LIS|||{collected}"
            f"|||||||{collected}|{specimen}|||||||{report_stamp}||LAB|F",
        ]
        for number, (test, value) in enumerate(order.results, start=1):
            segment, defect = self._obx(number, test, value, report_stamp)
            segments.append(segment)
            if defect:
                defects.append(defect)
        self._emit(order.ordinal, order.report_minute, control, segments, defects)

    def _obx(self, number: int, test: LabTest, value: LabValue,
             stamp: str) -> tuple[str, tuple[str, str, str] | None]:  # fmt: skip
        r = self.r
        code, name = test.loinc, test.name_en
        defect: tuple[str, str, str] | None = None
        if d.roll(r, "unknown_code"):
            code, name = r.choice(UNKNOWN_LOINC)
            defect = (d.UNKNOWN_CODE, f"OBX[{number}]-3", code)
        if isinstance(value, bool):
            present, absent = QUALITATIVE_ANSWERS[test.key]
            answer = present if value else absent
            return (f"OBX|{number}|CWE|{code}^{name}^LN||{answer[0]}^{answer[1]}^LN||{absent[1]}"
                    f"|{'A' if value else 'N'}|||F|||{stamp}"), defect  # fmt: skip
        number_value = float(value)
        if defect is None and d.roll(r, "impossible_lab_value"):
            number_value, how = d.impossible_value(number_value, r)
            defect = (d.IMPOSSIBLE_LAB_VALUE, f"OBX[{number}]-5", how)
        text = f"{number_value:.{test.decimals}f}"
        flag = flag_for(test, number_value)
        return (f"OBX|{number}|NM|{code}^{name}^LN||{text}|{test.unit}^^UCUM"
                f"|{reference_range(test)}|{flag}|||F|||{stamp}"), defect  # fmt: skip

    def resolve_defect_lines(self) -> None:
        """Give the chunk's LIS defects their message numbers once files are sorted."""
        numbers = {path: self.out.sorted_message_numbers(path) for path in
                   {defect.file for defect, _ in self._pending}}  # fmt: skip
        for defect, key in self._pending:
            defect.line = numbers[defect.file][key]
            self.out.defects.append(defect)
        self._pending.clear()


def reference_range(test: LabTest) -> str:
    """HL7 reference range: ``low-high``, ``>low`` or ``<high``."""
    if test.low is not None and test.high is not None and test.low > 0:
        return f"{test.low:g}-{test.high:g}"
    if test.high is not None:
        return f"<{test.high:g}"
    return f">{test.low:g}" if test.low is not None else ""


def flag_for(test: LabTest, value: float) -> str:
    """H, L or N against the reference range."""
    if test.high is not None and value > test.high:
        return "H"
    if test.low is not None and value < test.low:
        return "L"
    return "N"


"""HIS (医院信息系统) CSV exports, laid out the way a Chinese HIS database dumps them.

``patients.csv``, ``visits.csv`` and ``diagnoses.csv`` are UTF-8 with the HIS's own
column names (pinyin initials, as HIS schemas name columns: BRID 病人ID, XM 姓名, XB 性别,
CSRQ 出生日期 …); ``prescriptions.csv`` is the pharmacy's export with Chinese headers in
GB18030. Lines end in CRLF. Dates are printed as the HIS prints them (``2021-03-14``,
``2021-03-14 09:32:00``, and ``2021/03/14 09:40`` in the pharmacy file).
"""

from __future__ import annotations

import random

from medlake.synth import defects as d
from medlake.synth.care import Visit
from medlake.synth.catalogue import DIAGNOSES, DRUGS, UNKNOWN_ATC, UNKNOWN_ICD10, VISIT_KINDS
from medlake.synth.dates import clock, iso_date, year_of
from medlake.synth.exports import ChunkExports
from medlake.synth.identity import HIS, SourcePatient

PATIENTS = "his/patients.csv"
VISITS = "his/visits.csv"
DIAGNOSIS_FILE = "his/diagnoses.csv"
PRESCRIPTIONS = "his/prescriptions.csv"

HEADERS: dict[str, list[str]] = {
    PATIENTS: ["BRID", "XM", "XB", "CSRQ", "SFZH", "LXDH", "JTDZ", "YZBM", "JDRQ", "SWRQ"],
    VISITS: ["JZH", "BRID", "JZLX", "KSMC", "JZRQ", "CYRQ"],
    DIAGNOSIS_FILE: ["JZH", "BRID", "ZDXH", "ZDLB", "ZDDM", "ZDMC", "ZDRQ"],
    PRESCRIPTIONS: ["处方号", "就诊号", "病人ID", "开方时间", "ATC编码", "药品名称", "规格",
                    "单次剂量", "剂量单位", "频次", "给药途径", "用药天数"],
}  # fmt: skip

_HIS_UNITS = {"[iU]": "U", "ug": "μg"}


def visit_number(patient: SourcePatient, visit: Visit) -> str:
    """HIS 就诊号: visit-type prefix, the patient number, the visit's count (就诊次数)."""
    return f"{VISIT_KINDS[visit.kind][1]}{patient.patient_id[1:]}{visit.seq:03d}"


def write_patient(out: ChunkExports, patient: SourcePatient, r: random.Random) -> None:
    """One row of ``patients.csv``."""
    person = patient.person
    year, month, day = patient.birth
    birth = f"{year:04d}-{month:02d}-{day:02d}"
    sex = "男" if person.sex == "M" else "女"
    defect: tuple[str, str, str] | None = None
    if d.roll(r, "missing_birth_date"):
        birth, defect = "", (d.MISSING_REQUIRED_FIELD, "CSRQ", "")
    elif d.roll(r, "bad_date"):
        birth = d.bad_iso_date(year, r)
        defect = (d.BAD_DATE, "CSRQ", birth)
    elif d.roll(r, "missing_sex"):
        sex, defect = "", (d.MISSING_REQUIRED_FIELD, "XB", "")
    address = patient.address
    death = iso_date(person.death_ord) if person.death_ord and not patient.duplicate else ""
    line = out.csv_row(PATIENTS, [
        patient.patient_id, patient.name, sex, birth, patient.resident_id or "",
        patient.phone or "", address.text if address else "",
        address.district.postcode if address else "", iso_date(patient.registered_ord), death,
    ])  # fmt: skip
    if defect:
        out.defects.append(d.Defect(HIS, PATIENTS, patient.patient_id, line, *defect))


def write_visit(out: ChunkExports, patient: SourcePatient, visit: Visit, r: random.Random) -> None:
    """A visit's rows in ``visits.csv``, ``diagnoses.csv`` and ``prescriptions.csv``."""
    number = visit_number(patient, visit)
    start = f"{iso_date(visit.ordinal)} {clock(visit.minute)}"
    discharge = f"{iso_date(visit.discharge_ord)} 10:00:00" if visit.discharge_ord else ""
    defect: tuple[str, str, str] | None = None
    if visit.after_death:
        defect = (d.EVENT_AFTER_DEATH, "JZRQ", start)
    elif d.roll(r, "missing_visit_date"):
        start, defect = "", (d.MISSING_REQUIRED_FIELD, "JZRQ", "")
    elif d.roll(r, "bad_date"):
        start = f"{d.bad_iso_date(year_of(visit.ordinal), r)} {clock(visit.minute)}"
        defect = (d.BAD_DATE, "JZRQ", start)
    kind_label = VISIT_KINDS[visit.kind][0]
    line = out.csv_row(VISITS, [number, patient.patient_id, kind_label, visit.department,
                                start, discharge])  # fmt: skip
    if defect:
        out.defects.append(d.Defect(HIS, VISITS, number, line, *defect))
    day = iso_date(visit.ordinal)
    for rank, code in enumerate(visit.diagnoses, start=1):
        name = DIAGNOSES[code].name_zh
        unknown = d.roll(r, "unknown_code")
        if unknown:
            code, name = r.choice(UNKNOWN_ICD10)
        line = out.csv_row(DIAGNOSIS_FILE, [number, patient.patient_id, rank,
                                            "主要诊断" if rank == 1 else "其他诊断", code, name,
                                            day])  # fmt: skip
        if unknown:
            record = f"{number}#{rank}"
            defect = (d.UNKNOWN_CODE, "ZDDM", code)
            out.defects.append(d.Defect(HIS, DIAGNOSIS_FILE, record, line, *defect))
    ordered_at = clock(min(visit.minute + 8, 1439))[:5]
    ordered = f"{iso_date(visit.ordinal).replace('-', '/')} {ordered_at}"
    for k, (atc, days) in enumerate(visit.drugs, start=1):
        drug = DRUGS[atc]
        code, name = atc, drug.name_zh
        unknown = d.roll(r, "unknown_code")
        if unknown:
            code, name = r.choice(UNKNOWN_ATC)
        prescription = f"CF{number}{k:02d}"
        dose = f"{drug.dose:g}"
        line = out.csv_row(PRESCRIPTIONS, [
            prescription, number, patient.patient_id, ordered, code, name, drug.strength, dose,
            _HIS_UNITS.get(drug.dose_unit, drug.dose_unit), drug.frequency, drug.route, days,
        ])  # fmt: skip
        if unknown:
            out.defects.append(d.Defect(HIS, PRESCRIPTIONS, prescription, line,
                                        d.UNKNOWN_CODE, "ATC编码", code))  # fmt: skip

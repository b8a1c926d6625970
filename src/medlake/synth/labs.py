"""Lab results and vital signs that follow a person's diseases and treatment over time.

Each value is the person's set point (:class:`~medlake.synth.clinical.Physiology`),
moved by what is true on the day of the test (diabetic yet? on a statin? CKD since
when? pneumonia this week?) plus analytical noise. Derived values are computed the way
laboratories do: glucose tracks HbA1c (ADAG: eAG = 1.59 × A1c − 2.59 mmol/L), total
cholesterol = LDL + HDL + TG/2.2 (Friedewald, mmol/L), eGFR from creatinine, age and sex
by CKD-EPI 2009 (Levey et al., Ann Intern Med 2009), so the exports are internally
consistent.
"""

from __future__ import annotations

import math
import random

from medlake.synth.clinical import Physiology
from medlake.synth.dates import WINDOW_END_ORD
from medlake.synth.lab_catalogue import LAB_PANELS, LAB_TESTS, LabTest
from medlake.synth.people import Person

_YEAR = 365.2425
_DIABETES = ("E11.9", "E11.65", "E11.22", "E10.9")
_ACUTE_DAYS = 21

#: A result is a number, or True/False for "positive"/"negative" qualitative tests.
LabValue = float | bool


def _active(person: Person, code: str, ordinal: int) -> bool:
    onset = person.conditions.get(code)
    return onset is not None and onset <= ordinal


def _recent(person: Person, code: str, ordinal: int) -> bool:
    onset = person.conditions.get(code)
    return onset is not None and 0 <= ordinal - onset <= _ACUTE_DAYS


def _diabetes_onset(person: Person) -> int | None:
    for code in _DIABETES:
        if code in person.conditions:
            return person.conditions[code]
    return None


def _age_years(person: Person, ordinal: int) -> float:
    return (ordinal - person.birth_ord) / _YEAR


def ckd_epi_egfr(creatinine_umol: float, age: float, male: bool) -> float:
    """CKD-EPI 2009 eGFR (mL/min/1.73 m²) from serum creatinine in µmol/L."""
    scr = creatinine_umol / 88.4
    kappa, alpha = (0.9, -0.411) if male else (0.7, -0.329)
    ratio = scr / kappa
    value = 141 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.209 * 0.993 ** max(age, 18)
    return value if male else value * 1.018


def creatinine_for_egfr(egfr: float, age: float, male: bool) -> float:
    """Invert CKD-EPI 2009: the creatinine (µmol/L) that gives ``egfr``."""
    kappa, alpha = (0.9, -0.411) if male else (0.7, -0.329)
    base = 141 * 0.993 ** max(age, 18) * (1.0 if male else 1.018)
    ratio = (egfr / base) ** (-1 / 1.209)
    if ratio < 1.0:
        ratio = (egfr / base) ** (1 / alpha)
    return ratio * kappa * 88.4


def _hba1c(person: Person, body: Physiology, ordinal: int, r: random.Random) -> float:
    onset = _diabetes_onset(person)
    if onset is None or onset > ordinal:
        return body.hba1c + r.gauss(0, 0.12)
    treated = ordinal - onset > 180
    return body.diabetes_hba1c - (0.7 if treated else 0.0) + r.gauss(0, 0.45)


def _egfr(person: Person, body: Physiology, ordinal: int, r: random.Random) -> float:
    onset = person.conditions.get("N18.9")
    if onset is not None and onset <= ordinal:
        decline = 2.5 * (ordinal - onset) / _YEAR
        return max(body.ckd_egfr - decline + r.gauss(0, 3), 5.0)
    age_drift = 0.8 * (WINDOW_END_ORD - ordinal) / _YEAR
    return max(body.egfr + age_drift + r.gauss(0, 5), 61.0)


def _ldl(person: Person, body: Physiology, ordinal: int, r: random.Random) -> float:
    on_statin = person.statin_start_ord is not None and person.statin_start_ord <= ordinal
    return max(body.ldl * (0.6 if on_statin else 1.0) + r.gauss(0, 0.2), 0.4)


def panel_results(
    person: Person, panel_code: str, ordinal: int, r: random.Random
) -> list[tuple[LabTest, LabValue]]:
    """The results of one LIS order (panel) for ``person`` on ``ordinal``."""
    body = person.body
    assert body is not None, "physiology is drawn before visits"
    male = person.sex == "M"
    results: list[tuple[LabTest, LabValue]] = []
    for key in LAB_PANELS[panel_code].tests:
        value: LabValue
        if key == "HBA1C":
            value = _hba1c(person, body, ordinal, r)
        elif key == "GLU":
            value = max(1.59 * _hba1c(person, body, ordinal, r) - 2.59 + r.gauss(0, 0.6), 2.8)
        elif key in ("TC", "LDL", "HDL", "TG"):
            ldl = _ldl(person, body, ordinal, r)
            hdl = max(body.hdl + r.gauss(0, 0.08), 0.4)
            tg = max(body.tg * math.exp(r.gauss(0, 0.2)), 0.3)
            value = {"LDL": ldl, "HDL": hdl, "TG": tg, "TC": ldl + hdl + tg / 2.2}[key]
        elif key == "CREA":
            egfr_true = _egfr(person, body, ordinal, r)
            value = creatinine_for_egfr(egfr_true, _age(person, ordinal), male)
        elif key == "EGFR":
            continue  # reported with its creatinine below
        elif key == "UA":
            value = body.urate + 25 * _active(person, "N18.9", ordinal) + r.gauss(0, 25)
        elif key == "ALT":
            value = body.alt * (1.8 if _active(person, "K74.60", ordinal) else 1.0)
            value *= math.exp(r.gauss(0, 0.15))
        elif key == "AST":
            value = body.alt * 1.05 * (2.0 if _active(person, "K74.60", ordinal) else 1.0)
            value *= math.exp(r.gauss(0, 0.15))
        elif key == "HB":
            value = body.hb - 8 * _active(person, "N18.9", ordinal) + r.gauss(0, 4)
        elif key == "WBC":
            infected = _recent(person, "J18.9", ordinal)
            value = math.exp(math.log(12.5 if infected else 6.2) + r.gauss(0, 0.18))
        elif key == "PLT":
            value = (95 if _active(person, "K74.60", ordinal) else 235) + r.gauss(0, 35)
        elif key == "K":
            value = 4.15 + 0.45 * _active(person, "N18.9", ordinal) + r.gauss(0, 0.28)
        elif key == "NA":
            value = 140.5 + r.gauss(0, 1.8)
        elif key == "TSH":
            treated = _active(person, "E03.9", ordinal - 60)
            value = body.tsh / (3.6 if treated else 1.0) * math.exp(r.gauss(0, 0.15))
        elif key == "CRP":
            if _recent(person, "J18.9", ordinal):
                median = 65.0
            elif _recent(person, "U07.1", ordinal):
                median = 22.0
            else:
                median = 1.8
            value = math.exp(math.log(median) + r.gauss(0, 0.5))
        elif key == "HBSAG":
            value = "B18.1" in person.conditions  # infection predates its diagnosis
        elif key == "COV2":
            value = _recent(person, "U07.1", ordinal)
        else:  # pragma: no cover - the catalogue and this model change together
            raise KeyError(key)
        results.append((LAB_TESTS[key], value))
        if key == "CREA":
            egfr = ckd_epi_egfr(round(float(value)), _age(person, ordinal), male)
            results.append((LAB_TESTS["EGFR"], egfr))
    return results


def _age(person: Person, ordinal: int) -> float:
    return _age_years(person, ordinal)


def vital_signs(person: Person, ordinal: int, r: random.Random) -> dict[str, float]:
    """Blood pressure, heart rate, weight, height and BMI measured on ``ordinal``."""
    body = person.body
    assert body is not None, "physiology is drawn before visits"
    age = _age_years(person, ordinal)
    hypertensive = _active(person, "I10", ordinal)
    sbp = body.sbp - (14 if hypertensive and r.random() < 0.6 else 0) + r.gauss(0, 7)
    if age < 18:
        sbp = 100 + age + r.gauss(0, 6)
    dbp = 0.55 * sbp + 8 + r.gauss(0, 5)
    if age < 18:
        height = max(50 + 6.2 * age, 45) * (body.height / 165) + r.gauss(0, 1)
        bmi = 16.5 + 0.15 * age + r.gauss(0, 1)
    else:
        height = body.height + r.gauss(0, 0.6)
        bmi = body.bmi + r.gauss(0, 0.5)
    weight = bmi * (height / 100) ** 2
    return {
        "SBP": round(sbp),
        "DBP": round(dbp),
        "HR": round(body.heart_rate + r.gauss(0, 6)),
        "HEIGHT": round(height, 1),
        "WEIGHT": round(weight, 1),
        "BMI": round(weight / (height / 100) ** 2, 1),
    }

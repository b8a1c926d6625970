"""Who has which disease, when it began, who dies, and each person's physiology.

Diseases are drawn in dependency order with a logistic model per disease: log-odds from
age (per decade from 50, at the window's end), sex, region and the diseases drawn before
it, so comorbidity clusters the way it does in Chinese hospital populations (obesity →
type 2 diabetes → hypertension → hyperlipidaemia → CKD → coronary disease → MI / heart
failure; hepatitis B → cirrhosis → liver cancer). Type 2 diabetes gets the planted
variants' genetic shift (:func:`medlake.synth.genetics.t2d_logit_shift`). Everything is
vectorised over a chunk of persons; :func:`apply_clinical_draws` copies the results onto
the :class:`~medlake.synth.people.Person` objects.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from medlake.synth.dates import WINDOW_END_ORD, WINDOW_START_ORD
from medlake.synth.people import Person

_YEAR = 365.2425


@dataclass(frozen=True)
class DiseaseRule:
    """Logistic model of having a disease by the end of the window (or death)."""

    code: str
    kind: str  # "chronic", "acute" (onset inside the window) or "cancer"
    min_age: int
    intercept: float
    per_decade: float  # log-odds per decade of age above 50
    male: float = 0.0
    south: float = 0.0
    depends: tuple[tuple[str, float], ...] = ()


#: In dependency order; ``depends`` only names earlier rules.
DISEASE_RULES: tuple[DiseaseRule, ...] = (
    DiseaseRule("E66.9", "chronic", 12, -2.7, 0.05),
    DiseaseRule("E10.9", "chronic", 3, -5.8, -0.2),
    DiseaseRule("E11.9", "chronic", 25, -2.4, 0.55, 0.15, 0.0, (("E66.9", 1.1),)),
    DiseaseRule("I10", "chronic", 25, -1.5, 0.7, 0.25, -0.2, (("E66.9", 0.8), ("E11.9", 0.6))),
    DiseaseRule("E78.5", "chronic", 25, -1.8, 0.3, 0.0, 0.0,
                (("E11.9", 0.7), ("E66.9", 0.6), ("I10", 0.4))),
    DiseaseRule("N18.9", "chronic", 30, -4.1, 0.6, 0.2, 0.0, (("E11.9", 1.1), ("I10", 0.9))),
    DiseaseRule("I25.10", "chronic", 35, -3.8, 0.7, 0.6, 0.0,
                (("E11.9", 0.6), ("I10", 0.6), ("E78.5", 0.6))),
    DiseaseRule("I21.9", "acute", 35, -5.6, 0.5, 0.7, 0.0, (("I25.10", 2.2), ("E11.9", 0.3))),
    DiseaseRule("I48.91", "chronic", 40, -5.0, 0.9, 0.2, 0.0, (("I10", 0.4),)),
    DiseaseRule("I50.9", "chronic", 40, -5.4, 0.8, 0.2, 0.0,
                (("I25.10", 1.2), ("I21.9", 1.0), ("I48.91", 0.9), ("I10", 0.5))),
    DiseaseRule("I63.9", "acute", 40, -4.8, 0.7, 0.3, 0.0,
                (("I10", 0.8), ("I48.91", 0.9), ("E11.9", 0.4))),
    DiseaseRule("J45.909", "chronic", 3, -3.4, -0.1),
    DiseaseRule("J44.9", "chronic", 40, -4.2, 0.8, 0.9),
    DiseaseRule("J18.9", "acute", 0, -3.2, 0.35, 0.1, 0.0, (("J44.9", 1.0),)),
    DiseaseRule("K21.9", "chronic", 18, -2.9, 0.1),
    DiseaseRule("B18.1", "chronic", 10, -3.1, 0.0, 0.3, 0.5),
    DiseaseRule("K74.60", "chronic", 25, -6.0, 0.4, 0.5, 0.0, (("B18.1", 3.0),)),
    DiseaseRule("C22.0", "cancer", 30, -7.2, 0.5, 0.8, 0.0, (("B18.1", 2.3), ("K74.60", 1.8))),
    DiseaseRule("C34.90", "cancer", 40, -6.0, 0.8, 0.6, 0.0, (("J44.9", 0.6),)),
    DiseaseRule("C18.9", "cancer", 40, -6.3, 0.7, 0.2),
    DiseaseRule("C16.9", "cancer", 40, -6.3, 0.7, 0.6),
    DiseaseRule("F32.9", "chronic", 15, -3.6, 0.0, -0.4),
    DiseaseRule("M81.0", "chronic", 50, -4.2, 1.0, -1.3),
    DiseaseRule("M10.9", "chronic", 25, -4.2, 0.3, 1.3, 0.2, (("N18.9", 0.6), ("E66.9", 0.4))),
    DiseaseRule("D64.9", "chronic", 10, -3.8, 0.1, -0.6, 0.0,
                (("N18.9", 1.0), ("C18.9", 1.0), ("C16.9", 1.0))),
    DiseaseRule("E03.9", "chronic", 15, -3.9, 0.2, -1.1),
    DiseaseRule("U07.1", "acute", 0, -1.9, 0.0),
)  # fmt: skip

CANCERS = ("C22.0", "C34.90", "C18.9", "C16.9")
#: Death log-odds over the window: age, sex and the diseases that kill.
_DEATH_INTERCEPT, _DEATH_PER_DECADE, _DEATH_MALE = -5.6, 1.0, 0.3
_DEATH_DEPENDS: tuple[tuple[str, float], ...] = (
    ("C22.0", 2.5), ("C34.90", 2.2), ("C16.9", 1.8), ("C18.9", 1.4), ("I50.9", 0.9),
    ("I63.9", 0.6), ("I21.9", 0.6), ("N18.9", 0.5), ("J44.9", 0.5), ("K74.60", 0.9),
)  # fmt: skip
_COVID_WAVE = (dt.date(2022, 12, 1).toordinal(), dt.date(2023, 1, 31).toordinal())
_COVID_ANY = (dt.date(2020, 1, 20).toordinal(), dt.date(2023, 6, 30).toordinal())


@dataclass(slots=True)
class Physiology:
    """A person's own set points; lab and vital values vary around them over time."""

    hba1c: float  # %, without diabetes
    diabetes_hba1c: float  # %, once diabetic (untreated level)
    ldl: float  # mmol/L, includes the genetic shift and hyperlipidaemia
    hdl: float
    tg: float
    egfr: float  # mL/min/1.73 m², without CKD
    ckd_egfr: float  # once CKD
    urate: float  # µmol/L
    hb: float  # g/L
    alt: float  # U/L
    tsh: float  # mIU/L
    height: float  # cm
    bmi: float  # kg/m²
    sbp: float  # mmHg, untreated
    heart_rate: float


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _onsets(
    rng: np.random.Generator, rule: DiseaseRule, birth: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """Onset ordinals for everybody (used only where the disease is drawn)."""
    n = birth.size
    earliest = birth + int(rule.min_age * _YEAR)
    if rule.code == "U07.1":
        in_wave = rng.random(n) < 0.7
        low = np.where(in_wave, _COVID_WAVE[0], _COVID_ANY[0])
        high = np.where(in_wave, _COVID_WAVE[1], _COVID_ANY[1])
        low = np.maximum(low, birth + 1)
    elif rule.kind == "chronic":
        low = np.maximum(earliest, WINDOW_START_ORD - int(12 * _YEAR))
        high = end
    elif rule.kind == "cancer":
        low = np.maximum(earliest, WINDOW_START_ORD - int(1 * _YEAR))
        high = end
    else:
        low = np.maximum(earliest, WINDOW_START_ORD)
        high = end
    span = np.maximum(high - low, 0)
    onset = low + (rng.random(n) * span).astype(np.int64)
    return np.where(high > low, onset, 0)


def draw_diseases(
    rng: np.random.Generator, people: list[Person], t2d_shift: np.ndarray
) -> dict[str, np.ndarray]:
    """Onset ordinal per disease and person (0 = never), deaths applied."""
    birth = np.array([p.birth_ord for p in people], dtype=np.int64)
    male = np.array([p.sex == "M" for p in people])
    south = np.array([p.region == 1 for p in people])
    n = birth.size
    window_end = np.full(n, WINDOW_END_ORD, dtype=np.int64)
    decades = ((WINDOW_END_ORD - birth) / _YEAR - 50.0) / 10.0
    onset: dict[str, np.ndarray] = {}
    for rule in DISEASE_RULES:
        logit = rule.intercept + rule.per_decade * decades + rule.male * male + rule.south * south
        for code, weight in rule.depends:
            logit = logit + weight * (onset[code] > 0)
        if rule.code == "E11.9":  # planted variants; type 1 and type 2 exclude each other
            logit = np.where(onset["E10.9"] > 0, -50.0, logit + t2d_shift)
        has = rng.random(n) < _logistic(logit)
        onset[rule.code] = np.where(has, _onsets(rng, rule, birth, window_end), 0)
    death = _draw_deaths(rng, onset, birth, male, decades)
    for code in onset:
        onset[code] = np.where((death > 0) & (onset[code] >= death), 0, onset[code])
    onset["death"] = death
    return onset


def _draw_deaths(
    rng: np.random.Generator,
    onset: dict[str, np.ndarray],
    birth: np.ndarray,
    male: np.ndarray,
    decades: np.ndarray,
) -> np.ndarray:
    n = birth.size
    logit = _DEATH_INTERCEPT + _DEATH_PER_DECADE * decades + _DEATH_MALE * male
    for code, weight in _DEATH_DEPENDS:
        logit = logit + weight * (onset[code] > 0)
    dies = rng.random(n) < _logistic(logit)
    low = np.maximum(birth + 30, WINDOW_START_ORD + 60)
    cancer_onset = np.max(np.stack([onset[c] for c in CANCERS]), axis=0)
    after_cancer = cancer_onset + (rng.exponential(2.0 * _YEAR, n)).astype(np.int64) + 30
    uniform = low + (rng.random(n) * np.maximum(WINDOW_END_ORD - low, 1)).astype(np.int64)
    death = np.where(cancer_onset > 0, np.maximum(after_cancer, low), uniform)
    return np.where(dies & (death <= WINDOW_END_ORD), death, 0)


def draw_physiology(
    rng: np.random.Generator, people: list[Person], ldl_shift: np.ndarray,
    onset: dict[str, np.ndarray],
) -> list[Physiology]:  # fmt: skip
    """Set points per person: sex and age norms plus disease and genetic effects."""
    n = len(people)
    male = np.array([p.sex == "M" for p in people])
    age = (WINDOW_END_ORD - np.array([p.birth_ord for p in people])) / _YEAR
    obese = onset["E66.9"] > 0
    diabetic = (onset["E11.9"] > 0) | (onset["E10.9"] > 0)
    normal = rng.standard_normal((n, 14))
    hba1c = 5.3 + 0.004 * np.clip(age - 30, 0, None) + 0.3 * normal[:, 0]
    diabetes_hba1c = np.clip(7.7 + 1.2 * normal[:, 1], 6.5, 13.5)
    ldl = 2.75 + 0.7 * normal[:, 2] + ldl_shift + 1.0 * (onset["E78.5"] > 0) + 0.2 * diabetic
    hdl = np.where(male, 1.15, 1.4) + 0.25 * normal[:, 3] - 0.12 * (obese | diabetic)
    tg = np.exp(np.log(1.25) + 0.4 * normal[:, 4]) * np.where(obese | diabetic, 1.5, 1.0)
    egfr = np.clip(122 - 0.85 * np.clip(age - 20, 0, None) + 10 * normal[:, 5], 62, 135)
    ckd_egfr = np.clip(42 + 12 * normal[:, 6], 8, 59)
    urate = np.where(male, 350, 265) + 55 * normal[:, 7] + 160 * (onset["M10.9"] > 0)
    hb = np.where(male, 148, 130) + 10 * normal[:, 8] - 35 * (onset["D64.9"] > 0)
    alt = np.exp(np.log(21) + 0.35 * normal[:, 9]) * np.where(onset["B18.1"] > 0, 2.3, 1.0)
    tsh = np.exp(np.log(1.9) + 0.4 * normal[:, 10]) * np.where(onset["E03.9"] > 0, 4.5, 1.0)
    height = np.where(male, 170.5, 158.5) + 6 * normal[:, 11]
    bmi = np.where(obese, 30.5 + 2.5 * np.abs(normal[:, 12]), 22.8 + 2.4 * normal[:, 12])
    sbp = 112 + 0.45 * np.clip(age - 20, 0, None) + 10 * normal[:, 13]
    sbp = np.where(onset["I10"] > 0, np.maximum(sbp, 150) + 8 * np.abs(normal[:, 0]), sbp)
    heart_rate = 74 + 8 * normal[:, 1] + 18 * (onset["I48.91"] > 0)
    columns = (hba1c, diabetes_hba1c, np.clip(ldl, 0.8, None), np.clip(hdl, 0.5, None), tg,
               egfr, ckd_egfr, np.clip(urate, 120, None), np.clip(hb, 60, None), alt, tsh,
               height, np.clip(bmi, 15, 48), np.clip(sbp, 90, 210), heart_rate)  # fmt: skip
    return [Physiology(*row) for row in zip(*(c.tolist() for c in columns), strict=True)]


def apply_clinical_draws(people: list[Person], onset: dict[str, np.ndarray]) -> None:
    """Copy diseases (with their specific ICD-10 codes) and deaths onto each person."""
    death = onset["death"].tolist()
    columns = {code: values.tolist() for code, values in onset.items() if code != "death"}
    for i, person in enumerate(people):
        person.death_ord = death[i] or None
        conditions = {code: values[i] for code, values in columns.items() if values[i]}
        if "E11.9" in conditions:
            onset_t2d = conditions.pop("E11.9")
            # Stable code per person: with CKD the combination code, else 1 in 5 hyperglycemic.
            if "N18.9" in conditions:
                code = "E11.22"
            elif person.index % 5 == 0:
                code = "E11.65"
            else:
                code = "E11.9"
            conditions[code] = onset_t2d
        if "E78.5" in conditions and person.index % 4 == 0:
            conditions["E78.00"] = conditions.pop("E78.5")
        person.conditions = dict(sorted(conditions.items(), key=lambda item: (item[1], item[0])))

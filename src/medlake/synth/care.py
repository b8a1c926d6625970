"""The care a person receives: visits, with diagnoses, orders, labs, procedures and vitals.

One :class:`Visit` is one encounter as it truly happened; each source system later
exports its own view of it (HIS the visit, diagnoses and prescriptions; LIS the lab
orders; EMR all of it as FHIR). Visit rates grow with the number of active chronic
diseases; a chronic disease that starts inside the window is diagnosed at a visit on
its onset day; acute events (MI, stroke, pneumonia, COVID-19) and cancers bring an
admission or emergency visit. Per-event randomness uses a ``random.Random`` seeded per
chunk, which is much cheaper than NumPy scalar calls in this loop and just as
reproducible.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from medlake.synth.catalogue import (
    ACUTE_DRUGS,
    CHECKUP_DEPARTMENT,
    DIAGNOSES,
    EMERGENCY_DEPARTMENT,
    PROCEDURES_FOR_DIAGNOSIS,
    REGIMENS,
    STATINS,
    diagnosis_family,
)
from medlake.synth.clinical import CANCERS, DISEASE_RULES
from medlake.synth.dates import WINDOW_END_ORD, WINDOW_START_ORD, year_of, year_start_ordinal
from medlake.synth.lab_catalogue import CHECKUP_PANELS, PANELS_FOR_DIAGNOSIS, LabTest
from medlake.synth.labs import LabValue, panel_results, vital_signs
from medlake.synth.people import Person

_ACUTE = frozenset(rule.code for rule in DISEASE_RULES if rule.kind == "acute")
_SEVERE = frozenset({"I50.9", "J44.9", "N18.9", "K74.60", "I25.10", *CANCERS})
_INPATIENT_PANELS = ("XCG", "SGN")
_COVID_SCREENING = (year_start_ordinal(2020) + 40, year_start_ordinal(2022) + 340)
#: Share of persons who die that get one visit dated after their death (planted defect).
AFTER_DEATH_VISIT_RATE = 0.03


@dataclass(slots=True)
class LabOrder:
    """One LIS order: a panel, when its specimen was collected and reported, its results."""

    panel: str
    ordinal: int
    minute: int
    report_minute: int
    results: list[tuple[LabTest, LabValue]]


@dataclass(slots=True)
class Visit:
    """One encounter as it truly happened."""

    seq: int  # 1-based, in time order within the person
    kind: str  # "O" outpatient, "I" inpatient, "E" emergency
    ordinal: int
    minute: int
    discharge_ord: int | None
    department: str
    diagnoses: list[str]
    drugs: list[tuple[str, int]]  # (ATC code, days supplied)
    orders: list[LabOrder] = field(default_factory=list)
    procedures: list[str] = field(default_factory=list)
    vitals: dict[str, float] | None = None
    after_death: bool = False  # planted defect: dated after the person's death


def _poisson(r: random.Random, lam: float) -> int:
    """Knuth's method; fine for the small rates used here."""
    limit, k, p = math.exp(-lam), 0, r.random()
    while p > limit:
        k += 1
        p *= r.random()
    return k


def choose_regimens(person: Person, r: random.Random) -> dict[str, tuple[str, ...]]:
    """Long-term drugs per diagnosis family, fixed per person; sets the statin start."""
    regimens: dict[str, tuple[str, ...]] = {}
    for code in person.conditions:
        family = diagnosis_family(code)
        options = REGIMENS.get(family)
        if options is None or family in regimens:
            continue
        regimens[family] = r.choices([o[0] for o in options], [o[1] for o in options])[0]
    statin_starts = [
        person.conditions[code]
        for code in person.conditions
        if STATINS.intersection(regimens.get(diagnosis_family(code), ()))
    ]
    person.statin_start_ord = min(statin_starts) + 14 if statin_starts else None
    return regimens


class CarePlanner:
    """Builds one person's visits; holds the per-chunk random stream."""

    def __init__(self, r: random.Random) -> None:
        self.r = r

    def visits_for(self, person: Person) -> list[Visit]:
        r = self.r
        regimens = choose_regimens(person, r)
        start = max(WINDOW_START_ORD, person.birth_ord + 1)
        end = min(WINDOW_END_ORD, person.death_ord or WINDOW_END_ORD)
        plan: list[tuple[int, str, str]] = []  # (ordinal, kind, reason code or "")
        for code, onset in person.conditions.items():
            if not start <= onset <= end:
                continue
            if code in _ACUTE:
                plan.append((onset, self._acute_kind(code), code))
            elif code in CANCERS:
                plan.append((onset, "I", code))
            elif r.random() < 0.85:
                plan.append((onset, "O", code))
        adult_checkups = 0.04 if (start - person.birth_ord) > 18 * 365 else 0.03
        for year in range(year_of(start), year_of(end) + 1):
            low = max(start, year_start_ordinal(year))
            high = min(end, year_start_ordinal(year + 1) - 1)
            if high < low:
                continue
            fraction = (high - low + 1) / 365.0
            chronic = self._chronic_active(person, (low + high) // 2)
            severe = sum(1 for code in chronic if code in _SEVERE)
            rates = (("O", 0.1 + 0.16 * min(len(chronic), 4)), ("I", 0.006 + 0.035 * severe),
                     ("E", 0.01 + 0.012 * len(chronic)), ("C", adult_checkups))  # fmt: skip
            for kind, rate in rates:
                for _ in range(_poisson(r, rate * fraction)):
                    plan.append((r.randint(low, high), kind, ""))
        if not plan:
            plan.append((r.randint(start, end), "C", ""))
        if person.death_ord and r.random() < AFTER_DEATH_VISIT_RATE:
            after = person.death_ord + r.randint(1, 365)
            if after <= WINDOW_END_ORD:
                plan.append((after, "O", "after_death"))
        plan.sort()
        visits = []
        for ordinal, kind, reason in plan:
            visit = self._visit(person, regimens, len(visits) + 1, ordinal, kind, reason)
            if visit is not None:
                visits.append(visit)
        if not visits:  # everyone in the hospital's files came at least once
            visits.append(self._checkup(person, 1, r.randint(start, end)))
        return visits

    def _acute_kind(self, code: str) -> str:
        roll = self.r.random()
        if code in ("I21.9", "I63.9"):
            return "I" if roll < 0.8 else "E"
        if code == "J18.9":
            return "I" if roll < 0.45 else ("E" if roll < 0.7 else "O")
        return "I" if roll < 0.15 else ("E" if roll < 0.45 else "O")

    @staticmethod
    def _chronic_active(person: Person, ordinal: int) -> list[str]:
        return [
            code
            for code, onset in person.conditions.items()
            if onset <= ordinal and code not in _ACUTE
        ]

    def _visit(
        self,
        person: Person,
        regimens: dict[str, tuple[str, ...]],
        seq: int,
        ordinal: int,
        kind: str,
        reason: str,
    ) -> Visit | None:
        r = self.r
        after_death = reason == "after_death"
        chronic = self._chronic_active(person, ordinal)
        if after_death:
            reason = ""
        if kind == "C":
            return self._checkup(person, seq, ordinal)
        if not reason:
            if not chronic:
                return self._checkup(person, seq, ordinal) if kind == "O" else None
            reason = r.choice(chronic)
        others = [code for code in chronic if code != reason]
        r.shuffle(others)
        extra = {"O": 2, "E": 1, "I": 5}[kind]
        diagnoses = [reason, *others[: r.randint(0, extra)]]
        days = 28 if kind == "O" else r.randint(3, 12) if kind == "I" else 3
        first_day = onset_day(person, reason) == ordinal
        acute = ACUTE_DRUGS.get(reason, ()) if first_day else ()
        drugs: list[tuple[str, int]] = [(atc, 3 if kind == "E" else days) for atc in acute]
        for code in diagnoses:
            if kind == "E" and code != reason:
                continue
            for atc in regimens.get(diagnosis_family(code), ()):
                if all(atc != known for known, _ in drugs):
                    supply = 14 if atc == "L01BC06" else days
                    drugs.append((atc, supply))
        department = EMERGENCY_DEPARTMENT if kind == "E" else DIAGNOSES[reason].department
        minute = r.randint(8 * 60, 17 * 60) if kind != "E" else r.randint(0, 1439)
        visit = Visit(seq, kind, ordinal, minute, ordinal + days if kind == "I" else None,
                      department, diagnoses, drugs, after_death=after_death)  # fmt: skip
        panels = list(PANELS_FOR_DIAGNOSIS.get(diagnosis_family(reason), ()))
        if kind == "I":
            panels = [*_INPATIENT_PANELS, *(p for p in panels if p not in _INPATIENT_PANELS)]
            if _COVID_SCREENING[0] <= ordinal <= _COVID_SCREENING[1] and "XGHS" not in panels:
                panels.append("XGHS")
        elif kind == "E":
            panels = list(dict.fromkeys(["XCG", "CRP", *panels]))
        elif r.random() > (0.8 if first_day else 0.25):
            panels = []
        self._order_labs(person, visit, panels)
        for code, chance in PROCEDURES_FOR_DIAGNOSIS.get(reason, ()):
            if r.random() < (chance if kind != "O" else chance * 0.4):
                visit.procedures.append(code)
        if kind != "O" or r.random() < 0.25:
            visit.vitals = vital_signs(person, ordinal, r)
        return visit

    def _checkup(self, person: Person, seq: int, ordinal: int) -> Visit:
        r = self.r
        visit = Visit(seq, "O", ordinal, r.randint(7 * 60 + 30, 11 * 60), None,
                      CHECKUP_DEPARTMENT, [], [])  # fmt: skip
        panels = list(CHECKUP_PANELS)
        if r.random() < 0.35:
            panels.append("THXHDB")
        self._order_labs(person, visit, panels)
        visit.vitals = vital_signs(person, ordinal, r)
        return visit

    def _order_labs(self, person: Person, visit: Visit, panels: list[str]) -> None:
        r = self.r
        if visit.kind == "I":
            day = visit.ordinal + 1
            minute = r.randint(6 * 60 + 20, 7 * 60 + 30)
        else:
            day = visit.ordinal
            minute = min(visit.minute + r.randint(15, 90), 1380)
        for panel in panels:
            report = min(minute + r.randint(45, 240), 1439)
            results = panel_results(person, panel, day, r)
            visit.orders.append(LabOrder(panel, day, minute, report, results))


def onset_day(person: Person, code: str) -> int | None:
    """Onset ordinal of ``code`` for ``person``, or None."""
    return person.conditions.get(code)

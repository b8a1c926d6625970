"""Planted data-quality defects: their rates, how they are made, how they are recorded.

Real exports are never clean, and medlake's quarantine and quality checks need defects
whose every instance is known. Each writer rolls these rates per eligible record and,
when it plants one, appends a :class:`Defect` naming the file, the record and the
field; ``truth/defects.csv`` lists them all. Rates are per eligible record (a lab result,
a diagnosis row, a visit, a patient record).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Per-record rates of each planted defect kind.
DEFECT_RATES: dict[str, float] = {
    "unknown_code": 0.002,  # diagnosis, prescription or lab result with an unknown code
    "impossible_lab_value": 0.001,  # negative, or 100x too large (unit slip)
    "missing_birth_date": 0.003,  # patient record
    "missing_sex": 0.002,  # patient record
    "missing_visit_date": 0.001,  # visit / encounter
    "bad_date": 0.001,  # a date that is no date: 2023-02-30, 20231345
}

#: Kinds as written in defects.csv.
EVENT_AFTER_DEATH = "event_after_death"
UNKNOWN_CODE = "unknown_code"
IMPOSSIBLE_LAB_VALUE = "impossible_lab_value"
MISSING_REQUIRED_FIELD = "missing_required_field"
BAD_DATE = "bad_date"


@dataclass(slots=True)
class Defect:
    """One planted defect; ``line`` is local to the chunk until the writer offsets it."""

    system: str
    file: str  # path relative to the output root
    record_id: str
    line: int  # 1-based line (CSV: header is line 1); LIS: 1-based message number
    kind: str
    field: str
    detail: str


def roll(r: random.Random, kind: str) -> bool:
    """True when a defect of ``kind`` is planted in the current record."""
    return r.random() < DEFECT_RATES[kind]


def impossible_value(value: float, r: random.Random) -> tuple[float, str]:
    """A negative or hundredfold value, and a word on which."""
    if r.random() < 0.5:
        return -abs(value) - 0.1, "negative"
    return value * 100, "100x"


def bad_iso_date(year: int, r: random.Random) -> str:
    """``YYYY-MM-DD`` that names no day."""
    month, day = r.choice(((2, 30), (2, 31), (4, 31), (6, 31), (13, 5), (0, 12), (9, 31)))
    return f"{year:04d}-{month:02d}-{day:02d}"


def bad_compact_date(year: int, r: random.Random) -> str:
    """``YYYYMMDD`` that names no day."""
    month, day = r.choice(((2, 30), (13, 45), (11, 31), (0, 10), (12, 32)))
    return f"{year:04d}{month:02d}{day:02d}"

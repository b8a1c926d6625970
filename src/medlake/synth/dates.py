"""The synthetic hospital's calendar: its observation window and fast date formatting.

Dates inside the generator are proleptic Gregorian ordinals (``date.toordinal()``) and
times are minutes after midnight, because the per-event loop formats millions of them;
the string forms every export needs are looked up in tables built once per process.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

#: First and last day the hospital's systems hold records for.
WINDOW_START = dt.date(2015, 1, 1)
WINDOW_END = dt.date(2025, 12, 31)
WINDOW_START_ORD = WINDOW_START.toordinal()
WINDOW_END_ORD = WINDOW_END.toordinal()
#: Persons are born no earlier than this (ages up to ~100 at the window's end).
EARLIEST_BIRTH = dt.date(1920, 1, 1)
_TABLE_START_ORD = EARLIEST_BIRTH.toordinal()
_TABLE_END_ORD = dt.date(2027, 12, 31).toordinal()


@lru_cache(maxsize=1)
def _tables() -> tuple[list[str], list[str], list[int]]:
    iso: list[str] = []
    compact: list[str] = []
    years: list[int] = []
    for ordinal in range(_TABLE_START_ORD, _TABLE_END_ORD + 1):
        day = dt.date.fromordinal(ordinal)
        iso.append(day.isoformat())
        compact.append(f"{day:%Y%m%d}")
        years.append(day.year)
    return iso, compact, years


def iso_date(ordinal: int) -> str:
    """``YYYY-MM-DD`` of a date ordinal."""
    return _tables()[0][ordinal - _TABLE_START_ORD]


def compact_date(ordinal: int) -> str:
    """``YYYYMMDD`` (HL7 DT) of a date ordinal."""
    return _tables()[1][ordinal - _TABLE_START_ORD]


def year_of(ordinal: int) -> int:
    """Calendar year of a date ordinal."""
    return _tables()[2][ordinal - _TABLE_START_ORD]


def clock(minutes: int) -> str:
    """``HH:MM:SS`` of minutes after midnight."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def hl7_timestamp(ordinal: int, minutes: int) -> str:
    """HL7 DTM ``YYYYMMDDHHMMSS`` (local time, as Chinese LIS systems send it)."""
    return f"{compact_date(ordinal)}{minutes // 60:02d}{minutes % 60:02d}00"


def fhir_datetime(ordinal: int, minutes: int) -> str:
    """FHIR dateTime with the China Standard Time offset."""
    return f"{iso_date(ordinal)}T{minutes // 60:02d}:{minutes % 60:02d}:00+08:00"


def year_start_ordinal(year: int) -> int:
    return dt.date(year, 1, 1).toordinal()

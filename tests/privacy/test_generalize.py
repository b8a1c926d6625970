"""Generalization: completed ages, age and birth-year bands, truncated region codes."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from medlake.privacy import age_band, age_in_years, birth_year_band, truncate_code


def _reference_age(born: dt.date, on: dt.date) -> int:
    """Years whose birthday (29 February counted on 1 March) has come by ``on``."""
    years = 0
    while True:
        year = born.year + years + 1
        try:
            birthday = born.replace(year=year)
        except ValueError:
            birthday = dt.date(year, 3, 1)
        if birthday > on:
            return years
        years += 1


dates = st.dates(dt.date(1900, 1, 1), dt.date(2030, 12, 31))


@given(st.lists(st.tuples(dates, dates), min_size=1, max_size=30))
def test_age_is_completed_years(pairs: list[tuple[dt.date, dt.date]]) -> None:
    pairs = [(min(a, b), max(a, b)) for a, b in pairs]
    ages = age_in_years(pa.array([b for b, _ in pairs]), pa.array([o for _, o in pairs]))
    assert ages.to_pylist() == [_reference_age(b, o) for b, o in pairs]


def test_age_of_a_29_february_birth() -> None:
    born = pa.array([dt.date(2000, 2, 29)] * 3)
    on = pa.array([dt.date(2001, 2, 28), dt.date(2001, 3, 1), dt.date(2004, 2, 29)])
    assert age_in_years(born, on).to_pylist() == [0, 1, 4]


@given(
    st.lists(st.one_of(st.none(), st.integers(0, 120))), st.integers(1, 20), st.integers(20, 100)
)
def test_every_age_falls_in_its_band(ages: list[int | None], width: int, top: int) -> None:
    bands = age_band(pa.array(ages, type=pa.int32()), width, top).to_pylist()
    for age, band in zip(ages, bands, strict=True):
        if age is None:
            assert band is None
        elif age >= top:
            assert band == f"{top}+"
        else:
            low, _, high = band.partition("-")
            low_n, high_n = int(low), int(high or low)
            assert low_n <= age <= high_n
            assert low_n % width == 0
            assert high_n - low_n + 1 == min(width, top - low_n)


def test_birth_years_are_kept_or_banded() -> None:
    years = pa.array([1950, 1954, 1955, None], type=pa.int64())
    assert birth_year_band(years).to_pylist() == [1950, 1954, 1955, None]
    assert birth_year_band(years, 5).to_pylist() == ["1950-1954", "1950-1954", "1955-1959", None]


def test_region_codes_keep_their_leading_characters() -> None:
    codes = pa.array(["110105", " 310000", "", None, "44"])
    assert truncate_code(codes, 2).to_pylist() == ["11", "31", None, None, "44"]
    assert truncate_code(codes, 4).to_pylist() == ["1101", "3100", None, None, "44"]

"""GB 11643 resident identity numbers: check character, building, parsing."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from medlake.resident_id import (
    check_character,
    has_valid_check_character,
    make_resident_id,
    parse_resident_id,
)

# The worked example of GB 11643-1999 (appendix): 11010519491231002 -> X.
STANDARD_EXAMPLE = "11010519491231002X"


def _reference_check(first17: str) -> str:
    """ISO 7064 MOD 11-2 computed the long way, as the standard describes it."""
    total = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(first17))
    return "10X98765432"[total % 11]


def test_standard_worked_example() -> None:
    assert check_character(STANDARD_EXAMPLE[:17]) == "X"
    assert has_valid_check_character(STANDARD_EXAMPLE)
    assert has_valid_check_character(STANDARD_EXAMPLE.lower())


def test_check_character_agrees_with_the_mod_11_2_definition() -> None:
    rng = random.Random(11643)
    for _ in range(2000):
        first17 = "".join(rng.choice("0123456789") for _ in range(17))
        assert check_character(first17) == _reference_check(first17)


def test_any_single_mistyped_digit_is_detected() -> None:
    number = make_resident_id("440106", dt.date(1985, 7, 23), 417)
    for position in range(17):
        for digit in "0123456789":
            if digit == number[position]:
                continue
            typo = number[:position] + digit + number[position + 1 :]
            assert not has_valid_check_character(typo), typo


def test_parse_gives_birth_date_and_sex() -> None:
    parts = parse_resident_id(make_resident_id("310104", dt.date(1962, 2, 28), 38))
    assert parts.area_code == "310104"
    assert parts.birth_date == dt.date(1962, 2, 28)
    assert parts.sex == "F"
    assert parse_resident_id(make_resident_id("310104", dt.date(1962, 2, 28), 39)).sex == "M"


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("1101051949123100", "16 characters"),
        ("110105194912310021", "wrong check character"),
        (make_resident_id("110105", dt.date(1949, 12, 31), 2)[:10] + "1332" + "0023", "check"),
    ],
)
def test_parse_rejects_bad_numbers_with_the_reason(number: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_resident_id(number)


def test_impossible_birth_date_with_valid_check_is_rejected() -> None:
    first17 = "11010519491332002"
    number = first17 + check_character(first17)
    with pytest.raises(ValueError, match="impossible birth date"):
        parse_resident_id(number)

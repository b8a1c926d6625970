"""Chinese resident identity numbers (居民身份证号), GB 11643-1999.

An 18-character number: 6-digit administrative area code, 8-digit birth date
(YYYYMMDD), 3-digit sequence whose last digit is odd for men and even for women, and a
check character computed ISO 7064 MOD 11-2 over the first 17 digits (``X`` stands for
10). Used by the synthetic hospital to issue numbers, by EMPI to weigh them and by
de-identification to find them; it lives at the bottom layer so all of them can share it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# ISO 7064 MOD 11-2 weights 2^(17-i) mod 11 for positions 1..17.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"


def check_character(first17: str) -> str:
    """Return the GB 11643 check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"expected 17 digits, got {first17!r}")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def make_resident_id(area_code: str, birth_date: dt.date, sequence: int) -> str:
    """Build a valid 18-character number; ``sequence`` is 0..999 (odd: male, even: female)."""
    if len(area_code) != 6 or not area_code.isdigit():
        raise ValueError(f"area code must be 6 digits, got {area_code!r}")
    if not 0 <= sequence <= 999:
        raise ValueError(f"sequence must be 0..999, got {sequence}")
    first17 = f"{area_code}{birth_date:%Y%m%d}{sequence:03d}"
    return first17 + check_character(first17)


def has_valid_check_character(number: str) -> bool:
    """True when ``number`` has 18 characters and its check character is right."""
    number = number.strip().upper()
    if len(number) != 18 or not number[:17].isdigit():
        return False
    return check_character(number[:17]) == number[17]


@dataclass(frozen=True)
class ResidentIdParts:
    """What an 18-character number says about its holder."""

    area_code: str
    birth_date: dt.date
    sequence: int
    sex: str  # "M" or "F"


def parse_resident_id(number: str) -> ResidentIdParts:
    """Split a valid number into its parts; raise ValueError naming what is wrong."""
    number = number.strip().upper()
    if len(number) != 18:
        raise ValueError(f"resident ID {number!r} has {len(number)} characters, expected 18")
    if not has_valid_check_character(number):
        raise ValueError(f"resident ID {number!r} has a wrong check character")
    try:
        birth = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError as exc:
        raise ValueError(f"resident ID {number!r} has an impossible birth date") from exc
    sequence = int(number[14:17])
    return ResidentIdParts(number[:6], birth, sequence, "M" if sequence % 2 else "F")

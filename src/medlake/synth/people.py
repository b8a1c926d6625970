"""True persons: who they are before any hospital system writes them down.

:func:`draw_people` draws the demographics and identifiers of one chunk of persons with
vectorised NumPy calls (sex, birth date, home district, name, resident ID, phone,
address, later move or new phone), so a million persons cost seconds. What each source
system records of them, with typos and gaps, is :mod:`medlake.synth.identity`'s job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from medlake.resident_id import make_resident_id
from medlake.synth.dates import WINDOW_END_ORD, WINDOW_START_ORD
from medlake.synth.names import GIVEN_CHARACTERS, SURNAMES
from medlake.synth.places import (
    DISTRICT_WEIGHTS,
    DISTRICTS,
    ESTATES,
    MOBILE_PREFIXES,
    District,
)

if TYPE_CHECKING:
    from medlake.synth.clinical import Physiology

#: Age (on 2020-07-01) distribution of a general hospital's patients: relative weight per
#: age band; children less often, the 60-79 most often.
_AGE_BANDS: tuple[tuple[int, int, float], ...] = (
    (0, 18, 0.55), (18, 40, 1.0), (40, 60, 1.35), (60, 80, 1.6), (80, 90, 0.8), (90, 96, 0.2),
)  # fmt: skip
_AGE_REFERENCE_ORD = dt.date(2020, 7, 1).toordinal()

#: Share of persons who move house during the window, and who change mobile number.
MOVE_RATE = 0.12
PHONE_CHANGE_RATE = 0.10
#: Share of given names with one character.
SINGLE_CHARACTER_GIVEN_NAME_RATE = 0.15


@dataclass(slots=True)
class Address:
    """A home address as Chinese forms write it, with its district."""

    district: District
    line: str  # street, number, estate, building, unit, room

    @property
    def text(self) -> str:
        d = self.district
        head = d.province if d.province == d.city else d.province + d.city
        return f"{head}{d.district}{self.line}"


@dataclass(slots=True)
class Person:
    """One true person and everything the generator decided about them."""

    index: int  # global, 0-based; fixes ids and sample ids independent of chunking
    key: str  # truth key, "P0000001"
    sex: str  # "M" / "F"
    birth_ord: int
    surname: str
    surname_pinyin: str
    given: str
    given_pinyin: str
    resident_id: str
    phone: str
    address: Address
    new_phone: str | None = None
    phone_change_ord: int | None = None
    new_address: Address | None = None
    move_ord: int | None = None
    death_ord: int | None = None
    conditions: dict[str, int] = field(default_factory=dict)  # ICD-10 code -> onset ordinal
    region: int = 0
    body: Physiology | None = None  # set points for labs and vitals (clinical.py)
    statin_start_ord: int | None = None  # first day on a statin, if ever

    @property
    def name(self) -> str:
        return self.surname + self.given

    @property
    def pinyin(self) -> str:
        return f"{self.surname_pinyin} {self.given_pinyin}"

    def phone_on(self, ordinal: int) -> str:
        changed = self.phone_change_ord is not None and ordinal >= self.phone_change_ord
        return self.new_phone if changed and self.new_phone is not None else self.phone

    def address_on(self, ordinal: int) -> Address:
        moved = self.move_ord is not None and ordinal >= self.move_ord
        return self.new_address if moved and self.new_address is not None else self.address


def _draw_ages_days(rng: np.random.Generator, n: int) -> np.ndarray:
    """Age on 2020-07-01 in days, from the age-band weights."""
    lows = np.array([b[0] for b in _AGE_BANDS])
    highs = np.array([b[1] for b in _AGE_BANDS])
    weights = np.array([(b[1] - b[0]) * b[2] for b in _AGE_BANDS])
    band = rng.choice(len(_AGE_BANDS), size=n, p=weights / weights.sum())
    years = lows[band] + rng.random(n) * (highs[band] - lows[band])
    return (years * 365.2425).astype(np.int64)


def _address_lines(rng: np.random.Generator, districts: list[int]) -> list[Address]:
    """A street address in each given district: street, number, estate, building, room."""
    n = len(districts)
    street = rng.random(n).tolist()
    number = rng.integers(1, 300, size=n).tolist()
    estate = rng.integers(0, len(ESTATES), size=n).tolist()
    building = rng.integers(1, 30, size=n).tolist()
    unit = rng.integers(1, 7, size=n).tolist()
    floor = rng.integers(1, 25, size=n).tolist()
    room = rng.integers(1, 5, size=n).tolist()
    addresses = []
    for i, district_index in enumerate(districts):
        district = DISTRICTS[district_index]
        line = (
            f"{district.streets[int(street[i] * len(district.streets))]}{number[i]}号"
            f"{ESTATES[estate[i]]}{building[i]}号楼{unit[i]}单元{floor[i]}{room[i]:02d}室"
        )
        addresses.append(Address(district, line))
    return addresses


def _mobile_numbers(rng: np.random.Generator, n: int) -> list[str]:
    prefix = rng.integers(0, len(MOBILE_PREFIXES), size=n).tolist()
    rest = rng.integers(0, 100_000_000, size=n).tolist()
    return [f"{MOBILE_PREFIXES[p]}{r:08d}" for p, r in zip(prefix, rest, strict=True)]


def _draw_names(rng: np.random.Generator, male: np.ndarray) -> list[tuple[str, str, str, str]]:
    n = male.size
    shares = np.array([s[2] for s in SURNAMES])
    surname = rng.choice(len(SURNAMES), size=n, p=shares / shares.sum()).tolist()
    male_pool = [i for i, g in enumerate(GIVEN_CHARACTERS) if g[2] in ("M", "")]
    female_pool = [i for i, g in enumerate(GIVEN_CHARACTERS) if g[2] in ("F", "")]
    first = rng.random(n).tolist()
    second = rng.random(n).tolist()
    single = (rng.random(n) < SINGLE_CHARACTER_GIVEN_NAME_RATE).tolist()
    names = []
    for i, is_male in enumerate(male.tolist()):
        pool = male_pool if is_male else female_pool
        chars = [GIVEN_CHARACTERS[pool[int(first[i] * len(pool))]]]
        if not single[i]:
            other = GIVEN_CHARACTERS[pool[int(second[i] * len(pool))]]
            if other[0] != chars[0][0] or rng.random() < 0.3:  # 叠字 names like 婷婷 exist
                chars.append(other)
        sur = SURNAMES[surname[i]]
        given = "".join(c[0] for c in chars)
        given_pinyin = "".join(c[1] for c in chars).capitalize()
        names.append((sur[0], sur[1], given, given_pinyin))
    return names


def draw_people(rng: np.random.Generator, start_index: int, n: int) -> list[Person]:
    """Draw ``n`` true persons with global indices ``start_index …``."""
    male = rng.random(n) < 0.49
    birth = (_AGE_REFERENCE_ORD - _draw_ages_days(rng, n)).tolist()
    district_weights = np.array(DISTRICT_WEIGHTS) / sum(DISTRICT_WEIGHTS)
    district = rng.choice(len(DISTRICTS), size=n, p=district_weights).tolist()
    new_district = rng.choice(len(DISTRICTS), size=n, p=district_weights).tolist()
    sequence = (rng.integers(0, 500, size=n) * 2 + male).clip(0, 999).tolist()
    names = _draw_names(rng, male)
    phones = _mobile_numbers(rng, n)
    new_phones = _mobile_numbers(rng, n)
    addresses = _address_lines(rng, district)
    new_addresses = _address_lines(rng, new_district)
    moves = (rng.random(n) < MOVE_RATE).tolist()
    phone_changes = (rng.random(n) < PHONE_CHANGE_RATE).tolist()
    change_day = rng.integers(WINDOW_START_ORD + 180, WINDOW_END_ORD - 180, size=(n, 2)).tolist()
    people = []
    for i in range(n):
        home = DISTRICTS[district[i]]
        birth_date = dt.date.fromordinal(birth[i])
        surname, surname_pinyin, given, given_pinyin = names[i]
        person = Person(
            index=start_index + i,
            key=f"P{start_index + i + 1:07d}",
            sex="M" if male[i] else "F",
            birth_ord=birth[i],
            surname=surname,
            surname_pinyin=surname_pinyin,
            given=given,
            given_pinyin=given_pinyin,
            resident_id=make_resident_id(home.area_code, birth_date, sequence[i]),
            phone=phones[i],
            address=addresses[i],
            region=home.region,
        )
        if moves[i] and change_day[i][0] > birth[i]:
            person.new_address = new_addresses[i]
            person.move_ord = change_day[i][0]
        if phone_changes[i] and change_day[i][1] > birth[i]:
            person.new_phone = new_phones[i]
            person.phone_change_ord = change_day[i][1]
        people.append(person)
    return people

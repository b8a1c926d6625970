"""What each source system recorded about a person: ids, names, and identity noise.

A true person becomes one source patient record per system that knows them, sometimes
two (a duplicate registration). Each record carries the noise registration desks
really make — a homophone typed for a character, pinyin misspelt from a southern
accent, given name first, day and month swapped, a mistyped resident ID digit, blank
fields, an old phone or address — and says which in ``noise`` so the truth files can
state it. Patient ids are an affine permutation of ``2 * person index + duplicate`` modulo
a prime, so ids are unique, independent of chunking, and say nothing about the person's
index or their ids in other systems.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

import numpy as np

from medlake.synth.names import HOMOPHONES, PINYIN_CONFUSIONS
from medlake.synth.people import Address, Person

HIS, LIS, EMR = "HIS", "LIS", "EMR"
SYSTEMS = (HIS, LIS, EMR)

#: Share of persons each system knows (LIS: of those with at least one lab order).
PRESENCE = {HIS: 0.95, LIS: 0.98, EMR: 0.70}
#: Share of a system's persons registered twice.
DUPLICATE_RATE = 0.025


@dataclass(frozen=True)
class RecordNoise:
    """Per-record rates of identity noise in one system."""

    pinyin_name: float  # name recorded in pinyin instead of hanzi
    given_first: float  # of pinyin names: given name written first
    hanzi_typo: float
    pinyin_typo: float
    birth_transposed: float  # day and month swapped (when both ≤ 12 and differ)
    resident_id_recorded: float
    resident_id_mistyped: float  # of recorded ids: one digit wrong
    phone_recorded: float
    address_recorded: float


NOISE = {
    HIS: RecordNoise(0.0, 0.0, 0.015, 0.0, 0.008, 0.97, 0.01, 0.97, 0.98),
    LIS: RecordNoise(0.75, 0.05, 0.015, 0.02, 0.01, 0.40, 0.01, 0.50, 0.40),
    EMR: RecordNoise(0.12, 0.10, 0.01, 0.02, 0.005, 0.92, 0.01, 0.95, 0.95),
}

GENOTYPE_SAMPLE, RNA_SAMPLE = "GT", "RNA"
_ID_MODULI = {HIS: 99_999_989, LIS: 9_999_999_967, EMR: 999_999_937,
              GENOTYPE_SAMPLE: 99_999_989, RNA_SAMPLE: 99_999_989}  # fmt: skip


@dataclass(slots=True)
class SourcePatient:
    """One patient record in one source system, as that system holds it."""

    system: str
    patient_id: str
    person: Person
    duplicate: bool
    registered_ord: int
    family: str  # as recorded: hanzi, or pinyin
    given: str
    script: str  # "hanzi" or "pinyin"
    birth: tuple[int, int, int]  # (year, month, day) as recorded
    resident_id: str | None
    phone: str | None
    address: Address | None
    noise: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.family + self.given if self.script == "hanzi" else f"{self.family} {self.given}"


class PatientIdScheme:
    """Patient (and biobank sample) ids: bijective, seed-dependent, chunk-independent."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xD1,)))
        self._affine = {
            system: (int(rng.integers(2, modulus - 1)), int(rng.integers(0, modulus)))
            for system, modulus in _ID_MODULI.items()
        }

    def number(self, system: str, person_index: int, duplicate: bool) -> int:
        multiplier, offset = self._affine[system]
        return (multiplier * (2 * person_index + duplicate) + offset) % _ID_MODULI[system]

    def patient_id(self, system: str, person_index: int, duplicate: bool) -> str:
        value = self.number(system, person_index, duplicate)
        if system == HIS:
            return f"H{value:08d}"
        if system == LIS:
            return f"{value:010d}"
        if system == GENOTYPE_SAMPLE:
            return f"GSA{value:08d}"
        if system == RNA_SAMPLE:
            return f"RNA{value:08d}"
        return f"MR{value:09d}"


def misspell_hanzi(text: str, r: random.Random) -> str:
    """Swap one character for a homophone or look-alike, where the table has one."""
    positions = [i for i, ch in enumerate(text) if ch in HOMOPHONES]
    if not positions:
        return text
    i = r.choice(positions)
    return text[:i] + r.choice(HOMOPHONES[text[i]]) + text[i + 1 :]


def misspell_pinyin(text: str, r: random.Random) -> str:
    """Apply one accent merge (zh→z, -ng→-n, l↔n …) or, failing that, drop a letter."""
    lower = text.lower()
    options = [(a, b) for a, b in PINYIN_CONFUSIONS if a in lower]
    if options:
        a, b = r.choice(options)
        start = lower.index(a)
        changed = lower[:start] + b + lower[start + len(a) :]
    elif len(lower) > 2:
        drop = r.randrange(1, len(lower))
        changed = lower[:drop] + lower[drop + 1 :]
    else:
        return text
    return changed.capitalize() if text[:1].isupper() else changed


def mistype_digit(number: str, r: random.Random) -> str:
    """Change one of the first 17 digits of a resident ID (its check digit then fails)."""
    i = r.randrange(17)
    digit = str((int(number[i]) + r.randint(1, 9)) % 10)
    return number[:i] + digit + number[i + 1 :]


def make_source_patient(
    system: str,
    person: Person,
    patient_id: str,
    registered_ord: int,
    r: random.Random,
    *,
    duplicate: bool = False,
    contact_ord: int | None = None,
) -> SourcePatient:
    """Record ``person`` in ``system`` with that system's kind of noise."""
    rates = NOISE[system]
    boost = 3.0 if duplicate else 1.0  # rushed second registrations are sloppier
    noise: list[str] = []
    if r.random() < rates.pinyin_name:
        script, family, given = "pinyin", person.surname_pinyin, person.given_pinyin
        if system == LIS:
            family, given = family.upper(), given.upper()
        if r.random() < rates.pinyin_typo * boost:
            given = misspell_pinyin(given, r)
            noise.append("pinyin_typo")
        if r.random() < rates.given_first:
            family, given = given, family
            noise.append("given_name_first")
    else:
        script, family, given = "hanzi", person.surname, person.given
        if r.random() < rates.hanzi_typo * boost:
            full = misspell_hanzi(family + given, r)
            if full != family + given:
                family, given = full[: len(family)], full[len(family) :]
                noise.append("hanzi_typo")
    year, month, day = _ymd(person.birth_ord)
    if month != day and day <= 12 and r.random() < rates.birth_transposed * boost:
        month, day = day, month
        noise.append("birth_day_month_transposed")
    resident_id: str | None = None
    if r.random() < rates.resident_id_recorded:
        resident_id = person.resident_id
        if r.random() < rates.resident_id_mistyped * boost:
            resident_id = mistype_digit(resident_id, r)
            noise.append("resident_id_mistyped")
    else:
        noise.append("resident_id_missing")
    when = registered_ord if contact_ord is None else contact_ord
    phone = person.phone_on(when) if r.random() < rates.phone_recorded else None
    if phone is None:
        noise.append("phone_missing")
    elif phone != person.phone_on(10**7):
        noise.append("phone_outdated")
    address = person.address_on(when) if r.random() < rates.address_recorded else None
    if address is None:
        noise.append("address_missing")
    elif address is not person.address_on(10**7):
        noise.append("address_outdated")
    return SourcePatient(
        system, patient_id, person, duplicate, registered_ord, family, given, script,
        (year, month, day), resident_id, phone, address, noise,
    )  # fmt: skip


def _ymd(ordinal: int) -> tuple[int, int, int]:
    d = dt.date.fromordinal(ordinal)
    return d.year, d.month, d.day

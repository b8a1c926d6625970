"""``truth/``: what the exports were drawn from, for tests, EMPI evaluation and demos.

Never ingested: these files say who each source patient really is, which identity noise
each record got, which diseases each person has since when, and every planted defect.
``omics.py`` adds the planted variants, DE genes and sample truth next to them.
"""

from __future__ import annotations

from medlake.synth.dates import iso_date
from medlake.synth.exports import ChunkExports
from medlake.synth.identity import SourcePatient
from medlake.synth.people import Person

PERSONS = "truth/persons.csv"
SOURCE_RECORDS = "truth/source_records.csv"
CONDITIONS = "truth/conditions.csv"
DEFECTS = "truth/defects.csv"

HEADERS: dict[str, list[str]] = {
    PERSONS: ["person_key", "name", "name_pinyin", "sex", "birth_date", "resident_id",
              "phone", "address", "postcode", "new_phone", "phone_changed", "new_address",
              "new_postcode", "moved", "region", "death_date"],
    SOURCE_RECORDS: ["system", "source_patient_id", "person_key", "duplicate", "registered",
                     "recorded_name", "recorded_birth_date", "recorded_resident_id", "noise"],
    CONDITIONS: ["person_key", "icd10", "onset_date"],
    DEFECTS: ["system", "file", "record_id", "line", "kind", "field", "detail"],
}  # fmt: skip


def write_person(out: ChunkExports, person: Person, records: list[SourcePatient]) -> None:
    """The person's row, one row per source record, one per disease."""
    new_address = person.new_address
    out.csv_row(PERSONS, [
        person.key, person.name, person.pinyin, person.sex, iso_date(person.birth_ord),
        person.resident_id, person.phone, person.address.text, person.address.district.postcode,
        person.new_phone or "", iso_date(person.phone_change_ord) if person.phone_change_ord
        else "", new_address.text if new_address else "",
        new_address.district.postcode if new_address else "",
        iso_date(person.move_ord) if person.move_ord else "", person.region,
        iso_date(person.death_ord) if person.death_ord else "",
    ])  # fmt: skip
    for record in records:
        year, month, day = record.birth
        out.csv_row(SOURCE_RECORDS, [
            record.system, record.patient_id, person.key, int(record.duplicate),
            iso_date(record.registered_ord), record.name, f"{year:04d}-{month:02d}-{day:02d}",
            record.resident_id or "", ";".join(record.noise),
        ])  # fmt: skip
    for code, onset in person.conditions.items():
        out.csv_row(CONDITIONS, [person.key, code, iso_date(onset)])

"""One chunk of persons, from drawing them to the bytes each exported file gains.

A chunk is a fixed range of person indices with its own random streams (NumPy and
``random.Random``) derived from ``SeedSequence(seed, spawn_key=(chunk,))``, so its output
depends only on the seed and the chunk index: not on the number of workers nor on the
order chunks finish in. :func:`generate_chunk` runs in worker processes and returns a
:class:`~medlake.synth.exports.ChunkResult`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from medlake.synth import genetics, his, notes, truth
from medlake.synth.care import CarePlanner, Visit
from medlake.synth.clinical import apply_clinical_draws, draw_diseases, draw_physiology
from medlake.synth.dates import year_of
from medlake.synth.emr import EmrWriter, fhir_patient_id
from medlake.synth.exports import ChunkExports, ChunkResult
from medlake.synth.identity import (
    DUPLICATE_RATE,
    EMR,
    HIS,
    LIS,
    PRESENCE,
    PatientIdScheme,
    SourcePatient,
    make_source_patient,
)
from medlake.synth.lis import LisDayFiles, LisWriter
from medlake.synth.people import Person, draw_people

#: Persons per chunk: fixed, so output never depends on how the work is split.
CHUNK_SIZE = 5_000
#: Share of persons genotyped by the biobank (capped by the omics writer's sample cap),
#: and of the genotyped who also gave an RNA-seq sample.
GENOTYPED_RATE = 0.2
RNASEQ_OF_GENOTYPED_RATE = 0.25
_T2D = ("E11.9", "E11.65", "E11.22")


class ChunkContext:
    """Everything a chunk needs that depends only on the seed (built once per process)."""

    def __init__(self, seed: int, patients: int, max_genotyped: int) -> None:
        self.seed = seed
        self.ids = PatientIdScheme(seed)
        self.days = LisDayFiles(seed)
        self.genotyped_rate = min(GENOTYPED_RATE, max_genotyped / max(patients, 1))


def _assign(
    visits: list[Visit], primary: SourcePatient, duplicate: SourcePatient | None, split: int
) -> list[SourcePatient]:
    """Which record each visit is filed under: the duplicate takes every other visit after
    it was created (the clerk found one record one day, the other the next)."""
    if duplicate is None:
        return [primary] * len(visits)
    return [duplicate if i >= split and (i - split) % 2 == 0 else primary
            for i in range(len(visits))]  # fmt: skip


class _PersonExporter:
    """Writes one person's records in every system that knows them."""

    def __init__(self, context: ChunkContext, out: ChunkExports, r: random.Random) -> None:
        self.context = context
        self.out = out
        self.r = r
        self.lis = LisWriter(out, context.days, r)
        self.emr = EmrWriter(out, r)
        self._his_numbers: dict[int, str] = {}

    def _records(self, system: str, person: Person, visit_days: list[int], duplicate_wanted: bool,
                 latest_contact: bool) -> tuple[list[SourcePatient], int]:  # fmt: skip
        ids = self.context.ids
        contact = visit_days[-1] if latest_contact else None
        primary = make_source_patient(system, person, ids.patient_id(system, person.index, False),
                                      visit_days[0], self.r, contact_ord=contact)  # fmt: skip
        records = [primary]
        split = len(visit_days)
        if duplicate_wanted and len(visit_days) >= 2:
            split = self.r.randint(1, len(visit_days) - 1)
            records.append(make_source_patient(
                system, person, ids.patient_id(system, person.index, True), visit_days[split],
                self.r, duplicate=True, contact_ord=contact))  # fmt: skip
        return records, split

    def export(self, person: Person, visits: list[Visit], presence: dict[str, bool],
               duplicates: dict[str, bool]) -> list[SourcePatient]:  # fmt: skip
        written: list[SourcePatient] = []
        if presence[HIS]:
            records, split = self._records(HIS, person, [v.ordinal for v in visits],
                                           duplicates[HIS], False)  # fmt: skip
            for record in records:
                his.write_patient(self.out, record, self.r)
            assigned = _assign(visits, records[0], records[1] if len(records) > 1 else None, split)
            for visit, record in zip(visits, assigned, strict=True):
                his.write_visit(self.out, record, visit, self.r)
            written += records
            self._his_numbers = {v.seq: his.visit_number(rec, v)
                                 for v, rec in zip(visits, assigned, strict=True)}  # fmt: skip
        else:
            self._his_numbers = {}
        lab_visits = [v for v in visits if v.orders]
        if presence[LIS] and lab_visits:
            records, split = self._records(LIS, person, [v.ordinal for v in lab_visits],
                                           duplicates[LIS], False)  # fmt: skip
            assigned = _assign(lab_visits, records[0], records[1] if len(records) > 1 else None,
                               split)  # fmt: skip
            self._export_lis(person, lab_visits, assigned)
            written += records
        if presence[EMR]:
            records, split = self._records(EMR, person, [v.ordinal for v in visits],
                                           duplicates[EMR], True)  # fmt: skip
            fhir_ids = {rec.patient_id: fhir_patient_id(self.context.seed, rec.patient_id)
                        for rec in records}  # fmt: skip
            for record in records:
                self.emr.patient(record, fhir_ids[record.patient_id])
            assigned = _assign(visits, records[0], records[1] if len(records) > 1 else None, split)
            recorded: dict[str, set[str]] = {rec.patient_id: set() for rec in records}
            for visit, record in zip(visits, assigned, strict=True):
                reference = f"Patient/{fhir_ids[record.patient_id]}"
                encounter_id = self.emr.encounter(
                    reference, record.patient_id, visit, recorded[record.patient_id],
                    person.conditions)  # fmt: skip
                note = notes.note_for(record, visit, encounter_id, reference)
                if note is not None:
                    notes.write_note(self.out, *note)
            written += records
        return written

    def _export_lis(self, person: Person, visits: list[Visit],
                    assigned: list[SourcePatient]) -> None:  # fmt: skip
        registered: set[str] = set()
        updated: set[str] = set()
        for visit, record in zip(visits, assigned, strict=True):
            visit_no = self._his_numbers.get(visit.seq, "")
            first = visit.orders[0]
            if record.patient_id not in registered:
                registered.add(record.patient_id)
                self.lis.register(record, first.ordinal, max(first.minute - 5, 0), "A01",
                                  visit_no, visit.kind)  # fmt: skip
            elif record.patient_id not in updated and person.move_ord is not None and \
                    first.ordinal >= person.move_ord > record.registered_ord:  # fmt: skip
                updated.add(record.patient_id)
                new = person.address_on(first.ordinal)
                record.address = new
                record.phone = person.phone_on(first.ordinal)
                self.lis.register(record, first.ordinal, max(first.minute - 5, 0), "A08",
                                  visit_no, visit.kind)  # fmt: skip
            for order in visit.orders:
                self.lis.report(record, visit, order, visit_no, visit.department)


def generate_chunk(context: ChunkContext, index: int, start: int, count: int) -> ChunkResult:
    """Draw persons ``start … start+count-1`` and render everything they produce."""
    sequence = np.random.SeedSequence(context.seed, spawn_key=(index,))
    rng = np.random.default_rng(sequence)
    r = random.Random(int.from_bytes(sequence.generate_state(4, np.uint32).tobytes(), "big"))
    people = draw_people(rng, start, count)
    genotypes = genetics.draw_causal_genotypes(rng, count)
    onset = draw_diseases(rng, people, genetics.t2d_logit_shift(genotypes))
    bodies = draw_physiology(rng, people, genetics.ldl_shift_mmol(genotypes), onset)
    apply_clinical_draws(people, onset)
    presence_draw = rng.random((count, 3)).tolist()
    duplicate_draw = (rng.random((count, 3)) < DUPLICATE_RATE).tolist()
    omics_draw = rng.random((count, 2)).tolist()
    out = ChunkExports()
    planner = CarePlanner(r)
    exporter = _PersonExporter(context, out, r)
    omics: list[dict[str, Any]] = []
    for i, person in enumerate(people):
        person.body = bodies[i]
        visits = planner.visits_for(person)
        presence = {system: presence_draw[i][k] < PRESENCE[system]
                    for k, system in enumerate((HIS, LIS, EMR))}  # fmt: skip
        duplicates = {system: duplicate_draw[i][k] for k, system in enumerate((HIS, LIS, EMR))}
        records = exporter.export(person, visits, presence, duplicates)
        truth.write_person(out, person, records)
        his_primary = next((rec for rec in records if rec.system == HIS), None)
        if his_primary is not None and omics_draw[i][0] < context.genotyped_rate:
            omics.append(_omics_candidate(person, his_primary, visits, genotypes[i],
                                          omics_draw[i][1] < RNASEQ_OF_GENOTYPED_RATE))  # fmt: skip
    exporter.lis.resolve_defect_lines()
    result = out.finish(index)
    result.omics = omics
    result.persons = count
    return result


def _omics_candidate(person: Person, record: SourcePatient, visits: list[Visit],
                     causal: np.ndarray, rnaseq: bool) -> dict[str, Any]:  # fmt: skip
    """What the biobank knows of a donor; the sample is taken at a 2018-2024 visit."""
    visit_days = [v.ordinal for v in visits if 2018 <= year_of(v.ordinal) <= 2024
                  and not v.after_death]  # fmt: skip
    return {
        "person_key": person.key,
        "sex": person.sex,
        "birth_year": year_of(person.birth_ord),
        "population": person.region,
        "has_t2d": any(code in person.conditions for code in _T2D),
        "causal_genotypes": causal.copy(),
        "source_system": HIS,
        "source_patient_id": record.patient_id,
        "collected_ord": visit_days[len(visit_days) // 2] if visit_days else None,
        "rnaseq": rnaseq,
    }

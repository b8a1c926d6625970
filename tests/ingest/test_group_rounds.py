"""A group's rounds split exactly where a file stages a record an earlier file of its round
staged: the vectorized split equals the step-by-step split over :func:`step_keys`."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pytest

from medlake.ingest.batches import IngestBatch
from medlake.ingest.group_writer import rounds
from medlake.ingest.group_writer import rounds_by_keys as reference_rounds
from medlake.ingest.staging import SOURCE_PATIENT_ID, SOURCE_RECORD_ID, ParsedChunk


def _ids(rng: random.Random, pool: int, nulls: bool) -> list[str | None]:
    values: list[str | None] = [f"r{rng.randrange(pool)}" for _ in range(rng.randrange(0, 5))]
    if nulls and rng.random() < 0.2:
        values.append(None)
    return values


def _steps(seed: int, files: int, pool: int) -> list[tuple[IngestBatch, ParsedChunk]]:
    rng = random.Random(seed)
    steps = []
    for index in range(files):
        chunk = ParsedChunk()
        for _ in range(rng.randrange(0, 3)):
            patients = _ids(rng, pool, nulls=True)
            chunk.patients.append(pa.table({SOURCE_PATIENT_ID: pa.array(patients, pa.string())}))
        for table in ("measurement", "specimen", "person", "visit_occurrence"):
            if rng.random() < 0.5:
                # "person" rows keyed like patients: they share keys with the patients'.
                ids = _ids(rng, pool, nulls=True)
                chunk.tables.setdefault(table, []).append(
                    pa.table({SOURCE_RECORD_ID: pa.array(ids, pa.string()), "x": [1] * len(ids)})
                )
        if rng.random() < 0.1:  # a table without record ids stages no key
            chunk.tables.setdefault("note", []).append(pa.table({"x": [1, 2]}))
        batch = IngestBatch(
            batch_id=f"b{index}", source_system="lis", format="hl7v2", landed_sha256="0" * 64,
            landed_path="00/0", original_name=f"f{index}", size_bytes=1,
            received_at=dt.datetime(2026, 1, 2), status="running",
        )  # fmt: skip
        steps.append((batch, chunk))
    return steps


@pytest.mark.parametrize("seed", range(40))
def test_rounds_equal_the_step_by_step_split(seed: int) -> None:
    rng = random.Random(seed)
    steps = _steps(seed, files=rng.randrange(0, 60), pool=rng.choice([3, 20, 200]))
    expected = [[b.batch_id for b, _ in r] for r in reference_rounds(steps)]
    assert [[b.batch_id for b, _ in r] for r in rounds(steps)] == expected


def test_rounds_compare_ids_of_other_types_as_text_or_fall_back() -> None:
    steps = _steps(7, files=30, pool=10)
    for _, chunk in steps:  # integer record ids: Arrow casts them to text to compare
        for name, tables in chunk.tables.items():
            chunk.tables[name] = [
                t.set_column(0, SOURCE_RECORD_ID, pa.array(
                    [None if v is None else int(v[1:]) for v in t.column(0).to_pylist()],
                    pa.int64(),
                )) if SOURCE_RECORD_ID in t.column_names else t
                for t in tables
            ]  # fmt: skip
    expected = [[b.batch_id for b, _ in r] for r in reference_rounds(steps)]
    assert [[b.batch_id for b, _ in r] for r in rounds(steps)] == expected

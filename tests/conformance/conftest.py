"""A small clinic, defined here (not the OMOP schema), that every engine must store alike.

``person`` has one column of each logical type; ``visit`` refers to it. The rows are
drawn from a seeded generator, and tests compute their expected answers from these
Python rows, independently of any engine.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import pyarrow as pa
import pytest

from medlake.engine import ColumnSpec, Engine, TableSpec

PERSON = TableSpec(
    name="person",
    group="test",
    columns=(
        ColumnSpec("person_id", "integer", required=True, primary_key=True),
        ColumnSpec("gender", "varchar(10)"),
        ColumnSpec("birth_date", "date"),
        ColumnSpec("weight_kg", "float"),
        ColumnSpec("smoker", "boolean"),
        ColumnSpec("updated_at", "datetime"),
    ),
)
VISIT = TableSpec(
    name="visit",
    group="test",
    columns=(
        ColumnSpec("visit_id", "integer", required=True, primary_key=True),
        ColumnSpec("person_id", "integer", required=True, foreign_key=("person", "person_id")),
        ColumnSpec("visit_date", "date", required=True),
        ColumnSpec("cost", "float"),
        ColumnSpec("ward", "varchar(20)"),
    ),
)
CLINIC = (PERSON, VISIT)


@dataclass(frozen=True)
class Clinic:
    """The rows, as Python dicts (the ground truth) and as Arrow tables (to load)."""

    people: list[dict[str, object]]
    visits: list[dict[str, object]]
    person_spec: TableSpec = PERSON
    visit_spec: TableSpec = VISIT

    @property
    def specs(self) -> tuple[TableSpec, ...]:
        return CLINIC

    def person_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.people, schema=self.person_spec.ibis_schema().to_pyarrow())

    def visit_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.visits, schema=self.visit_spec.ibis_schema().to_pyarrow())


def make_clinic(seed: int = 7, n_people: int = 40, n_visits: int = 150) -> Clinic:
    rng = random.Random(seed)

    def maybe(value: object) -> object:
        return None if rng.random() < 0.15 else value

    people = [
        {
            "person_id": 1000 + i,
            "gender": maybe(rng.choice(["F", "M", "女", "男"])),
            # Before 1970 and after 2038 on purpose: both are edges for date storage.
            "birth_date": maybe(dt.date(1901, 1, 1) + dt.timedelta(days=rng.randrange(60_000))),
            "weight_kg": maybe(round(rng.uniform(2.5, 150.0), 3)),
            "smoker": maybe(rng.random() < 0.3),
            "updated_at": maybe(
                dt.datetime(1960, 1, 1) + dt.timedelta(microseconds=rng.randrange(3 * 10**15))
            ),
        }
        for i in range(n_people)
    ]
    visits = [
        {
            "visit_id": i,
            "person_id": rng.choice(people)["person_id"],
            "visit_date": dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(1500)),
            "cost": maybe(round(rng.uniform(10, 5000), 2)),
            "ward": maybe(rng.choice(["cardiology", "oncology", "icu"])),
        }
        for i in range(n_visits)
    ]
    return Clinic(people, visits)


@pytest.fixture(scope="session")
def clinic() -> Clinic:
    return make_clinic()


@pytest.fixture
def lake(backend: Engine, clinic: Clinic) -> Engine:
    """``backend`` with the clinic's tables created and loaded."""
    backend.create_schema(clinic.specs)
    backend.load_arrow("person", clinic.person_table())
    backend.load_arrow("visit", clinic.visit_table())
    return backend
